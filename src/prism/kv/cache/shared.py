"""The shared look-aside cache: entries in another store, filled under leases, versioned by generation.

Each cached entry lives in the cache store's namespace ``PREFIX.NAMESPACE`` as the
flat entry ``e:RECORD`` (a tenant's keys are in the tenant's own namespace, so the
tenant is part of every cache key). Beside them the entry ``g`` holds the
namespace's cache *generation*, a random token. An entry is one of:

* a value (or "absent") tagged with the generation it was filled under;
* a lease: a reader missed and is reading the store.

A read fetches ``g`` and the entry in one call. It is a hit only when the entry is a
value of the current generation. Otherwise the reader takes a lease with a
conditional write (put-if-absent, or if-match the stale entry), *then* reads the
store, then fills with a write conditional on its lease's etag. A writer writes the
store and then deletes the entry, which breaks any lease: a reader that read the
store before the write can no longer fill, and one that takes a lease after the
delete reads the store after the write. That closes the miss/fill/invalidate race
(memcached's leases) on any store with conditional writes.

A process that sees the cache fail (an error or its timeout) stops using it, and
goes back only after writing a new generation, which makes every entry filled
before unreachable on every replica: an invalidation missed while the cache was
down cannot serve a stale value after it returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any

import msgspec

from prism.backends.base import Backend
from prism.errors import PrismError
from prism.kv.cache.metrics import TierStats
from prism.kv.cache.settings import Cache
from prism.kv.validation import new_etag
from prism.model import Item, StoredWrite

__all__ = ["SharedCache"]

log = logging.getLogger("prism.kv.cache")

_GEN = "g"
_VALUE = b"V"
_ABSENT = b"N"
_LEASE = b"L"

#: (generation, etag, expires, content type, updated, value)
_Entry = tuple[str, str, float | None, str | None, float | None, bytes]
_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(_Entry).decode

#: Hooks called between the steps of a fill (``leased``, ``filling``) and before an invalidation
#: (``invalidating``), for tests of interleavings.
StepHook = Callable[[str, str], Awaitable[None]]

_FAILURES = (PrismError, TimeoutError, OSError)
#: Sends of one invalidation, all within the cache's timeout, before the process counts it missed.
INVALIDATE_ATTEMPTS = 3


def _seconds(when: datetime | float | None) -> float | None:
    if when is None or isinstance(when, float | int):
        return when
    return when.timestamp()


def entry_key(record: str) -> str:
    return "e:" + record


class SharedCache:
    """The shared tier of one namespace: hit, miss-with-lease, fill, invalidate, recover."""

    def __init__(self, settings: Cache, namespace: str, stats: TierStats) -> None:
        self.settings = settings
        self.backend: Backend = settings.store.backend
        self.namespace = f"{settings.prefix}.{namespace}"
        self.stats = stats
        self.timeout = settings.timeout
        #: True while this process does not use the cache (it failed and a new generation is not written).
        self.degraded = False
        self._retry_at = 0.0
        self._recovery: asyncio.Task[None] | None = None
        self.on_step: StepHook | None = None

    # -- reads ------------------------------------------------------------------------

    async def read(self, record: str, load: Callable[[], Awaitable[Item | None]]) -> Item | None:
        """The item at ``record`` from the cache, else from ``load()`` (the store), filling the cache."""
        if self.degraded and not await self._recover():
            return await load()
        key = entry_key(record)
        try:
            gen_item, entry = await self.backend.get_flat_within(self.namespace, (_GEN, key), self.timeout)
        except _FAILURES as exc:
            self._failed(exc)
            return await load()
        if gen_item is None:
            gen = await self._new_generation(if_absent=True)
            if gen is None:
                if not self.degraded:
                    self.stats.misses += 1
                return await load()
        else:
            gen = gen_item.value.decode()
        if entry is not None:
            kind = entry.value[:1]
            if kind == _LEASE:
                # Another reader is filling it: read the store, leave the fill to it.
                self.stats.misses += 1
                return await load()
            try:
                cached = _decode(memoryview(entry.value)[1:])
            except msgspec.DecodeError:
                cached = None  # not an entry of this version: taken over below
            if cached is not None and cached[0] == gen and (cached[2] is None or cached[2] > time.time()):
                self.stats.hits += 1
                if kind == _ABSENT:
                    return None
                return Item(record, cached[5], cached[1], cached[2], cached[3], cached[4])
        self.stats.misses += 1
        return await self._fill(record, key, gen, entry, load)

    async def _fill(
        self, record: str, key: str, gen: str, stale: Item | None, load: Callable[[], Awaitable[Item | None]]
    ) -> Item | None:
        lease = new_etag()
        now = time.time()
        take = StoredWrite(
            key,
            "",
            _LEASE + gen.encode(),
            lease,
            now + self.settings.lease_ttl,
            None,
            now,
            None if stale is None else stale.etag,
            stale is None,
        )
        try:
            async with asyncio.timeout(self.timeout):
                (taken,) = await self.backend.write(self.namespace, (take,))
        except _FAILURES as exc:
            self._failed(exc)
            return await load()
        if taken.error is not None:
            self._failed(taken.error)
            return await load()
        if not taken.ok:
            return await load()  # another reader took the lease first
        if self.on_step is not None:
            await self.on_step("leased", record)
        item = await load()
        if self.on_step is not None:
            await self.on_step("filling", record)
        await self._put_under_lease(key, gen, lease, item)
        return item

    async def _put_under_lease(self, key: str, gen: str, lease: str, item: Item | None) -> None:
        now = time.time()
        expires = now + self.settings.ttl
        body = b""  # nothing to keep: the lease is given back
        if item is None:
            body = _ABSENT + _encode((gen, "", None, None, None, b""))
        elif len(item.value) <= self.settings.max_item_bytes:
            item_expires = _seconds(item._expires)
            if item_expires is None or item_expires > now:
                if item_expires is not None:
                    expires = min(expires, item_expires)
                body = _VALUE + _encode(
                    (gen, item.etag, item_expires, item.content_type, _seconds(item._updated), item.value)
                )
        write = (
            StoredWrite(key, "", body, new_etag(), expires, None, now, lease)
            if body
            else StoredWrite(key, "", None, if_match=lease)
        )
        try:
            async with asyncio.timeout(self.timeout):
                (outcome,) = await self.backend.write(self.namespace, (write,))
        except _FAILURES as exc:
            self._failed(exc)
            return
        if outcome.error is not None:
            self._failed(outcome.error)
        elif not body:
            return
        elif outcome.ok:
            self.stats.fills += 1
        else:
            self.stats.fills_refused += 1  # an invalidation broke the lease

    # -- writes -----------------------------------------------------------------------

    async def invalidate(self, records: Sequence[str]) -> None:
        """Delete the entries of ``records`` (breaking their leases); a failure degrades this process."""
        if not records:
            return
        deletes = [StoredWrite(entry_key(r), "", None) for r in dict.fromkeys(records)]
        if self.on_step is not None:
            await self.on_step("invalidating", records[0])
        try:
            async with asyncio.timeout(self.timeout):
                # A delete is safe to resend: a fresh connection may reach a cache that the
                # pooled one lost (a restart), and every missed invalidation costs a new generation.
                for attempt in range(INVALIDATE_ATTEMPTS):
                    try:
                        outcomes = await self.backend.write(self.namespace, deletes)
                    except PrismError:
                        if attempt == INVALIDATE_ATTEMPTS - 1:
                            raise
                        continue
                    if all(o.error is None for o in outcomes) or attempt == INVALIDATE_ATTEMPTS - 1:
                        break
        except _FAILURES as exc:
            self.stats.invalidation_errors += len(deletes)
            self._failed(exc)
            return
        failed = [o.error for o in outcomes if o.error is not None]
        self.stats.invalidations += len(deletes) - len(failed)
        if failed:
            self.stats.invalidation_errors += len(failed)
            self._failed(failed[0])

    # -- failure and recovery -----------------------------------------------------------

    def _failed(self, exc: BaseException) -> None:
        self.stats.errors += 1
        if not self.degraded:
            log.warning(
                "the cache of %s failed (%s); reading the store until it answers again",
                self.namespace,
                str(exc) or type(exc).__name__,
            )
        self.degraded = True
        self._retry_at = time.monotonic() + self.settings.recovery_interval
        if self._recovery is None or self._recovery.done():
            # Recover without waiting for a request: a replica that missed invalidations
            # retires the old entries as soon as the cache answers again.
            with contextlib.suppress(RuntimeError):  # no running loop: the next read recovers
                self._recovery = asyncio.get_running_loop().create_task(
                    self._recover_soon(), name=f"prism-cache-recovery-{self.namespace}"
                )

    async def _recover_soon(self) -> None:
        while self.degraded:
            await asyncio.sleep(max(0.0, self._retry_at - time.monotonic()))
            if self.degraded and time.monotonic() >= self._retry_at:
                await self._recover()

    async def close(self) -> None:
        task, self._recovery = self._recovery, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _recover(self) -> bool:
        """Back to the cache once a new generation is written (at most every recovery_interval)."""
        if time.monotonic() < self._retry_at:
            self.stats.errors += 1
            return False
        self._retry_at = time.monotonic() + self.settings.recovery_interval
        if await self._new_generation(if_absent=False) is None:
            return False
        log.warning("the cache of %s answers again; its entries were retired", self.namespace)
        self.degraded = False
        return True

    async def _new_generation(self, *, if_absent: bool) -> str | None:
        """Write a new random generation (only where there is none with ``if_absent``); None on failure."""
        gen = os.urandom(12).hex()
        write = StoredWrite(_GEN, "", gen.encode(), new_etag(), None, None, time.time(), None, if_absent)
        try:
            async with asyncio.timeout(self.timeout):
                (outcome,) = await self.backend.write(self.namespace, (write,))
        except _FAILURES as exc:
            self._failed(exc)
            return None
        if outcome.error is not None:
            self._failed(outcome.error)
            return None
        return gen if outcome.ok else None

    def describe(self) -> dict[str, Any]:
        return {"degraded": self.degraded, **self.stats.as_dict()}
