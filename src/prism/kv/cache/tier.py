"""The backend a cached namespace is served through: near cache, shared cache, then the store.

Reads of flat entries try the near cache, then the shared cache, then the store,
filling on the way back; a strongly consistent read goes to the store. Every write
(puts, deletes, batches, transactions, conditional and TTL'd writes, record items,
range deletes, restores) goes to the store and then invalidates, before the call
returns, even when the store call failed (it may have been applied). Scans, record
range reads, batch reads and the change feed go to the store.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from prism.backends.base import NOT_NOW, Backend, NotNow
from prism.errors import InvalidArgument, PrismError
from prism.kv.cache.metrics import CacheStats
from prism.kv.cache.near import FeedFollower, NearMap
from prism.kv.cache.settings import Cache, NearCache
from prism.kv.cache.shared import SharedCache
from prism.model import Change, Item, StoredWrite, WriteOutcome

__all__ = ["CachedBackend"]

log = logging.getLogger("prism.kv.cache")


class CachedBackend(Backend):
    """``inner`` serving namespace ``namespace`` behind its cache tiers; other namespaces pass through."""

    def __init__(
        self, inner: Backend, namespace: str, cache: Cache | None, near_cache: NearCache | None
    ) -> None:
        if cache is None and near_cache is None:
            raise InvalidArgument("a cached namespace needs a cache, a near_cache, or both")
        self.inner = inner
        # Messages and metrics name the engine that holds the data.
        self.name = inner.name  # type: ignore[misc]
        self.capabilities = inner.capabilities
        self.feed_opt_in = inner.feed_opt_in  # type: ignore[misc]
        self.feed = inner.feed
        self.timeseries_driver = inner.timeseries_driver  # type: ignore[misc]
        self.namespace = namespace
        self.stats = CacheStats(namespace, near=near_cache is not None, shared=cache is not None)
        self.shared = None if cache is None else SharedCache(cache, namespace, self.stats.shared)  # type: ignore[arg-type]
        self.near: NearMap | None = None
        self._invalidating: set[asyncio.Future[None]] = set()
        self.follower: FeedFollower | None = None
        if near_cache is not None:
            assert self.stats.near is not None
            self.near = NearMap(near_cache, self.stats.near)
            if inner.capabilities.watch:
                self.follower = FeedFollower(
                    self.near,
                    lambda after: inner.read_changes(namespace, "", after, 1000),
                    lambda seconds: inner.wait_for_changes(namespace, seconds),
                    near_cache.poll_interval,
                )
        #: ``feed`` when a change feed evicts near-cache entries, ``ttl`` when only the ttl bounds them.
        self.near_bound = None if self.near is None else ("feed" if self.follower is not None else "ttl")

    @classmethod
    def from_url(cls, url: str, **options: Any) -> Backend:
        raise InvalidArgument("a cached backend is built by Store.namespace(cache=...), not from a URL")

    async def close(self) -> None:
        if self._invalidating:
            await asyncio.gather(*self._invalidating, return_exceptions=True)
        if self.follower is not None:
            await self.follower.stop()
        if self.shared is not None:
            await self.shared.close()

    async def health(self) -> dict[str, Any]:
        return await self.inner.health()

    # -- reads ------------------------------------------------------------------------

    def get_now(self, ns: str, record: str, key: str, consistent: bool = False) -> Item | NotNow | None:
        near = self.near
        if near is None or key or consistent or ns != self.namespace:
            return NOT_NOW
        return near.hit_now(record)

    async def get(self, ns: str, record: str, key: str, *, consistent: bool = False) -> Item | None:
        inner = self.inner
        if key or consistent or ns != self.namespace:
            return await inner.get(ns, record, key, consistent=consistent)
        near = self.near
        epoch = 0
        if near is not None:
            item = near.get(record)
            if item is not None:
                return item
            follower = self.follower
            if follower is not None and not follower.running:
                await self._follow()
            epoch = near.epoch
        shared = self.shared
        if shared is None:
            item = await inner.get(ns, record, "")
        else:
            item = await shared.read(record, lambda: self._load(record))
        if near is not None and item is not None:
            near.fill(record, item, epoch)
        return item

    async def _load(self, record: str) -> Item | None:
        # The fill is only as fresh as this read: ask for the newest value where that costs extra.
        return await self.inner.get(
            self.namespace, record, "", consistent=self.inner.capabilities.consistent_reads
        )

    async def _follow(self) -> None:
        assert self.follower is not None
        try:
            await self.follower.start()
        except PrismError as exc:
            # Without the feed the near cache keeps nothing (its bound would not hold).
            log.warning("the near cache of %s cannot follow the change feed: %s", self.namespace, exc)

    async def get_many(
        self, ns: str, addresses: Sequence[tuple[str, str]], *, consistent: bool = False
    ) -> list[Item | None]:
        return await self.inner.get_many(ns, addresses, consistent=consistent)

    async def scan(self, ns: str, prefix: str, after: str | None, limit: int) -> list[str]:
        return await self.inner.scan(ns, prefix, after, limit)

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
        return await self.inner.get_range(ns, record, start, end, after, limit, consistent=consistent)

    async def read_changes(
        self, ns: str, prefix: str, after: str | None, limit: int
    ) -> tuple[list[Change], str]:
        return await self.inner.read_changes(ns, prefix, after, limit)

    async def wait_for_changes(self, ns: str, seconds: float, after: str | None = None) -> None:
        await self.inner.wait_for_changes(ns, seconds, after)

    async def take_token(self, bucket: str, rate: float, burst: float) -> float:
        return await self.inner.take_token(bucket, rate, burst)

    # -- writes -----------------------------------------------------------------------

    async def write(self, ns: str, ops: Sequence[StoredWrite]) -> list[WriteOutcome]:
        try:
            return await self.inner.write(ns, ops)
        finally:
            await self._invalidate(ns, [op.record for op in ops if not op.key])

    async def transact(self, ns: str, ops: Sequence[StoredWrite]) -> list[WriteOutcome]:
        try:
            return await self.inner.transact(ns, ops)
        finally:
            await self._invalidate(ns, [op.record for op in ops if not op.key])

    async def restore_items(self, ns: str, record: str, items: Sequence[Item]) -> list[WriteOutcome]:
        try:
            return await self.inner.restore_items(ns, record, items)
        finally:
            await self._invalidate(ns, [record] if any(not i.key for i in items) else [])

    async def delete_range(self, ns: str, record: str, start: str | None, end: str | None) -> int:
        try:
            return await self.inner.delete_range(ns, record, start, end)
        finally:
            if not start and (end is None or end > ""):
                await self._invalidate(ns, [record])

    async def _invalidate(self, ns: str, records: list[str]) -> None:
        if ns != self.namespace or not records:
            return
        if self.near is not None:
            self.near.evict(records)
        shared = self.shared
        if shared is not None:
            # Shielded: a caller cancelled after the store applied the write (a client gone,
            # a request timeout) must not leave the entry behind; the invalidation finishes.
            task = asyncio.ensure_future(shared.invalidate(records))
            self._invalidating.add(task)
            task.add_done_callback(self._invalidating.discard)
            await asyncio.shield(task)

    def describe(self) -> dict[str, Any]:
        """The tiers' settings and counters in this process, for the admin API."""
        out: dict[str, Any] = {}
        if self.shared is not None:
            s = self.shared.settings
            out["shared"] = {
                "ttl": s.ttl,
                "max_item_bytes": s.max_item_bytes,
                "timeout": s.timeout,
                **self.shared.describe(),
            }
        if self.near is not None:
            assert self.stats.near is not None
            out["near"] = {
                "max_items": self.near.max_items,
                "ttl": self.near.ttl,
                "items": len(self.near),
                "bound": self.near_bound,
                **self.stats.near.as_dict(),
            }
        return out
