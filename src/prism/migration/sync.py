"""Bringing addresses of the shadow store in step with the primary, safely under concurrent writes.

Every copy is followed by a fresh read of the source: when the source changed since
the item was read, the address goes round again, now with copies conditional on what
the copier last saw in the destination (its etag, or its absence). A key written or
deleted while it was being copied therefore ends as the source has it: a newer
shadow write is not lost, and a deleted key does not come back.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from prism.backends.base import Backend, restore_op
from prism.migration.state import RepairEntry, VerifyReport
from prism.model import Item, StoredWrite

__all__ = [
    "Pacer",
    "copy_items",
    "drain_repairs",
    "record_addresses",
    "record_items",
    "same",
    "sync_addresses",
    "verify_namespace",
]

Address = tuple[str, str]
#: Most ops of one write to the destination.
WRITE_CHUNK = 500
#: Most items read from one record per call.
RANGE_PAGE = 1000
#: Later looks at a difference before verify counts it.
RECHECKS = 3
#: Keys of differing items a verify report keeps.
MAX_SAMPLES = 20


def same(a: Item | None, b: Item | None) -> bool:
    """Both absent, or the same write (etags are unique per write)."""
    if a is None or b is None:
        return a is None and b is None
    return a.etag == b.etag


def _consistent(backend: Backend) -> bool:
    return backend.capabilities.consistent_reads


class Pacer:
    """Spaces work out to at most ``rate`` units per second (None: no limit)."""

    def __init__(self, rate: float | None) -> None:
        self.rate = rate
        self._next = time.monotonic()

    async def take(self, n: int) -> None:
        if not self.rate or n <= 0:
            return
        now = time.monotonic()
        start = max(self._next, now)
        self._next = start + n / self.rate
        if start > now:
            await asyncio.sleep(start - now)


async def _write_checked(dst: Backend, ns: str, ops: Sequence[StoredWrite]) -> list[bool]:
    """Apply ``ops``; True where applied, False where a condition failed; other failures raise."""
    out: list[bool] = []
    for i in range(0, len(ops), WRITE_CHUNK):
        for outcome in await dst.write(ns, ops[i : i + WRITE_CHUNK]):
            if outcome.error is not None:
                raise outcome.error
            out.append(outcome.ok)
    return out


async def sync_addresses(
    src: Backend, dst: Backend, ns: str, addresses: Sequence[Address], *, max_rounds: int = 10
) -> tuple[int, int, list[Address]]:
    """Make each address of ``dst`` hold what ``src`` holds: (copied, already equal, unresolved)."""
    pending = list(dict.fromkeys(addresses))
    copied = skipped = 0
    for round_ in range(max_rounds):
        if not pending:
            break
        theirs = await src.get_many(ns, pending, consistent=_consistent(src))
        ours = await dst.get_many(ns, pending, consistent=_consistent(dst))
        ops: list[StoredWrite] = []
        wrote: list[tuple[Address, Item | None]] = []
        for address, want, have in zip(pending, theirs, ours, strict=True):
            if same(want, have):
                if round_ == 0:
                    skipped += 1
                continue
            record, key = address
            if want is None:
                assert have is not None
                ops.append(StoredWrite(record, key, None, if_match=have.etag))
            else:
                item = want.with_key(key)
                ops.append(
                    restore_op(
                        record, item, if_match=None if have is None else have.etag, if_absent=have is None
                    )
                )
            wrote.append((address, want))
        pending = []
        if not ops:
            break
        applied = await _write_checked(dst, ns, ops)
        check = [w for w, ok in zip(wrote, applied, strict=True) if ok]
        pending = [address for (address, _), ok in zip(wrote, applied, strict=True) if not ok]
        pending += await _changed_since(src, ns, check)
        copied += len(check)
    return copied, skipped, pending


async def _changed_since(src: Backend, ns: str, seen: Sequence[tuple[Address, Item | None]]) -> list[Address]:
    """The addresses whose source state is no longer the one copied."""
    if not seen:
        return []
    now = await src.get_many(ns, [a for a, _ in seen], consistent=_consistent(src))
    return [address for (address, was), current in zip(seen, now, strict=True) if not same(was, current)]


async def record_items(backend: Backend, ns: str, record: str) -> list[Item]:
    items: list[Item] = []
    after = None
    while True:
        page = await backend.get_range(
            ns, record, None, None, after, RANGE_PAGE, consistent=_consistent(backend)
        )
        items += page
        if len(page) < RANGE_PAGE:
            return items
        after = page[-1].key


async def record_addresses(src: Backend, dst: Backend, ns: str, entry: RepairEntry) -> list[Address]:
    """The addresses a repair entry covers: one, or every item of the record in either store."""
    if entry.key is not None:
        return [(entry.record, entry.key)]
    keys = {i.key for i in await record_items(src, ns, entry.record)}
    keys |= {i.key for i in await record_items(dst, ns, entry.record)}
    return [(entry.record, k) for k in sorted(keys)]


async def copy_items(
    src: Backend, dst: Backend, ns: str, items: Sequence[tuple[str, Item]], *, max_rounds: int = 10
) -> tuple[int, int, list[Address]]:
    """Copy items read from ``src`` (record, item) into ``dst``: (copied, skipped, unresolved).

    The first pass writes them unconditionally, in batches (the common case of a
    backfill: the destination lacks them). That may briefly overwrite a newer shadow
    write, but only one made after the item was read from ``src``: the re-read of
    ``src`` that follows finds the change, and :func:`sync_addresses` brings those
    addresses in step, a key deleted meanwhile included.
    """
    ops = [restore_op(record, item) for record, item in items]
    applied = await _write_checked(dst, ns, ops)
    check = [((r, i.key), i) for (r, i), ok in zip(items, applied, strict=True) if ok]
    changed = await _changed_since(src, ns, check)
    copied = len(check) - len(changed)
    retry = [(r, i.key) for (r, i), ok in zip(items, applied, strict=True) if not ok] + changed
    if not retry:
        return copied, 0, []
    more, skipped, unresolved = await sync_addresses(src, dst, ns, retry, max_rounds=max_rounds)
    return copied + more, skipped, unresolved


async def _still_different(src: Backend, dst: Backend, ns: str, addresses: list[Address]) -> list[Address]:
    out: list[Address] = []
    for i in range(0, len(addresses), RANGE_PAGE):
        chunk = addresses[i : i + RANGE_PAGE]
        theirs = await src.get_many(ns, chunk, consistent=_consistent(src))
        ours = await dst.get_many(ns, chunk, consistent=_consistent(dst))
        for address, a, b in zip(chunk, theirs, ours, strict=True):
            if (a is None) != (b is None) or (a is not None and b is not None and _differs(a, b)):
                out.append(address)
    return out


def _differs(a: Item, b: Item) -> bool:
    """Different writes, or metadata lost; expiry times within a millisecond agree (stores round them)."""
    if (a.value, a.etag, a.content_type) != (b.value, b.etag, b.content_type):
        return True
    x, y = a.expires_at, b.expires_at
    if x is None or y is None:
        return x is not y
    return abs((x - y).total_seconds()) >= 0.001


async def _scan_all(backend: Backend, ns: str, page: int) -> list[str]:
    ids: list[str] = []
    after = None
    while True:
        batch = await backend.scan(ns, "", after, page)
        ids += batch
        if len(batch) < page:
            return ids
        after = batch[-1]


async def verify_namespace(
    src: Backend, dst: Backend, ns: str, *, page: int = 500, recheck_delay: float = 0.2
) -> VerifyReport:
    """Compare every item of ``ns`` in both stores: keys missing from ``dst``, extra in it, or different.

    A difference is read again after ``recheck_delay`` seconds and counted only when
    it persists, so writes in flight while the stores are compared are not reported.
    """
    report = VerifyReport()
    suspects: list[Address] = []
    src_ids = await _scan_all(src, ns, page)
    dst_ids = set(await _scan_all(dst, ns, page))
    for record in sorted(set(src_ids) | dst_ids):
        theirs = {i.key: i for i in await record_items(src, ns, record)}
        ours = {i.key: i for i in await record_items(dst, ns, record)}
        for key in theirs.keys() | ours.keys():
            report.checked += 1
            a, b = theirs.get(key), ours.get(key)
            if a is None or b is None or _differs(a, b):
                suspects.append((record, key))
    # A write lands on the primary a moment before its shadow: a difference counts only
    # when it is still there at every one of RECHECKS later looks.
    for _ in range(RECHECKS):
        if not suspects:
            break
        if recheck_delay > 0:
            await asyncio.sleep(recheck_delay)
        suspects = await _still_different(src, dst, ns, suspects)
    for i in range(0, len(suspects), RANGE_PAGE):
        chunk = suspects[i : i + RANGE_PAGE]
        theirs_now = await src.get_many(ns, chunk, consistent=_consistent(src))
        ours_now = await dst.get_many(ns, chunk, consistent=_consistent(dst))
        for (record, key), a, b in zip(chunk, theirs_now, ours_now, strict=True):
            if a is None and b is None:
                continue
            if b is None:
                report.missing += 1
            elif a is None:
                report.extra += 1
            elif _differs(a, b):
                report.different += 1
            else:
                continue
            if len(report.samples) < MAX_SAMPLES:
                report.samples.append(f"{record}/{key}" if key else record)
    report.done = True
    return report


async def drain_repairs(
    src: Backend, dst: Backend, ns: str, entries: Sequence[RepairEntry], *, max_rounds: int = 10
) -> list[Address]:
    """Bring every address of ``entries`` in step; the unresolved ones (PrismError propagates)."""
    addresses: list[Address] = []
    for entry in entries:
        addresses += await record_addresses(src, dst, ns, entry)
    if not addresses:
        return []
    _, _, unresolved = await sync_addresses(src, dst, ns, addresses, max_rounds=max_rounds)
    return unresolved
