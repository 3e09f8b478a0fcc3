"""``memory://``: everything in a dict of this process. For tests, demos and caches.

Each ``memory://`` URL opens a private store; ``memory://NAME`` stores with the same
name share data within the process (like SQLite's shared-cache memory databases).

Change feed (``Namespace.watch``), only with the option ``feed=true``: each namespace
then keeps its changes in memory, for ``feed_retention`` seconds (86400) and at most
``feed_max_changes`` (1,000,000) of them (options of the URL or keyword arguments,
accepted only with ``feed=true``), or what ``store.namespace(name, feed_retention=,
feed_max_changes=)`` gave that namespace. Without it nothing is logged and ``watch`` is
unsupported. Items that expire vanish without an ``expire`` change:
the store never purges them, it only stops returning them.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections import deque
from collections.abc import Sequence
from typing import Any, ClassVar, NamedTuple

from prism.backends._feed import (
    cursor_ahead,
    cursor_expired,
    feed_capabilities,
    feed_settings,
    parse_cursor,
    retention_options,
)
from prism.backends._retry import split_options
from prism.backends.base import Backend, NotNow
from prism.errors import InvalidArgument
from prism.model import (
    Capabilities,
    Change,
    ChangeOp,
    Item,
    StoredWrite,
    WriteOutcome,
    condition_failed,
    epoch_to_datetime,
    transaction_refused,
)

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


class _Logged(NamedTuple):
    """One change in a namespace's feed."""

    seq: int
    record: str
    key: str
    op: ChangeOp
    etag: str | None
    at: float


#: A change about to be logged: (record, key, op, etag, time).
_Pending = tuple[str, str, ChangeOp, str | None, float]


class _Space:
    """One namespace: records of items, the sorted list of record ids, and the change feed.

    ``floor`` is the sequence number of the newest change discarded from ``changes``.
    """

    __slots__ = ("changes", "floor", "ids", "records", "seq")

    def __init__(self) -> None:
        self.records: dict[str, dict[str, _Entry]] = {}
        self.ids: list[str] = []
        self.changes: deque[_Logged] = deque()
        self.seq = 0
        self.floor = 0

    def log(self, pending: list[_Pending], max_changes: int, retention: float, now: float) -> None:
        changes = self.changes
        for record, key, op, etag, at in pending:
            self.seq += 1
            changes.append(_Logged(self.seq, record, key, op, etag, at))
        oldest = now - retention
        while changes and (len(changes) > max_changes or changes[0].at < oldest):
            self.floor = changes.popleft().seq


_shared: dict[str, dict[str, _Space]] = {}
_shared_lock = threading.Lock()


class MemoryBackend(Backend):
    name = "memory"
    capabilities = Capabilities(multi_process=False, timeseries=True, watch=True)
    feed_opt_in: ClassVar[bool] = True
    namespace_feed_retention: ClassVar[bool] = True
    timeseries_driver = "prism.backends.memory_ts:MemoryTimeSeries"
    runs_inline: ClassVar[bool] = True

    def __init__(
        self,
        shared_name: str = "",
        *,
        feed: bool = False,
        feed_retention: float | None = None,
        feed_max_changes: int | None = None,
    ) -> None:
        self.feed_retention, self.feed_max_changes = feed_settings(feed, feed_retention, feed_max_changes)
        #: Whether the store keeps a change feed (``feed=true``); without it nothing is logged.
        self.feed = feed
        self.capabilities = feed_capabilities(type(self).capabilities, feed)
        if shared_name:
            with _shared_lock:
                self._spaces = _shared.setdefault(shared_name, {})
        else:
            self._spaces = {}
        # Blocking callers may use one store from several threads.
        self._lock = threading.Lock()

    @classmethod
    def from_url(cls, url: str, **options: Any) -> MemoryBackend:
        _, opts = split_options(url, options)
        kwargs = retention_options(opts)
        if opts:
            raise InvalidArgument(
                "memory:// takes no options other than feed, feed_retention and feed_max_changes, "
                f"got {sorted(opts)}"
            )
        return cls(url.split("://", 1)[1].split("?", 1)[0].strip("/"), **kwargs)

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

    def _apply(self, space: _Space, op: StoredWrite, now: float, log: list[_Pending]) -> WriteOutcome:
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
                log.append((op.record, op.key, "delete", None, now))
                if not items:
                    del space.records[op.record]
                    i = bisect.bisect_left(space.ids, op.record)
                    del space.ids[i]
            return WriteOutcome(True, existed)
        if items is None:
            items = space.records[op.record] = {}
            bisect.insort(space.ids, op.record)
        items[op.key] = _Entry(op.value, op.etag, op.expires_at, op.content_type, op.updated_at)
        log.append((op.record, op.key, "put", op.etag, now))
        return WriteOutcome(True, existed)

    async def write(self, ns: str, ops: Sequence[StoredWrite]) -> list[WriteOutcome]:
        now = time.time()
        log: list[_Pending] = []
        with self._lock:
            space = self._space(ns)
            outcomes = [self._apply(space, op, now, log) for op in ops]
            if log and self.feed:
                retention, max_changes = self.feed_limits(ns)
                space.log(log, max_changes, retention, now)
            return outcomes

    async def transact(self, ns: str, ops: Sequence[StoredWrite]) -> list[WriteOutcome]:
        now = time.time()
        with self._lock:
            space = self._space(ns)
            # Undo log: the records touched, as they were, restored if a condition fails.
            saved = {op.record: dict(space.records.get(op.record, {})) for op in ops}
            outcomes = []
            log: list[_Pending] = []
            for i, op in enumerate(ops):
                outcome = self._apply(space, op, now, log)
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
            if log and self.feed:
                retention, max_changes = self.feed_limits(ns)
                space.log(log, max_changes, retention, now)
            return outcomes

    async def read_changes(
        self, ns: str, prefix: str, after: str | None, limit: int
    ) -> tuple[list[Change], str]:
        start = None if after is None else parse_cursor(after)
        with self._lock:
            space = self._space(ns)
            retention, max_changes = self.feed_limits(ns)
            space.log([], max_changes, retention, time.time())
            if start is None:
                return [], str(space.seq)
            if start < space.floor:
                raise cursor_expired(str(after))
            if start > space.seq:
                raise cursor_ahead(str(after))
            changes = space.changes
            # Sequence numbers are consecutive, so the first change after ``start`` is found by offset.
            i = max(0, start - (changes[0].seq if changes else space.seq + 1) + 1)
            out: list[Change] = []
            last = max(start, space.floor)
            while i < len(changes) and len(out) < limit:
                c = changes[i]
                last = c.seq
                if c.record.startswith(prefix):
                    out.append(
                        Change(
                            key=c.record,
                            op=c.op,
                            cursor=str(c.seq),
                            item_key=c.key,
                            etag=c.etag,
                            updated_at=epoch_to_datetime(c.at),
                        )
                    )
                i += 1
            return out, str(last)

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
            if doomed and self.feed:
                retention, max_changes = self.feed_limits(ns)
                space.log(
                    [(record, k, "delete", None, now) for k in sorted(doomed)], max_changes, retention, now
                )
            if not items:
                del space.records[record]
                del space.ids[bisect.bisect_left(space.ids, record)]
            return live
