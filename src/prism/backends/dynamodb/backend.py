"""The DynamoDB backend: Prism's KeyValue contract over one table, with aiobotocore."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Any, ClassVar

from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession
from botocore.exceptions import BotoCoreError, ClientError, NoRegionError, ProfileNotFound

from prism.backends._feed import feed_capabilities
from prism.backends.base import Backend
from prism.backends.dynamodb import chunks
from prism.backends.dynamodb.calls import Calls, ConditionFailed, TransactionCancelled
from prism.backends.dynamodb.feed import StreamFeed
from prism.backends.dynamodb.layout import (
    CHUNK_VERSION,
    ETAG,
    EXPIRES,
    INDEX_NAME,
    INLINE_VALUE_BYTES,
    PK,
    RID,
    SK,
    VALUE,
    Attrs,
    chunk_count,
    chunk_ref,
    condition,
    is_live,
    item_attributes,
    item_key,
    key_of,
    make_item,
    new_version,
    partition_key,
    sort_key,
)
from prism.backends.dynamodb.options import DynamoDBOptions
from prism.backends.dynamodb.table import ensure_table
from prism.backends.dynamodb.transaction import (
    chunked_in_transaction,
    pinned_action,
    simulate,
)
from prism.backends.urls import mask_url
from prism.errors import BackendUnavailable, InvalidArgument, InvalidKey, PrismError, Unsupported
from prism.model import Capabilities, Change, Item, StoredWrite, WriteOutcome, condition_failed

__all__ = ["DynamoDBBackend"]

#: Unconditional writes in one batch up to which each is sent on its own (PutItem or
#: DeleteItem returning the old item) rather than as a read followed by BatchWriteItem.
SINGLE_WRITES_MAX = 1
#: What a batched write needs to know about the item it replaces (whether it is live,
#: and whether it is chunked, in which case the write goes alone and gets the old item).
_BATCH_OLD_STATE = "pk, sk, x, cv"
#: What deleting an item needs: liveness for the count, and its chunks if any.
_OLD_STATE = "pk, sk, x, cv, cn"
_TRANSACTION_STATE = "pk, sk, x, e, cv, cn"
#: Items asked for per Query page of a scan (DynamoDB's page limit is 1 MB anyway).
SCAN_PAGE_ITEMS = 500
MAX_QUERY_PAGE = 1000

Address = tuple[str, str]

#: botocore's model loader, shared by every store's session: it only reads and caches
#: the service's JSON definitions, which makes opening a store ~10x cheaper.
_shared_loader: Any = None


def _session(profile: str | None) -> AioSession:
    """A fresh session (credentials are resolved per store) that reuses the loaded models."""
    global _shared_loader
    session = AioSession(profile=profile)
    if _shared_loader is None:
        _shared_loader = session.get_component("data_loader")
    else:
        session.register_component("data_loader", _shared_loader)
    return session


def _address(key: Attrs) -> Address:
    return key[PK]["S"], key[SK]["S"]


def _read_key(ns: str, record: str, key: str) -> Attrs | None:
    """The primary key to read, or None when no item can live there (key too long)."""
    try:
        return key_of(ns, record, key)
    except InvalidKey:
        return None


class DynamoDBBackend(Backend):
    name = "dynamodb"
    capabilities = Capabilities(max_transaction_ops=100, timeseries=True, watch=True)
    runs_inline: ClassVar[bool] = False
    timeseries_driver = "prism.backends.dynamodb.timeseries:DynamoDBTimeSeries"
    feed_opt_in: ClassVar[bool] = True
    feed_count_window: ClassVar[bool] = False

    def __init__(self, options: DynamoDBOptions) -> None:
        self.options = options
        self._table = options.table
        #: Whether the store reads the table's stream as its change feed (``feed=true``).
        self.feed = options.feed
        self.feed_retention = options.feed_retention
        self.capabilities = feed_capabilities(type(self).capabilities, options.feed)
        self._feed: StreamFeed | None = None
        self._streams: Any = None
        if options.blind_batch_puts:
            # No value of this store is ever chunked, so a blind put never replaces chunks
            # it would have to clean up (nor does any store on the table that also sets it).
            self.capabilities = replace(self.capabilities, max_value_bytes=INLINE_VALUE_BYTES)
        if not options.scan_index:
            # Items leave out the keys of the prism_records index, which alone serves scan.
            self.capabilities = replace(self.capabilities, prefix_scan=False)
            self.scan_unsupported = (
                "this dynamodb store lists no keys: it was opened with scan_index=false, so its "
                "items are not in the prism_records index"
            )
        self._stack: contextlib.AsyncExitStack | None = None
        self._calls_or_none: Calls | None = None

    @classmethod
    def from_url(cls, url: str, **options: Any) -> DynamoDBBackend:
        return cls(DynamoDBOptions.parse(url, options))

    @property
    def _calls(self) -> Calls:
        calls = self._calls_or_none
        if calls is None:
            raise BackendUnavailable("the DynamoDB backend is not open")
        return calls

    # -- lifecycle ----------------------------------------------------------------

    @property
    def calls(self) -> Calls:
        """The store's one client and its retrying requests (its queue runs on them too)."""
        return self._calls

    async def open(self) -> None:
        """Create the store's one client (pool sized by ``max_connections``) and check the table."""
        opts = self.options
        stream: list[str | None] = []

        async def prepare(calls: Calls) -> None:
            stream.append(
                await ensure_table(
                    calls, create=opts.create_table, ready_timeout=opts.table_ready_timeout, feed=opts.feed
                )
            )

        await self.open_client(prepare, streams=opts.feed)
        arn = stream[0] if stream else None
        if arn is not None and self._streams is not None:
            self._feed = StreamFeed(Calls(self._streams, self._table, opts.network), arn, opts.feed_retention)
        elif opts.feed:
            # A table without a stream the feed can read, and no create_table to turn one on.
            self.capabilities = replace(self.capabilities, watch=False, watch_expiry=False)

    async def open_client(
        self, prepare: Callable[[Calls], Awaitable[None]] | None = None, *, streams: bool = False
    ) -> None:
        """Create the client only, then run ``prepare`` on it (the queue needs no KV table).

        With ``streams``, the DynamoDB Streams client of the change feed too, in the same lifetime.
        """
        opts = self.options
        net = opts.network
        config = AioConfig(
            connect_timeout=net.connect_timeout,
            read_timeout=net.operation_timeout,
            max_pool_connections=opts.max_connections,
            # Prism retries (call_with_retry) inside the operation deadline; botocore must not as well.
            retries={"total_max_attempts": 1},
        )
        stack = contextlib.AsyncExitStack()
        try:
            session = _session(opts.profile)
            client = await stack.enter_async_context(
                session.create_client(
                    "dynamodb", region_name=opts.region, endpoint_url=opts.endpoint, config=config
                )
            )
            calls = Calls(client, self._table, net)
            if streams:
                self._streams = await stack.enter_async_context(
                    session.create_client(
                        "dynamodbstreams", region_name=opts.region, endpoint_url=opts.endpoint, config=config
                    )
                )
            if prepare is not None:
                await prepare(calls)
        except BaseException as exc:
            await stack.aclose()
            if isinstance(exc, NoRegionError):
                raise InvalidArgument(
                    "no AWS region for dynamodb://: pass ?region=... or set AWS_DEFAULT_REGION"
                ) from exc
            if isinstance(exc, ProfileNotFound):
                raise InvalidArgument(f"AWS profile {opts.profile!r} is not configured") from exc
            if isinstance(exc, BotoCoreError | ClientError):
                raise BackendUnavailable(
                    f"could not open DynamoDB: {type(exc).__name__}: {exc}", cause=exc
                ) from exc
            raise
        self._stack = stack
        self._calls_or_none = calls

    async def close(self) -> None:
        """Close the client and its connection pool; safe to call twice."""
        stack, self._stack = self._stack, None
        self._calls_or_none = None
        self._feed = self._streams = None
        if stack is not None:
            await stack.aclose()

    async def health(self) -> dict[str, Any]:
        """DescribeTable: the table's status and size estimate, and the round trip's latency."""
        calls = self._calls
        started = time.perf_counter()
        table = (await calls.call("describe_table", {"TableName": self._table}))["Table"]
        return {
            "table": self._table,
            "table_status": table.get("TableStatus"),
            "item_count": table.get("ItemCount"),
            "region": calls.client.meta.region_name,
            "endpoint": mask_url(calls.client.meta.endpoint_url),
            "latency_ms": round((time.perf_counter() - started) * 1000, 3),
        }

    # -- change feed --------------------------------------------------------------

    def _stream_feed(self) -> StreamFeed:
        feed = self._feed
        if feed is None:
            raise Unsupported("this dynamodb store reads no change feed: its table has no stream")
        return feed

    async def read_changes(
        self, ns: str, prefix: str, after: str | None, limit: int
    ) -> tuple[list[Change], str]:
        """The changes of ``ns`` from the table's stream (``prism.backends.dynamodb.feed``)."""
        feed = self._stream_feed()
        if after is None:
            return [], await feed.start()
        return await feed.read(ns, prefix, after, limit)

    async def wait_for_changes(self, ns: str, seconds: float, after: str | None = None) -> None:
        """Sleep ``seconds``, and at least ``feed_poll_interval`` (GetRecords is rate-limited per shard)."""
        await asyncio.sleep(max(seconds, self.options.feed_poll_interval))

    # -- reads --------------------------------------------------------------------

    async def get(self, ns: str, record: str, key: str, *, consistent: bool = False) -> Item | None:
        """GetItem (ConsistentRead when ``consistent``), then the chunks of a large value."""
        calls = self._calls
        address = _read_key(ns, record, key)
        if address is None:
            return None
        response = await calls.call(
            "get_item", {"TableName": self._table, "Key": address, "ConsistentRead": consistent}
        )
        attrs = response.get("Item")
        if attrs is None or not is_live(attrs, time.time()):
            return None
        inline = attrs.get(VALUE)
        if inline is not None:
            return make_item(key, attrs, inline["B"])
        (loaded,) = await chunks.read_values(calls, [attrs], calls.deadline())
        return None if loaded is None else make_item(key, *loaded)

    async def get_many(
        self, ns: str, addresses: Sequence[tuple[str, str]], *, consistent: bool = False
    ) -> list[Item | None]:
        """BatchGetItem of the distinct addresses, in groups of 100, then any chunks in one more batch."""
        calls = self._calls
        keys = [_read_key(ns, record, key) for record, key in addresses]
        wanted = {_address(k): k for k in keys if k is not None}
        if not wanted:
            return [None] * len(addresses)
        deadline = calls.deadline()
        found = await calls.batch_get(list(wanted.values()), consistent=consistent, deadline=deadline)
        now = time.time()
        values: dict[Address, tuple[Attrs, bytes] | None] = {}
        chunked: list[Attrs] = []
        for address, attrs in found.items():
            if not is_live(attrs, now):
                continue
            inline = attrs.get(VALUE)
            if inline is not None:
                values[address] = (attrs, inline["B"])
            else:
                chunked.append(attrs)
        if chunked:
            loaded = await chunks.read_values(calls, chunked, deadline)
            for attrs, pair in zip(chunked, loaded, strict=True):
                values[_address(attrs)] = pair
        out: list[Item | None] = []
        for (_, key), read_key in zip(addresses, keys, strict=True):
            pair = None if read_key is None else values.get(_address(read_key))
            out.append(None if pair is None else make_item(key, *pair))
        return out

    async def get_range(
        self,
        ns: str,
        record: str,
        start: str | None,
        end: str | None,
        after: str | None,
        limit: int,
        *,
        consistent: bool = False,
    ) -> list[Item]:
        """A Query of the record's partition between the sort keys of the bounds, skipping expired items."""
        calls = self._calls
        deadline = calls.deadline()
        found = await self._query_record(ns, record, start, end, after, limit, consistent, None, deadline)
        loaded = await chunks.read_values(calls, found, deadline)
        return [make_item(item_key(attrs[SK]["S"]), attrs, value) for attrs, value in filter(None, loaded)]

    async def _query_record(
        self,
        ns: str,
        record: str,
        start: str | None,
        end: str | None,
        after: str | None,
        limit: int | None,
        consistent: bool,
        projection: str | None,
        deadline: float,
        *,
        include_expired: bool = False,
    ) -> list[Attrs]:
        """Live items of one record with start <= key < end and key > after, in key order."""
        try:
            pk = partition_key(ns, record)
        except InvalidKey:
            return []
        lower, exclusive = start, False
        if after is not None and (lower is None or after >= lower):
            lower, exclusive = after, True
        if lower == "" and not exclusive:
            lower = None
        if lower is not None and end is not None and lower >= end:
            return []
        values: dict[str, Any] = {":pk": {"S": pk}}
        lower_sk = None if lower is None else sort_key(lower)
        upper_sk = None if end is None else sort_key(end)
        expression = "pk = :pk"
        if lower_sk is not None and upper_sk is not None:
            expression += " AND sk BETWEEN :lo AND :hi"
            values[":lo"], values[":hi"] = {"S": lower_sk}, {"S": upper_sk}
        elif lower_sk is not None:
            expression += " AND sk > :lo" if exclusive else " AND sk >= :lo"
            values[":lo"] = {"S": lower_sk}
        elif upper_sk is not None:
            expression += " AND sk < :hi"
            values[":hi"] = {"S": upper_sk}
        params: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": expression,
            "ExpressionAttributeValues": values,
            "ConsistentRead": consistent,
        }
        if projection is not None:
            params["ProjectionExpression"] = projection
        out: list[Attrs] = []
        now = time.time()
        while limit is None or len(out) < limit:
            want = MAX_QUERY_PAGE if limit is None else min(MAX_QUERY_PAGE, limit - len(out) + 2)
            response = await self._calls.call("query", {**params, "Limit": want}, deadline)
            for attrs in response.get("Items", ()):
                sk = attrs[SK]["S"]
                if (exclusive and sk == lower_sk) or sk == upper_sk:
                    continue
                if not include_expired and not is_live(attrs, now):
                    continue
                out.append(attrs)
            last = response.get("LastEvaluatedKey")
            if not last:
                break
            params["ExclusiveStartKey"] = last
        return out if limit is None else out[:limit]

    async def scan(self, ns: str, prefix: str, after: str | None, limit: int) -> list[str]:
        """Record ids from the ``prism_records`` index, skipping each listed record's other items."""
        if not self.options.scan_index:
            raise Unsupported(self.scan_unsupported)
        calls = self._calls
        deadline = calls.deadline()
        lower = after if after is not None and after >= prefix else None
        out: list[str] = []
        start_key: Attrs | None = None
        now = time.time()
        while True:
            values: dict[str, Any] = {":ns": {"S": ns}}
            if lower is not None:
                expression = "ns = :ns AND rid > :after"
                values[":after"] = {"S": lower}
            elif prefix:
                expression = "ns = :ns AND begins_with(rid, :prefix)"
                values[":prefix"] = {"S": prefix}
            else:
                expression = "ns = :ns"
            params: dict[str, Any] = {
                "TableName": self._table,
                "IndexName": INDEX_NAME,
                "KeyConditionExpression": expression,
                "ExpressionAttributeValues": values,
                "ProjectionExpression": f"{RID}, {EXPIRES}",
                "Limit": min(MAX_QUERY_PAGE, max(SCAN_PAGE_ITEMS, limit)),
            }
            if start_key is not None:
                params["ExclusiveStartKey"] = start_key
            response = await calls.call("query", params, deadline)
            items = response.get("Items", ())
            for attrs in items:
                rid = attrs[RID]["S"]
                if not rid.startswith(prefix):
                    return out
                if (out and out[-1] == rid) or not is_live(attrs, now):
                    continue
                out.append(rid)
                if len(out) >= limit:
                    return out
            start_key = response.get("LastEvaluatedKey")
            if not start_key:
                return out
            if out and items and items[-1][RID]["S"] == out[-1]:
                # The rest of this record's items would only repeat it: restart past it.
                lower, start_key = out[-1], None

    # -- writes -------------------------------------------------------------------

    async def write(self, ns: str, ops: Sequence[StoredWrite]) -> list[WriteOutcome]:
        """Each op on its own: conditional and large writes one by one, the rest in BatchWriteItem.

        Blind puts (``StoredWrite.blind``) read nothing: each is a PutItem returning the
        old item, or with ``blind_batch_puts`` part of the BatchWriteItem. Ops on the
        same key run in order (one round per repeat). Raises only when every
        op failed for a reason other than its condition; otherwise errors are per op.
        """
        calls = self._calls
        now = time.time()
        keys = [key_of(ns, op.record, op.key) for op in ops]
        deadline = calls.deadline()
        if len(ops) == 1:
            return [await self._write_one(ns, ops[0], keys[0], now, deadline)]
        outcomes: list[WriteOutcome | None] = [None] * len(ops)
        blind_store = self.options.blind_batch_puts
        for wave in _waves([_address(k) for k in keys]):
            single = [i for i in wave if _needs_single_write(ops[i], blind_store)]
            plain = [i for i in wave if not _needs_single_write(ops[i], blind_store)]
            if len(plain) <= SINGLE_WRITES_MAX:
                single, plain = single + plain, []
            await asyncio.gather(
                *(self._write_one_into(ns, ops, keys, i, now, deadline, outcomes) for i in single),
                self._write_plain(ns, ops, keys, plain, now, deadline, outcomes),
            )
        done = [o for o in outcomes if o is not None]
        failures = [o.error for o in done if o.error is not None]
        if len(failures) == len(done):
            raise failures[0]
        return done

    async def _write_one_into(
        self,
        ns: str,
        ops: Sequence[StoredWrite],
        keys: list[Attrs],
        i: int,
        now: float,
        deadline: float,
        outcomes: list[WriteOutcome | None],
    ) -> None:
        try:
            outcomes[i] = await self._write_one(ns, ops[i], keys[i], now, deadline)
        except PrismError as exc:
            outcomes[i] = WriteOutcome(False, False, exc)

    async def _write_one(
        self, ns: str, op: StoredWrite, key: Attrs, now: float, deadline: float
    ) -> WriteOutcome:
        """One PutItem/DeleteItem returning the old item: exact ``existed`` and chunk clean-up."""
        calls = self._calls
        params: dict[str, Any] = {"TableName": self._table, "ReturnValues": "ALL_OLD"}
        condition(params, etag=op.if_match, absent=op.if_absent, now=now)
        if "ConditionExpression" in params:
            params["ReturnValuesOnConditionCheckFailure"] = "ALL_OLD"
        version = None
        if op.value is None:
            params["Key"] = key
            operation = "delete_item"
        else:
            operation = "put_item"
            if len(op.value) > INLINE_VALUE_BYTES:
                version = new_version()
                await chunks.write_chunks(calls, version, op.value, op.expires_at, deadline)
            params["Item"] = item_attributes(ns, op, key, version, indexed=self.options.scan_index)
        try:
            response = await calls.call(operation, params, deadline)
        except ConditionFailed as failed:
            if version is not None:
                await chunks.drop_chunks(calls, version, chunk_count(len(op.value or b"")))
            return _condition_outcome(op, failed.old, now)
        except InvalidArgument:
            if version is not None:
                await chunks.drop_chunks(calls, version, chunk_count(len(op.value or b"")))
            raise
        old = response.get("Attributes")
        await chunks.drop_replaced(calls, old)
        return WriteOutcome(True, old is not None and is_live(old, now))

    async def _write_plain(
        self,
        ns: str,
        ops: Sequence[StoredWrite],
        keys: list[Attrs],
        indexes: list[int],
        now: float,
        deadline: float,
        outcomes: list[WriteOutcome | None],
    ) -> None:
        """Unconditional small writes: one consistent read of their items, then BatchWriteItem.

        With ``blind_batch_puts`` the puts skip the read: they report existed=False.
        """
        if not indexes:
            return
        calls = self._calls
        blind = self.options.blind_batch_puts
        read = [i for i in indexes if ops[i].value is None] if blind else indexes
        try:
            old = (
                await calls.batch_get(
                    [keys[i] for i in read], consistent=True, projection=_BATCH_OLD_STATE, deadline=deadline
                )
                if read
                else {}
            )
        except PrismError as exc:
            for i in indexes:
                outcomes[i] = WriteOutcome(False, False, exc)
            return
        requests: list[dict[str, Any]] = []
        batched: list[tuple[int, bool]] = []
        replacing_chunks: list[int] = []
        for i in indexes:
            before = old.get(_address(keys[i]))
            if before is not None and CHUNK_VERSION in before:
                replacing_chunks.append(i)
                continue
            op = ops[i]
            if op.value is None:
                requests.append({"DeleteRequest": {"Key": keys[i]}})
            else:
                item = item_attributes(ns, op, keys[i], indexed=self.options.scan_index)
                requests.append({"PutRequest": {"Item": item}})
            batched.append((i, before is not None and is_live(before, now)))
        writes = asyncio.gather(
            *(self._write_one_into(ns, ops, keys, i, now, deadline, outcomes) for i in replacing_chunks)
        )
        failed, _ = await asyncio.gather(calls.batch_write(requests, deadline), writes)
        for n, (i, existed) in enumerate(batched):
            error = failed.get(n)
            outcomes[i] = WriteOutcome(error is None, existed if error is None else False, error)

    async def transact(self, ns: str, ops: Sequence[StoredWrite]) -> list[WriteOutcome]:
        """One TransactWriteItems planned on a consistent read of the touched items (see ``transaction``)."""
        calls = self._calls
        keys = [key_of(ns, op.record, op.key) for op in ops]
        addresses = [_address(k) for k in keys]
        final = {address: i for i, address in enumerate(addresses)}
        deadline = calls.deadline()
        versions = {i: new_version() for i in chunked_in_transaction(ops, final)}
        await asyncio.gather(
            *(
                chunks.write_chunks(calls, v, ops[i].value or b"", ops[i].expires_at, deadline)
                for i, v in versions.items()
            )
        )
        sent = False
        try:
            attempt = 0
            while True:
                now = time.time()
                state = await calls.batch_get(
                    [keys[i] for i in final.values()],
                    consistent=True,
                    projection=_TRANSACTION_STATE,
                    deadline=deadline,
                )
                outcomes = simulate(ops, addresses, state, now)
                if not all(o.ok for o in outcomes):
                    break  # a condition failed: nothing is sent
                actions = []
                for address, i in final.items():
                    op = ops[i]
                    item = (
                        None
                        if op.value is None
                        else item_attributes(
                            ns, op, keys[i], versions.get(i), indexed=self.options.scan_index
                        )
                    )
                    actions.append(pinned_action(self._table, keys[i], item, state.get(address), now))
                params = {"TransactItems": actions, "ClientRequestToken": uuid.uuid4().hex}
                try:
                    sent = True
                    await calls.call("transact_write_items", params, deadline)
                except TransactionCancelled:
                    sent = False
                    # An item changed since it was read: plan again from a fresh read.
                    await calls.pause(attempt, deadline, "the transaction's items kept changing")
                    attempt += 1
                    continue
                break
        except BaseException as exc:
            if not (sent and isinstance(exc, BackendUnavailable)):
                await self._drop_versions(ops, versions)
            raise
        if not all(o.ok for o in outcomes):
            await self._drop_versions(ops, versions)
            return outcomes
        await asyncio.gather(*(chunks.drop_replaced(calls, state.get(a)) for a in final))
        return outcomes

    async def _drop_versions(self, ops: Sequence[StoredWrite], versions: dict[int, str]) -> None:
        """Drop the chunks written for a transaction that was not applied."""
        calls = self._calls
        await asyncio.gather(
            *(
                chunks.drop_chunks(calls, v, chunk_count(len(ops[i].value or b"")))
                for i, v in versions.items()
            )
        )

    async def delete_range(self, ns: str, record: str, start: str | None, end: str | None) -> int:
        """Query the range's keys, delete them with BatchWriteItem (and their chunks); count the live ones."""
        calls = self._calls
        deadline = calls.deadline()
        now = time.time()
        # Expired items in the range are deleted too (DynamoDB's TTL may take days), but not counted.
        found = await self._query_record(
            ns, record, start, end, None, None, True, _OLD_STATE, deadline, include_expired=True
        )
        requests = [{"DeleteRequest": {"Key": {PK: a[PK], SK: a[SK]}}} for a in found]
        failed = await calls.batch_write(requests, deadline)
        if failed:
            raise next(iter(failed.values()))
        await asyncio.gather(*(chunks.drop_replaced(calls, a) for a in found if chunk_ref(a) is not None))
        return sum(1 for a in found if is_live(a, now))


def _needs_single_write(op: StoredWrite, blind_store: bool) -> bool:
    """Whether ``op`` goes alone (PutItem/DeleteItem), not in the read-then-BatchWriteItem path.

    A blind put (the caller does not ask ``existed``) goes alone unless the store has
    ``blind_batch_puts``: a PutItem returning the old item reads nothing (no read units)
    and still finds the chunks of a replaced large value, which a BatchWriteItem could
    not without the read.
    """
    return (
        op.if_match is not None
        or op.if_absent
        or (op.value is not None and (len(op.value) > INLINE_VALUE_BYTES or (op.blind and not blind_store)))
    )


def _waves(addresses: list[Address]) -> list[list[int]]:
    """Split op indexes so that no address repeats within a wave, keeping each address's order."""
    waves: list[list[int]] = []
    seen: dict[Address, int] = {}
    for i, address in enumerate(addresses):
        n = seen.get(address, 0)
        seen[address] = n + 1
        if n == len(waves):
            waves.append([])
        waves[n].append(i)
    return waves


def _condition_outcome(op: StoredWrite, old: Attrs | None, now: float) -> WriteOutcome:
    """The outcome of a write whose condition failed, given the item as it was."""
    if old is not None and op.value is not None and old.get(ETAG, {}).get("S") == op.etag:
        # The item already holds this very write: an earlier attempt of the same request
        # succeeded before its answer was lost, and the retry found its own result.
        return WriteOutcome(True, op.if_match is not None)
    return condition_failed(old is not None and is_live(old, now))
