"""The Redis backend's short read for a cache tier's hits (``get_flat_within``), on a real redis-server."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator

import pytest

import prism
from prism.backends.redis import RedisBackend
from prism.testing.servers.redis import RedisServer, redis_server

NS = "quick"


@pytest.fixture
def server() -> Iterator[RedisServer]:
    with redis_server() as s:
        if s.external or s._process is None:
            pytest.skip("stopping and pausing the server needs a local redis-server")
        yield s


def backend(store: prism.Store) -> RedisBackend:
    b = store.backend
    assert isinstance(b, RedisBackend)
    return b


async def seed(store: prism.Store, count: int) -> None:
    ns = store.namespace(NS)
    for i in range(count):
        await ns.put(f"k{i}", f"v{i}".encode())


async def test_it_reads_what_get_many_reads(server: RedisServer) -> None:
    async with prism.connect(server.url) as store:
        ns = store.namespace(NS)
        await ns.put("a", b"1", content_type="text/plain")
        await ns.put("gone", b"x", ttl=0.05)
        await asyncio.sleep(0.1)
        b = backend(store)
        records = ["a", "missing", "gone", "a"]
        for _ in range(3):  # the first checks a connection out, the next ones reuse it
            quick = await b.get_flat_within(NS, records, 1.0)
            slow = await b.get_many(NS, [(r, "") for r in records])
            assert quick == slow
            assert quick[0] is not None and quick[0].value == b"1" and quick[0].content_type == "text/plain"
            assert quick[1] is None and quick[2] is None
        assert await b.get_flat_within(NS, [], 1.0) == []


async def test_concurrent_and_cancelled_reads_each_get_their_own_reply(server: RedisServer) -> None:
    async with prism.connect(server.url) as store:
        await seed(store, 50)
        b = backend(store)

        async def check(i: int) -> None:
            (item,) = await b.get_flat_within(NS, [f"k{i}"], 2.0)
            assert item is not None and item.value == f"v{i}".encode()

        for round_ in range(20):
            tasks = [asyncio.create_task(check(i)) for i in range(50)]
            await asyncio.sleep(0)
            if round_ % 2:
                # Cancel some mid-flight: a reply left on a kept connection must never answer another read.
                for t in tasks[::3]:
                    t.cancel()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            for r in results:
                assert r is None or isinstance(r, asyncio.CancelledError), r
        for i in range(50):
            await check(i)


async def test_a_restarted_server_is_read_again_without_an_error(server: RedisServer) -> None:
    async with prism.connect(server.url) as store:
        await seed(store, 3)
        b = backend(store)
        for _ in range(3):
            (item,) = await b.get_flat_within(NS, ["k1"], 1.0)
            assert item is not None and item.value == b"v1"
        server.stop()  # saves: the data comes back, the kept connection does not
        server.start()
        for i in range(3):
            (item,) = await b.get_flat_within(NS, [f"k{i}"], 2.0)
            assert item is not None and item.value == f"v{i}".encode()


async def test_a_paused_server_is_bounded_by_the_timeout_and_no_late_reply_is_misread(
    server: RedisServer,
) -> None:
    assert server._process is not None
    pid = server._process.pid
    async with prism.connect(server.url) as store:
        await seed(store, 4)
        b = backend(store)
        await b.get_flat_within(NS, ["k0"], 1.0)
        os.kill(pid, signal.SIGSTOP)
        try:
            for i in range(2):
                started = time.monotonic()
                with pytest.raises(TimeoutError):
                    await b.get_flat_within(NS, [f"k{i}"], 0.1)
                assert time.monotonic() - started < 1.0
        finally:
            os.kill(pid, signal.SIGCONT)
        # The paused reads' replies arrive now; each later read must get its own.
        for _ in range(3):
            for i in (2, 3, 0, 1):
                (item,) = await b.get_flat_within(NS, [f"k{i}"], 2.0)
                assert item is not None and item.value == f"v{i}".encode()


@pytest.mark.parametrize("max_connections", [1, 63])
async def test_a_small_pool_keeps_no_connection_from_other_commands(
    server: RedisServer, max_connections: int
) -> None:
    url = f"{server.url}?max_connections={max_connections}&pool_timeout=0.5"
    async with prism.connect(url) as store:
        await seed(store, 1)
        b = backend(store)
        pool = b._link.pool
        # Every other connection of the pool is busy elsewhere.
        held = [await pool.get_connection() for _ in range(max_connections - 1)]  # type: ignore[no-untyped-call]
        try:
            for _ in range(3):
                (item,) = await b.get_flat_within(NS, ["k0"], 1.0)
                assert item is not None
            # The one free connection went back to the pool: a write gets it at once.
            started = time.monotonic()
            await store.namespace(NS).put("k0", b"again")
            assert time.monotonic() - started < 0.4
        finally:
            for conn in held:
                await pool.release(conn)


async def test_closing_the_store_returns_the_kept_connection(server: RedisServer) -> None:
    store = await prism.connect(server.url)
    await seed(store, 1)
    b = backend(store)
    await b.get_flat_within(NS, ["k0"], 1.0)
    assert b._quick._idle
    await store.close()
    assert not b._quick._idle
