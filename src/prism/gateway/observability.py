"""Request ids, access logs, Prometheus metrics and OpenTelemetry spans for every HTTP request.

A pure ASGI middleware (no per-request objects beyond a closure) so its cost stays
in the microseconds. Metrics are labelled by the route *template* and the
configured namespace, never by raw paths, so their cardinality stays bounded; they
are counted in plain integers under one lock and turned into Prometheus families
only when scraped (a custom collector on the default registry). The W3C
``traceparent`` of the caller becomes the parent of the request span, and the
KeyValue layer's spans are children of that, so a trace follows a request from the
client to the backend.
"""

from __future__ import annotations

import bisect
import itertools
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.trace import ProxyTracerProvider, SpanKind, Status, StatusCode
from prometheus_client import REGISTRY, Gauge
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from prism.gateway.logs import AccessLog

__all__ = ["BUCKETS", "HTTP_METRICS", "HttpMetrics", "InFlight", "ObservabilityMiddleware"]

_tracer = trace.get_tracer("prism.gateway")

#: Upper bounds (seconds) of the ``prism_http_request_duration_seconds`` buckets.
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BUCKET_LABELS = (*map(str, BUCKETS), "+Inf")  # the labels Prometheus clients give them: 0.0005, 1.0, 10.0
_bisect = bisect.bisect_left

IN_FLIGHT = Gauge("prism_http_requests_in_flight", "HTTP requests being served.")

_METHODS = frozenset({"GET", "HEAD", "PUT", "POST", "DELETE", "PATCH", "OPTIONS"})
#: Longest client-supplied X-Request-ID that is kept (longer ones are replaced).
MAX_REQUEST_ID_LENGTH = 128


#: How often (seconds) to look whether an OpenTelemetry SDK was installed since the last look.
TRACING_CHECK_INTERVAL = 1.0


def _tracing_enabled() -> bool:
    return not isinstance(trace.get_tracer_provider(), ProxyTracerProvider)


def _valid_request_id(raw: bytes) -> bool:
    return 0 < len(raw) <= MAX_REQUEST_ID_LENGTH and all(0x21 <= b <= 0x7E for b in raw)


class _RequestIds:
    """Request ids: a per-process random prefix and a counter (unique, and cheaper than urandom per call)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.prefix = os.urandom(6).hex()
        self.counter = itertools.count(1)

    def next(self) -> str:
        return f"{self.prefix}{next(self.counter):012x}"


_request_ids = _RequestIds()
os.register_at_fork(after_in_child=_request_ids.reset)


class _Series:
    """The counts of one (route, method, namespace): requests by status, and the latency histogram."""

    __slots__ = ("buckets", "lock", "method", "namespace", "route", "statuses", "total")

    def __init__(self, route: str, method: str, namespace: str, lock: threading.Lock) -> None:
        self.route = route
        self.method = method
        self.namespace = namespace
        self.lock = lock
        self.statuses: dict[int, int] = {}
        self.buckets = [0] * (len(BUCKETS) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, status: int, elapsed: float) -> None:
        """Count one finished request."""
        with self.lock:
            statuses = self.statuses
            statuses[status] = statuses.get(status, 0) + 1
            self.buckets[_bisect(BUCKETS, elapsed)] += 1
            self.total += elapsed


class HttpMetrics(Collector):
    """``prism_http_requests_total`` and ``prism_http_request_duration_seconds``, exported at scrape time."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.series: dict[tuple[str, str, str], _Series] = {}

    def series_for(self, route: str, method: str, namespace: str) -> _Series:
        """The series of one route template, method and namespace (shared by every app in the process)."""
        key = (route, method, namespace)
        found = self.series.get(key)
        if found is None:
            with self.lock:
                found = self.series.setdefault(key, _Series(route, method, namespace, self.lock))
        return found

    def collect(self) -> Iterator[Any]:
        """The two families, built from the counts at the time of the scrape."""
        requests = CounterMetricFamily(
            "prism_http_requests",
            "HTTP requests by route template, method, status and namespace.",
            labels=["route", "method", "status", "namespace"],
        )
        latency = HistogramMetricFamily(
            "prism_http_request_duration_seconds",
            "HTTP request latency by route template, method and namespace.",
            labels=["route", "method", "namespace"],
        )
        with self.lock:
            for s in self.series.values():
                for status, count in s.statuses.items():
                    requests.add_metric([s.route, s.method, str(status), s.namespace], count)
                cumulative, buckets = 0, []
                for bound, count in zip(_BUCKET_LABELS, s.buckets, strict=True):
                    cumulative += count
                    buckets.append((bound, cumulative))
                if cumulative:
                    latency.add_metric([s.route, s.method, s.namespace], buckets, s.total)
        yield requests
        yield latency


HTTP_METRICS = HttpMetrics()
REGISTRY.register(HTTP_METRICS)


class InFlight:
    """Requests being served by one app (read by the ``prism_http_requests_in_flight`` gauge)."""

    def __init__(self) -> None:
        self.value = 0
        IN_FLIGHT.set_function(lambda: self.value)


class ObservabilityMiddleware:
    """Wraps the app: assigns X-Request-ID, times, counts, logs and traces each HTTP request."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        access_log: AccessLog | None = None,
        in_flight: InFlight | None = None,
        direct: bool = False,
    ) -> None:
        """``direct`` apps add the X-Request-ID header (``scope["prism.request_id_header"]``) and
        report their status (``scope["prism.status"]``) themselves, which spares wrapping ``send``.
        """
        self.app = app
        self.direct = direct
        self.access_log = access_log
        self.in_flight = in_flight or InFlight()
        self._series: dict[tuple[str, str, str], _Series] = {}
        self._tracing = False
        self._tracing_checked = 0.0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        rid = ""
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                if _valid_request_id(value):
                    rid = value.decode("ascii")
                break
        if not rid:
            rid = _request_ids.next()
        scope["prism.request_id"] = rid
        status = 500
        inner_send = send
        if self.direct:
            scope["prism.request_id_header"] = rid.encode("ascii")
        else:
            id_header = (b"x-request-id", rid.encode("ascii"))

            async def send_with_id(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                    message["headers"] = [*message.get("headers", ()), id_header]
                await send(message)

            inner_send = send_with_id

        if not self._tracing and started - self._tracing_checked > TRACING_CHECK_INTERVAL:
            self._tracing_checked = started
            self._tracing = _tracing_enabled()
        in_flight = self.in_flight
        in_flight.value += 1
        span = None
        try:
            if self._tracing:
                carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
                parent = propagate.extract(carrier)
                span = _tracer.start_span(
                    f"HTTP {scope['method']}",
                    context=parent,
                    kind=SpanKind.SERVER,
                    attributes={"http.request.method": scope["method"], "prism.request_id": rid},
                )
                with trace.use_span(span, end_on_exit=False):
                    await self.app(scope, receive, inner_send)
            else:
                await self.app(scope, receive, inner_send)
        finally:
            in_flight.value -= 1
            if self.direct:
                status = scope.get("prism.status", 500)
            self._observe(scope, status, started, rid, span)

    def _observe(self, scope: Scope, status: int, started: float, rid: str, span: Any) -> None:
        elapsed = time.perf_counter() - started
        route_obj = scope.get("route")
        route = getattr(route_obj, "path", None) or "unmatched"
        method = scope["method"]
        if method not in _METHODS:
            method = "OTHER"
        namespace = scope.get("prism.namespace", "")
        key = (route, method, namespace)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = HTTP_METRICS.series_for(route, method, namespace)
        series.observe(status, elapsed)
        trace_id = None
        if span is not None:
            span.update_name(f"HTTP {method} {route}")
            span.set_attribute("http.route", route)
            span.set_attribute("http.response.status_code", status)
            if namespace:
                span.set_attribute("prism.namespace", namespace)
            if status >= 500:
                span.set_status(Status(StatusCode.ERROR))
            span.end()
            trace_id = format(span.get_span_context().trace_id, "032x")
        if self.access_log is not None:
            self.access_log.request(
                rid, method, route, status, elapsed, namespace or None, scope.get("prism.principal"), trace_id
            )
