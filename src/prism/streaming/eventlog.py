"""The bounded, replayable event log of each request.

A request's newest events ride in its record (``tail``, at most ``TAIL_EVENTS``), so
emitting an event costs one conditional write of the record; every ``TAIL_EVENTS``
events the full tail is copied to one log entry, a chunk, ``<request_id>/<first seq>``
(ten digits, so keys sort by number) beside the record, in the ``<prefix>_requests``
namespace with the same ttl, and the next record write drops them from the tail. A
chunk holds events ``first`` to ``first + TAIL_EVENTS - 1`` (``first`` is 1, 17, 33...:
tails fill up from an empty one, so they line up). Copying is idempotent (a chunk
written twice holds the same events: each number is taken once, by the record's
conditional write), so a crash between the copy and that write only leaves events in
both places, and readers take each number once. Only the last ``event_log_size``
(1,000) events of a request are kept; a chunk is deleted once all its events are older.
"""

from __future__ import annotations

import msgspec

from prism.kv.store import Store
from prism.model import Delete, Put
from prism.streaming.config import StreamingConfig

__all__ = ["TAIL_EVENTS", "EventLog", "tail_events"]

#: Events kept in the record before they are copied to log entries.
TAIL_EVENTS = 16
#: Most log entries (chunks) read in one call.
READ_BATCH = 100


class _Tail(msgspec.Struct):
    """The fields of a request record that hold its newest events (the rest is not decoded)."""

    seq: int = 0
    tail: list[str] = msgspec.field(default_factory=list)


_decode_tail = msgspec.json.Decoder(_Tail).decode


class _Chunk(msgspec.Struct, array_like=True):
    """One log entry: consecutive events from number ``first`` on."""

    first: int
    events: list[msgspec.Raw]


_encode_chunk = msgspec.json.Encoder().encode
_decode_chunk = msgspec.json.Decoder(_Chunk).decode


def chunk_start(seq: int) -> int:
    """The number of the first event of the chunk that holds event ``seq``."""
    return seq - (seq - 1) % TAIL_EVENTS


def tail_events(seq: int, tail: list[str]) -> list[tuple[int, bytes]]:
    """The (seq, event) pairs of a record's tail; its last event is number ``seq``."""
    first = seq - len(tail) + 1
    return [(first + i, event.encode()) for i, event in enumerate(tail)]


class EventLog:
    """Log entries of request events, read together with the records' tails."""

    def __init__(self, store: Store, config: StreamingConfig) -> None:
        self.size = config.event_log_size
        self.ns = store.namespace(config.namespace("requests"), default_ttl=config.request_ttl)

    @staticmethod
    def key(request_id: str, first: int) -> str:
        """The key of the chunk of ``request_id`` that starts at event ``first``."""
        return f"{request_id}/{first:010d}"

    async def copy(self, request_id: str, events: list[tuple[int, bytes]]) -> None:
        """Write these consecutive events to their chunks (rewriting a chunk writes the same events)."""
        if not events:
            return
        chunks: dict[int, list[tuple[int, bytes]]] = {}
        for seq, data in events:
            chunks.setdefault(chunk_start(seq), []).append((seq, data))
        await self.ns.put_many(
            [
                Put(
                    self.key(request_id, start),
                    _encode_chunk(_Chunk(part[0][0], [msgspec.Raw(d) for _, d in part])),
                )
                for start, part in chunks.items()
            ]
        )
        # The copies come in consecutive batches, so each drops the chunks that fell out of the window.
        outside = events[-1][0] - self.size
        before = outside - len(events)
        stale = [
            start
            for start in range(chunk_start(max(1, before - TAIL_EVENTS + 2)), outside + 1, TAIL_EVENTS)
            if before < start + TAIL_EVENTS - 1 <= outside
        ]
        if stale:
            await self.ns.delete_many([Delete(self.key(request_id, start)) for start in stale])

    async def latest(self, request_id: str) -> tuple[int, list[str]] | None:
        """The request's last event number and tail, read from its record (None when it is gone)."""
        item = await self.ns.get(request_id, consistency="strong")
        if item is None:
            return None
        record = _decode_tail(item.value)
        return record.seq, record.tail

    async def read(
        self, request_id: str, after_seq: int, upto_seq: int, *, tail: tuple[int, list[str]] | None = None
    ) -> list[tuple[int, bytes]]:
        """The events after ``after_seq`` up to ``upto_seq`` inclusive, in order, each once.

        Entries not copied to the log yet are taken from the record's tail (``tail``
        is ``(record.seq, record.tail)`` when the caller holds the record; else the
        record is read when needed). Events older than the log's window are gone.
        """
        first = max(after_seq + 1, upto_seq - self.size + 1, 1)
        if first > upto_seq:
            return []
        found: dict[int, bytes] = {}
        if tail is not None:
            found.update((s, e) for s, e in tail_events(*tail) if first <= s <= upto_seq)
        starts = sorted({chunk_start(s) for s in range(first, upto_seq + 1) if s not in found})
        for at in range(0, len(starts), READ_BATCH):
            batch = starts[at : at + READ_BATCH]
            items = await self.ns.get_many([self.key(request_id, start) for start in batch])
            for item in items:
                if item is None:
                    continue
                chunk = _decode_chunk(item.value)
                for offset, event in enumerate(chunk.events):
                    seq = chunk.first + offset
                    if first <= seq <= upto_seq:
                        found.setdefault(seq, bytes(event))
        if tail is None and len(found) < upto_seq - first + 1:
            item = await self.ns.get(request_id, consistency="strong")
            if item is not None:
                record = _decode_tail(item.value)
                found.update(
                    (s, e) for s, e in tail_events(record.seq, record.tail) if first <= s <= upto_seq
                )
        return sorted(found.items())
