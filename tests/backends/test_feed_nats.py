"""The change-feed conformance suite on nats-server (current and oldest), and the feed's specifics."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from typing import Any

import nats
import pytest

import prism
from prism.backends.nats import NatsBackend
from prism.backends.nats.layout import bucket_name
from prism.testing.conformance import ConformanceSuite
from prism.testing.feed import FeedSuite, take
from prism.testing.servers.nats import NatsServer, nats_server


@pytest.fixture(scope="module")
def server() -> Iterator[NatsServer]:
    with nats_server() as s:
        yield s


@pytest.fixture(scope="module")
def oldest() -> Iterator[NatsServer]:
    with nats_server(oldest=True) as s:
        yield s


class TestNatsFeed(FeedSuite):
    @pytest.fixture
    def store_url(self, server: NatsServer) -> str:
        return server.url

    @pytest.fixture
    def store_options(self) -> dict[str, Any]:
        return {"feed": True}


class TestConformanceOfABucketWithAFeed(ConformanceSuite):
    """A bucket keeping each key's history (feed=true) still behaves as the KeyValue contract says."""

    @pytest.fixture
    def store_url(self, server: NatsServer) -> str:
        return server.url

    @pytest.fixture
    def store_options(self) -> dict[str, Any]:
        return {"feed": True, "feed_history": 3}


class TestNatsFeedOnTheOldestServer(FeedSuite):
    @pytest.fixture
    def store_url(self, oldest: NatsServer) -> str:
        return oldest.url

    @pytest.fixture
    def store_options(self) -> dict[str, Any]:
        return {"feed": True}


async def _value(ns: prism.Namespace, key: str) -> bytes | None:
    item = await ns.get(key)
    return None if item is None else item.value


def _ns() -> str:
    return f"feed-{uuid.uuid4().hex[:10]}"


async def test_a_watcher_sees_the_writes_of_another_store(server: NatsServer) -> None:
    async with prism.connect(server.url, feed=True) as watcher, prism.connect(server.url) as writer:
        name = _ns()
        feed = watcher.namespace(name).watch(poll_interval=0.01)
        await feed.start()
        etag = await writer.namespace(name).put("k", b"v")
        await writer.namespace(name + "-other").put("k", b"elsewhere")
        await writer.namespace(name).delete("k")
        changes = await take(feed, 2)
        assert [(c.key, c.op, c.etag) for c in changes] == [("k", "put", etag), ("k", "delete", None)]


async def test_a_large_value_is_one_change(server: NatsServer) -> None:
    async with prism.connect(server.url, feed=True, max_payload=64 * 1024) as store:
        ns = store.namespace(_ns())
        feed = ns.watch(poll_interval=0.01)
        await feed.start()
        big = await ns.put("big", b"x" * 300_000)  # five chunk messages and a manifest
        small = await ns.put("small", b"y")
        changes = await take(feed, 2)
        assert [(c.key, c.op, c.etag) for c in changes] == [("big", "put", big), ("small", "put", small)]
        assert await _value(ns, "big") == b"x" * 300_000


async def test_an_expired_item_met_by_a_read_is_an_expire_change(server: NatsServer) -> None:
    async with prism.connect(server.url, feed=True) as store:
        ns = store.namespace(_ns())
        feed = ns.watch(poll_interval=0.01)
        await feed.start()
        etag = await ns.put("brief", b"x", ttl=0.2)
        await asyncio.sleep(0.4)
        assert await ns.get("brief") is None  # the read replaces it by a tombstone
        changes = await take(feed, 2)
        assert [(c.key, c.op) for c in changes] == [("brief", "put"), ("brief", "expire")]
        assert changes[0].etag == etag


async def test_a_bucket_made_without_a_feed_gets_one(server: NatsServer) -> None:
    name = _ns()
    async with prism.connect(server.url) as plain:
        await plain.namespace(name).put("k", b"before")
    async with prism.connect(server.url, feed=True) as store:
        ns = store.namespace(name)
        feed = ns.watch(poll_interval=0.01)
        await feed.start()
        e1 = await ns.put("k", b"1")
        e2 = await ns.put("k", b"2")
        assert [(c.key, c.etag) for c in await take(feed, 2)] == [("k", e1), ("k", e2)]
        assert await _value(ns, "k") == b"2"


@pytest.mark.parametrize("which", ["current", "oldest"])
async def test_revisions_past_the_history_expire_the_cursor_never_a_gap(
    which: str, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue("server" if which == "current" else "oldest").url
    async with prism.connect(url, feed=True, feed_history=3) as store:
        ns = store.namespace(_ns())
        start = await ns.watch().start()
        await ns.put("other", b"x")
        for i in range(5):  # the first two revisions of "hot" leave its history of three
            await ns.put("hot", str(i).encode())
        with pytest.raises(prism.CursorExpired, match="older than the retained window"):
            await take(ns.watch(after=start, poll_interval=0.01), 10)
        # From after the second revision, everything left is there.
        changes = await take(ns.watch(after=str(int(start) + 3), poll_interval=0.01), 3)
        assert [c.key for c in changes] == ["hot"] * 3
        assert await _value(ns, "hot") == b"4"


async def test_changes_older_than_feed_retention_expire_their_cursor(server: NatsServer) -> None:
    async with prism.connect(server.url, feed=True, feed_retention=1) as store:
        ns = store.namespace(_ns())
        start = await ns.watch().start()
        await ns.put("old", b"x")
        assert [c.key for c in await take(ns.watch(after=start, poll_interval=0.01), 1)] == ["old"]
        await asyncio.sleep(1.5)
        with pytest.raises(prism.CursorExpired, match="older than the retained window"):
            await take(ns.watch(after=start, poll_interval=0.01), 1)
        assert await _value(ns, "old") == b"x"  # the window is the feed's: the item stays


async def test_a_bucket_with_a_feed_keeps_ttl_itself_on_every_store(server: NatsServer) -> None:
    name = _ns()
    async with prism.connect(server.url, feed=True) as fed:
        await fed.namespace(name).put("k", b"1")
    async with prism.connect(server.url) as plain:  # no feed option: it writes no Nats-TTL either
        ns = plain.namespace(name)
        await ns.put("k", b"2", ttl=0.5)
        client = await nats.connect(server.url)
        try:
            msg = await client.jetstream().get_last_msg(
                f"KV_{bucket_name(name)}", f"$KV.{bucket_name(name)}.aw.="
            )
        finally:
            await client.close()
        assert "Nats-TTL" not in (msg.headers or {})
        await asyncio.sleep(0.7)
        assert await ns.get("k") is None  # expired: not the revision before it


def test_feed_options_come_from_the_url() -> None:
    backend = NatsBackend.from_url("nats://h?feed=true&feed_retention=60&feed_max_changes=9")
    assert (backend.feed, backend.feed_retention, backend.feed_max_changes) == (True, 60.0, 9)
    assert backend.capabilities.watch and not backend.capabilities.watch_expiry
    assert not NatsBackend.from_url("nats://h").capabilities.watch
    with pytest.raises(prism.InvalidArgument, match="feed_max_changes"):
        NatsBackend.from_url("nats://h?feed=true&feed_max_changes=0")
    with pytest.raises(prism.InvalidArgument, match="start the store with feed=true"):
        NatsBackend.from_url("nats://h?feed_retention=60")
    with pytest.raises(prism.InvalidArgument, match="feed_history"):
        NatsBackend.from_url("nats://h?feed=true&feed_history=1")


@pytest.fixture
def local_server() -> Iterator[NatsServer]:
    """A server of this test's own, which it stops and starts again (its data kept)."""
    server = NatsServer.local()
    server.start()
    try:
        yield server
    finally:
        server.close()


async def test_a_watch_resumes_after_the_server_was_stopped_mid_run(local_server: NatsServer) -> None:
    options: dict[str, Any] = {
        "feed": True,
        "operation_timeout": 1.0,
        "max_retries": 2,
        "reconnect_wait": 0.1,
    }
    name = _ns()
    async with (
        prism.connect(local_server.url, **options) as watcher,
        prism.connect(local_server.url, **options) as writer,
    ):
        feed = watcher.namespace(name).watch(poll_interval=0.01)
        await feed.start()
        before = [await writer.namespace(name).put(f"k{i % 3}", b"before") for i in range(6)]
        assert [c.etag for c in await take(feed, 6)] == before
        cursor = feed.cursor
        assert cursor is not None
        local_server.stop()
        try:
            with pytest.raises(prism.BackendUnavailable):  # an outage is an error, never an empty feed
                await take(watcher.namespace(name).watch(after=cursor, poll_interval=0.01), 1)
        finally:
            local_server.start()
        deadline = time.monotonic() + 20
        while True:
            try:
                first = await writer.namespace(name).put("k0", b"after")
                break
            except prism.BackendUnavailable:
                assert time.monotonic() < deadline, "the writer did not reconnect"
                await asyncio.sleep(0.1)
        after = [first] + [await writer.namespace(name).put(f"k{i % 3}", b"after") for i in range(1, 6)]
        resumed = await take(watcher.namespace(name).watch(after=cursor, poll_interval=0.01), 6)
        assert [c.etag for c in resumed] == after
