"""Settings of the streaming service, as one typed value object.

The gateway's config file keeps a raw top-level ``streaming:`` mapping and a
``handlers:`` list; :func:`parse_config` turns them into a :class:`StreamingConfig`,
and errors name the offending path (``at $.streaming.lease_seconds``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import msgspec

from prism.errors import InvalidArgument

__all__ = ["StreamingConfig", "parse_config", "parse_setting"]

DAY = 86400.0


class StreamingConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """Every timeout, limit and retry of the streaming service. Times are seconds."""

    #: Serve /v1/stream and /v1/requests and run workers.
    enabled: bool = True
    #: The gateway store that holds requests and events (default: the first store of the config).
    store: str | None = None
    #: Prefix of the KeyValue namespaces that hold requests, events and connections.
    namespace_prefix: str = "streaming"
    #: Where the work queue lives (default: the store URL, which picks the engine by scheme).
    queue_url: str | None = None
    #: Where progress is published (default: the store URL).
    pubsub_url: str | None = None
    #: Name of the work queue inside its engine.
    queue_name: str = "requests"
    #: Handlers whose estimated duration is under this run inline and answer with ``response``.
    sync_threshold: float = 5.0
    #: An inline handler still running after this long is promoted to async (default: sync_threshold).
    sync_deadline: float | None = None
    #: Largest accepted WebSocket frame, in bytes; larger frames get MESSAGE_TOO_LARGE.
    max_frame_bytes: int = 128 * 1024
    #: Seconds a client has to send the whole body of POST /v1/requests; a slower one gets 408.
    body_timeout: float = 30.0
    #: Invalid frames in a row after which the connection is closed with 1008.
    max_invalid_frames: int = 10
    #: Sustained client messages per second per connection before RATE_LIMITED.
    rate_limit: float = 100.0
    #: Messages a connection may send in a burst above ``rate_limit``.
    rate_burst: int = 200
    #: How long request records and their events are kept.
    request_ttl: float = 7 * DAY
    #: Events kept per request for replay.
    event_log_size: int = 1000
    #: Progress events per second per request; reports in between are coalesced (latest wins).
    progress_rate: float = 10.0
    #: Most request records one store call writes: record writes that come while one call is
    #: under way go together in the next (each keeps its own condition and outcome).
    record_batch: int = 64
    #: A WebSocket with no client message for this long is closed (a ``ping`` counts).
    idle_timeout: float = 300.0
    #: Least time between two last_seen writes of one connection record.
    connection_touch_interval: float = 30.0
    #: A connection record not touched for this long is stale (its ttl) and swept.
    connection_stale_after: float = 900.0
    #: A followed request with no event for this long is re-read from the store, in case a
    #: publish was lost (pub/sub delivers at most once).
    resync_interval: float = 5.0
    #: Outbound messages buffered per connection; a client that falls further behind is closed (1013).
    send_queue_size: int = 4096
    #: Connections of one principal on one node that may take its whole feed (the ``feed``
    #: message: the events of all its requests); 0 turns the feed off. Never for the anonymous caller.
    feed_connections: int = 8
    #: Attempts at settling a submission whose record write had no clear outcome (a timeout)
    #: before it is answered INTERNAL_ERROR with its request_id and status unknown.
    submit_settle_attempts: int = 3
    #: What a WebSocket disconnect does to the requests it started.
    disconnect_policy: Literal["continue", "cancel"] = "continue"
    #: Run workers inside the serving process.
    run_workers: bool = True
    #: Jobs one worker process runs at the same time.
    workers: int = 8
    #: How long a leased job stays invisible to other workers without a heartbeat.
    lease_seconds: float = 30.0
    #: How often a running job renews its lease.
    heartbeat_interval: float = 10.0
    #: Longest wait of one queue poll.
    poll_interval: float = 1.0
    #: Attempts of a job before it is dead-lettered (a handler's ``retries=`` overrides).
    max_attempts: int = 3
    #: First retry delay; doubles per attempt up to ``retry_backoff_max``.
    retry_backoff: float = 1.0
    retry_backoff_max: float = 60.0
    #: Random fraction (0-1) of each retry delay added or removed, so retries spread out.
    retry_jitter: float = 0.5
    #: Default per-attempt deadline of an async handler (a handler's ``timeout=`` overrides).
    handler_timeout: float = 3600.0
    #: After a cancel, how long a handler may take to stop on its own before it is interrupted.
    cancel_grace: float = 5.0
    #: After SIGTERM or SIGINT, the longest a worker process takes to stop: running handlers
    #: get up to ``cancel_grace`` to finish, the rest are interrupted and their requests handed
    #: back; whatever is still pending then is abandoned and the process exits anyway.
    shutdown_timeout: float = 20.0
    #: A queued message whose request record never appeared is dropped after this long.
    orphan_grace: float = 30.0
    #: Largest ``limit`` of GET /v1/requests.
    max_list_limit: int = 100
    #: Role that may read, follow and cancel any request of its tenant.
    admin_role: str = "admin"
    #: Seconds between SSE keep-alive comments.
    sse_keepalive: float = 15.0
    #: Seconds between two samples of the work queue's depth (``prism_streaming_queue_depth``).
    metrics_interval: float = 5.0
    #: Register ``echo`` (answers with its payload).
    builtin_handlers: bool = True
    #: Register the demo handlers ``delay`` and ``generate_report`` (on in the zero-config
    #: ``prism serve``; with a config file only when asked).
    demo_handlers: bool = False
    #: Longest ``delay`` the demo handler accepts.
    max_delay_seconds: float = 60.0
    #: Extra handler routers, as "package.module:router".
    handlers: list[str] = msgspec.field(default_factory=list)

    def __post_init__(self) -> None:
        positive = (
            "sync_threshold",
            "lease_seconds",
            "heartbeat_interval",
            "poll_interval",
            "request_ttl",
            "progress_rate",
            "idle_timeout",
            "connection_touch_interval",
            "connection_stale_after",
            "rate_limit",
            "handler_timeout",
            "sse_keepalive",
            "metrics_interval",
            "resync_interval",
            "body_timeout",
            "shutdown_timeout",
        )
        for name in positive:
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0")
        if not 0 < self.max_delay_seconds < math.inf:
            raise ValueError("max_delay_seconds must be a finite number of seconds > 0")
        non_negative = (
            "retry_backoff",
            "retry_backoff_max",
            "cancel_grace",
            "orphan_grace",
            "feed_connections",
        )
        for name in non_negative:
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        at_least_one = (
            "max_frame_bytes",
            "max_invalid_frames",
            "rate_burst",
            "event_log_size",
            "send_queue_size",
            "record_batch",
            "submit_settle_attempts",
            "workers",
            "max_attempts",
            "max_list_limit",
        )
        for name in at_least_one:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.sync_deadline is not None and not self.sync_deadline > 0:
            raise ValueError("sync_deadline must be > 0")
        if not 0 <= self.retry_jitter <= 1:
            raise ValueError("retry_jitter must be between 0 and 1")
        if self.heartbeat_interval >= self.lease_seconds:
            raise ValueError("heartbeat_interval must be shorter than lease_seconds")
        if not self.namespace_prefix or not self.namespace_prefix.replace("_", "").isalnum():
            raise ValueError("namespace_prefix must be letters, digits and underscores")

    @property
    def inline_deadline(self) -> float:
        """How long an inline handler may run before it is promoted to async."""
        return self.sync_threshold if self.sync_deadline is None else self.sync_deadline

    def namespace(self, kind: str) -> str:
        """The KeyValue namespace that holds ``kind`` (requests, events, connections, ...)."""
        return f"{self.namespace_prefix}_{kind}"


def parse_setting(spec: str) -> tuple[str, Any]:
    """``NAME=VALUE`` from a command line, VALUE read as JSON when it parses (numbers, booleans)."""
    name, sep, value = spec.partition("=")
    if not sep or not name:
        raise ValueError(f"a setting is NAME=VALUE, not {spec!r}")
    try:
        return name, msgspec.json.decode(value)
    except msgspec.DecodeError:
        return name, value


def parse_config(
    raw: Mapping[str, Any] | None = None, handlers: Sequence[str] | None = None, **overrides: Any
) -> StreamingConfig:
    """Build a StreamingConfig from the raw ``streaming:`` mapping and the top-level ``handlers:`` list.

    Raises InvalidArgument naming the path of the first bad setting.
    """
    data: dict[str, Any] = dict(raw or {})
    if handlers:
        data["handlers"] = [*data.get("handlers", []), *handlers]
    data.update(overrides)
    try:
        return msgspec.convert(data, StreamingConfig)
    except msgspec.ValidationError as exc:
        message = str(exc).replace("`$", "`$.streaming")
        raise InvalidArgument(f"invalid streaming config: {message}") from exc
