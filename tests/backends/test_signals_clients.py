"""``prism://`` and ``prism+http://`` apply the gateway's signals, against an artificially slow store.

The gateway runs in this process (uvicorn and grpc.aio on free ports) over the delayed
memory store of prism.testing, so the test sets how long each read takes and counts
the reads that reached the store. The namespace declares ``latency_p99_ms: 20``:
its signals are a deadline of 80 ms and a hedge after 20 ms, one attempt in all.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
import uvicorn
from prometheus_client import REGISTRY

import prism
from prism.gateway import create_app, parse_config
from prism.gateway.auth import hash_api_key
from prism.grpc.server import serve_grpc
from prism.kv.store import Store
from prism.streaming.app import UVICORN_OPTIONS
from prism.testing.servers import free_port
from prism.testing.slow import DelayedBackend

KEY = "key-writer-0123456789"
SCHEMES = ["prism+http", "prism"]


@dataclass
class Served:
    slow: DelayedBackend
    urls: dict[str, str]


@contextlib.asynccontextmanager
async def serving(**signals: Any) -> AsyncIterator[Served]:
    slow = DelayedBackend()
    config = {
        "stores": {"main": "memory://", "slow": "memory://"},
        "auth": {"api_keys": [{"name": "w", "sha256": hash_api_key(KEY), "roles": ["writer"]}]},
        "namespaces": [
            {"name": "hot", "store": "slow", "needs": {"latency_p99_ms": 20}},
            {"name": "pages", "store": "slow", "needs": {"latency_p99_ms": 100}},
        ],
        "signals": {"retry_attempts": 1, "min_latency_max_ms": 20, **signals},
        "audit": {"sink": "none"},
        "server": {"access_log": False},
    }
    grpc_port = free_port()
    start, stop = serve_grpc("127.0.0.1", grpc_port, True)
    app = create_app(
        parse_config(config, source="test.yaml", env={}),
        env={},
        stores={"slow": Store(slow)},
        on_startup=[start],
        on_shutdown=[stop],
    )
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="critical", **UVICORN_OPTIONS)
    )
    task = asyncio.create_task(server.serve())
    for _ in range(1000):
        if server.started or task.done():
            break
        await asyncio.sleep(0.01)
    if task.done():
        task.result()
    try:
        yield Served(
            slow, {"prism+http": f"prism+http://127.0.0.1:{port}", "prism": f"prism://127.0.0.1:{grpc_port}"}
        )
    finally:
        server.should_exit = True
        await task


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def hedges(scheme: str, outcome: str) -> float:
    return metric("prism_client_hedged_reads_total", backend=scheme, outcome=outcome)


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    async with serving() as s:
        yield s


@pytest.mark.parametrize("scheme", SCHEMES)
async def test_a_hedge_fires_and_wins(served: Served, scheme: str) -> None:
    async with prism.connect(served.urls[scheme], token=KEY) as store:
        ns = store.namespace("hot")
        await ns.put("k", b"v")
        sent, won = hedges(scheme, "sent"), hedges(scheme, "won")
        before = served.slow.reads
        served.slow.read_delays.extend([1.0])  # the first read stalls; the hedge does not
        started = time.monotonic()
        item = await ns.get("k")
        took = time.monotonic() - started
        assert item is not None and item.value == b"v"
        assert took < 0.5, took
        assert hedges(scheme, "sent") - sent == 1 and hedges(scheme, "won") - won == 1
        await asyncio.sleep(1.1)  # the stalled read finishes on the gateway
        assert served.slow.reads - before == 2
        # A quick read sends no hedge.
        assert (await ns.get("k")) is not None
        assert hedges(scheme, "sent") - sent == 1


@pytest.mark.parametrize("scheme", SCHEMES)
async def test_a_slow_store_gets_one_extra_request_at_most_and_the_deadline_holds(
    served: Served, scheme: str
) -> None:
    async with prism.connect(served.urls[scheme], token=KEY) as store:
        ns = store.namespace("hot")
        await ns.put("k", b"v")
        sent, won = hedges(scheme, "sent"), hedges(scheme, "won")
        before = served.slow.reads
        served.slow.read_delay = 0.3
        started = time.monotonic()
        with pytest.raises(prism.Timeout):
            await ns.get("k")
        took = time.monotonic() - started
        # The deadline is the signals' 80 ms, not the backend's own 10 s.
        assert 0.07 <= took < 0.25, took
        await asyncio.sleep(0.5)
        assert served.slow.reads - before == 2
        assert hedges(scheme, "sent") - sent == 1 and hedges(scheme, "won") - won == 0


@pytest.mark.parametrize("scheme", SCHEMES)
async def test_signals_are_asked_on_first_use_and_again_after_refresh(scheme: str) -> None:
    async with (
        serving(refresh_after_s=0.3) as served,
        prism.connect(served.urls[scheme] + "?signals_prefetch=0", token=KEY) as store,
    ):
        backend: Any = store.backend
        ns = store.namespace("hot")
        fetched = metric("prism_client_signals_fetches_total", backend=scheme, outcome="ok")
        await ns.get("missing")
        held = backend.signals.peek("hot")
        assert held is not None
        assert (held.latency_max_ms, held.hedge_after_ms, held.refresh_after_s) == (80.0, 20.0, 0.3)
        for _ in range(3):
            await ns.get("missing")
        assert metric("prism_client_signals_fetches_total", backend=scheme, outcome="ok") - fetched == 1
        await asyncio.sleep(0.35)
        await ns.get("missing")  # stale: refreshed in the background, this call not held up
        await asyncio.sleep(0.1)
        # At least one refresh (a slow run may see the background refresher's next round too).
        assert metric("prism_client_signals_fetches_total", backend=scheme, outcome="ok") - fetched >= 2


@pytest.mark.parametrize("scheme", SCHEMES)
async def test_large_values_travel_compressed(served: Served, scheme: str) -> None:
    async with prism.connect(served.urls[scheme], token=KEY) as store:
        ns = store.namespace("hot")
        compressed = metric("prism_client_compressed_writes_total", backend=scheme)
        await ns.put("small", b"s" * 100)
        assert metric("prism_client_compressed_writes_total", backend=scheme) == compressed
        big = b"prism signals " * 2000
        await ns.put("big", big)
        assert metric("prism_client_compressed_writes_total", backend=scheme) - compressed == 1
        item = await ns.get("big")
        assert item is not None and item.value == big
        # Batches and records too, whole.
        await ns.put_items("rec", [prism.Put("a", big), prism.Put("b", b"b")])
        assert metric("prism_client_compressed_writes_total", backend=scheme) - compressed == 2
        assert [i.value for i in (await ns.get_items("rec")).items] == [big, b"b"]
        await ns.transact([prism.Put("t1", big), prism.Put("t2", b"x")])
        assert metric("prism_client_compressed_writes_total", backend=scheme) - compressed == 3
        assert [i.value if i else None for i in await ns.get_many(["t1", "t2"])] == [big, b"x"]
        # What does not compress travels as it is (over HTTP: the gzip would be larger).
        noise = os.urandom(20_000)
        await ns.put("noise", noise)
        assert (await ns.get("noise")).value == noise  # type: ignore[union-attr]


@pytest.mark.parametrize("scheme", SCHEMES)
async def test_without_signals_the_backend_keeps_its_own_settings(served: Served, scheme: str) -> None:
    async with prism.connect(served.urls[scheme], token=KEY, signals=False) as store:
        ns = store.namespace("hot")
        await ns.put("k", b"v")
        sent = hedges(scheme, "sent")
        before = served.slow.reads
        served.slow.read_delays.extend([0.3])
        item = await ns.get("k")  # slower than the signals' deadline, within the backend's own
        assert item is not None and item.value == b"v"
        assert served.slow.reads - before == 1 and hedges(scheme, "sent") == sent


@pytest.mark.parametrize("scheme", SCHEMES)
def test_bad_signal_options_are_refused(scheme: str) -> None:
    with pytest.raises(prism.InvalidArgument, match="signals_retry"):
        prism.connect(f"{scheme}://127.0.0.1:1?signals_retry=soon")
    with pytest.raises(prism.InvalidArgument, match="signals"):
        prism.connect(f"{scheme}://127.0.0.1:1?signals=maybe")


@pytest.mark.parametrize("scheme", SCHEMES)
async def test_settings_the_user_gave_are_never_overridden(served: Served, scheme: str) -> None:
    async with prism.connect(f"{served.urls[scheme]}?operation_timeout=2", token=KEY) as store:
        ns = store.namespace("hot")
        await ns.put("k", b"v")
        sent = hedges(scheme, "sent")
        before = served.slow.reads
        served.slow.read_delay = 0.3
        item = await ns.get("k")  # past the signals' 80 ms deadline, within the user's 2 s
        assert item is not None and item.value == b"v"
        # Still hedged: at most one extra request.
        await asyncio.sleep(0.4)
        assert served.slow.reads - before == 2 and hedges(scheme, "sent") - sent == 1


@pytest.mark.parametrize("scheme", SCHEMES)
async def test_early_pages_reach_the_client_whole_and_unhedged(scheme: str) -> None:
    # "pages": a 400 ms deadline, 200 ms of it for reading the store, 50 ms per read of 10 keys.
    async with serving(page_chunk=10) as served, prism.connect(served.urls[scheme], token=KEY) as store:
        ns = store.namespace("pages")
        keys = [f"k{i:03}" for i in range(100)]
        await ns.put_many([prism.Put(k, b"v") for k in keys])
        early = metric("prism_early_pages_total", namespace="pages", op="scan")
        sent = hedges(scheme, "sent")
        served.slow.scan_delay = 0.05
        page = await ns.scan(limit=100)
        assert page.keys == keys
        assert metric("prism_early_pages_total", namespace="pages", op="scan") - early >= 2
        assert hedges(scheme, "sent") == sent
        await ns.put_items("r", [prism.Put(f"i{i:03}", b"v") for i in range(50)])
        early = metric("prism_early_pages_total", namespace="pages", op="records_get")
        items = await ns.get_items("r", limit=50)
        assert [i.key for i in items.items] == [f"i{i:03}" for i in range(50)]
        assert metric("prism_early_pages_total", namespace="pages", op="records_get") - early >= 1


async def test_signals_over_grpc_are_for_readers_only() -> None:
    from grpc import StatusCode, aio

    from prism.grpc._gen.prism.v1 import signals_pb2

    async with serving() as served:
        target = served.urls["prism"].removeprefix("prism://")
        async with aio.insecure_channel(target) as channel:
            call = channel.unary_unary(
                "/prism.v1.Signals/GetSignals",
                request_serializer=signals_pb2.GetSignalsRequest.SerializeToString,
                response_deserializer=signals_pb2.SignalsResponse.FromString,
            )
            got = await call(signals_pb2.GetSignalsRequest(namespace="hot"), metadata=(("x-api-key", KEY),))
            assert (got.latency_target_ms, got.latency_max_ms, got.hedge_after_ms) == (20.0, 80.0, 20.0)
            assert list(got.compression) == ["gzip"] and got.retry.max_attempts == 1
            with pytest.raises(aio.AioRpcError) as refused:
                await call(signals_pb2.GetSignalsRequest(namespace="hot"))
            assert refused.value.code() == StatusCode.UNAUTHENTICATED
            with pytest.raises(aio.AioRpcError) as missing:
                await call(signals_pb2.GetSignalsRequest(namespace="nope"), metadata=(("x-api-key", KEY),))
            assert missing.value.code() == StatusCode.NOT_FOUND


@pytest.mark.parametrize("scheme", SCHEMES)
async def test_concurrent_reads_ask_once_and_hedge_once_each(served: Served, scheme: str) -> None:
    async with prism.connect(
        f"{served.urls[scheme]}?operation_timeout=3&signals_prefetch=0", token=KEY
    ) as store:
        ns = store.namespace("hot")
        fetched = metric("prism_client_signals_fetches_total", backend=scheme, outcome="ok")
        sent = hedges(scheme, "sent")
        # 20 first uses at once: one question to the gateway.
        assert await asyncio.gather(*(ns.get(f"m{i}") for i in range(20))) == [None] * 20
        assert metric("prism_client_signals_fetches_total", backend=scheme, outcome="ok") - fetched == 1
        await ns.put_many([prism.Put(f"k{i}", b"v") for i in range(20)])
        before = served.slow.reads
        sent = hedges(scheme, "sent")
        served.slow.read_delay = 0.3  # every read, hedges included, is slow
        items = await asyncio.gather(*(ns.get(f"k{i}") for i in range(20)))
        assert all(item is not None and item.value == b"v" for item in items)
        await asyncio.sleep(0.4)
        # Each read was hedged once, never more: 20 hedges, at most 40 requests at the store (a hedge
        # cancelled before it left the client never reaches it).
        assert hedges(scheme, "sent") - sent == 20
        assert 20 < served.slow.reads - before <= 40


@pytest.mark.parametrize("scheme", SCHEMES)
async def test_a_gateway_that_stops_fails_reads_fast_and_keeps_the_last_signals(scheme: str) -> None:
    async with serving(refresh_after_s=0.2) as served:
        store = prism.connect(served.urls[scheme], token=KEY)
        await store.open()
        backend: Any = store.backend
        ns = store.namespace("hot")
        await ns.put("k", b"v")
        assert (await ns.get("k")) is not None
        held = backend.signals.peek("hot")
    try:
        # The gateway is gone: reads fail within the signals' deadline, never hang.
        failed = metric("prism_client_signals_fetches_total", backend=scheme, outcome="failed")
        await asyncio.sleep(0.3)  # the signals are stale now
        started = time.monotonic()
        with pytest.raises(prism.BackendUnavailable):
            await ns.get("k")
        assert time.monotonic() - started < 1.0
        await asyncio.sleep(0.3)  # the background refresh has failed by now
        assert metric("prism_client_signals_fetches_total", backend=scheme, outcome="failed") - failed >= 1
        assert backend.signals.peek("hot") == held  # the last answer is kept
    finally:
        await store.close()


async def test_reflection_lists_the_signals_service(served: Served) -> None:
    from grpc import aio
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    async with aio.insecure_channel(served.urls["prism"].removeprefix("prism://")) as channel:
        reflect = reflection_pb2_grpc.ServerReflectionStub(channel)
        names: set[str] = set()
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        async for response in reflect.ServerReflectionInfo(iter([request])):
            names = {s.name for s in response.list_services_response.service}
        assert "prism.v1.Signals" in names
        request = reflection_pb2.ServerReflectionRequest(file_containing_symbol="prism.v1.Signals")
        async for response in reflect.ServerReflectionInfo(iter([request])):
            assert response.file_descriptor_response.file_descriptor_proto


def fetches(scheme: str, outcome: str = "ok") -> float:
    return metric("prism_client_signals_fetches_total", backend=scheme, outcome=outcome)


@pytest.mark.parametrize("scheme", SCHEMES)
async def test_signals_come_on_connect_so_the_very_first_read_is_hedged_and_bounded(
    served: Served, scheme: str
) -> None:
    async with prism.connect(served.urls[scheme] + "?signals=false", token=KEY) as writer:
        await writer.namespace("hot").put("k", b"v")
    before = fetches(scheme)
    async with prism.connect(served.urls[scheme], token=KEY) as store:
        backend: Any = store.backend
        # One question per namespace the caller may read, asked while connecting.
        assert fetches(scheme) - before == 2
        held = backend.signals.peek("hot")
        assert held is not None and (held.latency_max_ms, held.hedge_after_ms) == (80.0, 20.0)
        assert backend.signals.peek("pages") is not None
        sent, asked, reads = hedges(scheme, "sent"), fetches(scheme), served.slow.reads
        served.slow.read_delays.extend([1.0])  # the very first read stalls; its hedge does not
        started = time.monotonic()
        item = await store.namespace("hot").get("k")
        assert time.monotonic() - started < 0.5
        assert item is not None and item.value == b"v"
        assert hedges(scheme, "sent") - sent == 1
        assert fetches(scheme) == asked  # the read asked nothing more of the gateway
        await asyncio.sleep(1.1)
        assert served.slow.reads - reads == 2
    async with prism.connect(served.urls[scheme], token=KEY) as store:
        served.slow.read_delay = 0.3
        started = time.monotonic()
        with pytest.raises(prism.Timeout):
            await store.namespace("hot").get("k")  # the first call of this connection
        assert 0.07 <= time.monotonic() - started < 0.25
        served.slow.read_delay = 0.0


@pytest.mark.parametrize("scheme", SCHEMES)
async def test_signals_asked_on_connect_are_bounded_by_signals_prefetch(served: Served, scheme: str) -> None:
    async with prism.connect(served.urls[scheme] + "?signals_prefetch=1", token=KEY) as store:
        backend: Any = store.backend
        assert backend.signals.peek("hot") is not None and backend.signals.peek("pages") is None
        asked = fetches(scheme)
        await store.namespace("pages").get("missing")
        assert fetches(scheme) - asked == 1 and backend.signals.peek("pages") is not None
    with pytest.raises(prism.InvalidArgument, match="signals_prefetch"):
        prism.connect(served.urls[scheme] + "?signals_prefetch=-1")
    with pytest.raises(prism.InvalidArgument, match="signals_prefetch"):
        prism.connect(served.urls[scheme] + "?signals_prefetch=many")


@pytest.mark.parametrize("scheme", SCHEMES)
async def test_failures_on_connect_do_not_fail_it_and_are_asked_again_on_first_use(
    served: Served, scheme: str, caplog: pytest.LogCaptureFixture
) -> None:
    # The list of namespaces fails.
    store = prism.connect(served.urls[scheme], token=KEY)
    backend: Any = store.backend

    async def unlisted() -> list[str]:
        raise prism.BackendUnavailable("the list went away")

    backend._readable = unlisted
    with caplog.at_level("WARNING", logger="prism.backends"):
        async with store:
            assert backend.signals.peek("hot") is None
            assert "could not ask for signals when connecting" in caplog.text
            asked = fetches(scheme)
            served.slow.read_delay = 0.3
            with pytest.raises(prism.Timeout):
                await store.namespace("hot").get("k")  # asked now, and the deadline holds
            served.slow.read_delay = 0.0
            assert fetches(scheme) - asked == 1 and backend.signals.peek("hot") is not None
    # The signals of one namespace do not come.
    store = prism.connect(served.urls[scheme], token=KEY)
    backend = store.backend
    real = backend.signals._fetch

    async def flaky(ns: str) -> Any:
        return None if ns == "pages" else await real(ns)

    backend.signals._fetch = flaky
    caplog.clear()
    with caplog.at_level("WARNING", logger="prism.backends"):
        async with store:
            assert backend.signals.peek("hot") is not None and backend.signals.peek("pages") is None
            assert "answered no signals for 1 of 2 namespaces" in caplog.text
            backend.signals._fetch = real
            await store.namespace("pages").get("missing")
            assert backend.signals.peek("pages") is not None
    # A gateway too slow to answer: the connect still returns within connect_timeout of the list.
    store = prism.connect(served.urls[scheme] + "?connect_timeout=0.2", token=KEY)
    backend = store.backend

    async def stalled(ns: str) -> Any:
        await asyncio.sleep(5)

    backend.signals._fetch = stalled
    started = time.monotonic()
    async with store:
        assert time.monotonic() - started < 1.0
        assert backend.signals.peek("hot") is None


@pytest.mark.parametrize("scheme", SCHEMES)
async def test_signals_are_refreshed_in_the_background_without_any_call(scheme: str) -> None:
    async with serving(refresh_after_s=0.2) as served, prism.connect(served.urls[scheme], token=KEY) as store:
        asked = fetches(scheme)
        await asyncio.sleep(0.5)  # no call at all: 2 namespaces refreshed twice each
        assert 4 <= fetches(scheme) - asked <= 6
        backend: Any = store.backend
    assert backend.signals._keeper is None  # stopped with the backend
