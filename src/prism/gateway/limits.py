"""Per-namespace admission control: a request rate (token bucket) and a concurrency cap.

Both answer at once instead of queueing: a request over either limit gets 429 with
``Retry-After`` (the seconds until a token is back, or 1 for concurrency), so a
noisy namespace sheds load without slowing the others.
"""

from __future__ import annotations

import math
import time
from types import TracebackType

from prometheus_client import Counter

from prism.gateway.config import LimitsConfig
from prism.gateway.problem import HTTPProblem

__all__ = ["NamespaceLimiter"]

REJECTED = Counter(
    "prism_http_rate_limited_total",
    "Requests refused with 429, by namespace and limit.",
    ["namespace", "limit"],
)


class _Slot:
    """Context manager that gives the concurrency slot back."""

    __slots__ = ("_limiter",)

    def __init__(self, limiter: NamespaceLimiter) -> None:
        self._limiter = limiter

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._limiter.in_flight -= 1


class _NoSlot:
    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None


_NO_SLOT = _NoSlot()


class NamespaceLimiter:
    """The limits of one namespace. ``admit()`` returns a context manager holding the slot."""

    def __init__(self, namespace: str, limits: LimitsConfig) -> None:
        self.namespace = namespace
        self.rate = limits.rate
        self.burst = float(limits.burst if limits.burst is not None else max(1, math.ceil(limits.rate or 1)))
        self.concurrency = limits.concurrency
        self.in_flight = 0
        self._tokens = self.burst
        self._stamp = time.monotonic()
        self.active = self.rate is not None or self.concurrency is not None

    def admit(self) -> _Slot | _NoSlot:
        """Take a token and a concurrency slot, or raise a 429 problem."""
        if not self.active:
            return _NO_SLOT
        if self.rate is not None:
            now = time.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            if self._tokens < 1.0:
                wait = math.ceil((1.0 - self._tokens) / self.rate)
                REJECTED.labels(self.namespace, "rate").inc()
                raise HTTPProblem(
                    429,
                    "RATE_LIMITED",
                    f"namespace {self.namespace!r} allows {self.rate:g} requests per second",
                    headers={"Retry-After": str(max(1, wait))},
                )
            self._tokens -= 1.0
        if self.concurrency is not None:
            if self.in_flight >= self.concurrency:
                if self.rate is not None:
                    self._tokens += 1.0
                REJECTED.labels(self.namespace, "concurrency").inc()
                raise HTTPProblem(
                    429,
                    "TOO_MANY_CONCURRENT_REQUESTS",
                    f"namespace {self.namespace!r} serves at most {self.concurrency} requests at once",
                    headers={"Retry-After": "1"},
                )
            self.in_flight += 1
            return _Slot(self)
        return _NO_SLOT
