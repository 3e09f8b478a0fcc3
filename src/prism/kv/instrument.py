"""Metrics, traces and logs, once for every backend.

Every Namespace call runs inside ``Instrumentation.op``; backends contain no
observability code. Prometheus children are cached per label set and spans are
only made when an OpenTelemetry SDK is installed, so the cost on the hot path is a
few hundred nanoseconds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from types import TracebackType
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import ProxyTracerProvider, SpanKind, Status, StatusCode
from prometheus_client import Counter, Gauge, Histogram

from prism.errors import PrismError

__all__ = ["OPERATIONS", "Instrumentation"]

log = logging.getLogger("prism.kv")
_tracer = trace.get_tracer("prism.kv")

OPERATIONS = Counter(
    "prism_kv_operations_total",
    "KeyValue operations by namespace, operation, backend and outcome.",
    ["namespace", "op", "backend", "outcome"],
)
STATS = Counter(
    "prism_kv_stats_total",
    "Read hits and misses, and failed operations.",
    ["namespace", "backend", "stat"],
)
LATENCY = Histogram(
    "prism_kv_latency_seconds",
    "KeyValue operation latency.",
    ["namespace", "op", "backend"],
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
IN_FLIGHT = Gauge("prism_kv_in_flight", "KeyValue operations in progress.", ["backend"])


def _tracing_enabled() -> bool:
    return not isinstance(trace.get_tracer_provider(), ProxyTracerProvider)


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
        self._inst.in_flight.inc()
        if _tracing_enabled():
            span = _tracer.start_span(
                f"kv.{self._name}",
                kind=SpanKind.CLIENT,
                attributes={
                    "db.system": self._inst.system,
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
        inst = self._inst
        inst.in_flight.dec()
        if exc is None:
            outcome = "ok"
        elif isinstance(exc, PrismError):
            outcome = exc.code.lower()
        else:
            outcome = "cancelled" if isinstance(exc, asyncio.CancelledError) else "error"
        key = (self._ns, self._name, outcome)
        counter = inst.counters.get(key)
        if counter is None:
            counter = inst.counters[key] = OPERATIONS.labels(self._ns, self._name, inst.system, outcome)
        counter.inc()
        hist = inst.histograms.get((self._ns, self._name))
        if hist is None:
            hist = inst.histograms[(self._ns, self._name)] = LATENCY.labels(self._ns, self._name, inst.system)
        hist.observe(elapsed)
        if self.hits or self.misses:
            inst.stat(self._ns, "hit").inc(self.hits)
            if self.misses:
                inst.stat(self._ns, "miss").inc(self.misses)
        if exc is not None and not isinstance(exc, _EXPECTED):
            inst.stat(self._ns, "error").inc()
            log.warning(
                "kv operation failed",
                extra={
                    "namespace": self._ns,
                    "op": self._name,
                    "backend": inst.system,
                    "error": type(exc).__name__,
                    "latency_ms": round(elapsed * 1000, 3),
                },
            )
        if self._span is not None:
            if exc is not None:
                span = trace.get_current_span()
                span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            self._span.__exit__(exc_type, exc, tb)


def _expected_errors() -> tuple[type[BaseException], ...]:
    # Conditions failing and bad input are the caller's business, not an error of the store.
    from prism.errors import InvalidArgument, PreconditionFailed

    return (InvalidArgument, PreconditionFailed)


_EXPECTED = _expected_errors()


class Instrumentation:
    """The metric children and tracer attributes of one backend."""

    def __init__(self, system: str) -> None:
        self.system = system
        self.counters: dict[tuple[str, str, str], Any] = {}
        self.histograms: dict[tuple[str, str], Any] = {}
        self._stats: dict[tuple[str, str], Any] = {}
        self.in_flight = IN_FLIGHT.labels(system)

    def stat(self, ns: str, stat: str) -> Any:
        child = self._stats.get((ns, stat))
        if child is None:
            child = self._stats[(ns, stat)] = STATS.labels(ns, self.system, stat)
        return child

    def op(self, ns: str, name: str, count: int = 1) -> _Op:
        return _Op(self, ns, name, count)
