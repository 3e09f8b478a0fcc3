"""StreamingService: requests, events, connections, queue, pubsub and workers, wired together.

    service = StreamingService(store, config, store_url="redis://...", authenticator=auth)
    async with service:
        app.mount(...)   # see prism.streaming.routes

The service answers what the transports (WebSocket, HTTP, SSE) ask: submit a request,
run a quick one inline, read, list and cancel requests, and follow their events. It
checks identity and permissions for every call: a principal sees only its own
requests, or, with the admin role, those of its tenant.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import msgspec

from prism.errors import InvalidArgument, PreconditionFailed, PrismError
from prism.kv.store import Store
from prism.patterns import open_pubsub, open_queue
from prism.patterns.base import PubSub, Queue, Subscription
from prism.streaming import eager
from prism.streaming.auth import AccessAudit, Authenticator, Principal, tenant_of
from prism.streaming.builtin import builtin_router
from prism.streaming.config import StreamingConfig
from prism.streaming.connections import ConnectionRegistry
from prism.streaming.errors import StreamError
from prism.streaming.events import Emitter, cancel_topic, topic_for_user
from prism.streaming.handlers import HandlerSpec, ProgressReporter, Router, load_router
from prism.streaming.hub import Hub
from prism.streaming.jobs import Job, QueueMessage, Runtime, classify, encode_message
from prism.streaming.metrics import count_status
from prism.streaming.protocol import (
    ErrorBody,
    ErrorMessage,
    Response,
    StatusMessage,
    encode,
    encode_result,
    error_body,
    timestamp,
)
from prism.streaming.requests import (
    RequestRecord,
    RequestStatus,
    RequestStore,
    Versioned,
    fingerprint,
    is_request_id,
    new_request_id,
)
from prism.streaming.shutdown import ShutdownNotice
from prism.streaming.workers import WorkerPool

__all__ = ["StreamingService", "Submission"]

log = logging.getLogger("prism.streaming")

#: Attempts of a cancel against concurrent writers before it reports INTERNAL_ERROR.
CANCEL_ATTEMPTS = 5
#: Longest pause between two checks for idle connections.
IDLE_CHECK_MAX_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class Submission:
    """The outcome of submitting a request: its record, and whether this call created it."""

    current: Versioned
    created: bool

    @property
    def record(self) -> RequestRecord:
        return self.current.record


def _node_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{os.urandom(2).hex()}"


class StreamingService:
    """The streaming system of one process (see the module docstring)."""

    def __init__(
        self,
        store: Store | None,
        config: StreamingConfig | None = None,
        *,
        store_url: str,
        router: Router | None = None,
        authenticator: Authenticator | None = None,
        queue: Queue | None = None,
        pubsub: PubSub | None = None,
        owns_store: bool = False,
    ) -> None:
        self.config = config or StreamingConfig()
        self._store = store
        self.store_url = store_url
        self.authenticator = authenticator
        #: Where requests of the streaming routes are audited (set by the gateway); None: not audited.
        self.audit: AccessAudit | None = None
        self.node = _node_id()
        self.router = Router()
        self.router.include(builtin_router(self.config))
        for target in self.config.handlers:
            self.router.include(load_router(target))
        if router is not None:
            self.router.include(router)
        self._queue = queue
        self._pubsub = pubsub
        self._owns_store = owns_store
        self._started = False
        self._closed = False
        self._background: set[asyncio.Task[Any]] = set()
        self._cancel_sub: Subscription | None = None
        self._inline_counter = 0
        #: Open WebSocket sessions of this process (they expire through ``_expire_idle``).
        self.sessions: set[Any] = set()
        self.pool: WorkerPool | None = None
        #: Flipped by SIGTERM/SIGINT while the service runs: SSE streams end at once on it.
        self.shutdown = ShutdownNotice()

    # -- lifecycle ---------------------------------------------------------------------

    @property
    def store(self) -> Store:
        """The store of requests and events; it may be bound up to ``start()`` (the gateway does so)."""
        if self._store is None:
            raise PrismError("the streaming service has no store: pass one, or set .store before start()")
        return self._store

    @store.setter
    def store(self, store: Store) -> None:
        if self._started:
            raise PrismError("the store of a started streaming service cannot change")
        self._store = store

    async def start(self) -> Self:
        """Open the store, queue and pubsub, and start the workers (when configured)."""
        if self._closed:
            raise PrismError("the streaming service is stopped and cannot restart")
        if self._started:
            return self
        config = self.config
        await self.store.open()
        self.requests = RequestStore(self.store, config)
        self.log = self.requests.log
        self.connections = ConnectionRegistry(self.store, config)
        queue_url = config.queue_url or self.store_url
        pubsub_url = config.pubsub_url or self.store_url
        if self._queue is None:
            self._queue = open_queue(queue_url, config.queue_name, store=self.store)
        if self._pubsub is None:
            self._pubsub = open_pubsub(pubsub_url, store=self.store)
        await self._queue.open()
        await self._pubsub.open()
        self.queue: Queue = self._queue
        self.pubsub: PubSub = self._pubsub
        self.emitter = Emitter(config, self.requests, self.log, self.pubsub)
        self.rt = Runtime(
            config, self.router, self.requests, self.log, self.emitter, self.queue, self.pubsub, self.node
        )
        self.hub = Hub(self.pubsub)
        self._cancel_sub = await self.pubsub.subscribe(cancel_topic(config), self._on_cancel_notice)
        if config.run_workers:
            self.pool = WorkerPool(self.rt)
            self.pool.start()
        self._spawn(self._sweep_connections())
        self._spawn(self._expire_idle())
        self._spawn(self._check_quiet())
        self.shutdown.watch_signals()
        self._started = True
        log.info(
            "streaming service %s started (queue %s, pubsub %s)",
            self.node,
            self.queue.engine,
            self.pubsub.engine,
        )
        return self

    async def stop(self) -> None:
        """Stop workers and inline jobs (their requests are freed for other nodes), then disconnect."""
        if self._closed:
            return
        self._closed = True
        if not self._started:
            return
        self.shutdown.unwatch_signals()
        if self.pool is not None:
            await self.pool.stop()
        for task in list(self._background):
            task.cancel()
        if self._background:
            await asyncio.wait(list(self._background))
        await self.hub.close()
        if self._cancel_sub is not None:
            await self._cancel_sub.close()
        await self.queue.close()
        await self.pubsub.close()
        if self._owns_store:
            await self.store.close()

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def _expire_idle(self) -> None:
        """Close WebSockets idle for longer than ``idle_timeout`` (one timer for all of them)."""
        interval = max(0.05, min(self.config.idle_timeout / 4, IDLE_CHECK_MAX_SECONDS))
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            expired = sum(1 for session in list(self.sessions) if session.expire_if_idle(now))
            if expired:
                log.info("closed %d idle connections", expired)

    async def _check_quiet(self) -> None:
        """Catch up followed requests that went quiet, in case a publish was lost (pubsub is at most once)."""
        quiet = self.config.resync_interval
        while True:
            await asyncio.sleep(quiet / 2)
            now = time.monotonic()
            for follower in self.hub.followers_set():
                follower.check_quiet(now, quiet)

    async def _sweep_connections(self) -> None:
        interval = self.config.connection_stale_after / 3
        while True:
            await asyncio.sleep(interval * random.uniform(0.5, 1.5))
            try:
                removed = await self.connections.sweep()
                if removed:
                    log.info("swept %d stale connection keys", removed)
            except PrismError as exc:
                log.warning("connection sweep failed: %s", exc)

    def _on_cancel_notice(self, topic: str, data: bytes) -> None:
        job = self.rt.running.get(data.decode(errors="replace"))
        if job is not None:
            job.reporter.cancel()

    # -- identity and access -----------------------------------------------------------

    def is_admin(self, principal: Principal) -> bool:
        return self.config.admin_role in principal.roles

    def visible(self, principal: Principal, record: RequestRecord) -> bool:
        """Whether ``principal`` may read, follow and cancel ``record``."""
        if record.tenant != principal.tenant:
            return False
        return record.user == principal.owner or self.is_admin(principal)

    async def lookup(self, principal: Principal, request_id: str) -> Versioned:
        """The request, or NOT_FOUND (also for another user's request: its existence is not revealed)."""
        current = await self.requests.get(request_id) if is_request_id(request_id) else None
        if current is None or not self.visible(principal, current.record):
            raise StreamError("NOT_FOUND", f"no request {request_id!r}", details={"request_id": request_id})
        return current

    def handler_for(self, principal: Principal, action: str) -> HandlerSpec:
        """The handler of ``action``: INVALID_ACTION when there is none, FORBIDDEN without its permission."""
        spec = self.router.get(action)
        if spec is None:
            raise StreamError(
                "INVALID_ACTION",
                f"unknown action {action!r}",
                details={"actions": sorted(self.router.handlers)},
            )
        if spec.permission is not None and not (
            spec.permission in principal.roles or self.is_admin(principal)
        ):
            raise StreamError("FORBIDDEN", f"action {action!r} needs the {spec.permission!r} role")
        return spec

    def is_sync(self, spec: HandlerSpec) -> bool:
        return spec.estimated_duration < self.config.sync_threshold

    def topic_of(self, principal: Principal) -> str:
        return topic_for_user(self.config, tenant_of(principal), principal.owner)

    def owner_topic(self, record: RequestRecord) -> str:
        return topic_for_user(self.config, record.tenant, record.user)

    # -- submitting ----------------------------------------------------------------------

    def _new_record(
        self,
        principal: Principal,
        spec: HandlerSpec,
        request_id: str,
        payload: bytes,
        client_id: str | None,
        metadata: dict[str, Any] | None,
        **fields: Any,
    ) -> RequestRecord:
        return RequestRecord(
            request_id=request_id,
            action=spec.action,
            payload=msgspec.Raw(payload),
            user=principal.owner,
            tenant=tenant_of(principal),
            client_id=client_id,
            fingerprint=fingerprint(spec.action, payload) if client_id is not None else "",
            max_attempts=spec.max_attempts(self.config.max_attempts),
            metadata=metadata,
            **fields,
        )

    def _inline_record(
        self,
        principal: Principal,
        spec: HandlerSpec,
        request_id: str,
        payload: bytes,
        client_id: str | None,
        metadata: dict[str, Any] | None,
        owner: str,
        lease_until: float,
        *,
        queued: bool = False,
    ) -> RequestRecord:
        """A request being run right here by ``owner``, claimed until ``lease_until``."""
        return self._new_record(
            principal,
            spec,
            request_id,
            payload,
            client_id,
            metadata,
            status=RequestStatus.PROCESSING,
            attempts=1,
            owner=owner,
            lease_until=lease_until,
            started_at=time.time(),
            queued=queued,
        )

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
        spec = self.handler_for(principal, action)
        spec.decode_payload(payload)
        found = await self.existing(principal, spec, payload, client_id)
        if found is not None:
            return Submission(found, False)
        request_id = new_request_id(tenant_of(principal), principal.owner, client_id)
        if before_enqueue is not None:
            before_enqueue(request_id)
        # Queue first: a crash before the record is written leaves only a message the workers drop.
        await self.queue.enqueue(encode_message(QueueMessage(request_id, time.time())))
        record = self._new_record(principal, spec, request_id, payload, client_id, metadata, queued=True)
        try:
            return Submission(await self.requests.create(record), True)
        except PreconditionFailed:
            found = await self.existing(principal, spec, payload, client_id)
            if found is None:
                raise StreamError("INTERNAL_ERROR", "the request vanished while being submitted") from None
            return Submission(found, False)

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
            if client_id is not None:
                stored = await self.requests.create(
                    self._inline_record(
                        principal, spec, request_id, payload, client_id, metadata, owner, claim
                    )
                )
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
        await self._promote(
            principal,
            spec,
            payload,
            request_id,
            client_id,
            metadata,
            stored,
            owner,
            task,
            reporter,
            started,
            on_promoted,
        )
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
        principal: Principal,
        spec: HandlerSpec,
        payload: bytes,
        request_id: str,
        client_id: str | None,
        metadata: dict[str, Any] | None,
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
            await self.queue.enqueue(encode_message(QueueMessage(request_id, now)))
            claim = now + self.config.lease_seconds
            if stored is None:
                record = self._inline_record(
                    principal, spec, request_id, payload, client_id, metadata, owner, claim, queued=True
                )
                current = await self.requests.create(record)
            else:
                current = await self.requests.replace(
                    stored, msgspec.structs.replace(stored.record, queued=True, lease_until=claim)
                )
        except BaseException:
            task.cancel()
            raise
        on_promoted(current.record)
        job = Job(self.rt, current, spec, task=task, reporter=reporter, started=started)
        self._spawn(job.execute())

    # -- reading, listing, cancelling -----------------------------------------------------

    async def cancel(self, principal: Principal, request_id: str) -> RequestRecord:
        """Cancel a request of the caller (or, for an admin, of its tenant); a finished one stays as it is."""
        current = await self.lookup(principal, request_id)
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

    async def list_requests(
        self, principal: Principal, *, status: str | None, limit: int, page_token: str | None
    ) -> tuple[list[RequestRecord], str | None]:
        """The caller's own requests, newest first."""
        if status is not None and status not in RequestStatus.__members__:
            raise StreamError(
                "VALIDATION_ERROR",
                f"status must be one of {', '.join(RequestStatus.__members__)}",
                details={"field": "status"},
            )
        if not 1 <= limit <= self.config.max_list_limit:
            raise StreamError(
                "VALIDATION_ERROR",
                f"limit must be from 1 to {self.config.max_list_limit}",
                details={"field": "limit"},
            )
        try:
            return await self.requests.list_for(
                tenant_of(principal), principal.owner, status=status, limit=limit, page_token=page_token
            )
        except InvalidArgument as exc:
            raise StreamError("VALIDATION_ERROR", str(exc), details={"field": "page_token"}) from None

    async def dead_letters(
        self, principal: Principal, *, limit: int, page_token: str | None
    ) -> tuple[list[RequestRecord], str | None]:
        """Requests of the caller's tenant that failed for good (admin only)."""
        if not self.is_admin(principal):
            raise StreamError("FORBIDDEN", f"listing dead letters needs the {self.config.admin_role!r} role")
        if not 1 <= limit <= self.config.max_list_limit:
            raise StreamError(
                "VALIDATION_ERROR",
                f"limit must be from 1 to {self.config.max_list_limit}",
                details={"field": "limit"},
            )
        try:
            return await self.requests.dead_letters(tenant_of(principal), limit=limit, page_token=page_token)
        except InvalidArgument as exc:
            raise StreamError("VALIDATION_ERROR", str(exc), details={"field": "page_token"}) from None

    @staticmethod
    def status_message(record: RequestRecord) -> StatusMessage:
        return StatusMessage(
            request_id=record.request_id,
            action=record.action,
            status=record.status,
            progress=record.progress,
            seq=record.seq,
            result=record.result if record.status == RequestStatus.COMPLETED else None,
            error=record.error if record.terminal else None,
        )

    @staticmethod
    def status_body(record: RequestRecord) -> dict[str, Any]:
        """The JSON of GET /v1/requests/{id}."""
        body: dict[str, Any] = {
            "request_id": record.request_id,
            "action": record.action,
            "status": record.status,
            "progress": {"percentage": record.progress.percentage, "message": record.progress.message},
            "attempts": record.attempts,
            "last_seq": record.seq,
            "created_at": timestamp(record.created_at),
            "updated_at": timestamp(record.updated_at),
        }
        if record.client_id is not None:
            body["id"] = record.client_id
        if record.status == RequestStatus.COMPLETED:
            body["result"] = record.result
        if record.error is not None and record.status != RequestStatus.COMPLETED:
            body["error"] = msgspec.to_builtins(record.error)
        if record.finished_at is not None:
            body["finished_at"] = timestamp(record.finished_at)
        return body
