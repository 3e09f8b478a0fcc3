"""Value types shared by every layer: what users pass in and get back.

These hold no behaviour beyond construction, so backends, the KeyValue layer and
the gateway can all speak them without importing one another.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, TypeVar

import msgspec

from prism.errors import PrismError

__all__ = [
    "DEFAULT_MAX_VALUE_BYTES",
    "MAX_KEY_BYTES",
    "Capabilities",
    "Delete",
    "Item",
    "Page",
    "Put",
    "StoredWrite",
    "WriteOutcome",
    "WriteResult",
    "epoch_to_datetime",
]

MAX_KEY_BYTES = 1024
DEFAULT_MAX_VALUE_BYTES = 4 * 1024 * 1024

T = TypeVar("T")


def epoch_to_datetime(ts: float | None) -> datetime | None:
    """Seconds since the epoch -> aware UTC datetime (None stays None)."""
    return None if ts is None else datetime.fromtimestamp(ts, UTC)


class Item(msgspec.Struct, frozen=True):
    """One stored item: its key, its bytes, and their metadata.

    For a flat entry ``key`` is the entry's key; inside a record it is the item key.
    ``etag`` changes on every write; ``expires_at`` is an aware UTC datetime or None.
    """

    key: str
    value: bytes
    etag: str
    expires_at: datetime | None = None
    content_type: str | None = None
    updated_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Put:
    """A write of ``value`` under ``key``, for put_many, put_items and transact.

    ``ttl`` is seconds (int, float or timedelta); ``if_match`` requires the current etag;
    ``if_absent`` requires that no live item exists.
    """

    key: str
    value: bytes
    ttl: float | timedelta | None = None
    content_type: str | None = None
    if_match: str | None = None
    if_absent: bool = False


@dataclass(frozen=True, slots=True)
class Delete:
    """A delete of ``key``, optionally only when its etag is ``if_match``."""

    key: str
    if_match: str | None = None


@dataclass(frozen=True, slots=True)
class WriteResult:
    """The outcome of one op of a batch: ``ok`` and the new ``etag``, or the ``error``.

    ``existed`` tells whether a live item was there before the write (a put that
    created, a delete that found nothing).
    """

    key: str
    ok: bool
    etag: str | None = None
    error: PrismError | None = None
    existed: bool = False


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a scan (``keys``) or a record read (``items``).

    ``next_page_token`` is None on the last page; pass it back to continue.
    """

    keys: list[T] = field(default_factory=list)
    next_page_token: str | None = None

    @property
    def items(self) -> list[T]:
        """The page's entries (alias of ``keys``, read better for record pages)."""
        return self.keys

    def __iter__(self) -> Any:
        return iter(self.keys)

    def __len__(self) -> int:
        return len(self.keys)


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a backend honours. The conformance suite and the docs matrix read this."""

    ttl: bool = True
    etag: bool = True
    transactions: bool = True
    range_reads: bool = True
    prefix_scan: bool = True
    consistent_reads: bool = True
    max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES
    max_transaction_ops: int | None = None
    multi_process: bool = True

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


class StoredWrite(msgspec.Struct):
    """One validated write as a backend receives it.

    ``value`` None means delete. ``etag`` is the new etag (puts only); times are epoch
    seconds. Conditions are evaluated against the live item (an expired item is absent).
    """

    record: str
    key: str
    value: bytes | None
    etag: str = ""
    expires_at: float | None = None
    content_type: str | None = None
    updated_at: float = 0.0
    if_match: str | None = None
    if_absent: bool = False


class WriteOutcome(msgspec.Struct):
    """A backend's answer for one StoredWrite: applied or not, and whether a live item existed."""

    ok: bool
    existed: bool = False
    error: PrismError | None = None
