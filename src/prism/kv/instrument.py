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
import itertools
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

__all__ = ["BUCKETS", "KV_METRICS", "Instrumentation"]

log = logging.getLogger("prism.kv")
_tracer = trace.get_tracer("prism.kv")

#: Upper bounds (seconds) of the latency histogram's buckets.
BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

_LOCK = threading.Lock()
_bisect = bisect.bisect_left
#: Most reads of an embedded store land in the first bucket: no search for them.
_FIRST_BOUND = BUCKETS[0]

# Failed conditions and bad input are the caller's business, not an error of the store.
_EXPECTED = (InvalidArgument, PreconditionFailed)


def tracing_enabled() -> bool:
    # Set once an SDK provider is installed (set_tracer_provider or OTEL_PYTHON_TRACER_PROVIDER).
    return getattr(trace, "_TRACER_PROVIDER", None) is not None


class Series:
    """The counters of one (namespace, op, backend): outcomes, latency buckets, hits and misses."""

    __slots__ = (
        "backend",
        "buckets",
        "failures",
        "hits",
        "misses",
        "namespace",
        "ok",
        "op",
        "started",
        "total",
    )

    def __init__(self, namespace: str, op: str, backend: str, started: Iterator[int]) -> None:
        self.started = started
        self.namespace = namespace
        self.op = op
        self.backend = backend
        self.ok = 0
        self.failures: dict[str, int] = {}
        self.buckets = [0] * (len(BUCKETS) + 1)  # the last one is +Inf
        self.total = 0.0
        self.hits = 0
        self.misses = 0

    def read(self, elapsed: float, found: bool) -> None:
        """Count one successful single-key read (a hit or a miss): ``observe``'s hot case."""
        bucket = 0 if elapsed <= _FIRST_BOUND else _bisect(BUCKETS, elapsed)
        with _LOCK:
            self.ok += 1
            self.buckets[bucket] += 1
            self.total += elapsed
            if found:
                self.hits += 1
            else:
                self.misses += 1

    def observe(self, elapsed: float, exc: BaseException | None, hits: int = 0, misses: int = 0) -> None:
        """Count one finished call: its outcome, latency, hits and misses; log it if it failed."""
        if exc is None:
            with _LOCK:
                self.ok += 1
                self.buckets[_bisect(BUCKETS, elapsed)] += 1
                self.total += elapsed
                self.hits += hits
                self.misses += misses
            return
        if isinstance(exc, PrismError):
            outcome = exc.code.lower()
        else:
            outcome = "cancelled" if isinstance(exc, asyncio.CancelledError) else "error"
        failed = not isinstance(exc, _EXPECTED)
        with _LOCK:
            self.failures[outcome] = self.failures.get(outcome, 0) + 1
            self.buckets[_bisect(BUCKETS, elapsed)] += 1
            self.total += elapsed
            if failed:
                key = (self.namespace, self.backend)
                KV_METRICS.errors[key] = KV_METRICS.errors.get(key, 0) + 1
        if failed:
            log.warning(
                "kv operation failed",
                extra={
                    "namespace": self.namespace,
                    "op": self.op,
                    "backend": self.backend,
                    "error": type(exc).__name__,
                    "latency_ms": round(elapsed * 1000, 3),
                },
            )


class KVMetrics(Collector):
    """The counters of every store in the process, exported at scrape time."""

    def __init__(self) -> None:
        self.lock = _LOCK
        self.series: dict[tuple[str, str, str], Series] = {}
        self.errors: dict[tuple[str, str], int] = {}
        # In flight = started - finished. ``started`` is an itertools.count per backend, whose
        # next() is atomic without a lock; reading it consumes a value, which ``peeks`` subtracts.
        self.started: dict[str, Iterator[int]] = {}
        self.peeks: dict[str, int] = {}

    def started_counter(self, backend: str) -> Iterator[int]:
        with self.lock:
            return self.started.setdefault(backend, itertools.count())

    def series_for(self, namespace: str, op: str, backend: str) -> Series:
        key = (namespace, op, backend)
        found = self.series.get(key)
        if found is None:
            started = self.started_counter(backend)
            with self.lock:
                found = self.series.setdefault(key, Series(namespace, op, backend, started))
        return found

    def collect(self) -> Iterator[Any]:
        ops = CounterMetricFamily(
            "prism_kv_operations",
            "KeyValue operations by namespace, operation, backend and outcome.",
            labels=["namespace", "op", "backend", "outcome"],
        )
        stat = CounterMetricFamily(
            "prism_kv_stats",
            "Read hits and misses, and failed operations.",
            labels=["namespace", "backend", "stat"],
        )
        hist = HistogramMetricFamily(
            "prism_kv_latency_seconds", "KeyValue operation latency.", labels=["namespace", "op", "backend"]
        )
        gauge = GaugeMetricFamily(
            "prism_kv_in_flight", "KeyValue operations in progress.", labels=["backend"]
        )
        hits: dict[tuple[str, str], list[int]] = {}
        with self.lock:
            finished: dict[str, int] = {}
            for s in self.series.values():
                if s.ok:
                    ops.add_metric([s.namespace, s.op, s.backend, "ok"], s.ok)
                for outcome, count in s.failures.items():
                    ops.add_metric([s.namespace, s.op, s.backend, outcome], count)
                finished[s.backend] = finished.get(s.backend, 0) + s.ok + sum(s.failures.values())
                cumulative, buckets = 0, []
                for bound, count in zip((*map(str, BUCKETS), "+Inf"), s.buckets, strict=True):
                    cumulative += count
                    buckets.append((bound, cumulative))
                if cumulative:
                    hist.add_metric([s.namespace, s.op, s.backend], buckets, s.total)
                pair = hits.setdefault((s.namespace, s.backend), [0, 0])
                pair[0] += s.hits
                pair[1] += s.misses
            for (namespace, backend), (hit, miss) in hits.items():
                if hit or miss:
                    stat.add_metric([namespace, backend, "hit"], hit)
                    stat.add_metric([namespace, backend, "miss"], miss)
            for (namespace, backend), count in self.errors.items():
                stat.add_metric([namespace, backend, "error"], count)
            for backend, started in self.started.items():
                peeks = self.peeks.get(backend, 0)
                self.peeks[backend] = peeks + 1
                gauge.add_metric([backend], next(started) - peeks - finished.get(backend, 0))
        yield ops
        yield stat
        yield hist
        yield gauge


KV_METRICS = KVMetrics()
REGISTRY.register(KV_METRICS)


class _Op:
    """One instrumented call: a context manager that records its outcome on exit."""

    __slots__ = ("_count", "_series", "_span", "_start", "failure", "hits", "misses")

    def __init__(self, series: Series, count: int) -> None:
        self._series = series
        self._count = count
        self._span: Any = None
        self.hits = 0
        self.misses = 0
        #: An error the call reports without raising it (a failed condition of a single write).
        self.failure: BaseException | None = None

    def __enter__(self) -> _Op:
        next(self._series.started)
        if tracing_enabled():
            self._start_span()
        self._start = time.perf_counter()
        return self

    def _start_span(self) -> None:
        s = self._series
        span = _tracer.start_span(
            f"kv.{s.op}",
            kind=SpanKind.CLIENT,
            attributes={
                "db.system": s.backend,
                "db.operation": s.op,
                "prism.namespace": s.namespace,
                "prism.key_count": self._count,
            },
        )
        self._span = trace.use_span(span, end_on_exit=True)
        self._span.__enter__()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        elapsed = time.perf_counter() - self._start
        if exc is None and self.failure is not None:
            exc = self.failure
        self._series.observe(elapsed, exc, self.hits, self.misses)
        if self._span is not None:
            if exc is not None:
                trace.get_current_span().set_status(Status(StatusCode.ERROR, type(exc).__name__))
            self._span.__exit__(exc_type, exc if exc_type else None, tb)


class Instrumentation:
    """Instruments the calls of one store (``system`` is its backend's name)."""

    def __init__(self, system: str) -> None:
        self.system = system
        self._series: dict[tuple[str, str], Series] = {}

    def series(self, ns: str, name: str) -> Series:
        found = self._series.get((ns, name))
        if found is None:
            found = self._series[(ns, name)] = KV_METRICS.series_for(ns, name, self.system)
        return found

    def op(self, ns: str, name: str, count: int = 1) -> _Op:
        return _Op(self.series(ns, name), count)
