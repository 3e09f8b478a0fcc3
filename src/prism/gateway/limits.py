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

A namespace that declares ``read_rps`` / ``write_rps`` (and sets no ``limits.rate``)
has two buckets instead of one: its reads take from one, every other request from the
other, each at the declared rate times ``control.namespaces.limit_headroom``.

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
from prism.gateway.config import LimitsConfig, NamespaceConfig
from prism.gateway.problem import HTTPProblem
from prism.kv.store import Store

__all__ = ["NamespaceLimiter", "SharedBuckets", "declared_rates"]

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

    async def take(self, key: str, rate: float, burst: float) -> float:
        """0.0 when a token of the bucket ``key`` (``ns:NAME``, ``ns:NAME:read``, ``ns:NAME:write``)
        was taken, else the seconds until one is back.

        Raises TimeoutError past ``timeout`` and PrismError when the store fails.
        """
        async with asyncio.timeout(self.timeout):
            return await self.store.backend.take_token(key, rate, burst)

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


class _Bucket:
    """One token bucket of a namespace: ``rate`` tokens a second, at most ``burst``; ``key`` names it
    in the shared store."""

    __slots__ = ("burst", "key", "rate", "stamp", "tokens")

    def __init__(self, key: str, rate: float, burst: float) -> None:
        self.key = key
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = time.monotonic()

    def take(self) -> float:
        """This process's own bucket: 0.0 when a token was taken, else the seconds until one is back."""
        now = time.monotonic()
        tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if tokens < 1.0:
            self.tokens = tokens
            return (1.0 - tokens) / self.rate
        self.tokens = tokens - 1.0
        return 0.0


class NamespaceLimiter:
    """The limits of one namespace: ``await limiter.enter(action)`` takes a token and a slot, or 429.

    A namespace has either one rate for every request (``limits.rate``), or a rate for
    its reads and one for its writes (``reads``, ``writes``: what its declared
    ``read_rps`` and ``write_rps`` became); a request of action ``read`` takes a token
    of the read bucket, any other a token of the write bucket, and a side without a rate
    is not limited. With ``shared`` every bucket lives in the control store.
    """

    def __init__(
        self,
        namespace: str,
        limits: LimitsConfig,
        shared: SharedBuckets | None = None,
        *,
        reads: float | None = None,
        writes: float | None = None,
    ) -> None:
        self.namespace = namespace
        self.rate = limits.rate
        self.burst = float(limits.burst if limits.burst is not None else max(1, math.ceil(limits.rate or 1)))
        self.concurrency = limits.concurrency
        self.in_flight = 0
        all_requests = None if self.rate is None else _Bucket(f"ns:{namespace}", self.rate, self.burst)
        self.read_rate = reads
        self.write_rate = writes
        self._read = all_requests if reads is None else _Bucket(f"ns:{namespace}:read", reads, _burst(reads))
        self._write = (
            all_requests if writes is None else _Bucket(f"ns:{namespace}:write", writes, _burst(writes))
        )
        self.active = self._read is not None or self._write is not None or self.concurrency is not None
        #: Where this namespace's tokens come from when several processes share them (else None).
        self.shared = shared if (self._read or self._write) is not None else None

    @property
    def read_burst(self) -> int | None:
        return None if self.read_rate is None else _burst(self.read_rate)

    @property
    def write_burst(self) -> int | None:
        return None if self.write_rate is None else _burst(self.write_rate)

    def admit(self) -> NamespaceLimiter:
        """The async context manager of one request's admission (the limiter itself: nothing to allocate)."""
        return self

    async def __aenter__(self) -> None:
        await self.enter("write")

    async def enter(self, action: str) -> None:
        """Admit one request of ``action`` (``read`` takes from the read bucket, any other the write one)."""
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
        bucket = self._read if action == "read" else self._write
        if bucket is None:
            return
        try:
            wait = bucket.take() if self.shared is None else await self._take_shared(self.shared, bucket)
        except BaseException:
            if concurrency is not None:
                self.in_flight -= 1
            raise
        if wait > 0.0:
            if concurrency is not None:
                self.in_flight -= 1
            REJECTED.labels(self.namespace, "rate").inc()
            which = "" if bucket.key == f"ns:{self.namespace}" else f" {bucket.key.rsplit(':', 1)[1]}s"
            raise HTTPProblem(
                429,
                "RATE_LIMITED",
                f"namespace {self.namespace!r} allows {bucket.rate:g}{which or ' requests'} per second",
                headers={"Retry-After": str(max(1, math.ceil(wait)))},
            )

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.concurrency is not None:
            self.in_flight -= 1

    async def _take_shared(self, shared: SharedBuckets, bucket: _Bucket) -> float:
        try:
            return await shared.take(bucket.key, bucket.rate, bucket.burst)
        except (PrismError, TimeoutError) as exc:
            shared.failed(self.namespace, exc)
            if shared.on_failure == "local":
                return bucket.take()
            raise HTTPProblem(
                503,
                "RATE_LIMIT_UNAVAILABLE",
                f"the rate limit of namespace {self.namespace!r} cannot be checked: the control store "
                f"{shared.store_name!r} is unavailable; retry later",
                headers={"Retry-After": str(shared.retry_after)},
            ) from None


def declared_rates(ns: NamespaceConfig, headroom: float) -> tuple[float | None, float | None]:
    """The read and write rates ``ns``'s declared ``read_rps`` and ``write_rps`` become (times ``headroom``).

    (None, None) when it declares neither, or sets ``limits.rate`` itself (which wins).
    """
    needs = ns.needs
    if needs is None or (ns.limits is not None and ns.limits.rate is not None):
        return None, None
    reads = None if needs.read_rps is None else needs.read_rps * headroom
    writes = None if needs.write_rps is None else needs.write_rps * headroom
    return reads, writes


def _burst(rate: float) -> int:
    """The burst of a declared rate: as many requests as one second allows, at least 1."""
    return max(1, math.ceil(rate))
