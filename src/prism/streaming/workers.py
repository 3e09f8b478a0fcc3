"""The worker loop: lease queued requests, decide what each delivery means, and run jobs.

A delivery is only a hint that a request may need work; the record decides:

* no record yet: the submitter is still writing it (or crashed before): retry shortly,
  drop it after ``orphan_grace``;
* final status: make sure its last event is logged, acknowledge;
* PROCESSING under a live claim (another worker, or an inline run on some node):
  come back when that claim would expire;
* PENDING, RETRYING whose backoff has passed, or PROCESSING under an expired claim (its
  worker died): take it with a conditional write and run it; after ``max_attempts``
  it is dead-lettered (FAILED with the last error).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Literal

import msgspec

from prism.errors import PreconditionFailed, PrismError
from prism.patterns.base import Lease
from prism.streaming.jobs import Job, Runtime, decode_message
from prism.streaming.protocol import ErrorBody, ErrorMessage, encode, timestamp
from prism.streaming.requests import RequestRecord, RequestStatus, Versioned
from prism.streaming.shutdown import StopReport, drain_budget

__all__ = ["WorkerPool"]

log = logging.getLogger("prism.streaming")

#: How soon a delivery whose record is not written yet is looked at again.
ORPHAN_RETRY_SECONDS = 0.5
#: Pause after a queue error before polling again (doubles up to the poll interval x 10).
ERROR_PAUSE_SECONDS = 0.5


class WorkerPool:
    """Runs up to ``config.workers`` jobs at a time from the queue, until stopped."""

    def __init__(self, rt: Runtime, *, name: str = "worker") -> None:
        self.rt = rt
        self.name = name
        self._loop_task: asyncio.Task[None] | None = None
        self._active: set[asyncio.Task[None]] = set()
        #: The job each delivery task is running, once it claimed its request.
        self._jobs: dict[asyncio.Task[None], Job] = {}
        #: Delivery tasks whose request was claimed (their job hands the lease back itself).
        self._claimed: set[asyncio.Task[None]] = set()
        self._counter = 0
        self.completed = 0

    @property
    def owner(self) -> str:
        return f"{self.name}:{self.rt.node}"

    @property
    def busy(self) -> int:
        return len(self._active)

    def start(self) -> None:
        if self._loop_task is None:
            self._loop_task = asyncio.get_running_loop().create_task(self._run(), name=f"prism-{self.name}")

    @property
    def running_jobs(self) -> list[str]:
        """The request ids this pool is running an attempt of."""
        return [job.request_id for job in self._jobs.values()]

    async def stop(self, within: float | None = None) -> StopReport:
        """Stop leasing, let running jobs finish, interrupt the rest, and say what became of each.

        Running handlers get up to ``cancel_grace`` seconds to finish; the rest are
        interrupted and hand their requests back: the record's lease is cleared and the
        queue message released, so another worker restarts them at once. All of it
        takes at most ``within`` seconds (default: ``shutdown_timeout``) minus a
        reserve for closing connections, also when the store does not answer: a job
        whose hand-back is still pending then is abandoned, and another worker takes it
        over once its lease expires (``lease_seconds``). Each stopped job is logged
        with its request id. Stopping twice returns an empty report the second time.
        """
        config = self.rt.config
        loop = asyncio.get_running_loop()
        budget = drain_budget(config.shutdown_timeout if within is None else within)
        deadline = loop.time() + budget
        report = StopReport()
        if self._loop_task is not None:
            self._loop_task.cancel()
            await asyncio.wait([self._loop_task], timeout=max(0.0, deadline - loop.time()))
            self._loop_task = None
        active = set(self._active)
        if not active:
            return report
        jobs = dict(self._jobs)
        grace = min(config.cancel_grace, max(0.0, deadline - loop.time()) / 2)
        if grace > 0:
            await asyncio.wait(active, timeout=grace)
        for task in active:
            if not task.done():
                task.cancel()
        pending = {task for task in active if not task.done()}
        if pending:
            _, pending = await asyncio.wait(pending, timeout=max(0.0, deadline - loop.time()))
        for task, job in jobs.items():
            outcome = self._report_stopped(job, handed_back=task not in pending)
            setattr(report, outcome, getattr(report, outcome) + 1)
        for task in pending:
            # Still waiting on the store: given up on, so the process can exit.
            task.cancel()
        return report

    def _report_stopped(
        self, job: Job, *, handed_back: bool = True
    ) -> Literal["finished", "released", "abandoned"]:
        """Log what became of ``job`` as its record says: finished, released, or abandoned."""
        record = job.current.record
        rid, action = record.request_id, job.spec.action
        if handed_back and (record.terminal or record.owner != job.owner):
            log.info("%s: request %s (%s) ended %s while stopping", self.owner, rid, action, record.status)
            return "finished"
        if handed_back and record.lease_until == 0.0:
            log.warning(
                "%s: stopped before request %s (%s, attempt %d) finished; released it for another worker, "
                "which runs it again from the start",
                self.owner,
                rid,
                action,
                record.attempts,
            )
            return "released"
        log.warning(
            "%s: stopped before request %s (%s, attempt %d) finished and could not release it; another "
            "worker takes it over when its lease expires (lease_seconds=%g)",
            self.owner,
            rid,
            action,
            record.attempts,
            self.rt.config.lease_seconds,
        )
        return "abandoned"

    async def _run(self) -> None:
        config = self.rt.config
        pause = ERROR_PAUSE_SECONDS
        idle = asyncio.Event()
        while True:
            free = config.workers - len(self._active)
            if free <= 0:
                idle.clear()
                await idle.wait()
                continue
            try:
                leases = await self.rt.queue.lease(free, config.lease_seconds, config.poll_interval)
            except PrismError as exc:
                log.warning("%s: leasing from the queue failed: %s", self.owner, exc)
                await asyncio.sleep(pause)
                pause = min(pause * 2, config.poll_interval * 10)
                continue
            pause = ERROR_PAUSE_SECONDS
            for lease in leases:
                task = asyncio.get_running_loop().create_task(self._deliver(lease))
                self._active.add(task)

                def done(t: asyncio.Task[None]) -> None:
                    self._active.discard(t)
                    idle.set()

                task.add_done_callback(done)

    async def _deliver(self, lease: Lease) -> None:
        task = asyncio.current_task()
        try:
            await self.handle(lease)
        except asyncio.CancelledError:
            if task not in self._claimed:
                # Stopping before the request was looked at: the message goes back at once.
                await asyncio.shield(self._release_now(lease))
            raise
        except Exception:
            log.exception("%s: delivery %s failed; it will be retried", self.owner, lease.message_id)
            try:
                await self.rt.queue.release(lease, self.rt.config.retry_backoff)
            except PrismError:
                pass
        finally:
            if task is not None:
                self._claimed.discard(task)

    async def _release_now(self, lease: Lease) -> None:
        try:
            await self.rt.queue.release(lease, 0.0)
        except PrismError as exc:
            log.info("%s: could not give back queue message %s: %s", self.owner, lease.message_id, exc)

    async def handle(self, lease: Lease) -> None:
        """Decide what one delivery means and act on it (see the module docstring)."""
        rt, config = self.rt, self.rt.config
        try:
            message = decode_message(lease.data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            log.error("%s: dropped an undecodable queue message %s", self.owner, lease.message_id)
            await rt.queue.ack(lease)
            return
        now = time.time()
        current = await rt.requests.get(message.request_id)
        if current is None:
            if now - message.enqueued_at > config.orphan_grace:
                await rt.queue.ack(lease)
            else:
                await rt.queue.release(lease, ORPHAN_RETRY_SECONDS)
            return
        record = current.record
        if record.terminal:
            await rt.queue.ack(lease)
            return
        if record.request_id in rt.running or (
            record.status == RequestStatus.PROCESSING and record.lease_until > now
        ):
            await rt.queue.release(lease, max(0.1, record.lease_until - now) + 0.1)
            return
        if record.status != RequestStatus.PROCESSING and record.next_attempt_at > now:
            await rt.queue.release(lease, record.next_attempt_at - now)
            return
        spec = rt.router.get(record.action)
        error: ErrorBody | None = None
        if spec is None:
            error = ErrorBody(
                code="INVALID_ACTION", message=f"no handler for {record.action!r}", retryable=False
            )
        elif record.attempts >= record.max_attempts:
            reason = record.error.message if record.error else "its worker stopped responding"
            error = ErrorBody(
                code=record.error.code if record.error else "PROCESSING_FAILED",
                message=f"gave up after {record.attempts} attempts: {reason}",
                retryable=False,
            )
        if error is not None or spec is None:
            if error is not None and await self._dead_letter(current, error):
                await rt.queue.ack(lease)
            else:
                await rt.queue.release(lease, ORPHAN_RETRY_SECONDS)
            return
        claimed = await self._claim(current)
        if claimed is None:
            await rt.queue.release(lease, ORPHAN_RETRY_SECONDS)
            return
        job = Job(rt, claimed, spec, lease=lease)
        task = asyncio.current_task()
        if task is not None:
            self._jobs[task] = job
            self._claimed.add(task)
        try:
            await job.execute()
        finally:
            if task is not None:
                self._jobs.pop(task, None)
        self.completed += 1

    async def _claim(self, current: Versioned) -> Versioned | None:
        rt = self.rt
        self._counter += 1
        new = msgspec.structs.replace(
            current.record,
            status=RequestStatus.PROCESSING,
            attempts=current.record.attempts + 1,
            owner=f"{self.owner}:{self._counter}",
            lease_until=time.time() + rt.config.lease_seconds,
            started_at=current.record.started_at or time.time(),
            queued=True,
        )
        try:
            return await rt.requests.replace(current, new)
        except PreconditionFailed:
            return None

    async def _dead_letter(self, current: Versioned, error: ErrorBody) -> bool:
        rt = self.rt
        rid = current.record.request_id

        def make(seq: int) -> bytes:
            return encode(ErrorMessage(error=error, request_id=rid, seq=seq, timestamp=timestamp()))

        def fail(record: RequestRecord) -> RequestRecord:
            record.status = RequestStatus.FAILED
            record.error = error
            record.finished_at = time.time()
            record.lease_until = 0.0
            return record

        try:
            await rt.emitter.emit(current, make, fail)
        except PreconditionFailed:
            log.info("%s: %s changed while being dead-lettered; the next delivery decides", self.owner, rid)
            return False
        return True
