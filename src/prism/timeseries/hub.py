"""The TimeSeries namespaces of one store: their handles, the one driver, and closing them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from prism.backends.timeseries import TimeSeriesDriver, driver_for
from prism.errors import InvalidArgument
from prism.kv.validation import check_id
from prism.timeseries.series import TimeSeries
from prism.timeseries.settings import TimeSeriesSettings

if TYPE_CHECKING:
    from prism.kv.store import Store

__all__ = ["TimeSeriesHub"]


class TimeSeriesHub:
    """Hands out one TimeSeries handle per namespace name, all on the backend's one driver."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._driver: TimeSeriesDriver | None = None
        self._handles: dict[str, TimeSeries] = {}

    def handle(self, name: str, **options: Any) -> TimeSeries:
        """The handle of namespace ``name`` with ``options`` (``TimeSeriesSettings`` fields)."""
        check_id(name, "namespace")
        settings = TimeSeriesSettings(**options)
        found = self._handles.get(name)
        if found is not None:
            if found.settings != settings:
                raise InvalidArgument(
                    f"time series namespace {name!r} is already open with other settings ({found.settings}); "
                    "a namespace keeps one set of settings"
                )
            return found
        if self._driver is None:
            self._driver = driver_for(self._store.backend)
        ts = self._handles[name] = TimeSeries(self._store, name, settings, self._driver)
        return ts

    async def close(self) -> None:
        """Write out buffered events and stop background work; safe to call twice."""
        handles, self._handles = list(self._handles.values()), {}
        for ts in handles:
            await ts._close()
        driver, self._driver = self._driver, None
        if driver is not None:
            await driver.close()
