"""``prism.v1.KeyValue``: the handlers of its methods, run as data routes of the gateway pipeline.

Each method is a :class:`~prism.gateway.pipeline.DataRoute` whose handler reads the
decoded request from the call (:class:`GrpcCall`) and answers the serialized response
in a :class:`~prism.gateway.reply.Reply`. Authentication, the namespace, policy,
limits, tenancy, PII, idempotency and audit are the pipeline's, exactly as for the
HTTP routes; failures are the same problems, mapped to gRPC statuses by the transport.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, cast

from prism.errors import PreconditionFailed
from prism.gateway.pipeline import Call, DataRoute, Handler
from prism.gateway.policy import Action
from prism.gateway.problem import HTTPProblem
from prism.gateway.reply import Reply
from prism.gateway.routes_kv import header_text, json_limit, protect_at
from prism.gateway.routes_signals import items_page, keys_page
from prism.gateway.runtime import Gateway, ServedNamespace
from prism.grpc._gen.prism.v1 import keyvalue_pb2 as pb
from prism.kv.namespace import MAX_PAGE_LIMIT
from prism.model import Delete, Item, Put, WriteResult

__all__ = ["SERVICE", "GrpcCall", "GrpcMethod", "keyvalue_methods", "message_of"]

SERVICE = "prism.v1.KeyValue"
#: Largest ``page_size_bytes`` a client may ask for (as over HTTP).
MAX_PAGE_SIZE_BYTES = 64 * 1024 * 1024


class GrpcCall(Call):
    """A :class:`Call` that also carries its decoded request message."""

    __slots__ = ("message",)

    message: Any


class GrpcMethod:
    """One unary method: its full name, request type, route, and where its namespace is read."""

    __slots__ = ("in_band", "name", "request_type", "route")

    def __init__(
        self,
        name: str,
        request_type: Any,
        route: DataRoute,
        in_band: Callable[[HTTPProblem], bytes] | None = None,
    ) -> None:
        self.name = name
        self.request_type = request_type
        self.route = route
        #: Turns a problem into a response message for protocols that answer errors in-band.
        self.in_band = in_band


def message_of(call: Call) -> Any:
    """The decoded request of a gRPC call."""
    return cast(GrpcCall, call).message


def _item(item: Item, value: bytes) -> Any:
    out = pb.Item(key=item.key, value=value, etag=item.etag, found=True)
    expires = item.expires_at
    if expires is not None:
        out.expires_at = expires.timestamp()
    if item.content_type is not None:
        out.content_type = item.content_type
    return out


def _put(call: Call, op: Any, where: str, record: str | None = None) -> Put:
    key: str = op.key
    value = protect_at(
        call, f"{where}.value", key if record is None else record, op.value, "" if record is None else key
    )
    return Put(
        key,
        value,
        op.ttl_seconds if op.HasField("ttl_seconds") else None,
        header_text(op.content_type if op.HasField("content_type") else None, f"{where}.content_type"),
        op.if_match if op.HasField("if_match") else None,
        op.if_absent,
    )


def _delete(op: Any) -> Delete:
    return Delete(op.key, op.if_match if op.HasField("if_match") else None)


def _results(results: Sequence[WriteResult]) -> Reply:
    out = pb.WriteResults()
    for result in results:
        entry = out.results.add(key=result.key, ok=result.ok, existed=result.existed)
        if result.etag is not None:
            entry.etag = result.etag
        if result.error is not None:
            entry.error.code = result.error.code
            entry.error.detail = str(result.error)
    return Reply(200, out.SerializeToString())


def _ok(message: Any) -> Reply:
    return Reply(200, message.SerializeToString())


async def get(call: Call) -> Reply:
    request = message_of(call)
    key = call.key = request.key
    item = await call.kv.get(key)
    if item is None:
        raise HTTPProblem(404, "KEY_NOT_FOUND", "no live entry at this key")
    return _ok(pb.GetResponse(item=_item(item, call.reveal(key, item.value))))


async def put(call: Call) -> Reply:
    op = message_of(call).put
    call.key = op.key
    limit = call.ns.max_value_bytes
    if len(op.value) > limit:
        # As over HTTP, where the value is the body of the PUT.
        raise HTTPProblem(413, "BODY_TOO_LARGE", f"the body is over the limit of {limit} bytes")
    result = await call.kv.put_result(_put(call, op, "put"))
    if result.error is not None:
        raise result.error
    assert result.etag is not None
    return _ok(pb.PutResponse(etag=result.etag, existed=result.existed))


async def delete(call: Call) -> Reply:
    op = message_of(call).delete
    call.key = op.key
    result = await call.kv.delete_result(_delete(op))
    if result.error is not None:
        raise result.error
    return _ok(pb.DeleteResponse(existed=result.existed))


async def get_many(call: Call) -> Reply:
    keys = list(message_of(call).keys)
    call.key_count = len(keys)
    found = await call.kv.get_many(keys)
    out = pb.GetManyResponse()
    for key, item in zip(keys, found, strict=True):
        if item is None:
            out.items.add(key=key, found=False)
        else:
            out.items.append(_item(item, call.reveal(key, item.value)))
    return _ok(out)


async def put_many(call: Call) -> Reply:
    ops = message_of(call).puts
    call.key_count = len(ops)
    return _results(await call.kv.put_many([_put(call, op, f"puts[{i}]") for i, op in enumerate(ops)]))


async def delete_many(call: Call) -> Reply:
    ops = message_of(call).deletes
    call.key_count = len(ops)
    return _results(await call.kv.delete_many([_delete(op) for op in ops]))


async def transact(call: Call) -> Reply:
    request = message_of(call)
    call.key_count = len(request.ops)
    ops: list[Put | Delete] = []
    for i, op in enumerate(request.ops):
        which = op.WhichOneof("op")
        if which == "put":
            ops.append(_put(call, op.put, f"ops[{i}].put"))
        elif which == "delete":
            ops.append(_delete(op.delete))
        else:
            raise HTTPProblem(400, "INVALID_BODY", f"ops[{i}]: give a put or a delete")
    try:
        results = await call.kv.transact(ops)
    except PreconditionFailed as exc:
        which_key = f" for {exc.key!r}" if exc.key is not None else ""
        raise HTTPProblem(412, exc.code, f"a condition failed{which_key}; nothing was applied") from exc
    return _results(results)


def _limit(value: int, name: str, high: int) -> int:
    if value == 0:
        return 100
    if not 1 <= value <= high:
        raise HTTPProblem(400, "INVALID_QUERY", f"{name} must be from 1 to {high}")
    return value


async def scan(call: Call) -> Reply:
    request = message_of(call)
    limit = _limit(request.limit, "limit", 1000)
    page = await keys_page(call, request.prefix, limit=limit, page_token=request.page_token or None)
    call.key_count = len(page.keys)
    return _ok(pb.ScanResponse(keys=page.keys, next_page_token=page.next_page_token or ""))


def _bounds(request: Any) -> tuple[str | None, str | None, list[str] | None]:
    return (
        request.start if request.HasField("start") else None,
        request.end if request.HasField("end") else None,
        list(request.keys.keys) if request.HasField("keys") else None,
    )


async def get_items(call: Call) -> Reply:
    request = message_of(call)
    record = call.key = request.record
    start, end, keys = _bounds(request)
    if not 0 <= request.page_size_bytes <= MAX_PAGE_SIZE_BYTES:
        raise HTTPProblem(400, "INVALID_QUERY", f"page_size_bytes must be from 0 to {MAX_PAGE_SIZE_BYTES}")
    page = await items_page(
        call,
        record,
        start=start,
        end=end,
        keys=keys,
        limit=_limit(request.limit, "limit", MAX_PAGE_LIMIT),
        page_size_bytes=request.page_size_bytes or None,
        page_token=request.page_token or None,
    )
    call.key_count = len(page.items)
    out = pb.ItemPage(next_page_token=page.next_page_token or "")
    out.items.extend(_item(item, call.reveal(record, item.value, item.key)) for item in page.items)
    return _ok(out)


async def put_items(call: Call) -> Reply:
    request = message_of(call)
    record = call.key = request.record
    call.key_count = len(request.items)
    puts = [_put(call, op, f"items[{i}]", record) for i, op in enumerate(request.items)]
    return _results(await call.kv.put_items(record, puts))


async def delete_items(call: Call) -> Reply:
    request = message_of(call)
    record = call.key = request.record
    start, end, keys = _bounds(request)
    deleted = await call.kv.delete_items(record, start=start, end=end, keys=keys)
    call.key_count = deleted
    return _ok(pb.DeleteItemsResponse(deleted=deleted))


def keyvalue_methods(gateway: Gateway) -> list[GrpcMethod]:
    """The methods of ``prism.v1.KeyValue``, bound to ``gateway``."""
    body = json_limit(gateway)

    def method(
        name: str,
        request_type: Any,
        handler: Handler,
        op: str,
        action: Action,
        *,
        reveals: bool = False,
    ) -> GrpcMethod:
        writes = action == "write"
        limit: Callable[[ServedNamespace], int] | None = body if writes else None
        route = DataRoute(
            "POST",
            f"/{SERVICE}/{name}",
            handler,
            op,
            action,
            limit,
            idempotent=writes,
            reveals=reveals,
            name=f"{SERVICE}/{name}",
        )
        return GrpcMethod(f"/{SERVICE}/{name}", request_type, route)

    return [
        method("Get", pb.GetRequest, get, "get", "read", reveals=True),
        method("Put", pb.PutRequest, put, "put", "write"),
        method("Delete", pb.DeleteRequest, delete, "delete", "write"),
        method("GetMany", pb.GetManyRequest, get_many, "bulk_get", "read", reveals=True),
        method("PutMany", pb.PutManyRequest, put_many, "bulk_put", "write"),
        method("DeleteMany", pb.DeleteManyRequest, delete_many, "bulk_delete", "write"),
        method("Transact", pb.TransactRequest, transact, "transact", "write"),
        method("Scan", pb.ScanRequest, scan, "scan", "read"),
        method("GetItems", pb.GetItemsRequest, get_items, "records_get", "read", reveals=True),
        method("PutItems", pb.PutItemsRequest, put_items, "records_put", "write"),
        method("DeleteItems", pb.DeleteItemsRequest, delete_items, "records_delete", "write"),
    ]
