"""``memory://``: everything in a dict of this process. For tests, demos and caches.

Each ``memory://`` URL opens a private store; ``memory://NAME`` stores with the same
name share data within the process (like SQLite's shared-cache memory databases).
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Sequence
from typing import Any, ClassVar, NamedTuple

from prism.backends.base import Backend, NotNow
from prism.errors import InvalidArgument
from prism.model import Capabilities, Item, StoredWrite, WriteOutcome, condition_failed, transaction_refused

__all__ = ["MemoryBackend"]


class _Entry(NamedTuple):
    value: bytes
    etag: str
    expires_at: float | None
    content_type: str | None
    updated_at: float

    def live(self, now: float) -> bool:
        return self.expires_at is None or self.expires_at > now

    def item(self, key: str) -> Item:
        return Item(key, self.value, self.etag, self.expires_at, self.content_type, self.updated_at)


class _Space:
    """One namespace: records of items, and the sorted list of record ids."""

    __slots__ = ("ids", "records")

    def __init__(self) -> None:
        self.records: dict[str, dict[str, _Entry]] = {}
        self.ids: list[str] = []


_shared: dict[str, dict[str, _Space]] = {}
_shared_lock = threading.Lock()


class MemoryBackend(Backend):
    name = "memory"
    capabilities = Capabilities(multi_process=False)
    runs_inline: ClassVar[bool] = True

    def __init__(self, shared_name: str = "") -> None:
        if shared_name:
            with _shared_lock:
                self._spaces = _shared.setdefault(shared_name, {})
        else:
            self._spaces = {}
        # Blocking callers may use one store from several threads.
        self._lock = threading.Lock()

    @classmethod
    def from_url(cls, url: str, **options: Any) -> MemoryBackend:
        if options:
            raise InvalidArgument(f"memory:// takes no options, got {sorted(options)}")
        return cls(url.split("://", 1)[1].strip("/"))

    async def health(self) -> dict[str, Any]:
        return {"namespaces": len(self._spaces)}

    def _space(self, ns: str) -> _Space:
        space = self._spaces.get(ns)
        if space is None:
            space = self._spaces[ns] = _Space()
        return space

    def _live(self, ns: str, record: str, key: str, now: float) -> _Entry | None:
        space = self._spaces.get(ns)
        if space is None:
            return None
        items = space.records.get(record)
        entry = None if items is None else items.get(key)
        return entry if entry is not None and entry.live(now) else None

    def get_now(self, ns: str, record: str, key: str, consistent: bool = False) -> Item | NotNow | None:
        entry = self._live(ns, record, key, time.time())
        return None if entry is None else entry.item(key or record)

    async def get(self, ns: str, record: str, key: str, *, consistent: bool = False) -> Item | None:
        entry = self._live(ns, record, key, time.time())
        return None if entry is None else entry.item(key or record)

    async def get_many(
        self, ns: str, addresses: Sequence[tuple[str, str]], *, consistent: bool = False
    ) -> list[Item | None]:
        now = time.time()
        out: list[Item | None] = []
        for record, key in addresses:
            entry = self._live(ns, record, key, now)
            out.append(None if entry is None else entry.item(key))
        return out

    def _apply(self, space: _Space, op: StoredWrite, now: float) -> WriteOutcome:
        items = space.records.get(op.record)
        current = None if items is None else items.get(op.key)
        if current is not None and not current.live(now):
            current = None
        existed = current is not None
        if (op.if_match is not None and (current is None or current.etag != op.if_match)) or (
            op.if_absent and existed
        ):
            return condition_failed(existed)
        if op.value is None:
            if items is not None and op.key in items:
                del items[op.key]
                if not items:
                    del space.records[op.record]
                    i = bisect.bisect_left(space.ids, op.record)
                    del space.ids[i]
            return WriteOutcome(True, existed)
        if items is None:
            items = space.records[op.record] = {}
            bisect.insort(space.ids, op.record)
        items[op.key] = _Entry(op.value, op.etag, op.expires_at, op.content_type, op.updated_at)
        return WriteOutcome(True, existed)

    async def write(self, ns: str, ops: Sequence[StoredWrite]) -> list[WriteOutcome]:
        now = time.time()
        with self._lock:
            space = self._space(ns)
            return [self._apply(space, op, now) for op in ops]

    async def transact(self, ns: str, ops: Sequence[StoredWrite]) -> list[WriteOutcome]:
        now = time.time()
        with self._lock:
            space = self._space(ns)
            # Undo log: the records touched, as they were, restored if a condition fails.
            saved = {op.record: dict(space.records.get(op.record, {})) for op in ops}
            outcomes = []
            for i, op in enumerate(ops):
                outcome = self._apply(space, op, now)
                if not outcome.ok:
                    for record, items in saved.items():
                        present = record in space.records
                        if items:
                            space.records[record] = items
                            if not present:
                                bisect.insort(space.ids, record)
                        elif present:
                            del space.records[record]
                            del space.ids[bisect.bisect_left(space.ids, record)]
                    return transaction_refused(len(ops), i, outcome.existed)
                outcomes.append(outcome)
            return outcomes

    async def scan(self, ns: str, prefix: str, after: str | None, limit: int) -> list[str]:
        space = self._spaces.get(ns)
        if space is None:
            return []
        now = time.time()
        lo = prefix if after is None or after < prefix else after
        i = (
            bisect.bisect_right(space.ids, lo)
            if after is not None and lo == after
            else bisect.bisect_left(space.ids, lo)
        )
        out: list[str] = []
        while i < len(space.ids) and len(out) < limit:
            rid = space.ids[i]
            if not rid.startswith(prefix):
                break
            if any(e.live(now) for e in space.records[rid].values()):
                out.append(rid)
            i += 1
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
        space = self._spaces.get(ns)
        items = None if space is None else space.records.get(record)
        if not items:
            return []
        now = time.time()
        out: list[Item] = []
        for key in sorted(items):
            if (start is not None and key < start) or (after is not None and key <= after):
                continue
            if end is not None and key >= end:
                break
            entry = items[key]
            if entry.live(now):
                out.append(entry.item(key))
                if len(out) >= limit:
                    break
        return out

    async def delete_range(self, ns: str, record: str, start: str | None, end: str | None) -> int:
        now = time.time()
        with self._lock:
            space = self._spaces.get(ns)
            items = None if space is None else space.records.get(record)
            if not items or space is None:
                return 0
            doomed = [k for k in items if (start is None or k >= start) and (end is None or k < end)]
            live = sum(1 for k in doomed if items[k].live(now))
            for k in doomed:
                del items[k]
            if not items:
                del space.records[record]
                del space.ids[bisect.bisect_left(space.ids, record)]
            return live
