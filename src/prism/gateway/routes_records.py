"""``/v1/records/{ns}/{id}``: the items of one record, written together and read by range."""

from __future__ import annotations

import msgspec

from prism.gateway.pipeline import Call, DataRoute
from prism.gateway.reply import Reply
from prism.gateway.routes_kv import BulkPutItem, header_text, json_limit, protect_at
from prism.gateway.routes_signals import items_page
from prism.gateway.runtime import Gateway
from prism.gateway.wire import (
    BatchResults,
    DeletedCount,
    ItemPage,
    decode_body,
    item_out,
    query_int,
    result_out,
)
from prism.kv.namespace import MAX_PAGE_LIMIT
from prism.model import Put

__all__ = ["records_routes"]

#: Largest ``page_size_bytes`` a client may ask for.
MAX_PAGE_SIZE_BYTES = 64 * 1024 * 1024


class RecordPutRequest(msgspec.Struct, forbid_unknown_fields=True):
    """Body of PUT /v1/records/{ns}/{id}."""

    items: list[BulkPutItem]


def _bounds(call: Call) -> tuple[str | None, str | None, list[str] | None]:
    params = call.query
    keys = params.getlist("keys") if "keys" in params else None
    return params.get("start"), params.get("end"), keys


async def put_record(call: Call) -> Reply:
    """PUT items of a record; each item succeeds or fails on its own condition."""
    record = call.key = call.params["id"]
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
    return Reply.json(BatchResults([result_out(r) for r in results]))


async def get_record(call: Call) -> Reply:
    """GET items of a record by range or by keys, one page at a time."""
    record = call.key = call.params["id"]
    params = call.query
    start, end, keys = _bounds(call)
    page = await items_page(
        call,
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
    items = [item_out(item, call.reveal(record, item.value, item.key)) for item in page.items]
    return Reply.json(ItemPage(items, page.next_page_token))


async def delete_record(call: Call) -> Reply:
    """DELETE items of a record (a range, listed keys, or all of them)."""
    record = call.key = call.params["id"]
    start, end, keys = _bounds(call)
    deleted = await call.kv.delete_items(record, start=start, end=end, keys=keys)
    call.key_count = deleted
    return Reply.json(DeletedCount(deleted))


def records_routes(gateway: Gateway) -> list[DataRoute]:
    """The /v1/records routes, bound to ``gateway``."""
    path = "/v1/records/{ns}/{id:path}"
    return [
        DataRoute("GET", path, get_record, "records_get", "read", reveals=True),
        DataRoute("PUT", path, put_record, "records_put", "write", json_limit(gateway), idempotent=True),
        DataRoute("DELETE", path, delete_record, "records_delete", "write", idempotent=True),
    ]
