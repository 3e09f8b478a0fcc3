"""A TimeSeries namespace's settings, as one typed value object with its rules."""

from __future__ import annotations

import math
from dataclasses import dataclass

from prism.errors import InvalidArgument

__all__ = [
    "DEFAULT_FLUSH_INTERVAL",
    "DEFAULT_FUTURE_SKEW",
    "DEFAULT_NOWAIT_BUFFER",
    "DEFAULT_RETENTION_INTERVAL",
    "DEFAULT_SLICE_SECONDS",
    "TimeSeriesSettings",
]

#: Length of one time slice (one hour).
DEFAULT_SLICE_SECONDS = 3600
#: How far past the present an event's time may be (clocks differ a little).
DEFAULT_FUTURE_SKEW = 60.0
#: Seconds between two passes that drop slices past retention.
DEFAULT_RETENTION_INTERVAL = 60.0
#: Most events ``write_nowait`` holds before it writes them out.
DEFAULT_NOWAIT_BUFFER = 10_000
#: Longest a buffered ``write_nowait`` event waits to be written.
DEFAULT_FLUSH_INTERVAL = 1.0
#: The longest slice, retention or window accepted (100 years).
MAX_SECONDS = 100 * 365 * 24 * 3600


def _seconds(value: object, what: str, *, integer: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidArgument(f"{what} must be a number of seconds, got {type(value).__name__}")
    if integer and (not float(value).is_integer()):
        raise InvalidArgument(f"{what} must be a whole number of seconds, got {value!r}")
    if not (math.isfinite(value) and 0 < value <= MAX_SECONDS):
        raise InvalidArgument(
            f"{what} must be a positive number of seconds up to {MAX_SECONDS}, got {value!r}"
        )
    return float(value)


@dataclass(frozen=True, slots=True)
class TimeSeriesSettings:
    """How a TimeSeries namespace stores, keeps and accepts events.

    * ``slice_seconds``: events are stored in slices this long; retention drops whole slices;
    * ``retention_seconds``: slices whose end is older than this are dropped in the
      background and never read again (None: keep forever);
    * ``accept_window_seconds``: events older than now minus this are refused (None:
      only retention limits how old an event may be);
    * ``future_skew_seconds``: events later than now plus this are refused;
    * ``retention_interval_seconds``: seconds between two retention passes;
    * ``nowait_buffer``: most events ``write_nowait`` buffers (past it, the call writes);
    * ``flush_interval_seconds``: longest a buffered event waits to be written.
    """

    slice_seconds: int = DEFAULT_SLICE_SECONDS
    retention_seconds: int | None = None
    accept_window_seconds: float | None = None
    future_skew_seconds: float = DEFAULT_FUTURE_SKEW
    retention_interval_seconds: float = DEFAULT_RETENTION_INTERVAL
    nowait_buffer: int = DEFAULT_NOWAIT_BUFFER
    flush_interval_seconds: float = DEFAULT_FLUSH_INTERVAL

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "slice_seconds", int(_seconds(self.slice_seconds, "slice_seconds", integer=True))
        )
        if self.retention_seconds is not None:
            retention = int(_seconds(self.retention_seconds, "retention_seconds", integer=True))
            object.__setattr__(self, "retention_seconds", retention)
        if self.accept_window_seconds is not None:
            _seconds(self.accept_window_seconds, "accept_window_seconds")
        if isinstance(self.future_skew_seconds, bool) or not isinstance(
            self.future_skew_seconds, int | float
        ):
            raise InvalidArgument("future_skew_seconds must be a number of seconds")
        if not (math.isfinite(self.future_skew_seconds) and 0 <= self.future_skew_seconds <= MAX_SECONDS):
            raise InvalidArgument(f"future_skew_seconds must be from 0 to {MAX_SECONDS}")
        _seconds(self.retention_interval_seconds, "retention_interval_seconds")
        _seconds(self.flush_interval_seconds, "flush_interval_seconds")
        if type(self.nowait_buffer) is not int or not 1 <= self.nowait_buffer <= 10_000_000:
            raise InvalidArgument(
                f"nowait_buffer must be an int from 1 to 10000000, got {self.nowait_buffer!r}"
            )
