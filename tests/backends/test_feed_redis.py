"""The change feed on Redis (a server of its own): the conformance suites with ``feed=true``,
and what is Redis's own: the stream beside the namespace's keys, nothing logged without the
feed or for a refused write, per-key order under concurrent writers, the XREAD wake-up,
and retention per namespace.

The server keeps stream nodes of 8 entries (``stream-node-max-entries``, 100 by default)
so that the approximate trimming (``MAXLEN ~``), which drops whole nodes, shows with the
short feeds these tests use.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.crc import key_slot

import prism
from prism.backends.redis import RedisBackend
from prism.errors import BackendUnavailable, CursorExpired, InvalidArgument, PreconditionFailed, Unsupported
from prism.kv.store import Store
from prism.model import Delete, Put
from prism.testing.conformance import ConformanceSuite
from prism.testing.feed import FeedSuite, take
from prism.testing.servers.redis import RedisServer, redis_server

NODE_ENTRIES = 8


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    with redis_server() as s:
        if s.external:
            pytest.skip("the feed tests set stream-node-max-entries: they need a local redis-server")
        import redis

        client = redis.Redis.from_url(s.url)
        client.config_set("stream-node-max-entries", NODE_ENTRIES)
        client.close()
        yield s


@pytest.fixture
async def raw(server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(server.url)
    yield client
    await client.aclose()


@pytest.fixture
async def store(server: RedisServer) -> AsyncIterator[Store]:
    async with prism.connect(server.url, feed=True) as s:
        yield s


def _name() -> str:
    return f"feed-{uuid.uuid4().hex[:12]}"


def _stream(ns: str) -> str:
    return f"prism:{{{ns}}}:feed"


class TestRedisFeed(FeedSuite):
    @pytest.fixture
    def store_url(self, server: RedisServer) -> str:
        return server.url

    @pytest.fixture
    def store_options(self) -> dict[str, Any]:
        return {"feed": True}


class TestConformanceWithFeed(ConformanceSuite):
    """Every write path still does what it did with the stream appended in the same script."""

    @pytest.fixture
    def store_url(self, server: RedisServer) -> str:
        return server.url + "?feed=true"


async def test_without_the_feed_nothing_is_appended(server: RedisServer, raw: aioredis.Redis) -> None:
    name = _name()
    async with prism.connect(server.url) as plain:
        assert not plain.capabilities.watch
        ns = plain.namespace(name)
        await ns.put("a", b"1")
        await ns.put_many([Put("b", b"1"), Put("c", b"1")])
        await ns.put_items("r", [Put("i", b"1")])
        await ns.transact([Put("t", b"1"), Delete("a")])
        await ns.delete_items("r")
        with pytest.raises(Unsupported, match="feed=true"):
            ns.watch()
        with pytest.raises(Unsupported, match="feed=true"):
            plain.namespace(name, feed_retention=60)
    assert await raw.exists(_stream(name)) == 0
    assert await raw.exists(f"prism:{{{name}}}:ids") == 1


async def test_the_stream_is_in_the_namespace_slot(store: Store, raw: aioredis.Redis) -> None:
    name = "slot{test}%"
    ns = store.namespace(name)
    await ns.put("a", b"1")
    await ns.put_items("r", [Put("i", b"1")])
    keys = [k async for k in raw.scan_iter(match="prism:{slot{test%7D%25}:*")]
    assert b"prism:{slot{test%7D%25}:feed" in keys and len(keys) >= 4
    assert len({key_slot(k) for k in keys}) == 1


async def test_every_write_path_appends_inside_its_script(store: Store, raw: aioredis.Redis) -> None:
    """One entry per change, written by the call itself: no change is only in the feed or only in the data."""
    name = _name()
    ns = store.namespace(name)
    await ns.put("one", b"1")
    await ns.put_many([Put("m1", b"1"), Put("m2", b"2")])
    await ns.put_many([Put("c1", b"1", if_absent=True), Put("x", b"1", ttl=60)])
    await ns.delete("one")
    await ns.delete_many(["m1", "missing"])
    await ns.put_items("r", [Put("i1", b"1"), Put("i2", b"2")])
    await ns.delete_items("r")
    assert await raw.xlen(_stream(name)) == 1 + 2 + 2 + 1 + 1 + 2 + 2


async def test_a_failed_conditional_write_logs_nothing(store: Store, raw: aioredis.Redis) -> None:
    name = _name()
    ns = store.namespace(name)
    etag = await ns.put("k", b"1")
    await ns.put_items("r", [Put("i", b"1")])
    before = await raw.xlen(_stream(name))
    with pytest.raises(PreconditionFailed):
        await ns.put("k", b"2", if_match=etag + "x")
    with pytest.raises(PreconditionFailed):
        await ns.put("k", b"2", if_absent=True)
    (refused,) = await ns.put_items("r", [Put("i", b"2", if_absent=True)])
    assert not refused.ok
    results = await ns.put_many([Put("k", b"3", if_match="nope"), Put("k2", b"3", if_absent=True)])
    assert [r.ok for r in results] == [False, True]
    before += 1  # the one put of that batch that was applied
    with pytest.raises(PreconditionFailed):
        await ns.transact([Put("new", b"1"), Delete("k"), Put("k", b"3", if_match="nope")])
    with pytest.raises(PreconditionFailed):
        await ns.delete("k", if_match="nope")
    assert await raw.xlen(_stream(name)) == before
    assert await ns.get("new") is None


async def test_concurrent_writers_keep_per_key_order(server: RedisServer) -> None:
    """Four stores write the same keys at once: each writer's changes of a key come in the
    order it made them, every change comes once, and each key's last change is its value now."""
    name = _name()
    keys = [f"k{i}" for i in range(5)]
    rounds = 40
    async with prism.connect(server.url, feed=True) as watcher:
        feed = watcher.namespace(name).watch(poll_interval=0.01)
        await feed.start()
        writers = [await prism.connect(server.url, feed=True) for _ in range(4)]
        made: list[tuple[str, str | None]] = []  # (key, etag) in each writer's order, writer by writer
        per_writer: list[list[tuple[str, str | None]]] = [[] for _ in writers]
        try:

            async def write(store: Store, w: int) -> None:
                ns = store.namespace(name)
                for i in range(rounds):
                    key = keys[(i + w) % len(keys)]
                    if i % 2:
                        other = keys[(i + w + 1) % len(keys)]
                        results = await ns.put_many([Put(key, b"m"), Put(other, b"m")])
                        per_writer[w] += [(key, results[0].etag), (other, results[1].etag)]
                    else:
                        per_writer[w].append((key, await ns.put(key, f"{w}:{i}".encode())))

            await asyncio.gather(*(write(s, w) for w, s in enumerate(writers)))
            current = {k: (await watcher.namespace(name).get(k)) for k in keys}
        finally:
            for s in writers:
                await s.close()
        for writes in per_writer:
            made += writes
        changes = await take(feed, len(made))
        cursors = [int(c.cursor) for c in changes]
        assert cursors == sorted(cursors) and len(set(cursors)) == len(made)
        assert sorted((c.key, c.etag) for c in changes) == sorted(made)
        order = {(c.key, c.etag): i for i, c in enumerate(changes)}
        for writes in per_writer:
            for key in keys:
                mine = [order[(k, e)] for k, e in writes if k == key]
                assert mine == sorted(mine)
        last = {c.key: c.etag for c in changes}
        assert last == {k: item.etag for k, item in current.items() if item is not None}
        # Resuming in the middle gives the same suffix, in the same order.
        middle = len(changes) // 2
        again = await take(
            watcher.namespace(name).watch(after=changes[middle].cursor, poll_interval=0.01),
            len(changes) - middle - 1,
        )
        assert again == changes[middle + 1 :]


async def test_concurrent_compare_and_set_writers_see_their_chain_in_the_feed(server: RedisServer) -> None:
    """Writers race to update two keys with if_match: the successful writes of a key form one
    chain (each matched the etag of the one before), and the feed must give it in that order."""
    name = _name()
    keys = ["a", "b"]
    wins = 15
    async with prism.connect(server.url, feed=True) as watcher:
        feed = watcher.namespace(name).watch(poll_interval=0.01)
        await feed.start()
        first = {k: await watcher.namespace(name).put(k, b"0") for k in keys}
        writers = [await prism.connect(server.url, feed=True) for _ in range(4)]
        previous: dict[str, str] = {}  # new etag -> the etag it replaced
        try:

            async def write(store: Store, w: int) -> None:
                ns = store.namespace(name)
                for i in range(wins):
                    key = keys[(i + w) % 2]
                    while True:
                        item = await ns.get(key)
                        assert item is not None
                        try:
                            if i % 3 == 0:
                                (done,) = await ns.transact([Put(key, b"t", if_match=item.etag)])
                                etag = done.etag
                            else:
                                etag = await ns.put(key, f"{w}:{i}".encode(), if_match=item.etag)
                        except PreconditionFailed:
                            continue
                        assert etag is not None
                        previous[etag] = item.etag
                        break

            await asyncio.gather(*(write(s, w) for w, s in enumerate(writers)))
        finally:
            for s in writers:
                await s.close()
        changes = await take(feed, len(keys) + len(previous))
        for key in keys:
            chain = [c.etag for c in changes if c.key == key]
            assert chain[0] == first[key]
            assert [previous[e] for e in chain[1:] if e is not None] == chain[:-1]


async def test_a_watcher_is_woken_by_xread_not_by_its_poll(server: RedisServer) -> None:
    async with (
        prism.connect(server.url, feed=True, feed_block=30) as watcher,
        prism.connect(server.url, feed=True) as writer,
    ):
        name = _name()
        feed = watcher.namespace(name).watch(poll_interval=30)
        await feed.start()
        got = asyncio.get_running_loop().create_task(take(feed, 1, deadline=10))
        await asyncio.sleep(0.3)  # the watcher is blocked in XREAD by now
        started = time.monotonic()
        await writer.namespace(name).put("k", b"v")
        (change,) = await got
        assert change.key == "k" and time.monotonic() - started < 2.0


async def test_retention_per_namespace(server: RedisServer, raw: aioredis.Redis) -> None:
    """A namespace keeps the count it was given; another keeps the store's."""
    async with prism.connect(server.url, feed=True, feed_max_changes=1000) as store:
        short, long = _name(), _name()
        ns_short = store.namespace(short, feed_max_changes=10)
        ns_long = store.namespace(long)
        start_short = await ns_short.watch().start()
        start_long = await ns_long.watch().start()
        for i in range(60):
            await ns_short.put(f"k{i}", b"x")
            await ns_long.put(f"k{i}", b"x")
        assert await raw.xlen(_stream(short)) <= 10 + NODE_ENTRIES
        assert await raw.xlen(_stream(long)) == 60
        with pytest.raises(CursorExpired, match="older than the retained window"):
            await take(ns_short.watch(after=start_short), 1)
        assert len(await take(ns_long.watch(after=start_long), 60)) == 60
        # The handle without the option keeps the namespace's setting.
        await store.namespace(short).put("more", b"x")
        assert await raw.xlen(_stream(short)) <= 10 + NODE_ENTRIES


async def test_retention_by_age_per_namespace(server: RedisServer, raw: aioredis.Redis) -> None:
    async with prism.connect(server.url, feed=True) as store:
        name = _name()
        ns = store.namespace(name, feed_retention=0.2)
        start = await ns.watch().start()
        for i in range(NODE_ENTRIES * 2):
            await ns.put(f"k{i}", b"x")
        await asyncio.sleep(0.4)
        for i in range(NODE_ENTRIES * 2):
            await ns.put(f"n{i}", b"x")
        assert await raw.xlen(_stream(name)) <= NODE_ENTRIES * 3
        with pytest.raises(CursorExpired):
            await take(ns.watch(after=start), 1)


async def test_feed_options_are_checked(server: RedisServer) -> None:
    with pytest.raises(InvalidArgument, match="feed=true"):
        RedisBackend.from_url(server.url, feed_max_changes=10)
    with pytest.raises(InvalidArgument, match="feed_block"):
        RedisBackend.from_url(server.url + "?feed=true&feed_block=0")
    with pytest.raises(InvalidArgument, match="feed_block"):
        RedisBackend.from_url(server.url, feed_block=5)
    with pytest.raises(InvalidArgument, match="feed_retention"):
        RedisBackend.from_url(server.url, feed=True, feed_retention=-1)
    backend = RedisBackend.from_url(server.url + "?feed=true&feed_retention=60&feed_max_changes=7")
    assert (backend.feed_retention, backend.feed_max_changes, backend.feed) == (60.0, 7, True)
    async with prism.connect(server.url, feed=True) as store:
        with pytest.raises(InvalidArgument, match="feed_max_changes"):
            store.namespace("x", feed_max_changes=0)
        with pytest.raises(InvalidArgument, match="feed_retention"):
            store.namespace("x", feed_retention="1")  # type: ignore[arg-type]


async def test_a_watcher_across_a_server_restart_errors_then_resumes_without_a_gap(
    server: RedisServer,
) -> None:
    """A watcher blocked in XREAD sees the outage as an error, not a hang; after the server is
    back, its cursor resumes with every change written since."""
    fast: dict[str, Any] = {
        "connect_timeout": 0.5,
        "operation_timeout": 1.0,
        "max_retries": 2,
        "retry_cap": 0.1,
    }
    async with prism.connect(server.url, feed=True, **fast) as store:
        ns = store.namespace(_name())
        feed = ns.watch(poll_interval=0.5)
        await feed.start()
        await ns.put("before", b"x")
        (seen,) = await take(feed, 1)
        waiting = asyncio.get_running_loop().create_task(take(feed, 1, deadline=15))
        await asyncio.sleep(0.2)  # blocked in XREAD by now
        server.stop()
        try:
            with pytest.raises(BackendUnavailable):
                await waiting
        finally:
            await asyncio.to_thread(server.start)
            client = aioredis.Redis.from_url(server.url)
            await client.config_set("stream-node-max-entries", NODE_ENTRIES)  # not kept by a restart
            await client.aclose()
        for i in range(5):
            await ns.put(f"after{i}", b"x")
        again = await take(ns.watch(after=seen.cursor, poll_interval=0.01), 5)
        assert [c.key for c in again] == [f"after{i}" for i in range(5)]


async def test_a_cursor_of_a_namespace_that_was_reset_never_gives_a_gap(
    store: Store, raw: aioredis.Redis
) -> None:
    """The namespace's keys are deleted behind the store's back (a FLUSHDB, a restart without
    persistence): its old cursors raise CursorExpired, even once the new stream is longer."""
    name = _name()
    ns = store.namespace(name)
    start = await ns.watch().start()
    for i in range(3):
        await ns.put(f"k{i}", b"x")
    changes = await take(ns.watch(after=start, poll_interval=0.01), 3)
    await raw.delete(*[k async for k in raw.scan_iter(match=f"prism:{{{name}}}:*")])
    for i in range(10):
        await ns.put(f"n{i}", b"x")
    for change in changes:
        with pytest.raises(CursorExpired, match="ahead of the feed"):
            await take(ns.watch(after=change.cursor, poll_interval=0.01), 1)


async def test_a_closed_feed_ends_within_feed_block(server: RedisServer) -> None:
    async with prism.connect(server.url, feed=True, feed_block=0.2) as store:
        feed = store.namespace(_name()).watch(poll_interval=30)
        await feed.start()
        waiting = asyncio.get_running_loop().create_task(take(feed, 1, deadline=20))
        await asyncio.sleep(0.3)  # in XREAD BLOCK by now
        started = time.monotonic()
        await feed.close()
        assert await waiting == []  # the iteration ended, with no change
        assert time.monotonic() - started < 2.0


def test_the_blocking_api_watches_redis(server: RedisServer) -> None:
    with prism.connect_sync(server.url, feed=True) as store:
        ns = store.namespace(_name(), feed_max_changes=100)
        feed = ns.watch()
        feed.start()
        etag = ns.put("k", b"v")
        change = next(feed)
        assert (change.key, change.op, change.etag) == ("k", "put", etag)
