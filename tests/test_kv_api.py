"""The public KeyValue API's own behaviour, the same on every backend (run here on memory://).

Validation, the error hierarchy, the Store lifecycle, page tokens, capability
refusals, the blocking API, metrics, traces, logs and health. The backends defined
below are the memory engine with one trait changed (declared capabilities, calls that
suspend, a failing connection), so the layer above can be watched doing its part.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import math
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from typing import Any, ClassVar

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from prometheus_client import REGISTRY

import prism
from prism import (
    BackendUnavailable,
    Delete,
    InvalidArgument,
    InvalidKey,
    PreconditionFailed,
    PrismError,
    Put,
    StoreClosed,
    Unsupported,
    ValueTooLarge,
)
from prism.backends import EXTRAS, SCHEMES
from prism.backends.base import NOT_NOW, NotNow
from prism.backends.memory import MemoryBackend
from prism.kv.namespace import MAX_BATCH, MAX_PAGE_LIMIT, Namespace
from prism.kv.store import Store
from prism.model import Capabilities, Item

# -- backends with one trait changed ----------------------------------------------


class BareBackend(MemoryBackend):
    """Declares plain reads and writes only."""

    name = "memory-bare"
    capabilities = Capabilities(
        ttl=False,
        etag=False,
        transactions=False,
        range_reads=False,
        prefix_scan=False,
        consistent_reads=False,
        max_value_bytes=1024,
        multi_process=False,
    )


class ThreadedBackend(MemoryBackend):
    """Claims its calls may suspend, so the blocking API drives it from a background loop."""

    name = "memory-threaded"
    runs_inline: ClassVar[bool] = False


class CountingBackend(MemoryBackend):
    """Counts open() and close() calls, and can hold reads until released."""

    name = "memory-counting"

    def __init__(self, shared_name: str = "") -> None:
        super().__init__(shared_name)
        self.opens = 0
        self.closes = 0
        self.gate: asyncio.Event | None = None

    async def open(self) -> None:
        await asyncio.sleep(0)
        self.opens += 1

    async def close(self) -> None:
        self.closes += 1

    async def get(self, ns: str, record: str, key: str, *, consistent: bool = False) -> Item | None:
        if self.gate is not None:
            await self.gate.wait()
        return await super().get(ns, record, key, consistent=consistent)


class AnswerNowBackend(MemoryBackend):
    """Answers reads in the calling thread (``get_now``), but sends keys starting "wait-" to ``get``."""

    name = "memory-answer-now"
    waited: ClassVar[list[str]] = []

    def get_now(self, ns: str, record: str, key: str, consistent: bool = False) -> Item | NotNow | None:
        return NOT_NOW if record.startswith("wait-") else super().get_now(ns, record, key, consistent)

    async def get(self, ns: str, record: str, key: str, *, consistent: bool = False) -> Item | None:
        self.waited.append(record)
        await asyncio.sleep(0)
        return await super().get(ns, record, key, consistent=consistent)


class UnreachableBackend(MemoryBackend):
    """Every call fails the way a lost connection does."""

    name = "memory-unreachable"

    async def health(self) -> dict[str, Any]:
        raise BackendUnavailable("cannot reach memory-unreachable: connection refused")

    async def get(self, ns: str, record: str, key: str, *, consistent: bool = False) -> Item | None:
        raise BackendUnavailable("cannot reach memory-unreachable: connection refused")

    async def get_many(
        self, ns: str, addresses: Sequence[tuple[str, str]], *, consistent: bool = False
    ) -> list[Item | None]:
        raise BackendUnavailable("cannot reach memory-unreachable: connection refused")


def _backend(cls: type[MemoryBackend]) -> str:
    return f"{__name__}:{cls.__name__}"


@pytest.fixture
async def store() -> AsyncIterator[Store]:
    async with prism.connect("memory://") as store:
        yield store


@pytest.fixture
def ns(store: Store) -> Namespace:
    return store.namespace(f"api-{uuid.uuid4().hex[:12]}")


async def _listed(ns: Namespace) -> list[str]:
    return list((await ns.scan(limit=MAX_PAGE_LIMIT)).keys)


# -- validation: bad input is refused and writes nothing --------------------------


async def test_values_must_be_bytes(ns: Namespace) -> None:
    for bad in ("text", 5, None, ["b"], {"k": "v"}):
        with pytest.raises(InvalidArgument, match="must be bytes"):
            await ns.put("k", bad)  # type: ignore[arg-type]
        with pytest.raises(InvalidArgument):
            await ns.put_many([Put("ok", b"v"), Put("k", bad)])  # type: ignore[arg-type]
    assert await _listed(ns) == []
    await ns.put("ba", bytearray(b"\x00\x01"))  # type: ignore[arg-type]
    await ns.put("mv", memoryview(b"\x02\x03"))  # type: ignore[arg-type]
    got = await ns.get_many(["ba", "mv"])
    assert [(type(i.value), i.value) if i else None for i in got] == [
        (bytes, b"\x00\x01"),
        (bytes, b"\x02\x03"),
    ]


async def test_values_over_the_namespace_limit(store: Store) -> None:
    ns = store.namespace("small", max_value_bytes=10)
    assert ns.max_value_bytes == 10
    await ns.put("fits", b"x" * 10)
    with pytest.raises(ValueTooLarge, match="11 bytes") as raised:
        await ns.put("big", b"x" * 11)
    assert isinstance(raised.value, InvalidArgument)
    calls: tuple[Callable[[], Awaitable[object]], ...] = (
        lambda: ns.put_many([Put("ok", b"v"), Put("big", b"x" * 11)]),
        lambda: ns.put_items("rec", [Put("ok", b"v"), Put("big", b"x" * 11)]),
        lambda: ns.transact([Put("ok", b"v"), Put("big", b"x" * 11)]),
    )
    for call in calls:
        with pytest.raises(ValueTooLarge):
            await call()
    assert await _listed(ns) == ["fits"]


async def test_namespace_options_are_validated(store: Store) -> None:
    for name in ("", "a\x00b", "x" * 1025, 7):
        with pytest.raises(InvalidKey):
            store.namespace(name)  # type: ignore[arg-type]
    for limit in (-1, 1.5, "10", store.backend.capabilities.max_value_bytes + 1):
        with pytest.raises(InvalidArgument, match="max_value_bytes"):
            store.namespace("x", max_value_bytes=limit)  # type: ignore[arg-type]
    for ttl in (0, -5, math.nan, "60"):
        with pytest.raises(InvalidArgument, match="ttl"):
            store.namespace("x", default_ttl=ttl)  # type: ignore[arg-type]
    assert store.namespace("same") is store.namespace("same")
    assert store.namespace("same").name == "same"


async def test_default_ttl_applies_unless_a_write_gives_one(store: Store) -> None:
    ns = store.namespace(f"ttl-{uuid.uuid4().hex[:8]}", default_ttl=60)
    await ns.put("default", b"v")
    await ns.put("explicit", b"v", ttl=3600)
    default, explicit = await ns.get_many(["default", "explicit"])
    assert default is not None and default.expires_at is not None
    assert explicit is not None and explicit.expires_at is not None
    assert 3000 < (explicit.expires_at - default.expires_at).total_seconds() < 3600


async def test_conditions_are_validated(ns: Namespace) -> None:
    etag = await ns.put("k", b"v")
    with pytest.raises(InvalidArgument, match="if_match and if_absent"):
        await ns.put("k", b"x", if_match=etag, if_absent=True)
    for bad in ("", 5, b"etag"):
        with pytest.raises(InvalidArgument, match="if_match"):
            await ns.put("k", b"x", if_match=bad)  # type: ignore[arg-type]
        with pytest.raises(InvalidArgument, match="if_match"):
            await ns.delete("k", if_match=bad)  # type: ignore[arg-type]
        with pytest.raises(InvalidArgument, match="if_match"):
            await ns.delete_many(["other", Delete("k", bad)])  # type: ignore[arg-type]
    assert (item := await ns.get("k")) is not None and (item.value, item.etag) == (b"v", etag)


async def test_content_type_is_validated(ns: Namespace) -> None:
    for bad in ("", "text/plain\nX-Injected: 1", "x" * 256, 5):
        with pytest.raises(InvalidArgument, match="content_type"):
            await ns.put("k", b"v", content_type=bad)  # type: ignore[arg-type]
    assert await ns.get("k") is None


async def test_limits_and_batch_sizes_are_validated(ns: Namespace) -> None:
    for limit in (0, -1, MAX_PAGE_LIMIT + 1, True, 1.5, "10"):
        with pytest.raises(InvalidArgument, match="limit"):
            await ns.scan(limit=limit)  # type: ignore[arg-type]
        with pytest.raises(InvalidArgument, match="limit"):
            await ns.get_items("rec", limit=limit)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="page_size_bytes"):
        await ns.get_items("rec", page_size_bytes=0)
    too_many = [f"k{i}" for i in range(MAX_BATCH + 1)]
    for call in (
        lambda: ns.get_many(too_many),
        lambda: ns.put_many([Put(k, b"v") for k in too_many]),
        lambda: ns.delete_many(too_many),
        lambda: ns.transact([Put(k, b"v") for k in too_many]),
        lambda: ns.put_items("rec", [Put(k, b"v") for k in too_many]),
    ):
        with pytest.raises(InvalidArgument, match=f"at most {MAX_BATCH}"):
            await call()
    with pytest.raises(InvalidArgument, match="consistency"):
        await ns.get("k", consistency="linearizable")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="prefix"):
        await ns.scan(5)  # type: ignore[arg-type]
    with pytest.raises(InvalidKey):
        await ns.scan("a\x00")
    assert await _listed(ns) == []


async def test_batch_entries_must_be_ops(ns: Namespace) -> None:
    with pytest.raises(InvalidArgument, match=r"prism\.Put"):
        await ns.put_many([Put("ok", b"v"), ("k", b"v")])  # type: ignore[list-item]
    with pytest.raises(InvalidArgument, match=r"prism\.Put"):
        await ns.put_items("rec", [Put("ok", b"v"), ("k", b"v")])  # type: ignore[list-item]
    with pytest.raises(InvalidArgument, match=r"prism\.Delete"):
        await ns.delete_many(["ok", 5])  # type: ignore[list-item]
    with pytest.raises(InvalidArgument, match="Put and Delete"):
        await ns.transact([Put("ok", b"v"), "k"])  # type: ignore[list-item]
    assert await _listed(ns) == []


# -- errors -----------------------------------------------------------------------


def test_error_hierarchy() -> None:
    errors = [getattr(prism, name) for name in prism.__all__ if name.endswith(("Error", "Failed"))]
    errors += [prism.InvalidArgument, prism.InvalidKey, prism.ValueTooLarge, prism.Unsupported]
    errors += [prism.Timeout, prism.BackendUnavailable, prism.StoreClosed]
    assert all(issubclass(e, PrismError) for e in errors)
    assert issubclass(InvalidKey, InvalidArgument) and issubclass(ValueTooLarge, InvalidArgument)
    assert issubclass(InvalidArgument, ValueError), "callers catching ValueError see bad input"
    codes = [e.code for e in {*errors, PrismError}]
    assert len(codes) == len(set(codes)) and all(c.isupper() for c in codes)
    assert [e.__name__ for e in errors if e.retryable] == ["Timeout", "BackendUnavailable"]
    cause = ConnectionRefusedError("refused")
    error = BackendUnavailable("down", cause=cause)
    assert error.cause is cause and error.retryable
    assert PreconditionFailed("no", key="k").key == "k"


async def test_failed_condition_names_the_key(ns: Namespace) -> None:
    await ns.put("k", b"v")
    with pytest.raises(PreconditionFailed) as raised:
        await ns.put("k", b"x", if_absent=True)
    assert raised.value.key == "k"
    (result,) = await ns.put_many([Put("k", b"x", if_match="stale")])
    assert isinstance(result.error, PreconditionFailed) and result.error.key == "k"


async def test_backend_failures_surface_as_prism_errors() -> None:
    async with prism.connect("memory://", backend=_backend(UnreachableBackend)) as store:
        ns = store.namespace("x")
        with pytest.raises(BackendUnavailable, match="connection refused") as raised:
            await ns.get("k")
        assert raised.value.retryable


# -- connecting and the store's lifecycle -----------------------------------------


def test_connect_explains_bad_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(InvalidArgument, match="Did you mean 'memory'"):
        prism.connect("memroy://")
    with pytest.raises(InvalidArgument, match=r"Known schemes: .*sqlite"):
        prism.connect("zzz://")
    with pytest.raises(InvalidArgument, match="store URL"):
        prism.connect("just-a-path.db")
    with pytest.raises(InvalidArgument, match="takes no options"):
        prism.connect("memory://", pool_size=3)
    with pytest.raises(InvalidArgument, match="cannot import backend"):
        prism.connect("memory://", backend="prism_no_such_module:Backend")
    with pytest.raises(InvalidArgument, match="not a prism Backend class"):
        prism.connect("memory://", backend="prism.model:Item")
    monkeypatch.setitem(SCHEMES, "acme", "acme_driver_that_is_not_installed:Backend")
    monkeypatch.setitem(EXTRAS, "acme", "acme")
    with pytest.raises(InvalidArgument, match=r"pip install 'prism\[acme\]'"):
        prism.connect("acme://host")


async def test_store_lifecycle() -> None:
    store = prism.connect("memory://", backend=_backend(CountingBackend))
    backend = store.backend
    assert isinstance(backend, CountingBackend)
    assert "unopened" in repr(store) and not store.is_open
    ns = store.namespace("x")
    with pytest.raises(StoreClosed, match="not open"):
        await ns.get("k")
    assert (await store.health())["status"] == "DOWN"
    opened = await asyncio.gather(store.open(), store.open(), store.open())
    assert all(s is store for s in opened) and backend.opens == 1, "opened exactly once"
    assert await store is store and backend.opens == 1
    await ns.put("k", b"v")
    await store.close()
    await store.close()
    assert backend.closes == 1 and "closed" in repr(store)
    for call in (
        lambda: ns.get("k"),
        lambda: ns.put("k", b"v"),
        lambda: ns.scan(),
        lambda: ns.get_many(["k"]),
        lambda: ns.delete_items("r"),
    ):
        with pytest.raises(StoreClosed, match="closed"):
            await call()
    with pytest.raises(StoreClosed, match="cannot be reopened"):
        await store.open()
    assert (await store.health()) == {
        "status": "DOWN",
        "details": {"backend": "memory-counting", "error": "the store is closed"},
    }


async def test_async_with_closes_on_error() -> None:
    with pytest.raises(RuntimeError, match="boom"):
        async with prism.connect("memory://") as store:
            assert store.is_open
            raise RuntimeError("boom")
    assert not store.is_open
    with pytest.raises(StoreClosed):
        await store.namespace("x").get("k")


async def test_closing_an_unopened_store_is_safe() -> None:
    store = prism.connect("memory://", backend=_backend(CountingBackend))
    await store.close()
    assert isinstance(store.backend, CountingBackend) and store.backend.closes == 0
    with pytest.raises(StoreClosed):
        await store.open()


# -- page tokens ------------------------------------------------------------------


async def test_page_tokens_are_bound_to_their_query(ns: Namespace) -> None:
    await ns.put_many([Put(f"a{i}", b"v") for i in range(3)])
    await ns.put_items("rec", [Put(f"i{n}", b"v") for n in range(3)])
    await ns.put_items("other", [Put(f"i{n}", b"v") for n in range(3)])
    scan_token = (await ns.scan("a", limit=1)).next_page_token
    items_token = (await ns.get_items("rec", limit=1)).next_page_token
    ranged_token = (await ns.get_items("rec", start="i", limit=1)).next_page_token
    assert scan_token and items_token and ranged_token
    for garbage in ("", "not-a-token", "!!!", "AAAA", scan_token[:-2]):
        with pytest.raises(InvalidArgument, match="page_token"):
            await ns.scan("a", page_token=garbage)
    misuse = (
        lambda: ns.scan("b", page_token=scan_token),
        lambda: ns.scan("a", page_token=items_token),
        lambda: ns.get_items("rec", page_token=scan_token),
        lambda: ns.get_items("other", page_token=items_token),
        lambda: ns.get_items("rec", page_token=ranged_token),
        lambda: ns.get_items("rec", end="z", page_token=items_token),
    )
    for call in misuse:
        with pytest.raises(InvalidArgument, match="different query"):
            await call()
    first = await ns.scan("a", page_token=scan_token)
    again = await ns.scan("a", page_token=scan_token)
    assert first.keys == again.keys == ["a1", "a2"], "a token can be replayed"


# -- capabilities -----------------------------------------------------------------


async def test_undeclared_capabilities_raise_unsupported() -> None:
    async with prism.connect("memory://", backend=_backend(BareBackend)) as store:
        assert store.capabilities is BareBackend.capabilities
        assert store.capabilities.as_dict()["transactions"] is False
        ns = store.namespace("x")
        assert ns.max_value_bytes == 1024, "the namespace limit follows the backend's"
        etag = await ns.put("k", b"v")
        refused: dict[str, Callable[[], Awaitable[object]]] = {
            "transact": lambda: ns.transact([Put("a", b"v")]),
            "scan": lambda: ns.scan(),
            "range read": lambda: ns.get_items("rec", start="a"),
            "ttl": lambda: ns.put("t", b"v", ttl=60),
            "ttl in a batch": lambda: ns.put_many([Put("ok", b"v"), Put("t", b"v", ttl=60)]),
            "if_match": lambda: ns.put("k", b"x", if_match=etag),
            "if_absent": lambda: ns.put("n", b"x", if_absent=True),
            "conditional delete": lambda: ns.delete("k", if_match=etag),
        }
        for what, call in refused.items():
            with pytest.raises(Unsupported):
                await call()
                pytest.fail(f"{what} was accepted")
        assert (await ns.get_items("rec", keys=["a"])).items == [], "reading listed keys needs no range reads"
        got = await ns.get_many(["k", "a", "t", "ok", "n"])
        assert [i.value if i else None for i in got] == [b"v", None, None, None, None]


async def test_strong_reads_on_a_backend_without_them_raise_unsupported() -> None:
    async with prism.connect("memory://", backend=_backend(BareBackend)) as store:
        ns = store.namespace("x")
        await ns.put("k", b"v")
        assert (item := await ns.get("k", consistency="eventual")) is not None and item.value == b"v"
        with pytest.raises(Unsupported):
            await ns.get("k", consistency="strong")


# -- the blocking API -------------------------------------------------------------


@pytest.mark.parametrize(
    "backend", [_backend(MemoryBackend), _backend(ThreadedBackend)], ids=["inline", "thread"]
)
def test_connect_sync_matches_the_async_api(backend: str) -> None:
    with prism.connect_sync("memory://", backend=backend) as store:
        assert store.capabilities == store.store.capabilities
        ns = store.namespace("sync")
        etag = ns.put("k", b"v", content_type="text/plain", ttl=60)
        item = ns.get("k")
        assert item is not None and (item.value, item.etag, item.content_type) == (b"v", etag, "text/plain")
        assert ns.exists("k") and not ns.exists("missing")
        with pytest.raises(PreconditionFailed):
            ns.put("k", b"x", if_match="stale")
        with pytest.raises(InvalidKey):
            ns.get("")
        results = ns.put_many([Put("a", b"1"), Put("b", b"2")])
        assert [r.ok for r in results] == [True, True]
        assert [i.value if i else None for i in ns.get_many(["a", "missing", "b"])] == [b"1", None, b"2"]
        assert [r.existed for r in ns.delete_many(["a", "missing"])] == [True, False]
        ns.transact([Delete("b"), Put("c", b"3")])
        page = ns.scan(limit=1)
        assert page.keys == ["c"] and page.next_page_token is not None
        assert ns.scan(page_token=page.next_page_token).keys == ["k"]
        ns.put_items("rec", [Put("i1", b"x"), Put("i2", b"y")])
        assert [i.key for i in ns.get_items("rec", start="i2")] == ["i2"]
        assert ns.delete_items("rec") == 2
        assert ns.delete("k") is True and ns.delete("k") is False
        assert store.health()["status"] == "UP"
    store.close()
    with pytest.raises(StoreClosed):
        ns.get("c")
    del ns, store
    gc.collect()  # anything the closed store left open warns here, in this test


@pytest.mark.parametrize(
    "backend", [_backend(MemoryBackend), _backend(ThreadedBackend)], ids=["inline", "thread"]
)
def test_connect_sync_from_many_threads(backend: str) -> None:
    threads, rounds = 8, 25
    errors: list[BaseException] = []
    with prism.connect_sync("memory://", backend=backend) as store:
        ns = store.namespace("threads")
        ns.put("counter", b"0")

        def work(n: int) -> None:
            try:
                for r in range(rounds):
                    ns.put(f"own:{n}", str(r).encode())
                    while True:
                        item = ns.get("counter")
                        assert item is not None
                        try:
                            ns.put("counter", str(int(item.value) + 1).encode(), if_match=item.etag)
                            break
                        except PreconditionFailed:
                            continue
            except BaseException as exc:
                errors.append(exc)

        pool = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
        for t in pool:
            t.start()
        for t in pool:
            t.join(timeout=60)
        assert not errors, errors
        assert (item := ns.get("counter")) is not None and int(item.value) == threads * rounds
        owns = ns.get_many([f"own:{n}" for n in range(threads)])
        assert [i.value if i else None for i in owns] == [str(rounds - 1).encode()] * threads


async def test_connect_sync_inside_a_running_event_loop() -> None:
    loop = asyncio.get_running_loop()
    with prism.connect_sync("memory://") as store:
        ns = store.namespace("notebook")
        ns.put("k", b"v")
        assert (item := ns.get("k")) is not None and item.value == b"v"
    assert asyncio.get_running_loop() is loop
    await asyncio.sleep(0)


# -- metrics, traces, logs, health ------------------------------------------------


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_operation_metrics(ns: Namespace) -> None:
    name = ns.name
    labels = {"namespace": name, "backend": "memory"}
    await ns.put("a", b"1")
    await ns.put("b", b"2")
    await ns.get("a")
    await ns.get("missing")
    await ns.get_many(["a", "x", "y"])
    with pytest.raises(PreconditionFailed):
        await ns.put("a", b"x", if_absent=True)
    with pytest.raises(InvalidKey):
        await ns.get("")
    assert _sample("prism_kv_operations_total", op="put", outcome="ok", **labels) == 2
    assert _sample("prism_kv_operations_total", op="put", outcome="precondition_failed", **labels) == 1
    assert _sample("prism_kv_operations_total", op="get", outcome="ok", **labels) == 2
    assert _sample("prism_kv_operations_total", op="get_many", outcome="ok", **labels) == 1
    assert _sample("prism_kv_stats_total", stat="hit", **labels) == 2
    assert _sample("prism_kv_stats_total", stat="miss", **labels) == 3
    assert _sample("prism_kv_stats_total", stat="error", **labels) == 0, "a failed condition is not an error"
    assert _sample("prism_kv_latency_seconds_count", op="put", **labels) == 3
    assert _sample("prism_kv_latency_seconds_bucket", op="get", le="+Inf", **labels) == 2
    assert _sample("prism_kv_latency_seconds_sum", op="get", **labels) > 0


def test_reads_answered_now_skip_the_coroutine_and_are_counted_once(monkeypatch: pytest.MonkeyPatch) -> None:
    # Reads with a tracer provider set take the traced path; another test may have set one.
    monkeypatch.setattr(trace, "_TRACER_PROVIDER", None)
    AnswerNowBackend.waited.clear()
    labels = {"namespace": "answer-now", "backend": "memory-answer-now"}
    in_flight = _sample("prism_kv_in_flight", backend="memory-answer-now")
    with prism.connect_sync("memory://", backend=_backend(AnswerNowBackend)) as store:
        ns = store.namespace("answer-now")
        ns.put("k", b"v")
        ns.put("wait-k", b"w")
        assert (item := ns.get("k")) is not None and (item.key, item.value) == ("k", b"v")
        assert ns.exists("k") and ns.get("missing") is None
        assert AnswerNowBackend.waited == [], "a read answered now went through get"
        assert (item := ns.get("wait-k")) is not None and (item.key, item.value) == ("wait-k", b"w")
        assert ns.exists("wait-k") and ns.get("wait-missing") is None
        assert AnswerNowBackend.waited == ["wait-k", "wait-k", "wait-missing"]

        async def async_reads() -> list[Item | None]:
            return [await store.store.namespace("answer-now").get(k) for k in ("k", "wait-k")]

        assert [i.key if i else None for i in asyncio.run(async_reads())] == ["k", "wait-k"]
        assert AnswerNowBackend.waited == ["wait-k", "wait-k", "wait-missing", "wait-k"]
    assert _sample("prism_kv_operations_total", op="get", outcome="ok", **labels) == 8
    assert _sample("prism_kv_stats_total", stat="hit", **labels) == 6
    assert _sample("prism_kv_stats_total", stat="miss", **labels) == 2
    assert _sample("prism_kv_latency_seconds_count", op="get", **labels) == 8
    assert _sample("prism_kv_in_flight", backend="memory-answer-now") == in_flight


async def test_in_flight_gauge_counts_running_operations() -> None:
    async with prism.connect("memory://", backend=_backend(CountingBackend)) as store:
        backend = store.backend
        assert isinstance(backend, CountingBackend)
        backend.gate = asyncio.Event()
        ns = store.namespace("inflight")
        base = _sample("prism_kv_in_flight", backend="memory-counting")
        reads = [asyncio.create_task(ns.get(f"k{i}")) for i in range(3)]
        await asyncio.sleep(0)
        assert _sample("prism_kv_in_flight", backend="memory-counting") == base + 3
        backend.gate.set()
        await asyncio.gather(*reads)
        assert _sample("prism_kv_in_flight", backend="memory-counting") == base


async def test_backend_failures_are_counted_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    async with prism.connect("memory://", backend=_backend(UnreachableBackend)) as store:
        ns = store.namespace(f"down-{uuid.uuid4().hex[:8]}")
        labels = {"namespace": ns.name, "backend": "memory-unreachable"}
        with caplog.at_level(logging.WARNING, logger="prism.kv"), pytest.raises(BackendUnavailable):
            await ns.get_many(["secret-key"])
        assert (
            _sample("prism_kv_operations_total", op="get_many", outcome="backend_unavailable", **labels) == 1
        )
        assert _sample("prism_kv_stats_total", stat="error", **labels) == 1
        (record,) = [r for r in caplog.records if r.name == "prism.kv"]
        assert record.getMessage() == "kv operation failed"
        assert (record.namespace, record.op, record.backend, record.error) == (  # type: ignore[attr-defined]
            ns.name,
            "get_many",
            "memory-unreachable",
            "BackendUnavailable",
        )


@pytest.fixture(scope="module")
def spans() -> Iterator[InMemorySpanExporter]:
    """Finished spans of the process's SDK tracer provider (installed here when none is)."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield exporter
    exporter.shutdown()


async def test_spans_carry_attributes_but_never_values(spans: InMemorySpanExporter, ns: Namespace) -> None:
    spans.clear()
    secret = b"top-secret-value-4242"
    await ns.put("user:1", secret)
    await ns.get("user:1")
    await ns.get_many(["user:1", "user:2", "user:3"])
    await ns.put_many([Put("user:2", secret), Put("user:3", secret)])
    finished = [s for s in spans.get_finished_spans() if _attributes(s).get("prism.namespace") == ns.name]
    assert [s.name for s in finished] == ["kv.put", "kv.get", "kv.get_many", "kv.put_many"]
    assert [_attributes(s)["prism.key_count"] for s in finished] == [1, 1, 3, 2]
    for span in finished:
        attributes = _attributes(span)
        assert attributes["db.system"] == "memory"
        assert attributes["db.operation"] == span.name.removeprefix("kv.")
        assert all(secret.decode() not in str(v) for v in attributes.values()), "a value leaked into a span"
        assert all(secret.decode() not in str(event.attributes) for event in span.events)
        assert span.status.status_code is not StatusCode.ERROR


async def test_spans_of_failed_operations_are_errors(spans: InMemorySpanExporter) -> None:
    spans.clear()
    async with prism.connect("memory://", backend=_backend(UnreachableBackend)) as store:
        with pytest.raises(BackendUnavailable):
            await store.namespace("traced").get("k")
    (span,) = [
        s for s in spans.get_finished_spans() if _attributes(s).get("db.system") == "memory-unreachable"
    ]
    assert span.name == "kv.get" and span.status.status_code is StatusCode.ERROR
    assert (span.status.description or "").startswith("BackendUnavailable")


def _attributes(span: Any) -> dict[str, Any]:
    return dict(span.attributes or {})


async def test_health(store: Store) -> None:
    report = await store.health()
    assert report["status"] == "UP" and report["details"]["backend"] == "memory"
    async with prism.connect("memory://", backend=_backend(UnreachableBackend)) as down:
        report = await down.health()
    assert report == {
        "status": "DOWN",
        "details": {
            "backend": "memory-unreachable",
            "error": "cannot reach memory-unreachable: connection refused",
        },
    }
