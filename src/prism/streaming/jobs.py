"""One attempt of one request on this node: run the handler, stream its progress, write its outcome.

A Job owns the request while its record says so (``owner`` and ``attempts`` match and
``lease_until`` is renewed by heartbeats). Every write it makes is conditional on the
etag it last wrote; when one fails, the Job reloads the record and learns why: the
request was cancelled (the handler is told, cooperatively, then interrupted after the
grace period) or another worker took it over (this attempt's work is dropped). Only
the writer that wins the final conditional write reports the result, so a request
completes once.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from prism.errors import PreconditionFailed, PrismError, Timeout
from prism.patterns.base import Lease, PubSub, Queue
from prism.streaming.config import StreamingConfig
from prism.streaming.errors import Cancelled, OwnershipLost, RetryableError, StreamError
from prism.streaming.eventlog import EventLog
from prism.streaming.events import Emitter
from prism.streaming.handlers import HandlerSpec, ProgressReporter, Router
from prism.streaming.metrics import JOBS_RUNNING
from prism.streaming.protocol import (
    Complete,
    ErrorBody,
    ErrorMessage,
    Progress,
    ProgressState,
    encode,
    encode_result,
    error_body,
    timestamp,
)
from prism.streaming.requests import RequestRecord, RequestStatus, RequestStore, Versioned

__all__ = ["HandlerTimeout", "Job", "QueueMessage", "Runtime", "backoff", "classify"]

#: Jitter from a generator of our own, leaving the global ``random`` state to the application.
_random = random.Random()

log = logging.getLogger("prism.streaming")


class QueueMessage(msgspec.Struct, array_like=True):
    """What the work queue carries: which request, and since when."""

    request_id: str
    enqueued_at: float


encode_message = msgspec.msgpack.Encoder().encode
decode_message = msgspec.msgpack.Decoder(QueueMessage).decode


@dataclass
class Runtime:
    """Everything a job and a worker need, shared by the service."""

    config: StreamingConfig
    router: Router
    requests: RequestStore
    log: EventLog
    emitter: Emitter
    queue: Queue
    pubsub: PubSub
    node: str
    running: dict[str, Job] = field(default_factory=dict)


class HandlerTimeout(Timeout):
    """An attempt ran past its handler's timeout (a ``prism.Timeout``; the request fails with TIMEOUT)."""


def backoff(config: StreamingConfig, attempt: int, retry_after: float | None = None) -> float:
    """Delay before attempt ``attempt + 1``: exponential from ``retry_backoff``, capped, with jitter."""
    base = min(config.retry_backoff_max, config.retry_backoff * 2.0 ** max(0, attempt - 1))
    delay = base * (1 + _random.uniform(-config.retry_jitter, config.retry_jitter))
    return max(0.0, delay, retry_after or 0.0)


def classify(exc: BaseException) -> tuple[ErrorBody, bool, float | None]:
    """The error a failed attempt reports, whether it is worth retrying, and a requested delay."""
    if isinstance(exc, StreamError):
        return error_body(exc), exc.retryable, exc.retry_after
    if isinstance(exc, RetryableError):
        body = ErrorBody(code="PROCESSING_FAILED", message=str(exc) or "retryable failure", retryable=True)
        return body, True, exc.retry_after
    if isinstance(exc, HandlerTimeout):
        return ErrorBody(code="TIMEOUT", message=str(exc), retryable=True), True, None
    if isinstance(exc, PrismError):
        code = "INTERNAL_ERROR" if exc.retryable else "PROCESSING_FAILED"
        return ErrorBody(code=code, message=str(exc), retryable=exc.retryable), exc.retryable, None
    text = f"{type(exc).__name__}: {exc}"[:500]
    return ErrorBody(code="PROCESSING_FAILED", message=text, retryable=False), False, None


class Job:
    """One attempt of one request, run by a worker (with a queue lease) or promoted from inline."""

    def __init__(
        self,
        rt: Runtime,
        current: Versioned,
        spec: HandlerSpec,
        *,
        lease: Lease | None = None,
        task: asyncio.Future[Any] | None = None,
        reporter: ProgressReporter | None = None,
        started: float | None = None,
    ) -> None:
        record = current.record
        self.rt = rt
        self.current = current
        self.spec = spec
        self.lease = lease
        self.owner = record.owner
        self.attempt = record.attempts
        self.reporter = reporter or ProgressReporter(
            record.request_id,
            rate=rt.config.progress_rate,
            attempt=record.attempts,
            start_percentage=record.progress.percentage,
        )
        self.reporter.attach(self._on_progress)
        self._task = task
        self._lock = asyncio.Lock()
        self._last_write = time.monotonic()
        loop = asyncio.get_running_loop()
        limit = spec.timeout if spec.timeout is not None else rt.config.handler_timeout
        self._deadline = (loop.time() if started is None else started) + limit
        self._limit = limit

    @property
    def request_id(self) -> str:
        return self.current.record.request_id

    # -- record writes ---------------------------------------------------------------------

    async def _write(
        self,
        make_event: Callable[[int], bytes] | None,
        update: Callable[[RequestRecord], RequestRecord],
    ) -> None:
        async with self._lock:
            for _ in range(3):
                try:
                    if make_event is None:
                        new = update(msgspec.structs.replace(self.current.record))
                        self.current = await self.rt.requests.replace(self.current, new)
                    else:
                        self.current = await self.rt.emitter.emit(self.current, make_event, update)
                    self._last_write = time.monotonic()
                    return
                except PreconditionFailed:
                    await self._reload()
            raise OwnershipLost(f"request {self.request_id} keeps changing under this attempt")

    async def _reload(self) -> None:
        fresh = await self.rt.requests.get(self.request_id)
        if fresh is None:
            raise OwnershipLost(f"request {self.request_id} is gone")
        record = fresh.record
        if record.status == RequestStatus.CANCELLED:
            self.reporter.cancel()
            raise Cancelled(f"request {self.request_id} was cancelled")
        if record.terminal or record.owner != self.owner or record.attempts != self.attempt:
            raise OwnershipLost(f"request {self.request_id} is now {record.status} under {record.owner}")
        self.current = fresh

    async def _on_progress(
        self, percentage: float, message: str, metadata: dict[str, Any] | None, reported_at: float
    ) -> None:
        rid = self.request_id
        lease_seconds = self.rt.config.lease_seconds

        def make(seq: int) -> bytes:
            return encode(
                Progress(
                    request_id=rid,
                    seq=seq,
                    percentage=percentage,
                    message=message,
                    timestamp=timestamp(reported_at),
                    metadata=metadata,
                )
            )

        def update(record: RequestRecord) -> RequestRecord:
            record.progress = ProgressState(percentage=percentage, message=message)
            record.lease_until = time.time() + lease_seconds
            return record

        await self._write(make, update)

    # -- running -------------------------------------------------------------------------

    async def _invoke(self) -> Any:
        record = self.current.record
        payload = self.spec.decode_payload(bytes(record.payload))
        if self.spec.takes_progress:
            return await self.spec.func(payload, self.reporter)
        return await self.spec.func(payload)

    async def _heartbeats(self) -> None:
        config = self.rt.config
        while True:
            await asyncio.sleep(config.heartbeat_interval)
            if self.lease is not None:
                try:
                    if not await self.rt.queue.heartbeat(self.lease, config.lease_seconds):
                        log.info("queue lease of %s was lost; the record still guards it", self.request_id)
                except PrismError as exc:
                    log.warning("queue heartbeat of %s failed: %s", self.request_id, exc)
            if time.monotonic() - self._last_write < config.heartbeat_interval / 2:
                continue

            def renew(record: RequestRecord) -> RequestRecord:
                record.lease_until = time.time() + config.lease_seconds
                return record

            try:
                await self._write(None, renew)
            except Cancelled:
                return
            except OwnershipLost as exc:
                self.reporter.fail(exc)
                return
            except PrismError as exc:
                log.warning("record heartbeat of %s failed: %s", self.request_id, exc)

    async def _await_handler(self) -> Any:
        assert self._task is not None
        task = self._task
        loop = asyncio.get_running_loop()
        cancelled = loop.create_task(self.reporter.wait_cancelled())
        try:
            remaining = max(0.0, self._deadline - loop.time())
            done, _ = await asyncio.wait(
                {task, cancelled}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
            )
            if task in done and not self.reporter.cancelled:
                return task.result()
            if task not in done and cancelled in done:
                done, _ = await asyncio.wait({task}, timeout=self.rt.config.cancel_grace)
            if task not in done:
                task.cancel()
                await asyncio.wait({task})
            if not task.cancelled():
                task.exception()  # retrieved: this attempt's outcome is decided below
            if self.reporter.cancelled:
                self.reporter.check_cancelled()
            raise HandlerTimeout(f"the {self.spec.action} handler ran past its timeout of {self._limit:g} s")
        finally:
            cancelled.cancel()

    async def execute(self) -> None:
        """Run the attempt to its end and write the outcome (or stand down if no longer the owner)."""
        rid = self.request_id
        self.rt.running[rid] = self
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._invoke())
        heartbeats = asyncio.get_running_loop().create_task(self._heartbeats())
        JOBS_RUNNING.inc()
        try:
            try:
                result = await self._await_handler()
            except asyncio.CancelledError:
                await asyncio.shield(self._abandon())
                raise
            except (Cancelled, OwnershipLost) as exc:
                await self._stopped(exc)
                return
            except Exception as exc:
                await self._failed(exc)
                return
            await self._succeeded(result)
        finally:
            JOBS_RUNNING.dec()
            heartbeats.cancel()
            await self.reporter.close()
            if self.rt.running.get(rid) is self:
                del self.rt.running[rid]

    # -- outcomes ------------------------------------------------------------------------

    async def _succeeded(self, result: Any) -> None:
        try:
            body = encode_result(result)
        except StreamError as exc:
            await self._failed(exc)
            return
        rid = self.request_id
        stored = msgspec.json.decode(body)

        def make(seq: int) -> bytes:
            return encode(Complete(request_id=rid, seq=seq, result=msgspec.Raw(body), timestamp=timestamp()))

        def update(record: RequestRecord) -> RequestRecord:
            record.status = RequestStatus.COMPLETED
            record.result = stored
            record.progress = ProgressState(percentage=100.0, message=record.progress.message)
            record.finished_at = time.time()
            record.lease_until = 0.0
            return record

        try:
            await self._finish(make, update)
        except PrismError as exc:
            if exc.retryable:
                raise
            # The result cannot be stored (too large for the store, say): every attempt would
            # end the same way, so the request fails now instead of being retried as a lost worker.
            reason = f"the handler's result cannot be stored: {exc}"
            await self._failed(StreamError("PROCESSING_FAILED", reason))

    async def _failed(self, exc: BaseException) -> None:
        error, retryable, retry_after = classify(exc)
        if not isinstance(exc, StreamError | RetryableError | HandlerTimeout):
            log.warning("handler %s failed on request %s", self.spec.action, self.request_id, exc_info=exc)
        rid = self.request_id
        record = self.current.record
        if retryable and self.attempt < record.max_attempts:
            delay = backoff(self.rt.config, self.attempt, retry_after)
            attempt = self.attempt
            message = f"attempt {attempt} failed, retrying in {delay:.1f} s: {error.message}"

            def make_retry(seq: int) -> bytes:
                return encode(
                    Progress(
                        request_id=rid,
                        seq=seq,
                        percentage=self.reporter.percentage,
                        message=message,
                        timestamp=timestamp(),
                        metadata={
                            "status": "RETRYING",
                            "attempt": attempt,
                            "retry_in": round(delay, 3),
                            "error": error.code,
                        },
                    )
                )

            def retry(record: RequestRecord) -> RequestRecord:
                record.status = RequestStatus.RETRYING
                record.error = error
                record.next_attempt_at = time.time() + delay
                record.owner = None
                record.lease_until = 0.0
                return record

            try:
                await self._write(make_retry, retry)
            except (Cancelled, OwnershipLost) as stop:
                await self._stopped(stop)
                return
            if self.lease is not None:
                await self._settle(release_after=delay)
            return
        if retryable:
            error = ErrorBody(
                code=error.code,
                message=f"gave up after {self.attempt} attempts: {error.message}",
                retryable=False,
                details=error.details,
            )

        def make(seq: int) -> bytes:
            return encode(ErrorMessage(error=error, request_id=rid, seq=seq, timestamp=timestamp()))

        def fail(record: RequestRecord) -> RequestRecord:
            record.status = RequestStatus.FAILED
            record.error = error
            record.finished_at = time.time()
            record.lease_until = 0.0
            return record

        await self._finish(make, fail)

    async def _finish(
        self, make: Callable[[int], bytes], update: Callable[[RequestRecord], RequestRecord]
    ) -> None:
        try:
            await self.reporter.flush()
            await self._write(make, update)
        except (Cancelled, OwnershipLost) as stop:
            await self._stopped(stop)
            return
        await self._settle()

    async def _stopped(self, exc: BaseException) -> None:
        if isinstance(exc, Cancelled) and not self.reporter.cancelled:
            # The handler raised Cancelled on its own: that is a failure of this attempt.
            await self._failed(StreamError("PROCESSING_FAILED", f"the handler gave up: {exc}"))
            return
        if isinstance(exc, OwnershipLost):
            log.info("stood down from %s: %s", self.request_id, exc)
            await self._settle(release_after=self.rt.config.heartbeat_interval)
            return
        await self._settle()

    async def _settle(self, release_after: float | None = None) -> None:
        """Acknowledge the queue message (or give it back after ``release_after`` seconds)."""
        if self.lease is None:
            return
        try:
            if release_after is None:
                await self.rt.queue.ack(self.lease)
            else:
                await self.rt.queue.release(self.lease, release_after)
        except PrismError as exc:
            log.warning("could not settle the queue message of %s: %s", self.request_id, exc)

    async def _abandon(self) -> None:
        """This node is stopping: free the request for another worker at once."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
            await asyncio.wait({self._task})

        def free(record: RequestRecord) -> RequestRecord:
            record.lease_until = 0.0
            return record

        try:
            await self._write(None, free)
        except (PrismError, Cancelled, OwnershipLost):
            pass
        await self._settle(release_after=0.0)
