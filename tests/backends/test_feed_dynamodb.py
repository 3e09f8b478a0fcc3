"""The change-feed conformance suite on DynamoDB Streams (moto's server), and the stream's specifics."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from aiobotocore.session import AioSession

import prism
from prism.backends.dynamodb import DynamoDBBackend
from prism.backends.dynamodb.layout import INLINE_VALUE_BYTES
from prism.testing.feed import FeedSuite, take
from prism.testing.servers.dynamodb import (
    DUMMY_AWS_ENVIRONMENT,
    REGION,
    DynamoDBServer,
    ExternalDynamoDB,
    dynamodb_or_skip,
)

#: Watches in these tests poll often (moto has no GetRecords rate limit).
FAST: dict[str, Any] = {"feed": True, "feed_poll_interval": 0.02}


@pytest.fixture(scope="module")
def dynamodb() -> Iterator[DynamoDBServer]:
    """A local moto with fake credentials (never real ones): the tests make tables of their own."""
    server = dynamodb_or_skip()
    if isinstance(server, ExternalDynamoDB):
        server.close()
        pytest.skip("the feed tests create tables of their own on a local moto server")
    with pytest.MonkeyPatch.context() as env:
        if isinstance(server, DynamoDBServer):
            for name, value in DUMMY_AWS_ENVIRONMENT.items():
                env.setenv(name, value)
        yield server
    server.close()


def _table() -> str:
    return f"prism-feed-{uuid.uuid4().hex[:8]}"


#: The suite's table (each of its tests works in a namespace of its own).
SUITE_TABLE = _table()


class TestDynamoDBFeed(FeedSuite):
    @pytest.fixture
    def store_url(self, dynamodb: DynamoDBServer) -> str:
        return dynamodb.url_for(SUITE_TABLE)

    @pytest.fixture
    def store_options(self) -> dict[str, Any]:
        return FAST


@pytest.fixture
async def raw_streams(dynamodb: DynamoDBServer) -> AsyncIterator[Any]:
    async with AioSession().create_client(
        "dynamodb", region_name=REGION, endpoint_url=dynamodb.endpoint
    ) as client:
        yield client


async def test_a_watcher_sees_the_writes_of_another_store(
    dynamodb: DynamoDBServer,
) -> None:
    url = dynamodb.url_for(_table())
    async with prism.connect(url, **FAST) as watcher, prism.connect(url) as writer:
        feed = watcher.namespace("shared").watch(poll_interval=0.01)
        await feed.start()
        etag = await writer.namespace("shared").put("k", b"v")
        await writer.namespace("other").put("k", b"elsewhere")
        big = await writer.namespace("shared").put("big", b"x" * (INLINE_VALUE_BYTES + 10))
        await writer.namespace("shared").delete("k")
        changes = await take(feed, 3)
        assert [(c.key, c.op, c.etag) for c in changes] == [
            ("k", "put", etag),
            ("big", "put", big),  # one change for a chunked value: its chunk items are not changes
            ("k", "delete", None),
        ]


async def test_the_feed_survives_a_new_store_and_resumes_from_a_cursor(
    dynamodb: DynamoDBServer,
) -> None:
    url = dynamodb.url_for(_table())
    async with prism.connect(url, **FAST) as store:
        ns = store.namespace("resume")
        start = await ns.watch().start()
        for i in range(5):
            await ns.put(f"k{i}", b"v")
    async with prism.connect(url, **FAST) as again:
        changes = await take(again.namespace("resume").watch(after=start, poll_interval=0.01), 5)
        assert [c.key for c in changes] == [f"k{i}" for i in range(5)]
        rest = await take(again.namespace("resume").watch(after=changes[1].cursor, poll_interval=0.01), 3)
        assert rest == changes[2:]


async def test_changes_older_than_feed_retention_expire_their_cursor(
    dynamodb: DynamoDBServer,
) -> None:
    url = dynamodb.url_for(_table())
    async with prism.connect(url, feed=True, feed_retention=1, feed_poll_interval=0.02) as store:
        ns = store.namespace("aging")
        start = await ns.watch().start()
        await ns.put("old", b"x")
        # Fresh enough, the change is there; once older than feed_retention it is not.
        assert [c.key for c in await take(ns.watch(after=start, poll_interval=0.01), 1)] == ["old"]
        await asyncio.sleep(2.2)
        with pytest.raises(prism.CursorExpired, match="older than the retained window"):
            await take(ns.watch(after=start, poll_interval=0.01), 1)


async def test_options_of_the_feed_are_checked() -> None:
    backend = DynamoDBBackend.from_url(
        "dynamodb://tbl?region=us-east-1&feed=true&feed_retention=60&feed_poll_interval=0.5"
    )
    assert (backend.feed, backend.feed_retention, backend.options.feed_poll_interval) == (True, 60.0, 0.5)
    assert backend.capabilities.watch and not backend.capabilities.watch_expiry
    assert not DynamoDBBackend.from_url("dynamodb://tbl?region=us-east-1").capabilities.watch
    with pytest.raises(prism.InvalidArgument, match="24 hours"):
        DynamoDBBackend.from_url("dynamodb://tbl?region=us-east-1&feed=true&feed_retention=90000")
    with pytest.raises(prism.InvalidArgument, match="feed_max_changes is not supported"):
        DynamoDBBackend.from_url("dynamodb://tbl?region=us-east-1&feed=true&feed_max_changes=10")
    with pytest.raises(prism.InvalidArgument, match="start the store with feed=true"):
        DynamoDBBackend.from_url("dynamodb://tbl?region=us-east-1&feed_poll_interval=1")
    with pytest.raises(prism.InvalidArgument, match="feed_poll_interval"):
        DynamoDBBackend.from_url("dynamodb://tbl?region=us-east-1&feed=true&feed_poll_interval=0")


async def test_feed_on_a_table_without_a_stream(dynamodb: DynamoDBServer, raw_streams: Any) -> None:
    table = _table()
    async with prism.connect(dynamodb.url_for(table)) as plain:  # created without a stream
        await plain.namespace("x").put("k", b"v")
    no_create = dynamodb.url_for(table).replace("create_table=true", "create_table=false")
    async with prism.connect(no_create, **FAST) as store:
        assert not store.capabilities.watch
        with pytest.raises(prism.Unsupported, match="no change feed"):
            store.namespace("x").watch()
    # create_table=true turns the stream on, and the feed starts from there.
    async with prism.connect(dynamodb.url_for(table), **FAST) as store:
        assert store.capabilities.watch
        described = await raw_streams.describe_table(TableName=table)
        assert described["Table"]["StreamSpecification"]["StreamViewType"] == "NEW_IMAGE"
        feed = store.namespace("x").watch(poll_interval=0.01)
        await feed.start()
        await store.namespace("x").put("k", b"w")
        (change,) = await take(feed, 1)
        assert (change.key, change.op) == ("k", "put")


async def test_a_cursor_of_another_table_or_made_up_is_refused(
    dynamodb: DynamoDBServer,
) -> None:
    async with prism.connect(dynamodb.url_for(_table()), **FAST) as store:
        ns = store.namespace("c")
        await ns.put("k", b"v")
        start = await ns.watch().start()
        shard = start.split(".")[0]
        with pytest.raises(prism.CursorExpired, match="ahead of the feed"):
            await take(ns.watch(after=f"{shard}.1", poll_interval=0.01), 1)
        with pytest.raises(prism.CursorExpired, match="older than the retained window"):
            await take(ns.watch(after="shardId-gone-0001.5", poll_interval=0.01), 1)
        for bad in ("x", f"{shard}.1~{shard}.2", f"{shard}.abc", f"{shard}"):
            with pytest.raises(prism.InvalidArgument, match="not a change-feed cursor"):
                await take(ns.watch(after=bad, poll_interval=0.01), 1)


async def test_delivery_keeps_up_with_a_steady_writer(dynamodb: DynamoDBServer) -> None:
    """Every change of a writer arrives, in order per key, while it writes."""
    url = dynamodb.url_for(_table())
    async with prism.connect(url, **FAST) as watcher, prism.connect(url) as writer:
        feed = watcher.namespace("steady").watch(poll_interval=0.01)
        await feed.start()
        written: list[tuple[str, str]] = []

        async def write() -> None:
            for i in range(60):
                key = f"k{i % 3}"
                written.append((key, await writer.namespace("steady").put(key, str(i).encode())))

        task = asyncio.get_running_loop().create_task(write())
        changes = await take(feed, 60, deadline=60)
        await task
        assert [(c.key, c.etag) for c in changes] == written


async def test_a_cursor_handed_over_by_another_store_resumes_there(dynamodb: DynamoDBServer) -> None:
    """A store that has seen less of the stream than the cursor it is given still follows it."""
    url = dynamodb.url_for(_table())
    async with prism.connect(url, **FAST) as behind, prism.connect(url, **FAST) as ahead:
        await behind.namespace("h").watch().start()  # what this store knows of the shard ends here
        await ahead.namespace("h").put("k1", b"v")
        cursor = await ahead.namespace("h").watch().start()

        async def write_soon() -> None:
            await asyncio.sleep(0.5)  # the watch has read "nothing after the cursor" by then
            await ahead.namespace("h").put("k2", b"v")

        task = asyncio.get_running_loop().create_task(write_soon())
        (change,) = await take(behind.namespace("h").watch(after=cursor, poll_interval=0.01), 1)
        await task
        assert change.key == "k2"


async def test_a_watch_resumes_after_the_server_was_stopped_mid_run(dynamodb: DynamoDBServer) -> None:
    # A second server of this test's own (``dynamodb`` gives the fake credentials), restartable
    # with its data: its recorded requests are replayed, so the stream comes back as it was.
    server = dynamodb_or_skip(persistent=True)
    assert isinstance(server, DynamoDBServer)
    # A short timeout only for the calls made while the server is down; replaying its
    # recording after the restart can take a loaded machine longer.
    url = server.url_for(_table(), operation_timeout="5.0", connect_timeout="1.0", retry_cap="0.1")
    try:
        async with prism.connect(url, **FAST) as watcher, prism.connect(url) as writer:
            feed = watcher.namespace("o").watch(poll_interval=0.01)
            await feed.start()
            before = [await writer.namespace("o").put(f"k{i % 2}", b"before") for i in range(4)]
            assert [c.etag for c in await take(feed, 4)] == before
            cursor = feed.cursor
            assert cursor is not None
            server.stop()
            try:
                with pytest.raises(prism.BackendUnavailable):  # an outage is an error, never an empty feed
                    await take(watcher.namespace("o").watch(after=cursor, poll_interval=0.01), 1)
            finally:
                server.start()
            deadline = time.monotonic() + 60
            while True:
                try:
                    first = await writer.namespace("o").put("k0", b"after")
                    break
                except prism.BackendUnavailable:
                    assert time.monotonic() < deadline, "the server did not come back"
                    await asyncio.sleep(0.2)
            after = [first] + [await writer.namespace("o").put(f"k{i % 2}", b"after") for i in range(1, 4)]
            resumed = await take(watcher.namespace("o").watch(after=cursor, poll_interval=0.01), 4)
            assert [c.etag for c in resumed] == after
    finally:
        server.close()
