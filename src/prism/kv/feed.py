"""Watching a namespace: the change feed as an async iterator (``Namespace.watch``)."""

from __future__ import annotations

from collections import deque
from types import TracebackType
from typing import TYPE_CHECKING

from prism.errors import StoreClosed

if TYPE_CHECKING:
    from prism.kv.namespace import Namespace
    from prism.model import Change

__all__ = ["DEFAULT_POLL_INTERVAL", "DEFAULT_WATCH_BATCH", "ChangeFeed"]

#: Seconds a watch waits before asking the backend again when it had no new change (a
#: backend that is told of changes, PostgreSQL or Redis, wakes it earlier).
DEFAULT_POLL_INTERVAL = 0.05
#: Most changes a watch reads from the backend at once.
DEFAULT_WATCH_BATCH = 100


class ChangeFeed:
    """The changes of a namespace, oldest first: ``async for change in ns.watch(...)``.

    Built by :meth:`Namespace.watch`. It starts after the cursor it was given or,
    without one, after the newest change when it starts (:meth:`start`, or the first
    iteration). It never ends by itself: leave the loop, or call :meth:`close`, which
    ends every iteration. Each change is delivered at least once, in commit order per
    key; ``cursor`` is where to resume (``ns.watch(after=feed.cursor)``).
    """

    def __init__(
        self, ns: Namespace, prefix: str, after: str | None, poll_interval: float, batch_size: int
    ) -> None:
        self._ns = ns
        self._prefix = prefix
        self._cursor = after
        self._poll_interval = poll_interval
        self._batch_size = batch_size
        self._buffer: deque[Change] = deque()
        self._closed = False
        self._started = False

    def __repr__(self) -> str:
        return f"<ChangeFeed of {self._ns.name!r} prefix={self._prefix!r} cursor={self._cursor!r}>"

    @property
    def cursor(self) -> str | None:
        """The cursor of the last change delivered (where a new watch resumes), None before start."""
        return self._cursor

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    async def start(self) -> str:
        """Fix where the feed starts, now, and return that cursor.

        Without ``after``, a feed starts after the newest change at this moment: call
        it before the writes the watcher must not miss. With ``after``, the first read
        happens here, so a cursor older than the retained window raises CursorExpired
        now rather than at the first iteration. Later calls change nothing.
        """
        if not self._started:
            self._check()
            if self._cursor is None:
                _, self._cursor = await self._ns._read_changes(self._prefix, None, 1)
            else:
                changes, upto = await self._ns._read_changes(self._prefix, self._cursor, self._batch_size)
                self._buffer.extend(changes)
                if not changes:
                    self._cursor = upto
            self._started = True
        assert self._cursor is not None
        return self._cursor

    async def close(self) -> None:
        """Stop the feed: the iteration in progress and every later one end. Safe to call twice."""
        self._closed = True

    def _check(self) -> None:
        if self._closed:
            raise StoreClosed("the change feed is closed")

    def __aiter__(self) -> ChangeFeed:
        return self

    async def __anext__(self) -> Change:
        cursor = await self.start() if not self._started and not self._closed else self._cursor
        while not self._closed:
            if self._buffer:
                change = self._buffer.popleft()
                self._cursor = change.cursor
                return change
            changes, upto = await self._ns._read_changes(self._prefix, cursor, self._batch_size)
            if changes:
                self._buffer.extend(changes)
                continue
            # Nothing for this prefix: skip what was examined, then wait for a change (or the
            # poll interval, on a backend that cannot tell) before asking again.
            self._cursor = cursor = upto
            await self._ns._wait_for_changes(self._poll_interval, cursor)
        raise StopAsyncIteration

    async def __aenter__(self) -> ChangeFeed:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
