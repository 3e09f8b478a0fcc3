"""The HTTP face of streaming: WebSocket /v1/stream, the /v1/requests API and its SSE event stream.

    routes = streaming_routes(lambda: service)   # a list of Starlette routes to mount in any app

The routes ask their ``ServiceSource`` for the running service on every request: the
gateway builds the service when it starts (on its opened store), after the routes.

Errors are ``application/problem+json`` bodies carrying the protocol error ``code``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket

from prism.errors import PrismError
from prism.kv.validation import undecodable_escape
from prism.streaming.auth import Principal, authenticate, peer_certificate, query_token
from prism.streaming.errors import StreamError
from prism.streaming.hub import Follower
from prism.streaming.metrics import CONNECTIONS
from prism.streaming.openapi import describe_routes
from prism.streaming.protocol import decode_event_header, decode_inbound
from prism.streaming.queries import status_body
from prism.streaming.service import StreamingService
from prism.streaming.session import serve_websocket

__all__ = ["ServiceSource", "problem", "streaming_routes"]

#: Returns the running service (raises StreamError INTERNAL_ERROR, retryable, when there is none).
ServiceSource = Callable[[], StreamingService]

PROBLEM_TYPE_BASE = "https://prism.dev/problems/"
_encoder = msgspec.json.Encoder()
log = logging.getLogger("prism.streaming")


def problem(exc: StreamError) -> Response:
    """An ``application/problem+json`` response for ``exc``."""
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_BASE + exc.code.lower().replace("_", "-"),
        "title": exc.code.replace("_", " ").capitalize(),
        "status": exc.http_status,
        "detail": exc.message,
        "code": exc.code,
        "retryable": exc.retryable,
    }
    if exc.details is not None:
        body["details"] = exc.details
    headers = {}
    if exc.retry_after is not None:
        body["retry_after"] = exc.retry_after
        headers["Retry-After"] = str(max(1, round(exc.retry_after)))
    return Response(
        _encoder.encode(body),
        status_code=exc.http_status,
        media_type="application/problem+json",
        headers=headers,
    )


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(_encoder.encode(body), status_code=status, media_type="application/json", headers=headers)


def _int_param(request: Request, name: str, default: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise StreamError("VALIDATION_ERROR", f"{name} must be an integer", details={"field": name}) from None
    if value < 0:
        raise StreamError("VALIDATION_ERROR", f"{name} must be >= 0", details={"field": name})
    return value


def _check_escapes(request: Request) -> None:
    """INVALID_MESSAGE for percent-escapes that are not UTF-8 in the path or the query string."""
    scope = request.scope
    for where, raw in (("path", scope.get("raw_path") or b""), ("query string", scope["query_string"])):
        bad = undecodable_escape(raw)
        if bad is not None:
            raise StreamError(
                "INVALID_MESSAGE",
                f"the {where} holds {bad}, which is not UTF-8 (request ids and query values are UTF-8 text)",
                details={"field": where},
            )


class _Api:
    def __init__(self, source: ServiceSource) -> None:
        self._source = source

    @property
    def service(self) -> StreamingService:
        return self._source()

    async def _principal(self, request: Request, *, query_token_allowed: bool) -> Principal:
        if self.service.authenticator is None:
            raise StreamError("UNAUTHORIZED", "this server has no authenticator configured")
        return await authenticate(
            self.service.authenticator,
            request.scope["headers"],
            query_token(request.scope.get("query_string", b"")),
            query_token_allowed=query_token_allowed,
            peer_cert=peer_certificate(request.scope),
        )

    async def _guard(
        self,
        request: Request,
        handler: Any,
        *,
        operation: str,
        write: bool = False,
        query_token_allowed: bool = False,
    ) -> Response:
        try:
            audit = self.service.audit
        except StreamError as exc:
            return problem(exc)
        started = time.perf_counter()
        audited = False
        principal: Principal | None = None
        response: Response | None = None
        try:
            try:
                # Reserved before authentication, so refused attempts are audited too.
                audited = audit is not None and audit.admit()
            except Exception as exc:
                raise StreamError("AUDIT_UNAVAILABLE", str(exc) or "the audit trail is unavailable") from None
            _check_escapes(request)
            principal = await self._principal(request, query_token_allowed=query_token_allowed)
            response = await handler(request, principal)
            outcome = "ok"
        except StreamError as exc:
            outcome = exc.code
            response = problem(exc)
        except PrismError:
            outcome = "INTERNAL_ERROR"
            response = problem(
                StreamError("INTERNAL_ERROR", "the store could not be reached; try again", retry_after=1)
            )
        except Exception:
            log.exception("a streaming request failed")
            outcome = "INTERNAL_ERROR"
            response = problem(
                StreamError("INTERNAL_ERROR", "the request failed on the server", retryable=False)
            )
        finally:
            if audited and response is None:
                # Cancelled (the client went away): nothing runs after this block.
                assert audit is not None
                await audit.record(
                    request.scope, principal, operation, 499, "cancelled", started=started, write=write
                )
        assert response is not None
        if audited:
            assert audit is not None
            try:
                await audit.record(
                    request.scope,
                    principal,
                    operation,
                    response.status_code,
                    outcome,
                    started=started,
                    write=write,
                )
            except Exception as exc:
                # Failing closed: a write whose event could not be written is not acknowledged.
                response = problem(StreamError("AUDIT_UNAVAILABLE", str(exc), retry_after=1))
        return response

    async def requests(self, request: Request) -> Response:
        if request.method == "POST":
            return await self._guard(request, self._submit, operation="requests_submit", write=True)
        return await self._guard(request, self._list, operation="requests_list")

    async def one(self, request: Request) -> Response:
        return await self._guard(request, self._get, operation="request_get")

    async def cancel(self, request: Request) -> Response:
        return await self._guard(request, self._cancel, operation="request_cancel", write=True)

    async def dead(self, request: Request) -> Response:
        return await self._guard(request, self._dead, operation="dead_letters_list")

    async def retry_dead(self, request: Request) -> Response:
        return await self._guard(request, self._retry_dead, operation="dead_letter_retry", write=True)

    async def discard_dead(self, request: Request) -> Response:
        return await self._guard(request, self._discard_dead, operation="dead_letter_discard", write=True)

    async def events(self, request: Request) -> Response:
        # The only route besides the WebSocket that takes ?token= (EventSource cannot set headers).
        return await self._guard(request, self._events, operation="request_events", query_token_allowed=True)

    async def _submit(self, request: Request, principal: Principal) -> Response:
        limit = self.service.config.max_frame_bytes
        body = b""
        body_timeout = self.service.config.body_timeout
        try:
            async with asyncio.timeout(body_timeout):
                async for chunk in request.stream():
                    body += chunk
                    if len(body) > limit:
                        raise StreamError("MESSAGE_TOO_LARGE", f"a request body holds at most {limit} bytes")
        except TimeoutError:
            raise StreamError(
                "REQUEST_TIMEOUT", f"the request body did not arrive within {body_timeout:g} s"
            ) from None
        msg = decode_inbound(body or b"{}")
        if msg.type is not None or msg.action is None:
            raise StreamError("INVALID_MESSAGE", 'the body is {"action", "payload"?, "id"?, "metadata"?}')
        client_id = msg.id
        key = request.headers.get("idempotency-key")
        if key is not None:
            if not 0 < len(key) <= 128 or not key.isprintable():
                raise StreamError("VALIDATION_ERROR", "Idempotency-Key is 1-128 printable characters")
            if client_id is not None and client_id != key:
                raise StreamError(
                    "VALIDATION_ERROR", 'Idempotency-Key and "id" differ', details={"field": "id"}
                )
            client_id = key
        submission = await self.service.commands.submit(
            principal, msg.action, bytes(msg.payload), client_id=client_id, metadata=msg.metadata
        )
        record = submission.record
        headers = {"Location": f"/v1/requests/{record.request_id}"}
        if not submission.created:
            headers["Idempotent-Replayed"] = "true"
        return _json({"request_id": record.request_id, "status": record.status}, 202, headers)

    async def _list(self, request: Request, principal: Principal) -> Response:
        status = request.query_params.get("status") or None
        limit = _int_param(request, "limit", 20)
        records, token = await self.service.queries.list_requests(
            principal,
            status=status,
            limit=limit,
            page_token=request.query_params.get("page_token") or None,
            user=request.query_params.get("user") or None,
            action=request.query_params.get("action") or None,
        )
        body: dict[str, Any] = {"requests": [status_body(r) for r in records]}
        if token is not None:
            body["next_page_token"] = token
        return _json(body)

    async def _get(self, request: Request, principal: Principal) -> Response:
        current = await self.service.queries.lookup(principal, request.path_params["request_id"])
        return _json(status_body(current.record))

    async def _cancel(self, request: Request, principal: Principal) -> Response:
        record = await self.service.commands.cancel(principal, request.path_params["request_id"])
        return _json(status_body(record))

    async def _dead(self, request: Request, principal: Principal) -> Response:
        records, token = await self.service.queries.dead_letters(
            principal,
            limit=_int_param(request, "limit", 20),
            page_token=request.query_params.get("page_token"),
        )
        body: dict[str, Any] = {"requests": [status_body(r) for r in records]}
        if token is not None:
            body["next_page_token"] = token
        return _json(body)

    async def _retry_dead(self, request: Request, principal: Principal) -> Response:
        submission = await self.service.commands.retry_dead_letter(
            principal, request.path_params["request_id"]
        )
        record = submission.record
        headers = {"Location": f"/v1/requests/{record.request_id}"}
        if not submission.created:
            headers["Idempotent-Replayed"] = "true"
        return _json({"request_id": record.request_id, "status": record.status}, 202, headers)

    async def _discard_dead(self, request: Request, principal: Principal) -> Response:
        await self.service.commands.discard_dead_letter(principal, request.path_params["request_id"])
        return Response(status_code=204)

    async def _events(self, request: Request, principal: Principal) -> Response:
        service = self.service
        request_id = request.path_params["request_id"]
        current = await service.queries.lookup(principal, request_id)
        header = request.headers.get("last-event-id")
        if header:
            try:
                after = int(header)
            except ValueError:
                after = -1
            if after < 0:
                raise StreamError(
                    "VALIDATION_ERROR",
                    "Last-Event-ID must be an event number",
                    details={"field": "Last-Event-ID"},
                )
        else:
            after = _int_param(request, "after_seq", 0)
        chunks: asyncio.Queue[bytes | None] = asyncio.Queue()

        async def send(data: bytes) -> None:
            head = decode_event_header(data)
            chunks.put_nowait(b"id: %d\nevent: %s\ndata: %s\n\n" % (head.seq, head.type.encode(), data))

        follower = Follower(
            service.log,
            send,
            queue_size=service.config.send_queue_size,
            auto_follow=False,
            on_terminal=lambda _rid: chunks.put_nowait(None),
            on_overflow=lambda: chunks.put_nowait(None),
        )
        follower.start()
        follower.hold(request_id)
        await service.hub.watch(follower, service.access.owner_topic(current.record), request_id)
        record = (await service.queries.lookup(principal, request_id)).record
        # Nothing comes after the last event yet: a client ahead of it gets what follows.
        after = min(after, record.seq)
        if record.terminal and after >= record.seq:
            chunks.put_nowait(None)
        follower.subscribe(request_id, after, record)
        keepalive = service.config.sse_keepalive

        def on_shutdown() -> None:
            # What is queued goes out first, then the event that sends the client elsewhere.
            chunks.put_nowait(_reconnect_event(request_id))
            chunks.put_nowait(None)

        stop_listening = service.shutdown.subscribe(on_shutdown)

        async def stream() -> AsyncIterator[bytes]:
            connections = CONNECTIONS.labels("sse")
            connections.inc()
            try:
                yield b"retry: 1000\n\n"
                while True:
                    try:
                        chunk = await asyncio.wait_for(chunks.get(), timeout=keepalive)
                    except TimeoutError:
                        yield b": keep-alive\n\n"
                        continue
                    if chunk is None:
                        return
                    yield chunk
            finally:
                stop_listening()
                connections.dec()
                await service.hub.remove(follower)
                await follower.stop()

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )


def _reconnect_event(request_id: str) -> bytes:
    """The last event of an SSE stream ended by a server shutdown (it has no ``id:``, so
    ``Last-Event-ID`` stays at the last event received and a reconnect resumes after it)."""
    body = {
        "type": "reconnect",
        "request_id": request_id,
        "reason": "shutdown",
        "message": "the server is shutting down; reconnect with Last-Event-ID to resume",
    }
    return b"event: reconnect\ndata: %s\n\n" % _encoder.encode(body)


def streaming_routes(source: ServiceSource) -> list[BaseRoute]:
    """The routes of the streaming API, serving the service ``source`` returns (started before use)."""
    api = _Api(source)

    async def stream(websocket: WebSocket) -> None:
        await serve_websocket(source, websocket)

    return describe_routes(
        [
            WebSocketRoute("/v1/stream", stream),
            Route("/v1/requests", api.requests, methods=["GET", "POST"]),
            Route("/v1/requests/{request_id}", api.one, methods=["GET"]),
            Route("/v1/requests/{request_id}/cancel", api.cancel, methods=["POST"]),
            Route("/v1/requests/{request_id}/events", api.events, methods=["GET"]),
            Route("/v1/dead-letters", api.dead, methods=["GET"]),
            Route("/v1/dead-letters/{request_id}/retry", api.retry_dead, methods=["POST"]),
            Route("/v1/dead-letters/{request_id}", api.discard_dead, methods=["DELETE"]),
        ]
    )
