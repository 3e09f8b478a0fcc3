"""The cache tier: shared look-aside cache (against a real Redis) and near cache, through the library."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis as redis_py
from prometheus_client import REGISTRY

import prism
from prism import Cache, Delete, NearCache, Put
from prism.kv.cache import CachedBackend
from prism.kv.namespace import Namespace
from prism.testing.servers.postgres import postgres_url
from prism.testing.servers.redis import RedisServer, redis_server


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisServer]:
    with redis_server() as server:
        yield server


def tier(ns: Namespace) -> CachedBackend:
    backend = ns._backend
    assert isinstance(backend, CachedBackend)
    return backend


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


class Replicas:
    """Processes' worth of stores on one SQLite file, each with its own cache tier on one Redis."""

    def __init__(self, db: Path | str, cache_url: str, namespace: str, **cache: Any) -> None:
        self.db = db
        self.cache_url = cache_url
        self.namespace = namespace
        self.cache = cache
        self.opened: list[prism.Store] = []

    async def replica(
        self, *, near: NearCache | None = None, feed: bool = False, shared: bool = True
    ) -> Namespace:
        url = self.db if isinstance(self.db, str) else f"sqlite:///{self.db}"
        store = await prism.connect(url + ("?feed=true" if feed else ""))
        self.opened.append(store)
        cache = None
        if shared:
            cache_store = await prism.connect(self.cache_url)
            self.opened.append(cache_store)
            cache = Cache(cache_store, **self.cache)
        return store.namespace(self.namespace, cache=cache, near_cache=near)

    async def close(self) -> None:
        for store in reversed(self.opened):
            await store.close()


@pytest.fixture
async def replicas(tmp_path: Path, redis: RedisServer) -> AsyncIterator[Replicas]:
    group = Replicas(tmp_path / "data.db", redis.url, f"profiles-{uuid.uuid4().hex[:8]}")
    try:
        yield group
    finally:
        await group.close()


async def value(ns: Namespace, key: str) -> bytes | None:
    item = await ns.get(key)
    return None if item is None else item.value


# -- hits, fills and invalidation on every write path ----------------------------------


async def test_a_read_fills_the_cache_and_the_next_read_is_a_hit(replicas: Replicas) -> None:
    a = await replicas.replica()
    etag = await a.put("k", b"v1", content_type="text/plain")
    labels = {"namespace": replicas.namespace, "tier": "shared"}
    hits = metric("prism_cache_requests_total", **labels, result="hit")
    first = await a.get("k")
    second = await a.get("k")
    assert first is not None and second is not None
    assert (second.value, second.etag, second.content_type) == (b"v1", etag, "text/plain")
    assert second.updated_at == first.updated_at
    assert metric("prism_cache_requests_total", **labels, result="hit") == hits + 1
    assert metric("prism_cache_fills_total", **labels, result="ok") >= 1
    # Another replica is served from the same entry.
    b = await replicas.replica()
    assert await value(b, "k") == b"v1"
    assert metric("prism_cache_requests_total", **labels, result="hit") == hits + 2
    # A missing key is cached as missing, and a later put is seen.
    assert await b.get("nope") is None
    assert await b.get("nope") is None
    await a.put("nope", b"here")
    assert await value(b, "nope") == b"here"


WRITES: dict[str, Callable[[Namespace, str], Awaitable[Any]]] = {
    "put": lambda ns, etag: ns.put("k", b"new"),
    "put_if_match": lambda ns, etag: ns.put("k", b"new", if_match=etag),
    "put_with_ttl": lambda ns, etag: ns.put("k", b"new", ttl=60),
    "put_result": lambda ns, etag: ns.put_result(Put("k", b"new")),
    "put_many": lambda ns, etag: ns.put_many([Put("other", b"x"), Put("k", b"new")]),
    "transact": lambda ns, etag: ns.transact([Put("k", b"new"), Put("other", b"x")]),
    "put_items": lambda ns, etag: ns.put_items("k", [Put("", b"new")]),
    "delete": lambda ns, etag: ns.delete("k"),
    "delete_if_match": lambda ns, etag: ns.delete("k", if_match=etag),
    "delete_many": lambda ns, etag: ns.delete_many([Delete("k")]),
    "transact_delete": lambda ns, etag: ns.transact([Delete("k")]),
    "delete_items": lambda ns, etag: ns.delete_items("k"),
    "delete_items_keys": lambda ns, etag: ns.delete_items("k", keys=[""]),
}


@pytest.mark.parametrize("write", list(WRITES))
async def test_every_write_path_invalidates_every_replica(replicas: Replicas, write: str) -> None:
    a, b = await replicas.replica(), await replicas.replica()
    etag = await a.put("k", b"old")
    assert await value(b, "k") == b"old"
    assert await value(b, "k") == b"old"  # cached now
    await WRITES[write](a, etag)
    expected = None if write.startswith("delete") or write == "transact_delete" else b"new"
    assert await value(b, "k") == expected
    assert await value(a, "k") == expected


async def test_a_refused_condition_keeps_the_cached_value_right(replicas: Replicas) -> None:
    a, b = await replicas.replica(), await replicas.replica()
    await a.put("k", b"v1")
    assert await value(b, "k") == b"v1"
    with pytest.raises(prism.PreconditionFailed):
        await a.put("k", b"v2", if_match="not-the-etag")
    assert await value(b, "k") == b"v1"


async def test_an_entry_never_outlives_the_items_ttl(replicas: Replicas) -> None:
    a = await replicas.replica()
    await a.put("k", b"brief", ttl=0.5)
    assert await value(a, "k") == b"brief"
    assert await value(a, "k") == b"brief"  # from the cache, whose entry expires with the item
    await asyncio.sleep(0.7)
    assert await a.get("k") is None


async def test_strong_reads_scans_and_record_ranges_go_to_the_store(replicas: Replicas) -> None:
    a = await replicas.replica()
    await a.put("k", b"v1")
    await a.put_items("rec", [Put("x", b"1"), Put("y", b"2")])
    assert await value(a, "k") == b"v1"
    labels = {"namespace": replicas.namespace, "tier": "shared"}
    before = sum(metric("prism_cache_requests_total", **labels, result=r) for r in ("hit", "miss"))
    item = await a.get("k", consistency="strong")
    assert item is not None and item.value == b"v1"
    assert (await a.scan()).items == ["k", "rec"]
    assert [i.value for i in (await a.get_items("rec")).items] == [b"1", b"2"]
    after = sum(metric("prism_cache_requests_total", **labels, result=r) for r in ("hit", "miss"))
    assert after == before


async def test_values_over_max_item_bytes_are_read_from_the_store(replicas: Replicas) -> None:
    replicas.cache["max_item_bytes"] = 10
    a, b = await replicas.replica(), await replicas.replica()
    await a.put("big", b"x" * 11)
    assert await value(a, "big") == b"x" * 11
    labels = {"namespace": replicas.namespace, "tier": "shared"}
    hits = metric("prism_cache_requests_total", **labels, result="hit")
    assert await value(b, "big") == b"x" * 11
    assert metric("prism_cache_requests_total", **labels, result="hit") == hits


async def test_namespaces_do_not_share_entries(tmp_path: Path, redis: RedisServer) -> None:
    async with prism.connect(f"sqlite:///{tmp_path / 'd.db'}") as store, prism.connect(redis.url) as cache:
        # A tenant's keys live in its own namespace (orders~t~acme), so its cache entries too.
        acme = store.namespace("orders~t~acme", cache=Cache(cache))
        globex = store.namespace("orders~t~globex", cache=Cache(cache))
        await acme.put("k", b"acme")
        await globex.put("k", b"globex")
        for _ in range(2):
            assert await value(acme, "k") == b"acme"
            assert await value(globex, "k") == b"globex"


# -- the miss / fill / invalidate race ---------------------------------------------------


async def test_a_fill_that_read_before_a_write_never_lands_after_it(replicas: Replicas) -> None:
    """Reader misses and reads the old value; writer updates and invalidates; reader fills last."""
    reader, writer, checker = await replicas.replica(), await replicas.replica(), await replicas.replica()
    await writer.put("k", b"old")
    read_done = asyncio.Event()
    write_done = asyncio.Event()

    async def hold(step: str, record: str) -> None:
        if step == "filling":  # the reader has read the store: let the writer run first
            read_done.set()
            await write_done.wait()

    shared = tier(reader).shared
    assert shared is not None
    shared.on_step = hold
    read = asyncio.create_task(reader.get("k"))
    await read_done.wait()
    await writer.put("k", b"new")  # acknowledged: the store has it and the entry is invalidated
    write_done.set()
    old = await read
    assert old is not None and old.value == b"old"  # it began before the write: fine to answer
    shared.on_step = None
    labels = {"namespace": replicas.namespace, "tier": "shared"}
    assert metric("prism_cache_fills_total", **labels, result="refused") >= 1
    for ns in (checker, reader, writer):
        assert await value(ns, "k") == b"new"


async def test_a_reader_that_misses_after_the_write_fills_the_new_value(replicas: Replicas) -> None:
    """The write lands between the reader's lease and its store read: the fill is the new value."""
    reader, writer, checker = await replicas.replica(), await replicas.replica(), await replicas.replica()
    await writer.put("k", b"old")
    leased = asyncio.Event()
    go = asyncio.Event()

    async def hold(step: str, record: str) -> None:
        if step == "leased":
            leased.set()
            await go.wait()

    shared = tier(reader).shared
    assert shared is not None
    shared.on_step = hold
    read = asyncio.create_task(reader.get("k"))
    await leased.wait()
    await writer.put("k", b"new")
    go.set()
    got = await read
    assert got is not None and got.value == b"new"
    assert await value(checker, "k") == b"new"


async def test_a_reader_that_dies_holding_a_lease_blocks_no_fill_for_long(replicas: Replicas) -> None:
    replicas.cache["lease_ttl"] = 2.0  # long enough for three reads on a loaded machine
    dying, other, writer = await replicas.replica(), await replicas.replica(), await replicas.replica()
    await writer.put("k", b"v1")
    leased = asyncio.Event()

    async def stall(step: str, record: str) -> None:
        if step == "leased":
            leased.set()
            await asyncio.Event().wait()  # never returns: the process "dies" holding the lease

    shared = tier(dying).shared
    assert shared is not None
    shared.on_step = stall
    doomed = asyncio.create_task(dying.get("k"))
    await leased.wait()
    doomed.cancel()
    labels = {"namespace": replicas.namespace, "tier": "shared"}
    hits = metric("prism_cache_requests_total", **labels, result="hit")
    for _ in range(3):  # the lease is held: answered by the store, nothing filled
        assert await value(other, "k") == b"v1"
    assert metric("prism_cache_requests_total", **labels, result="hit") == hits
    await asyncio.sleep(2.1)  # the lease has expired
    assert await value(other, "k") == b"v1"  # fills
    assert await value(other, "k") == b"v1"  # a hit
    assert metric("prism_cache_requests_total", **labels, result="hit") == hits + 1


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    url, server = postgres_url()
    try:
        yield url
    finally:
        if server is not None:
            server.close()


async def test_concurrent_readers_never_see_a_value_older_than_the_last_ack(
    pg_url: str, redis: RedisServer
) -> None:
    """Replicas on PostgreSQL, whose reads suspend, so readers and the writer interleave freely."""
    replicas = Replicas(pg_url, redis.url, f"counter-{uuid.uuid4().hex[:8]}")
    try:
        stale, hits = await _readers_against_a_writer(replicas)
    finally:
        await replicas.close()
    assert stale == []
    assert hits > 0


async def _readers_against_a_writer(replicas: Replicas) -> tuple[list[tuple[int, int]], float]:
    """(every read older than the last acknowledged write as (seen, acked), shared-cache hits)."""
    writer = await replicas.replica()
    readers = [await replicas.replica() for _ in range(3)]
    await writer.put("n", b"0")
    acked = 0
    done = False
    stale: list[tuple[int, int]] = []

    async def read(ns: Namespace) -> None:
        while not done:
            floor = acked
            item = await ns.get("n")
            assert item is not None
            if int(item.value) < floor:
                stale.append((int(item.value), floor))

    tasks = [asyncio.create_task(read(ns)) for ns in readers for _ in range(3)]
    for n in range(1, 301):
        await writer.put("n", str(n).encode())
        acked = n
    done = True
    await asyncio.gather(*tasks)
    labels = {"namespace": replicas.namespace, "tier": "shared"}
    return stale, metric("prism_cache_requests_total", **labels, result="hit")


async def test_a_cache_emptied_under_the_replicas_fills_again(replicas: Replicas, redis: RedisServer) -> None:
    a, b = await replicas.replica(), await replicas.replica()
    await a.put("k", b"v1")
    assert await value(b, "k") == b"v1"
    assert await value(b, "k") == b"v1"
    raw = redis_py.Redis.from_url(redis.url)
    try:
        raw.flushdb()  # a restart without persistence, or an operator's flush
    finally:
        raw.close()
    await a.put("k", b"v2")
    labels = {"namespace": replicas.namespace, "tier": "shared"}
    hits = metric("prism_cache_requests_total", **labels, result="hit")
    for _ in range(3):
        assert await value(b, "k") == b"v2"
    assert metric("prism_cache_requests_total", **labels, result="hit") > hits


# -- cache failure -------------------------------------------------------------------


async def test_a_cache_outage_serves_the_store_and_leaves_no_stale_entry(tmp_path: Path) -> None:
    with redis_server() as server:
        if server.external:
            pytest.skip("stopping the cache needs a local redis-server")
        group = Replicas(tmp_path / "d.db", server.url, "profiles", timeout=0.2, recovery_interval=0.2)
        try:
            a, b = await group.replica(), await group.replica()
            await a.put("k", b"v1")
            assert await value(a, "k") == b"v1"
            assert await value(b, "k") == b"v1"  # the entry is in Redis, and Redis saves it
            labels = {"namespace": "profiles", "tier": "shared"}
            errors = metric("prism_cache_requests_total", **labels, result="error")
            server.stop()
            started = time.monotonic()
            await b.put("k", b"v2")  # its invalidation cannot reach the cache
            assert await value(a, "k") == b"v2"
            assert await value(b, "k") == b"v2"
            assert time.monotonic() - started < 5
            assert metric("prism_cache_requests_total", **labels, result="error") > errors
            assert metric("prism_cache_invalidations_total", **labels, result="error") >= 1
            server.start()  # with the v1 entry it saved
            await asyncio.sleep(1.0)  # past recovery_interval: the failed replicas retire the entries
            fresh = await group.replica()  # never saw the outage
            for ns in (fresh, a, b):
                assert await value(ns, "k") == b"v2"
            # And the cache is used again.
            hits = metric("prism_cache_requests_total", **labels, result="hit")
            assert await value(fresh, "k") == b"v2"
            assert await value(fresh, "k") == b"v2"
            assert metric("prism_cache_requests_total", **labels, result="hit") > hits
        finally:
            await group.close()


async def test_a_cache_that_stops_answering_is_bounded_by_its_timeout(tmp_path: Path) -> None:
    with redis_server() as server:
        if server.external or server._process is None:
            pytest.skip("pausing the cache needs a local redis-server")
        group = Replicas(tmp_path / "d.db", server.url, "profiles", timeout=0.1, recovery_interval=0.2)
        pid = server._process.pid
        try:
            a = await group.replica()
            await a.put("k", b"v1")
            assert await value(a, "k") == b"v1"
            os.kill(pid, signal.SIGSTOP)
            try:
                started = time.monotonic()
                await a.put("k", b"v2")
                assert await value(a, "k") == b"v2"
                assert time.monotonic() - started < 2.0
            finally:
                os.kill(pid, signal.SIGCONT)
            await asyncio.sleep(0.8)
            other = await group.replica()
            assert await value(other, "k") == b"v2"
            assert await value(a, "k") == b"v2"
        finally:
            await group.close()


async def test_a_write_cancelled_after_the_store_applied_it_still_invalidates(replicas: Replicas) -> None:
    a, b = await replicas.replica(), await replicas.replica()
    await a.put("k", b"v1")
    assert await value(b, "k") == b"v1"
    assert await value(b, "k") == b"v1"  # cached
    reached = asyncio.Event()
    go = asyncio.Event()

    async def hold(step: str, record: str) -> None:
        if step == "invalidating":
            reached.set()
            await go.wait()

    shared = tier(a).shared
    assert shared is not None
    shared.on_step = hold
    write = asyncio.create_task(a.put("k", b"v2"))
    await reached.wait()  # the store has v2; the invalidation is about to be sent
    write.cancel()  # the caller goes away (a client disconnects, a request times out)
    with pytest.raises(asyncio.CancelledError):
        await write
    go.set()
    await asyncio.sleep(0.2)
    assert await value(b, "k") == b"v2"


# -- near cache --------------------------------------------------------------------


async def test_the_near_cache_serves_repeat_reads_and_sees_its_own_writes(replicas: Replicas) -> None:
    a = await replicas.replica(near=NearCache(max_items=2, ttl=30), shared=False)
    await a.put("k", b"v1")
    assert await value(a, "k") == b"v1"
    labels = {"namespace": replicas.namespace, "tier": "near"}
    hits = metric("prism_cache_requests_total", **labels, result="hit")
    assert await value(a, "k") == b"v1"
    assert metric("prism_cache_requests_total", **labels, result="hit") == hits + 1
    await a.put("k", b"v2")
    assert await value(a, "k") == b"v2"
    await a.delete("k")
    assert await a.get("k") is None


async def test_the_near_cache_keeps_at_most_max_items(replicas: Replicas) -> None:
    a = await replicas.replica(near=NearCache(max_items=2, ttl=30), shared=False)
    for key in ("a", "b", "c"):
        await a.put(key, key.encode())
        await a.get(key)
    near = tier(a).near
    assert near is not None and len(near) == 2


async def test_without_a_feed_the_near_cache_is_bounded_by_its_ttl(replicas: Replicas) -> None:
    a = await replicas.replica(near=NearCache(ttl=0.5), shared=False)
    b = await replicas.replica(shared=False, near=NearCache(ttl=0.5))
    await a.put("k", b"v1")
    assert await value(a, "k") == b"v1"
    await b.put("k", b"v2")
    assert tier(a).near_bound == "ttl"
    assert await value(a, "k") == b"v1"  # stale, as documented, until its ttl
    await asyncio.sleep(0.6)
    assert await value(a, "k") == b"v2"


async def test_with_a_feed_another_processes_write_evicts_the_near_entry(replicas: Replicas) -> None:
    a = await replicas.replica(near=NearCache(ttl=60, poll_interval=0.02), feed=True)
    b = await replicas.replica(feed=True)
    await a.put("k", b"v1")
    assert await value(a, "k") == b"v1"
    assert tier(a).near_bound == "feed"
    await b.put("k", b"v2")
    deadline = time.monotonic() + 5
    while await value(a, "k") != b"v2":
        assert time.monotonic() < deadline, "the change feed never evicted the entry"
        await asyncio.sleep(0.01)


def test_a_stalled_feed_follower_stops_the_near_cache_answering(tmp_path: Path) -> None:
    """The blocking API on SQLite runs no event loop between calls: the feed is not read then."""
    url = f"sqlite:///{tmp_path / 'd.db'}?feed=true"
    with prism.connect_sync(url) as mine, prism.connect_sync(url) as theirs:
        ns = mine.namespace("n", near_cache=NearCache(ttl=60, poll_interval=0.05))
        other = theirs.namespace("n")
        other.put("k", b"v1")
        assert ns.get("k") is not None
        item = ns.get("k")
        assert item is not None and item.value == b"v1"
        other.put("k", b"v2")
        time.sleep(0.2)  # past 3 poll intervals without a read of the feed
        item = ns.get("k")
        assert item is not None and item.value == b"v2"


async def test_a_cached_namespace_watches_like_any_other(replicas: Replicas) -> None:
    plain = await replicas.replica(near=NearCache())
    with pytest.raises(prism.Unsupported, match="start the store with feed=true"):
        plain.watch()
    a = await replicas.replica(near=NearCache(), feed=True)
    feed = a.watch()
    first = asyncio.create_task(feed.__anext__())
    await asyncio.sleep(0.3)  # the feed starts after the changes made before it
    await a.put("k", b"v1")
    change = await asyncio.wait_for(first, 5)
    assert (change.key, change.op) == ("k", "put")
    await feed.close()


# -- settings ----------------------------------------------------------------------


async def test_bad_settings_name_the_field(tmp_path: Path, redis: RedisServer) -> None:
    async with prism.connect(redis.url) as cache_store, prism.connect("memory://") as store:
        with pytest.raises(prism.InvalidArgument, match=r"cache\.ttl"):
            Cache(cache_store, ttl=0)
        with pytest.raises(prism.InvalidArgument, match=r"cache\.timeout"):
            Cache(cache_store, timeout=-1)
        with pytest.raises(prism.InvalidArgument, match=r"cache\.max_item_bytes"):
            Cache(cache_store, max_item_bytes=0)
        with pytest.raises(prism.InvalidArgument, match=r"near_cache\.max_items"):
            NearCache(max_items=0)
        with pytest.raises(prism.InvalidArgument, match=r"near_cache\.ttl"):
            NearCache(ttl=0)
        with pytest.raises(prism.InvalidArgument, match=r"cache\.store must be a prism Store"):
            Cache("redis://nowhere")  # type: ignore[arg-type]
        # Equal settings give the same handle (and so the same near cache and counters).
        assert store.namespace("n", cache=Cache(cache_store), near_cache=NearCache()) is store.namespace(
            "n", cache=Cache(cache_store), near_cache=NearCache()
        )
        with pytest.raises(prism.InvalidArgument, match="another store"):
            store.namespace("n", cache=Cache(store))
        with pytest.raises(prism.InvalidArgument, match=r"near_cache must be a prism\.NearCache"):
            store.namespace("n", near_cache=Cache(cache_store))  # type: ignore[arg-type]


def test_the_blocking_api_takes_a_near_cache(tmp_path: Path) -> None:
    with prism.connect_sync(f"sqlite:///{tmp_path / 'd.db'}") as store:
        ns = store.namespace("n", near_cache=NearCache(ttl=30))
        ns.put("k", b"v1")
        assert ns.get("k") is not None
        item = ns.get("k")
        assert item is not None and item.value == b"v1"
        ns.put("k", b"v2")
        item = ns.get("k")
        assert item is not None and item.value == b"v2"
        with pytest.raises(prism.Unsupported, match="near_cache only"):
            store.namespace("n", cache=Cache(store._store))


# -- the near cache around a new cursor: no value read before it is kept ---------------


async def _near_pair(name: str) -> tuple[prism.Store, prism.Store, Namespace, Namespace]:
    reader = await prism.connect(f"memory://{name}?feed=true")
    writer = await prism.connect(f"memory://{name}?feed=true")
    return (
        reader,
        writer,
        reader.namespace("ns", near_cache=NearCache(ttl=30.0, poll_interval=0.05)),
        writer.namespace("ns"),
    )


async def test_a_fill_read_while_the_near_cache_takes_its_first_cursor_is_refused() -> None:
    name = f"near-start-{uuid.uuid4().hex[:8]}"
    reader, writer, r, w = await _near_pair(name)
    try:
        await w.put("k", b"v1")
        inner = reader._tiers[0].inner
        read_changes, get = inner.read_changes, inner.get
        cursor_gate, get_gate = asyncio.Event(), asyncio.Event()
        reads = 0

        async def slow_cursor(ns: str, prefix: str, after: str | None, limit: int) -> Any:
            if after is None and not cursor_gate.is_set():
                await cursor_gate.wait()  # the first read of the feed is slow
            return await read_changes(ns, prefix, after, limit)

        async def slow_get(ns: str, record: str, key: str, **kw: Any) -> Any:
            nonlocal reads
            item = await get(ns, record, key, **kw)
            reads += 1
            if reads == 1:
                await get_gate.wait()  # this store read's answer is still in flight
            return item

        inner.read_changes, inner.get = slow_cursor, slow_get  # type: ignore[method-assign]
        first = asyncio.create_task(r.get("k"))
        await asyncio.sleep(0.01)
        second = asyncio.create_task(r.get("k"))
        await asyncio.sleep(0.05)
        await w.put("k", b"v2")  # committed before the follower's cursor: the feed never shows it
        cursor_gate.set()
        await asyncio.sleep(0.05)
        get_gate.set()
        await asyncio.gather(first, second)
        await asyncio.sleep(0.3)
        got = await r.get("k")
        assert got is not None and got.value == b"v2"
    finally:
        await reader.close()
        await writer.close()


async def test_after_an_expired_cursor_nothing_read_before_the_new_cursor_is_kept() -> None:
    name = f"near-expired-{uuid.uuid4().hex[:8]}"
    reader, writer, r, w = await _near_pair(name)
    try:
        await w.put("k", b"v1")
        inner = reader._tiers[0].inner
        read_changes = inner.read_changes
        gate, in_gap = asyncio.Event(), asyncio.Event()
        state = {"expire": False, "armed": False}

        async def expiring(ns: str, prefix: str, after: str | None, limit: int) -> Any:
            if after is not None and state["expire"]:
                state["expire"] = False
                raise prism.CursorExpired("the feed's retention passed")
            if after is None and state["armed"] and not in_gap.is_set():
                in_gap.set()
                await gate.wait()  # the new cursor is slow to come
            return await read_changes(ns, prefix, after, limit)

        inner.read_changes = expiring  # type: ignore[method-assign]
        assert (await r.get("k")) is not None  # starts following the feed
        await asyncio.sleep(0.2)
        state["expire"] = state["armed"] = True
        await in_gap.wait()
        in_gap_read = await r.get("k")
        assert in_gap_read is not None and in_gap_read.value == b"v1"
        await w.put("k", b"v2")  # committed before the new cursor
        gate.set()
        await asyncio.sleep(0.5)
        got = await r.get("k")
        assert got is not None and got.value == b"v2"
    finally:
        await reader.close()
        await writer.close()
