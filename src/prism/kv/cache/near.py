"""The near cache: an in-process LRU of items, evicted by local writes and by the change feed."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from datetime import datetime

from prism.backends.base import NOT_NOW, NotNow
from prism.errors import CursorExpired, PrismError
from prism.kv.cache.metrics import TierStats
from prism.kv.cache.settings import NearCache
from prism.model import Change, Item

__all__ = ["NearMap"]

log = logging.getLogger("prism.kv.cache")

_monotonic = time.monotonic

#: Most changes read from the feed at once.
FEED_BATCH = 1000
#: Near-cache entries are served until this many poll intervals after the feed's last read.
LIVE_POLLS = 3

ReadChanges = Callable[[str | None], Awaitable[tuple[list[Change], str]]]
WaitForChanges = Callable[[float], Awaitable[None]]


def _epoch_seconds(when: datetime | float | None) -> float | None:
    if when is None or isinstance(when, float | int):
        return when
    return when.timestamp()


class NearMap:
    """Items by record id, least recently read first out, each until its deadline.

    ``epoch`` moves on every eviction: a reader notes it before going to the shared
    cache or the store and fills only if it has not moved, so a value read before a
    write of this process (or a change seen on the feed) is never put back after it.
    """

    __slots__ = ("_entries", "epoch", "following", "live_until", "max_items", "stats", "ttl")

    def __init__(self, settings: NearCache, stats: TierStats) -> None:
        self._entries: OrderedDict[str, tuple[Item, float]] = OrderedDict()
        self.max_items = settings.max_items
        self.ttl = settings.ttl
        self.stats = stats
        self.epoch = 0
        #: False while the change feed is not being read (then nothing is filled).
        self.following = True
        #: Entries are served only before this (monotonic) time: the change feed's follower
        #: moves it on after every read, so a stalled follower stops the near cache answering.
        self.live_until = float("inf")

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, record: str) -> Item | None:
        entry = self._entries.get(record)
        if entry is not None:
            now = _monotonic()
            if entry[1] > now and now < self.live_until:
                self._entries.move_to_end(record)
                self.stats.hits += 1
                return entry[0]
            del self._entries[record]
        self.stats.misses += 1
        return None

    def hit_now(self, record: str) -> Item | NotNow:
        """The live item at ``record`` (counted as a hit), else NOT_NOW with nothing counted."""
        entry = self._entries.get(record)
        if entry is None:
            return NOT_NOW
        now = _monotonic()
        if entry[1] <= now or now >= self.live_until:
            return NOT_NOW
        self._entries.move_to_end(record)
        self.stats.hits += 1
        return entry[0]

    def fill(self, record: str, item: Item, epoch: int) -> None:
        """Keep ``item`` unless an eviction happened since ``epoch`` was read."""
        if epoch != self.epoch or not self.following:
            self.stats.fills_refused += 1
            return
        life = self.ttl
        expires = _epoch_seconds(item._expires)
        if expires is not None:
            life = min(life, expires - time.time())
            if life <= 0:
                return
        entries = self._entries
        entries[record] = (item, _monotonic() + life)
        entries.move_to_end(record)
        if len(entries) > self.max_items:
            entries.popitem(last=False)
        self.stats.fills += 1

    def evict(self, records: list[str] | tuple[str, ...]) -> None:
        self.epoch += 1
        entries = self._entries
        for record in records:
            if entries.pop(record, None) is not None:
                self.stats.invalidations += 1

    def clear(self) -> None:
        self.epoch += 1
        self.stats.invalidations += len(self._entries)
        self._entries.clear()


class FeedFollower:
    """Reads a namespace's change feed and evicts every changed record from a NearMap."""

    def __init__(self, near: NearMap, read: ReadChanges, wait: WaitForChanges, poll_interval: float) -> None:
        self.near = near
        self._read = read
        self._wait = wait
        self._poll = poll_interval
        self._task: asyncio.Task[None] | None = None
        self._cursor: str | None = None
        self._retry_at = 0.0
        near.following = False  # nothing is kept until the feed is followed
        near.live_until = 0.0
        #: How long after a read of the feed its entries may still be served.
        self.live_window = LIVE_POLLS * poll_interval

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        """Take the feed's newest cursor, then follow it in the background.

        Until the cursor is taken nothing is filled: an entry is only kept while
        every later change of it will be seen.
        """
        if self.running or _monotonic() < self._retry_at:
            return
        self._retry_at = _monotonic() + self._poll
        self.near.following = False
        self.near.clear()
        read_at = _monotonic()
        _, self._cursor = await self._read(None)
        # A fill that read the store before the cursor was taken may hold a value whose
        # newer write the feed will never show: refuse every fill begun until now.
        self.near.clear()
        self.near.following = True
        self.near.live_until = read_at + self.live_window
        self._task = asyncio.create_task(self._follow(), name="prism-near-cache-feed")

    async def _follow(self) -> None:
        while True:
            read_at = _monotonic()
            try:
                changes, cursor = await self._read(self._cursor)
            except asyncio.CancelledError:
                raise
            except CursorExpired:
                # Changes were missed: nothing kept can be trusted, and nothing is filled
                # until a new cursor is taken.
                log.warning("the near cache fell behind the change feed; it was cleared")
                self.near.following = False
                self.near.clear()
                changes, cursor = [], None
            except PrismError as exc:
                # While the feed cannot be read its bound does not hold: keep nothing.
                log.warning("the near cache cannot read the change feed: %s", exc)
                self.near.following = False
                self.near.clear()
                await asyncio.sleep(self._poll)
                continue
            if cursor is None:
                with contextlib.suppress(PrismError):
                    _, cursor = await self._read(None)
                if cursor is not None:
                    self.near.clear()  # as in start(): no fill begun before the new cursor
            if cursor is None:
                await asyncio.sleep(self._poll)
                continue
            self._cursor = cursor
            self.near.following = True
            if changes:
                self.near.evict([c.key for c in changes])
            # Every change committed before the read began is evicted now.
            self.near.live_until = read_at + self.live_window
            if not changes:
                with contextlib.suppress(PrismError):
                    await self._wait(self._poll)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
