"""One WebSocket connection at /v1/stream: authenticate, register, read messages, answer.

Identity comes only from the credentials presented at connect (the ``Authorization``
header, or ``?token=`` for browsers). Each message is answered on its own task so a
slow request never blocks reading; replies and events share the follower's queue, so
an acknowledgment always precedes its request's events. Malformed or oversized frames
get an ``error`` and the connection stays usable, until ``max_invalid_frames`` bad
ones in a row close it with 1008.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from starlette.websockets import WebSocket, WebSocketState

from prism.errors import PrismError
from prism.streaming import eager
from prism.streaming.auth import Principal, authenticate, peer_certificate, query_token, tenant_of
from prism.streaming.connections import ConnectionRecord, new_connection_id
from prism.streaming.errors import StreamError
from prism.streaming.hub import Follower
from prism.streaming.metrics import CONNECTIONS
from prism.streaming.protocol import (
    Acknowledgment,
    ErrorMessage,
    Inbound,
    Pong,
    Response,
    Subscribed,
    decode_inbound,
    encode,
    error_body,
    timestamp,
)
from prism.streaming.queries import status_message
from prism.streaming.requests import RequestRecord, RequestStatus, Versioned, new_request_id
from prism.streaming.service import StreamingService

__all__ = ["serve_websocket"]

log = logging.getLogger("prism.streaming")

#: Messages handled at once per connection before more are refused with RATE_LIMITED.
MAX_IN_FLIGHT = 256
#: How often a repeat of an inline request still running elsewhere checks its record.
INLINE_POLL_SECONDS = 0.05
CLOSE_NORMAL = 1000
CLOSE_POLICY_VIOLATION = 1008
CLOSE_TRY_AGAIN_LATER = 1013


class _TokenBucket:
    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.stamp = time.monotonic()

    def take(self) -> float:
        """0 when a message may pass, else the seconds until one may."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


def _report_failure(task: asyncio.Future[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("a WebSocket message handler failed", exc_info=task.exception())


def _error(exc: StreamError, *, request_id: str | None = None, client_id: str | None = None) -> bytes:
    return encode(ErrorMessage(error=error_body(exc), request_id=request_id, id=client_id))


async def serve_websocket(source: Callable[[], StreamingService], websocket: WebSocket) -> None:
    """Run one WebSocket connection to the service ``source`` returns, to its end (its handshake is
    audited like an HTTP request)."""
    try:
        service = source()
    except StreamError as exc:
        await websocket.accept()
        await websocket.send_text(_error(exc).decode())
        await websocket.close(CLOSE_TRY_AGAIN_LATER, exc.code)
        return
    audit = service.audit
    started = time.perf_counter()
    audited = False
    try:
        try:
            audited = audit is not None and audit.admit()
        except Exception as exc:
            raise StreamError("AUDIT_UNAVAILABLE", str(exc) or "the audit trail is unavailable") from None
        if service.authenticator is None:
            raise StreamError("UNAUTHORIZED", "this server has no authenticator configured")
        principal = await authenticate(
            service.authenticator,
            websocket.scope["headers"],
            query_token(websocket.scope.get("query_string", b"")),
            query_token_allowed=True,
            peer_cert=peer_certificate(websocket.scope),
        )
    except StreamError as exc:
        if audited:
            assert audit is not None
            await audit.record(
                websocket.scope,
                None,
                "stream_connect",
                exc.http_status,
                exc.code,
                started=started,
                write=False,
            )
        await websocket.accept()
        await websocket.send_text(_error(exc).decode())
        await websocket.close(CLOSE_POLICY_VIOLATION, exc.code)
        return
    if audited:
        assert audit is not None
        await audit.record(
            websocket.scope, principal, "stream_connect", 101, "ok", started=started, write=False
        )
    await websocket.accept()
    await _Session(service, websocket, principal).run()


#: Audit operations of the WebSocket messages (a request message is ``stream_submit``).
_OPERATIONS = {"cancel": "stream_cancel", "status": "stream_status", "subscribe": "stream_subscribe"}


class _Session:
    def __init__(self, service: StreamingService, websocket: WebSocket, principal: Principal) -> None:
        self.service = service
        self.config = service.config
        self.ws = websocket
        self.principal = principal
        self.follower = Follower(
            service.log, self._send, queue_size=self.config.send_queue_size, on_overflow=self._overflowed
        )
        self.tasks: set[asyncio.Future[None]] = set()
        self.started: set[str] = set()
        self.closing: tuple[int, str] | None = None
        self.last_active = time.monotonic()
        now = time.time()
        client = websocket.client
        self.record = ConnectionRecord(
            id=new_connection_id(),
            user=principal.owner,
            tenant=tenant_of(principal),
            node=service.node,
            connected_at=now,
            last_seen=now,
            metadata={
                "remote": f"{client.host}:{client.port}" if client else None,
                "user_agent": websocket.headers.get("user-agent"),
            },
        )

    async def _send(self, data: bytes) -> None:
        await self.ws.send_text(data.decode())

    def expire_if_idle(self, now: float) -> bool:
        """Close the connection when the client sent nothing for ``idle_timeout``; True when it did."""
        if self.closing is not None or now - self.last_active <= self.config.idle_timeout:
            return False
        self.closing = (CLOSE_NORMAL, "idle timeout")
        self._spawn(self._close(*self.closing))
        return True

    def _overflowed(self) -> None:
        log.warning("connection %s fell too far behind; closing it", self.record.id)
        self.closing = (CLOSE_TRY_AGAIN_LATER, "client too slow")
        self._spawn(self._close(*self.closing))

    async def _close(self, code: int, reason: str) -> None:
        if self.ws.application_state is WebSocketState.CONNECTED:
            try:
                await self.ws.close(code, reason)
            except (RuntimeError, OSError):
                pass

    def _spawn(self, coro: Any, *, eagerly: bool = False) -> None:
        """Run ``coro`` beside the read loop (``eagerly``: start it here, a task only if it waits)."""
        task: asyncio.Future[None] = (
            eager.start(coro) if eagerly else asyncio.get_running_loop().create_task(coro)
        )
        if task.done():
            _report_failure(task)
            return
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        task.add_done_callback(_report_failure)

    async def run(self) -> None:
        service = self.service
        service.sessions.add(self)
        connections = CONNECTIONS.labels("websocket")
        connections.inc()
        try:
            await self._serve()
        finally:
            connections.dec()
            service.sessions.discard(self)

    async def _serve(self) -> None:
        service = self.service
        await service.connections.save(self.record)
        self.follower.start()
        await service.hub.add(self.follower, service.access.topic_of(self.principal))
        try:
            await self._read()
        finally:
            await service.hub.remove(self.follower)
            if self.config.disconnect_policy == "cancel":
                for rid in self.started:
                    try:
                        await service.commands.cancel(self.principal, rid)
                    except (StreamError, PrismError) as exc:
                        log.info("could not cancel %s on disconnect: %s", rid, exc)
            await self.follower.stop()
            try:
                await service.connections.remove(self.record)
            except PrismError as exc:
                log.warning("could not remove connection %s: %s", self.record.id, exc)

    async def _read(self) -> None:
        config = self.config
        bucket = _TokenBucket(config.rate_limit, config.rate_burst)
        invalid = 0
        while self.closing is None:
            message = await self.ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            self.last_active = time.monotonic()
            frame = message.get("text")
            if frame is None:
                frame = message.get("bytes")
            if frame is None:
                continue
            self._touch()
            size = (
                len(frame)
                if isinstance(frame, bytes) or len(frame) * 4 <= config.max_frame_bytes
                else len(frame.encode())
            )
            wait = bucket.take()
            if size > config.max_frame_bytes:
                invalid += 1
                self.follower.direct(
                    _error(
                        StreamError(
                            "MESSAGE_TOO_LARGE",
                            f"a frame holds at most {config.max_frame_bytes} bytes, got {size}",
                            details={"limit": config.max_frame_bytes},
                        )
                    )
                )
            elif wait:
                self.follower.direct(
                    _error(StreamError("RATE_LIMITED", "too many messages", retry_after=round(wait, 3)))
                )
                continue
            else:
                try:
                    inbound = decode_inbound(frame)
                except StreamError as exc:
                    invalid += 1
                    self.follower.direct(_error(exc))
                else:
                    invalid = 0
                    self._dispatch(inbound)
                    continue
            if invalid >= config.max_invalid_frames:
                self.follower.direct(
                    _error(StreamError("INVALID_MESSAGE", f"{invalid} invalid messages in a row; closing"))
                )
                await asyncio.sleep(0)  # let the sender flush the last error
                await self._close(CLOSE_POLICY_VIOLATION, "too many invalid messages")
                return

    def _touch(self) -> None:
        if time.time() - self.record.last_seen >= self.config.connection_touch_interval:
            self._spawn(self._save_touch())

    async def _save_touch(self) -> None:
        try:
            await self.service.connections.touch(self.record)
        except PrismError as exc:
            log.warning("could not touch connection %s: %s", self.record.id, exc)

    def _dispatch(self, msg: Inbound) -> None:
        if msg.type == "ping":
            self.follower.direct(encode(Pong(timestamp=timestamp())))
            return
        if len(self.tasks) >= MAX_IN_FLIGHT:
            self.follower.direct(
                _error(
                    StreamError(
                        "RATE_LIMITED", f"at most {MAX_IN_FLIGHT} messages are handled at once", retry_after=1
                    ),
                    request_id=msg.request_id,
                    client_id=msg.id,
                )
            )
            return
        if msg.type == "subscribe":
            assert msg.request_id is not None
            self.follower.hold(msg.request_id)
        self._spawn(self._handle(msg), eagerly=msg.type is None)

    async def _handle(self, msg: Inbound) -> None:
        if msg.type is None:
            await self._request(msg)
            return
        operation = _OPERATIONS.get(msg.type)
        started = time.perf_counter()
        audited = False
        outcome: tuple[int, str] | None = None
        try:
            if operation is not None:
                audited = self._admit()
            if msg.type == "subscribe":
                await self._subscribe(msg)
            elif msg.type == "status":
                assert msg.request_id is not None
                current = await self.service.queries.lookup(self.principal, msg.request_id)
                self.follower.direct(encode(status_message(current.record)))
            elif msg.type == "cancel":
                assert msg.request_id is not None
                record = await self.service.commands.cancel(self.principal, msg.request_id)
                outcome = (200, "ok")
                if audited:
                    audited = False
                    await self._audit("stream_cancel", 200, "ok", started, write=True)
                self.follower.direct(encode(status_message(record)))
            outcome = (200, "ok")
        except StreamError as exc:
            outcome = (exc.http_status, exc.code)
            reply = _error(exc, request_id=msg.request_id, client_id=msg.id)
            if msg.type == "subscribe" and msg.request_id is not None:
                self.follower.forget(msg.request_id, reply)
            else:
                self.follower.direct(reply)
        except PrismError as exc:
            log.warning("store error while handling a message: %s", exc)
            error = StreamError(
                "INTERNAL_ERROR", "the request could not be processed; try again", retry_after=1
            )
            self.follower.direct(_error(error, request_id=msg.request_id, client_id=msg.id))
        except Exception as exc:
            log.error("a WebSocket message failed", exc_info=exc)
            error = StreamError("INTERNAL_ERROR", "the message failed on the server", retryable=False)
            self.follower.direct(_error(error, request_id=msg.request_id, client_id=msg.id))
        finally:
            if audited and operation is not None:
                status, code = outcome or (500, "INTERNAL_ERROR")
                with contextlib.suppress(StreamError):
                    await self._audit(operation, status, code, started, write=False)

    def _admit(self) -> bool:
        """Reserve the audit event of one message; AUDIT_UNAVAILABLE when the trail cannot take it."""
        audit = self.service.audit
        if audit is None:
            return False
        try:
            return audit.admit()
        except Exception as exc:
            raise StreamError("AUDIT_UNAVAILABLE", str(exc) or "the audit trail is unavailable") from None

    async def _audit(self, operation: str, status: int, outcome: str, started: float, *, write: bool) -> None:
        """Record one message's event; for a write that succeeded, failing closed, once it is written.

        Raises StreamError(AUDIT_UNAVAILABLE) when that event could not be written: the
        write is then not acknowledged.
        """
        audit = self.service.audit
        assert audit is not None
        try:
            await audit.record(
                self.ws.scope, self.principal, operation, status, outcome, started=started, write=write
            )
        except Exception as exc:
            raise StreamError("AUDIT_UNAVAILABLE", str(exc) or "the audit trail is unavailable") from None

    async def _subscribe(self, msg: Inbound) -> None:
        assert msg.request_id is not None
        service = self.service
        current = await service.queries.lookup(self.principal, msg.request_id)
        record = current.record
        if record.user != self.principal.owner:
            await service.hub.watch(self.follower, service.access.owner_topic(record), record.request_id)
            current = await service.queries.lookup(self.principal, msg.request_id)
            record = current.record
        # Nothing comes after the last event yet: a client ahead of it gets what follows.
        after = min(msg.after_seq or 0, record.seq)
        reply = encode(
            Subscribed(
                request_id=record.request_id, after_seq=after, last_seq=record.seq, status=record.status
            )
        )
        self.follower.subscribe(record.request_id, after, record, reply)

    async def _request(self, msg: Inbound) -> None:
        assert msg.action is not None
        service, principal, follower = self.service, self.principal, self.follower
        payload = bytes(msg.payload)
        rid: str | None = None
        if msg.id is not None:
            rid = new_request_id(tenant_of(principal), principal.owner, msg.id)
            follower.expect(rid)
        started = time.perf_counter()
        audited = False
        try:
            audited = self._admit()
            spec = service.access.handler_for(principal, msg.action)
            if service.access.is_sync(spec):
                existing = await service.commands.existing(principal, spec, payload, msg.id)
                if existing is not None:
                    existing = await self._settled(existing)
                    if not self._stale_inline(existing.record):
                        if audited:
                            audited = False
                            await self._audit("stream_submit", 200, "ok", started, write=True)
                        self._repeat(existing.record, msg)
                        return

                def promoted(record: RequestRecord) -> None:
                    nonlocal audited
                    follower.expect(record.request_id)
                    self.started.add(record.request_id)
                    ack = Acknowledgment(
                        request_id=record.request_id,
                        status="queued",
                        message=f"still running after {self.config.inline_deadline:g} s; continuing as async",
                        id=msg.id,
                    )
                    if not audited:
                        follower.acknowledge(record.request_id, encode(ack))
                        return
                    audited = False
                    # Acknowledged only once its audit event is written (when failing closed).
                    task = asyncio.ensure_future(self._acknowledge_audited(record.request_id, ack, started))
                    self.tasks.add(task)
                    task.add_done_callback(self.tasks.discard)

                response = await service.commands.run_inline(
                    principal,
                    spec,
                    payload,
                    client_id=msg.id,
                    metadata=msg.metadata,
                    replace=existing,
                    on_promoted=promoted,
                )
                if response is not None:
                    if audited:
                        audited = False
                        await self._audit("stream_submit", 200, "ok", started, write=True)
                    if rid is not None:
                        follower.forget(rid, response)
                    else:
                        await follower.send_now(response)
                return

            def before_enqueue(request_id: str) -> None:
                nonlocal rid
                rid = request_id
                follower.expect(request_id)

            submission = await service.commands.submit(
                principal,
                msg.action,
                payload,
                client_id=msg.id,
                metadata=msg.metadata,
                before_enqueue=before_enqueue,
            )
        except Exception as exc:
            # Whatever goes wrong, the client gets an answer for this message and keeps its connection.
            if isinstance(exc, StreamError):
                error = exc
            elif isinstance(exc, PrismError):
                log.warning("store error while submitting: %s", exc)
                error = StreamError(
                    "INTERNAL_ERROR", "the request could not be stored; try again", retry_after=1
                )
            else:
                log.error("a request message failed", exc_info=exc)
                error = StreamError("INTERNAL_ERROR", "the request failed on the server", retryable=False)
            if audited:
                with contextlib.suppress(StreamError):
                    await self._audit("stream_submit", error.http_status, error.code, started, write=False)
            reply = _error(error, request_id=None, client_id=msg.id)
            if rid is not None:
                follower.forget(rid, reply)
            else:
                follower.direct(reply)
            return
        record = submission.record
        self.started.add(record.request_id)
        message = "request queued" if submission.created else f"already submitted (status {record.status})"
        ack = Acknowledgment(request_id=record.request_id, status="queued", message=message, id=msg.id)
        if audited:
            try:
                await self._audit("stream_submit", 202, "ok", started, write=True)
            except StreamError as exc:
                follower.forget(
                    record.request_id, _error(exc, request_id=record.request_id, client_id=msg.id)
                )
                return
        follower.acknowledge(
            record.request_id, encode(ack), replay_from=None if submission.created else record
        )

    async def _acknowledge_audited(self, request_id: str, ack: Acknowledgment, started: float) -> None:
        """Send the acknowledgment of a promoted inline request once its audit event is written."""
        try:
            await self._audit("stream_submit", 202, "ok", started, write=True)
        except StreamError as exc:
            self.follower.forget(request_id, _error(exc, request_id=request_id, client_id=ack.id))
            return
        self.follower.acknowledge(request_id, encode(ack))

    @staticmethod
    def _stale_inline(record: RequestRecord) -> bool:
        """An inline run whose node died before finishing or promoting it: a repeat may run it again."""
        return (
            record.status == RequestStatus.PROCESSING
            and not record.queued
            and (record.owner or "").startswith("inline:")
            and record.lease_until < time.time()
        )

    async def _settled(self, current: Versioned) -> Versioned:
        """Wait (up to the inline deadline) while an inline run of the same id is still in flight."""
        deadline = time.monotonic() + self.config.inline_deadline + 1.0
        while (
            current.record.status == RequestStatus.PROCESSING
            and not current.record.queued
            and not self._stale_inline(current.record)
            and time.monotonic() < deadline
        ):
            await asyncio.sleep(INLINE_POLL_SECONDS)
            fresh = await self.service.requests.get(current.record.request_id)
            if fresh is None:
                break
            current = fresh
        return current

    def _repeat(self, record: RequestRecord, msg: Inbound) -> None:
        """A sync request sent again with the same id: answer from the record, or follow it if async."""
        rid = record.request_id
        if record.terminal and not record.queued:
            if record.status == RequestStatus.COMPLETED:
                reply = encode(Response(request_id=rid, success=True, data=record.result, id=msg.id))
            else:
                reply = encode(Response(request_id=rid, success=False, error=record.error, id=msg.id))
            self.follower.forget(rid, reply)
            return
        self.started.add(rid)
        ack = Acknowledgment(
            request_id=rid, status="queued", message=f"already submitted (status {record.status})", id=msg.id
        )
        self.follower.acknowledge(rid, encode(ack), replay_from=record)
