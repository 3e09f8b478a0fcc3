"""The steps every data request goes through, in one place, for every transport.

reserve an audit slot -> authenticate -> resolve the namespace -> authorize -> read the
body (bounded in size and time) -> admit (rate and concurrency limits) -> run the
handler under the request timeout (through the Idempotency-Key cache for writes) ->
map errors to problems -> record the audit event (refused, denied and failed attempts
included; with ``audit.on_failure: reject`` a write is answered only once its event
is written) -> respond.

A route declares what it needs (:class:`DataRoute`: a body and its limit, the
Idempotency-Key, read or write, whether it shows stored values) and the
:class:`Pipeline` skips only what a request does not need. Nothing here knows ASGI:
a transport builds a :class:`Call` (headers, query string, path parameters and a
way to read the body), runs it, and sends the :class:`~prism.gateway.reply.Reply`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Protocol

from starlette.datastructures import QueryParams

from prism.errors import PrismError
from prism.gateway.audit import AuditEvent, AuditUnavailable
from prism.gateway.auth import Principal, query_token
from prism.gateway.idempotency import fingerprint
from prism.gateway.pii import aad_prefix
from prism.gateway.policy import PII_READ_ROLE, Action, authorize
from prism.gateway.problem import HTTPProblem, RequestTimeout, problem_for
from prism.gateway.reply import Reply
from prism.gateway.runtime import Gateway, ServedNamespace
from prism.kv.namespace import Namespace

__all__ = [
    "BodyReader",
    "Call",
    "Caller",
    "DataRoute",
    "Handler",
    "Pipeline",
    "RequestDeadline",
    "RouteAudit",
    "audit_event",
    "problem_for",
    "wrong_kind",
]

#: Where each kind of namespace is served, for a request that went to the wrong routes.
_ROUTES = {"kv": "use /v1/kv or /v1/records", "timeseries": "use /v1/ts/{ns}/{series}"}

#: Request headers that are part of an idempotent request's identity.
_FINGERPRINT_HEADERS = (b"content-type", b"if-match", b"if-none-match")

#: Reads a request's body, refusing (413) more than the given number of bytes.
BodyReader = Callable[[int], Awaitable[bytes]]


class Query(QueryParams):
    """A request's query parameters: ``get`` refuses (400) a parameter given more than once.

    A parameter that may repeat (``keys``) is read with ``getlist``.
    """

    def get(self, key: Any, default: Any = None) -> Any:
        values = self.getlist(key)
        if len(values) > 1:
            raise HTTPProblem(
                400, "INVALID_ARGUMENT", f"query parameter {key!r} is given {len(values)} times; give it once"
            )
        return values[0] if values else default


class Caller(Protocol):
    """What an audit event names of the caller (a ``prism.model.Principal``, or another with these fields)."""

    @property
    def subject(self) -> str: ...

    @property
    def kind(self) -> str: ...

    @property
    def tenant(self) -> str | None: ...


async def _no_body(limit: int) -> bytes:
    return b""


class Call:
    """One data request on its way through the pipeline: what was asked, by whom, and what happened.

    The transport fills in the request (``method``, ``path``, ``params``, ``headers`` as
    lower-case byte pairs, ``query_string``, ``request_id``, ``peer_cert`` and a body
    reader); the pipeline adds the caller, the namespace and the body; handlers add
    what the audit event names (``key``, ``key_count``).
    """

    __slots__ = (
        "_query",
        "audit_values",
        "body",
        "error_code",
        "gateway",
        "headers",
        "key",
        "key_count",
        "kv",
        "method",
        "ns",
        "params",
        "path",
        "peer_cert",
        "principal",
        "query_string",
        "read_body",
        "request_id",
    )

    principal: Principal
    ns: ServedNamespace
    kv: Namespace

    def __init__(
        self,
        gateway: Gateway,
        method: str,
        path: str,
        params: dict[str, str],
        headers: list[tuple[bytes, bytes]],
        query_string: bytes = b"",
        *,
        request_id: str | None = None,
        peer_cert: Mapping[str, Any] | None = None,
        read_body: BodyReader = _no_body,
    ) -> None:
        self.gateway = gateway
        self.method = method
        self.path = path
        self.params = params
        self.headers = headers
        self.query_string = query_string
        self.request_id = request_id
        self.peer_cert = peer_cert
        self.read_body = read_body
        self.body = b""
        self.key: str | None = None
        self.key_count: int | None = None
        self.audit_values: dict[str, Any] | None = None
        self.error_code: str | None = None
        self._query: Query | None = None

    def header(self, name: bytes) -> str | None:
        """The first value of request header ``name`` (lower case), or None."""
        for key, value in self.headers:
            if key == name:
                return value.decode("latin-1")
        return None

    @property
    def query(self) -> Query:
        """The query parameters (parsed on first use)."""
        if self._query is None:
            self._query = Query(self.query_string)
        return self._query

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


Handler = Callable[[Call], Awaitable[Reply]]


@dataclass(frozen=True, slots=True)
class DataRoute:
    """One data route: where it is, what it runs, and which steps of the pipeline it needs.

    ``path`` is a template whose first parameter is ``{ns}`` (the namespace), optionally
    followed by a literal tail or one ``{name:path}`` parameter that takes the rest of
    the path (slashes and line breaks included). A GET route answers HEAD too.
    ``body_limit`` gives the most bytes of body accepted in a namespace; None means the
    route reads no body at all. ``idempotent`` routes honour ``Idempotency-Key``;
    ``reveals`` marks routes that show stored values (their audit events say whether
    PII was shown in clear or masked).
    """

    method: str
    path: str
    handler: Handler
    op: str
    action: Action
    body_limit: Callable[[ServedNamespace], int] | None = None
    idempotent: bool = False
    reveals: bool = False
    name: str | None = None
    #: The kind of namespace the route serves (``kv``, ``timeseries``, or ``any``); the others answer 404.
    kind: str = "kv"
    #: Accept the credential as ``?token=`` (event streams, for clients that cannot set headers).
    query_token: bool = False

    @property
    def writes(self) -> bool:
        """True for routes that change data (a durable audit event when failing closed)."""
        return self.action == "write"


def wrong_kind(name: str, kind: str) -> HTTPProblem:
    """The 404 of a request for a namespace of another kind than its route serves."""
    return HTTPProblem(
        404, "NAMESPACE_NOT_FOUND", f"namespace {name!r} is a {kind} namespace: {_ROUTES[kind]}"
    )


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


class Pipeline:
    """The steps of a data request, run by :meth:`run` for every route and transport."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        server = gateway.config.server
        self.timeout = server.request_timeout
        self.body_timeout = server.body_timeout
        self.retry_after = server.retry_after

    async def run(self, route: DataRoute, call: Call) -> Reply:
        """The reply to ``call`` on ``route``; expected failures become problem replies."""
        gateway = self.gateway
        audit = gateway.audit
        started = time.perf_counter()
        principal: Principal | None = None
        served: ServedNamespace | None = None
        audited = False
        reply: Reply | None = None
        name = call.params["ns"]
        found = gateway.namespaces.get(name)
        try:
            if audit.enabled and (found is None or found.config.audit):
                # Reserved before anything is checked, so refused attempts (401, 403, 404) are audited.
                if audit.fail_closed:
                    audit.admit()
                audited = True
            principal = call.principal = gateway.authenticator.authenticate_request(
                call.headers,
                query_token(call.query_string),
                query_token_allowed=route.query_token,
                peer_cert=call.peer_cert,
            )
            if found is None:
                raise HTTPProblem(404, "NAMESPACE_NOT_FOUND", f"there is no namespace {name!r}")
            served = call.ns = found
            if route.kind != "any" and served.kind != route.kind:
                raise wrong_kind(name, served.kind)
            authorize(principal, served.config, route.action)
            if route.body_limit is not None:
                # Read before a concurrency slot is taken, under its own timeout: a slow client
                # holds its own connection, never a slot of the namespace.
                call.body = await self._read_body(call, route.body_limit(served))
            limiter = served.limiter
            # Admission is skipped where the namespace sets no limit (the limiter would do nothing).
            limited = limiter.active
            if limited:
                await limiter.enter(route.action)
            try:
                if name not in gateway.namespaces:
                    # Deleted while the body was read or admission waited: a delete waits out
                    # only the requests already running (each within request_timeout).
                    raise HTTPProblem(404, "NAMESPACE_NOT_FOUND", f"there is no namespace {name!r}")
                call.kv = served.handle(principal.tenant)
                if served.record_tenant is not None and route.writes:
                    tenant = principal.tenant
                    if tenant is not None and tenant not in served.recorded_tenants:
                        # A tenant's first write here: recorded before it is applied, or refused.
                        await served.record_tenant(tenant)
                        served.recorded_tenants.add(tenant)
                idem_key = call.header(b"idempotency-key") if route.idempotent else None
                if idem_key is not None and gateway.idempotency is not None:
                    async with RequestDeadline(self.timeout):
                        reply = await self._idempotent(route, call, idem_key)
                elif served.inline:
                    # Nothing in an inline backend waits on I/O, so there is nothing to time out.
                    reply = await route.handler(call)
                else:
                    ran = time.perf_counter()
                    async with RequestDeadline(self.timeout):
                        reply = await route.handler(call)
                    if reply.status < 500:
                        # The store's measured latency, which signals derive deadlines and hedging from.
                        gateway.latencies.observe(served.store_name, time.perf_counter() - ran)
            finally:
                if limited:
                    await limiter.__aexit__(None, None, None)
        except Exception as exc:
            problem = problem_for(exc, self.timeout, self.retry_after, call.request_id)
            call.error_code = problem.code
            reply = problem.reply(call.request_id)
        finally:
            if audited and reply is None:
                # Cancelled (the client went away): nothing runs after this block.
                audit.record(self._event(route, call, principal, served, 499, "cancelled", started))
        if audited:
            status = reply.status
            outcome = "ok" if status < 400 else (call.error_code or f"http_{status}")
            event = self._event(route, call, principal, served, status, outcome, started)
            if route.writes and audit.fail_closed and status < 400:
                reply = await self._record_durable(call, event, reply)
            else:
                audit.record(event)
        return reply

    async def _read_body(self, call: Call, limit: int) -> bytes:
        """The body, refusing (413) more than ``limit`` bytes and (408) one that is too slow."""
        within = self.body_timeout
        try:
            async with asyncio.timeout(within):
                body = await call.read_body(limit)
        except TimeoutError:
            raise HTTPProblem(
                408,
                "BODY_TIMEOUT",
                f"the request body did not arrive within {within:g} s",
                headers={"Connection": "close"},
            ) from None
        if len(body) > limit:
            # A transport that has the whole message already (no streaming) leaves the check here.
            raise HTTPProblem(413, "BODY_TOO_LARGE", f"the body is over the limit of {limit} bytes")
        return body

    async def _idempotent(self, route: DataRoute, call: Call, key: str) -> Reply:
        assert self.gateway.idempotency is not None
        digest = fingerprint(
            call.method,
            call.path,
            call.query_string.decode("latin-1"),
            [(h.decode("ascii"), call.header(h) or "") for h in _FINGERPRINT_HEADERS],
            call.body,
        )

        async def answer() -> Reply:
            # An expected failure is an answer like any other, kept for replays.
            try:
                return await route.handler(call)
            except (HTTPProblem, PrismError) as exc:
                problem = problem_for(exc, self.timeout, self.retry_after, call.request_id)
                call.error_code = problem.code
                return problem.reply(call.request_id)

        return await self.gateway.idempotency.run(call.principal, call.ns.name, key, digest, answer)

    async def _record_durable(self, call: Call, event: AuditEvent, reply: Reply) -> Reply:
        """Failing closed, a write is acknowledged only once its event is written."""
        try:
            await self.gateway.audit.record_durable(event)
        except AuditUnavailable as exc:
            problem = HTTPProblem(
                503, "AUDIT_UNAVAILABLE", str(exc), headers={"Retry-After": str(self.retry_after)}
            )
            return problem.reply(call.request_id)
        return reply

    @staticmethod
    def _event(
        route: DataRoute,
        call: Call,
        principal: Principal | None,
        served: ServedNamespace | None,
        status: int,
        outcome: str,
        started: float,
    ) -> AuditEvent:
        pii = None
        if served is not None and served.pii is not None and route.reveals and status < 400 and status != 304:
            # Only what was shown: a read refused (a value that could not be masked) showed nothing.
            pii = "clear" if PII_READ_ROLE in call.principal.roles else "masked"
        return audit_event(
            call.request_id,
            principal,
            call.params["ns"],
            route.op,
            status,
            outcome,
            started,
            key=call.key,
            key_count=call.key_count,
            pii=pii,
            values=call.audit_values,
        )


def audit_event(
    request_id: str | None,
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
        request_id=request_id,
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
        # Microseconds rounded by int(), which costs a fraction of round(x, 3) on the hot path.
        latency_ms=int((time.perf_counter() - started) * 1_000_000 + 0.5) / 1000,
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
        event = audit_event(
            scope.get("prism.request_id"), principal, None, operation, status, outcome, started
        )
        if write and audit.fail_closed and status < 400:
            await audit.record_durable(event)
        else:
            audit.record(event)
