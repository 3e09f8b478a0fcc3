"""The contract every backend implements.

A backend stores items addressed by (namespace, record id, item key); a flat entry
is the record whose single item key is "". The KeyValue layer above validates
input, makes etags and expiry times, and instruments every call, so a backend only
stores and answers. Its obligations, checked by ``prism.testing``'s conformance suite:

* expired items are never returned, listed, or treated as present by a condition;
* ``write`` applies each op independently (one failing condition fails only that op);
* ``transact`` applies all ops in order or none;
* a failed condition is an outcome (``prism.model.condition_failed``), never an
  exception: the KeyValue layer alone turns it into PreconditionFailed, with one
  message for every backend;
* ``scan`` and ``get_range`` order by code point and resume strictly after a cursor;
* driver exceptions leave only as ``prism.errors`` types.
"""

from __future__ import annotations

import asyncio
import enum
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from datetime import datetime
from typing import Any, ClassVar, Final

from prism.backends._feed import DEFAULT_FEED_MAX_CHANGES, DEFAULT_FEED_RETENTION
from prism.errors import InvalidArgument
from prism.model import Capabilities, Change, Item, StoredWrite, WriteOutcome

__all__ = ["NOT_NOW", "Backend", "Capabilities", "NotNow", "RolledBack", "reads_now", "restore_op"]


class NotNow(enum.Enum):
    """What ``Backend.get_now`` answers when the read has to wait (for I/O, or another process's lock)."""

    NOT_NOW = "not now"


NOT_NOW: Final = NotNow.NOT_NOW


def restore_op(
    record: str, item: Item, *, if_match: str | None = None, if_absent: bool = False
) -> StoredWrite:
    """The write that puts ``item`` under ``record`` exactly as it is: its etag, expiry and times.

    Live migration copies items this way, so an etag read before a cutover still
    matches after it. The conditions let a copy refuse to overwrite a newer write.
    """
    expires = item._expires
    updated = item._updated
    return StoredWrite(
        record,
        item.key,
        item.value,
        item.etag,
        expires.timestamp() if isinstance(expires, datetime) else expires,
        item.content_type,
        (updated.timestamp() if isinstance(updated, datetime) else updated) or time.time(),
        if_match,
        if_absent,
    )


class RolledBack(Exception):
    """Raised inside a backend's transaction body to roll it back; ``outcomes`` is what ``transact`` returns.

    It never leaves the backend: ``transact`` catches it and returns its outcomes.
    """

    def __init__(self, outcomes: list[WriteOutcome]) -> None:
        super().__init__("transaction rolled back")
        self.outcomes = outcomes


class Backend(ABC):
    """Base class of storage engines. Subclasses are registered by URL scheme."""

    #: db.system attribute for traces and the ``backend`` metric label.
    name: ClassVar[str] = "backend"
    capabilities: Capabilities = Capabilities()
    #: True when no call ever suspends on I/O (the blocking API can drive it inline).
    runs_inline: ClassVar[bool] = False
    #: ``"module:Class"`` of the engine's TimeSeries driver (``capabilities.timeseries``).
    timeseries_driver: ClassVar[str | None] = None
    #: Why the engine has no TimeSeries, when it has none (told by ``Unsupported`` and the docs).
    timeseries_unsupported: ClassVar[str] = ""
    #: True when the change feed is opt-in: the class declares ``watch``, a store has it
    #: only when opened with ``feed=true`` (a store's ``capabilities`` say which).
    feed_opt_in: ClassVar[bool] = False
    #: Whether this store was opened with ``feed=true`` (backends with ``feed_opt_in``).
    feed: bool = False
    #: Seconds and most changes a namespace's feed keeps unless it was given its own
    #: (``set_feed_retention``): the store's ``feed_retention`` and ``feed_max_changes``.
    feed_retention: float = DEFAULT_FEED_RETENTION
    feed_max_changes: int = DEFAULT_FEED_MAX_CHANGES
    #: True when the engine honours a feed retention per namespace (``set_feed_retention``).
    namespace_feed_retention: ClassVar[bool] = False
    _namespace_feed_limits: dict[str, tuple[float, int]] | None = None
    #: Whether the change feed keeps at most ``feed_max_changes`` changes. False for an
    #: engine whose feed has only a time window (``feed_retention``), such as DynamoDB
    #: Streams: its stores refuse ``feed_max_changes``.
    feed_count_window: ClassVar[bool] = True
    #: Why ``scan`` is Unsupported when ``capabilities.prefix_scan`` is False (a store option, say).
    scan_unsupported: str = ""

    @classmethod
    @abstractmethod
    def from_url(cls, url: str, **options: Any) -> Backend:
        """Build an unopened backend from its URL and keyword options."""

    async def open(self) -> None:  # noqa: B027 - optional hook
        """Connect; called once by the Store."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release every resource; safe to call twice."""

    @abstractmethod
    async def health(self) -> dict[str, Any]:
        """Details of a successful probe; raise BackendUnavailable when it fails."""

    @abstractmethod
    async def get(self, ns: str, record: str, key: str, *, consistent: bool = False) -> Item | None:
        """The live item at (record, key). Its ``key`` may be ``key`` or ``record``: callers set it."""

    def get_now(self, ns: str, record: str, key: str, consistent: bool = False) -> Item | NotNow | None:
        """``get`` answered without waiting, or ``NOT_NOW`` when answering has to wait.

        An engine whose reads usually finish in the calling thread (memory, SQLite)
        overrides it, and the KeyValue layer then reads without a coroutine, an event
        loop or, for the blocking API, a trip through the portal; ``NOT_NOW`` (a lock
        held by another process, say) sends the read on to ``get``. Only used when the
        class that defines ``get`` also defines ``get_now`` (see :func:`reads_now`).
        """
        return NOT_NOW

    async def get_many(
        self, ns: str, addresses: Sequence[tuple[str, str]], *, consistent: bool = False
    ) -> list[Item | None]:
        """One entry per (record, key), in order. Override to batch."""
        return [await self.get(ns, r, k, consistent=consistent) for r, k in addresses]

    async def get_flat_within(self, ns: str, records: Sequence[str], within: float) -> list[Item | None]:
        """The flat entries at ``records`` (eventual reads), in order; TimeoutError past ``within`` s.

        The read of a cache tier's hit: an engine may answer it by a shorter path than
        ``get_many`` (no retry wrapper of its own), as long as a failure it cannot
        answer past still raises, and ``within`` still bounds the whole call.
        """
        async with asyncio.timeout(within):
            return await self.get_many(ns, [(record, "") for record in records])

    @abstractmethod
    async def write(self, ns: str, ops: Sequence[StoredWrite]) -> list[WriteOutcome]:
        """Apply each op on its own; one outcome per op, in order."""

    async def transact(self, ns: str, ops: Sequence[StoredWrite]) -> list[WriteOutcome]:
        """Apply all ops in order or none; one outcome per op, in order.

        When a condition fails nothing is applied, and the outcomes say which op failed
        (``prism.model.transaction_refused``).
        """
        from prism.errors import Unsupported

        raise Unsupported(f"the {self.name} backend has no atomic multi-key transactions")

    async def take_token(self, bucket: str, rate: float, burst: float) -> float:
        """Take one token from the shared token bucket ``bucket``, atomically for every client.

        The bucket refills at ``rate`` tokens per second up to ``burst`` (it starts full).
        Returns 0.0 when a token was taken, else the seconds until one will be there
        (nothing is taken then). Backends declaring ``capabilities.token_buckets``
        implement it on their own connection, timed by the server's clock.
        """
        from prism.errors import Unsupported

        raise Unsupported(f"the {self.name} backend has no shared token buckets")

    async def restore_items(self, ns: str, record: str, items: Sequence[Item]) -> list[WriteOutcome]:
        """Write ``items`` into ``record`` with their own etags, expiry and updated times.

        Unconditional, one outcome per item, in order. Every backend whose writes store
        the etag they are given (``capabilities.restore``) honours it through ``write``;
        the others raise Unsupported.
        """
        if not self.capabilities.restore:
            from prism.errors import Unsupported

            raise Unsupported(f"the {self.name} backend cannot keep the etags of copied items")
        return await self.write(ns, [restore_op(record, item) for item in items])

    async def read_changes(
        self, ns: str, prefix: str, after: str | None, limit: int
    ) -> tuple[list[Change], str]:
        """Up to ``limit`` changes of ``ns`` committed after the cursor ``after``, oldest first.

        Only changes of record ids starting with ``prefix`` are returned; the second
        element is the cursor to read on from (past every change examined, returned or
        not). ``after`` None answers no changes and the cursor of the newest change.
        Raises ``CursorExpired`` when changes after ``after`` have left the retained
        window, and ``InvalidArgument`` for a string that is not a cursor. Backends
        declaring ``capabilities.watch`` implement it.
        """
        from prism.errors import Unsupported

        raise Unsupported(f"the {self.name} backend has no change feed")

    def set_feed_retention(self, ns: str, retention: float | None, max_changes: int | None) -> None:
        """Keep the changes of namespace ``ns`` for ``retention`` seconds and at most ``max_changes``.

        None keeps the store's value (``feed_retention``, ``feed_max_changes``). The
        setting belongs to this store object: every process that writes the namespace
        should set the same. Unsupported when the store keeps no feed or the engine
        keeps one retention for all its namespaces.
        """
        from prism.errors import Unsupported

        if not self.capabilities.watch:
            if type(self).feed_opt_in and not self.feed:
                raise Unsupported(
                    f"a feed retention needs a change feed: start the {self.name} store with feed=true"
                )
            raise Unsupported(f"the {self.name} backend has no change feed")
        if not type(self).namespace_feed_retention:
            raise Unsupported(f"the {self.name} backend keeps one feed retention for all its namespaces")
        if retention is not None and (type(retention) not in (int, float) or not retention > 0):
            raise InvalidArgument(f"feed_retention must be a number of seconds > 0, got {retention!r}")
        if max_changes is not None and (type(max_changes) is not int or max_changes < 1):
            raise InvalidArgument(f"feed_max_changes must be an int >= 1, got {max_changes!r}")
        limits = (
            self.feed_retention if retention is None else float(retention),
            self.feed_max_changes if max_changes is None else max_changes,
        )
        if self._namespace_feed_limits is None:
            self._namespace_feed_limits = {}
        self._namespace_feed_limits[ns] = limits

    def feed_limits(self, ns: str) -> tuple[float, int]:
        """The seconds and the most changes the feed of namespace ``ns`` keeps."""
        own = self._namespace_feed_limits
        if own is not None:
            limits = own.get(ns)
            if limits is not None:
                return limits
        return self.feed_retention, self.feed_max_changes

    async def wait_for_changes(self, ns: str, seconds: float, after: str | None = None) -> None:
        """Return once a change of ``ns`` after the cursor ``after`` may have been committed,
        or after ``seconds``.

        A watch calls it when it has read every change; a spurious return only costs a
        read. By default it sleeps: engines with a notification (PostgreSQL's NOTIFY, a
        Redis stream's XREAD BLOCK) return early when one arrives.
        """
        import asyncio

        await asyncio.sleep(seconds)

    @abstractmethod
    async def scan(self, ns: str, prefix: str, after: str | None, limit: int) -> list[str]:
        """Up to ``limit`` record ids with ``prefix``, holding a live item, sorting after ``after``."""

    @abstractmethod
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
        """Live items of ``record`` with start <= key < end and key > after, by key, at most ``limit``."""

    @abstractmethod
    async def delete_range(self, ns: str, record: str, start: str | None, end: str | None) -> int:
        """Delete the record's items with start <= key < end; the number of live items deleted."""


def reads_now(backend: Backend) -> bool:
    """Whether the KeyValue layer may try ``backend.get_now`` before ``get``.

    True when the most derived class defining either method defines ``get_now``: a
    subclass that overrides only ``get`` (to wrap or stand in for reads) keeps every
    read going through its ``get``.
    """
    for cls in type(backend).__mro__:
        defined = vars(cls)
        if "get_now" in defined:
            return cls is not Backend
        if "get" in defined:
            return False
    return False
