"""``PUT`` and ``DELETE /v1/namespaces/{ns}``: namespaces created, changed and deleted at runtime.

Only principals with a role of ``auth.namespace_admin_roles`` may use them; naming the
store also needs a role of ``auth.store_admin_roles``. ``?dry_run=true`` answers the
planner's decision without applying it. Every request is audited through the same
call as the other namespace routes, a change with the definition before and after.
Listing and reading (``GET /v1/namespaces[/{ns}]``) serve runtime namespaces too.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from prism.gateway.auth import Principal
from prism.gateway.openapi import Operation, describe
from prism.gateway.pipeline import Query
from prism.gateway.problem import HTTPProblem
from prism.gateway.routes_admin import audited_call
from prism.gateway.runtime import Gateway
from prism.gateway.runtime_namespaces import (
    NamespaceBody,
    NamespaceDeleted,
    NamespacePlacement,
    RuntimeNamespaces,
)
from prism.gateway.wire import JSON, decode_body

__all__ = ["namespace_routes"]


def _flag(query: Query, name: str) -> bool:
    value = query.get(name, "false")
    if value not in ("true", "false"):
        raise HTTPProblem(
            400, "INVALID_ARGUMENT", f"query parameter {name!r} is true or false, not {value!r}"
        )
    return bool(value == "true")


def namespace_routes(gateway: Gateway) -> list[BaseRoute]:
    """The routes that create, change and delete runtime namespaces (none when they are turned off)."""
    max_body = gateway.config.server.max_body_bytes

    def runtime() -> RuntimeNamespaces:
        found = gateway.runtime_namespaces
        if found is None:
            raise HTTPProblem(
                501,
                "RUNTIME_NAMESPACES_OFF",
                "runtime namespaces are turned off (control.namespaces.enabled)",
            )
        return found

    async def put_namespace(request: Request) -> Response:
        name = request.path_params["ns"]

        async def answer(principal: Principal) -> Response:
            query = Query(request.scope["query_string"])
            dry_run = _flag(query, "dry_run")
            service = runtime()
            body = await _read(request, max_body)
            given = decode_body(body, NamespaceBody)
            ns = service.check(name, given, principal)
            timeout = gateway.config.server.request_timeout
            try:
                status, result, before, after = await service.put(ns, dry_run=dry_run, backend=given.backend)
            except TimeoutError:
                raise HTTPProblem(
                    503,
                    "TIMEOUT",
                    f"the namespace catalog did not answer within server.request_timeout ({timeout} s)",
                    headers={"Retry-After": str(gateway.config.server.retry_after)},
                ) from None
            if not dry_run:
                request.scope["prism.audit_values"] = {"before": before, "after": after}
            return Response(JSON.encode(result), status, media_type="application/json")

        return await audited_call(gateway, request, "namespace_put", name, answer)

    async def delete_namespace(request: Request) -> Response:
        name = request.path_params["ns"]

        async def answer(principal: Principal) -> Response:
            purge = _flag(Query(request.scope["query_string"]), "purge")
            try:
                result, before = await runtime().delete(name, principal, purge=purge)
            except TimeoutError:
                raise HTTPProblem(
                    503,
                    "TIMEOUT",
                    "the namespace catalog did not answer within server.request_timeout "
                    f"({gateway.config.server.request_timeout} s)",
                    headers={"Retry-After": str(gateway.config.server.retry_after)},
                ) from None
            request.scope["prism.audit_values"] = {"before": before, "after": None}
            return Response(JSON.encode(result), 200, media_type="application/json")

        return await audited_call(gateway, request, "namespace_delete", name, answer)

    errors = {
        400: "Invalid input (the field is named); nothing was changed.",
        401: "Missing or invalid credentials.",
        403: "The caller has no role of `auth.namespace_admin_roles` (or, naming a store, "
        "of `auth.store_admin_roles`).",
        501: "Runtime namespaces are turned off.",
        503: "The control store is unavailable.",
    }
    flag = {"type": "string", "enum": ["true", "false"], "default": "false"}
    return [
        describe(
            Route("/v1/namespaces/{ns}", put_namespace, methods=["PUT"]),
            put=Operation(
                "putNamespace",
                "Create or change a runtime namespace",
                "The planner places it on a store meeting every declared need with room left; "
                "`?dry_run=true` shows the decision without applying it. Declared rates become the "
                "namespace's rate limit. See docs/control-plane.md.",
                body=NamespaceBody,
                response=NamespacePlacement,
                more_statuses=(201,),
                response_description="Created (201) or changed (200), or with `dry_run` the decision.",
                params=[{"name": "dry_run", "in": "query", "required": False, "schema": flag}],
                errors={
                    **errors,
                    409: "Declared in the config file, being deleted, or a change of store or tenant scope.",
                    422: "No store meets every need: `stores` lists each store's failed needs.",
                },
            ),
        ),
        describe(
            Route("/v1/namespaces/{ns}", delete_namespace, methods=["DELETE"]),
            delete=Operation(
                "deleteNamespace",
                "Delete a runtime namespace",
                "Refused while it holds data unless `?purge=true`, which deletes the data too.",
                response=NamespaceDeleted,
                params=[{"name": "purge", "in": "query", "required": False, "schema": flag}],
                errors={
                    **errors,
                    404: "No such runtime namespace.",
                    409: "Declared in the config file, holding data, tenant-scoped, or being "
                    "deleted by another request.",
                },
            ),
        ),
    ]


async def _read(request: Request, limit: int) -> bytes:
    """The request body, refused (413) past ``limit`` bytes."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPProblem(413, "BODY_TOO_LARGE", f"the body is over {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
