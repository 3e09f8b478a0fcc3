"""The overview's numbers: per-namespace rate, error rate and latency percentiles, and store health.

A :class:`Sampler` takes a sample every ``admin.sample_interval`` seconds from the
counts the gateway already keeps for ``/metrics`` (``prism_http_requests`` and
``prism_http_request_duration_seconds``) and keeps ``admin.window`` seconds of them.
Each point is the difference between two samples: requests per second, the share of
answers that were server errors (5xx), and p50/p99 as the upper bound of the latency
bucket holding that quantile (what ``histogram_quantile`` would answer, without the
interpolation). It also probes each store's health and times the probe.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass

from prometheus_client import REGISTRY

from prism.gateway.observability import BUCKETS, HTTP_METRICS
from prism.gateway.runtime import Gateway

__all__ = ["NamespacePoint", "Sampler", "StoreHealth"]

log = logging.getLogger("prism.gateway.console")


@dataclass(frozen=True, slots=True)
class NamespacePoint:
    """One namespace over one sample interval (p50/p99 None when it served nothing)."""

    at: float
    rps: float
    error_rate: float
    p50: float | None
    p99: float | None


@dataclass(frozen=True, slots=True)
class StoreHealth:
    """A store's last health probe: its status and how long the probe took (seconds)."""

    status: str
    latency: float
    error: str | None


@dataclass(slots=True)
class _Totals:
    requests: int
    errors: int
    buckets: list[int]


def _totals() -> dict[str, _Totals]:
    """The counts of every namespace so far, summed over routes and methods."""
    found: dict[str, _Totals] = {}
    with HTTP_METRICS.lock:
        for series in HTTP_METRICS.series.values():
            if not series.namespace:
                continue
            totals = found.setdefault(series.namespace, _Totals(0, 0, [0] * (len(BUCKETS) + 1)))
            for status, count in series.statuses.items():
                totals.requests += count
                if status >= 500:
                    totals.errors += count
            for i, count in enumerate(series.buckets):
                totals.buckets[i] += count
    return found


def _quantile(buckets: list[int], q: float) -> float | None:
    """The upper bound of the bucket holding quantile ``q`` (the last finite bound past it)."""
    total = sum(buckets)
    if total == 0:
        return None
    rank = q * total
    running = 0
    for bound, count in zip((*BUCKETS, BUCKETS[-1]), buckets, strict=True):
        running += count
        if running >= rank:
            return bound
    return BUCKETS[-1]


class Sampler:
    """Samples the gateway's counts and its stores' health on a timer, keeping ``window`` seconds."""

    def __init__(self, gateway: Gateway, interval: float, window: float) -> None:
        self.gateway = gateway
        self.interval = interval
        self.points: dict[str, collections.deque[NamespacePoint]] = {}
        self.stores: dict[str, StoreHealth] = {}
        self._keep = max(2, int(window / interval) + 1)
        self._last: tuple[float, dict[str, _Totals]] | None = None
        self._task: asyncio.Task[None] | None = None
        self.changed = asyncio.Condition()

    async def start(self) -> None:
        """Take the first sample now and keep sampling in the background (twice: no effect)."""
        if self._task is None:
            await self.sample()
            self._task = asyncio.create_task(self._run(), name="prism-console-sampler")

    async def stop(self) -> None:
        """Stop sampling (safe to call twice)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.sample()
            except Exception:
                log.exception("the console's overview sample failed")

    async def sample(self) -> None:
        """Take one sample: the counts since the last one, and every store's health."""
        now = time.time()
        totals = _totals()
        if self._last is not None:
            then, before = self._last
            elapsed = max(now - then, 1e-9)
            for name, current in totals.items():
                prior = before.get(name, _Totals(0, 0, [0] * (len(BUCKETS) + 1)))
                requests = current.requests - prior.requests
                errors = current.errors - prior.errors
                buckets = [a - b for a, b in zip(current.buckets, prior.buckets, strict=True)]
                point = NamespacePoint(
                    now,
                    requests / elapsed,
                    errors / requests if requests else 0.0,
                    _quantile(buckets, 0.5),
                    _quantile(buckets, 0.99),
                )
                self.points.setdefault(name, collections.deque(maxlen=self._keep)).append(point)
        self._last = (now, totals)
        self.stores = await self._probe_stores()
        async with self.changed:
            self.changed.notify_all()

    async def _probe_stores(self) -> dict[str, StoreHealth]:
        timeout = self.gateway.config.server.request_timeout

        async def probe(name: str) -> tuple[str, StoreHealth]:
            store = self.gateway.stores[name]
            started = time.perf_counter()
            try:
                async with asyncio.timeout(timeout):
                    health = await store.health()
            except TimeoutError:
                return name, StoreHealth("DOWN", time.perf_counter() - started, "the health check timed out")
            except Exception as exc:
                return name, StoreHealth("DOWN", time.perf_counter() - started, type(exc).__name__)
            error = health.get("details", {}).get("error")
            status = str(health.get("status", "DOWN"))
            return name, StoreHealth(
                status, time.perf_counter() - started, None if error is None else str(error)
            )

        return dict(await asyncio.gather(*(probe(name) for name in self.gateway.stores)))

    def series(self, names: Iterable[str]) -> dict[str, list[NamespacePoint]]:
        """The kept points of the namespaces ``names`` (those not served yet have none)."""
        return {name: list(self.points.get(name, ())) for name in names}


#: The upper bounds of ``prism_streaming_delivery_seconds``'s buckets, as the registry labels them.
_DELIVERY = "prism_streaming_delivery_seconds"


def _delivery_quantile(q: float) -> str:
    """The upper bound of the delivery-latency bucket holding quantile ``q``, since this process started."""
    total = REGISTRY.get_sample_value(f"{_DELIVERY}_count") or 0.0
    if total == 0:
        return "none delivered"
    bounds: list[tuple[float, float]] = []
    for metric in REGISTRY.collect():
        if metric.name != _DELIVERY:
            continue
        bounds.extend(
            (float(sample.labels["le"]), sample.value)
            for sample in metric.samples
            if sample.name.endswith("_bucket")
        )
    for bound, count in sorted(bounds):
        if count >= q * total:
            if bound == float("inf"):
                highest = max((b for b, _ in bounds if b != float("inf")), default=0.0)
                return f"over {highest * 1000:g} ms"
            return f"≤ {bound * 1000:g} ms"
    return "none delivered"


def streaming_counts() -> dict[str, float | str]:
    """This process's streaming numbers, from the metrics streaming exports (0 when off).

    Jobs running are the leases this process holds; the queue depth is the last sample this
    process took of the shared work queue (every ``streaming.metrics_interval``); delivery
    latency is the bucket bound of p50/p99 since this process started.
    """
    jobs = REGISTRY.get_sample_value("prism_streaming_jobs_running") or 0.0
    connections = sum(
        REGISTRY.get_sample_value("prism_streaming_connections", {"transport": t}) or 0.0
        for t in ("websocket", "sse")
    )
    return {
        "jobs_running": jobs,
        "connections": connections,
        "queue_depth": REGISTRY.get_sample_value("prism_streaming_queue_depth") or 0.0,
        "delivered": REGISTRY.get_sample_value(f"{_DELIVERY}_count") or 0.0,
        "delivery_p50": _delivery_quantile(0.5),
        "delivery_p99": _delivery_quantile(0.99),
    }
