"""The write side of streaming: submit a request, run a quick one inline, cancel one.

Each command checks the caller's identity and permissions (:class:`Access`), writes
the request record conditionally, and queues or announces what the workers must know.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import msgspec

from prism.errors import PreconditionFailed, PrismError
from prism.streaming import eager
from prism.streaming.access import Access
from prism.streaming.auth import Principal, tenant_of
from prism.streaming.errors import StreamError
from prism.streaming.events import cancel_topic
from prism.streaming.handlers import HandlerSpec, ProgressReporter
from prism.streaming.jobs import Job, QueueMessage, Runtime, classify, encode_message
from prism.streaming.metrics import count_status
from prism.streaming.protocol import (
    ErrorBody,
    ErrorMessage,
    Response,
    encode,
    encode_result,
    error_body,
    timestamp,
)
from prism.streaming.queries import Queries
from prism.streaming.requests import (
    UNSTORED,
    RequestRecord,
    RequestStatus,
    Versioned,
    fingerprint,
    new_request_id,
)

__all__ = ["CANCEL_ATTEMPTS", "Commands", "Draft", "Submission"]

log = logging.getLogger("prism.streaming")

#: Attempts of a cancel against concurrent writers before it reports INTERNAL_ERROR.
CANCEL_ATTEMPTS = 5


@dataclass(frozen=True, slots=True)
class Submission:
    """The outcome of submitting a request: its record, and whether this call created it."""

    current: Versioned
    created: bool

    @property
    def record(self) -> RequestRecord:
        return self.current.record


@dataclass(frozen=True, slots=True)
class Draft:
    """A request as its caller asked for it, before it is stored: who, what, and its id."""

    principal: Principal
    spec: HandlerSpec
    request_id: str
    payload: bytes
    client_id: str | None
    metadata: dict[str, Any] | None

    def record(self, max_attempts: int, **fields: Any) -> RequestRecord:
        """The record of this request, with ``fields`` set (``max_attempts`` unless the handler sets it)."""
        principal, spec, payload = self.principal, self.spec, self.payload
        return RequestRecord(
            request_id=self.request_id,
            action=spec.action,
            payload=msgspec.Raw(payload),
            user=principal.owner,
            tenant=tenant_of(principal),
            client_id=self.client_id,
            fingerprint=fingerprint(spec.action, payload) if self.client_id is not None else "",
            max_attempts=spec.max_attempts(max_attempts),
            metadata=self.metadata,
            **fields,
        )

    def running(
        self, max_attempts: int, owner: str, lease_until: float, *, queued: bool = False
    ) -> RequestRecord:
        """The record of this request being run right here by ``owner``, claimed until ``lease_until``."""
        return self.record(
            max_attempts,
            status=RequestStatus.PROCESSING,
            attempts=1,
            owner=owner,
            lease_until=lease_until,
            started_at=time.time(),
            queued=queued,
        )


class Commands:
    """Submit, run inline and cancel requests on behalf of a principal."""

    def __init__(
        self,
        rt: Runtime,
        access: Access,
        queries: Queries,
        spawn: Callable[[Coroutine[Any, Any, None]], object],
    ) -> None:
        self.rt = rt
        self.config = rt.config
        self.access = access
        self.queries = queries
        self.requests = rt.requests
        self.queue = rt.queue
        self.pubsub = rt.pubsub
        self.emitter = rt.emitter
        self.node = rt.node
        #: Runs a promoted inline job in the background of the service (stopped with it).
        self._spawn = spawn
        self._inline_counter = 0

    async def existing(
        self, principal: Principal, spec: HandlerSpec, payload: bytes, client_id: str | None
    ) -> Versioned | None:
        """The request a repeat of ``client_id`` refers to; DUPLICATE_REQUEST if it was for something else."""
        if client_id is None:
            return None
        current = await self.requests.get(new_request_id(tenant_of(principal), principal.owner, client_id))
        if current is None:
            return None
        if current.record.user != principal.owner or current.record.tenant != tenant_of(principal):
            # Ids are derived from (tenant, user, id), so this is never another user's to return.
            log.error("request %s is stored under another identity", current.record.request_id)
            raise StreamError("INTERNAL_ERROR", f"id {client_id!r} cannot be used; choose another")
        if current.record.owner == UNSTORED:
            # A submission of this id that was never stored: a repeat submits it afresh.
            await self.requests.forget_unstored(current)
            return None
        if current.record.fingerprint != fingerprint(spec.action, payload):
            raise StreamError(
                "DUPLICATE_REQUEST",
                f"id {client_id!r} was already used for a different request",
                details={"id": client_id, "request_id": current.record.request_id},
            )
        return current

    async def submit(
        self,
        principal: Principal,
        action: str,
        payload: bytes,
        *,
        client_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        before_enqueue: Callable[[str], None] | None = None,
    ) -> Submission:
        """Store and queue a request for the workers (a repeat of ``client_id`` returns the first).

        The payload is validated first (nothing is stored when it is refused).
        ``before_enqueue(request_id)`` runs before the request can start anywhere.
        """
        spec = self.access.handler_for(principal, action)
        spec.decode_payload(payload)
        found = await self.existing(principal, spec, payload, client_id)
        if found is not None:
            return Submission(found, False)
        request_id = new_request_id(tenant_of(principal), principal.owner, client_id)
        if before_enqueue is not None:
            before_enqueue(request_id)
        # Queue first: a crash before the record is written leaves only a message the workers drop.
        await self.queue.enqueue(encode_message(QueueMessage(request_id, time.time())))
        draft = Draft(principal, spec, request_id, payload, client_id, metadata)
        record = draft.record(self.config.max_attempts, queued=True)
        try:
            return Submission(await self.requests.create(record), True)
        except PreconditionFailed:
            found = await self.existing(principal, spec, payload, client_id)
            if found is None:
                raise StreamError("INTERNAL_ERROR", "the request vanished while being submitted") from None
            return Submission(found, False)
        except PrismError as exc:
            if not exc.retryable:
                raise
            # A timeout or a lost connection: the write may still land, and the queued message
            # would then run it. Settle which it is before answering.
            return await self._settle(record, exc)

    async def _settle(self, record: RequestRecord, cause: PrismError) -> Submission:
        """Decide the outcome of a record write that had none: stored (accepted), or never to run.

        A terminal record written if absent settles it: when it lands, the first write can
        no longer (and a worker drops the queued message); when the first write was there
        already, it is the request, accepted. Only when no write gets an answer within
        ``submit_settle_attempts`` does the client hear that the outcome is unknown.
        """
        rid = record.request_id
        unstored = msgspec.structs.replace(
            record,
            status=RequestStatus.FAILED,
            queued=False,
            owner=UNSTORED,
            error=ErrorBody(
                code="INTERNAL_ERROR", message="the request could not be stored; it never ran", retryable=True
            ),
            finished_at=time.time(),
        )
        for attempt in range(self.config.submit_settle_attempts):
            if attempt:
                await asyncio.sleep(self.config.retry_backoff)
            try:
                await self.requests.create(unstored)
            except PreconditionFailed:
                try:
                    found = await self.requests.get(rid)
                except PrismError:
                    continue
                if found is None:
                    continue
                if found.record.owner != UNSTORED:
                    # The first write landed (or a repeat of the same id beat it): that is the request.
                    return Submission(found, found.record.created_at == record.created_at)
                # An earlier settling write landed although it got no answer either: settled.
            except PrismError:
                continue
            log.warning("submission %s was not stored (%s); it will not run", rid, cause)
            raise StreamError(
                "INTERNAL_ERROR", "the request could not be stored and will not run; try again", retry_after=1
            ) from cause
        log.error("submission %s: could not tell whether it was stored (%s)", rid, cause)
        raise StreamError(
            "INTERNAL_ERROR",
            "the request may have been stored and may run: ask its status before sending it again",
            retryable=False,
            details={"request_id": rid, "status": "unknown"},
        ) from cause

    async def run_inline(
        self,
        principal: Principal,
        spec: HandlerSpec,
        payload: bytes,
        *,
        client_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        replace: Versioned | None = None,
        on_promoted: Callable[[RequestRecord], None],
    ) -> bytes | None:
        """Run a quick handler here and return its ``response``; if it overruns the inline deadline,
        store it, call ``on_promoted(record)`` and let it finish as an async request (returns None).

        With a ``client_id`` the request is stored from the start, so a repeat never runs it twice;
        ``replace`` is a stale inline attempt of the same id to take over.
        """
        decoded = spec.decode_payload(payload)
        now = time.time()
        self._inline_counter += 1
        owner = f"inline:{self.node}:{self._inline_counter}"
        claim = now + self.config.inline_deadline + self.config.lease_seconds
        stored: Versioned | None = None
        if replace is not None:
            stored = await self.requests.replace(
                replace,
                msgspec.structs.replace(
                    replace.record, attempts=replace.record.attempts + 1, owner=owner, lease_until=claim
                ),
            )
            request_id = replace.record.request_id
        else:
            request_id = new_request_id(tenant_of(principal), principal.owner, client_id)
        draft = Draft(principal, spec, request_id, payload, client_id, metadata)
        if replace is None and client_id is not None:
            stored = await self.requests.create(draft.running(self.config.max_attempts, owner, claim))
        reporter = (
            ProgressReporter(request_id, rate=self.config.progress_rate) if spec.takes_progress else None
        )
        loop = asyncio.get_running_loop()
        started = loop.time()

        async def call() -> Any:
            if spec.takes_progress:
                return await spec.func(decoded, reporter)
            return await spec.func(decoded)

        task = eager.start(call())
        if not task.done():
            await asyncio.wait({task}, timeout=self.config.inline_deadline)
        if task.done():
            return await self._inline_answer(task, spec.action, request_id, client_id, stored)
        await self._promote(draft, stored, owner, task, reporter, started, on_promoted)
        return None

    async def _inline_answer(
        self,
        task: asyncio.Future[Any],
        action: str,
        request_id: str,
        client_id: str | None,
        stored: Versioned | None,
    ) -> bytes:
        error: ErrorBody | None = None
        body: bytes | None = None
        exc = task.exception()
        if exc is None:
            try:
                body = encode_result(task.result())
            except StreamError as bad:
                error = error_body(bad)
        else:
            error, _, _ = classify(exc)
            if not isinstance(exc, StreamError):
                log.warning("inline handler failed on %s", request_id, exc_info=exc)
        if stored is not None:
            new = msgspec.structs.replace(
                stored.record,
                status=RequestStatus.COMPLETED if error is None else RequestStatus.FAILED,
                result=None if body is None else msgspec.json.decode(body),
                error=error,
                finished_at=time.time(),
                lease_until=0.0,
            )
            if error is None:
                new.progress.percentage = 100.0
            try:
                await self.requests.replace(stored, new)
            except PreconditionFailed:
                log.info("inline request %s changed while running; its answer is not stored", request_id)
            except PrismError as bad:
                if bad.retryable or error is not None:
                    raise
                # A result the store refuses (too large, say) fails the request instead of the message.
                error = ErrorBody(
                    code="PROCESSING_FAILED",
                    message=f"the handler's result cannot be stored: {bad}",
                    retryable=False,
                )
                new = msgspec.structs.replace(new, status=RequestStatus.FAILED, result=None, error=error)
                try:
                    await self.requests.replace(stored, new)
                except PreconditionFailed:
                    log.info("inline request %s changed while running; its answer is not stored", request_id)
        else:
            count_status(action, RequestStatus.COMPLETED if error is None else RequestStatus.FAILED)
        if error is not None:
            return encode(Response(request_id=request_id, success=False, error=error, id=client_id))
        assert body is not None
        return encode(Response(request_id=request_id, success=True, data=msgspec.Raw(body), id=client_id))

    async def _promote(
        self,
        draft: Draft,
        stored: Versioned | None,
        owner: str,
        task: asyncio.Future[Any],
        reporter: ProgressReporter | None,
        started: float,
        on_promoted: Callable[[RequestRecord], None],
    ) -> None:
        now = time.time()
        try:
            # A watchdog message: if this node dies, a worker finds the claim expired and reruns it.
            await self.queue.enqueue(encode_message(QueueMessage(draft.request_id, now)))
            claim = now + self.config.lease_seconds
            if stored is None:
                record = draft.running(self.config.max_attempts, owner, claim, queued=True)
                current = await self.requests.create(record)
            else:
                current = await self.requests.replace(
                    stored, msgspec.structs.replace(stored.record, queued=True, lease_until=claim)
                )
        except BaseException:
            task.cancel()
            raise
        on_promoted(current.record)
        job = Job(self.rt, current, draft.spec, task=task, reporter=reporter, started=started)
        self._spawn(job.execute())

    async def cancel(self, principal: Principal, request_id: str) -> RequestRecord:
        """Cancel a request of the caller (or, for an admin, of its tenant); a finished one stays as it is."""
        current = await self.queries.lookup(principal, request_id)
        for _ in range(CANCEL_ATTEMPTS):
            record = current.record
            if record.terminal:
                return record
            error = ErrorBody(code="CANCELLED", message=f"cancelled by {principal.subject}", retryable=False)

            def make(seq: int, error: ErrorBody = error) -> bytes:
                return encode(
                    ErrorMessage(error=error, request_id=request_id, seq=seq, timestamp=timestamp())
                )

            def update(record: RequestRecord, error: ErrorBody = error) -> RequestRecord:
                record.status = RequestStatus.CANCELLED
                record.error = error
                record.cancelled_by = principal.owner
                record.finished_at = time.time()
                record.lease_until = 0.0
                return record

            try:
                current = await self.emitter.emit(current, make, update)
            except PreconditionFailed:
                fresh = await self.requests.get(request_id)
                if fresh is None:
                    raise StreamError("NOT_FOUND", f"no request {request_id!r}") from None
                current = fresh
                continue
            try:
                await self.pubsub.publish(cancel_topic(self.config), request_id.encode())
            except PrismError as exc:
                log.warning("could not announce the cancel of %s: %s", request_id, exc)
            job = self.rt.running.get(request_id)
            if job is not None:
                job.reporter.cancel()
            return current.record
        raise StreamError("INTERNAL_ERROR", f"request {request_id} kept changing; try the cancel again")

    async def retry_dead_letter(self, principal: Principal, request_id: str) -> Submission:
        """Run a dead letter again as a new request of the same user, and take it off the dead letters.

        Admins only (like listing them). The new request gets a fresh set of attempts, the
        same action, payload and metadata; its id is derived from the dead letter's, so a
        second retry (also a racing one) answers the same new request instead of running
        it twice.
        """
        if not self.access.is_admin(principal):
            raise StreamError("FORBIDDEN", f"retrying dead letters needs the {self.config.admin_role!r} role")
        old = (await self.queries.lookup(principal, request_id)).record
        retry_id = new_request_id(old.tenant, old.user, f"retry-of:{request_id}")
        found = await self.requests.get(retry_id)
        if found is not None:
            await self.requests.discard_dead_letter(old)
            return Submission(found, False)
        if not await self.requests.is_dead_letter(old):
            raise StreamError(
                "NOT_FOUND",
                f"request {request_id!r} is not a dead letter",
                details={"request_id": request_id},
            )
        spec = self.access.handler_for(principal, old.action)
        await self.queue.enqueue(encode_message(QueueMessage(retry_id, time.time())))
        record = RequestRecord(
            request_id=retry_id,
            action=old.action,
            payload=old.payload,
            user=old.user,
            tenant=old.tenant,
            max_attempts=spec.max_attempts(self.config.max_attempts),
            metadata=old.metadata,
            queued=True,
        )
        try:
            submission = Submission(await self.requests.create(record), True)
        except PreconditionFailed:
            raced = await self.requests.get(retry_id)
            if raced is None:
                raise StreamError("INTERNAL_ERROR", "the retried request vanished; try again") from None
            submission = Submission(raced, False)
        await self.requests.discard_dead_letter(old)
        return submission

    async def discard_dead_letter(self, principal: Principal, request_id: str) -> None:
        """Take a dead letter off the list without running it again (admins only)."""
        if not self.access.is_admin(principal):
            raise StreamError(
                "FORBIDDEN", f"discarding dead letters needs the {self.config.admin_role!r} role"
            )
        old = (await self.queries.lookup(principal, request_id)).record
        if not await self.requests.is_dead_letter(old):
            raise StreamError(
                "NOT_FOUND",
                f"request {request_id!r} is not a dead letter",
                details={"request_id": request_id},
            )
        await self.requests.discard_dead_letter(old)
