"""The Prism seed's KeyValue interfaces, served over the gateway pipeline.

``prism.interfaces.keyvalue.KeyValueBasicInterface`` (Set, Get, Delete, Exists),
``KeyValueBatchInterface`` (BatchSet, BatchGet, BatchDelete) and
``KeyValueTTLInterface`` (Expire, GetTTL, Persist) address flat keys of one namespace:
the ``x-prism-namespace`` metadata of the call, else ``compat.namespace``. The
namespace's authentication, policy, limits, tenancy, PII and audit rules apply as
for any call. The protocol's conventions are kept where they differ from Prism's:

* failures of the request itself are answered in-band by the single-key methods (``success = false`` and
  ``error``; ``found = false`` for a Get), while failures of the caller or the
  service are gRPC statuses: UNAUTHENTICATED, PERMISSION_DENIED, RESOURCE_EXHAUSTED,
  UNAVAILABLE and INTERNAL (see :data:`STATUS_ONLY`). The batch responses have no
  error field, so a refused batch is a gRPC status; one key's failure is its result's;
* ``GetTTL`` answers -1 for a key that never expires and -2 for no live key;
  otherwise the whole seconds left, rounded up;
* ``Expire`` with 0 seconds deletes the key; on a missing key it answers
  ``success = false`` and ``key_existed = false``; ``Persist`` on a key without
  expiry answers ``success = true`` and ``expiration_removed = false``;
* ``tags`` of a Set are accepted and not stored.

``prism.interfaces.LifecycleInterface`` answers HealthCheck (the stores' readiness)
and Initialize (the interfaces served, with their proto files' SHA-256); Start,
Drain and Stop change nothing, since ``prism serve`` owns the process's lifecycle.
"""

from __future__ import annotations

import hashlib
import math
import time
from typing import Any

from prism.errors import PrismError
from prism.gateway.pipeline import Call, DataRoute, Handler
from prism.gateway.policy import Action
from prism.gateway.problem import HTTPProblem
from prism.gateway.reply import Reply
from prism.gateway.routes_kv import json_limit
from prism.gateway.runtime import Gateway
from prism.grpc._gen.prism.interfaces import lifecycle_pb2 as life
from prism.grpc._gen.prism.interfaces.keyvalue import keyvalue_basic_pb2 as basic
from prism.grpc._gen.prism.interfaces.keyvalue import keyvalue_batch_pb2 as batch
from prism.grpc._gen.prism.interfaces.keyvalue import keyvalue_ttl_pb2 as ttl
from prism.grpc.codegen import PROTO_ROOT
from prism.grpc.keyvalue import GrpcMethod, message_of
from prism.model import Delete, Put, WriteResult

__all__ = [
    "BASIC",
    "BATCH",
    "LIFECYCLE",
    "STATUS_ONLY",
    "TTL",
    "compat_methods",
    "interface_declarations",
]

BASIC = "prism.interfaces.keyvalue.KeyValueBasicInterface"
BATCH = "prism.interfaces.keyvalue.KeyValueBatchInterface"
TTL = "prism.interfaces.keyvalue.KeyValueTTLInterface"
LIFECYCLE = "prism.interfaces.LifecycleInterface"

#: HTTP statuses answered as gRPC statuses rather than in-band errors: the caller's
#: credentials and rights, and the service's capacity and health.
STATUS_ONLY = frozenset({401, 403, 429, 500, 503})

#: How many times Expire and Persist re-read a key that changed under them.
_REWRITE_ATTEMPTS = 5

_SERVED = (
    ("KeyValueBasicInterface", "prism/interfaces/keyvalue/keyvalue_basic.proto", basic),
    ("KeyValueBatchInterface", "prism/interfaces/keyvalue/keyvalue_batch.proto", batch),
    ("KeyValueTTLInterface", "prism/interfaces/keyvalue/keyvalue_ttl.proto", ttl),
    ("LifecycleInterface", "prism/interfaces/lifecycle.proto", life),
)


def _error_of(result: WriteResult) -> str:
    return "" if result.error is None else str(result.error)


async def set_key(call: Call) -> Reply:
    request = message_of(call)
    key = call.key = request.key
    result = await call.kv.put_result(Put(key, call.protect(key, request.value)))
    if result.error is not None:
        raise result.error
    return Reply(200, basic.SetResponse(success=True).SerializeToString())


async def get_key(call: Call) -> Reply:
    key = call.key = message_of(call).key
    item = await call.kv.get(key)
    if item is None:
        return Reply(200, basic.GetResponse(found=False).SerializeToString())
    return Reply(200, basic.GetResponse(found=True, value=call.reveal(key, item.value)).SerializeToString())


async def delete_key(call: Call) -> Reply:
    key = call.key = message_of(call).key
    result = await call.kv.delete_result(Delete(key))
    if result.error is not None:
        raise result.error
    return Reply(200, basic.DeleteResponse(success=True).SerializeToString())


async def exists(call: Call) -> Reply:
    key = call.key = message_of(call).key
    found = await call.kv.get(key) is not None
    return Reply(200, basic.ExistsResponse(exists=found).SerializeToString())


async def batch_set(call: Call) -> Reply:
    requests = message_of(call).requests
    call.key_count = len(requests)
    results = await call.kv.put_many([Put(r.key, call.protect(r.key, r.value)) for r in requests])
    out = batch.BatchSetResponse(all_success=all(r.ok for r in results))
    for result in results:
        out.results.add(success=result.ok, error=_error_of(result))
    return Reply(200, out.SerializeToString())


async def batch_get(call: Call) -> Reply:
    keys = list(message_of(call).keys)
    call.key_count = len(keys)
    found = await call.kv.get_many(keys)
    out = batch.BatchGetResponse()
    for key, item in zip(keys, found, strict=True):
        if item is None:
            out.results.add(found=False)
        else:
            out.results.add(found=True, value=call.reveal(key, item.value))
            out.found_count += 1
    return Reply(200, out.SerializeToString())


async def batch_delete(call: Call) -> Reply:
    keys = list(message_of(call).keys)
    call.key_count = len(keys)
    results = await call.kv.delete_many(keys)
    out = batch.BatchDeleteResponse(all_success=all(r.ok for r in results))
    for result in results:
        out.results.add(success=result.ok, error=_error_of(result))
    return Reply(200, out.SerializeToString())


async def _rewrite(call: Call, key: str, seconds: float | None) -> tuple[bool, bool]:
    """Write a live key's stored value again with a new expiry: (existed, had an expiry)."""
    for _ in range(_REWRITE_ATTEMPTS):
        item = await call.kv.get(key)
        if item is None:
            return False, False
        had_expiry = item.expires_at is not None
        if seconds is None and not had_expiry:
            return True, False
        if seconds == 0:
            result = await call.kv.delete_result(Delete(key, item.etag))
        else:
            # The stored bytes as they are: PII fields stay as the namespace protected them.
            put = Put(key, item.value, seconds, item.content_type, item.etag)
            result = await call.kv.put_result(put)
        if result.ok:
            return True, had_expiry
        if result.error is not None and result.error.code != "PRECONDITION_FAILED":
            raise result.error
    raise HTTPProblem(409, "CONFLICT", f"{key!r} kept changing; retry")


async def expire(call: Call) -> Reply:
    request = message_of(call)
    key = call.key = request.key
    if request.ttl_seconds < 0:
        raise HTTPProblem(400, "INVALID_TTL", "ttl_seconds must be 0 (expire now) or more")
    existed, _ = await _rewrite(call, key, float(request.ttl_seconds))
    out = ttl.ExpireResponse(success=existed, key_existed=existed)
    if not existed:
        out.error = "no live entry at this key"
    return Reply(200, out.SerializeToString())


async def get_ttl(call: Call) -> Reply:
    key = call.key = message_of(call).key
    item = await call.kv.get(key)
    if item is None:
        seconds = -2
    elif item.expires_at is None:
        seconds = -1
    else:
        seconds = max(0, math.ceil(item.expires_at.timestamp() - time.time()))
    return Reply(200, ttl.GetTTLResponse(ttl_seconds=seconds).SerializeToString())


async def persist(call: Call) -> Reply:
    key = call.key = message_of(call).key
    existed, removed = await _rewrite(call, key, None)
    out = ttl.PersistResponse(success=existed, expiration_removed=removed)
    if not existed:
        out.error = "no live entry at this key"
    return Reply(200, out.SerializeToString())


def _in_band(response: Any, **fields: Any) -> Any:
    def answer(problem: HTTPProblem) -> bytes:
        return bytes(response(error=problem.detail, **fields).SerializeToString())

    return answer


def compat_methods(gateway: Gateway) -> list[GrpcMethod]:
    """The methods of the seed's KeyValue interfaces, bound to ``gateway``."""
    body = json_limit(gateway)

    def method(
        service: str,
        name: str,
        request_type: Any,
        response_type: Any,
        handler: Handler,
        op: str,
        action: Action,
        *,
        reveals: bool = False,
        failed: dict[str, Any] | None = None,
    ) -> GrpcMethod:
        writes = action == "write"
        route = DataRoute(
            "POST",
            f"/{service}/{name}",
            handler,
            op,
            action,
            body if writes else None,
            idempotent=writes,
            reveals=reveals,
            name=f"{service}/{name}",
        )
        # The batch responses have no error field: a refused batch is a gRPC status.
        answer = _in_band(response_type, **(failed or {})) if service != BATCH else None
        return GrpcMethod(f"/{service}/{name}", request_type, route, answer)

    no = {"success": False}
    return [
        method(BASIC, "Set", basic.SetRequest, basic.SetResponse, set_key, "put", "write", failed=no),
        method(BASIC, "Get", basic.GetRequest, basic.GetResponse, get_key, "get", "read", reveals=True),
        method(
            BASIC,
            "Delete",
            basic.DeleteRequest,
            basic.DeleteResponse,
            delete_key,
            "delete",
            "write",
            failed=no,
        ),
        method(BASIC, "Exists", basic.ExistsRequest, basic.ExistsResponse, exists, "exists", "read"),
        method(
            BATCH, "BatchSet", batch.BatchSetRequest, batch.BatchSetResponse, batch_set, "bulk_put", "write"
        ),
        method(
            BATCH,
            "BatchGet",
            batch.BatchGetRequest,
            batch.BatchGetResponse,
            batch_get,
            "bulk_get",
            "read",
            reveals=True,
        ),
        method(
            BATCH,
            "BatchDelete",
            batch.BatchDeleteRequest,
            batch.BatchDeleteResponse,
            batch_delete,
            "bulk_delete",
            "write",
        ),
        method(TTL, "Expire", ttl.ExpireRequest, ttl.ExpireResponse, expire, "expire", "write", failed=no),
        method(TTL, "GetTTL", ttl.GetTTLRequest, ttl.GetTTLResponse, get_ttl, "get_ttl", "read"),
        method(
            TTL, "Persist", ttl.PersistRequest, ttl.PersistResponse, persist, "persist", "write", failed=no
        ),
    ]


def interface_declarations() -> list[Any]:
    """What Initialize declares: each served interface, its proto file and that file's SHA-256."""
    out = []
    for name, proto_file, module in _SERVED:
        path = PROTO_ROOT / proto_file
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""
        out.append(
            life.InterfaceDeclaration(
                name=name,
                proto_file=proto_file,
                version="v1",
                proto_hash=digest,
                metadata={"package": module.DESCRIPTOR.package},
            )
        )
    return out


class Lifecycle:
    """``prism.interfaces.LifecycleInterface`` for one gateway (no namespace, no credentials needed)."""

    def __init__(self, gateway: Gateway, version: str) -> None:
        self.gateway = gateway
        self.version = version

    async def initialize(self, request: Any) -> Any:
        metadata = life.PatternMetadata(name="prism", version=self.version)
        metadata.interfaces.extend(interface_declarations())
        namespace = self.gateway.config.compat.namespace
        if namespace is not None:
            metadata.extra["namespace"] = namespace
        return life.InitializeResponse(success=True, metadata=metadata)

    async def start(self, request: Any) -> Any:
        return life.StartResponse(success=True)

    async def drain(self, request: Any) -> Any:
        return life.DrainResponse(success=False, error="prism serve drains on SIGTERM; nothing was changed")

    async def stop(self, request: Any) -> Any:
        return life.StopResponse(success=False, error="prism serve stops on SIGTERM; nothing was changed")

    async def health_check(self, request: Any) -> Any:
        try:
            ready, details = await self.gateway.readiness()
        except PrismError as exc:
            return life.HealthCheckResponse(status=life.HEALTH_STATUS_UNHEALTHY, message=str(exc))
        stores = details.get("stores", {})
        flat = {f"store.{name}": str(info.get("status", "")) for name, info in stores.items()}
        status = life.HEALTH_STATUS_HEALTHY if ready else life.HEALTH_STATUS_UNHEALTHY
        return life.HealthCheckResponse(
            status=status, message="ready" if ready else "not ready", details=flat
        )
