"""``GET``/``HEAD /v1/kv/{ns}/{key}``: the hottest route, with the pipeline written out inline.

Reading one key is what most clients do most of the time, so this endpoint skips
the generic machinery (Starlette request and response objects, the handler
wrapper) and speaks ASGI directly, while taking exactly the same steps as every
other data route: authenticate, find the namespace, reserve an audit slot,
authorize, admit, read (under the request timeout unless the backend never waits),
reveal or mask PII, answer, and record the audit event.
"""

from __future__ import annotations

import time

from starlette.types import Receive, Scope, Send

from prism.gateway.auth import Principal
from prism.gateway.pii import aad_prefix
from prism.gateway.pipeline import RequestDeadline, access_event, problem_for, wrong_kind
from prism.gateway.policy import PII_READ_ROLE, authorize
from prism.gateway.problem import HTTPProblem, problem_response
from prism.gateway.runtime import Gateway, ServedNamespace
from prism.gateway.wire import expires_header, parse_etag_header
from prism.model import Item

__all__ = ["KeyReadEndpoint"]


_OCTET_STREAM = b"application/octet-stream"


class KeyReadEndpoint:
    """The ASGI endpoint of ``GET``/``HEAD /v1/kv/{ns}/{key}``."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.timeout = gateway.config.server.request_timeout
        self.client_certs = gateway.authenticator.uses_client_certs
        self.retry_after = gateway.config.server.retry_after

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        gateway = self.gateway
        started = time.perf_counter()
        api_key = authorization = if_none_match = None
        repeated = False
        for name, value in scope["headers"]:
            if name == b"x-api-key":
                repeated = repeated or api_key is not None
                api_key = value.decode("latin-1")
            elif name == b"authorization":
                repeated = repeated or authorization is not None
                authorization = value.decode("latin-1")
            elif name == b"if-none-match":
                if_none_match = value.decode("latin-1")
        params = scope["path_params"]
        key: str = params["key"]
        # Set when the observability middleware leaves the X-Request-ID header to this endpoint.
        id_header: bytes | None = scope.get("prism.request_id_header")
        principal: Principal | None = None
        served: ServedNamespace | None = None
        audited = False
        pii_mode: str | None = None
        # Only a cancellation (the client went away) leaves without setting these.
        status = 499
        outcome = "cancelled"
        ns_name: str = params["ns"]
        found = gateway.namespaces.get(ns_name)
        try:
            try:
                audit = gateway.audit
                if audit.enabled and (found is None or found.config.audit):
                    # Reserved before anything is checked, so refused attempts (401, 403, 404) are audited.
                    if audit.fail_closed:
                        audit.admit()
                    audited = True
                if repeated or self.client_certs or scope["query_string"]:
                    # A credential header sent twice, a client certificate that may be the
                    # credential, or a query string that may hold ?token=: the general path
                    # gives the one answer for those.
                    principal = gateway.authenticator.authenticate_scope(scope)
                else:
                    principal = gateway.authenticator.authenticate(api_key, authorization)
                scope["prism.principal"] = principal.subject
                if found is None:
                    raise HTTPProblem(404, "NAMESPACE_NOT_FOUND", f"there is no namespace {ns_name!r}")
                served = found
                scope["prism.namespace"] = ns_name
                if served.kind != "kv":
                    raise wrong_kind(ns_name, served.kind)
                authorize(principal, served.config, "read")
                async with served.limiter.admit():
                    kv = served.handle(principal.tenant)
                    if served.inline:
                        item = await kv.get(key)
                    else:
                        async with RequestDeadline(self.timeout):
                            item = await kv.get(key)
                if item is None:
                    raise HTTPProblem(404, "KEY_NOT_FOUND", "no live entry at this key")
                etag = f'"{item.etag}"'.encode("latin-1")
                headers = [(b"etag", etag)]
                if item.expires_at is not None:
                    headers.append((b"x-prism-expires-at", expires_header(item.expires_at).encode("ascii")))
                if if_none_match is not None and _matches(item, if_none_match):
                    status, body = 304, b""
                else:
                    body = item.value
                    if served.pii is not None:
                        clear = PII_READ_ROLE in principal.roles
                        tenant = principal.tenant if served.tenant_scoped else None
                        body = served.pii.reveal(body, aad_prefix(served.name, tenant, key), clear)
                        # Only once it holds: a value that could not be masked was not shown at all.
                        pii_mode = "clear" if clear else "masked"
                    content_type = _header_bytes(item.content_type) if item.content_type else _OCTET_STREAM
                    headers.append((b"content-type", content_type))
                    headers.append((b"content-length", str(len(body)).encode("ascii")))
                    status = 200
                    if scope["method"] == "HEAD":
                        body = b""
            except Exception as exc:
                problem = problem_for(exc, self.timeout, self.retry_after, scope.get("prism.request_id"))
                status, outcome = problem.status, problem.code
                scope["prism.status"] = status
                extra = dict(problem.headers)
                if id_header is not None:
                    extra["x-request-id"] = id_header.decode("ascii")
                await problem_response(
                    problem.status,
                    problem.code,
                    problem.detail,
                    headers=extra,
                    request_id=scope.get("prism.request_id"),
                )(scope, receive, send)
                return
            outcome = "ok"
            scope["prism.status"] = status
            if id_header is not None:
                headers.append((b"x-request-id", id_header))
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
        finally:
            if audited:
                gateway.audit.record(
                    access_event(
                        scope, principal, ns_name, "get", status, outcome, started, key=key, pii=pii_mode
                    )
                )


def _header_bytes(text: str) -> bytes:
    """A stored content type as header bytes (Latin-1; UTF-8 for text written around the gateway)."""
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        return text.encode("utf-8")


def _matches(item: Item, if_none_match: str) -> bool:
    tags = parse_etag_header(if_none_match, allow_star=True, many=True)
    return "*" in tags or item.etag in tags
