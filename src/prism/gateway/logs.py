"""Structured logs: every record as one JSON object per line, extra fields included; the access log."""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from datetime import UTC, datetime
from typing import Any

import msgspec

from prism.backends.urls import mask_query

__all__ = ["AccessLog", "JsonFormatter", "configure_logging", "redact"]

_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "taskName",
    "color_message",
}
_encoder = msgspec.json.Encoder()


def redact(message: str) -> str:
    """``message`` with the values of credential query parameters replaced by ``***``.

    Servers log request lines with their query string (uvicorn does for every
    WebSocket handshake), and a browser client can only send its token there.
    """
    return mask_query(message)


def _default(obj: Any) -> Any:
    return repr(obj)


_fallback = msgspec.json.Encoder(enc_hook=_default)


class JsonFormatter(logging.Formatter):
    """``{"time", "level", "logger", "message", ...extra}`` on one line, times in UTC."""

    converter = time.gmtime  # type: ignore[assignment]

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        out.update((k, v) for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_"))
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        try:
            return _encoder.encode(out).decode("utf-8")
        except TypeError:
            return _fallback.encode(out).decode("utf-8")


def configure_logging(level: str = "info") -> None:
    """Send Prism's and uvicorn's logs to stderr as JSON lines at ``level``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    # The gateway writes its own access log with request ids and route templates.
    logging.getLogger("uvicorn.access").disabled = True


class _AccessLine(msgspec.Struct, omit_defaults=True, gc=False):
    """One access log line, in the same field order as JsonFormatter's records."""

    time: datetime
    level: str
    logger: str
    message: str
    request_id: str
    method: str
    route: str
    status: int
    latency_ms: float
    namespace: str | None = None
    principal: str | None = None
    trace_id: str | None = None


#: What the access log keeps per request until it is written: the epoch time, request id,
#: method, route template, status, latency (seconds), namespace, principal and trace id.
_Request = tuple[float, str, str, str, int, float, str | None, str | None, str | None]


class AccessLog:
    """Request log lines (JSON, same shape as JsonFormatter's) written in batches to stderr.

    One line per request is too hot a path for the logging module (a record, a lock, a
    formatter and a flush each time), so a request only leaves a tuple of its fields;
    the lines are built and written together at most ``flush_interval`` seconds later,
    or as soon as ``max_buffer_lines`` pile up.
    """

    def __init__(self, *, flush_interval: float = 0.1, max_buffer_lines: int = 500) -> None:
        self.flush_interval = flush_interval
        self.max_buffer_lines = max_buffer_lines
        self._entries: list[_Request | bytes] = []
        self._timer: asyncio.TimerHandle | None = None

    def request(
        self,
        request_id: str,
        method: str,
        route: str,
        status: int,
        elapsed: float,
        namespace: str | None,
        principal: str | None,
        trace_id: str | None,
    ) -> None:
        """Queue the line of one finished request (``elapsed`` in seconds)."""
        entries = self._entries
        entries.append(
            (time.time(), request_id, method, route, status, elapsed, namespace, principal, trace_id)
        )
        if len(entries) >= self.max_buffer_lines:
            self.flush()
        elif self._timer is None:
            self._schedule()

    def write(self, fields: dict[str, Any]) -> None:
        """Queue one line: ``fields`` after the time, level, logger and message."""
        self._entries.append(
            _encoder.encode(
                {
                    "time": datetime.now(UTC),
                    "level": "info",
                    "logger": "prism.gateway.access",
                    "message": "request",
                    **fields,
                }
            )
        )
        if len(self._entries) >= self.max_buffer_lines:
            self.flush()
        elif self._timer is None:
            self._schedule()

    def _schedule(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        self._timer = loop.call_later(self.flush_interval, self.flush)

    def flush(self) -> None:
        """Write the queued lines now."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._entries:
            return
        entries, self._entries = self._entries, []
        lines: list[bytes] = []
        fromtimestamp = datetime.fromtimestamp
        for entry in entries:
            if isinstance(entry, bytes):
                lines.append(entry)
                continue
            at, request_id, method, route, status, elapsed, namespace, principal, trace_id = entry
            line = _AccessLine(
                fromtimestamp(at, UTC),
                "info",
                "prism.gateway.access",
                "request",
                request_id,
                method,
                route,
                status,
                round(elapsed * 1000, 3),
                namespace,
                principal,
                trace_id,
            )
            lines.append(_encoder.encode(line))
        lines.append(b"")
        data = b"\n".join(lines)
        stream = sys.stderr
        try:
            buffer = getattr(stream, "buffer", None)
            if buffer is not None:
                buffer.write(data)
            else:
                stream.write(data.decode("utf-8"))
            stream.flush()
        except (OSError, ValueError):
            # A closed or broken stderr must not take requests down with it.
            pass
