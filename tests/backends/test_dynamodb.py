"""The DynamoDB backend against moto's server: the conformance suite, then DynamoDB specifics.

The specifics cover what the suite cannot see from one healthy server: outages and
hangs, throttling and unprocessed batch items (through a fault-injecting proxy in
front of moto), items DynamoDB's TTL has not deleted yet, chunked large values, and
the limits of TransactWriteItems.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest
from aiobotocore.session import AioSession
from aiohttp import web

import prism
from prism.backends.dynamodb.layout import INLINE_VALUE_BYTES, key_of
from prism.errors import BackendUnavailable, InvalidArgument, PreconditionFailed, Unsupported, ValueTooLarge
from prism.kv.store import Store
from prism.model import Delete, Put
from prism.testing.conformance import ConformanceSuite
from prism.testing.servers import free_port
from prism.testing.servers.dynamodb import (
    DUMMY_AWS_ENVIRONMENT,
    REGION,
    DynamoDBServer,
    ExternalDynamoDB,
    dynamodb_or_skip,
)

#: Short network settings for the failure tests: they must fail well inside these.
SHORT = {"operation_timeout": "2.0", "connect_timeout": "1.0", "max_retries": "3", "retry_cap": "0.1"}
#: Slack over operation_timeout allowed for a failure to surface (a loaded 2-core machine).
FAILURE_SLACK = 2.0


@pytest.fixture(scope="module")
def dynamodb() -> Iterator[DynamoDBServer | ExternalDynamoDB]:
    """PRISM_TEST_DYNAMODB_URL's server, or a local moto with fake credentials (never real ones)."""
    server = dynamodb_or_skip()
    with pytest.MonkeyPatch.context() as env:
        if isinstance(server, DynamoDBServer):
            for name, value in DUMMY_AWS_ENVIRONMENT.items():
                env.setenv(name, value)
        yield server
    server.close()


@pytest.fixture(scope="module")
def restartable(dynamodb: DynamoDBServer | ExternalDynamoDB) -> Iterator[DynamoDBServer]:
    """A second local server that can be stopped, paused and restarted with its data."""
    if not isinstance(dynamodb, DynamoDBServer):
        pytest.skip("the outage tests stop their server: unset PRISM_TEST_DYNAMODB_URL to run them on moto")
    server = dynamodb_or_skip(persistent=True)
    assert isinstance(server, DynamoDBServer)
    yield server
    server.close()


def _local(server: DynamoDBServer | ExternalDynamoDB) -> DynamoDBServer:
    if not isinstance(server, DynamoDBServer):
        pytest.skip("needs the local moto server (PRISM_TEST_DYNAMODB_URL points elsewhere)")
    return server


@pytest.fixture
async def raw(dynamodb: DynamoDBServer | ExternalDynamoDB) -> AsyncIterator[Any]:
    """The raw driver on the same server, to look at and plant items as DynamoDB holds them."""
    server = _local(dynamodb)
    async with AioSession().create_client(
        "dynamodb", region_name=REGION, endpoint_url=server.endpoint
    ) as client:
        yield client


class TestConformance(ConformanceSuite):
    # Every call to the emulator costs milliseconds: fewer random programs, same rules.
    stateful_examples = 15

    @pytest.fixture
    def store_url(self, dynamodb: DynamoDBServer | ExternalDynamoDB) -> str:
        return dynamodb.url


class TestConformanceWithoutScanIndex(ConformanceSuite):
    """``scan_index=false``: every contract but scans (``prefix_scan`` is False), on the shared table."""

    stateful_examples = 10

    @pytest.fixture
    def store_url(self, dynamodb: DynamoDBServer | ExternalDynamoDB) -> str:
        return dynamodb.url + ("&" if "?" in dynamodb.url else "?") + "scan_index=false"


# -- options ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "options", "message"),
    [
        ("dynamodb://prism?region=us-east-1&colour=blue", {}, "colour"),
        ("dynamodb://prism", {"regoin": "us-east-1"}, "regoin"),
        ("dynamodb://AKIA:secret@prism", {}, "credentials"),
        ("dynamodb://ab", {}, "table names"),
        ("dynamodb://prism/extra", {}, "no path"),
        ("dynamodb://prism?create_table=maybe", {}, "create_table"),
        ("dynamodb://prism?operation_timeout=soon", {}, "operation_timeout"),
        ("dynamodb://prism?max_connections=0", {}, "max_connections"),
        ("dynamodb://prism?endpoint=ftp://host", {}, "endpoint"),
        ("dynamodb://prism?blind_batch_puts=sometimes", {}, "blind_batch_puts"),
        ("dynamodb://prism", {"scan_index": "rarely"}, "scan_index"),
    ],
)
def test_bad_urls_and_options_are_refused(url: str, options: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message) as caught:
        prism.connect(url, **options)
    assert "secret" not in str(caught.value)


async def test_missing_table_without_create_table(dynamodb: DynamoDBServer | ExternalDynamoDB) -> None:
    server = _local(dynamodb)
    url = f"dynamodb://prism-absent-{uuid.uuid4().hex[:8]}?region={REGION}&endpoint={server.endpoint}"
    with pytest.raises(BackendUnavailable, match="create_table=true"):
        await prism.connect(url).open()


# -- outages ----------------------------------------------------------------------


async def _fails_fast(call: Any, limit: float) -> None:
    started = time.monotonic()
    with pytest.raises(BackendUnavailable):
        await call()
    assert time.monotonic() - started < limit, "the call hung instead of failing within its timeout"


async def test_outage_and_recovery(restartable: DynamoDBServer) -> None:
    limit = float(SHORT["operation_timeout"]) + FAILURE_SLACK
    async with prism.connect(restartable.url_for(**SHORT)) as store:
        ns = store.namespace("outage")
        etag = await ns.put("kept", b"before the outage")
        restartable.stop()
        try:
            await _fails_fast(lambda: ns.get("kept"), limit)
            await _fails_fast(lambda: ns.put("new", b"v"), limit)
            await _fails_fast(lambda: ns.get_many(["kept", "new"]), limit)
            await _fails_fast(lambda: ns.put_many([Put("a", b"1"), Put("b", b"2")]), limit)
            await _fails_fast(lambda: ns.scan(), limit)
            await _fails_fast(lambda: ns.transact([Put("a", b"1"), Delete("b")]), limit)
            health = await store.health()
            assert health["status"] == "DOWN" and "DynamoDB" in health["details"]["error"]
        finally:
            restartable.start()
        item = await ns.get("kept", consistency="strong")
        assert item is not None and (item.value, item.etag) == (b"before the outage", etag)
        await ns.put("new", b"after the outage")
        assert (await store.health())["status"] == "UP"
        assert (await ns.scan()).keys == ["kept", "new"]


async def test_hung_server_times_out(restartable: DynamoDBServer) -> None:
    limit = float(SHORT["operation_timeout"]) + FAILURE_SLACK
    async with prism.connect(restartable.url_for(**SHORT)) as store:
        ns = store.namespace("hang")
        await ns.put("k", b"v")
        restartable.pause()
        try:
            await _fails_fast(lambda: ns.get("k"), limit)
            await _fails_fast(lambda: ns.put("k", b"w"), limit)
        finally:
            restartable.resume()
        item = await ns.get("k", consistency="strong")
        assert item is not None and item.value in (b"v", b"w")


async def test_256_concurrent_tasks_share_one_store(dynamodb: DynamoDBServer | ExternalDynamoDB) -> None:
    async with prism.connect(dynamodb.url) as store:
        ns = store.namespace(f"busy-{uuid.uuid4().hex[:8]}")

        async def task(n: int) -> bytes | None:
            await ns.put(f"k{n}", str(n).encode())
            item = await ns.get(f"k{n}")
            return None if item is None else item.value

        values = await asyncio.gather(*(task(n) for n in range(256)))
        assert values == [str(n).encode() for n in range(256)]
        got = await ns.get_many([f"k{n}" for n in range(256)])
        assert [i.value if i else None for i in got] == values


# -- throttling and unprocessed batch items, through a fault-injecting proxy ---------


class FaultProxy:
    """An HTTP proxy in front of moto that throttles chosen calls or leaves batch entries unprocessed."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.port = free_port()
        self.throttled: dict[str, int] = {}
        #: BatchGetItem/BatchWriteItem -> how many entries of each request moto gets to process.
        self.batch_limits: dict[str, int] = {}
        self.requests: list[str] = []
        #: (operation, request body) of every request, for counting what a call costs.
        self.bodies: list[tuple[str, dict[str, Any]]] = []
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

    async def _forward(self, request: web.Request, body: bytes) -> tuple[int, bytes]:
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
        async with self._session.post(self.upstream + request.path, headers=headers, data=body) as response:
            return response.status, await response.read()

    async def _handle(self, request: web.Request) -> web.Response:
        operation = request.headers.get("X-Amz-Target", "").rpartition(".")[2]
        self.requests.append(operation)
        body = await request.read()
        self.bodies.append((operation, json.loads(body) if body else {}))
        left = self.throttled.get(operation, 0)
        if left:
            self.throttled[operation] = left - 1
            error = {"__type": "com.amazonaws.dynamodb.v20120810#ThrottlingException", "message": "slow down"}
            return _json(400, error)
        if operation in self.batch_limits:
            return await self._trim_batch(request, operation, json.loads(body))
        status, answer = await self._forward(request, body)
        return web.Response(status=status, body=answer, content_type="application/x-amz-json-1.0")

    async def _trim_batch(self, request: web.Request, operation: str, doc: dict[str, Any]) -> web.Response:
        limit = self.batch_limits[operation]
        ((table, entries),) = doc["RequestItems"].items()
        listed = entries["Keys"] if operation == "BatchGetItem" else entries
        kept, rest = listed[:limit], listed[limit:]
        answer: dict[str, Any] = {"Responses": {table: []}, "UnprocessedItems": {}, "UnprocessedKeys": {}}
        if kept:
            sent = {**entries, "Keys": kept} if operation == "BatchGetItem" else kept
            status, raw = await self._forward(request, json.dumps({"RequestItems": {table: sent}}).encode())
            if status != 200:
                return web.Response(status=status, body=raw, content_type="application/x-amz-json-1.0")
            answer.update(json.loads(raw))
        if rest and operation == "BatchGetItem":
            answer["UnprocessedKeys"] = {table: {**entries, "Keys": rest}}
        elif rest:
            answer["UnprocessedItems"] = {table: rest}
        return _json(200, answer)


def _json(status: int, doc: dict[str, Any]) -> web.Response:
    return web.Response(
        status=status, body=json.dumps(doc).encode(), content_type="application/x-amz-json-1.0"
    )


@pytest.fixture
async def proxy(dynamodb: DynamoDBServer | ExternalDynamoDB) -> AsyncIterator[FaultProxy]:
    server = _local(dynamodb)
    fault = FaultProxy(server.endpoint)
    await fault.start()
    yield fault
    await fault.close()


def _through(proxy: FaultProxy, **options: str) -> str:
    return f"dynamodb://prism-test?region={REGION}&endpoint={proxy.endpoint}&create_table=true&" + "&".join(
        f"{k}={v}" for k, v in options.items()
    )


async def test_throttling_is_retried_then_reported(proxy: FaultProxy) -> None:
    async with prism.connect(_through(proxy, **SHORT)) as store:
        ns = store.namespace(f"throttle-{uuid.uuid4().hex[:8]}")
        proxy.throttled = {"PutItem": 2, "GetItem": 2, "BatchGetItem": 2}
        etag = await ns.put("k", b"v")
        item = await ns.get("k")
        assert item is not None and item.etag == etag
        assert [i.value if i else None for i in await ns.get_many(["k", "missing"])] == [b"v", None]
        assert proxy.requests.count("PutItem") == 3 and proxy.requests.count("GetItem") == 3
        proxy.throttled = {"GetItem": 1000}
        started = time.monotonic()
        with pytest.raises(BackendUnavailable, match="ThrottlingException"):
            await ns.get("k")
        assert time.monotonic() - started < float(SHORT["operation_timeout"]) + FAILURE_SLACK


async def test_blind_batch_puts_skip_the_read_of_what_they_replace(proxy: FaultProxy) -> None:
    async with prism.connect(_through(proxy, blind_batch_puts="true")) as store:
        assert store.max_value_bytes == INLINE_VALUE_BYTES, "a blind store never writes chunked values"
        ns = store.namespace(f"blind-{uuid.uuid4().hex[:8]}")
        await ns.put_many([Put("a", b"1"), Put("b", b"2")])
        proxy.requests.clear()
        results = await ns.put_many([Put("a", b"x"), Put("b", b"y"), Put("c", b"z")])
        assert [(r.ok, r.existed) for r in results] == [(True, False)] * 3, "existed is not looked up"
        assert proxy.requests == ["BatchWriteItem"]
        assert [i.value if i else None for i in await ns.get_many(["a", "b", "c"])] == [b"x", b"y", b"z"]
        assert (await ns.put_result(Put("a", b"again"))).existed, "a single put still tells"
        deleted = await ns.delete_many(["a", "never-there"])
        assert [r.existed for r in deleted] == [True, False], "deletes still read first"
        with pytest.raises(ValueTooLarge):
            await ns.put_many([Put("big", b"x" * (INLINE_VALUE_BYTES + 1)), Put("d", b"1")])
    async with prism.connect(_through(proxy)) as store:
        ns = store.namespace(f"reads-{uuid.uuid4().hex[:8]}")
        proxy.requests.clear()
        await ns.put_many([Put("a", b"1"), Put("b", b"2")])
        assert proxy.requests == ["BatchGetItem", "BatchWriteItem"]


def _write_units(item: dict[str, Any]) -> int:
    """A written item's units by DynamoDB's sizing rules: ceil(bytes / 1 KB), names plus values."""
    size = 0
    for name, typed in item.items():
        ((kind, value),) = typed.items()
        size += len(name.encode())
        if kind == "B":
            size += len(base64.b64decode(value))
        elif kind == "S":
            size += len(value.encode())
        else:
            size += (len(value.lstrip("-").replace(".", "").strip("0") or "0") + 1) // 2 + 1
    return -(-size // 1024)


def _units(bodies: list[tuple[str, dict[str, Any]]]) -> tuple[int, int, int]:
    """(read requests, items written, table write units) of the requests the proxy saw."""
    reads = sum(1 for op, _ in bodies if op in ("GetItem", "BatchGetItem", "Query", "Scan"))
    items: list[dict[str, Any]] = []
    for op, body in bodies:
        if op == "PutItem":
            items.append(body["Item"])
        elif op == "BatchWriteItem":
            ((_, entries),) = body["RequestItems"].items()
            items.extend(e["PutRequest"]["Item"] for e in entries)
    return reads, len(items), sum(_write_units(i) for i in items)


async def test_put_many_without_existed_reads_nothing(proxy: FaultProxy) -> None:
    async with prism.connect(_through(proxy)) as store:
        ns = store.namespace(f"noread-{uuid.uuid4().hex[:8]}")
        keys = [f"k{i:03d}" for i in range(60)]
        await ns.put_many([Put(k, b"old" * 50) for k in keys[:30]])
        proxy.bodies.clear()
        asked = await ns.put_many([Put(k, b"v" * 100) for k in keys])
        assert [r.existed for r in asked] == [True] * 30 + [False] * 30
        reads_asked, items_asked, units_asked = _units(proxy.bodies)
        assert reads_asked >= 1 and items_asked == 60
        proxy.bodies.clear()
        blind = await ns.put_many([Put(k, b"w" * 100) for k in keys], existed=False)
        assert all(r.ok and r.existed is None for r in blind)
        reads, items, units = _units(proxy.bodies)
        assert reads == 0, f"{reads} read request(s) for a put_many that did not ask existed"
        assert (items, units) == (items_asked, units_asked), "the same items, the same write units"
        got = await ns.get_many(keys)
        assert [i.value if i else None for i in got] == [b"w" * 100] * 60
        assert [i.etag if i else None for i in got] == [r.etag for r in blind]


async def test_blind_puts_over_large_values_leave_no_chunks(own_table: tuple[Store, str], raw: Any) -> None:
    store, table = own_table
    ns = store.namespace("blind-big")
    large = b"\x05" * (INLINE_VALUE_BYTES + 1)  # two chunks
    await ns.put_many([Put(f"k{i}", large) for i in range(5)])
    assert await _chunk_items(raw, table) == 10
    results = await ns.put_many([Put(f"k{i}", b"small") for i in range(5)], existed=False)
    assert all(r.ok for r in results)
    assert await _chunk_items(raw, table) == 0, "a blind put left the chunks of the value it replaced"
    await ns.put_many([Put("k0", large), Put("k1", large)], existed=False)
    await ns.put_many([Put("k0", large[:-1] + b"\x06"), Put("k1", b"s"), Put("k2", b"s")], existed=False)
    assert await _chunk_items(raw, table) == 2
    got = await ns.get_many(["k0", "k1", "k2", "k3"])
    assert [i.value if i else None for i in got] == [large[:-1] + b"\x06", b"s", b"s", b"small"]


async def test_concurrent_blind_puts_of_large_and_small_values_leave_no_chunks(
    own_table: tuple[Store, str], raw: Any
) -> None:
    store, table = own_table
    ns = store.namespace("blind-race")
    large = b"\x09" * (INLINE_VALUE_BYTES + 1)  # two chunks
    keys = [f"k{i}" for i in range(4)]

    async def writer(n: int) -> None:
        for round_no in range(6):
            value = large if (n + round_no) % 2 else b"small"
            results = await ns.put_many([Put(k, value) for k in keys], existed=False)
            assert all(r.ok for r in results)

    await asyncio.gather(*(writer(n) for n in range(4)))
    got = await ns.get_many(keys, consistency="strong")
    assert all(i is not None and i.value in (large, b"small") for i in got)
    chunked = sum(1 for i in got if i is not None and i.value == large)
    assert await _chunk_items(raw, table) == 2 * chunked, "chunks left by racing blind puts"


async def test_without_the_scan_index_items_stay_out_of_it_and_scan_is_refused(
    dynamodb: DynamoDBServer | ExternalDynamoDB, raw: Any
) -> None:
    server = _local(dynamodb)
    table = f"prism-noindex-{uuid.uuid4().hex[:8]}"
    async with prism.connect(server.url_for(table=table, scan_index="false")) as store:
        assert not store.capabilities.prefix_scan
        ns = store.namespace("plain")
        large = b"\x03" * (INLINE_VALUE_BYTES + 1)
        await ns.put("one", b"1", ttl=3600)
        await ns.put_many([Put("two", b"2"), Put("three", b"3"), Put("big", large)])
        await ns.put_many([Put("four", b"4"), Put("five", b"5")], existed=False)
        await ns.transact([Put("six", b"6"), Delete("five")])
        await ns.put_items("rec", [Put("a", b"x"), Put("b", b"y")])
        got = await ns.get_many(["one", "two", "three", "big", "four", "five", "six"])
        assert [i.value if i else None for i in got] == [b"1", b"2", b"3", large, b"4", None, b"6"]
        assert [i.key for i in (await ns.get_items("rec")).items] == ["a", "b"]
        with pytest.raises(Unsupported, match="scan_index=false"):
            await ns.scan()
        with pytest.raises(Unsupported, match="scan_index=false"):
            await store.backend.scan("plain", "", None, 10)
    items = (await raw.scan(TableName=table))["Items"]
    assert items and all("ns" not in i and "rid" not in i for i in items), "an item carries index keys"
    indexed = await raw.scan(TableName=table, IndexName="prism_records")
    assert indexed["Items"] == [], "the prism_records index holds entries"


async def test_unprocessed_batch_entries_are_resent(proxy: FaultProxy) -> None:
    async with prism.connect(_through(proxy)) as store:
        ns = store.namespace(f"unprocessed-{uuid.uuid4().hex[:8]}")
        proxy.batch_limits = {"BatchGetItem": 7, "BatchWriteItem": 7}
        keys = [f"k{i:02d}" for i in range(60)]
        results = await ns.put_many([Put(k, k.encode()) for k in keys])
        assert all(r.ok and not r.existed for r in results)
        got = await ns.get_many(keys)
        assert [i.value if i else None for i in got] == [k.encode() for k in keys]
        deleted = await ns.delete_many(keys[:30])
        assert all(r.ok and r.existed for r in deleted)
        proxy.batch_limits = {}
        assert [i is None for i in await ns.get_many(keys)] == [True] * 30 + [False] * 30


async def test_unprocessed_entries_past_the_deadline_are_reported_per_key(proxy: FaultProxy) -> None:
    async with prism.connect(_through(proxy, **SHORT)) as store:
        ns = store.namespace(f"dropped-{uuid.uuid4().hex[:8]}")
        await ns.put("cond", b"0")
        proxy.batch_limits = {"BatchWriteItem": 0}
        results = await ns.put_many([Put("a", b"1"), Put("b", b"2"), Put("cond", b"1", if_absent=True)])
        assert [r.ok for r in results] == [False, False, False]
        assert all(isinstance(r.error, BackendUnavailable) for r in results[:2])
        assert isinstance(results[2].error, PreconditionFailed)
        proxy.batch_limits = {}
        assert await ns.get_many(["a", "b"]) == [None, None]


# -- engine specifics ----------------------------------------------------------------


async def _chunk_items(raw: Any, table: str) -> int:
    count = 0
    paginator = raw.get_paginator("scan")
    async for page in paginator.paginate(TableName=table, ProjectionExpression="pk"):
        count += sum(1 for item in page["Items"] if item["pk"]["S"].startswith("#"))
    return count


@pytest.fixture
async def own_table(dynamodb: DynamoDBServer | ExternalDynamoDB) -> AsyncIterator[tuple[Store, str]]:
    """A store on a table of its own, so that counting chunk items is exact."""
    server = _local(dynamodb)
    table = f"prism-own-{uuid.uuid4().hex[:8]}"
    async with prism.connect(server.url_for(table=table)) as store:
        yield store, table


async def test_create_table_makes_the_index_and_enables_ttl(
    own_table: tuple[Store, str], raw: Any, dynamodb: DynamoDBServer | ExternalDynamoDB
) -> None:
    store, table = own_table
    ttl = (await raw.describe_time_to_live(TableName=table))["TimeToLiveDescription"]
    assert ttl["TimeToLiveStatus"] in ("ENABLED", "ENABLING") and ttl["AttributeName"] == "t"
    indexes = (await raw.describe_table(TableName=table))["Table"]["GlobalSecondaryIndexes"]
    assert [i["IndexName"] for i in indexes] == ["prism_records"]
    ns = store.namespace("ttl")
    await ns.put("k", b"v", ttl=90.25)
    (stored,) = (await raw.scan(TableName=table))["Items"]
    assert int(stored["t"]["N"]) == math.ceil(float(stored["x"]["N"])), "DynamoDB's TTL reads whole seconds"
    async with prism.connect(_local(dynamodb).url_for(table=table, create_table="false")) as again:
        assert (item := await again.namespace("ttl").get("k")) is not None and item.value == b"v"


async def test_large_values_are_chunked_and_stale_chunks_removed(
    own_table: tuple[Store, str], raw: Any
) -> None:
    store, table = own_table
    ns = store.namespace("big")
    first = bytes(range(256)) * 5000  # 1.28 MB: 4 chunks
    second = b"\x07" * (INLINE_VALUE_BYTES + 1)  # just over the inline limit: 2 chunks
    await ns.put("k", first)
    assert await _chunk_items(raw, table) == 4
    assert (item := await ns.get("k")) is not None and item.value == first
    await ns.put("k", second)
    assert await _chunk_items(raw, table) == 2, "the replaced version's chunks were left behind"
    assert (item := await ns.get("k")) is not None and item.value == second
    with pytest.raises(PreconditionFailed):
        await ns.put("k", first, if_match="not-the-etag")
    assert await _chunk_items(raw, table) == 2, "a failed conditional write left its chunks"
    await ns.put_many([Put("k", b"small"), Put("other", first)])
    assert await _chunk_items(raw, table) == 4
    assert [i.value if i else None for i in await ns.get_many(["k", "other"])] == [b"small", first]
    await ns.transact([Put("t", first), Delete("other")])
    assert await _chunk_items(raw, table) == 4
    assert await ns.delete("t") and await _chunk_items(raw, table) == 0
    await ns.put_items("rec", [Put("a", first), Put("b", b"x")])
    assert [i.value for i in (await ns.get_items("rec")).items] == [first, b"x"]
    assert await ns.delete_items("rec") == 2 and await _chunk_items(raw, table) == 0


async def test_readers_never_see_a_mixed_large_value(dynamodb: DynamoDBServer | ExternalDynamoDB) -> None:
    size = INLINE_VALUE_BYTES + 1000  # two chunks
    versions = {bytes([n]) * size for n in range(4)}
    async with prism.connect(dynamodb.url) as store:
        ns = store.namespace(f"mixed-{uuid.uuid4().hex[:8]}")
        await ns.put("k", bytes([0]) * size)
        stop = asyncio.Event()

        async def writer() -> None:
            for n in range(1, 13):
                await ns.put("k", bytes([n % 4]) * size)
            stop.set()

        async def reader() -> int:
            reads = 0
            while not stop.is_set():
                item = await ns.get("k")
                assert item is not None and item.value in versions, "a partial or mixed value"
                reads += 1
            return reads

        results = await asyncio.gather(writer(), *(reader() for _ in range(4)))
        assert sum(r for r in results if r) > 0


async def test_transactions_limits_and_collapsing(dynamodb: DynamoDBServer | ExternalDynamoDB) -> None:
    # Megabytes through the single-threaded emulator on a busy machine take longer than the default 5 s.
    async with prism.connect(dynamodb.url, operation_timeout=30) as store:
        assert store.capabilities.max_transaction_ops == 100
        ns = store.namespace(f"tx-{uuid.uuid4().hex[:8]}")
        with pytest.raises(InvalidArgument, match="100"):
            await ns.transact([Put(f"k{i}", b"v") for i in range(101)])
        results = await ns.transact([Put(f"k{i}", b"v") for i in range(100)])
        assert len(results) == 100 and all(r.ok for r in results)
        collapsed = await ns.transact(
            [Put("c", b"1"), Delete("c"), Put("c", b"3", if_absent=True), Put("d", b"4")]
        )
        assert [r.existed for r in collapsed] == [False, True, False, False]
        assert [i.value if i else None for i in await ns.get_many(["c", "d"])] == [b"3", b"4"]
        with pytest.raises(PreconditionFailed) as failed:
            await ns.transact([Put("e", b"1"), Put("e", b"2", if_absent=True)])
        assert failed.value.key == "e" and await ns.get("e") is None
        # More value bytes than one TransactWriteItems request carries: moved to chunks first.
        big = [Put(f"big{i}", bytes([i]) * 300_000) for i in range(6)]
        assert all(r.ok for r in await ns.transact(big))
        got = await ns.get_many([p.key for p in big])
        assert [i.value if i else None for i in got] == [p.value for p in big]


async def test_expired_items_dynamodb_has_not_deleted_are_invisible(
    dynamodb: DynamoDBServer | ExternalDynamoDB, raw: Any
) -> None:
    """DynamoDB's TTL deletes up to days late: an item past its ``x`` must already be gone for Prism."""
    async with prism.connect(dynamodb.url) as store:
        ns = store.namespace(f"late-{uuid.uuid4().hex[:8]}")
        await ns.put("live", b"v")
        past = repr(time.time() - 60)
        for record, key in (("stale", ""), ("rec", "old")):
            item = {
                **key_of(ns.name, record, key),
                "ns": {"S": ns.name},
                "rid": {"S": record},
                "e": {"S": "planted"},
                "u": {"N": past},
                "x": {"N": past},
                "v": {"B": b"expired"},
            }
            await raw.put_item(TableName=_local(dynamodb).table, Item=item)
        assert await ns.get("stale") is None and not await ns.exists("stale")
        assert await ns.get_many(["stale", "live"]) == [None, await ns.get("live")]
        assert (await ns.get_items("rec")).items == [] and (
            await ns.get_items("rec", keys=["old"])
        ).items == []
        assert (await ns.scan()).keys == ["live"]
        with pytest.raises(PreconditionFailed):
            await ns.put("stale", b"v", if_match="planted")
        assert await ns.delete("stale") is False
        await ns.put_items("rec", [Put("old", b"new", if_absent=True)])
        assert [i.value for i in (await ns.get_items("rec")).items] == [b"new"]
