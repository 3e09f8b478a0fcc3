"""A TimeSeries handle: the TimeSeries API over one namespace of a store."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from prism.backends.timeseries import EventWrite, Identity, SeriesSpec, StoredEvent, TimeSeriesDriver
from prism.errors import InvalidArgument, InvalidKey, PreconditionFailed, PrismError, StoreClosed
from prism.kv.tokens import decode_token, encode_token
from prism.kv.validation import check_content_type, check_id, check_item_key, check_limit, check_value
from prism.model import Event, EventPage, EventResult
from prism.timeseries.settings import TimeSeriesSettings

if TYPE_CHECKING:
    from prism.kv.store import Store

__all__ = ["DEFAULT_PAGE_BYTES", "MAX_BATCH", "MAX_PAGE_LIMIT", "TimeSeries", "from_micros", "to_micros"]

log = logging.getLogger("prism.timeseries")

#: Most events one read returns.
MAX_PAGE_LIMIT = 1000
#: Most events one write takes.
MAX_BATCH = 1000
#: Most value bytes one page holds unless the read asks for fewer (always at least one event).
DEFAULT_PAGE_BYTES = 4 * 1024 * 1024
#: The KeyValue namespace that keeps each TimeSeries namespace's slice length.
LAYOUT_NAMESPACE = "prism.timeseries.layouts"
#: Bounds standing in for "no start" and "no end" (far outside any datetime).
_NO_START = -(1 << 62)
_NO_END = 1 << 62

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)


def to_micros(when: object, what: str) -> int:
    """An aware datetime as integer microseconds since the epoch."""
    if not isinstance(when, datetime):
        raise InvalidArgument(f"{what} must be a datetime, got {type(when).__name__}")
    if when.tzinfo is None or when.utcoffset() is None:
        raise InvalidArgument(f"{what} must be timezone-aware (say tzinfo=datetime.UTC), got {when!r}")
    return (when - _EPOCH) // _MICRO


def from_micros(micros: int) -> datetime:
    """Microseconds since the epoch as an aware UTC datetime."""
    return _EPOCH + timedelta(0, 0, micros)


def _last(identity: Identity) -> str:
    return f"{identity[0]}\x00{identity[1]}\x00{identity[2]}"


def _parse_last(text: str) -> Identity:
    try:
        micros, event_id, key = text.split("\x00")
        return (int(micros), event_id, key)
    except ValueError as exc:
        raise InvalidArgument("page_token is not a token this API returned") from exc


class TimeSeries:
    """Writes and reads the series of one TimeSeries namespace.

    A series is a list of immutable events ordered by ``(time, id, key)``. Every call
    is validated first (bad input writes nothing) and instrumented here for all
    backends; the settings (slices, retention, accept window) are in ``settings``.
    """

    def __init__(
        self, store: Store, name: str, settings: TimeSeriesSettings, driver: TimeSeriesDriver
    ) -> None:
        self._store = store
        self._driver = driver
        self._inst = store.instrumentation
        self.name = name
        self.settings = settings
        self.max_value_bytes = store.max_value_bytes
        #: Most UTF-8 bytes an event id and item key take together on this backend (None: no joint limit).
        self.max_identity_bytes = driver.max_identity_bytes
        self._spec = SeriesSpec(name, settings.slice_seconds, settings.retention_seconds)
        self._buffer: list[tuple[str, StoredEvent]] = []
        self._buffered_since = 0.0
        self._next_sweep = 0.0
        self._task: asyncio.Task[None] | None = None
        #: False when no event loop runs between calls (the inline blocking API): housekeeping then
        #: happens inside the calls instead of in a background task.
        self._background = True
        self._layout_checked = False
        self._strong = store.backend.capabilities.consistent_reads

    def __repr__(self) -> str:
        return f"<TimeSeries {self.name!r} on {self._store.backend.name}>"

    async def _ready(self) -> None:
        """Check that the store is open and, once, that the namespace's slices are this handle's."""
        if not self._store.is_open:
            raise StoreClosed(self._store.state_message())
        if not self._layout_checked:
            await self._check_layout()
            self._layout_checked = True

    async def _check_layout(self) -> None:
        # Slice numbers mean times only with the slice length they were made with: the
        # namespace's length is kept in the store on first use and every handle must match it.
        layouts = self._store.namespace(LAYOUT_NAMESPACE)
        wanted = str(self.settings.slice_seconds).encode()
        found = await layouts.get(self.name, consistency="strong" if self._strong else "eventual")
        if found is None:
            try:
                await layouts.put(self.name, wanted, if_absent=True)
                return
            except PreconditionFailed:
                found = await layouts.get(self.name)
        if found is not None and found.value != wanted:
            raise InvalidArgument(
                f"time series namespace {self.name!r} stores slices of {found.value.decode()} s; "
                f"open it with slice_seconds={found.value.decode()} (not {self.settings.slice_seconds})"
            )

    # -- writes -----------------------------------------------------------------------

    def _stored(self, events: Iterable[Event], now: float) -> list[StoredEvent]:
        if isinstance(events, Event | str | bytes):
            raise InvalidArgument("events must be a list of prism.Event")
        batch = list(events)
        if not batch:
            return []
        if len(batch) > MAX_BATCH:
            raise InvalidArgument(f"a write takes at most {MAX_BATCH} events, got {len(batch)}")
        settings = self.settings
        oldest: int | None = None
        if settings.accept_window_seconds is not None:
            oldest = int((now - settings.accept_window_seconds) * 1_000_000)
        if settings.retention_seconds is not None:
            horizon = self._horizon(now)
            oldest = horizon if oldest is None else max(oldest, horizon)
        newest = int((now + settings.future_skew_seconds) * 1_000_000)
        stored: list[StoredEvent] = []
        for i, event in enumerate(batch):
            if not isinstance(event, Event):
                raise InvalidArgument(f"events[{i}] must be a prism.Event, got {type(event).__name__}")
            micros = to_micros(event.time, f"events[{i}].time")
            check_id(event.id, f"events[{i}].id")
            check_item_key(event.key)
            if self.max_identity_bytes is not None:
                size = len(event.id.encode()) + len(event.key.encode())
                if size > self.max_identity_bytes:
                    raise InvalidKey(
                        f"events[{i}]: the event id and item key take {size} bytes of UTF-8; the "
                        f"{self._store.backend.name} backend allows {self.max_identity_bytes} together"
                    )
            value = check_value(event.value, self.max_value_bytes, event.id)
            content_type = check_content_type(event.content_type)
            if oldest is not None and micros < oldest:
                raise InvalidArgument(
                    f"events[{i}].time {event.time.isoformat()} is older than this namespace accepts "
                    f"(the accept window and retention start at {from_micros(oldest).isoformat()})"
                )
            if micros > newest:
                raise InvalidArgument(
                    f"events[{i}].time {event.time.isoformat()} is more than "
                    f"{settings.future_skew_seconds:g} s in the future"
                )
            stored.append(StoredEvent(micros, event.id, event.key, value, content_type))
        return stored

    async def write(self, series: str, events: Iterable[Event]) -> list[EventResult]:
        """Write ``events`` to ``series`` durably; one result per event, in order.

        Events are immutable and the write is idempotent on ``(time, id, key)``:
        writing an identity again succeeds (``existed=True``) when its value and
        content type are equal, and fails that event alone with ``PreconditionFailed``
        when they differ. An event outside the accept window, or any other bad input,
        raises ``InvalidArgument`` and nothing is written.
        """
        check_id(series, "series id")
        now = time.time()
        stored = self._stored(events, now)
        await self._ready()
        await self._housekeep(now)
        if not stored:
            return []
        # Identities repeated within the batch go in later rounds, each compared with what
        # the earlier rounds left stored (rare: one more round trip per repeat).
        rounds: list[dict[Identity, int]] = []
        for i, event in enumerate(stored):
            for round_ in rounds:
                if event.identity not in round_:
                    round_[event.identity] = i
                    break
            else:
                rounds.append({event.identity: i})
        outcomes: list[EventWrite] = [EventWrite.CREATED] * len(stored)
        with self._inst.op(self.name, "ts_write", len(stored)):
            for round_ in rounds:
                indexes = list(round_.values())
                got = await self._driver.write(self._spec, series, [stored[i] for i in indexes])
                for i, outcome in zip(indexes, got, strict=True):
                    outcomes[i] = outcome
        results = [self._result(event, outcome) for event, outcome in zip(stored, outcomes, strict=True)]
        return results

    @staticmethod
    def _result(event: StoredEvent, outcome: EventWrite) -> EventResult:
        when = from_micros(event.time)
        if outcome is EventWrite.CONFLICT:
            error = PreconditionFailed(
                f"event {event.id!r} at {when.isoformat()} (key {event.key!r}) already holds a "
                "different value; events are immutable"
            )
            return EventResult(event.id, when, event.key, False, True, error)
        return EventResult(event.id, when, event.key, True, outcome is EventWrite.EXISTED)

    async def write_nowait(self, series: str, events: Iterable[Event]) -> None:
        """Buffer ``events`` for ``series`` and return at once: for loss-tolerant telemetry only.

        Buffered events are written within ``settings.flush_interval_seconds``, when
        the buffer reaches ``settings.nowait_buffer`` events (this call then writes
        them, so the buffer stays bounded), by ``flush()``, and when the store closes.
        Bad input raises at once; a failure of the later write is logged, not raised,
        and those events are lost. Use ``write`` when an event must not be lost.
        """
        check_id(series, "series id")
        now = time.time()
        stored = self._stored(events, now)
        await self._ready()
        if not self._buffer:
            self._buffered_since = now
        self._buffer.extend((series, event) for event in stored)
        if len(self._buffer) >= self.settings.nowait_buffer:
            await self.flush()
        await self._housekeep(now)

    async def flush(self) -> None:
        """Write every event ``write_nowait`` buffered; failures are logged and the events dropped."""
        buffered, self._buffer = self._buffer, []
        by_series: dict[str, list[StoredEvent]] = {}
        for series, event in buffered:
            by_series.setdefault(series, []).append(event)
        for series, events in by_series.items():
            for at in range(0, len(events), MAX_BATCH):
                unique = list({e.identity: e for e in events[at : at + MAX_BATCH]}.values())
                try:
                    with self._inst.op(self.name, "ts_write_nowait", len(unique)):
                        outcomes = await self._driver.write(self._spec, series, unique)
                except PrismError as exc:
                    log.warning(
                        "dropped %d buffered events of %s/%s: %s", len(unique), self.name, series, exc
                    )
                    continue
                conflicts = sum(o is EventWrite.CONFLICT for o in outcomes)
                if conflicts:
                    log.warning(
                        "%d buffered events of %s/%s conflicted with stored ones",
                        conflicts,
                        self.name,
                        series,
                    )

    # -- reads ------------------------------------------------------------------------

    def _horizon(self, now: float) -> int:
        """The first microsecond still within retention: the start of the oldest live slice."""
        assert self.settings.retention_seconds is not None
        cutoff = int((now - self.settings.retention_seconds) * 1_000_000)
        return self._spec.slice_of(cutoff) * self._spec.slice_us

    async def read(
        self,
        series: str,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
        limit: int = 100,
        newest_first: bool = True,
        page_token: str | None = None,
        page_size_bytes: int | None = None,
    ) -> EventPage:
        """Events of ``series`` with ``start <= time < end``, newest first unless ``newest_first=False``.

        A page holds at most ``limit`` events and stops before its values pass
        ``page_size_bytes`` (4 MiB by default; always at least one event). Pass
        ``next_page_token`` back for the next page: pages resume strictly after the
        last event returned, so events written meanwhile never repeat or hide one
        that was there. Events in slices past retention are never returned.
        """
        check_id(series, "series id")
        check_limit(limit, MAX_PAGE_LIMIT)
        cap = (
            DEFAULT_PAGE_BYTES
            if page_size_bytes is None
            else check_limit(page_size_bytes, 1 << 40, "page_size_bytes")
        )
        if type(newest_first) is not bool:
            raise InvalidArgument("newest_first must be True or False")
        start_us = _NO_START if start is None else to_micros(start, "start")
        end_us = _NO_END if end is None else to_micros(end, "end")
        if end_us < start_us:
            raise InvalidArgument("end must not be before start")
        scope = f"{series}\x00{start_us}\x00{end_us}\x00{'desc' if newest_first else 'asc'}"
        last = decode_token(page_token, "ts", scope)
        after = None if last is None else _parse_last(last)
        await self._ready()
        now = time.time()
        await self._housekeep(now)
        if self.settings.retention_seconds is not None:
            start_us = max(start_us, self._horizon(now))
        if end_us <= start_us:
            return EventPage([], None)
        with self._inst.op(self.name, "ts_read") as op:
            found = await self._driver.read(
                self._spec, series, start_us, end_us, after, newest_first, limit + 1
            )
            op.hits = len(found)
        more = len(found) > limit
        page = found[:limit]
        total = 0
        for i, event in enumerate(page):
            total += len(event.value)
            if total > cap and i > 0:
                page = page[:i]
                more = True
                break
        token = encode_token("ts", scope, _last(page[-1].identity)) if more and page else None
        epoch, delta = _EPOCH, timedelta
        events = [
            Event(
                time=epoch + delta(0, 0, e.time),
                id=e.id,
                value=e.value,
                key=e.key,
                content_type=e.content_type,
            )
            for e in page
        ]
        return EventPage(events, token)

    # -- deletes and retention -----------------------------------------------------------

    async def delete_series(self, series: str) -> None:
        """Delete every event of ``series`` (including events ``write_nowait`` still buffers)."""
        check_id(series, "series id")
        await self._ready()
        self._buffer = [(s, e) for s, e in self._buffer if s != series]
        with self._inst.op(self.name, "ts_delete_series"):
            await self._driver.delete_series(self._spec, series)

    async def drop_expired(self) -> int:
        """Drop the slices past retention now (this also runs in the background); the number dropped."""
        await self._ready()
        if self.settings.retention_seconds is None:
            return 0
        before = self._spec.slice_of(self._horizon(time.time()))
        with self._inst.op(self.name, "ts_drop_slices"):
            return await self._driver.drop_slices(self._spec, before)

    # -- housekeeping ------------------------------------------------------------------------

    async def _housekeep(self, now: float) -> None:
        """Start the background task; without one, flush and drop what is due here."""
        if self._background:
            if self._task is None or self._task.done():
                self._task = asyncio.get_running_loop().create_task(self._run_background())
            return
        if self._buffer and now - self._buffered_since >= self.settings.flush_interval_seconds:
            await self.flush()
        if self.settings.retention_seconds is not None and now >= self._next_sweep:
            self._next_sweep = now + self.settings.retention_interval_seconds
            await self.drop_expired()

    async def _run_background(self) -> None:
        settings = self.settings
        tick = min(settings.flush_interval_seconds, settings.retention_interval_seconds)
        while self._store.is_open:
            now = time.time()
            try:
                if self._buffer and now - self._buffered_since >= settings.flush_interval_seconds:
                    await self.flush()
                if settings.retention_seconds is not None and now >= self._next_sweep:
                    self._next_sweep = now + settings.retention_interval_seconds
                    dropped = await self.drop_expired()
                    if dropped:
                        log.info("dropped %d slices of %s past retention", dropped, self.name)
            except PrismError as exc:
                log.warning("background work of time series %s failed: %s", self.name, exc)
            await asyncio.sleep(tick)

    async def _close(self) -> None:
        """Stop the background task and write out the buffer (the store is closing)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._buffer:
            await self.flush()
