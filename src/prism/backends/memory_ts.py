"""The memory engine's TimeSeries store: per series, per slice, a sorted list of identities.

Dropping a slice drops its lists and maps whole; nothing is kept past the process.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

from prism.backends.base import Backend
from prism.backends.timeseries import (
    EventWrite,
    Identity,
    SeriesSpec,
    StoredEvent,
    TimeSeriesDriver,
    compare_existing,
)

__all__ = ["MemoryTimeSeries"]


class _Slice:
    __slots__ = ("events", "order")

    def __init__(self) -> None:
        self.order: list[Identity] = []
        self.events: dict[Identity, StoredEvent] = {}


class MemoryTimeSeries(TimeSeriesDriver):
    """Events of every namespace in dicts: namespace -> series -> slice number -> slice."""

    def __init__(self, backend: Backend) -> None:
        super().__init__(backend)
        self._spaces: dict[str, dict[str, dict[int, _Slice]]] = {}

    async def write(self, spec: SeriesSpec, series: str, events: Sequence[StoredEvent]) -> list[EventWrite]:
        slices = self._spaces.setdefault(spec.ns, {}).setdefault(series, {})
        outcomes: list[EventWrite] = []
        for event in events:
            number = spec.slice_of(event.time)
            found = slices.get(number)
            if found is None:
                found = slices[number] = _Slice()
            identity = event.identity
            outcome = compare_existing(found.events.get(identity), event)
            if outcome is EventWrite.CREATED:
                found.events[identity] = event
                bisect.insort(found.order, identity)
            outcomes.append(outcome)
        return outcomes

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
        slices = self._spaces.get(spec.ns, {}).get(series)
        if not slices or end_us <= start_us:
            return []
        first, last = spec.slices_between(start_us, end_us)
        numbers = sorted((n for n in slices if first <= n <= last), reverse=newest_first)
        low: Identity = (start_us, "", "")
        high: Identity = (end_us, "", "")
        if after is not None:
            if newest_first:
                high = min(high, after)
            else:
                low = max(low, after)
        out: list[StoredEvent] = []
        for number in numbers:
            found = slices[number]
            lo = bisect.bisect_left(found.order, low)
            if after is not None and not newest_first:
                lo = bisect.bisect_right(found.order, low)
            hi = bisect.bisect_left(found.order, high)
            chosen = found.order[lo:hi]
            if newest_first:
                chosen.reverse()
            out.extend(found.events[identity] for identity in chosen[: limit - len(out)])
            if len(out) >= limit:
                break
        return out

    async def delete_series(self, spec: SeriesSpec, series: str) -> None:
        self._spaces.get(spec.ns, {}).pop(series, None)

    async def drop_slices(self, spec: SeriesSpec, before: int) -> int:
        dropped: set[int] = set()
        for slices in self._spaces.get(spec.ns, {}).values():
            for number in [n for n in slices if n < before]:
                del slices[number]
                dropped.add(number)
        return len(dropped)
