"""The contract every TimeSeries driver implements, beside the KeyValue ``Backend``.

A TimeSeries namespace holds series; a series holds immutable events addressed by
``(time, id, key)``, where ``time`` is integer microseconds since the epoch. Events are
stored in time slices of ``slice_seconds``: slice ``n`` holds the times in
``[n * slice_us, (n + 1) * slice_us)``, and retention drops whole slices, never rows.

A driver belongs to one open backend and talks through that backend's connection
(one engine, one connection): ``Backend.timeseries_driver`` names its class, and
``capabilities.timeseries`` declares it. The TimeSeries layer above validates input,
turns ``datetime`` into microseconds, applies the accept window and the retention
horizon, and makes page tokens, so a driver only stores and answers. Its
obligations, checked by ``prism.testing.timeseries``:

* ``write`` applies each event on its own and reports, per event, whether it was
  created, was already there with the same value and content type, or conflicts;
  a conflicting event leaves the stored one untouched;
* ``read`` returns events with ``start <= time < end`` in identity order
  (``(time, id, key)``, by code point), ascending or descending, strictly after
  ``after`` in that order, at most ``limit``;
* ``drop_slices`` removes every slice below a slice number as a whole (a table, a
  partition, a key set), never event by event where the engine can avoid it;
* driver exceptions leave only as ``prism.errors`` types.
"""

from __future__ import annotations

import enum
import hashlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import msgspec

if TYPE_CHECKING:
    from prism.backends.base import Backend

__all__ = [
    "EventWrite",
    "Identity",
    "SeriesSpec",
    "StoredEvent",
    "TimeSeriesDriver",
    "compare_existing",
    "driver_for",
    "short_name",
    "slice_label",
]

#: An event's place in a series: (microseconds, event id, item key).
Identity = tuple[int, str, str]


@dataclass(frozen=True, slots=True)
class SeriesSpec:
    """What a driver needs to know about a TimeSeries namespace."""

    ns: str
    slice_seconds: int
    retention_seconds: int | None = None

    @property
    def slice_us(self) -> int:
        return self.slice_seconds * 1_000_000

    def slice_of(self, time_us: int) -> int:
        """The number of the slice holding ``time_us``."""
        return time_us // self.slice_us

    def slices_between(self, start_us: int, end_us: int) -> tuple[int, int]:
        """The first and last slice numbers that overlap ``[start_us, end_us)`` (end > start)."""
        return self.slice_of(start_us), self.slice_of(end_us - 1)

    def expires_at(self, slice_no: int) -> int | None:
        """Epoch seconds after which slice ``slice_no`` is past retention (None: never)."""
        if self.retention_seconds is None:
            return None
        return (slice_no + 1) * self.slice_seconds + self.retention_seconds


class StoredEvent(msgspec.Struct, frozen=True, array_like=True):
    """One event as a driver stores it (``time`` in microseconds since the epoch)."""

    time: int
    id: str
    key: str
    value: bytes
    content_type: str | None = None

    @property
    def identity(self) -> Identity:
        return (self.time, self.id, self.key)

    def same_content(self, value: bytes, content_type: str | None) -> bool:
        return self.value == value and self.content_type == content_type


class EventWrite(enum.Enum):
    """What writing one event did."""

    CREATED = "created"
    #: The identity already held the same value and content type: nothing changed.
    EXISTED = "existed"
    #: The identity holds a different value: nothing changed.
    CONFLICT = "conflict"


def compare_existing(found: StoredEvent | None, event: StoredEvent) -> EventWrite:
    """The outcome of writing ``event`` where ``found`` is already stored (None: nothing)."""
    if found is None:
        return EventWrite.CREATED
    if found.same_content(event.value, event.content_type):
        return EventWrite.EXISTED
    return EventWrite.CONFLICT


def short_name(ns: str, length: int = 16) -> str:
    """A fixed-length identifier-safe name for namespace ``ns`` (table, partition and key names)."""
    return hashlib.sha256(ns.encode("utf-8")).hexdigest()[:length]


def slice_label(slice_no: int) -> str:
    """Slice ``slice_no`` as identifier characters (``n`` for a minus sign)."""
    return str(slice_no).replace("-", "n")


class TimeSeriesDriver(ABC):
    """Stores the events of TimeSeries namespaces on one open backend's connection."""

    #: Most UTF-8 bytes of an event id and item key together (None: only each one's own limit).
    max_identity_bytes: int | None = None

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    @property
    def name(self) -> str:
        return self.backend.name

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release what the driver took (never the backend's connection); safe to call twice.

        Drivers create their tables and other shared structures lazily, on first use.
        """

    @abstractmethod
    async def write(self, spec: SeriesSpec, series: str, events: Sequence[StoredEvent]) -> list[EventWrite]:
        """Store each event on its own (identities are distinct); one outcome per event, in order."""

    @abstractmethod
    async def read(
        self,
        spec: SeriesSpec,
        series: str,
        start_us: int,
        end_us: int,
        after: Identity | None,
        newest_first: bool,
        limit: int,
    ) -> list[StoredEvent]:
        """Events with ``start_us <= time < end_us`` after ``after`` in identity order, at most ``limit``."""

    @abstractmethod
    async def delete_series(self, spec: SeriesSpec, series: str) -> None:
        """Remove every event of ``series``."""

    @abstractmethod
    async def drop_slices(self, spec: SeriesSpec, before: int) -> int:
        """Drop every slice numbered below ``before`` as a whole; the number of slices dropped."""


def driver_for(backend: Backend) -> TimeSeriesDriver:
    """The TimeSeries driver of ``backend``, or Unsupported saying why it has none."""
    import importlib

    from prism.errors import InvalidArgument, Unsupported

    target = type(backend).timeseries_driver
    if not backend.capabilities.timeseries or target is None:
        reason = type(backend).timeseries_unsupported or "it declares no TimeSeries store"
        raise Unsupported(f"the {backend.name} backend has no TimeSeries: {reason}")
    module_name, _, attr = target.partition(":")
    cls = getattr(importlib.import_module(module_name), attr, None)
    if not (isinstance(cls, type) and issubclass(cls, TimeSeriesDriver)):
        raise InvalidArgument(f"{target!r} is not a prism TimeSeriesDriver class")
    return cls(backend)
