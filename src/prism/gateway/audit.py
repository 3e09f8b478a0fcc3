"""The audit trail: one JSON line per data access, written off the request path.

Requests append events to a bounded in-memory buffer and never wait for I/O; a
background task writes batches to the sink (a file, stdout, or a Prism namespace).
What happens when the sink fails or the buffer fills is a setting:

* ``on_failure: drop`` keeps serving; lost events are counted in
  ``prism_audit_events_total{outcome="dropped"}``.
* ``on_failure: reject`` fails closed: a request is admitted only when a buffer slot
  is reserved for its event and the sink is healthy, else it gets 503 before anything
  is read or written. A write is answered only once its event is confirmed written
  (:meth:`AuditLog.record_durable`); when that fails or takes longer than
  ``confirm_timeout`` it gets 503 instead. Events that failed to write stay buffered
  and are retried.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import logging
import os
import sys
import time
from abc import ABC, abstractmethod
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import msgspec
from prometheus_client import Counter, Gauge

from prism.errors import PrismError
from prism.gateway.config import AuditConfig
from prism.kv.namespace import Namespace
from prism.model import Put

__all__ = [
    "AuditEvent",
    "AuditLog",
    "AuditSink",
    "AuditUnavailable",
    "FileSink",
    "NamespaceSink",
    "NullSink",
    "StdoutSink",
]

log = logging.getLogger("prism.gateway.audit")

AUDIT_EVENTS = Counter("prism_audit_events_total", "Audit events by outcome (written, dropped).", ["outcome"])
AUDIT_BUFFERED = Gauge("prism_audit_buffered_events", "Audit events waiting to be written.")
AUDIT_SINK_UP = Gauge("prism_audit_sink_up", "1 while the last write to the audit sink succeeded.")

_encoder = msgspec.json.Encoder()


class AuditEvent(msgspec.Struct, kw_only=True, omit_defaults=True, gc=False):
    """One audit line. Optional fields are left out when unset."""

    time: datetime
    request_id: str | None
    #: Who called (left out for a request refused before its caller was known: a 401).
    principal: str | None = None
    principal_kind: str | None = None
    #: Who vouches for the principal when its kind has several (a JWT's ``iss``).
    issuer: str | None = None
    tenant: str | None = None
    #: The namespace named by the request (left out for routes outside any namespace).
    namespace: str | None = None
    operation: str
    key: str | None = None
    key_count: int | None = None
    pii: str | None = None
    values: dict[str, Any] | None = None
    outcome: str
    status: int
    latency_ms: float


class AuditUnavailable(Exception):
    """The audit trail cannot take another event and the gateway fails closed."""


class AuditSink(ABC):
    """Where batches of audit lines go. ``write`` raises on failure; the log decides what follows."""

    @abstractmethod
    async def write(self, data: bytes) -> None:
        """Persist a batch of events: JSON objects, one per line, each ending in a newline."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources."""


class NullSink(AuditSink):
    """Discards events (``sink: none``)."""

    async def write(self, data: bytes) -> None:
        return None


class _StreamSink(AuditSink):
    """Writes to a binary stream in a worker thread, so a slow disk or pipe never blocks the loop."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream

    def _write(self, data: bytes) -> None:
        self._stream.write(data)
        self._stream.flush()

    async def write(self, data: bytes) -> None:
        await asyncio.to_thread(self._write, data)


class StdoutSink(_StreamSink):
    """Writes audit lines to the process's stdout (for container log collectors)."""

    def __init__(self) -> None:
        super().__init__(sys.stdout.buffer)


class FileSink(AuditSink):
    """Appends to a file, created with mode 0600 (audit lines name principals), without buffering."""

    def __init__(self, path: Path) -> None:
        # The directory is never created: a mistyped path must fail, not start a new log elsewhere.
        if not path.parent.is_dir():
            raise FileNotFoundError(
                errno.ENOENT, f"the directory {path.parent} does not exist (create it first)", str(path)
            )
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self.path = path

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]

    async def write(self, data: bytes) -> None:
        await asyncio.to_thread(self._write, data)

    async def close(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)


class NamespaceSink(AuditSink):
    """Stores each event as an entry of a Prism namespace, keyed by time so scans list them in order."""

    def __init__(self, namespace: Namespace) -> None:
        self._ns = namespace
        self._seq = 0

    async def write(self, data: bytes) -> None:
        now = time.time_ns()
        puts = []
        for line in data.splitlines(keepends=True):
            self._seq = (self._seq + 1) % 1_000_000
            puts.append(
                Put(f"{now:020d}-{os.getpid()}-{self._seq:06d}", line, content_type="application/json")
            )
        try:
            results = await self._ns.put_many(puts)
        except PrismError as exc:
            raise OSError(f"audit namespace write failed: {exc.code}") from exc
        if not all(r.ok for r in results):
            raise OSError("audit namespace refused some events")


class AuditLog:
    """The bounded buffer between requests and the sink, and the task that drains it."""

    def __init__(self, sink: AuditSink, config: AuditConfig) -> None:
        self.sink = sink
        self.config = config
        self.fail_closed = config.on_failure == "reject"
        #: False for ``sink: none``: nothing is recorded and nothing is reserved.
        self.enabled = not isinstance(sink, NullSink)
        self._buffer: collections.deque[AuditEvent] = collections.deque()
        self._reserved = 0
        #: Events ever appended to the buffer, and the number of the last one confirmed written.
        self._appended = 0
        self._confirmed = 0
        #: Requests waiting for their event to be written: (event number, future).
        self._waiters: collections.deque[tuple[int, asyncio.Future[None]]] = collections.deque()
        self._healthy = True
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._written = AUDIT_EVENTS.labels("written")
        self._dropped = AUDIT_EVENTS.labels("dropped")
        AUDIT_SINK_UP.set(1)

    @property
    def healthy(self) -> bool:
        """False after a failed write, until a write succeeds again."""
        return self._healthy

    def admit(self) -> None:
        """Reserve room for one event; raise AuditUnavailable when failing closed and there is none."""
        if not self.fail_closed:
            return
        if not self._healthy or self._closing:
            raise AuditUnavailable("the audit sink is failing; requests are refused until it recovers")
        if len(self._buffer) + self._reserved >= self.config.buffer_size:
            raise AuditUnavailable("the audit buffer is full; retry later")
        self._reserved += 1

    def record(self, event: AuditEvent) -> None:
        """Queue one event (never blocks). Call at most once per admitted request."""
        if self._append(event) and self._wake is not None and len(self._buffer) >= self.config.batch_size:
            self._wake.set()

    async def record_durable(self, event: AuditEvent) -> None:
        """Queue one event and return once the sink confirmed writing it.

        Raises AuditUnavailable when the write fails, the log is closing, or no
        confirmation comes within ``confirm_timeout``. In ``reject`` mode the event
        stays buffered and is written once the sink recovers, since what it records
        did happen; the request that waited on it is answered 503 all the same.
        """
        if not self._append(event):
            raise AuditUnavailable("the audit buffer is full; retry later")
        if self._closing or self._task is None:
            raise AuditUnavailable("the audit trail is not running")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((self._appended, future))
        assert self._wake is not None
        self._wake.set()
        try:
            async with asyncio.timeout(self.config.confirm_timeout):
                await asyncio.shield(future)
        except TimeoutError:
            raise AuditUnavailable(
                f"the audit sink did not confirm the event within {self.config.confirm_timeout:g} s"
            ) from None

    def _append(self, event: AuditEvent) -> bool:
        if self.fail_closed and self._reserved > 0:
            self._reserved -= 1
        elif len(self._buffer) >= self.config.buffer_size:
            self._dropped.inc()
            return False
        self._buffer.append(event)
        self._appended += 1
        return True

    def _settle(self, error: str | None = None) -> None:
        """Resolve the waiters whose events are written; with ``error``, fail every waiter."""
        waiters = self._waiters
        while waiters and (error is not None or waiters[0][0] <= self._confirmed):
            _, future = waiters.popleft()
            if not future.done():
                if error is None:
                    future.set_result(None)
                else:
                    future.set_exception(AuditUnavailable(error))

    async def start(self) -> None:
        """Start the background task that writes buffered events."""
        self._wake = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name="prism-audit-writer")

    async def stop(self, drain_seconds: float) -> None:
        """Write what is buffered (for at most ``drain_seconds``), then close the sink."""
        self._closing = True
        if self._task is not None:
            assert self._wake is not None
            self._wake.set()
            try:
                async with asyncio.timeout(drain_seconds):
                    await self._task
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
        if self._buffer:
            self._dropped.inc(len(self._buffer))
            log.warning("audit events lost at shutdown", extra={"count": len(self._buffer)})
            self._buffer.clear()
        self._settle("the audit trail stopped before the event was written")
        AUDIT_BUFFERED.set(0)
        await self.sink.close()

    async def _run(self) -> None:
        assert self._wake is not None
        cfg = self.config
        retrying = False
        while True:
            if (
                len(self._buffer) < cfg.batch_size
                and not self._closing
                and not retrying
                and not self._waiters
            ):
                # Wait for a full batch (or the flush interval): writing whatever trickled in since
                # the last write would hand a handful of events at a time to the worker thread.
                if not self._wake.is_set():
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(cfg.flush_interval):
                            await self._wake.wait()
                self._wake.clear()
            if not self._buffer:
                if self._closing:
                    return
                retrying = False
                continue
            batch = [self._buffer[i] for i in range(min(cfg.batch_size, len(self._buffer)))]
            AUDIT_BUFFERED.set(len(self._buffer))
            try:
                await self.sink.write(_encoder.encode_lines(batch))
            except (OSError, PrismError) as exc:
                self._failed(len(batch), exc)
                if self._closing and self.fail_closed:
                    return
                await asyncio.sleep(cfg.retry_interval)
                retrying = True
                continue
            retrying = False
            for _ in batch:
                self._buffer.popleft()
            self._confirmed += len(batch)
            self._settle()
            self._written.inc(len(batch))
            if not self._healthy:
                log.warning("the audit sink recovered")
            self._healthy = True
            AUDIT_SINK_UP.set(1)
            AUDIT_BUFFERED.set(len(self._buffer))

    def _failed(self, count: int, exc: BaseException) -> None:
        if self._healthy:
            log.error("the audit sink failed", extra={"error": f"{type(exc).__name__}: {exc}"})
        self._healthy = False
        AUDIT_SINK_UP.set(0)
        self._settle(f"the audit sink failed to write the event ({type(exc).__name__})")
        if not self.fail_closed:
            for _ in range(count):
                self._buffer.popleft()
            # Dropped events count as settled: no waiter waits for them any more.
            self._confirmed += count
            self._dropped.inc(count)
