"""The blocking twin of :class:`~prism.timeseries.TimeSeries`: every method runs the async one."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from prism.kv.portal import Portal
from prism.kv.sync import _twin_of
from prism.model import Event, EventPage, EventResult
from prism.timeseries.series import TimeSeries
from prism.timeseries.settings import TimeSeriesSettings

__all__ = ["SyncTimeSeries"]


@_twin_of(TimeSeries)
class SyncTimeSeries:
    """The blocking twin of :class:`TimeSeries` (``store.timeseries(name)`` of ``connect_sync``)."""

    def __init__(self, ts: TimeSeries, portal: Portal) -> None:
        self._ts = ts
        self._portal = portal
        if portal.inline:  # no event loop runs between calls: housekeeping happens inside them
            ts._background = False

    def __repr__(self) -> str:
        return "<Sync" + repr(self._ts)[1:]

    @property
    def name(self) -> str:
        """The namespace's name."""
        return self._ts.name

    @property
    def settings(self) -> TimeSeriesSettings:
        """Slices, retention and accept window of the namespace."""
        return self._ts.settings

    @property
    def max_identity_bytes(self) -> int | None:
        """Most UTF-8 bytes an event id and item key take together on this backend (None: no joint limit)."""
        return self._ts.max_identity_bytes

    @property
    def max_value_bytes(self) -> int:
        """Largest event value the namespace accepts."""
        return self._ts.max_value_bytes

    def write(self, series: str, events: Iterable[Event]) -> list[EventResult]:
        return self._portal.call(self._ts.write(series, events))

    def write_nowait(self, series: str, events: Iterable[Event]) -> None:
        return self._portal.call(self._ts.write_nowait(series, events))

    def flush(self) -> None:
        return self._portal.call(self._ts.flush())

    def read(
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
        return self._portal.call(
            self._ts.read(
                series,
                start=start,
                end=end,
                limit=limit,
                newest_first=newest_first,
                page_token=page_token,
                page_size_bytes=page_size_bytes,
            )
        )

    def delete_series(self, series: str) -> None:
        return self._portal.call(self._ts.delete_series(series))

    def drop_expired(self) -> int:
        return self._portal.call(self._ts.drop_expired())
