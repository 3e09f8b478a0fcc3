"""The bounded, replayable event log of each request.

A request's newest events ride in its record (``tail``, at most ``TAIL_EVENTS``), so
emitting an event costs one conditional write of the record; every ``TAIL_EVENTS``
events the tail is copied to log entries ``<request_id>/<seq>`` (ten digits, so keys
sort by number) beside the record, in the ``<prefix>_requests`` namespace with the
same ttl, and the next record write drops them from the tail. Copying is idempotent
(``if_absent``), so a crash between the copy and that write only leaves an event in
both places, and readers take each number once. Only the last ``event_log_size``
(1,000) events of a request are kept.
"""

from __future__ import annotations

import msgspec

from prism.kv.store import Store
from prism.model import Delete, Put
from prism.streaming.config import StreamingConfig

__all__ = ["TAIL_EVENTS", "EventLog", "tail_events"]

#: Events kept in the record before they are copied to log entries.
TAIL_EVENTS = 16
#: Most log entries read in one call.
READ_BATCH = 1000


class _Tail(msgspec.Struct):
    """The fields of a request record that hold its newest events (the rest is not decoded)."""

    seq: int = 0
    tail: list[str] = msgspec.field(default_factory=list)


_decode_tail = msgspec.json.Decoder(_Tail).decode


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
    def key(request_id: str, seq: int) -> str:
        return f"{request_id}/{seq:010d}"

    async def copy(self, request_id: str, events: list[tuple[int, bytes]]) -> None:
        """Write these events to log entries (an entry that exists is left as it is)."""
        if not events:
            return
        await self.ns.put_many([Put(self.key(request_id, s), data, if_absent=True) for s, data in events])
        # The copies come in consecutive batches, so each drops the batch that fell out of the window.
        upto = events[-1][0] - self.size
        if upto > 0:
            old = range(max(1, upto - len(events) + 1), upto + 1)
            await self.ns.delete_many([Delete(self.key(request_id, s)) for s in old])

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
        wanted = [s for s in range(first, upto_seq + 1) if s not in found]
        for start in range(0, len(wanted), READ_BATCH):
            seqs = wanted[start : start + READ_BATCH]
            items = await self.ns.get_many([self.key(request_id, s) for s in seqs])
            found.update((s, item.value) for s, item in zip(seqs, items, strict=True) if item is not None)
        if tail is None and len(found) < upto_seq - first + 1:
            item = await self.ns.get(request_id, consistency="strong")
            if item is not None:
                record = _decode_tail(item.value)
                found.update(
                    (s, e) for s, e in tail_events(record.seq, record.tail) if first <= s <= upto_seq
                )
        return sorted(found.items())
