"""Namespaces, health, readiness, metrics and the API description.

``/healthz``, ``/readyz``, ``/metrics``, ``/openapi.json`` and ``/docs`` need no
credentials: they reveal no data, and the API description names only the namespaces
the caller's credentials may see. The namespace routes show only what the caller
may see (a namespace's store, access lists and PII fields only to its admins), and
never a store URL or any secret; each of their requests is audited.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import msgspec
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Route

from prism.errors import PrismError
from prism.gateway.audit import AuditUnavailable
from prism.gateway.auth import AuthError, Principal
from prism.gateway.openapi import ApiDescription
from prism.gateway.pipeline import DataRoute, audit_event
from prism.gateway.policy import can_see, may
from prism.gateway.problem import HTTPProblem, problem_for
from prism.gateway.runtime import Gateway, ServedNamespace
from prism.gateway.wire import (
    JSON,
    NamespaceAccess,
    NamespaceDetail,
    NamespaceHealth,
    NamespaceLimits,
    NamespaceList,
    NamespacePii,
    NamespaceSummary,
)

__all__ = ["admin_routes", "audited_call"]


def _json(payload: Any, status: int = 200) -> Response:
    return Response(JSON.encode(payload), status, media_type="application/json")


def admin_routes(gateway: Gateway, data_routes: Sequence[DataRoute] = ()) -> list[BaseRoute]:
    """Routes for namespaces and operations; the API description names ``data_routes`` too."""
    config = gateway.config
    api = ApiDescription(config)

    async def audited(
        request: Request, op: str, namespace: str | None, answer: Callable[[Principal], Awaitable[Response]]
    ) -> Response:
        return await audited_call(gateway, request, op, namespace, answer)

    async def list_namespaces(request: Request) -> Response:
        async def answer(principal: Principal) -> Response:
            visible = []
            for served in gateway.namespaces.values():
                if can_see(principal, served.config):
                    actions: list[Any] = [
                        a for a in ("read", "write", "admin") if may(principal, served.config, a)
                    ]
                    visible.append(NamespaceSummary(served.name, served.tenant_scoped, actions))
            return _json(NamespaceList(visible))

        return await audited(request, "namespaces_list", None, answer)

    async def get_namespace(request: Request) -> Response:
        name = request.path_params["ns"]

        async def answer(principal: Principal) -> Response:
            served = gateway.namespaces.get(name)
            if served is None:
                raise HTTPProblem(404, "NAMESPACE_NOT_FOUND", f"there is no namespace {name!r}")
            request.scope["prism.namespace"] = name
            if not can_see(principal, served.config):
                raise AuthError(403, "FORBIDDEN", f"{principal.subject!r} may not see namespace {name!r}")
            return _json(await _detail(served, principal))

        return await audited(request, "namespace_get", name, answer)

    async def _detail(served: ServedNamespace, principal: Principal) -> NamespaceDetail:
        """What the caller may know of a namespace: its settings only for its admins."""
        ns = served.config
        try:
            async with asyncio.timeout(config.server.request_timeout):
                health = await served.store.health()
        except TimeoutError:
            health = {"status": "DOWN", "details": {"error": "the health check timed out"}}
        limiter = served.limiter
        actions: list[Any] = [a for a in ("read", "write", "admin") if may(principal, ns, a)]
        detail = NamespaceDetail(
            ns.name,
            ns.tenant_scoped,
            served.max_value_bytes,
            ns.default_ttl,
            NamespaceLimits(
                limiter.rate,
                limiter.burst if limiter.rate else None,
                limiter.concurrency,
                limiter.read_rate,
                limiter.read_burst,
                limiter.write_rate,
                limiter.write_burst,
            ),
            actions,
            NamespaceHealth(health.get("status", "DOWN")),
        )
        if "admin" in actions:
            # Who may do what, which fields are personal data and where they live: for admins only.
            detail.store = served.store_name
            detail.backend = served.store.backend.name
            detail.access = NamespaceAccess(ns.access.read, ns.access.write, ns.access.admin)
            detail.pii = None if ns.pii is None else NamespacePii(ns.pii.fields, ns.pii.encrypt)
            detail.audit = ns.audit
            detail.capabilities = served.store.capabilities.as_dict()
            if ns.needs is not None:
                detail.needs = msgspec.to_builtins(ns.needs)
            detail.cache = served.cache_stats()
        return detail

    async def healthz(request: Request) -> Response:
        return _json({"status": "ok"})

    async def readyz(request: Request) -> Response:
        ready, details = await gateway.readiness()
        stores = {name: {"status": h.get("status", "DOWN")} for name, h in details["stores"].items()}
        for name, health in details["stores"].items():
            error = health.get("details", {}).get("error")
            if health.get("status") != "UP" and error:
                stores[name]["error"] = str(error)
        body = {"status": "ready" if ready else "unready", "stores": stores, "audit": details["audit"]}
        headers = None if ready else {"Retry-After": str(config.server.retry_after)}
        return Response(
            JSON.encode(body), 200 if ready else 503, headers=headers, media_type="application/json"
        )

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(REGISTRY), 200, media_type=CONTENT_TYPE_LATEST)

    def visible_names(request: Request) -> list[str]:
        """The namespaces the API description may name for this caller: none without credentials."""
        if not config.auth.enabled:
            return list(gateway.namespaces)
        try:
            principal = gateway.authenticator.authenticate_scope(request.scope)
        except AuthError:
            return []
        return [name for name, served in gateway.namespaces.items() if can_see(principal, served.config)]

    async def openapi_json(request: Request) -> Response:
        doc = api.pages([*data_routes, *request.app.routes], visible_names(request))[0]
        return Response(doc, 200, media_type="application/json")

    async def docs_page(request: Request) -> Response:
        return HTMLResponse(api.pages([*data_routes, *request.app.routes], visible_names(request))[1])

    return [
        Route("/v1/namespaces", list_namespaces, methods=["GET"]),
        Route("/v1/namespaces/{ns}", get_namespace, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/openapi.json", openapi_json, methods=["GET"]),
        Route("/docs", docs_page, methods=["GET"]),
    ]


async def audited_call(
    gateway: Gateway,
    request: Request,
    op: str,
    namespace: str | None,
    answer: Callable[[Principal], Awaitable[Response]],
) -> Response:
    """``answer``'s response for the authenticated caller, with the request's audit event.

    The audit slot is reserved before the caller is authenticated, so refused attempts
    are audited too; an expected failure (``HTTPProblem``, ``AuthError``, any ``PrismError``)
    becomes its problem response.
    """
    server = gateway.config.server
    request_id = request.scope.get("prism.request_id")
    audit = gateway.audit
    started = time.perf_counter()
    principal: Principal | None = None
    response: Response | None = None
    outcome = "cancelled"
    try:
        if audit.enabled:
            audit.admit()
    except AuditUnavailable as exc:
        headers = {"Retry-After": str(server.retry_after)}
        return HTTPProblem(503, "AUDIT_UNAVAILABLE", str(exc), headers=headers).response(request_id)
    try:
        try:
            principal = gateway.authenticator.authenticate_scope(request.scope)
            request.scope["prism.principal"] = principal.subject
            response = await answer(principal)
            outcome = "ok"
        except (HTTPProblem, PrismError) as exc:
            problem = problem_for(exc, server.request_timeout, server.retry_after, request_id)
            outcome = problem.code
            response = problem.response(request_id)
        return response
    finally:
        if audit.enabled:
            status = 499 if response is None else response.status_code
            values = request.scope.get("prism.audit_values")
            audit.record(
                audit_event(request_id, principal, namespace, op, status, outcome, started, values=values)
            )
