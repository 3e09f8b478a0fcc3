"""Per-namespace admission control: a request rate (token bucket) and a concurrency cap.

Both answer at once instead of queueing: a request over either limit gets 429 with
``Retry-After`` (the seconds until a token is back, or 1 for concurrency), so a
noisy namespace sheds load without slowing the others.

Where the tokens live:

* without ``control.store``, each process keeps its own buckets, so N processes
  (``--workers N``, or N replicas) admit up to N times the configured rate and burst;
* with ``control.store`` naming a Redis or PostgreSQL store, every process takes its
  tokens from one bucket per namespace kept in that store (``Backend.take_token``, one
  atomic script or statement per request), so the configured rate and burst hold for
  all of them together. A take that fails or does not answer within
  ``control.timeout`` is refused with 503 ``RATE_LIMIT_UNAVAILABLE``
  (``control.on_failure: reject``, the default) or falls back to this process's own
  bucket (``local``).

The concurrency cap is always per process: it bounds what one process holds open.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from types import TracebackType
from typing import Literal

from prometheus_client import Counter

from prism.errors import PrismError
from prism.gateway.config import LimitsConfig
from prism.gateway.problem import HTTPProblem
from prism.kv.store import Store

__all__ = ["NamespaceLimiter", "SharedBuckets"]

log = logging.getLogger("prism.gateway")

REJECTED = Counter(
    "prism_http_rate_limited_total",
    "Requests refused with 429, by namespace and limit.",
    ["namespace", "limit"],
)
CONTROL_FAILURES = Counter(
    "prism_rate_limit_store_failures_total",
    "Shared rate-limit checks the control store did not answer, by namespace and what was done "
    "(rejected with 503, or admitted by the process's own bucket).",
    ["namespace", "outcome"],
)

#: Least seconds between two log lines about a failing control store (the metric counts every one).
FAILURE_LOG_INTERVAL = 10.0


class SharedBuckets:
    """Token buckets in the control store: one per namespace, shared by every process using the store."""

    def __init__(
        self,
        store: Store,
        store_name: str,
        *,
        timeout: float,
        on_failure: Literal["reject", "local"],
        retry_after: int,
    ) -> None:
        if not store.backend.capabilities.token_buckets:
            raise ValueError(f"store {store_name!r} ({store.backend.name}) has no shared token buckets")
        self.store = store
        self.store_name = store_name
        self.timeout = timeout
        self.on_failure = on_failure
        self.retry_after = retry_after
        self._logged = -math.inf

    async def take(self, namespace: str, rate: float, burst: float) -> float:
        """0.0 when a token of ``namespace`` was taken, else the seconds until one is back.

        Raises TimeoutError past ``timeout`` and PrismError when the store fails.
        """
        async with asyncio.timeout(self.timeout):
            return await self.store.backend.take_token(f"ns:{namespace}", rate, burst)

    def failed(self, namespace: str, exc: BaseException) -> None:
        """Count (and now and then log) a check the control store did not answer."""
        outcome = "rejected" if self.on_failure == "reject" else "local"
        CONTROL_FAILURES.labels(namespace, outcome).inc()
        now = time.monotonic()
        if now - self._logged >= FAILURE_LOG_INTERVAL:
            self._logged = now
            reason = f"no answer within {self.timeout:g} s" if isinstance(exc, TimeoutError) else str(exc)
            action = "refusing requests with 503" if outcome == "rejected" else "using per-process limits"
            log.warning(
                "the control store %r cannot check rate limits (%s); %s",
                self.store_name,
                reason,
                action,
            )


class NamespaceLimiter:
    """The limits of one namespace: ``async with limiter.admit():`` takes a token and a slot, or 429."""

    def __init__(self, namespace: str, limits: LimitsConfig, shared: SharedBuckets | None = None) -> None:
        self.namespace = namespace
        self.rate = limits.rate
        self.burst = float(limits.burst if limits.burst is not None else max(1, math.ceil(limits.rate or 1)))
        self.concurrency = limits.concurrency
        self.in_flight = 0
        self._tokens = self.burst
        self._stamp = time.monotonic()
        self.active = self.rate is not None or self.concurrency is not None
        #: Where this namespace's tokens come from when several processes share them (else None).
        self.shared = shared if self.rate is not None else None

    def admit(self) -> NamespaceLimiter:
        """The async context manager of one request's admission (the limiter itself: nothing to allocate)."""
        return self

    async def __aenter__(self) -> None:
        if not self.active:
            return
        concurrency = self.concurrency
        if concurrency is not None:
            # Checked first, so a request refused for concurrency spends no token.
            if self.in_flight >= concurrency:
                REJECTED.labels(self.namespace, "concurrency").inc()
                raise HTTPProblem(
                    429,
                    "TOO_MANY_CONCURRENT_REQUESTS",
                    f"namespace {self.namespace!r} serves at most {concurrency} requests at once",
                    headers={"Retry-After": "1"},
                )
            self.in_flight += 1
        if self.rate is None:
            return
        try:
            wait = self._take_local() if self.shared is None else await self._take_shared(self.shared)
        except BaseException:
            if concurrency is not None:
                self.in_flight -= 1
            raise
        if wait > 0.0:
            if concurrency is not None:
                self.in_flight -= 1
            REJECTED.labels(self.namespace, "rate").inc()
            raise HTTPProblem(
                429,
                "RATE_LIMITED",
                f"namespace {self.namespace!r} allows {self.rate:g} requests per second",
                headers={"Retry-After": str(max(1, math.ceil(wait)))},
            )

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.concurrency is not None:
            self.in_flight -= 1

    def _take_local(self) -> float:
        """This process's own bucket: 0.0 when a token was taken, else the seconds until one is back."""
        assert self.rate is not None
        now = time.monotonic()
        tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        if tokens < 1.0:
            self._tokens = tokens
            return (1.0 - tokens) / self.rate
        self._tokens = tokens - 1.0
        return 0.0

    async def _take_shared(self, shared: SharedBuckets) -> float:
        assert self.rate is not None
        try:
            return await shared.take(self.namespace, self.rate, self.burst)
        except (PrismError, TimeoutError) as exc:
            shared.failed(self.namespace, exc)
            if shared.on_failure == "local":
                return self._take_local()
            raise HTTPProblem(
                503,
                "RATE_LIMIT_UNAVAILABLE",
                f"the rate limit of namespace {self.namespace!r} cannot be checked: the control store "
                f"{shared.store_name!r} is unavailable; retry later",
                headers={"Retry-After": str(shared.retry_after)},
            ) from None
