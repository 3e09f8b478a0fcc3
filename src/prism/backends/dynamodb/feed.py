"""The change feed of a ``dynamodb://`` store: the table's DynamoDB Stream, read shard by shard.

With ``feed=true`` the table carries a stream of view type ``NEW_IMAGE`` (or
``NEW_AND_OLD_IMAGES``, when it already has one): every PutItem, DeleteItem,
BatchWriteItem entry and transaction item becomes a stream record, in order per
item. A watch lists the stream's shards and reads each with GetShardIterator
(``AFTER_SEQUENCE_NUMBER`` from where it stopped, ``TRIM_HORIZON`` for a shard born
since) and GetRecords; a child shard is read only once its parent is read to its
end, so the changes of one key come in the order DynamoDB applied them. Records
of other namespaces sharing the table, and the chunk items of large values, are
skipped; a record that DynamoDB's TTL made (``userIdentity`` is the service) is
an ``expire``.

The cursor names, per shard, the sequence number read up to:
``<shard id>.<sequence number>`` entries joined by ``~`` (``<shard id>.`` when
nothing of the shard was read, ``<shard id>.end`` once a closed shard is read
whole). It is opaque to users.

The window: DynamoDB keeps stream records 24 hours, whatever ``feed_retention``
says; a shorter ``feed_retention`` is applied by Prism (a change older than it
counts as gone), a longer one is refused, and so is ``feed_max_changes``: the
service cannot keep a number of changes. A cursor whose next change left the
window, or whose shard was trimmed away, raises ``CursorExpired``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from botocore.exceptions import ClientError

from prism.backends._feed import cursor_ahead, cursor_expired
from prism.backends.dynamodb.calls import Calls, error_code
from prism.backends.dynamodb.layout import ETAG, PK, SK, UPDATED, item_key
from prism.errors import BackendUnavailable, InvalidArgument
from prism.model import Change, ChangeOp, epoch_to_datetime

__all__ = [
    "DEFAULT_FEED_POLL_INTERVAL",
    "FEED_VIEW_TYPES",
    "STREAM_RETENTION",
    "StreamFeed",
    "decode_cursor",
    "encode_cursor",
]

#: Seconds between two GetRecords of an idle watch, at least (DynamoDB Streams serve
#: about five GetRecords per second per shard, shared by every reader).
DEFAULT_FEED_POLL_INTERVAL = 0.25
#: Seconds DynamoDB keeps a stream record (fixed by the service).
STREAM_RETENTION = 86400.0
#: Stream view types that hold what a ``Change`` needs (the new etag and update time).
FEED_VIEW_TYPES = ("NEW_IMAGE", "NEW_AND_OLD_IMAGES")
#: The view type a table gets when the store turns its stream on.
FEED_VIEW_TYPE = "NEW_IMAGE"
#: Most records one GetRecords returns (the service's limit).
MAX_GET_RECORDS = 1000
#: Seconds the list of shards is reused before DescribeStream is asked again (a closed
#: shard, or a cursor naming a shard not listed, asks at once).
SHARD_LIST_MAX_AGE = 5.0
#: What the position of a closed shard read to its end is written as.
_END = "end"
_ENTRY = re.compile(r"([A-Za-z0-9_-]{1,65})\.([0-9]{0,40}|end)")
_PK = re.compile(r"([0-9]+):")
#: userIdentity of a delete made by DynamoDB's TTL.
_TTL_PRINCIPAL = "dynamodb.amazonaws.com"

#: Seconds a shard iterator left by a read is reused by the next read from there (the
#: service lets one live 15 minutes); a read without one asks GetShardIterator.
ITERATOR_MAX_AGE = 600.0
#: Iterators kept at most (one per shard and position a watch of this store stopped at).
ITERATOR_CACHE = 256

Cursor = dict[str, str]


class _IteratorExpired(Exception):
    """GetRecords refused an iterator older than 15 minutes."""


def encode_cursor(positions: Cursor) -> str:
    """The cursor string: read shards first, open ones last (in shard id order within each)."""
    ordered = sorted(positions.items(), key=lambda kv: (kv[1] != _END, kv[0]))
    return "~".join(f"{shard}.{pos}" for shard, pos in ordered)


def decode_cursor(cursor: str) -> Cursor:
    """The positions a cursor names; InvalidArgument for a string that is not one of this store."""
    if type(cursor) is not str or not cursor or len(cursor) > 16_000:
        raise InvalidArgument(f"{cursor!r} is not a change-feed cursor of this store")
    out: Cursor = {}
    for entry in cursor.split("~"):
        match = _ENTRY.fullmatch(entry)
        if match is None or match.group(1) in out:
            raise InvalidArgument(f"{cursor!r} is not a change-feed cursor of this store")
        out[match.group(1)] = match.group(2)
    return out


@dataclass(frozen=True, slots=True)
class Shard:
    """One shard of the stream: its parent, and its last sequence number once it is closed."""

    id: str
    parent: str | None
    first: int
    last: int | None


def _address(pk: str) -> tuple[str, str] | None:
    """(namespace, record id) of a ``pk``; None for a chunk item or anything not Prism's."""
    match = _PK.match(pk)
    if match is None:
        return None
    length = int(match.group(1))
    start = match.end()
    if pk[start + length : start + length + 1] != ":":
        return None
    return pk[start : start + length], pk[start + length + 1 :]


def _code(exc: BackendUnavailable) -> str:
    """The DynamoDB error code behind ``exc`` ("" when it was not an answer of the service)."""
    cause = exc.cause
    return error_code(cause) if isinstance(cause, ClientError) else ""


def _when(raw: Any) -> float:
    if isinstance(raw, datetime):
        return raw.timestamp()
    return float(raw)


class StreamFeed:
    """Reads the changes of one table's stream (the backend owns one, on its streams client)."""

    def __init__(self, calls: Calls, stream_arn: str, retention: float) -> None:
        self._calls = calls
        self._arn = stream_arn
        self._retention = retention
        #: The newest sequence number this store has read per shard: where a new watch starts.
        self._heads: dict[str, int] = {}
        #: Per (shard, position), the iterator a read left there and when it got it.
        self._iterators: dict[tuple[str, str], tuple[str, float]] = {}
        #: The shards as last listed, and when (DescribeStream is rate-limited by the service).
        self._shards: list[Shard] = []
        self._listed_at = 0.0

    @property
    def stream_arn(self) -> str:
        return self._arn

    async def shards(self) -> list[Shard]:
        """Every shard of the stream (DescribeStream, page after page)."""
        out: list[Shard] = []
        params: dict[str, Any] = {"StreamArn": self._arn}
        while True:
            described = (await self._calls.call("describe_stream", params))["StreamDescription"]
            for raw in described.get("Shards", ()):
                span = raw.get("SequenceNumberRange", {})
                ending = span.get("EndingSequenceNumber")
                out.append(
                    Shard(
                        raw["ShardId"],
                        raw.get("ParentShardId"),
                        int(span.get("StartingSequenceNumber", "0")),
                        None if ending is None else int(ending),
                    )
                )
            last = described.get("LastEvaluatedShardId")
            if not last:
                return out
            params = {"StreamArn": self._arn, "ExclusiveStartShardId": last}

    async def _iterator(self, shard: str, pos: str, cursor: str) -> str | None:
        """A shard iterator just after ``pos`` (None: the shard is gone)."""
        params: dict[str, Any] = {"StreamArn": self._arn, "ShardId": shard}
        if pos:
            params |= {"ShardIteratorType": "AFTER_SEQUENCE_NUMBER", "SequenceNumber": pos}
        else:
            params["ShardIteratorType"] = "TRIM_HORIZON"
        try:
            iterator = (await self._calls.call("get_shard_iterator", params)).get("ShardIterator")
        except BackendUnavailable as exc:
            code = _code(exc)
            if code == "TrimmedDataAccessException":
                raise cursor_expired(cursor) from exc
            if code == "ResourceNotFoundException":
                return None
            raise
        except InvalidArgument as exc:
            # A sequence number the shard never had: a cursor of another stream, or one made up.
            raise cursor_ahead(cursor) from exc
        return iterator if isinstance(iterator, str) else None

    async def _records(self, iterator: str, cursor: str) -> tuple[list[dict[str, Any]], str | None]:
        try:
            got = await self._calls.call("get_records", {"ShardIterator": iterator, "Limit": MAX_GET_RECORDS})
        except BackendUnavailable as exc:
            code = _code(exc)
            if code == "TrimmedDataAccessException":
                raise cursor_expired(cursor) from exc
            if code == "ExpiredIteratorException":
                raise _IteratorExpired from exc
            raise
        return list(got.get("Records", ())), got.get("NextShardIterator")

    async def start(self) -> str:
        """The cursor of the newest change now: every shard read up to its end."""
        positions: Cursor = {}
        for shard in await self.shards():
            if shard.last is not None:
                positions[shard.id] = _END
                continue
            head = await self._head(shard.id)
            positions[shard.id] = "" if head is None else str(head)
        return encode_cursor(positions)

    async def _head(self, shard: str) -> int | None:
        """The newest sequence number of an open shard (None: it has no record yet).

        Read forward from the newest one this store knows, to the shard's end.
        """
        head = self._heads.get(shard)
        pos = "" if head is None else str(head)
        iterator = await self._iterator(shard, pos, "")
        while iterator is not None:
            records, iterator = await self._records(iterator, "")
            if not records:
                break
            pos = records[-1]["dynamodb"]["SequenceNumber"]
        if pos:
            self._note_head(shard, int(pos))
        return self._heads.get(shard)

    def _note_head(self, shard: str, seq: int) -> None:
        if seq > self._heads.get(shard, -1):
            self._heads[shard] = seq

    async def read(self, ns: str, prefix: str, after: str, limit: int) -> tuple[list[Change], str]:
        """Up to ``limit`` changes of ``ns`` (records starting with ``prefix``) after cursor ``after``."""
        positions = decode_cursor(after)
        shards = await self._listed(fresh=False)
        if not positions.keys() <= {s.id for s in shards}:
            shards = await self._listed(fresh=True)
        listed = {s.id: s for s in shards}
        for shard_id, pos in list(positions.items()):
            if shard_id not in listed:
                if pos != _END:
                    raise cursor_expired(after)  # its records were trimmed (24 hours)
                del positions[shard_id]
        for shard_id, pos in positions.items():
            shard = listed[shard_id]
            seq = int(pos) if pos and pos != _END else None
            if seq is not None and (seq < shard.first or (shard.last is not None and seq > shard.last)):
                raise cursor_ahead(after)  # a sequence number this shard never had
        out: list[Change] = []
        oldest = time.time() - self._retention
        for shard in _parents_first(shards):
            if len(out) >= limit:
                break
            pos = positions.get(shard.id, "")
            if pos == _END:
                continue
            if shard.parent is not None and shard.parent in listed and positions.get(shard.parent) != _END:
                continue  # the parent holds this key range's earlier changes: it goes first
            pos = await self._read_shard(shard, pos, ns, prefix, positions, out, limit, after, oldest)
            if pos == _END:
                self._listed_at = 0.0  # a shard closed: its children are listed on the next read
        return out, encode_cursor(positions)

    async def _listed(self, fresh: bool) -> list[Shard]:
        """The stream's shards, listed again at most every SHARD_LIST_MAX_AGE seconds unless ``fresh``."""
        now = time.monotonic()
        if fresh or now - self._listed_at > SHARD_LIST_MAX_AGE:
            self._shards = await self.shards()
            self._listed_at = now
        return self._shards

    async def _read_shard(
        self,
        shard: Shard,
        pos: str,
        ns: str,
        prefix: str,
        positions: Cursor,
        out: list[Change],
        limit: int,
        after: str,
        oldest: float,
    ) -> str:
        """Read one shard from ``pos`` into ``out`` (advancing ``positions``); its new position."""
        iterator = self._cached_iterator(shard.id, pos)
        cached = iterator is not None
        if iterator is None:
            iterator = await self._iterator(shard.id, pos, after)
        first = True
        while iterator is not None and len(out) < limit:
            try:
                records, following = await self._records(iterator, after)
            except _IteratorExpired:
                if not cached:
                    raise
                cached = False
                iterator = await self._iterator(shard.id, pos, after)
                continue
            cached = False
            if not records:
                if following is None:
                    pos = _END  # a closed shard, read to its end
                    positions[shard.id] = pos
                elif first and pos and int(pos) > self._heads.get(shard.id, -1):
                    # Nothing after it, and past what this store has seen: past the shard's end?
                    head = await self._head(shard.id)
                    if head is None or int(pos) > head:
                        raise cursor_ahead(after)
                self._keep_iterator(shard.id, pos, following)
                break
            whole = True
            for n, record in enumerate(records):
                body = record["dynamodb"]
                if first:
                    first = False
                    if _when(body.get("ApproximateCreationDateTime", time.time())) < oldest:
                        raise cursor_expired(after)
                seq = body["SequenceNumber"]
                self._note_head(shard.id, int(seq))
                pos = positions[shard.id] = seq
                change = _change(record, ns, prefix)
                if change is not None:
                    out.append(change(encode_cursor(positions)))
                    if len(out) >= limit:
                        whole = n == len(records) - 1
                        break
            iterator = following
            if shard.last is not None and pos and pos != _END and int(pos) >= shard.last:
                pos = positions[shard.id] = _END
            elif whole:
                # The next read of this shard from here can go on with the iterator it was given.
                self._keep_iterator(shard.id, pos, following)
                if shard.last is None and len(records) < MAX_GET_RECORDS:
                    break  # an open shard read up to about now: the next poll goes on from here
        return pos

    def _cached_iterator(self, shard: str, pos: str) -> str | None:
        """The iterator a read of ``shard`` left just after ``pos``, while it is young enough."""
        kept = self._iterators.pop((shard, pos), None)
        if kept is None or time.monotonic() - kept[1] > ITERATOR_MAX_AGE:
            return None
        return kept[0]

    def _keep_iterator(self, shard: str, pos: str, iterator: str | None) -> None:
        if iterator is None or pos == _END:
            return
        self._iterators[shard, pos] = (iterator, time.monotonic())
        if len(self._iterators) > ITERATOR_CACHE:
            del self._iterators[next(iter(self._iterators))]


def _parents_first(shards: list[Shard]) -> Iterable[Shard]:
    """Shards with every listed parent before its children."""
    by_id = {s.id: s for s in shards}
    seen: set[str] = set()
    out: list[Shard] = []

    def visit(shard: Shard) -> None:
        if shard.id in seen:
            return
        seen.add(shard.id)
        parent = by_id.get(shard.parent) if shard.parent is not None else None
        if parent is not None:
            visit(parent)
        out.append(shard)

    for shard in shards:
        visit(shard)
    return out


class _Pending:
    """A change whose cursor is not known yet (it is the positions after its record)."""

    __slots__ = ("etag", "item", "op", "record", "updated")

    def __init__(self, record: str, item: str, op: ChangeOp, etag: str | None, updated: float) -> None:
        self.record, self.item, self.op, self.etag, self.updated = record, item, op, etag, updated

    def __call__(self, cursor: str) -> Change:
        return Change(
            key=self.record,
            op=self.op,
            cursor=cursor,
            item_key=self.item,
            etag=self.etag,
            updated_at=epoch_to_datetime(self.updated),
        )


def _change(record: dict[str, Any], ns: str, prefix: str) -> _Pending | None:
    """The change a stream record is for ``ns`` and ``prefix``; None for anything else."""
    body = record["dynamodb"]
    keys = body.get("Keys", {})
    pk, sk = keys.get(PK, {}).get("S"), keys.get(SK, {}).get("S")
    if not isinstance(pk, str) or not isinstance(sk, str) or not sk:
        return None
    address = _address(pk)
    if address is None or address[0] != ns or not address[1].startswith(prefix):
        return None
    when = _when(body.get("ApproximateCreationDateTime", time.time()))
    name = record.get("eventName")
    if name == "REMOVE":
        identity = record.get("userIdentity") or {}
        by_ttl = identity.get("Type") == "Service" and identity.get("PrincipalId") == _TTL_PRINCIPAL
        return _Pending(address[1], item_key(sk), "expire" if by_ttl else "delete", None, when)
    image = body.get("NewImage") or {}
    etag = image.get(ETAG, {}).get("S")
    updated = image.get(UPDATED, {}).get("N")
    return _Pending(address[1], item_key(sk), "put", etag, when if updated is None else float(updated))
