"""Value types shared by every layer: what users pass in and get back.

These hold no behaviour beyond construction, so backends, the KeyValue layer and
the gateway can all speak them without importing one another.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, Literal, TypeVar

import msgspec

from prism.errors import PrismError

__all__ = [
    "DEFAULT_MAX_VALUE_BYTES",
    "MAX_KEY_BYTES",
    "Capabilities",
    "Change",
    "ChangeOp",
    "Delete",
    "Event",
    "EventPage",
    "EventResult",
    "Item",
    "Page",
    "Principal",
    "Put",
    "StoredWrite",
    "WriteOutcome",
    "WriteResult",
    "condition_failed",
    "epoch_to_datetime",
    "transaction_refused",
]

MAX_KEY_BYTES = 1024
DEFAULT_MAX_VALUE_BYTES = 4 * 1024 * 1024

T = TypeVar("T")


def epoch_to_datetime(ts: float | None) -> datetime | None:
    """Seconds since the epoch -> aware UTC datetime (None stays None)."""
    return None if ts is None else datetime.fromtimestamp(ts, UTC)


def _when(value: datetime | float | None) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromtimestamp(value, UTC)


class Item(msgspec.Struct, frozen=True):
    """One stored item: its key, its bytes, and their metadata.

    For a flat entry ``key`` is the entry's key; inside a record it is the item key.
    ``etag`` changes on every write; ``expires_at`` and ``updated_at`` are aware UTC
    datetimes (or None). Backends may pass them as epoch seconds: the datetimes are
    then made only when read, which keeps batch reads cheap.
    """

    key: str
    value: bytes
    etag: str
    _expires: datetime | float | None = None
    content_type: str | None = None
    _updated: datetime | float | None = None

    @property
    def expires_at(self) -> datetime | None:
        """When the item expires (aware UTC), or None."""
        return _when(self._expires)

    @property
    def updated_at(self) -> datetime | None:
        """When the item was last written (aware UTC), or None if the backend does not say."""
        return _when(self._updated)

    def with_key(self, key: str) -> Item:
        """The same item under another key."""
        return Item(key, self.value, self.etag, self._expires, self.content_type, self._updated)

    def _fields(self) -> tuple[Any, ...]:
        return (self.key, self.value, self.etag, self.expires_at, self.content_type, self.updated_at)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Item) and self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash((self.key, self.etag))

    def __repr__(self) -> str:
        value = repr(self.value[:64]) + ("..." if len(self.value) > 64 else "")
        return (
            f"Item(key={self.key!r}, value={value}, etag={self.etag!r}, "
            f"expires_at={self.expires_at!r}, content_type={self.content_type!r})"
        )


class Put(msgspec.Struct, frozen=True):
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


class Delete(msgspec.Struct, frozen=True):
    """A delete of ``key``, optionally only when its etag is ``if_match``."""

    key: str
    if_match: str | None = None


class WriteResult(msgspec.Struct, frozen=True):
    """The outcome of one op of a batch: ``ok`` and the new ``etag``, or the ``error``.

    ``existed`` tells whether a live item was there before the write (a put that
    created, a delete that found nothing); it is None for the puts of
    ``put_many(..., existed=False)``, which did not ask.
    """

    key: str
    ok: bool
    etag: str | None = None
    error: PrismError | None = None
    existed: bool | None = False


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
    #: Atomic shared token buckets (``Backend.take_token``), for rate limits across processes.
    token_buckets: bool = False
    #: A TimeSeries store (``Backend.timeseries_driver``) on the same connection.
    timeseries: bool = False
    #: Items written with their given etag and times (``Backend.restore_items``), for live migration.
    restore: bool = True
    #: A change feed (``Backend.read_changes``): ``Namespace.watch`` and resumable cursors.
    watch: bool = False
    #: The change feed reports expired items (op ``"expire"``); without it they vanish unreported.
    watch_expiry: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


ChangeOp = Literal["put", "delete", "expire"]


class Change(msgspec.Struct, frozen=True, kw_only=True):
    """One committed change of a namespace, as ``Namespace.watch`` delivers it.

    ``key`` is the entry's key (a record's id) and ``item_key`` the item within the
    record ("" for a flat entry). ``op`` is ``"put"``, ``"delete"`` or ``"expire"``;
    ``etag`` is the new etag of a put (None otherwise); ``updated_at`` is when the
    change was committed (for an expiry: when the item expired). ``cursor`` is an
    opaque string: pass it as ``watch(after=...)`` to resume after this change.
    """

    key: str
    op: ChangeOp
    cursor: str
    item_key: str = ""
    etag: str | None = None
    updated_at: datetime | None = None


class StoredWrite(msgspec.Struct):
    """One validated write as a backend receives it.

    ``value`` None means delete. ``etag`` is the new etag (puts only); times are epoch
    seconds. Conditions are evaluated against the live item (an expired item is absent).
    ``blind`` marks an unconditional put whose caller does not ask whether an item was
    there: a backend may skip reading what it replaces, and report ``existed`` False.
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
    blind: bool = False


class WriteOutcome(msgspec.Struct):
    """A backend's answer for one StoredWrite: applied or not, and whether a live item existed.

    A failed condition (``if_match`` / ``if_absent``) is data, not an exception:
    ``condition_failed`` is set (see :func:`condition_failed`), and the KeyValue layer
    alone turns it into ``PreconditionFailed``, with one message for every backend.
    ``error`` is any other failure of this op (a value too large, say). An op of a
    transaction that was not applied because another op's condition failed is
    ``WriteOutcome(False)``.
    """

    ok: bool
    existed: bool = False
    error: PrismError | None = None
    condition_failed: bool = False


def condition_failed(existed: bool) -> WriteOutcome:
    """The outcome of an op whose condition did not hold (nothing written)."""
    return WriteOutcome(False, existed, None, True)


def transaction_refused(count: int, index: int, existed: bool) -> list[WriteOutcome]:
    """The outcomes of ``count`` ops of a transaction that applied none: op ``index``'s condition failed."""
    return [condition_failed(existed) if i == index else WriteOutcome(False) for i in range(count)]


#: How each kind of credential is named in an owner string (see :class:`Principal`).
_OWNER_LABELS = {"api_key": "apikey", "jwt": "jwt", "mtls": "mtls"}


def _owner_part(text: str) -> str:
    # ":" separates the parts of an owner string, so it is escaped inside one (and "%" first).
    return text.replace("%", "%25").replace(":", "%3A")


@dataclass(frozen=True, slots=True)
class Principal:
    """The verified caller, for the gateway and the streaming service alike.

    A subject, its tenant (None: none), its roles, and how it proved itself: ``kind``
    is ``api_key``, ``jwt``, ``mtls`` or ``anonymous`` for the gateway's credentials,
    anything else for an authenticator of one kind of credential (the standalone
    streaming server's tokens are ``user``). ``issuer`` says who vouches for the
    subject when the kind has several (the ``iss`` of a JWT).

    ``owner`` is the caller's identity as one string, and whatever belongs to a
    caller is stored under it: ``apikey:NAME``, ``jwt:ISSUER:SUB`` (``jwt::SUB`` for a
    token without ``iss``), ``mtls:NAME``, ``anonymous``, with ``:`` and ``%`` inside a
    part percent-escaped so it is never ambiguous; for other kinds the subject. Two
    principals are the same caller only when their owners are equal: an API key and
    a token whose subject is the key's name are different callers.
    """

    subject: str
    tenant: str | None = None
    roles: frozenset[str] = frozenset()
    kind: str = "user"
    issuer: str | None = None
    owner: str = ""

    def __post_init__(self) -> None:
        if not self.owner:
            object.__setattr__(self, "owner", _owner_of(self.kind, self.issuer, self.subject))


def _owner_of(kind: str, issuer: str | None, subject: str) -> str:
    if kind == "anonymous":
        return "anonymous"
    label = _OWNER_LABELS.get(kind)
    if label is None:
        return subject
    if issuer is None and kind != "jwt":
        return f"{label}:{_owner_part(subject)}"
    return f"{label}:{_owner_part(issuer or '')}:{_owner_part(subject)}"


class Event(msgspec.Struct, frozen=True, kw_only=True):
    """One immutable event of a time series: ``(time, id, key) -> value``.

    ``time`` is an aware datetime (microsecond precision); ``id`` names the event
    and ``key`` an item within it ("" for the whole event). Writing the same
    ``(time, id, key)`` again is a no-op when ``value`` and ``content_type`` are equal.
    """

    time: datetime
    id: str
    value: bytes
    key: str = ""
    content_type: str | None = None


class EventResult(msgspec.Struct, frozen=True):
    """The outcome of writing one event: ``ok``, whether it ``existed`` already, or the ``error``.

    ``error`` is ``PreconditionFailed`` when the event's identity holds a different value.
    """

    id: str
    time: datetime
    key: str
    ok: bool
    existed: bool = False
    error: PrismError | None = None


@dataclass(frozen=True, slots=True)
class EventPage:
    """One page of a time-series read; ``next_page_token`` is None on the last page."""

    events: list[Event] = field(default_factory=list)
    next_page_token: str | None = None

    def __iter__(self) -> Any:
        return iter(self.events)

    def __len__(self) -> int:
        return len(self.events)
