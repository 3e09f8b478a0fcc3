"""Metrics, traces and logs, once for every backend.

Every Namespace call runs inside ``Instrumentation.op``; backends contain no
observability code. Counts are kept in plain dicts under one lock and turned into
Prometheus families only when scraped (a custom collector on the default
registry), and spans are only made when an OpenTelemetry SDK is installed, so the
hot path pays about a microsecond.

Metrics: ``prism_kv_operations_total{namespace,op,backend,outcome}``,
``prism_kv_stats_total{namespace,backend,stat=hit|miss|error}``,
``prism_kv_latency_seconds{namespace,op,backend}`` (histogram) and
``prism_kv_in_flight{backend}``.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import threading
import time
from collections.abc import Iterator
from types import TracebackType
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from prometheus_client import REGISTRY
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from prism.errors import InvalidArgument, PreconditionFailed, PrismError

__all__ = ["BUCKETS", "Instrumentation", "KV_METRICS"]

log = logging.getLogger("prism.kv")
_tracer = trace.get_tracer("prism.kv")

#: Upper bounds (seconds) of the latency histogram's buckets.
BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

# Failed conditions and bad input are the caller's business, not an error of the store.
_EXPECTED = (InvalidArgument, PreconditionFailed)


def _tracing_enabled() -> bool:
    # Set once an SDK provider is installed (set_tracer_provider or OTEL_PYTHON_TRACER_PROVIDER).
    return getattr(trace, "_TRACER_PROVIDER", None) is not None


class KVMetrics(Collector):
    """The counters of every store in the process, exported at scrape time."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.operations: dict[tuple[str, str, str, str], int] = {}
        self.stats: dict[tuple[str, str, str], int] = {}
        self.latency: dict[tuple[str, str, str], list[float]] = {}  # bucket counts..., +Inf count, sum
        self.in_flight: dict[str, int] = {}

    def collect(self) -> Iterator[Any]:
        with self.lock:
            operations = dict(self.operations)
            stats = dict(self.stats)
            latency = {k: list(v) for k, v in self.latency.items()}
            in_flight = dict(self.in_flight)
        ops = CounterMetricFamily(
            "prism_kv_operations",
            "KeyValue operations by namespace, operation, backend and outcome.",
            labels=["namespace", "op", "backend", "outcome"],
        )
        for labels, value in operations.items():
            ops.add_metric(list(labels), value)
        yield ops
        stat = CounterMetricFamily(
            "prism_kv_stats", "Read hits and misses, and failed operations.", labels=["namespace", "backend", "stat"]
        )
        for labels, value in stats.items():
            stat.add_metric(list(labels), value)
        yield stat
        hist = HistogramMetricFamily(
            "prism_kv_latency_seconds", "KeyValue operation latency.", labels=["namespace", "op", "backend"]
        )
        for labels, counts in latency.items():
            cumulative, buckets = 0.0, []
            for bound, count in zip((*map(str, BUCKETS), "+Inf"), counts[:-1], strict=True):
                cumulative += count
                buckets.append((bound, cumulative))
            hist.add_metric(list(labels), buckets, counts[-1])
        yield hist
        gauge = GaugeMetricFamily("prism_kv_in_flight", "KeyValue operations in progress.", labels=["backend"])
        for backend, value in in_flight.items():
            gauge.add_metric([backend], value)
        yield gauge


KV_METRICS = KVMetrics()
REGISTRY.register(KV_METRICS)


class _Op:
    """One instrumented call: a context manager that records its outcome on exit."""

    __slots__ = ("_count", "_inst", "_name", "_ns", "_span", "_start", "hits", "misses")

    def __init__(self, inst: Instrumentation, ns: str, name: str, count: int) -> None:
        self._inst = inst
        self._ns = ns
        self._name = name
        self._count = count
        self._span: Any = None
        self.hits = 0
        self.misses = 0

    def __enter__(self) -> _Op:
        system = self._inst.system
        with KV_METRICS.lock:
            KV_METRICS.in_flight[system] = KV_METRICS.in_flight.get(system, 0) + 1
        if _tracing_enabled():
            span = _tracer.start_span(
                f"kv.{self._name}",
                kind=SpanKind.CLIENT,
                attributes={
                    "db.system": system,
                    "db.operation": self._name,
                    "prism.namespace": self._ns,
                    "prism.key_count": self._count,
                },
            )
            self._span = trace.use_span(span, end_on_exit=True)
            self._span.__enter__()
        self._start = time.perf_counter()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        elapsed = time.perf_counter() - self._start
        system = self._inst.system
        ns = self._ns
        if exc is None:
            outcome = "ok"
        elif isinstance(exc, PrismError):
            outcome = exc.code.lower()
        else:
            outcome = "cancelled" if isinstance(exc, asyncio.CancelledError) else "error"
        failed = exc is not None and not isinstance(exc, _EXPECTED)
        m = KV_METRICS
        with m.lock:
            m.in_flight[system] -= 1
            key = (ns, self._name, system, outcome)
            m.operations[key] = m.operations.get(key, 0) + 1
            counts = m.latency.get(key[:3])
            if counts is None:
                counts = m.latency[key[:3]] = [0.0] * (len(BUCKETS) + 2)
            counts[bisect.bisect_left(BUCKETS, elapsed)] += 1
            counts[-1] += elapsed
            if self.hits:
                hit = (ns, system, "hit")
                m.stats[hit] = m.stats.get(hit, 0) + self.hits
            if self.misses:
                miss = (ns, system, "miss")
                m.stats[miss] = m.stats.get(miss, 0) + self.misses
            if failed:
                err = (ns, system, "error")
                m.stats[err] = m.stats.get(err, 0) + 1
        if failed:
            log.warning(
                "kv operation failed",
                extra={
                    "namespace": ns,
                    "op": self._name,
                    "backend": system,
                    "error": type(exc).__name__,
                    "latency_ms": round(elapsed * 1000, 3),
                },
            )
        if self._span is not None:
            if exc is not None:
                trace.get_current_span().set_status(Status(StatusCode.ERROR, type(exc).__name__))
            self._span.__exit__(exc_type, exc, tb)


class Instrumentation:
    """Instruments the calls of one store (``system`` is its backend's name)."""

    def __init__(self, system: str) -> None:
        self.system = system

    def op(self, ns: str, name: str, count: int = 1) -> _Op:
        return _Op(self, ns, name, count)
