"""The TimeSeries model: namespaces of series of immutable events, read by time range.

``store.timeseries(name)`` is a :class:`TimeSeries`; the backend's TimeSeries driver
(``prism.backends.timeseries``) stores the events in time slices on the store's own
connection. See docs/timeseries.md.
"""

from prism.timeseries.hub import TimeSeriesHub
from prism.timeseries.series import TimeSeries
from prism.timeseries.settings import TimeSeriesSettings
from prism.timeseries.sync import SyncTimeSeries

__all__ = ["SyncTimeSeries", "TimeSeries", "TimeSeriesHub", "TimeSeriesSettings"]
