"""``prism.v1.NamespaceAdmin``: runtime namespaces over gRPC, answered by the gateway's RuntimeNamespaces.

Each call is authenticated like a KeyValue call, audited like the HTTP namespace routes
(a change with the definition before and after), and checked, planned and applied by
the same :class:`~prism.gateway.runtime_namespaces.RuntimeNamespaces` as
``PUT/DELETE /v1/namespaces/{ns}``: the two transports differ only in their messages.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import msgspec
from grpc import aio

from prism.errors import PrismError
from prism.gateway.audit import AuditUnavailable
from prism.gateway.auth import AuthError, Principal
from prism.gateway.pipeline import audit_event
from prism.gateway.policy import can_see, may
from prism.gateway.problem import HTTPProblem, problem_for
from prism.gateway.runtime import Gateway
from prism.gateway.runtime_namespaces import NamespaceBody, NamespacePlacement, PlanRefused, RuntimeNamespaces
from prism.grpc._gen.prism.v1 import namespaces_pb2 as pb

__all__ = ["SERVICE", "namespace_admin_handler"]

SERVICE = "prism.v1.NamespaceAdmin"

#: The gRPC status of each HTTP status these calls answer (as for KeyValue calls).
_STATUS = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    409: grpc.StatusCode.ABORTED,
    413: grpc.StatusCode.INVALID_ARGUMENT,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    500: grpc.StatusCode.INTERNAL,
    501: grpc.StatusCode.UNIMPLEMENTED,
    503: grpc.StatusCode.UNAVAILABLE,
}

_TIMESERIES = ("slice_seconds", "retention_seconds", "accept_window_seconds", "future_skew_seconds")
_OPTIONAL_NEEDS = ("read_rps", "write_rps", "item_bytes_p99", "total_bytes", "ttl_seconds", "latency_p99_ms")


def body_of(spec: Any) -> NamespaceBody:
    """The NamespaceBody a ``NamespaceSpec`` message stands for; 400 naming the field it breaks."""
    n = spec.needs
    needs: dict[str, Any] = {
        "access_pattern": n.access_pattern or "kv",
        "consistency": n.consistency or "eventual",
        "transactions": n.transactions,
        "durability": n.durability or None,
    }
    for field in _OPTIONAL_NEEDS:
        if n.HasField(field):
            needs[field] = getattr(n, field)
    body: dict[str, Any] = {"needs": needs, "tenant_scoped": spec.tenant_scoped}
    if spec.HasField("access"):
        body["access"] = {k: list(getattr(spec.access, k)) for k in ("read", "write", "admin")}
    if spec.HasField("pii"):
        body["pii"] = {"fields": list(spec.pii.fields), "encrypt": spec.pii.encrypt}
    for field in ("max_value_bytes", "default_ttl", "audit", "store", "backend"):
        if spec.HasField(field):
            body[field] = getattr(spec, field)
    if spec.HasField("timeseries"):
        ts = spec.timeseries
        body["timeseries"] = {field: getattr(ts, field) for field in _TIMESERIES if ts.HasField(field)}
    try:
        return msgspec.convert(body, NamespaceBody)
    except msgspec.ValidationError as exc:
        raise HTTPProblem(400, "INVALID_BODY", str(exc).replace(" - at `$", " at `$")) from None


def _placement(answer: NamespacePlacement) -> Any:
    out = pb.NamespacePlacement(
        namespace=answer.namespace,
        store=answer.store or "",
        created=answer.created,
        dry_run=answer.dry_run,
    )
    limits = answer.limits
    if limits is not None:
        if limits.read_rate is not None and limits.read_burst is not None:
            out.read_rate, out.read_burst = limits.read_rate, limits.read_burst
        if limits.write_rate is not None and limits.write_burst is not None:
            out.write_rate, out.write_burst = limits.write_rate, limits.write_burst
    for store in answer.refused:
        entry = out.refused.add(store=store.store)
        for fail in store.fails:
            entry.fails.add(need=fail.need, wanted=json.dumps(fail.wanted), has=json.dumps(fail.has))
    return out


class NamespaceAdmin:
    """The methods of ``prism.v1.NamespaceAdmin`` for one gateway."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def _runtime(self) -> RuntimeNamespaces:
        found = self.gateway.runtime_namespaces
        if found is None:
            raise HTTPProblem(
                501,
                "RUNTIME_NAMESPACES_OFF",
                "runtime namespaces are turned off (control.namespaces.enabled)",
            )
        return found

    async def call(
        self,
        context: aio.ServicerContext,
        op: str,
        namespace: str | None,
        answer: Callable[[Principal, dict[str, Any]], Awaitable[Any]],
    ) -> Any:
        """``answer``'s message for the authenticated caller, audited; a failure aborts the call."""
        gateway = self.gateway
        server = gateway.config.server
        audit = gateway.audit
        started = time.perf_counter()
        metadata = context.invocation_metadata() or ()
        headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in metadata if isinstance(v, str)]
        principal: Principal | None = None
        values: dict[str, Any] = {}
        status, outcome = 499, "cancelled"
        problem: HTTPProblem | None = None
        try:
            if audit.enabled:
                audit.admit()
        except AuditUnavailable as exc:
            await self._abort(context, HTTPProblem(503, "AUDIT_UNAVAILABLE", str(exc)))
        try:
            try:
                principal = gateway.authenticator.authenticate_request(headers)
                message = await answer(principal, values)
                status, outcome = 200, "ok"
                return message
            except (HTTPProblem, PrismError, TimeoutError) as exc:
                problem = problem_for(exc, server.request_timeout, server.retry_after)
                status, outcome = problem.status, problem.code
        finally:
            if audit.enabled:
                audit.record(
                    audit_event(
                        None, principal, namespace, op, status, outcome, started, values=values or None
                    )
                )
        assert problem is not None
        await self._abort(context, problem)

    async def _abort(self, context: aio.ServicerContext, problem: HTTPProblem) -> None:
        trailers: list[tuple[str, str | bytes]] = [("prism-error-code", problem.code)]
        if isinstance(problem, PlanRefused):
            trailers.append(("prism-refused-stores", json.dumps(problem.stores)))
        if problem.status in (429, 503):
            trailers.append(("retry-after", str(self.gateway.config.server.retry_after)))
        code = _STATUS.get(problem.status, grpc.StatusCode.UNKNOWN)
        await context.abort(code, problem.detail, tuple(trailers))

    async def put(self, request: Any, context: aio.ServicerContext, *, dry_run: bool) -> Any:
        name = request.namespace

        async def answer(principal: Principal, values: dict[str, Any]) -> Any:
            service = self._runtime()
            given = body_of(request.spec)
            ns = service.check(name, given, principal)
            _, placement, before, after = await service.put(ns, dry_run=dry_run, backend=given.backend)
            if not dry_run:
                values.update(before=before, after=after)
            return _placement(placement)

        return await self.call(context, "namespace_plan" if dry_run else "namespace_put", name, answer)

    async def get(self, request: Any, context: aio.ServicerContext) -> Any:
        name = request.namespace

        async def answer(principal: Principal, values: dict[str, Any]) -> Any:
            served = self.gateway.namespaces.get(name)
            if served is None:
                raise HTTPProblem(404, "NAMESPACE_NOT_FOUND", f"there is no namespace {name!r}")
            if not can_see(principal, served.config):
                raise AuthError(403, "FORBIDDEN", f"{principal.subject!r} may not see namespace {name!r}")
            try:
                async with asyncio.timeout(self.gateway.config.server.request_timeout):
                    health = await served.store.health()
            except TimeoutError:
                health = {"status": "DOWN"}
            actions = [a for a in ("read", "write", "admin") if may(principal, served.config, a)]
            limiter = served.limiter
            out = pb.NamespaceInfo(
                namespace=name,
                tenant_scoped=served.tenant_scoped,
                max_value_bytes=served.max_value_bytes,
                actions=actions,
                health=str(health.get("status", "DOWN")),
            )
            if served.config.default_ttl is not None:
                out.default_ttl = served.config.default_ttl
            if limiter.rate is not None:
                out.rate = limiter.rate
                out.burst = int(limiter.burst)
            if limiter.read_rate is not None and limiter.read_burst is not None:
                out.read_rate, out.read_burst = limiter.read_rate, limiter.read_burst
            if limiter.write_rate is not None and limiter.write_burst is not None:
                out.write_rate, out.write_burst = limiter.write_rate, limiter.write_burst
            if "admin" in actions:
                out.store = served.store_name
                out.backend = served.store.backend.name
            return out

        return await self.call(context, "namespace_get", name, answer)

    async def list(self, request: Any, context: aio.ServicerContext) -> Any:
        async def answer(principal: Principal, values: dict[str, Any]) -> Any:
            out = pb.ListNamespacesResponse()
            for served in self.gateway.namespaces.values():
                if can_see(principal, served.config):
                    actions = [a for a in ("read", "write", "admin") if may(principal, served.config, a)]
                    out.namespaces.add(
                        namespace=served.name, tenant_scoped=served.tenant_scoped, actions=actions
                    )
            return out

        return await self.call(context, "namespaces_list", None, answer)

    async def delete(self, request: Any, context: aio.ServicerContext) -> Any:
        name = request.namespace

        async def answer(principal: Principal, values: dict[str, Any]) -> Any:
            deleted, before = await self._runtime().delete(name, principal, purge=request.purge)
            values.update(before=before, after=None)
            return pb.DeleteNamespaceResponse(namespace=name, purged_records=deleted.purged_records)

        return await self.call(context, "namespace_delete", name, answer)


def namespace_admin_handler(gateway: Gateway) -> grpc.GenericRpcHandler:
    """The generic handler serving ``prism.v1.NamespaceAdmin`` for ``gateway``."""
    service = NamespaceAdmin(gateway)

    def unary(fn: Callable[[Any, aio.ServicerContext], Awaitable[Any]], request_type: Any) -> Any:
        return grpc.unary_unary_rpc_method_handler(
            fn,
            request_deserializer=request_type.FromString,
            response_serializer=lambda message: message.SerializeToString(),
        )

    async def put(request: Any, context: aio.ServicerContext) -> Any:
        return await service.put(request, context, dry_run=False)

    async def plan(request: Any, context: aio.ServicerContext) -> Any:
        return await service.put(request, context, dry_run=True)

    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Put": unary(put, pb.PutNamespaceRequest),
            "Plan": unary(plan, pb.PutNamespaceRequest),
            "Get": unary(service.get, pb.GetNamespaceRequest),
            "List": unary(service.list, pb.ListNamespacesRequest),
            "Delete": unary(service.delete, pb.DeleteNamespaceRequest),
        },
    )
