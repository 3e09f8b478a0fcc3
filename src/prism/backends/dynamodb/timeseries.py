"""The DynamoDB engine's TimeSeries store: time-bucketed partitions in the store's table.

Events live in the store's one table beside its KeyValue items, without the ``ns``
attribute, so the record index never lists them:

* an event of series ``s`` in slice ``n`` of namespace ``ns`` is the item
  ``pk = "~ts:<len(ns)>:<ns>:<n>:<s>"`` (one partition per series and slice, so a
  hot series spreads over time), ``sk`` its identity as an order-keeping string
  (20 digits of the time, then the event id and the item key, each ending in
  ``\\x01\\x01`` with ``\\x01`` escaped as ``\\x01\\x02``), and the attributes ``tm``,
  ``i``, ``k``, ``v`` and ``ct``;
  An event id and item key take at most 1000 UTF-8 bytes together (the sort key's
  limit is 1024), declared as ``max_identity_bytes``;
* ``pk = "~tsmeta:<len(ns)>:<ns>:<s>"``, ``sk`` the slice number (20 digits): the
  slices that hold events of the series.

Retention is DynamoDB's TTL: each item carries ``t``, the end of its slice plus the
retention, so the table's TTL deletes whole slices in the background at no write
cost, and reads never return a slice past retention even before TTL got to it.
A write is one conditional ``PutItem`` per event (``attribute_not_exists``), sent
concurrently, so concurrent writers can never replace an event.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from prism.backends.base import Backend
from prism.backends.dynamodb.backend import DynamoDBBackend
from prism.backends.dynamodb.calls import ConditionFailed
from prism.backends.dynamodb.layout import PK, SK, TTL_ATTRIBUTE, Attrs
from prism.backends.timeseries import (
    EventWrite,
    Identity,
    SeriesSpec,
    StoredEvent,
    TimeSeriesDriver,
    compare_existing,
)

__all__ = ["PUT_CONCURRENCY", "DynamoDBTimeSeries"]

#: Conditional puts of one write in flight at once.
PUT_CONCURRENCY = 32
#: Keeps times and slice numbers non-negative in their 20-digit sort keys.
_OFFSET = 1 << 62
_END = "\x01\x01"


def _text(part: str) -> str:
    return part.replace("\x01", "\x01\x02") + _END


def _sort_key(identity: Identity) -> str:
    micros, event_id, key = identity
    return f"{micros + _OFFSET:020d}{_text(event_id)}{_text(key)}"


def _time_key(micros: int) -> str:
    return f"{micros + _OFFSET:020d}"


def _event(attrs: Attrs) -> StoredEvent:
    ctype = attrs.get("ct")
    return StoredEvent(
        int(attrs["tm"]["N"]),
        attrs["i"]["S"],
        attrs["k"]["S"],
        attrs["v"]["B"],
        None if ctype is None else ctype["S"],
    )


class DynamoDBTimeSeries(TimeSeriesDriver):
    """Events in time-bucketed partitions of the store's table, expired by TTL."""

    #: DynamoDB's sort keys hold 1024 bytes: 20 digits of time and two 2-byte ends leave 1000.
    max_identity_bytes = 1000

    def __init__(self, backend: Backend) -> None:
        super().__init__(backend)
        assert isinstance(backend, DynamoDBBackend)
        self._db = backend

    @staticmethod
    def _ns(spec: SeriesSpec) -> str:
        return f"{len(spec.ns)}:{spec.ns}"

    def _events_pk(self, spec: SeriesSpec, slice_no: int, series: str) -> str:
        return f"~ts:{self._ns(spec)}:{slice_no}:{series}"

    def _meta_pk(self, spec: SeriesSpec, series: str) -> str:
        return f"~tsmeta:{self._ns(spec)}:{series}"

    def _ttl(self, spec: SeriesSpec, slice_no: int) -> dict[str, Any]:
        expires = spec.expires_at(slice_no)
        return {} if expires is None else {TTL_ATTRIBUTE: {"N": str(expires)}}

    async def write(self, spec: SeriesSpec, series: str, events: Sequence[StoredEvent]) -> list[EventWrite]:
        calls = self._db.calls
        table = calls.table
        deadline = calls.deadline()
        slices = sorted({spec.slice_of(e.time) for e in events})
        await asyncio.gather(
            *(
                calls.call(
                    "put_item",
                    {
                        "TableName": table,
                        "Item": {
                            PK: {"S": self._meta_pk(spec, series)},
                            SK: {"S": _time_key(n)},
                            **self._ttl(spec, n),
                        },
                    },
                    deadline,
                )
                for n in slices
            )
        )
        gate = asyncio.Semaphore(PUT_CONCURRENCY)

        async def put(event: StoredEvent) -> EventWrite:
            slice_no = spec.slice_of(event.time)
            item: Attrs = {
                PK: {"S": self._events_pk(spec, slice_no, series)},
                SK: {"S": _sort_key(event.identity)},
                "tm": {"N": str(event.time)},
                "i": {"S": event.id},
                "k": {"S": event.key},
                "v": {"B": event.value},
                **self._ttl(spec, slice_no),
            }
            if event.content_type is not None:
                item["ct"] = {"S": event.content_type}
            params = {
                "TableName": table,
                "Item": item,
                "ConditionExpression": "attribute_not_exists(pk)",
                "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
            }
            async with gate:
                try:
                    await calls.call("put_item", params, deadline)
                except ConditionFailed as failed:
                    return compare_existing(None if failed.old is None else _event(failed.old), event)
            return EventWrite.CREATED

        return list(await asyncio.gather(*(put(e) for e in events)))

    async def _slices(
        self, spec: SeriesSpec, series: str, first: int, last: int, newest_first: bool
    ) -> list[int]:
        calls = self._db.calls
        found: list[int] = []
        params: dict[str, Any] = {
            "TableName": calls.table,
            "KeyConditionExpression": "pk = :pk AND sk BETWEEN :lo AND :hi",
            "ExpressionAttributeValues": {
                ":pk": {"S": self._meta_pk(spec, series)},
                ":lo": {"S": _time_key(first)},
                ":hi": {"S": _time_key(last)},
            },
            "ScanIndexForward": not newest_first,
            "ConsistentRead": True,
        }
        while True:
            response = await calls.call("query", params)
            found += [int(item[SK]["S"]) - _OFFSET for item in response.get("Items", ())]
            last_key = response.get("LastEvaluatedKey")
            if not last_key:
                return found
            params = {**params, "ExclusiveStartKey": last_key}

    async def read(
        self,
        spec: SeriesSpec,
        series: str,
        start_us: int,
        end_us: int,
        after: Identity | None,
        newest_first: bool,
        limit: int,
    ) -> list[StoredEvent]:
        calls = self._db.calls
        first, last = spec.slices_between(start_us, end_us)
        low, high = _time_key(start_us), _time_key(end_us)
        if newest_first:
            bound, condition = high, "sk < :b"
            if after is not None and _sort_key(after) < high:
                bound = _sort_key(after)
        else:
            bound, condition = low, "sk >= :b"
            if after is not None and _sort_key(after) >= low:
                bound, condition = _sort_key(after), "sk > :b"
        out: list[StoredEvent] = []
        for slice_no in await self._slices(spec, series, first, last, newest_first):
            params: dict[str, Any] = {
                "TableName": calls.table,
                "KeyConditionExpression": f"pk = :pk AND {condition}",
                "ExpressionAttributeValues": {
                    ":pk": {"S": self._events_pk(spec, slice_no, series)},
                    ":b": {"S": bound},
                },
                "ScanIndexForward": not newest_first,
                "ConsistentRead": True,
            }
            while len(out) < limit:
                response = await calls.call("query", {**params, "Limit": limit - len(out)})
                for item in response.get("Items", ()):
                    sk = item[SK]["S"]
                    if (sk < low) if newest_first else (sk >= high):
                        return out  # past the range's far end
                    out.append(_event(item))
                last_key = response.get("LastEvaluatedKey")
                if not last_key:
                    break
                params["ExclusiveStartKey"] = last_key
            if len(out) >= limit:
                break
        return out

    async def delete_series(self, spec: SeriesSpec, series: str) -> None:
        calls = self._db.calls
        slices = await self._slices(spec, series, -_OFFSET, _OFFSET - 1, False)
        for slice_no in slices:
            pk = self._events_pk(spec, slice_no, series)
            params: dict[str, Any] = {
                "TableName": calls.table,
                "KeyConditionExpression": "pk = :pk",
                "ExpressionAttributeValues": {":pk": {"S": pk}},
                "ProjectionExpression": "pk, sk",
                "ConsistentRead": True,
            }
            while True:
                response = await calls.call("query", params)
                keys = [{PK: item[PK], SK: item[SK]} for item in response.get("Items", ())]
                failed = await calls.batch_write([{"DeleteRequest": {"Key": key}} for key in keys])
                if failed:
                    raise next(iter(failed.values()))
                last_key = response.get("LastEvaluatedKey")
                if not last_key:
                    break
                params = {**params, "ExclusiveStartKey": last_key}
        meta = [
            {"DeleteRequest": {"Key": {PK: {"S": self._meta_pk(spec, series)}, SK: {"S": _time_key(n)}}}}
            for n in slices
        ]
        failed = await calls.batch_write(meta)
        if failed:
            raise next(iter(failed.values()))

    async def drop_slices(self, spec: SeriesSpec, before: int) -> int:
        # The table's TTL deletes slices past retention in the background (their items carry
        # the slice's expiry); reads skip them until then.
        return 0
