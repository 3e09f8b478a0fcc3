"""The blocking API is the async API: name for name, parameter for parameter.

Every public method, property and attribute of each async class must exist on its
blocking twin with the same parameters, defaults and annotations (the async class
names mapped to their twins), the async docstring, and a value of the twin's type;
and each blocking method must hand every argument, unchanged, to its async twin.
The blocking bridge's inline runner is checked against the asyncio internals it
needs, and falls back to a background event loop where they differ.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import re
import threading
import types
from collections.abc import Iterator
from typing import Any

import pytest

import prism
from prism import (
    ChangeFeed,
    Collection,
    Delete,
    InvalidArgument,
    Namespace,
    PreconditionFailed,
    Put,
    Store,
    StoreClosed,
    SyncChangeFeed,
    SyncCollection,
    SyncNamespace,
    SyncStore,
    SyncTimeSeries,
    TimeSeries,
    Unsupported,
)
from prism.backends.base import NOT_NOW
from prism.backends.memory import MemoryBackend
from prism.kv import portal
from prism.model import Item

#: Each public async class and its blocking twin.
TWINS: dict[type, type] = {
    Store: SyncStore,
    Namespace: SyncNamespace,
    Collection: SyncCollection,
    TimeSeries: SyncTimeSeries,
    ChangeFeed: SyncChangeFeed,
}
#: Public names only the blocking class has, and why.
SYNC_ONLY: dict[type, dict[str, str]] = {
    SyncStore: {"store": "the async Store underneath, for code that mixes both"}
}
#: Public classes with coroutine methods and, by design, no blocking twin.
ASYNC_ONLY = {"StreamClient": "a WebSocket client whose events arrive while the caller waits"}

_TWIN_NAMES = re.compile(r"\b(" + "|".join(cls.__name__ for cls in TWINS) + r")\b")


def _as_blocking(annotation: object) -> object:
    """An async annotation with each async class named as its blocking twin."""
    if isinstance(annotation, str):
        return _TWIN_NAMES.sub(lambda m: "Sync" + m.group(1), annotation)
    return annotation


def _public(obj: object) -> set[str]:
    return {name for name in dir(obj) if not name.startswith("_")}


def _signature(func: Any, blocking: bool) -> list[tuple[str, object, object, object]]:
    sig = inspect.signature(func)
    params: list[tuple[str, object, object, object]] = [
        (p.name, p.kind, p.default, p.annotation) for p in sig.parameters.values()
    ]
    params.append(("return", None, None, sig.return_annotation))
    if blocking:
        return params
    return [(name, kind, default, _as_blocking(ann)) for name, kind, default, ann in params]


@pytest.fixture
def twins() -> Iterator[list[tuple[object, object]]]:
    """Instances of every async class and of its twin, on one memory store."""
    with prism.connect_sync("memory://", feed=True) as store:
        ns = store.namespace("parity", default_ttl=60)
        collection = store.collection("parity", dict)
        ts = store.timeseries("parity-ts", retention_seconds=86400)
        feed = ns.watch("k", after="0")
        yield [
            (store.store, store),
            (store.store.namespace("parity", default_ttl=60), ns),
            (store.store.collection("parity", dict), collection),
            (store.store.timeseries("parity-ts", retention_seconds=86400), ts),
            (store.store.namespace("parity").watch("k", after="0"), feed),
        ]


def test_every_public_async_class_has_a_blocking_twin() -> None:
    for name in prism.__all__:
        obj = getattr(prism, name)
        if not isinstance(obj, type) or name in ASYNC_ONLY:
            continue
        has_coroutines = any(
            inspect.iscoroutinefunction(getattr(obj, attr)) for attr in _public(obj) if hasattr(obj, attr)
        )
        if has_coroutines:
            assert obj in TWINS, f"prism.{name} has coroutine methods but no blocking twin"
            assert getattr(prism, TWINS[obj].__name__) is TWINS[obj]
    assert _signature(prism.connect, blocking=False) == _signature(prism.connect_sync, blocking=True)


def test_blocking_twins_have_every_public_name(twins: list[tuple[object, object]]) -> None:
    for async_obj, sync_obj in twins:
        sync_cls = type(sync_obj)
        extra = _public(sync_obj) - _public(async_obj)
        assert extra == set(SYNC_ONLY.get(sync_cls, {})), f"{sync_cls.__name__} has extra {extra}"
        missing = _public(async_obj) - _public(sync_obj)
        assert not missing, f"{sync_cls.__name__} lacks {sorted(missing)}"


def test_blocking_methods_have_the_async_signatures_and_docs(twins: list[tuple[object, object]]) -> None:
    for async_obj, sync_obj in twins:
        async_cls, sync_cls = type(async_obj), type(sync_obj)
        for name in sorted(_public(async_obj)):
            where = f"{sync_cls.__name__}.{name}"
            async_attr = inspect.getattr_static(async_cls, name, None)
            sync_attr = inspect.getattr_static(sync_cls, name, None)
            if inspect.isfunction(async_attr):
                assert inspect.isfunction(sync_attr), f"{where} is not a method"
                assert not inspect.iscoroutinefunction(sync_attr), f"{where} returns a coroutine"
                assert _signature(sync_attr, True) == _signature(async_attr, False), where
                assert async_attr.__doc__ in (None, sync_attr.__doc__), f"{where} docstring differs"
            elif isinstance(async_attr, property):
                assert isinstance(sync_attr, property), f"{where} is not a property"
                assert _signature(sync_attr.fget, True)[-1] == _signature(async_attr.fget, False)[-1], where
                assert async_attr.__doc__ in (None, sync_attr.__doc__), f"{where} docstring differs"
            else:  # a plain attribute of the async instance: the twin may expose it as a property
                assert not callable(sync_attr), f"{where} is callable, its twin is not"


def test_blocking_attributes_hold_the_async_values(twins: list[tuple[object, object]]) -> None:
    for async_obj, sync_obj in twins:
        for name in sorted(_public(async_obj)):
            async_value, sync_value = getattr(async_obj, name), getattr(sync_obj, name)
            where = f"{type(sync_obj).__name__}.{name}"
            if inspect.ismethod(async_value):
                continue
            if type(async_value) in TWINS:
                assert type(sync_value) is TWINS[type(async_value)], where
            elif (
                inspect.getattr_static(type(async_value), "__eq__") is object.__eq__
            ):  # e.g. a codec: equal by kind
                assert type(sync_value) is type(async_value), where
            else:
                assert sync_value == async_value, where


class AsyncRecorder:
    """Stands in for an async Namespace, Collection or Store: notes each call and its arguments."""

    def __init__(self, cls: type, calls: list[tuple[str, dict[str, Any]]]) -> None:
        self.cls = cls
        self.calls = calls
        if cls is Collection:
            self.namespace = AsyncRecorder(Namespace, calls)
        if cls is Store:
            self.is_open = True

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            # A private step a blocking twin may run itself first (Namespace._get_now): the
            # stand-in never answers in the calling thread, so the call goes on to its twin.
            return lambda *args, **kwargs: NOT_NOW
        func = inspect.getattr_static(self.cls, name)
        signature = inspect.signature(func)

        def record(*args: Any, **kwargs: Any) -> Any:
            bound = signature.bind(self, *args, **kwargs)
            self.calls.append((name, dict(list(bound.arguments.items())[1:])))
            if not inspect.iscoroutinefunction(func):  # namespace() and collection() return a handle
                twin = {"namespace": Namespace, "collection": Collection, "timeseries": TimeSeries}.get(name)
                return None if twin is None else AsyncRecorder(twin, self.calls)

            async def finished() -> None:
                return None

            return finished()

        return record


def _blocking(sync_cls: type, recorder: AsyncRecorder, blocking_portal: portal.Portal) -> Any:
    if sync_cls is SyncStore:  # built around an open store: give it the stand-in directly
        store = object.__new__(SyncStore)
        store.__dict__.update(_store=recorder, _portal=blocking_portal)
        return store
    return sync_cls(recorder, blocking_portal)


@pytest.mark.parametrize("async_cls", list(TWINS), ids=lambda cls: cls.__name__)
def test_blocking_methods_pass_every_argument_on_unchanged(async_cls: type) -> None:
    sync_cls = TWINS[async_cls]
    for name, func in sorted(vars(async_cls).items()):
        if name.startswith("_") or not inspect.isfunction(func):
            continue
        calls: list[tuple[str, dict[str, Any]]] = []
        blocking_portal = portal.Portal(inline=True)
        try:
            sync_obj = _blocking(sync_cls, AsyncRecorder(async_cls, calls), blocking_portal)
            # A distinct value for every parameter, named as the caller would name it.
            params = list(inspect.signature(func).parameters.values())[1:]
            args = [object() for p in params if p.kind is p.POSITIONAL_OR_KEYWORD]
            kwargs = {p.name: object() for p in params if p.kind is p.KEYWORD_ONLY}
            if any(p.kind is p.VAR_KEYWORD for p in params):
                kwargs["some_option"] = object()
            getattr(sync_obj, name)(*args, **kwargs)
            expected = dict(zip([p.name for p in params], args, strict=False))
            expected.update({k: v for k, v in kwargs.items() if k != "some_option"})
            if "some_option" in kwargs:
                expected["options"] = {"some_option": kwargs["some_option"]}
            assert calls[:1] == [(name, expected)], f"{sync_cls.__name__}.{name}"
        finally:
            blocking_portal.close()


# -- what the parity brings, used the blocking way ----------------------------------


class ConsistencyLessBackend(MemoryBackend):
    """The memory engine without strongly consistent reads."""

    name = "memory-eventual"
    capabilities = dataclasses.replace(MemoryBackend.capabilities, consistent_reads=False)


class ThreadNotingBackend(MemoryBackend):
    """Notes the thread each read runs on."""

    name = "memory-thread-noting"
    threads: list[threading.Thread] = []

    async def get(self, ns: str, record: str, key: str, *, consistent: bool = False) -> Item | None:
        self.threads.append(threading.current_thread())
        return await super().get(ns, record, key, consistent=consistent)


def _backend(cls: type[MemoryBackend]) -> str:
    return f"{__name__}:{cls.__name__}"


def test_blocking_reads_take_a_consistency() -> None:
    with prism.connect_sync("memory://") as store:
        ns, users = store.namespace("strong"), store.collection("strong-users", dict)
        ns.put("k", b"v")
        users.put("u", {"n": 1})
        assert ns.exists("k", consistency="strong") and not ns.exists("nope", consistency="strong")
        assert users.get("u", consistency="strong") == {"n": 1}
        assert users.get_many(["u", "nope"], consistency="strong") == {"u": {"n": 1}}
        assert users.exists("u", consistency="strong")
        with pytest.raises(InvalidArgument, match="consistency"):
            ns.exists("k", consistency="linear")  # type: ignore[arg-type]
    with prism.connect_sync("memory://", backend=_backend(ConsistencyLessBackend)) as store:
        ns, users = store.namespace("eventual"), store.collection("eventual-users", dict)
        ns.put("k", b"v")
        assert ns.exists("k", consistency="eventual")
        for read in (
            lambda: ns.exists("k", consistency="strong"),
            lambda: users.exists("u", consistency="strong"),
            lambda: users.get_with_etag("u", consistency="strong"),
            lambda: users.get_many(["u"], consistency="strong"),
        ):
            with pytest.raises(Unsupported, match="strongly consistent"):
                read()


def test_blocking_collection_etags_and_scans() -> None:
    with prism.connect_sync("memory://") as store:
        users = store.collection("users", dict)
        assert users.get_with_etag("u1") is None
        etag = users.put("u1", {"name": "Ada"})
        assert users.get_with_etag("u1") == ({"name": "Ada"}, etag)
        users.put("u1", {"name": "Ada L."}, if_match=etag)
        with pytest.raises(PreconditionFailed):
            users.put("u1", {"name": "stale"}, if_match=etag)
        users.put_many({"u2": {}, "u3": {}}, ttl=60)
        page = users.scan("u", limit=2)
        assert page.keys == ["u1", "u2"] and page.next_page_token is not None
        assert users.scan("u", limit=2, page_token=page.next_page_token).keys == ["u3"]
        assert users.namespace.get("u3") is not None
        assert (users.name, users.type) == ("users", dict)
        assert repr(users) == "<SyncCollection 'users' of dict>"


def test_blocking_results_and_records_take_every_option() -> None:
    with prism.connect_sync("memory://") as store:
        ns = store.namespace("records", default_ttl=30)
        assert (ns.name, ns.default_ttl, ns.max_value_bytes) == ("records", 30, store.max_value_bytes)
        created = ns.put_result(Put("k", b"v"))
        assert created.ok and not created.existed
        assert ns.put_result(Put("k", b"w")).existed
        assert ns.put_result(Put("i", b"x"), "rec").ok
        failed = ns.delete_result(Delete("k", if_match="stale"))
        assert not failed.ok and isinstance(failed.error, PreconditionFailed)
        assert ns.delete_result(Delete("k")).existed
        ns.put_items("rec", [Put(f"i{n}", b"x" * 10) for n in range(5)])
        assert [i.key for i in ns.get_items("rec", keys=["i1", "nope", "i3"])] == ["i1", "i3"]
        first = ns.get_items("rec", start="i1", end="i4", limit=2, consistency="strong")
        assert [i.key for i in first] == ["i1", "i2"]
        rest = ns.get_items("rec", start="i1", end="i4", limit=2, page_token=first.next_page_token)
        assert [i.key for i in rest] == ["i3"]
        assert [i.key for i in ns.get_items("rec", page_size_bytes=25)] == ["i", "i0", "i1"]
        assert ns.delete_items("rec", keys=["i0", "nope"]) == 1
        assert ns.delete_items("rec", start="i3") == 2
        assert [i.key for i in ns.get_items("rec")] == ["i", "i1", "i2"]


def test_blocking_store_lifecycle() -> None:
    store = prism.connect_sync("memory://")
    assert store.is_open and store.state.value == "open" and store.open() is store
    assert store.backend is store.store.backend and store.instrumentation is store.store.instrumentation
    assert repr(store) == "<SyncStore memory open>"
    store.close()
    store.close()
    assert not store.is_open and store.state_message() == "the store is closed"
    with pytest.raises(StoreClosed):
        store.open()


# -- the inline runner's guard --------------------------------------------------------


def test_inline_runner_is_checked_against_this_python() -> None:
    assert portal.inline_unavailable() is None
    assert portal.INLINE_UNAVAILABLE is None
    reason = portal.inline_unavailable((3, 99))
    assert reason is not None and "Python 3.99 is outside 3.11-" in reason
    bare_events = types.SimpleNamespace(_get_running_loop=asyncio.events._get_running_loop)
    assert portal.inline_unavailable(events=bare_events) == "asyncio.events._set_running_loop is missing"
    assert portal.inline_unavailable(future=object) == "asyncio.Future._asyncio_future_blocking is missing"


@pytest.mark.parametrize("unavailable", [None, "Python 3.99 is outside 3.11-3.14"])
def test_without_the_internals_blocking_calls_run_on_a_background_loop(
    monkeypatch: pytest.MonkeyPatch, unavailable: str | None
) -> None:
    monkeypatch.setattr(portal, "INLINE_UNAVAILABLE", unavailable)
    ThreadNotingBackend.threads.clear()
    with prism.connect_sync("memory://", backend=_backend(ThreadNotingBackend)) as store:
        users = store.collection("fallback", dict)
        etag = users.put("u", {"n": 1})
        assert users.get_with_etag("u") == ({"n": 1}, etag)
        assert store.namespace("fallback").exists("u")
        assert store.health()["status"] == "UP"
    inline = [t is threading.current_thread() for t in ThreadNotingBackend.threads]
    assert inline == [unavailable is None] * 2
