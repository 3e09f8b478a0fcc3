"""Planning one TransactWriteItems call from a Prism transaction.

DynamoDB allows one action per item in a transaction and returns no old images, so
the backend reads the touched items first (consistently), runs the ops in order on
that snapshot exactly as the contract says (conditions of later ops see the earlier
ops' effects), and sends one action per item: its final put or delete, conditioned
on the item still being as it was read. If any item changed in between, the
transaction is cancelled and planned again from a fresh read; so the outcomes
(``existed``, failed conditions) are those of the state the transaction applied to.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from prism.backends.dynamodb.layout import (
    CHUNK_VERSION,
    ETAG,
    INLINE_VALUE_BYTES,
    Attrs,
    condition,
    is_live,
)
from prism.model import StoredWrite, WriteOutcome, transaction_refused

__all__ = ["TRANSACTION_INLINE_BYTES", "chunked_in_transaction", "pinned_action", "simulate"]

#: Most value bytes sent inside one TransactWriteItems request (DynamoDB allows 4 MB,
#: but bodies over 1 MiB make aiohttp warn); larger values of a transaction go to
#: chunk items first, written before the transaction.
TRANSACTION_INLINE_BYTES = 500_000

Address = tuple[str, str]


def simulate(
    ops: Sequence[StoredWrite], addresses: Sequence[Address], state: dict[Address, Attrs], now: float
) -> list[WriteOutcome]:
    """The outcome of each op applied in order to ``state``; none applied when a condition fails."""
    etags: dict[Address, str | None] = {}
    for address in dict.fromkeys(addresses):
        attrs = state.get(address)
        etags[address] = attrs[ETAG]["S"] if attrs is not None and is_live(attrs, now) else None
    outcomes = []
    for i, (op, address) in enumerate(zip(ops, addresses, strict=True)):
        current = etags[address]
        if (op.if_match is not None and current != op.if_match) or (op.if_absent and current is not None):
            return transaction_refused(len(ops), i, current is not None)
        outcomes.append(WriteOutcome(True, current is not None))
        etags[address] = op.etag if op.value is not None else None
    return outcomes


def chunked_in_transaction(ops: Sequence[StoredWrite], final: dict[Address, int]) -> set[int]:
    """Indexes of the final puts whose values go to chunk items rather than into the request."""
    puts = sorted(
        (i for i in final.values() if ops[i].value is not None),
        key=lambda i: len(ops[i].value or b""),
        reverse=True,
    )
    chunked = {i for i in puts if len(ops[i].value or b"") > INLINE_VALUE_BYTES}
    inline = sum(len(ops[i].value or b"") for i in puts if i not in chunked)
    for i in puts:
        if inline <= TRANSACTION_INLINE_BYTES:
            break
        if i not in chunked:
            chunked.add(i)
            inline -= len(ops[i].value or b"")
    return chunked


def pinned_action(
    table: str, key: Attrs, item: Attrs | None, read: Attrs | None, now: float
) -> dict[str, Any]:
    """One TransactItem: put ``item`` (or delete ``key`` when None) if the item is still as ``read``."""
    live = read is not None and is_live(read, now)
    body: dict[str, Any] = {"TableName": table}
    if item is None:
        body["Key"] = key
    else:
        body["Item"] = item
    condition(body, etag=read[ETAG]["S"] if live and read is not None else None, absent=not live, now=now)
    return {"Delete": body} if item is None else {"Put": body}


def replaced_chunks(read: Attrs | None) -> bool:
    return read is not None and CHUNK_VERSION in read
