"""The Redis backend against a real ``redis-server`` started for this module.

The conformance suite runs unchanged; the tests below cover what is Redis's own:
outage and recovery, a pool under 256 concurrent tasks, cancelled calls that must not
leave a connection out of step with its replies, the key layout, native expiry, and
URL options.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis

import prism
from prism.backends.redis import PLAIN_VALUE_BYTES, RedisBackend
from prism.errors import BackendUnavailable, DecodeError, InvalidArgument, PreconditionFailed, PrismError
from prism.kv.namespace import Namespace
from prism.kv.store import Store
from prism.model import Put, StoredWrite
from prism.testing.conformance import ConformanceSuite
from prism.testing.servers.redis import RedisServer, redis_server

#: Short timeouts so that the outage tests fail fast.
FAST: dict[str, Any] = {"connect_timeout": 0.5, "operation_timeout": 1.0, "max_retries": 3, "retry_cap": 0.1}


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    with redis_server() as s:
        yield s


@pytest.fixture
def local_server(server: RedisServer) -> RedisServer:
    if server.external:
        pytest.skip("stopping the server needs a local redis-server, not PRISM_TEST_REDIS_URL")
    return server


@pytest.fixture
async def raw(server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(server.url)
    yield client
    await client.aclose()


def _name() -> str:
    return f"redis-{uuid.uuid4().hex[:12]}"


class TestConformance(ConformanceSuite):
    @pytest.fixture
    def store_url(self, server: RedisServer) -> str:
        return server.url


# -- outage and recovery ----------------------------------------------------------


async def test_outage_fails_fast_and_the_same_store_recovers(local_server: RedisServer) -> None:
    async with prism.connect(local_server.url, **FAST) as store:
        ns = store.namespace(_name())
        await ns.put("before", b"1")
        local_server.stop()
        try:
            for call in (
                lambda: ns.get("before"),
                lambda: ns.put("during", b"2"),
                lambda: ns.get_many(["before", "x"]),
                lambda: ns.scan(),
                lambda: ns.transact([Put("t", b"1")]),
            ):
                started = time.monotonic()
                with pytest.raises(BackendUnavailable) as info:
                    await call()
                elapsed = time.monotonic() - started
                assert elapsed < FAST["operation_timeout"] + 0.5, f"took {elapsed:.2f} s"
                assert info.value.retryable and info.value.__cause__ is not None
            health = await store.health()
            assert health["status"] == "DOWN" and "redis" in health["details"]["error"]
        finally:
            local_server.start()
        item = await ns.get("before")
        assert item is not None and item.value == b"1", "the data saved at shutdown came back"
        await ns.put("after", b"3")
        assert [i.value if i else None for i in await ns.get_many(["before", "after"])] == [b"1", b"3"]
        assert (await store.health())["status"] == "UP"


async def test_busy_tasks_ride_out_a_restart(local_server: RedisServer) -> None:
    """Tasks in full flight when the server goes away see only BackendUnavailable, then carry on."""
    async with prism.connect(local_server.url, **FAST) as store:
        ns = store.namespace(_name())
        done = asyncio.Event()
        outcomes = {"ok": 0, "unavailable": 0}

        async def worker(i: int) -> None:
            while not done.is_set():
                try:
                    await ns.put(f"w{i}", str(i).encode())
                    item = await ns.get(f"w{i}")
                    assert item is not None and item.value == str(i).encode()
                    outcomes["ok"] += 1
                except BackendUnavailable:
                    outcomes["unavailable"] += 1
                await asyncio.sleep(0.005)

        tasks = [asyncio.create_task(worker(i)) for i in range(20)]
        await asyncio.sleep(0.2)
        await asyncio.to_thread(local_server.stop)
        await asyncio.sleep(0.5)
        during = dict(outcomes)
        await asyncio.to_thread(local_server.start)
        await asyncio.sleep(0.5)
        done.set()
        async with asyncio.timeout(FAST["operation_timeout"] * 3):
            await asyncio.gather(*tasks)
        assert during["unavailable"] > 0
        assert outcomes["ok"] > during["ok"], "the tasks recovered after the restart"


async def test_unreachable_server_fails_within_the_connect_timeout() -> None:
    from prism.testing.servers import free_port

    store = prism.connect(f"redis://127.0.0.1:{free_port()}/0", **FAST)
    started = time.monotonic()
    with pytest.raises(BackendUnavailable, match="redis"):
        await store.open()
    assert time.monotonic() - started < FAST["operation_timeout"] + 0.5
    await store.close()


async def test_a_wrong_password_is_not_retried_and_not_shown(server: RedisServer) -> None:
    if server.external:
        pytest.skip("the password check needs to know the server has no password")
    url = server.url.replace("redis://", "redis://someone:s3cr3t-pw@")
    store = prism.connect(url, **FAST)
    with pytest.raises(BackendUnavailable) as info:
        await store.open()
    assert "s3cr3t-pw" not in str(info.value) and "s3cr3t-pw" not in repr(store.backend)
    await store.close()


# -- concurrency and cancellation -------------------------------------------------


async def test_256_concurrent_tasks_share_one_pool(server: RedisServer) -> None:
    async with prism.connect(server.url, max_connections=32) as store:
        ns = store.namespace(_name())

        async def worker(i: int) -> bytes | None:
            await ns.put(f"k{i}", str(i).encode())
            await ns.put_many([Put(f"m{i}-{j}", b"v") for j in range(5)])
            item = await ns.get(f"k{i}")
            return None if item is None else item.value

        got = await asyncio.gather(*(worker(i) for i in range(256)))
        assert got == [str(i).encode() for i in range(256)]
        assert (await store.health())["details"]["max_connections"] == 32


async def test_cancelled_calls_leave_no_connection_out_of_step(server: RedisServer) -> None:
    """Cancel hundreds of calls at random points, then check every answer is the right one.

    A connection returned to the pool with an unread reply would hand that reply to
    the next caller (the redis-py bug of CVE-2023-28858), and a connection stranded by
    a cancelled hand-back would drain the pool: both show up as wrong values or errors.
    A non-zero database also catches a connection that skipped its SELECT.
    """
    async with prism.connect(server.url_for(3), max_connections=8, pool_timeout=2) as store:
        ns = store.namespace(_name())
        await ns.put_many([Put(f"k{i}", f"value-{i}".encode()) for i in range(64)])

        async def read(i: int) -> None:
            item = await ns.get(f"k{i % 64}")
            assert item is not None and item.value == f"value-{i % 64}".encode()

        async def write(i: int) -> None:
            await ns.put(f"w{i}", f"w-{i}".encode())

        for round_ in range(8):
            delay = 0.0002 * (round_ + 1)
            tasks = [asyncio.create_task((read if i % 2 else write)(i)) for i in range(200)]
            await asyncio.sleep(delay)
            for task in tasks:
                task.cancel()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            assert all(r is None or isinstance(r, asyncio.CancelledError) for r in results), [
                r for r in results if not (r is None or isinstance(r, asyncio.CancelledError))
            ]

        async def checked(i: int) -> None:
            async with asyncio.timeout(5):
                await read(i)
                await ns.put(f"after{i}", f"a-{i}".encode())
                item = await ns.get(f"after{i}")
                assert item is not None and item.value == f"a-{i}".encode()

        await asyncio.gather(*(checked(i) for i in range(300)))
        assert (await ns.scan(prefix="after", limit=1000)).keys == sorted(f"after{i}" for i in range(300))

    check = aioredis.Redis.from_url(server.url_for(0))
    try:
        assert await check.keys(f"*{ns.name}*") == [], "a write went to the wrong database"
    finally:
        await check.aclose()


async def test_timed_out_calls_do_not_poison_later_ones(server: RedisServer) -> None:
    async with prism.connect(server.url, max_connections=4) as store:
        ns = store.namespace(_name())
        await ns.put_many([Put(f"k{i}", str(i).encode() * 1000) for i in range(20)])
        timeouts = 0
        for i in range(400):
            try:
                async with asyncio.timeout(0.00005 * (i % 20)):
                    await ns.get(f"k{i % 20}")
            except TimeoutError:
                timeouts += 1
        assert timeouts > 0
        for i in range(20):
            item = await ns.get(f"k{i}")
            assert item is not None and item.value == str(i).encode() * 1000


# -- layout and expiry ------------------------------------------------------------


async def test_a_namespace_lives_under_one_hash_tag(store: Store, raw: aioredis.Redis) -> None:
    unique = _name()
    ns = store.namespace(f"odd}}{unique}{{%")
    base = f"prism:{{odd%7D{unique}{{%25}}:"
    await ns.put("flat", b"1")
    await ns.put_items("rec", [Put("a", b"1"), Put("b", b"2", ttl=60)])
    keys = sorted(k.decode() if isinstance(k, bytes) else k for k in await raw.keys(base + "*"))
    assert keys == [base + k for k in ("e:flat", "exp", "h:rec", "ids", "x:rec", "z:rec")]
    assert await raw.zrange(base + "ids", 0, -1) == [b"flat", b"rec"]
    assert await raw.zrange(base + "exp", 0, -1) == [b"rec"]
    await ns.delete_items("rec")
    await ns.delete("flat")
    assert await raw.exists(*(base + k for k in ("e:flat", "exp", "h:rec", "ids", "x:rec", "z:rec"))) == 0


async def test_records_whose_items_all_expire_get_native_expiry(store: Store, raw: aioredis.Redis) -> None:
    ns = store.namespace(_name())
    base = f"prism:{{{ns.name}}}:"
    await ns.put_items("r", [Put("a", b"1", ttl=30), Put("b", b"2", ttl=60)])
    ttl_ms = await raw.pttl(base + "h:r")
    assert 59_000 < ttl_ms <= 61_000 + 1000, "latest expiry plus the grace"
    await ns.put_items("r", [Put("c", b"3")])
    assert await raw.pttl(base + "h:r") == -1, "an item without ttl keeps the record"
    await ns.delete_items("r", keys=["c"])
    assert await raw.pttl(base + "h:r") > 59_000


async def test_expired_items_are_purged_by_writes_and_scans(
    store: Store, ns: Namespace, raw: aioredis.Redis
) -> None:
    base = f"prism:{{{ns.name}}}:"
    await ns.put_items("r", [Put(f"e{i}", b"x", ttl=0.05) for i in range(10)] + [Put("keep", b"k")])
    await ns.put("gone", b"x", ttl=0.05)
    await asyncio.sleep(0.1)
    await ns.put_items("r", [Put("new", b"n", ttl=60)])
    fields = await raw.hkeys(base + "h:r")
    assert sorted(fields) == [b"mkeep", b"mnew", b"vkeep", b"vnew"]
    assert await raw.zrange(base + "z:r", 0, -1) == [b"keep", b"new"]
    assert await raw.zrange(base + "x:r", 0, -1) == [b"new"]
    assert (await ns.scan()).keys == ["r"]
    assert not await raw.exists(base + "e:gone")
    assert await raw.zrange(base + "ids", 0, -1) == [b"r"]


async def test_writes_sweep_the_ids_of_records_that_expired_untouched(
    store: Store, ns: Namespace, raw: aioredis.Redis
) -> None:
    base = f"prism:{{{ns.name}}}:"
    await ns.put_many([Put(f"session{i}", b"x", ttl=0.05) for i in range(40)])
    await ns.put_items("rec", [Put("a", b"1", ttl=0.05), Put("b", b"2")])
    await ns.delete_items("rec", keys=["b"])
    assert await raw.zcard(base + "ids") == 41
    await asyncio.sleep(0.1)
    await ns.put("plain", b"v")
    assert await raw.zcard(base + "ids") == 42, "plain puts leave the sweep to writes with a ttl"
    for i in range(3):
        await ns.put(f"live{i}", b"v", ttl=60)
    assert await raw.zrange(base + "ids", 0, -1) == [b"live0", b"live1", b"live2", b"plain"]
    assert await raw.zrange(base + "exp", 0, -1) == [b"live0", b"live1", b"live2"]
    assert not await raw.exists(base + "h:rec", base + "e:session0")


@pytest.mark.parametrize("size", [100, PLAIN_VALUE_BYTES + 1], ids=["small", "large"])
async def test_plain_puts_report_what_they_replaced_and_list_new_records(
    ns: Namespace, raw: aioredis.Redis, size: int
) -> None:
    base = f"prism:{{{ns.name}}}:"
    value = b"v" * size
    await ns.put("old", b"x")
    await ns.put("dying", b"x", ttl=0.05)
    await asyncio.sleep(0.1)  # expired, but Redis keeps the key for expiry_grace
    assert await raw.exists(base + "e:dying")
    results = await ns.put_many([Put(k, value) for k in ("old", "dying", "new", "new", "old")])
    assert [r.existed for r in results] == [True, False, False, True, True]
    assert [r.ok for r in results] == [True] * 5
    assert [(await ns.get(k)) is not None for k in ("old", "dying", "new")] == [True] * 3
    assert await raw.pttl(base + "e:dying") == -1, "a put without ttl clears the native expiry"
    assert (await ns.scan()).keys == ["dying", "new", "old"]
    first = await ns.put_result(Put("single", value))
    second = await ns.put_result(Put("single", value))
    await ns.put("dying-single", b"x", ttl=0.05)
    await asyncio.sleep(0.1)
    third = await ns.put_result(Put("dying-single", value))
    assert (first.existed, second.existed, third.existed) == (False, True, False)
    assert (await ns.scan(prefix="single")).keys == ["single"]
    assert (await ns.get("dying-single")) is not None


async def test_scan_skips_many_expired_records_across_script_calls(store: Store, ns: Namespace) -> None:
    for chunk in range(3):
        await ns.put_many([Put(f"dead{chunk}-{i:04}", b"x", ttl=0.05) for i in range(800)])
    await ns.put_many([Put("live-a", b"1"), Put("live-b", b"2")])
    await asyncio.sleep(0.1)
    assert (await ns.scan(limit=10)).keys == ["live-a", "live-b"]


async def test_get_items_skips_many_expired_items(ns: Namespace) -> None:
    await ns.put_items("r", [Put(f"a{i:04}", b"x", ttl=0.05) for i in range(1000)])
    await ns.put_items("r", [Put(f"a{i:04}", b"x", ttl=0.05) for i in range(1000, 1500)])
    await ns.put_items("r", [Put("b", b"1"), Put("c", b"2")])
    await asyncio.sleep(0.1)
    page = await ns.get_items("r", limit=5)
    assert [i.key for i in page] == ["b", "c"] and page.next_page_token is None


async def test_delete_items_of_a_large_record_in_batches(raw: aioredis.Redis, ns: Namespace) -> None:
    for chunk in range(3):
        await ns.put_items("big", [Put(f"k{chunk}-{i:04}", b"v") for i in range(500)])
    await ns.put_items("big", [Put("k9-expired", b"v", ttl=0.05)])
    await asyncio.sleep(0.1)
    assert await ns.delete_items("big") == 1500
    assert (await ns.get_items("big")).items == []
    assert await raw.keys(f"prism:{{{ns.name}}}:*") == []


async def test_transact_across_records_is_all_or_nothing(ns: Namespace) -> None:
    etag = await ns.put("a", b"1")
    await ns.put_items("r", [Put("x", b"1")])
    with pytest.raises(PreconditionFailed) as info:
        await ns.transact([Put("a", b"2", if_match=etag), Put("new", b"n"), Put("a", b"3", if_match=etag)])
    assert info.value.key == "a"
    assert (await ns.get("a")).value == b"1"  # type: ignore[union-attr]
    assert await ns.get("new") is None
    results = await ns.transact([Put("a", b"2", if_match=etag), Put("b", b"n", if_absent=True)])
    assert [r.existed for r in results] == [True, False]
    assert [i.value if i else None for i in await ns.get_many(["a", "b"])] == [b"2", b"n"]


async def test_scripts_reload_after_script_flush(store: Store, raw: aioredis.Redis) -> None:
    ns = store.namespace(_name())
    await ns.put("k", b"1")
    await raw.script_flush()
    await ns.put("k", b"2")
    assert (await ns.get_many(["k"]))[0].value == b"2"  # type: ignore[union-attr]


async def test_key_prefix_keeps_stores_apart(server: RedisServer) -> None:
    name = _name()
    async with (
        prism.connect(server.url, key_prefix="one") as one,
        prism.connect(server.url + "?key_prefix=two") as two,
    ):
        await one.namespace(name).put("k", b"1")
        assert await two.namespace(name).get("k") is None


async def test_backend_reads_mixed_addresses_and_long_etags(store: Store) -> None:
    """Addresses the namespace API never mixes, and etags longer than a flat entry's read window."""
    backend = store.backend
    name = _name()
    now = time.time()
    long_etag = "e" * 300
    writes = [
        StoredWrite("a", "", b"flat-a", long_etag, None, "text/plain", now),
        StoredWrite("a", "k", b"item-a", "etag-ak", now + 60, None, now),
        StoredWrite("b", "k", b"item-b", "etag-bk", None, None, now),
    ]
    assert [o.ok for o in await backend.write(name, writes)] == [True, True, True]
    got = await backend.get_many(name, [("a", ""), ("b", "k"), ("a", "k"), ("c", ""), ("b", "")])
    assert [i.value if i else None for i in got] == [b"flat-a", b"item-b", b"item-a", None, None]
    first = got[0]
    assert first is not None and first.etag == long_etag and first.content_type == "text/plain"
    stale = StoredWrite("a", "", b"x", "new", if_match="other")
    fresh = StoredWrite("a", "", b"y", "newer", if_match=long_etag)
    outcomes = await backend.write(name, [stale, fresh])
    assert [(o.ok, o.existed) for o in outcomes] == [(False, True), (True, True)]
    # A failed condition is data: the KeyValue layer turns it into PreconditionFailed.
    assert outcomes[0].condition_failed and outcomes[0].error is None


async def test_foreign_data_under_the_prefix_is_a_prism_error(ns: Namespace, raw: aioredis.Redis) -> None:
    base = f"prism:{{{ns.name}}}:"
    await raw.set(base + "e:garbage", b"not prism data")
    with pytest.raises(DecodeError) as decode:
        await ns.get("garbage")
    assert decode.value.key == "garbage"
    await raw.lpush(base + "e:list", b"x")
    with pytest.raises(PrismError) as wrong:
        await ns.put("list", b"v")
    assert "WRONGTYPE" in str(wrong.value) and not isinstance(wrong.value, BackendUnavailable)


def test_blocking_api_on_redis(server: RedisServer) -> None:
    with prism.connect_sync(server.url) as store:
        ns = store.namespace(_name())
        etag = ns.put("k", b"v")
        item = ns.get("k")
        assert item is not None and item.value == b"v" and item.etag == etag


# -- options ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "options", "message"),
    [
        ("redis://127.0.0.1:6390/0", {"bogus": 1}, "bogus"),
        ("redis://127.0.0.1:6390/0?nope=1&max_connections=4", {}, "nope"),
        ("redis://127.0.0.1:6390/abc", {}, "database number"),
        ("redis://127.0.0.1:notaport/0", {}, "port"),
        ("redis://127.0.0.1:6390/0", {"max_connections": 0}, "max_connections"),
        ("redis://127.0.0.1:6390/0", {"operation_timeout": "soon"}, "operation_timeout"),
        ("redis://127.0.0.1:6390/0", {"key_prefix": "a{b}"}, "key_prefix"),
        ("redis://127.0.0.1:6390/0", {"ssl_ca_certs": "/ca.pem"}, "rediss://"),
        ("rediss://127.0.0.1:6390/0", {"ssl_cert_reqs": "maybe"}, "ssl_cert_reqs"),
        ("redis://u:hunter2@127.0.0.1:6390/x", {}, "u:\\*\\*\\*@"),
    ],
)
def test_bad_options_are_refused_by_name(url: str, options: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message) as info:
        prism.connect(url, **options)
    assert "hunter2" not in str(info.value)


def test_options_from_url_and_keywords() -> None:
    backend = RedisBackend.from_url(
        "rediss://127.0.0.1:6390/2?max_connections=7&operation_timeout=1.5&ssl_cert_reqs=none",
        key_prefix="app",
        expiry_grace=0,
    )
    s = backend.settings
    assert (s.db, s.max_connections, s.network.operation_timeout, s.key_prefix) == (2, 7, 1.5, "app")
    assert s.expiry_grace == 0 and dict(s.ssl) == {"ssl_cert_reqs": "none"}


@pytest.fixture
async def store(server: RedisServer) -> AsyncIterator[Store]:
    async with prism.connect(server.url) as s:
        yield s


@pytest.fixture
def ns(store: Store) -> Namespace:
    return store.namespace(_name())
