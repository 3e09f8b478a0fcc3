"""The NATS JetStream KV backend against a real ``nats-server -js`` started for this module.

The conformance suite runs unchanged on a server with NATS's default 1 MiB
max_payload, so its 1 MiB and 4 MiB values are stored in chunks; the tests below cover
what is NATS's own: outage and recovery, 256 concurrent tasks on one connection, hot
keys, compare-and-set between two stores with stale revision caches, the bucket and key
layout, chunked values (whole values only, chunks cleaned up, writes that stopped
half-way), TTL kept by Prism on a server without per-key TTL, buckets removed behind
the store's back, and the URL options.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import random
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import msgspec
import nats
import pytest
from nats.aio.client import Client
from nats.js import api

import prism
from prism.errors import BackendUnavailable, DecodeError, InvalidArgument, PreconditionFailed
from prism.kv.namespace import Namespace
from prism.model import Delete, Put
from prism.testing.conformance import ConformanceSuite
from prism.testing.servers import free_port
from prism.testing.servers.nats import NatsServer, nats_server

MiB = 1024 * 1024
#: A second local server accepts messages this large (NATS's own default is 1 MiB).
LARGE_MAX_PAYLOAD = 8 * MiB
#: Seconds the tests wait for purges the store sends without waiting for their answers.
PURGE_WAIT = 5.0
#: Short timeouts so that the outage tests fail fast.
FAST: dict[str, Any] = {
    "connect_timeout": 0.5,
    "operation_timeout": 1.0,
    "max_retries": 3,
    "retry_cap": 0.1,
    "reconnect_wait": 0.2,
}


@pytest.fixture(scope="module")
def server() -> Iterator[NatsServer]:
    with nats_server() as s:
        yield s


@pytest.fixture
def local_server(server: NatsServer) -> NatsServer:
    if server.external:
        pytest.skip("stopping the server needs a local nats-server, not PRISM_TEST_NATS_URL")
    return server


@pytest.fixture
def options(server: NatsServer) -> dict[str, Any]:
    """Store options matching the server (its larger max_payload, when this run started it)."""
    return {} if server.max_payload is None else {"max_payload": server.max_payload}


@pytest.fixture
async def store(server: NatsServer, options: dict[str, Any]) -> AsyncIterator[prism.Store]:
    async with prism.connect(server.url, **options) as s:
        yield s


@pytest.fixture
async def raw(server: NatsServer) -> AsyncIterator[Client]:
    client = await nats.connect(server.url)
    yield client
    await client.close()


def _name() -> str:
    return f"nats-{uuid.uuid4().hex[:12]}"


def _b32(text: str) -> str:
    return base64.b32hexencode(text.encode()).decode().rstrip("=")


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


class TestConformance(ConformanceSuite):
    @pytest.fixture
    def store_url(self, server: NatsServer) -> str:
        return server.url

    @pytest.fixture
    def store_options(self, options: dict[str, Any]) -> dict[str, Any]:
        return options


# -- outage and recovery ----------------------------------------------------------


async def test_outage_fails_fast_and_the_same_store_recovers(local_server: NatsServer) -> None:
    async with prism.connect(local_server.url, **FAST) as store:
        ns = store.namespace(_name())
        await ns.put("before", b"1")
        await ns.put_items("rec", [Put("a", b"x")])
        local_server.stop()
        try:
            for call in (
                lambda: ns.get("before"),
                lambda: ns.put("during", b"2"),
                lambda: ns.put_many([Put("m1", b"1"), Put("m2", b"2")]),
                lambda: ns.get_many(["before", "x"]),
                lambda: ns.delete("before"),
                lambda: ns.scan(),
                lambda: ns.get_items("rec"),
                lambda: ns.delete_items("rec"),
            ):
                started = time.monotonic()
                with pytest.raises(BackendUnavailable) as info:
                    await call()
                elapsed = time.monotonic() - started
                assert elapsed < FAST["operation_timeout"] + 0.5, f"took {elapsed:.2f} s"
                assert info.value.retryable and info.value.__cause__ is not None
            health = await store.health()
            assert health["status"] == "DOWN" and "nats" in health["details"]["error"]
        finally:
            local_server.start()
        deadline = time.monotonic() + 15
        while True:
            try:
                item = await ns.get("before")
                break
            except BackendUnavailable:
                assert time.monotonic() < deadline, "the store did not reconnect"
                await asyncio.sleep(0.1)
        assert item is not None and item.value == b"1", "JetStream kept the data across the restart"
        await ns.put("after", b"3")
        assert [i.value if i else None for i in await ns.get_many(["before", "after", "during"])] == [
            b"1",
            b"3",
            None,
        ]
        assert [i.key for i in await ns.get_items("rec")] == ["a"]
        health = await store.health()
        assert health["status"] == "UP" and health["details"]["server_version"].startswith("2.")


async def test_unreachable_server_fails_within_the_connect_timeout() -> None:
    store = prism.connect(f"nats://127.0.0.1:{free_port()}", **FAST)
    started = time.monotonic()
    with pytest.raises(BackendUnavailable, match="cannot connect"):
        await store.open()
    assert time.monotonic() - started < FAST["connect_timeout"] + 0.5
    await store.close()


async def test_credentials_are_never_shown() -> None:
    url = f"nats://someone:s3cr3t-pw@127.0.0.1:{free_port()}"
    store = prism.connect(url, **FAST)
    with pytest.raises(BackendUnavailable) as info:
        await store.open()
    assert "s3cr3t-pw" not in str(info.value) and "s3cr3t-pw" not in repr(store.backend)
    assert "someone:***@" in str(info.value)
    token_store = prism.connect(f"nats://t0ken-value@127.0.0.1:{free_port()}?connect_timeout=0.3")
    with pytest.raises(BackendUnavailable) as info:
        await token_store.open()
    assert "t0ken-value" not in str(info.value) and "***@" in str(info.value)


# -- concurrency --------------------------------------------------------------------


async def test_256_concurrent_tasks_share_one_connection(store: prism.Store) -> None:
    ns = store.namespace(_name())

    async def worker(i: int) -> tuple[bytes | None, int, list[str]]:
        await ns.put(f"k{i}", str(i).encode())
        results = await ns.put_many([Put(f"m{i}-{j}", b"v") for j in range(5)])
        await ns.put_items(f"r{i}", [Put("a", b"1"), Put("b", b"2")])
        item = await ns.get(f"k{i}")
        many = await ns.get_many([f"m{i}-{j}" for j in range(5)])
        items = await ns.get_items(f"r{i}")
        assert all(r.ok for r in results) and all(m is not None for m in many)
        return (None if item is None else item.value), len(items), [x.key for x in items]

    got = await asyncio.gather(*(worker(i) for i in range(256)))
    assert got == [(str(i).encode(), 2, ["a", "b"]) for i in range(256)]
    page = await ns.scan("k", limit=1000)
    assert len(page.keys) == 256


async def test_a_hot_key_written_by_many_tasks_of_one_store(store: prism.Store) -> None:
    """Writes of one store to one key take turns instead of racing their compare-and-set."""
    ns = store.namespace(_name())
    results = await asyncio.gather(*(ns.put_result(Put("hot", str(i).encode())) for i in range(200)))
    assert all(r.ok for r in results)
    assert sorted(r.existed is True for r in results) == [False] + [True] * 199
    item = await ns.get("hot")
    assert item is not None and item.value == b"199", "the last call is the last write"
    batches = await asyncio.gather(*(ns.put_many([Put("hot", b"b"), Put(f"k{i}", b"v")]) for i in range(64)))
    assert all(r.ok for batch in batches for r in batch)


async def test_two_stores_never_lose_a_conditional_increment(server: NatsServer) -> None:
    """Two stores (two processes, as far as the server knows) with their own revision caches."""
    name = _name()
    async with prism.connect(server.url) as first, prism.connect(server.url) as second:
        namespaces = [first.namespace(name), second.namespace(name)]
        await namespaces[0].put("counter", b"0")

        async def increment(ns: Namespace, times: int) -> None:
            for _ in range(times):
                while True:
                    item = await ns.get("counter")
                    assert item is not None
                    try:
                        await ns.put("counter", str(int(item.value) + 1).encode(), if_match=item.etag)
                        break
                    except PreconditionFailed:
                        continue

        await asyncio.gather(*(increment(namespaces[i % 2], 10) for i in range(8)))
        for ns in namespaces:
            item = await ns.get("counter", consistency="strong")
            assert item is not None and item.value == b"80"


async def test_a_stale_revision_cache_is_only_a_hint(server: NatsServer) -> None:
    name = _name()
    async with prism.connect(server.url) as first, prism.connect(server.url) as second:
        a, b = first.namespace(name), second.namespace(name)
        old = await a.put("k", b"from a")
        await b.put("k", b"from b")
        with pytest.raises(PreconditionFailed):
            await a.put("k", b"x", if_match=old)
        result = await a.put_result(Put("k", b"again from a"))
        assert result.ok and result.existed
        assert await b.delete("k")
        assert not await a.delete("k"), "a's cache still held a live item; the server said otherwise"
        assert await a.get("k") is None

        assert await a.get("fresh") is None  # a now remembers "fresh" as absent
        await b.put("fresh", b"made by b")
        assert await a.delete("fresh"), "a delete may not trust a remembered absence"
        await b.put("once", b"by b")
        with pytest.raises(PreconditionFailed):
            await a.put("once", b"by a", if_absent=True)


async def test_cancelled_calls_leave_the_connection_usable(store: prism.Store) -> None:
    ns = store.namespace(_name())
    await ns.put_many([Put(f"k{i}", f"value-{i}".encode()) for i in range(50)])
    for round_ in range(5):
        tasks: list[asyncio.Task[Any]] = [asyncio.create_task(ns.get(f"k{i % 50}")) for i in range(100)]
        tasks += [asyncio.create_task(ns.put(f"w{i}", b"w")) for i in range(50)]
        await asyncio.sleep(0.0005 * round_)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    got = await asyncio.gather(*(ns.get(f"k{i}") for i in range(50)))
    assert [g.value if g else None for g in got] == [f"value-{i}".encode() for i in range(50)]
    assert all(r.ok for r in await ns.put_many([Put(f"w{i}", b"final") for i in range(50)]))


# -- layout ---------------------------------------------------------------------------


async def test_buckets_and_keys_follow_the_documented_layout(store: prism.Store, raw: Client) -> None:
    js = raw.jetstream()
    name = _name()
    ns = store.namespace(name)
    await ns.put("user:1", b"flat")
    await ns.put_items("order-12345678", [Put("line/1", b"item")])
    info = await js.stream_info(f"KV_prism_{name}")
    assert info.config.max_msgs_per_subject == 1 and info.config.allow_direct
    kv = await js.key_value(f"prism_{name}")
    flat = await kv.get(f"{_b64(b'user:1')}.=")
    assert flat.value is not None and flat.value.endswith(b"flat")
    record = b"order-12345678"
    tokens = ".".join(_b64(record[i : i + 6]) for i in range(0, len(record), 6))
    item = await kv.get(f"{tokens}.{_b64(b'line/1')}")
    assert item.value is not None and item.value.endswith(b"item")

    odd = store.namespace("a.b c/ü")
    await odd.put("k", b"v")
    await js.stream_info(f"KV_prism-x{_b32('a.b c/ü')}")
    long_name = "n" * 300
    await store.namespace(long_name).put("k", b"v")
    await js.stream_info(f"KV_prism-h{hashlib.sha256(long_name.encode()).hexdigest()}")


async def test_namespaces_with_similar_names_do_not_collide(store: prism.Store) -> None:
    base = _name()
    names = [f"{base}.x", f"{base}_x", f"{base}-x", f"{base} x", f"{base}/x", f"{base}X", f"{base}x"]
    for i, name in enumerate(names):
        await store.namespace(name).put("k", str(i).encode())
    for i, name in enumerate(names):
        item = await store.namespace(name).get("k")
        assert item is not None and item.value == str(i).encode(), name
        assert (await store.namespace(name).scan()).keys == ["k"]


async def test_longest_record_ids_and_item_keys(store: prism.Store) -> None:
    ns = store.namespace(_name())
    record, key = "😀" * 256, "é" * 512  # 1024 UTF-8 bytes each: the longest subject Prism writes
    await ns.put_items(record, [Put(key, b"v"), Put("", b"flat")])
    assert [i.key for i in await ns.get_items(record)] == ["", key]
    assert (await ns.get(record)) is not None
    assert (await ns.scan("😀" * 100)).keys == [record]
    assert await ns.delete_items(record) == 2
    assert (await ns.scan()).keys == []


async def test_prefix_scans_across_chunk_boundaries(store: prism.Store) -> None:
    """Prefixes are matched a 5-byte chunk at a time by the server, the rest by Prism."""
    ns = store.namespace(_name())
    records = [
        "abcd",
        "abcde",
        "abcdef",
        "abcdf",
        "abcdefghij",
        "abcdefghijk",
        "abcé",
        "abcéx",
        "ab😀cd",
        "b",
    ]
    await ns.put_many([Put(r, b"v") for r in records])
    prefixes = {r[:n] for r in records for n in range(len(r) + 1)}
    for prefix in sorted(prefixes):
        got = (await ns.scan(prefix, limit=1000)).keys
        assert got == sorted(r for r in records if r.startswith(prefix)), prefix


async def test_listings_page_through_thousands_of_keys_and_leave_no_consumers(
    store: prism.Store, raw: Client
) -> None:
    ns = store.namespace(_name())
    keys = [f"key-{i:05d}" for i in range(2500)]
    for start in range(0, len(keys), 1000):
        await ns.put_many([Put(k, b"v") for k in keys[start : start + 1000]])
    await ns.delete_many(keys[::10])
    seen: list[str] = []
    token = None
    while True:
        page = await ns.scan(limit=1000, page_token=token)
        seen += page.keys
        token = page.next_page_token
        if token is None:
            break
    assert seen == [k for i, k in enumerate(keys) if i % 10]
    js = raw.jetstream()
    deadline = time.monotonic() + 5
    while (await js.account_info()).consumers:
        assert time.monotonic() < deadline, "listing consumers were left on the server"
        await asyncio.sleep(0.1)


async def test_a_message_prism_did_not_write_is_a_decode_error(store: prism.Store, raw: Client) -> None:
    name = _name()
    ns = store.namespace(name)
    await ns.put("k", b"v")
    kv = await raw.jetstream().key_value(f"prism_{name}")
    await kv.put(f"{_b64(b'k')}.=", b"not an envelope")
    with pytest.raises(DecodeError):
        await ns.get("k")


# -- values larger than one message -------------------------------------------------


def _value(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


async def _subjects(raw: Client, name: str) -> dict[str, int]:
    """Every subject holding a message in the namespace's bucket (tombstones included)."""
    info = await raw.jetstream().stream_info(f"KV_prism_{name}", subjects_filter=">")
    return info.state.subjects or {}


async def _chunk_versions(raw: Client, name: str) -> dict[str, int]:
    """Chunk messages per (item key, version) in the namespace's bucket."""
    out: dict[str, int] = {}
    for subject in await _subjects(raw, name):
        parts = subject.split(".")
        if parts[2] == "~c":
            head = ".".join(parts[3:-1])
            out[head] = out.get(head, 0) + 1
    return out


async def _until_chunks(raw: Client, name: str, want: dict[str, int], what: str) -> None:
    deadline = time.monotonic() + PURGE_WAIT
    while (got := await _chunk_versions(raw, name)) != want:
        assert time.monotonic() < deadline, f"{what}: chunks {got}, wanted {want}"
        await asyncio.sleep(0.05)


async def test_large_values_are_chunks_behind_a_manifest(store: prism.Store, raw: Client) -> None:
    name = _name()
    ns = store.namespace(name)
    big, other = _value(4 * MiB, 1), _value(3 * MiB, 2)
    await ns.put("k", big)
    versions = await _chunk_versions(raw, name)
    ((head, count),) = versions.items()
    key = f"{_b64(b'k')}.="
    assert head.startswith(f"{key}.~.") and count == 5, "4 MiB in chunks of 1 MiB less 1 KiB"
    manifest = await raw.jetstream().get_last_msg(f"KV_prism_{name}", f"$KV.prism_{name}.{key}")
    assert manifest.headers is not None and manifest.headers["Prism-Chunks"] == "5"
    assert manifest.data is not None and len(manifest.data) < 200, "the item's message holds no value"
    assert (await ns.scan()).keys == ["k"], "chunks are never listed"

    await ns.put("k", other)
    (new_head,) = [h for h in await _chunk_versions(raw, name) if h != head]
    await _until_chunks(raw, name, {new_head: 4}, "a replaced value's chunks")
    assert (item := await ns.get("k")) is not None and item.value == other
    await ns.put("k", b"small")
    await _until_chunks(raw, name, {}, "chunks of a value replaced by a small one")
    assert (item := await ns.get("k")) is not None and item.value == b"small"

    await ns.put_many([Put("a", big), Put("b", other)])
    await ns.put_items("rec", [Put("x", big), Put("y", b"y")])
    assert len(await _chunk_versions(raw, name)) == 3
    assert await ns.delete("a")
    assert [r.existed for r in await ns.delete_many(["b", "missing"])] == [True, False]
    assert await ns.delete_items("rec") == 2
    await _until_chunks(raw, name, {}, "chunks of deleted values")
    assert await ns.get_many(["a", "b"]) == [None, None] and (await ns.scan()).keys == ["k"]


async def test_readers_of_other_stores_see_only_whole_values(server: NatsServer, raw: Client) -> None:
    """Readers on other connections, eventual and strong, while two stores overwrite one key."""
    name = _name()
    values = [_value(3 * MiB, seed) for seed in range(4)]
    async with (
        prism.connect(server.url) as first,
        prism.connect(server.url) as second,
        prism.connect(server.url) as reader,
    ):
        await first.namespace(name).put("k", values[0])
        writing = 2
        seen: set[int] = set()

        async def write(ns: Namespace, mine: list[bytes]) -> None:
            nonlocal writing
            try:
                for n in range(6):
                    await ns.put("k", mine[n % 2])
            finally:
                writing -= 1

        async def read(strong: bool) -> None:
            ns = reader.namespace(name)
            while writing:
                item = await ns.get("k", consistency="strong" if strong else "eventual")
                assert item is not None and item.value in values, "a torn or partial value"
                seen.add(values.index(item.value))

        await asyncio.gather(
            write(first.namespace(name), values[:2]),
            write(second.namespace(name), values[2:]),
            read(False),
            read(True),
        )
        assert len(seen) > 1, "the readers saw no write happen"
        final = await reader.namespace(name).get("k", consistency="strong")
        assert final is not None and final.value in (values[1], values[3])
    # Writes that lost a compare-and-set to the other store gave their chunks up or reused them.
    key = f"{_b64(b'k')}.="
    manifest = await raw.jetstream().get_last_msg(f"KV_prism_{name}", f"$KV.prism_{name}.{key}")
    assert manifest.data is not None
    version = msgspec.msgpack.decode(manifest.data)[5]
    await _until_chunks(raw, name, {f"{key}.~.{version}": 4}, "chunks after two stores raced")


async def test_a_write_that_stopped_half_way_is_never_read(store: prism.Store, raw: Client) -> None:
    """Chunks published by a writer that died before its manifest: invisible, then cleaned up."""
    name = _name()
    ns = store.namespace(name)
    old = _value(2 * MiB, 5)
    await ns.put("k", old)
    await ns.put_items("rec", [Put("i", b"v")])
    ((old_head, _),) = (await _chunk_versions(raw, name)).items()
    root = old_head.rsplit(".", 1)[0]  # <item key>.~
    js = raw.jetstream()
    for n in range(3):
        await js.publish(f"$KV.prism_{name}.~c.{root}.deadwriter000.{n}", b"half" * 1000)
    await js.publish(f"$KV.prism_{name}.~c.{_b64(b'never')}.=.~.deadwriter001.0", b"half")
    assert (item := await ns.get("k")) is not None and item.value == old
    assert await ns.get("never") is None and not await ns.exists("never")
    assert (await ns.scan()).keys == ["k", "rec"]
    assert [i.key for i in await ns.get_items("rec")] == ["i"]

    new = _value(2 * MiB, 6)
    await ns.put("k", new)
    dead = f"{root}.deadwriter000"
    (new_head,) = [
        h for h in await _chunk_versions(raw, name) if h.startswith(root) and h not in (old_head, dead)
    ]
    await _until_chunks(
        raw, name, {new_head: 3, f"{_b64(b'never')}.=.~.deadwriter001": 1}, "the next write of the key"
    )
    assert (item := await ns.get("k")) is not None and item.value == new


async def test_cancelled_large_writes_leave_the_old_or_the_new_value(store: prism.Store, raw: Client) -> None:
    name = _name()
    ns = store.namespace(name)
    values = [_value(2 * MiB, seed) for seed in (7, 8)]
    await ns.put("k", values[0])
    for delay in (0, 0.001, 0.003, 0.01, 0.03):
        task = asyncio.create_task(ns.put("k", values[1]))
        await asyncio.sleep(delay)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        item = await ns.get("k", consistency="strong")
        assert item is not None and item.value in values, f"cancelled after {delay} s"
        await ns.put("k", values[0])
    await ns.put("k", b"small")
    await _until_chunks(raw, name, {}, "the chunks of cancelled writes, at the next write")


async def test_a_failed_condition_keeps_no_chunks(server: NatsServer, raw: Client) -> None:
    """A store whose remembered revision is stale publishes chunks, loses the compare-and-set, purges them."""
    name = _name()
    async with prism.connect(server.url) as first, prism.connect(server.url) as second:
        a, b = first.namespace(name), second.namespace(name)
        etag = await a.put("k", b"from a")
        await b.put("k", b"from b")
        with pytest.raises(PreconditionFailed):
            await a.put("k", _value(2 * MiB, 9), if_match=etag)
        await _until_chunks(raw, name, {}, "the chunks of a put whose condition failed")
        assert (item := await a.get("k")) is not None and item.value == b"from b"


async def test_expired_large_values_lose_their_chunks(store: prism.Store, raw: Client) -> None:
    name = _name()
    ns = store.namespace(name)
    await ns.put("k", _value(2 * MiB, 10), ttl=0.3)
    await ns.put("kept", _value(2 * MiB, 11))
    (kept_head,) = [h for h in await _chunk_versions(raw, name) if h.startswith(_b64(b"kept"))]
    await asyncio.sleep(0.5)
    assert await ns.get("k") is None
    await _until_chunks(raw, name, {kept_head: 3}, "the chunks of an expired value read once")
    assert (await ns.scan()).keys == ["kept"]


async def test_a_larger_max_payload_keeps_values_in_one_message() -> None:
    with nats_server(max_payload=LARGE_MAX_PAYLOAD) as large:
        if large.max_payload is None:
            pytest.skip("an external server keeps its own max_payload")
        options: dict[str, Any] = {"max_payload": LARGE_MAX_PAYLOAD, "max_value_bytes": LARGE_MAX_PAYLOAD}
        async with prism.connect(large.url, **options) as store:
            assert store.capabilities.max_value_bytes == LARGE_MAX_PAYLOAD - 1024
            ns = store.namespace(_name())
            limit = LARGE_MAX_PAYLOAD - 1024
            biggest = _value(limit, 12)
            await ns.put("k", biggest)
            assert (item := await ns.get("k")) is not None and item.value == biggest
            client = await nats.connect(large.url)
            try:
                subjects = (await _subjects(client, ns.name)).keys()
            finally:
                await client.close()
            assert list(subjects) == [f"$KV.prism_{ns.name}.{_b64(b'k')}.="], "one message, no chunks"


# -- what a current server adds -------------------------------------------------


async def test_capabilities_follow_the_server_version(store: prism.Store) -> None:
    version = (await store.health())["details"]["server_version"]
    assert tuple(int(p) for p in version.split(".")[:2]) >= (2, 12), "the tests run the current server"
    assert store.capabilities.transactions and store.capabilities.max_transaction_ops == 1000


async def test_the_server_removes_expired_items(store: prism.Store, raw: Client) -> None:
    """Per-message TTL: an expired item (chunks included) is gone from the stream without a read."""
    name = _name()
    ns = store.namespace(name)
    await ns.put("short", b"v", ttl=0.3)
    await ns.put("big", _value(2 * MiB, 13), ttl=0.3)
    await ns.transact([Put("tx", b"v", ttl=0.3), Put("kept", b"v")])
    info = await raw.jetstream().stream_info(f"KV_prism_{name}")
    assert info.config.allow_msg_ttl and info.state.messages == 7, "short, tx, kept, big and its 3 chunks"
    deadline = time.monotonic() + 10
    while (await raw.jetstream().stream_info(f"KV_prism_{name}")).state.messages != 1:
        assert time.monotonic() < deadline, "the server kept expired messages"
        await asyncio.sleep(0.1)
    assert (await ns.scan()).keys == ["kept"]
    assert await ns.put("short", b"again", if_absent=True)


async def test_a_transaction_is_one_atomic_batch(server: NatsServer, store: prism.Store, raw: Client) -> None:
    """A transaction's messages are stored together; one refused by the server stores none."""
    name = _name()
    ns = store.namespace(name)
    await ns.put("a", b"1")
    await ns.transact([Put("a", b"2"), Put("b", b"2"), Delete("c"), Put("b", b"3")])
    js = raw.jetstream()
    info = await js.stream_info(f"KV_prism_{name}")
    assert info.config.allow_atomic and info.state.last_seq == 4, "one message per key: a, b, c"
    a, b = await ns.get_many(["a", "b"])
    assert a is not None and b is not None and (a.value, b.value) == (b"2", b"3")
    # Another client moves "b" while a transaction of this store runs: it reads again and wins.
    async with prism.connect(server.url) as other:
        batches = [ns.transact([Put("a", b"x%d" % n), Put("b", b"x%d" % n)]) for n in range(5)]
        puts = [other.namespace(name).put("b", b"y%d" % n) for n in range(5)]
        results, _ = await asyncio.gather(asyncio.gather(*batches), asyncio.gather(*puts))
    assert all(r.ok for batch in results for r in batch)
    a = await ns.get("a", consistency="strong")
    assert a is not None and a.value.startswith(b"x")


async def test_get_many_past_one_batched_reads_byte_limit(store: prism.Store) -> None:
    """A batched direct get ends at 8 MiB: the keys it did not reach are read too, in order."""
    ns = store.namespace(_name())
    values = {f"k{n}": _value(1_000_000, 20 + n) for n in range(10)}
    await ns.put_many([Put(k, v) for k, v in values.items()])
    await ns.put("gone", b"v")
    await ns.delete("gone")
    keys = ["missing", *reversed(values), "k3", "gone"]
    got = await ns.get_many(keys)
    assert [i.value if i else None for i in got] == [None, *reversed(values.values()), values["k3"], None]


async def test_a_scan_after_the_bucket_was_made_again_by_another_store(server: NatsServer) -> None:
    """The kept listing of a bucket deleted and made again elsewhere is not caught up: it is taken anew."""
    name = _name()
    async with prism.connect(server.url) as first, prism.connect(server.url) as second:
        a, b = first.namespace(name), second.namespace(name)
        await a.put_many([Put(f"k{n}", b"v") for n in range(8)])
        page = await a.scan(limit=3)
        assert page.keys == ["k0", "k1", "k2"]
        await a.get_items("k0")
        client = await nats.connect(server.url)
        try:
            await client.jetstream().delete_key_value(f"prism_{name}")
        finally:
            await client.close()
        await b.put_many([Put(f"n{n}", b"v") for n in range(8)])  # the same sequences as before
        assert (await a.scan()).keys == [f"n{n}" for n in range(8)]
        assert (await a.get_items("k0")).items == []


async def test_a_bucket_made_by_an_older_server_gains_ttl_and_atomic_batches(
    store: prism.Store, raw: Client
) -> None:
    name = _name()
    js = raw.jetstream()
    config = api.StreamConfig(
        name=f"KV_prism_{name}", subjects=[f"$KV.prism_{name}.>"], max_msgs_per_subject=1, allow_direct=True
    )
    await js.add_stream(config)
    before = (await js.stream_info(f"KV_prism_{name}")).config
    assert not before.allow_atomic and not before.allow_msg_ttl
    ns = store.namespace(name)
    await ns.transact([Put("a", b"1"), Put("b", b"2", ttl=60)])
    after = (await js.stream_info(f"KV_prism_{name}")).config
    assert after.allow_atomic and after.allow_msg_ttl
    assert [i.value if i else None for i in await ns.get_many(["a", "b"])] == [b"1", b"2"]


async def test_pages_of_one_scan_served_by_two_stores(server: NatsServer) -> None:
    """Two gateway replicas serve alternate pages: each keeps its own listing and catches it up."""
    name = _name()
    async with prism.connect(server.url) as first, prism.connect(server.url, listing_cache=0) as second:
        a, b = first.namespace(name), second.namespace(name)
        await a.put_many([Put(f"k{n:03d}", b"v") for n in range(0, 60, 2)])
        await a.put_items("k001", [Put("x", b"v")])
        seen: list[str] = []
        removed_ahead: set[str] = set()
        token: str | None = None
        for turn in range(40):
            page = await (a if turn % 2 else b).scan("k", limit=5, page_token=token)
            seen.extend(page.keys)
            token = page.next_page_token
            if token is None:
                break
            await b.put(f"k{2 * turn + 3:03d}", b"inserted")
            victim = f"k{58 - 2 * turn:03d}"
            if victim > seen[-1]:
                await a.delete(victim)
                removed_ahead.add(victim)
            await a.put_items(f"k{59 - 2 * turn:03d}", [Put("i", b"v")])
            await a.delete_items(f"k{59 - 2 * turn:03d}")
        assert seen == sorted(set(seen)), "in order, none twice"
        assert removed_ahead and not removed_ahead & set(seen), "a key deleted before its page was listed"
        assert {f"k{n:03d}" for n in range(0, 60, 2)} - removed_ahead <= set(seen), "a key was missed"
        assert not any(int(k[1:]) % 2 and int(k[1:]) > 40 for k in seen), "a record emptied before its page"
        assert "k001" in seen
        items = await a.get_items("k001")
        assert [i.key for i in items.items] == ["x"]


# -- buckets changed behind the store's back --------------------------------------


async def test_a_bucket_deleted_behind_the_store_is_found_missing(server: NatsServer, raw: Client) -> None:
    """A read of a deleted stream finds it gone (on 2.9 the first read goes unanswered, the next finds it)."""
    name = _name()
    async with prism.connect(server.url, operation_timeout=0.5) as store:
        ns = store.namespace(name)
        await ns.put("k", b"v")
        await ns.put("other", b"v")
        await raw.jetstream().delete_key_value(f"prism_{name}")
        try:
            first = await ns.get("k")
        except prism.Timeout as exc:
            assert isinstance(exc, BackendUnavailable) and "no answer within 0.5 s" in str(exc)
        else:
            assert first is None
        assert await ns.get("k") is None
        assert (await ns.scan()).keys == []
        result = await ns.put_result(Put("k", b"again"))
        assert result.ok and not result.existed
        item = await ns.get("k")
        assert item is not None and item.value == b"again"
        await raw.jetstream().delete_key_value(f"prism_{name}")
        # A write whose revision the store knows publishes at once, finds nobody, and creates the bucket.
        result = await ns.put_result(Put("k", b"third"))
        assert result.ok and not result.existed
        assert [i.value if i else None for i in await ns.get_many(["k", "other"])] == [b"third", None]


async def test_a_bucket_without_direct_gets_is_read_through_the_api(store: prism.Store, raw: Client) -> None:
    name = _name()
    await raw.jetstream().create_key_value(bucket=f"prism_{name}", history=1, direct=False)
    ns = store.namespace(name)
    etag = await ns.put("k", b"v")
    item = await ns.get("k")
    assert item is not None and item.etag == etag
    await ns.put("k", b"w", if_match=etag)
    assert [i.value if i else None for i in await ns.get_many(["k", "missing"])] == [b"w", None]


async def test_strong_reads(store: prism.Store) -> None:
    ns = store.namespace(_name())
    etag = await ns.put("k", b"v", content_type="text/plain", ttl=60)
    strong = await ns.get("k", consistency="strong")
    eventual = await ns.get("k")
    assert strong == eventual and strong is not None and strong.etag == etag
    await ns.delete("k")
    assert await ns.get("k", consistency="strong") is None
    assert await ns.get("never", consistency="strong") is None


# -- options ------------------------------------------------------------------------


def test_options_from_the_url_and_keywords() -> None:
    backend = prism.connect(
        "nats://127.0.0.1:4999?operation_timeout=0.5&storage=memory&revision_cache=0", replicas=1
    ).backend
    assert backend.settings.operation_timeout == 0.5  # type: ignore[attr-defined]
    assert backend.options.storage == "memory" and backend.options.revision_cache == 0  # type: ignore[attr-defined]
    keyword = prism.connect("nats://127.0.0.1:4999?operation_timeout=0.5", operation_timeout=2).backend
    assert keyword.settings.operation_timeout == 2  # type: ignore[attr-defined]
    assert prism.connect("nats://h:4999", max_payload=8 * MiB).capabilities.max_value_bytes == 8 * MiB - 1024
    listing = prism.connect("nats://h:4999?listing_cache=3&listing_max_age=5").backend
    assert (listing.options.listing_cache, listing.options.listing_max_age) == (3, 5.0)  # type: ignore[attr-defined]
    with pytest.raises(InvalidArgument, match="pool_size"):
        prism.connect("nats://127.0.0.1:4999?pool_size=3")
    for bad in ({"storage": "disk"}, {"replicas": 0}, {"replicas": "x"}, {"reconnect_wait": -1},
                {"revision_cache": -5}, {"max_payload": 10}, {"operation_timeout": "soon"},
                {"listing_cache": -1}, {"listing_max_age": 0}):  # fmt: skip
        with pytest.raises(InvalidArgument):
            prism.connect("nats://127.0.0.1:4999", **bad)
    for url in ("nats://", "nats://host:port", "nats://host:4222/path"):
        with pytest.raises(InvalidArgument):
            prism.connect(url)


async def test_max_payload_over_the_servers_is_refused_at_open(server: NatsServer) -> None:
    too_big = (server.max_payload or MiB) * 2
    store = prism.connect(server.url, max_payload=too_big)
    with pytest.raises(InvalidArgument, match="max_payload"):
        await store.open()
    await store.close()


async def test_memory_storage_and_a_disabled_revision_cache(server: NatsServer, raw: Client) -> None:
    name = _name()
    async with prism.connect(server.url, storage="memory", revision_cache=0) as store:
        ns = store.namespace(name)
        etag = await ns.put("k", b"1")
        assert (await ns.put_result(Put("k", b"2", if_match=etag))).ok
        with pytest.raises(PreconditionFailed):
            await ns.put("k", b"3", if_match=etag)
        with pytest.raises(PreconditionFailed):
            await ns.put("k", b"3", if_absent=True)
        assert await ns.delete("k") and not await ns.delete("k")
    info = await raw.jetstream().stream_info(f"KV_prism_{name}")
    assert info.config.storage == api.StorageType.MEMORY
