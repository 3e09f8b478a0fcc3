"""``/v1/kv/{ns}``: single keys (raw bodies), batches, transactions and key listing."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Literal

import msgspec

from prism.errors import PreconditionFailed
from prism.gateway.pii import PiiValueRejected
from prism.gateway.pipeline import Call, DataRoute
from prism.gateway.policy import Action
from prism.gateway.problem import HTTPProblem
from prism.gateway.reply import Reply
from prism.gateway.routes_signals import keys_page
from prism.gateway.runtime import Gateway, ServedNamespace
from prism.gateway.wire import (
    BatchResults,
    BulkGetItem,
    BulkGetResponse,
    KeyPage,
    Ttl,
    decode_body,
    expires_header,
    parse_etag_header,
    query_int,
    result_out,
    ttl_param,
)
from prism.kv.namespace import MAX_BATCH
from prism.model import Delete, Item, Put

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


_OCTET_STREAM = b"application/octet-stream"


async def get_key(call: Call) -> Reply:
    """GET (and HEAD) one key: the raw value with its ETag; 304 when If-None-Match still holds."""
    key = call.key = call.params["key"]
    item = await call.kv.get(key)
    if item is None:
        raise HTTPProblem(404, "KEY_NOT_FOUND", "no live entry at this key")
    headers = [(b"etag", f'"{item.etag}"'.encode("latin-1"))]
    if item.expires_at is not None:
        headers.append((b"x-prism-expires-at", expires_header(item.expires_at).encode("ascii")))
    if_none_match = call.header(b"if-none-match")
    if if_none_match is not None and _matches(item, if_none_match):
        return Reply(304, b"", headers)
    body = call.reveal(key, item.value)
    headers.append(
        (b"content-type", _header_bytes(item.content_type) if item.content_type else _OCTET_STREAM)
    )
    return Reply(200, body, headers)


async def put_key(call: Call) -> Reply:
    """PUT one key: 201 when created, 200 when replaced, with the new ETag."""
    key = call.key = call.params["key"]
    if_match = _single_etag(call, b"if-match")
    if_absent = _if_absent(call)
    ttl = ttl_param(call.query.get("ttl"))
    content_type = call.header(b"content-type")
    value = call.protect(key, call.body)
    result = await call.kv.put_result(Put(key, value, ttl, content_type, if_match, if_absent))
    if result.error is not None:
        raise result.error
    assert result.etag is not None
    return Reply(200 if result.existed else 201, b"", [(b"etag", _etag(result.etag))])


async def delete_key(call: Call) -> Reply:
    """DELETE one key: 204 whether or not it existed; 412 when If-Match differs."""
    key = call.key = call.params["key"]
    if_match = _single_etag(call, b"if-match")
    result = await call.kv.delete_result(Delete(key, if_match))
    if result.error is not None:
        raise result.error
    return Reply(204)


async def scan_keys(call: Call) -> Reply:
    """GET /v1/kv/{ns}: one page of keys, optionally under a prefix."""
    params = call.query
    limit = query_int(params.get("limit"), "limit", default=100)
    page = await keys_page(
        call, params.get("prefix", ""), limit=limit, page_token=params.get("page_token") or None
    )
    call.key_count = len(page.keys)
    return Reply.json(KeyPage(page.keys, page.next_page_token))


async def bulk_get(call: Call) -> Reply:
    """POST /_bulk/get: one entry per requested key, in order."""
    request = decode_body(call.body, BulkGetRequest)
    call.key_count = len(request.keys)
    found = await call.kv.get_many(request.keys)
    items = []
    for key, item in zip(request.keys, found, strict=True):
        if item is None:
            items.append(BulkGetItem(key, False))
        else:
            expires = expires_header(item.expires_at) if item.expires_at is not None else None
            value = call.reveal(key, item.value)
            items.append(BulkGetItem(item.key, True, value, item.etag, item.content_type, expires))
    return Reply.json(BulkGetResponse(items))


async def bulk_put(call: Call) -> Reply:
    """POST /_bulk/put: independent puts, one result each."""
    request = decode_body(call.body, BulkPutRequest)
    call.key_count = len(request.items)
    puts = [_put_of(call, item, item.value, f"items[{i}]") for i, item in enumerate(request.items)]
    results = await call.kv.put_many(puts)
    return Reply.json(BatchResults([result_out(r) for r in results]))


async def bulk_delete(call: Call) -> Reply:
    """POST /_bulk/delete: independent deletes, one result each."""
    request = decode_body(call.body, BulkDeleteRequest)
    call.key_count = len(request.items)
    results = await call.kv.delete_many([Delete(i.key, i.if_match) for i in request.items])
    return Reply.json(BatchResults([result_out(r) for r in results]))


async def transact(call: Call) -> Reply:
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
    return Reply.json(BatchResults([result_out(r) for r in results]))


def _etag(etag: str) -> bytes:
    return f'"{etag}"'.encode("latin-1")


def _header_bytes(text: str) -> bytes:
    """A stored content type as header bytes (Latin-1; UTF-8 for text written around the gateway)."""
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        return text.encode("utf-8")


def _matches(item: Item, if_none_match: str) -> bool:
    tags = parse_etag_header(if_none_match, allow_star=True, many=True)
    return "*" in tags or item.etag in tags


def _single_etag(call: Call, name: bytes) -> str | None:
    raw = call.header(name)
    if raw is None:
        return None
    tags = parse_etag_header(raw, allow_star=False, many=False)
    return tags[0]


def _if_absent(call: Call) -> bool:
    raw = call.header(b"if-none-match")
    if raw is None:
        return False
    if raw.strip() != "*":
        raise HTTPProblem(400, "INVALID_HEADER", "on a write, If-None-Match only accepts *")
    return True


def _value_limit(served: ServedNamespace) -> int:
    return served.max_value_bytes


def json_limit(gateway: Gateway) -> Callable[[ServedNamespace], int]:
    """The body limit of JSON routes: ``server.max_body_bytes`` whatever the namespace."""
    limit = gateway.config.server.max_body_bytes
    return lambda served: limit


def kv_routes(gateway: Gateway) -> list[DataRoute]:
    """The /v1/kv routes, bound to ``gateway``."""
    json_body = json_limit(gateway)

    def route(
        method: str,
        path: str,
        handler: Callable[[Call], Awaitable[Reply]],
        op: str,
        action: Action,
        body: Callable[[ServedNamespace], int] | None = None,
        *,
        reveals: bool = False,
    ) -> DataRoute:
        return DataRoute(
            method, path, handler, op, action, body, idempotent=action == "write", reveals=reveals
        )

    key_path = "/v1/kv/{ns}/{key:path}"
    return [
        route("GET", key_path, get_key, "get", "read", reveals=True),
        route("PUT", key_path, put_key, "put", "write", _value_limit),
        route("DELETE", key_path, delete_key, "delete", "write"),
        route("POST", "/v1/kv/{ns}/_bulk/get", bulk_get, "bulk_get", "read", json_body, reveals=True),
        route("POST", "/v1/kv/{ns}/_bulk/put", bulk_put, "bulk_put", "write", json_body),
        route("POST", "/v1/kv/{ns}/_bulk/delete", bulk_delete, "bulk_delete", "write", json_body),
        route("POST", "/v1/kv/{ns}/_transact", transact, "transact", "write", json_body),
        route("GET", "/v1/kv/{ns}", scan_keys, "scan", "read"),
    ]
