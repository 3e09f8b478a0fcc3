"""The steps every data request goes through, in one place.

reserve an audit slot -> authenticate -> find the namespace -> authorize -> read the
body (bounded in size and time) -> admit (rate and concurrency limits) -> run the
operation under the request timeout (through the Idempotency-Key cache for writes) -> map errors to
problems -> record the audit event (refused, denied and failed attempts included; with
``audit.on_failure: reject`` a write is answered only once its event is written). Route
handlers only do their own operation on a :class:`Call`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from prism.errors import PrismError
from prism.gateway.audit import AuditEvent, AuditUnavailable
from prism.gateway.auth import AuthError, Principal, peer_certificate, query_token
from prism.gateway.idempotency import fingerprint
from prism.gateway.pii import aad_prefix
from prism.gateway.policy import PII_READ_ROLE, Action, authorize
from prism.gateway.problem import HTTPProblem, RequestTimeout, from_prism_error
from prism.gateway.runtime import Gateway, ServedNamespace
from prism.kv.namespace import Namespace

__all__ = [
    "Call",
    "Caller",
    "DataEndpoint",
    "Handler",
    "RequestDeadline",
    "RouteAudit",
    "access_event",
    "auth_problem",
    "problem_for",
    "read_body",
    "wrong_kind",
]

log = logging.getLogger("prism.gateway")

#: Where each kind of namespace is served, for a request that went to the wrong routes.
_ROUTES = {"kv": "use /v1/kv or /v1/records", "timeseries": "use /v1/ts/{ns}/{series}"}

#: Request headers that are part of an idempotent request's identity.
_FINGERPRINT_HEADERS = ("content-type", "if-match", "if-none-match")


class Caller(Protocol):
    """What an audit event names of the caller (a ``prism.model.Principal``, or another with these fields)."""

    @property
    def subject(self) -> str: ...

    @property
    def kind(self) -> str: ...

    @property
    def tenant(self) -> str | None: ...


class Call:
    """One data request on its way through the pipeline: who, which namespace, and what happened."""

    __slots__ = (
        "audit_values",
        "body",
        "error_code",
        "gateway",
        "key",
        "key_count",
        "kv",
        "ns",
        "principal",
        "request",
    )

    def __init__(
        self, request: Request, gateway: Gateway, principal: Principal, ns: ServedNamespace, kv: Namespace
    ) -> None:
        self.request = request
        self.gateway = gateway
        self.principal = principal
        self.ns = ns
        self.kv = kv
        self.body = b""
        self.key: str | None = None
        self.key_count: int | None = None
        self.audit_values: dict[str, Any] | None = None
        self.error_code: str | None = None

    @property
    def clear_pii(self) -> bool:
        """True when this caller may see PII fields in clear."""
        return PII_READ_ROLE in self.principal.roles

    def aad(self, record: str, item_key: str = "") -> bytes:
        """What PII ciphertexts of this entry are bound to (see prism.gateway.pii)."""
        return aad_prefix(
            self.ns.name, self.principal.tenant if self.ns.tenant_scoped else None, record, item_key
        )

    def protect(self, record: str, value: bytes, item_key: str = "") -> bytes:
        """The bytes to store for ``value`` (PII fields encrypted when the namespace asks)."""
        pii = self.ns.pii
        if self.gateway.config.audit.include_values:
            self._audit_value(record if not item_key else f"{record}/{item_key}", value)
        if pii is None:
            return value
        return pii.protect(value, self.aad(record, item_key))

    def reveal(self, record: str, stored: bytes, item_key: str = "") -> bytes:
        """The bytes this caller sees (PII decrypted for ``pii:read``, masked for others)."""
        pii = self.ns.pii
        if pii is None:
            return stored
        return pii.reveal(stored, self.aad(record, item_key), self.clear_pii)

    def _audit_value(self, key: str, value: bytes) -> None:
        if self.audit_values is None:
            self.audit_values = {}
        pii = self.ns.pii
        if pii is not None:
            masked = pii.masked(value)
            self.audit_values[key] = masked if masked is not None else {"bytes": len(value)}
        else:
            self.audit_values[key] = {"bytes": len(value)}


Handler = Callable[[Call], Awaitable[Response]]


class RequestDeadline:
    """``async with RequestDeadline(seconds):`` raises RequestTimeout (a ``prism.Timeout``) past it."""

    __slots__ = ("_seconds", "_timeout")

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds

    async def __aenter__(self) -> None:
        self._timeout = asyncio.timeout(self._seconds)
        await self._timeout.__aenter__()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            await self._timeout.__aexit__(exc_type, exc, tb)
        except TimeoutError as passed:
            raise RequestTimeout(self._seconds) from passed


def wrong_kind(name: str, kind: str) -> HTTPProblem:
    """The 404 of a request for a namespace of another kind than its route serves."""
    return HTTPProblem(
        404, "NAMESPACE_NOT_FOUND", f"namespace {name!r} is a {kind} namespace: {_ROUTES[kind]}"
    )


def auth_problem(exc: AuthError) -> HTTPProblem:
    """The problem answering an AuthError (401s carry a Bearer challenge)."""
    return from_prism_error(exc, 0)


async def read_body(request: Request, limit: int, within: float | None = None) -> bytes:
    """The request body, refusing (413) anything over ``limit`` bytes before reading it all.

    A body that has not fully arrived ``within`` seconds is refused with 408 and the
    connection closed (a client that slow is not worth keeping).
    """
    if within is None:
        return await _read_body(request, limit)
    try:
        async with asyncio.timeout(within):
            return await _read_body(request, limit)
    except TimeoutError:
        raise HTTPProblem(
            408,
            "BODY_TIMEOUT",
            f"the request body did not arrive within {within:g} s",
            headers={"Connection": "close"},
        ) from None


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise HTTPProblem(400, "INVALID_CONTENT_LENGTH", "Content-Length is not a number") from None
        if size > limit:
            raise HTTPProblem(
                413, "BODY_TOO_LARGE", f"the body is {size} bytes; at most {limit} are accepted"
            )
    chunks: list[bytes] = []
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise HTTPProblem(413, "BODY_TOO_LARGE", f"the body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


class DataEndpoint:
    """An ASGI endpoint running a handler behind the whole pipeline.

    It is a plain ASGI callable (not a Starlette function endpoint), which keeps the
    per-request overhead of the hottest routes to the pipeline itself.
    """

    def __init__(
        self,
        gateway: Gateway,
        handler: Handler,
        *,
        op: str,
        action: Action,
        body_limit: Callable[[ServedNamespace], int] | None = None,
        kind: str = "kv",
    ) -> None:
        self.gateway = gateway
        #: The kind of namespace the route serves (``kv`` or ``timeseries``); others answer 404.
        self.kind = kind
        self.handler = handler
        self.op = op
        self.action: Action = action
        self.body_limit = body_limit
        self.writes = action == "write"
        self.timeout = gateway.config.server.request_timeout
        self.body_timeout = gateway.config.server.body_timeout
        self.retry_after = gateway.config.server.retry_after

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await self.respond(Request(scope, receive))
        await response(scope, receive, send)

    async def respond(self, request: Request) -> Response:
        """The response to ``request``; expected failures become problem responses."""
        gateway = self.gateway
        scope = request.scope
        started = time.perf_counter()
        principal: Principal | None = None
        served: ServedNamespace | None = None
        call: Call | None = None
        audited = False
        response: Response | None = None
        error_code: str | None = None
        audit = gateway.audit
        name: str = scope["path_params"]["ns"]
        found = gateway.namespaces.get(name)
        try:
            if audit.enabled and (found is None or found.config.audit):
                # Reserved before anything is checked, so refused attempts (401, 403, 404) are audited.
                audit.admit()
                audited = True
            principal = gateway.authenticator.authenticate_request(
                scope["headers"],
                query_token(scope.get("query_string", b"")),
                peer_cert=peer_certificate(scope),
            )
            scope["prism.principal"] = principal.subject
            if found is None:
                raise HTTPProblem(404, "NAMESPACE_NOT_FOUND", f"there is no namespace {name!r}")
            served = found
            scope["prism.namespace"] = name
            if served.kind != self.kind:
                raise HTTPProblem(
                    404,
                    "NAMESPACE_NOT_FOUND",
                    f"namespace {name!r} is a {served.kind} namespace: {_ROUTES[served.kind]}",
                )
            authorize(principal, served.config, self.action)
            body = b""
            if self.body_limit is not None:
                # Read before a concurrency slot is taken, under its own timeout: a slow client
                # holds its own connection, never a slot of the namespace.
                body = await read_body(request, self.body_limit(served), self.body_timeout)
            async with served.limiter.admit():
                call = Call(request, gateway, principal, served, served.handle(principal.tenant))
                call.body = body
                idem_key = request.headers.get("idempotency-key") if self.writes else None
                if idem_key is not None and gateway.idempotency is not None:
                    async with RequestDeadline(self.timeout):
                        response = await self._idempotent(call, idem_key)
                elif served.inline:
                    # Nothing in an inline backend waits on I/O, so there is nothing to time out.
                    response = await _answer(self.handler, call, self.retry_after)
                else:
                    async with RequestDeadline(self.timeout):
                        response = await _answer(self.handler, call, self.retry_after)
                error_code = call.error_code
        except Exception as exc:
            problem = problem_for(exc, self.timeout, self.retry_after, scope.get("prism.request_id"))
            error_code = problem.code
            response = problem.response(scope.get("prism.request_id"))
        finally:
            if audited and response is None:
                # Cancelled (the client went away): nothing runs after this block.
                audit.record(_event(scope, principal, name, served, call, self.op, 499, "cancelled", started))
        if audited:
            status = response.status_code
            outcome = "ok" if status < 400 else (error_code or f"http_{status}")
            event = _event(scope, principal, name, served, call, self.op, status, outcome, started)
            if self.writes and audit.fail_closed and status < 400:
                # Failing closed, a write is acknowledged only once its event is written.
                try:
                    await audit.record_durable(event)
                except AuditUnavailable as exc:
                    problem = HTTPProblem(
                        503, "AUDIT_UNAVAILABLE", str(exc), headers={"Retry-After": str(self.retry_after)}
                    )
                    response = problem.response(scope.get("prism.request_id"))
            else:
                audit.record(event)
        return response

    async def _idempotent(self, call: Call, key: str) -> Response:
        request = call.request
        assert self.gateway.idempotency is not None
        digest = fingerprint(
            request.method,
            request.url.path,
            request.url.query,
            [(h, request.headers.get(h, "")) for h in _FINGERPRINT_HEADERS],
            call.body,
        )
        return await self.gateway.idempotency.run(
            call.principal, call.ns.name, key, digest, lambda: _answer(self.handler, call, self.retry_after)
        )


def problem_for(
    exc: Exception, timeout: float, retry_after: int, request_id: str | None = None
) -> HTTPProblem:
    """The problem that reports ``exc``: its own for an expected failure, else a logged 500."""
    if isinstance(exc, HTTPProblem):
        return exc
    if isinstance(exc, AuditUnavailable):
        return HTTPProblem(503, "AUDIT_UNAVAILABLE", str(exc), headers={"Retry-After": str(retry_after)})
    if isinstance(exc, PrismError):
        return from_prism_error(exc, retry_after)
    if isinstance(exc, TimeoutError):
        return from_prism_error(RequestTimeout(timeout), retry_after)
    # Answered by the pipeline, not left to the app, so the audit records what the client got.
    log.error("unhandled error", exc_info=exc, extra={"request_id": request_id})
    return HTTPProblem(500, "INTERNAL", "the gateway failed to handle this request")


async def _answer(handler: Handler, call: Call, retry_after: int) -> Response:
    """The handler's response, with its expected failures turned into problem responses."""
    try:
        return await handler(call)
    except (HTTPProblem, PrismError) as exc:
        problem = exc if isinstance(exc, HTTPProblem) else from_prism_error(exc, retry_after)
        call.error_code = problem.code
        return problem.response(call.request.scope.get("prism.request_id"))


def _event(
    scope: MutableMapping[str, Any],
    principal: Principal | None,
    namespace: str,
    served: ServedNamespace | None,
    call: Call | None,
    op: str,
    status: int,
    outcome: str,
    started: float,
) -> AuditEvent:
    if call is None:
        return access_event(scope, principal, namespace, op, status, outcome, started)
    pii = None
    if served is not None and served.pii is not None and op.startswith(("bulk_get", "records_get")):
        # Only what was shown: a read refused (a value that could not be masked) showed nothing.
        pii = ("clear" if call.clear_pii else "masked") if status < 400 else None
    return access_event(
        scope,
        principal,
        namespace,
        op,
        status,
        outcome,
        started,
        key=call.key,
        key_count=call.key_count,
        pii=pii,
        values=call.audit_values,
    )


def access_event(
    scope: Mapping[str, Any],
    principal: Caller | None,
    namespace: str | None,
    op: str,
    status: int,
    outcome: str,
    started: float,
    *,
    key: str | None = None,
    key_count: int | None = None,
    pii: str | None = None,
    values: dict[str, Any] | None = None,
) -> AuditEvent:
    """The audit event of one request; ``principal`` is None when it was refused before (401)."""
    return AuditEvent(
        time=datetime.now(UTC),
        request_id=scope.get("prism.request_id"),
        principal=None if principal is None else principal.subject,
        principal_kind=None if principal is None else principal.kind,
        issuer=getattr(principal, "issuer", None),
        tenant=None if principal is None else principal.tenant,
        namespace=namespace,
        operation=op,
        key=key,
        key_count=key_count,
        pii=pii,
        values=values,
        outcome=outcome,
        status=status,
        latency_ms=round((time.perf_counter() - started) * 1000, 3),
    )


class RouteAudit:
    """The audit trail for routes outside the data pipeline (streaming), by the same rules.

    ``admit`` reserves the event's slot before authentication (raising
    AuditUnavailable when failing closed and the trail cannot take it) and says
    whether the request is audited; ``record`` queues the outcome, and for a
    successful write when failing closed returns only once the event is written.
    """

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def admit(self) -> bool:
        audit = self.gateway.audit
        if not audit.enabled:
            return False
        audit.admit()
        return True

    async def record(
        self,
        scope: Mapping[str, Any],
        principal: Any,
        operation: str,
        status: int,
        outcome: str,
        *,
        started: float,
        write: bool,
    ) -> None:
        audit = self.gateway.audit
        event = access_event(scope, principal, None, operation, status, outcome, started)
        if write and audit.fail_closed and status < 400:
            await audit.record_durable(event)
        else:
            audit.record(event)
