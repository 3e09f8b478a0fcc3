"""The change-feed conformance suite on DynamoDB Streams (moto's server), and the stream's specifics."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest
from aiobotocore.session import AioSession
from aiohttp import web

import prism
from prism.backends.dynamodb import DynamoDBBackend
from prism.backends.dynamodb.layout import INLINE_VALUE_BYTES
from prism.testing.feed import FeedSuite, take
from prism.testing.servers import free_port
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


# -- shards: lineage and trimming, which moto (one shard, never trimmed) does not show ------


class ShardedStream:
    """An HTTP front for moto that answers the DynamoDB Streams calls itself, from shards set here.

    DynamoDB calls go on to moto (the store opens its table there); DescribeStream,
    GetShardIterator and GetRecords are answered from ``shards``: per shard id its
    parent, whether it is closed, and its records, as DynamoDB Streams would.
    ``trimmed`` lists sequence numbers older than the stream keeps.
    """

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.port = free_port()
        #: shard id -> (parent, closed, [(seq, event, record id, etag)]), in listing order.
        self.shards: dict[str, tuple[str | None, bool, list[tuple[int, str, str, str]]]] = {}
        self.trimmed_below = 0
        #: Iterators handed out before this generation are refused as expired (15 minutes old).
        self.generation = 0
        self.iterator_calls = 0
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        self._session = aiohttp.ClientSession()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        target = request.headers.get("X-Amz-Target", "")
        body = await request.read()
        if target.startswith("DynamoDBStreams_"):
            return self._streams(target.rpartition(".")[2], json.loads(body))
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
        async with self._session.post(self.upstream + request.path, headers=headers, data=body) as answer:
            return web.Response(
                status=answer.status, body=await answer.read(), content_type="application/x-amz-json-1.0"
            )

    def _streams(self, operation: str, doc: dict[str, Any]) -> web.Response:
        if operation == "DescribeStream":
            shards = []
            for shard_id, (parent, closed, records) in self.shards.items():
                first = records[0][0] if records else 1
                span: dict[str, str] = {"StartingSequenceNumber": str(first)}
                if closed:
                    span["EndingSequenceNumber"] = str(records[-1][0] if records else first)
                shards.append(
                    {"ShardId": shard_id, "SequenceNumberRange": span}
                    | ({"ParentShardId": parent} if parent else {})
                )
            return _answer({"StreamDescription": {"StreamArn": doc["StreamArn"], "Shards": shards}})
        if operation == "GetShardIterator":
            kind, seq = doc["ShardIteratorType"], int(doc.get("SequenceNumber", "0"))
            if kind == "AFTER_SEQUENCE_NUMBER" and seq < self.trimmed_below:
                return _answer({"__type": "TrimmedDataAccessException", "message": "trimmed"}, 400)
            start = seq + 1 if kind == "AFTER_SEQUENCE_NUMBER" else 0
            self.iterator_calls += 1
            return _answer({"ShardIterator": f"{doc['ShardId']}|{start}|{self.generation}"})
        assert operation == "GetRecords", operation
        shard_id, start, generation = doc["ShardIterator"].split("|")
        if int(generation) < self.generation:
            return _answer({"__type": "ExpiredIteratorException", "message": "expired"}, 400)
        _, closed, records = self.shards[shard_id]
        batch = [r for r in records if r[0] >= int(start) and r[0] >= self.trimmed_below][:2]
        following = str(batch[-1][0] + 1) if batch else start
        answer: dict[str, Any] = {"Records": [_record(ns_record) for ns_record in batch]}
        if not (closed and (not batch or batch[-1][0] == records[-1][0])):
            answer["NextShardIterator"] = f"{shard_id}|{following}|{self.generation}"
        return _answer(answer)


def _answer(doc: dict[str, Any], status: int = 200) -> web.Response:
    return web.Response(status=status, body=json.dumps(doc), content_type="application/x-amz-json-1.0")


def _record(entry: tuple[int, str, str, str]) -> dict[str, Any]:
    seq, event, record, etag = entry
    body: dict[str, Any] = {
        "SequenceNumber": str(seq),
        "ApproximateCreationDateTime": time.time(),
        "Keys": {"pk": {"S": f"5:lines:{record}"}, "sk": {"S": "\x01"}},
        "StreamViewType": "NEW_IMAGE",
    }
    if event != "REMOVE":
        body["NewImage"] = {"e": {"S": etag}, "u": {"N": str(time.time())}}
    out: dict[str, Any] = {"eventName": event, "dynamodb": body}
    if event == "REMOVE" and etag == "ttl":
        out["userIdentity"] = {"Type": "Service", "PrincipalId": "dynamodb.amazonaws.com"}
    return out


#: Sequence numbers are at least 21 digits (the service's, and botocore's, rule).
B = 10**20
#: A shard the stream no longer lists.
GONE = "shardId-00000000000000000005-gone0000"


@pytest.fixture
async def sharded(dynamodb: DynamoDBServer) -> AsyncIterator[ShardedStream]:
    front = ShardedStream(dynamodb.endpoint)
    await front.start()
    yield front
    await front.close()


async def test_a_child_shard_is_read_after_its_parent(sharded: ShardedStream) -> None:
    sharded.shards = {
        # Listed child first: the order of the listing must not decide the order of the changes.
        "shardId-00000000000000000002-child000": (
            "shardId-00000000000000000001-parent00",
            False,
            [(B + 20, "MODIFY", "a", "e3"), (B + 21, "REMOVE", "a", "")],
        ),
        "shardId-00000000000000000001-parent00": (
            None,
            True,
            [(B + 10, "INSERT", "a", "e1"), (B + 11, "MODIFY", "a", "e2")],
        ),
        "shardId-00000000000000000003-other000": (
            None,
            False,
            [(B + 30, "INSERT", "b", "f1"), (B + 31, "REMOVE", "b", "ttl")],
        ),
    }
    url = f"dynamodb://{_table()}?region={REGION}&endpoint={sharded.endpoint}&create_table=true"
    async with prism.connect(url, **FAST) as store:
        ns = store.namespace("lines")
        start = "shardId-00000000000000000001-parent00.~shardId-00000000000000000003-other000."
        changes = await take(ns.watch(after=start, poll_interval=0.01), 6)
        per_key: dict[str, list[tuple[str, str | None]]] = {}
        for c in changes:
            per_key.setdefault(c.key, []).append((c.op, c.etag))
        assert per_key == {
            "a": [("put", "e1"), ("put", "e2"), ("put", "e3"), ("delete", None)],
            "b": [("put", "f1"), ("expire", None)],  # a delete by DynamoDB's TTL
        }
        last = changes[-1].cursor
        assert "shardId-00000000000000000001-parent00.end" in last.split("~")
        # The parent, read whole, may go: the cursor goes on without it.
        del sharded.shards["shardId-00000000000000000001-parent00"]
        sharded.shards["shardId-00000000000000000002-child000"][2].append((B + 22, "INSERT", "a", "e4"))
    async with prism.connect(url, **FAST) as again:  # a store that lists the shards afresh
        (more,) = await take(again.namespace("lines").watch(after=last, poll_interval=0.01), 1)
        assert (more.key, more.etag) == ("a", "e4")


async def test_trimmed_changes_expire_the_cursor(sharded: ShardedStream) -> None:
    sharded.shards = {
        "shardId-00000000000000000004-one00000": (
            None,
            False,
            [(B + 10, "INSERT", "a", "e1"), (B + 11, "INSERT", "b", "e2")],
        )
    }
    url = f"dynamodb://{_table()}?region={REGION}&endpoint={sharded.endpoint}&create_table=true"
    async with prism.connect(url, **FAST) as store:
        ns = store.namespace("lines")
        (first, _) = await take(
            ns.watch(after="shardId-00000000000000000004-one00000.", poll_interval=0.01), 2
        )
        sharded.trimmed_below = B + 12  # the stream dropped both changes (24 hours)
        with pytest.raises(prism.CursorExpired, match="older than the retained window"):
            await take(
                ns.watch(after=f"shardId-00000000000000000004-one00000.{B + 10}", poll_interval=0.01), 1
            )
        # A cursor whose shard is gone altogether, not read to its end, is expired too.
        with pytest.raises(prism.CursorExpired, match="older than the retained window"):
            await take(
                ns.watch(
                    after=f"{GONE}.{B + 5}~shardId-00000000000000000004-one00000.{B + 11}",
                    poll_interval=0.01,
                ),
                1,
            )
        assert first.key == "a"


async def test_a_read_goes_on_with_the_iterator_left_and_replaces_an_expired_one(
    sharded: ShardedStream,
) -> None:
    shard = "shardId-00000000000000000006-iter0000"
    sharded.shards = {shard: (None, False, [(B + 10, "INSERT", "a", "e1")])}
    url = f"dynamodb://{_table()}?region={REGION}&endpoint={sharded.endpoint}&create_table=true"
    async with prism.connect(url, **FAST) as store:
        feed = store.namespace("lines").watch(after=f"{shard}.", poll_interval=0.01)
        assert [c.etag for c in await take(feed, 1)] == ["e1"]
        asked = sharded.iterator_calls
        sharded.shards[shard][2].append((B + 11, "INSERT", "a", "e2"))
        assert [c.etag for c in await take(feed, 1)] == ["e2"]
        assert sharded.iterator_calls == asked  # the iterator the last read left served this one
        sharded.generation += 1  # every iterator handed out so far is now too old
        sharded.shards[shard][2].append((B + 12, "INSERT", "a", "e3"))
        assert [c.etag for c in await take(feed, 1)] == ["e3"]
        assert sharded.iterator_calls == asked + 1
