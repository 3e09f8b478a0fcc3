"""Request ids, access logs, Prometheus metrics and OpenTelemetry spans for every HTTP request.

A pure ASGI middleware (no per-request objects beyond a closure) so its cost stays
in the microseconds. Metrics are labelled by the route *template* and the
configured namespace, never by raw paths, so their cardinality stays bounded. The
W3C ``traceparent`` of the caller becomes the parent of the request span, and the
KeyValue layer's spans are children of that, so a trace follows a request from the
client to the backend.
"""

from __future__ import annotations

import itertools
import os
import time
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.trace import ProxyTracerProvider, SpanKind, Status, StatusCode
from prometheus_client import Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from prism.gateway.logs import AccessLog

__all__ = ["InFlight", "ObservabilityMiddleware"]

_tracer = trace.get_tracer("prism.gateway")

REQUESTS = Counter(
    "prism_http_requests_total",
    "HTTP requests by route template, method, status and namespace.",
    ["route", "method", "status", "namespace"],
)
LATENCY = Histogram(
    "prism_http_request_duration_seconds",
    "HTTP request latency by route template, method and namespace.",
    ["route", "method", "namespace"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
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

    def next(self) -> bytes:
        return f"{self.prefix}{next(self.counter):012x}".encode("ascii")


_request_ids = _RequestIds()
os.register_at_fork(after_in_child=_request_ids.reset)


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
        self._counters: dict[tuple[str, str, str, str], Any] = {}
        self._histograms: dict[tuple[str, str, str], Any] = {}
        self._tracing = False
        self._tracing_checked = 0.0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = b""
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                request_id = value if _valid_request_id(value) else b""
                break
        if not request_id:
            request_id = _request_ids.next()
        rid = request_id.decode("ascii")
        scope["prism.request_id"] = rid
        status = 500
        inner_send = send
        if self.direct:
            scope["prism.request_id_header"] = request_id
        else:

            async def send_with_id(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                    message["headers"] = [*message.get("headers", ()), (b"x-request-id", request_id)]
                await send(message)

            inner_send = send_with_id

        if not self._tracing and started - self._tracing_checked > TRACING_CHECK_INTERVAL:
            self._tracing_checked = started
            self._tracing = _tracing_enabled()
        self.in_flight.value += 1
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
            self.in_flight.value -= 1
            if self.direct:
                status = scope.get("prism.status", 500)
            self._observe(scope, status, started, rid, span)

    def _observe(self, scope: Scope, status: int, started: float, rid: str, span: Any) -> None:
        elapsed = time.perf_counter() - started
        route_obj = scope.get("route")
        route = getattr(route_obj, "path", None) or "unmatched"
        method = scope["method"] if scope["method"] in _METHODS else "OTHER"
        namespace = scope.get("prism.namespace", "")
        key = (route, method, str(status), namespace)
        counter = self._counters.get(key)
        if counter is None:
            counter = self._counters[key] = REQUESTS.labels(*key)
        counter.inc()
        hkey = (route, method, namespace)
        hist = self._histograms.get(hkey)
        if hist is None:
            hist = self._histograms[hkey] = LATENCY.labels(*hkey)
        hist.observe(elapsed)
        if span is not None:
            span.update_name(f"HTTP {method} {route}")
            span.set_attribute("http.route", route)
            span.set_attribute("http.response.status_code", status)
            if namespace:
                span.set_attribute("prism.namespace", namespace)
            if status >= 500:
                span.set_status(Status(StatusCode.ERROR))
            span.end()
        if self.access_log is not None:
            fields: dict[str, Any] = {
                "request_id": rid,
                "method": method,
                "route": route,
                "status": status,
                "latency_ms": round(elapsed * 1000, 3),
            }
            if namespace:
                fields["namespace"] = namespace
            principal = scope.get("prism.principal")
            if principal is not None:
                fields["principal"] = principal
            if span is not None:
                fields["trace_id"] = format(span.get_span_context().trace_id, "032x")
            self.access_log.write(fields)
