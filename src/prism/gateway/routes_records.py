"""``/v1/records/{ns}/{id}``: the items of one record, written together and read by range."""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.responses import Response
from starlette.routing import BaseRoute

from prism.gateway.pipeline import Call, DataEndpoint
from prism.gateway.routes_kv import BulkPutItem, header_text, path_route, protect_at
from prism.gateway.runtime import Gateway, ServedNamespace
from prism.gateway.wire import JSON, decode_body, item_json, query_int, result_json
from prism.kv.namespace import MAX_PAGE_LIMIT
from prism.model import Put

__all__ = ["records_routes"]

#: Largest ``page_size_bytes`` a client may ask for.
MAX_PAGE_SIZE_BYTES = 64 * 1024 * 1024


class RecordPutRequest(msgspec.Struct, forbid_unknown_fields=True):
    """Body of PUT /v1/records/{ns}/{id}."""

    items: list[BulkPutItem]


def _json(payload: Any) -> Response:
    return Response(JSON.encode(payload), 200, media_type="application/json")


def _bounds(call: Call) -> tuple[str | None, str | None, list[str] | None]:
    params = call.request.query_params
    keys = params.getlist("keys") if "keys" in params else None
    return params.get("start"), params.get("end"), keys


async def put_record(call: Call) -> Response:
    """PUT items of a record; each item succeeds or fails on its own condition."""
    record = call.request.scope["path_params"]["id"]
    call.key = record
    body = decode_body(call.body, RecordPutRequest)
    call.key_count = len(body.items)
    puts = [
        Put(
            i.key,
            protect_at(call, f"items[{n}].value", record, i.value, i.key),
            i.ttl,
            header_text(i.content_type, f"items[{n}].content_type"),
            i.if_match,
            i.if_absent,
        )
        for n, i in enumerate(body.items)
    ]
    results = await call.kv.put_items(record, puts)
    return _json({"results": [result_json(r) for r in results]})


async def get_record(call: Call) -> Response:
    """GET items of a record by range or by keys, one page at a time."""
    record = call.request.scope["path_params"]["id"]
    call.key = record
    params = call.request.query_params
    start, end, keys = _bounds(call)
    page = await call.kv.get_items(
        record,
        start=start,
        end=end,
        keys=keys,
        limit=query_int(params.get("limit"), "limit", default=100, high=MAX_PAGE_LIMIT),
        page_size_bytes=(
            query_int(params.get("page_size_bytes"), "page_size_bytes", default=0, high=MAX_PAGE_SIZE_BYTES)
            or None
        ),
        page_token=params.get("page_token") or None,
    )
    call.key_count = len(page.items)
    items = [item_json(item, call.reveal(record, item.value, item.key)) for item in page.items]
    return _json({"items": items, "next_page_token": page.next_page_token})


async def delete_record(call: Call) -> Response:
    """DELETE items of a record (a range, listed keys, or all of them)."""
    record = call.request.scope["path_params"]["id"]
    call.key = record
    start, end, keys = _bounds(call)
    deleted = await call.kv.delete_items(record, start=start, end=end, keys=keys)
    call.key_count = deleted
    return _json({"deleted": deleted})


def records_routes(gateway: Gateway) -> list[BaseRoute]:
    """The /v1/records routes, bound to ``gateway``."""
    limit = gateway.config.server.max_body_bytes

    def body_limit(served: ServedNamespace) -> int:
        return limit

    path = "/v1/records/{ns}/{id:path}"
    return [
        path_route(path, DataEndpoint(gateway, get_record, op="records_get", action="read"), methods=["GET"]),
        path_route(
            path,
            DataEndpoint(gateway, put_record, op="records_put", action="write", body_limit=body_limit),
            methods=["PUT"],
        ),
        path_route(
            path,
            DataEndpoint(gateway, delete_record, op="records_delete", action="write"),
            methods=["DELETE"],
        ),
    ]
