"""Prometheus metrics of streaming, on the default registry (the gateway's ``/metrics`` serves them).

* ``prism_streaming_requests_total{action,status}``: requests entering a status — PENDING
  when queued, PROCESSING when a worker (or an inline run with an id) takes one,
  RETRYING, and the final COMPLETED, FAILED, CANCELLED; sync answers that are never
  stored count under their final status too.
* ``prism_streaming_jobs_running``: attempts running in this process (leases held).
* ``prism_streaming_events_delivered_total``: request events sent to clients (one per
  event and connection or SSE stream).
* ``prism_streaming_connections{transport}``: open WebSockets and SSE streams.
* ``prism_streaming_queue_depth``: messages waiting in the work queue, sampled every
  ``streaming.metrics_interval`` seconds by each process that runs the service.
* ``prism_streaming_dead_letters_total``: stored requests that failed for good (dead letters).
* ``prism_streaming_delivery_seconds``: from an event's timestamp to its sending to a client.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

__all__ = [
    "CONNECTIONS",
    "DEAD_LETTERS",
    "DELIVERY_SECONDS",
    "EVENTS_DELIVERED",
    "JOBS_RUNNING",
    "QUEUE_DEPTH",
    "REQUESTS",
    "count_status",
]

REQUESTS = Counter(
    "prism_streaming_requests_total", "Streaming requests entering a status.", ["action", "status"]
)
JOBS_RUNNING = Gauge("prism_streaming_jobs_running", "Streaming request attempts running in this process.")
EVENTS_DELIVERED = Counter(
    "prism_streaming_events_delivered_total", "Request events sent to WebSocket and SSE clients."
)
CONNECTIONS = Gauge("prism_streaming_connections", "Open streaming connections.", ["transport"])
QUEUE_DEPTH = Gauge("prism_streaming_queue_depth", "Messages waiting in the streaming work queue.")
DEAD_LETTERS = Counter(
    "prism_streaming_dead_letters_total", "Stored streaming requests that failed for good (dead letters)."
)
DELIVERY_SECONDS = Histogram(
    "prism_streaming_delivery_seconds",
    "Time from an event's timestamp to its sending to a WebSocket or SSE client.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)


def count_status(action: str, status: str) -> None:
    """Count one request of ``action`` entering ``status``."""
    REQUESTS.labels(action, status).inc()
