"""Values larger than one DynamoDB item, stored as chunk items behind a manifest.

A write puts the chunks under a fresh version first and then switches the manifest
(the item itself) with its condition; only after the switch are the chunks of the
version it replaced deleted. A reader reads the manifest, then that version's chunks
with a consistent read: chunks are never changed in place, so what it assembles is
exactly one written value, and when a concurrent switch has already deleted them it
reads the manifest again (``ValueReader``).
"""

from __future__ import annotations

import asyncio
import logging
import time

from prism.backends.dynamodb.calls import Calls
from prism.backends.dynamodb.layout import (
    PK,
    SK,
    VALUE,
    Attrs,
    assemble,
    chunk_items,
    chunk_keys,
    chunk_ref,
    is_live,
)
from prism.errors import BackendUnavailable, PrismError

__all__ = ["drop_chunks", "drop_replaced", "read_values", "write_chunks"]

logger = logging.getLogger("prism.backends.dynamodb")


async def write_chunks(
    calls: Calls, version: str, value: bytes, expires_at: float | None, deadline: float
) -> None:
    """Store ``value`` as the chunk items of ``version``; all of them or an error (and none left)."""
    requests = [{"PutRequest": {"Item": item}} for item in chunk_items(version, value, expires_at)]
    failed = await calls.batch_write(requests, deadline)
    if failed:
        await drop_chunks(calls, version, len(requests))
        raise next(iter(failed.values()))


async def drop_chunks(calls: Calls, version: str, count: int) -> None:
    """Delete the chunk items of ``version``; a failure is logged, never raised.

    Nothing references these chunks any more, so a failure leaves only unread items
    (removed by the table's TTL when the value had a ttl).
    """
    requests = [{"DeleteRequest": {"Key": key}} for key in chunk_keys(version, count)]
    try:
        failed = await calls.batch_write(requests)
    except PrismError as exc:
        failed = {0: exc}
    if failed:
        logger.warning(
            "could not delete %d stale chunk item(s) of version %s: %s",
            len(failed),
            version,
            next(iter(failed.values())),
        )


async def drop_replaced(calls: Calls, old: Attrs | None) -> None:
    """After a manifest switch, delete the chunks of the value it replaced (if it had any)."""
    if old is not None and (ref := chunk_ref(old)) is not None:
        await drop_chunks(calls, *ref)


async def _reread(calls: Calls, attrs: Attrs, deadline: float) -> Attrs | None:
    response = await calls.call(
        "get_item",
        {"TableName": calls.table, "Key": {PK: attrs[PK], SK: attrs[SK]}, "ConsistentRead": True},
        deadline,
    )
    item: Attrs | None = response.get("Item")
    return item


async def read_values(calls: Calls, found: list[Attrs], deadline: float) -> list[tuple[Attrs, bytes] | None]:
    """Each live item of ``found`` with its whole value, or None where it has gone meanwhile.

    Chunked values are fetched in one batch; an item whose chunks were deleted by a
    concurrent switch is read again (consistently) until a complete version is seen.
    """
    out: list[tuple[Attrs, bytes] | None] = [None] * len(found)
    todo: dict[int, Attrs] = {}
    for i, attrs in enumerate(found):
        inline = attrs.get(VALUE)
        if inline is not None:
            out[i] = (attrs, inline["B"])
        else:
            todo[i] = attrs
    seen: dict[int, str] = {}
    while todo:
        refs = {i: chunk_ref(a) for i, a in todo.items()}
        keys = [k for ref in refs.values() if ref is not None for k in chunk_keys(*ref)]
        chunks = await calls.batch_get(keys, consistent=True, deadline=deadline) if keys else {}
        missing: dict[int, Attrs] = {}
        for i, attrs in todo.items():
            ref = refs[i]
            value = None
            if ref is not None:
                parts = [chunks.get((k[PK]["S"], k[SK]["S"])) for k in chunk_keys(*ref)]
                value = assemble(attrs, parts)
            if value is not None:
                out[i] = (attrs, value)
                continue
            if ref is not None and seen.get(i) == ref[0]:
                raise BackendUnavailable(
                    f"DynamoDB item {attrs[PK]['S']!r}/{attrs[SK]['S']!r} points at chunks of version "
                    f"{ref[0]} that are missing"
                )
            if ref is not None:
                seen[i] = ref[0]
            missing[i] = attrs
        if not missing:
            break
        again = await asyncio.gather(*(_reread(calls, a, deadline) for a in missing.values()))
        now = time.time()
        todo = {}
        for i, fresh in zip(missing, again, strict=True):
            if fresh is None or not is_live(fresh, now):
                continue
            inline = fresh.get(VALUE)
            if inline is not None:
                out[i] = (fresh, inline["B"])
            else:
                todo[i] = fresh
    return out
