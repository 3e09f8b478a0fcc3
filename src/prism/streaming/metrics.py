"""Prometheus metrics of streaming, on the default registry (the gateway's ``/metrics`` serves them).

* ``prism_streaming_requests_total{action,status}``: requests entering a status — PENDING
  when queued, PROCESSING when a worker (or an inline run with an id) takes one,
  RETRYING, and the final COMPLETED, FAILED, CANCELLED; sync answers that are never
  stored count under their final status too.
* ``prism_streaming_jobs_running``: attempts running in this process (leases held).
* ``prism_streaming_events_delivered_total``: request events sent to clients (one per
  event and connection or SSE stream).
* ``prism_streaming_connections{transport}``: open WebSockets and SSE streams.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

__all__ = ["CONNECTIONS", "EVENTS_DELIVERED", "JOBS_RUNNING", "REQUESTS", "count_status"]

REQUESTS = Counter(
    "prism_streaming_requests_total", "Streaming requests entering a status.", ["action", "status"]
)
JOBS_RUNNING = Gauge("prism_streaming_jobs_running", "Streaming request attempts running in this process.")
EVENTS_DELIVERED = Counter(
    "prism_streaming_events_delivered_total", "Request events sent to WebSocket and SSE clients."
)
CONNECTIONS = Gauge("prism_streaming_connections", "Open streaming connections.", ["transport"])


def count_status(action: str, status: str) -> None:
    """Count one request of ``action`` entering ``status``."""
    REQUESTS.labels(action, status).inc()
