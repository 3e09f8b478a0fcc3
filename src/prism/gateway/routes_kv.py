"""``/v1/kv/{ns}``: single keys (raw bodies), batches, transactions and key listing."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import msgspec
from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from prism.errors import PreconditionFailed
from prism.gateway.key_read import KeyReadEndpoint
from prism.gateway.pii import PiiValueRejected
from prism.gateway.pipeline import Call, DataEndpoint
from prism.gateway.problem import HTTPProblem
from prism.gateway.runtime import Gateway, ServedNamespace
from prism.gateway.wire import (
    JSON,
    Ttl,
    decode_body,
    item_json,
    parse_etag_header,
    query_int,
    result_json,
    ttl_param,
)
from prism.kv.namespace import MAX_BATCH
from prism.model import Delete, Put

__all__ = ["kv_routes"]


def _doc(text: str) -> msgspec.Meta:
    """A field's description, for the OpenAPI document generated from these structs."""
    return msgspec.Meta(description=text)


Key = Annotated[str, _doc("The key: 1-1024 bytes of UTF-8, no NUL.")]
Value = Annotated[bytes, _doc("The value, base64-encoded.")]
OptionalTtl = Annotated[Ttl | None, _doc("Seconds until the entry expires; none keeps it until deleted.")]
IfMatch = Annotated[str | None, _doc("Apply only when the entry's current etag is this one.")]
IfAbsent = Annotated[bool, _doc("Apply only when there is no live entry at the key.")]
ContentType = Annotated[str | None, _doc("Stored with the value and returned with it.")]


class BulkGetRequest(msgspec.Struct, forbid_unknown_fields=True):
    """Body of POST /_bulk/get."""

    keys: Annotated[list[str], _doc(f"The keys (at most {MAX_BATCH}); one answer each, in order.")]


class BulkPutItem(msgspec.Struct, forbid_unknown_fields=True):
    """One entry of a batch or record write (``value`` is base64 on the wire)."""

    key: Key
    value: Value
    ttl: OptionalTtl = None
    if_match: IfMatch = None
    if_absent: IfAbsent = False
    content_type: ContentType = None


class BulkPutRequest(msgspec.Struct, forbid_unknown_fields=True):
    """Body of POST /_bulk/put."""

    items: Annotated[list[BulkPutItem], _doc(f"The entries (at most {MAX_BATCH}), each applied on its own.")]


class BulkDeleteItem(msgspec.Struct, forbid_unknown_fields=True):
    """One entry of POST /_bulk/delete."""

    key: Key
    if_match: IfMatch = None


class BulkDeleteRequest(msgspec.Struct, forbid_unknown_fields=True):
    """Body of POST /_bulk/delete."""

    items: Annotated[list[BulkDeleteItem], _doc(f"The keys (at most {MAX_BATCH}), each deleted on its own.")]


class TransactOp(msgspec.Struct, forbid_unknown_fields=True):
    """One op of POST /_transact."""

    op: Annotated[Literal["put", "delete"], _doc("A delete takes only `key` and `if_match`.")]
    key: Key
    value: Annotated[bytes | None, _doc("The value of a put, base64-encoded.")] = None
    ttl: OptionalTtl = None
    if_match: IfMatch = None
    if_absent: IfAbsent = False
    content_type: ContentType = None


class TransactRequest(msgspec.Struct, forbid_unknown_fields=True):
    """Body of POST /_transact."""

    ops: Annotated[list[TransactOp], _doc(f"Applied in order, all or none (at most {MAX_BATCH}).")]


def _json(payload: Any, status: int = 200) -> Response:
    return Response(JSON.encode(payload), status, media_type="application/json")


def _etag(etag: str) -> str:
    return f'"{etag}"'


def protect_at(call: Call, where: str, record: str, value: bytes, item_key: str = "") -> bytes:
    """``call.protect``, with a refused PII value reported at ``where`` in the body (``items[2].value``)."""
    try:
        return call.protect(record, value, item_key)
    except PiiValueRejected as exc:
        raise HTTPProblem(400, exc.code, f"{where}: {exc}") from None


def header_text(content_type: str | None, where: str) -> str | None:
    """``content_type`` of a JSON body, refused (400) unless an HTTP header can carry it back."""
    if content_type is not None:
        try:
            content_type.encode("latin-1")
        except UnicodeEncodeError:
            raise HTTPProblem(
                400,
                "INVALID_BODY",
                f"{where}: content_type comes back as a Content-Type header, so it must be Latin-1 text",
            ) from None
    return content_type


def _put_of(call: Call, item: BulkPutItem | TransactOp, value: bytes, at: str) -> Put:
    return Put(
        item.key,
        protect_at(call, f"{at}.value", item.key, value),
        item.ttl,
        header_text(item.content_type, f"{at}.content_type"),
        item.if_match,
        item.if_absent,
    )


async def put_key(call: Call) -> Response:
    """PUT one key: 201 when created, 200 when replaced, with the new ETag."""
    request = call.request
    key = request.scope["path_params"]["key"]
    call.key = key
    headers = request.headers
    if_match = _single_etag(headers, "if-match")
    if_absent = _if_absent(headers)
    ttl = ttl_param(request.query_params.get("ttl"))
    content_type = headers.get("content-type")
    value = call.protect(key, call.body)
    result = await call.kv.put_result(Put(key, value, ttl, content_type, if_match, if_absent))
    if result.error is not None:
        raise result.error
    assert result.etag is not None
    return Response(None, 200 if result.existed else 201, headers={"etag": _etag(result.etag)})


async def delete_key(call: Call) -> Response:
    """DELETE one key: 204 whether or not it existed; 412 when If-Match differs."""
    key = call.request.scope["path_params"]["key"]
    call.key = key
    if_match = _single_etag(call.request.headers, "if-match")
    result = await call.kv.delete_result(Delete(key, if_match))
    if result.error is not None:
        raise result.error
    return Response(None, 204)


async def scan_keys(call: Call) -> Response:
    """GET /v1/kv/{ns}: one page of keys, optionally under a prefix."""
    params = call.request.query_params
    limit = query_int(params.get("limit"), "limit", default=100)
    page = await call.kv.scan(
        params.get("prefix", ""), limit=limit, page_token=params.get("page_token") or None
    )
    call.key_count = len(page.keys)
    return _json({"keys": page.keys, "next_page_token": page.next_page_token})


async def bulk_get(call: Call) -> Response:
    """POST /_bulk/get: one entry per requested key, in order."""
    request = decode_body(call.body, BulkGetRequest)
    call.key_count = len(request.keys)
    found = await call.kv.get_many(request.keys)
    items = []
    for key, item in zip(request.keys, found, strict=True):
        if item is None:
            items.append({"key": key, "found": False})
        else:
            items.append(item_json(item, call.reveal(key, item.value), found=True))
    return _json({"items": items})


async def bulk_put(call: Call) -> Response:
    """POST /_bulk/put: independent puts, one result each."""
    request = decode_body(call.body, BulkPutRequest)
    call.key_count = len(request.items)
    puts = [_put_of(call, item, item.value, f"items[{i}]") for i, item in enumerate(request.items)]
    results = await call.kv.put_many(puts)
    return _json({"results": [result_json(r) for r in results]})


async def bulk_delete(call: Call) -> Response:
    """POST /_bulk/delete: independent deletes, one result each."""
    request = decode_body(call.body, BulkDeleteRequest)
    call.key_count = len(request.items)
    results = await call.kv.delete_many([Delete(i.key, i.if_match) for i in request.items])
    return _json({"results": [result_json(r) for r in results]})


async def transact(call: Call) -> Response:
    """POST /_transact: every op applied, or none (412 naming the failing key)."""
    request = decode_body(call.body, TransactRequest)
    call.key_count = len(request.ops)
    ops: list[Put | Delete] = []
    for i, op in enumerate(request.ops):
        if op.op == "put":
            if op.value is None:
                raise HTTPProblem(400, "INVALID_BODY", f"ops[{i}]: a put needs `value` (base64)")
            ops.append(_put_of(call, op, op.value, f"ops[{i}]"))
        else:
            if op.value is not None or op.ttl is not None or op.if_absent or op.content_type is not None:
                raise HTTPProblem(400, "INVALID_BODY", f"ops[{i}]: a delete takes only `key` and `if_match`")
            ops.append(Delete(op.key, op.if_match))
    try:
        results = await call.kv.transact(ops)
    except PreconditionFailed as exc:
        which = f" for {exc.key!r}" if exc.key is not None else ""
        raise HTTPProblem(412, exc.code, f"a condition failed{which}; nothing was applied") from exc
    return _json({"results": [result_json(r) for r in results]})


def _single_etag(headers: Headers, name: str) -> str | None:
    raw = headers.get(name)
    if raw is None:
        return None
    tags = parse_etag_header(raw, allow_star=False, many=False)
    return tags[0]


def _if_absent(headers: Headers) -> bool:
    raw = headers.get("if-none-match")
    if raw is None:
        return False
    if raw.strip() != "*":
        raise HTTPProblem(400, "INVALID_HEADER", "on a write, If-None-Match only accepts *")
    return True


def _value_limit(served: ServedNamespace) -> int:
    return served.max_value_bytes


def _json_limit(gateway: Gateway) -> Any:
    limit = gateway.config.server.max_body_bytes
    return lambda served: limit


def path_route(path: str, endpoint: Any, *, methods: list[str], name: str | None = None) -> Route:
    """A route whose trailing ``{...:path}`` parameter matches every key, line breaks included.

    Starlette's ``path`` convertor is ``.*``, which stops at a newline; keys and record ids
    may contain one, and must not answer "no route" on one method and work on another.
    """
    route = Route(path, endpoint, methods=methods, name=name)
    route.path_regex = re.compile(route.path_regex.pattern, re.DOTALL)
    return route


def kv_routes(gateway: Gateway) -> list[BaseRoute]:
    """The /v1/kv routes, bound to ``gateway``."""
    json_limit = _json_limit(gateway)

    def ep(handler: Any, op: str, action: Any, body: Any = None) -> DataEndpoint:
        return DataEndpoint(gateway, handler, op=op, action=action, body_limit=body)

    key_path = "/v1/kv/{ns}/{key:path}"
    # Single-key routes come first: the router tries routes in order and these are the hottest.
    # A POST to /_bulk/... only partially matches them (wrong method) and goes on to its own route.
    return [
        path_route(key_path, KeyReadEndpoint(gateway), methods=["GET"], name="kv_get"),
        path_route(key_path, ep(put_key, "put", "write", _value_limit), methods=["PUT"]),
        path_route(key_path, ep(delete_key, "delete", "write"), methods=["DELETE"]),
        Route("/v1/kv/{ns}/_bulk/get", ep(bulk_get, "bulk_get", "read", json_limit), methods=["POST"]),
        Route("/v1/kv/{ns}/_bulk/put", ep(bulk_put, "bulk_put", "write", json_limit), methods=["POST"]),
        Route(
            "/v1/kv/{ns}/_bulk/delete", ep(bulk_delete, "bulk_delete", "write", json_limit), methods=["POST"]
        ),
        Route("/v1/kv/{ns}/_transact", ep(transact, "transact", "write", json_limit), methods=["POST"]),
        Route("/v1/kv/{ns}", ep(scan_keys, "scan", "read"), methods=["GET"]),
    ]
