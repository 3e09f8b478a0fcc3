"""The change feed of a ``nats://`` store: the bucket's own stream, keeping each key's history.

A KV bucket normally keeps one message per key (history 1), so its stream cannot
replay the changes a watcher missed. A store opened with ``feed=true`` gives the
buckets it uses a history of ``feed_history`` messages per key (64): the stream then
holds, in commit order, every revision of every key, the last ``feed_history`` of
each. Reads are not affected (they ask for a key's last message), and neither are
listings (they take the last message per key).

A watch reads the stream by sequence, and the cursor is a stream sequence: one
pipelined round trip of direct gets asks for the sequences after the cursor (up to
:data:`FEED_READ_WINDOW`); a sequence that is gone is a revision that was replaced
more than ``feed_history`` times since, or a chunk that was purged. Nothing can be
lost silently, because every message Prism writes names the revision it replaced
(``Nats-Expected-Last-Subject-Sequence``, the compare-and-set of every write): a
revision whose predecessor lies after the cursor but is gone means changes left the
stream, and the cursor raises ``CursorExpired``. The window is also bounded by
``feed_max_changes`` (a cursor more than that many messages behind the stream's
last one is expired) and ``feed_retention`` (a cursor whose next message is older
is expired), both kept by Prism: the stream itself never drops a key's last message.
Chunk messages of large values are skipped: a large value's change is its
manifest's, one ``Change``.

What the feed costs the bucket: JetStream's per-message TTL would remove a key's last
message and bring back the revision before it, so a bucket with a history keeps TTL
the way an old server does (expired items are hidden by Prism and replaced by a
tombstone when a read or a listing meets them); those tombstones are the ``expire``
changes, seen only when something meets the expired item (``watch_expiry`` is not
declared). Storage: up to ``feed_history`` revisions of each key, whatever the
window. A watch downloads what the stream holds after its cursor, values and chunks
included.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime

import msgspec
from nats.aio.msg import Msg

from prism.backends._feed import cursor_ahead, cursor_expired, parse_cursor
from prism.backends.nats.connection import (
    EXPECTED_LAST_SEQ,
    KV_OPERATION,
    APIErrorBody,
    Connection,
    NoResponders,
)
from prism.backends.nats.layout import (
    ETAG_HEADER,
    EXPIRED_HEADER,
    Bucket,
    decode_item,
    decode_record,
    is_chunk_key,
    split_key,
)
from prism.backends.nats.writes import api_error
from prism.errors import BackendUnavailable
from prism.model import Change, ChangeOp

__all__ = ["FEED_READ_WINDOW", "read_feed"]
#: Most stream sequences one read asks for (pipelined direct gets), changes of the prefix or not.
FEED_READ_WINDOW = 256
_STREAM_NOT_FOUND = 10059
_DELETED = frozenset({"DEL", "PURGE"})


class _State(msgspec.Struct):
    first_seq: int = 0
    last_seq: int = 0


class _Info(msgspec.Struct):
    state: _State | None = None
    error: APIErrorBody | None = None


_info = msgspec.json.Decoder(_Info)
_json = msgspec.json.Encoder()


async def stream_last(conn: Connection, stream: str) -> int:
    """The last sequence the stream has stored."""
    reply = _info.decode((await conn.request(f"$JS.API.STREAM.INFO.{stream}")).data)
    if reply.error is not None:
        if reply.error.err_code == _STREAM_NOT_FOUND:
            raise NoResponders(stream)  # looked up again, with its bucket, on the retry
        raise api_error("stream info", reply.error.code, reply.error.err_code, reply.error.description)
    return (reply.state or _State()).last_seq


def _timestamp(raw: str | None) -> datetime | None:
    if not raw:
        return None
    head, _, frac = raw.rstrip("Z").partition(".")
    try:
        return datetime.fromisoformat(f"{head}.{(frac or '0')[:6]:0<6}").replace(tzinfo=UTC)
    except ValueError:
        return None


def _change(headers: dict[str, str], key: str, prefix: str, seq: int) -> Change | None:
    """The change a message of item ``key`` stands for, if its record starts with ``prefix``."""
    tokens, item = split_key(key)
    try:
        record = decode_record(tokens)
        item_key = decode_item(item)
    except ValueError:
        return None  # a key Prism did not write
    if not record.startswith(prefix):
        return None
    op: ChangeOp = "put"
    if headers.get(KV_OPERATION) in _DELETED:
        op = "expire" if EXPIRED_HEADER in headers else "delete"
    return Change(
        key=record,
        op=op,
        cursor=str(seq),
        item_key=item_key,
        etag=headers.get(ETAG_HEADER) if op == "put" else None,
        updated_at=_timestamp(headers.get("Nats-Time-Stamp")),
    )


async def read_feed(
    conn: Connection,
    bucket: Bucket,
    prefix: str,
    after: str | None,
    limit: int,
    max_changes: int,
    retention: float,
) -> tuple[list[Change], str]:
    """``Backend.read_changes`` on the stream of ``bucket`` (a bucket with a history)."""
    last = await stream_last(conn, bucket.stream)
    if after is None:
        return [], str(last)
    cursor = parse_cursor(after)
    if cursor > last:
        raise cursor_ahead(after)
    if cursor < last - max_changes:
        raise cursor_expired(after)
    end = min(last, cursor + FEED_READ_WINDOW)
    if end <= cursor:
        return [], after
    seqs = range(cursor + 1, end + 1)
    api_subject = f"$JS.API.DIRECT.GET.{bucket.stream}"
    asks = [(api_subject, _json.encode({"seq": s}), None) for s in seqs]
    msgs: Sequence[Msg] = await conn.request_many(asks)
    cut = len(bucket.prefix)
    oldest = time.time() - retention
    present: set[int] = set()
    out: list[Change] = []
    upto = cursor
    first = True
    for seq, msg in zip(seqs, msgs, strict=True):
        headers = msg.headers or {}
        status = headers.get("Status")
        upto = seq
        if status is not None:
            if status == "404":
                continue  # a replaced revision past the key's history, or a purged chunk
            raise BackendUnavailable(f"nats change feed of {bucket.stream}: direct get answered {status}")
        present.add(seq)
        if first:
            first = False
            stamp = _timestamp(headers.get("Nats-Time-Stamp"))
            if stamp is not None and stamp.timestamp() < oldest:
                raise cursor_expired(after)
        key = headers.get("Nats-Subject", "")[cut:]
        if not key or is_chunk_key(key):
            continue
        replaced = headers.get(EXPECTED_LAST_SEQ)
        if (
            replaced is not None
            and replaced.isdigit()
            and cursor < int(replaced)
            and int(replaced) not in present
        ):
            # The revision this one replaced is after the cursor and gone: changes were dropped.
            raise cursor_expired(after)
        change = _change(headers, key, prefix, seq)
        if change is not None:
            out.append(change)
            if len(out) >= limit:
                break
    return out, str(upto)
