"""``/v1/ts/{ns}/{series}``: write, read and delete the events of a series (``kind: timeseries``).

Events travel in the form of :mod:`prism.timeseries.wire` (times in RFC 3339, values
in base64 or as JSON ``data``). Every request goes through the same pipeline as the
KeyValue routes: authentication, the namespace's access rules, tenant scoping, PII
protection of JSON values (bound to the series and the event's identity), limits,
the request timeout, Idempotency-Key and the audit trail.
"""

from __future__ import annotations

from datetime import datetime

import msgspec

from prism.gateway.pipeline import Call, DataRoute
from prism.gateway.problem import HTTPProblem
from prism.gateway.reply import Reply
from prism.gateway.routes_kv import json_limit, protect_at
from prism.gateway.runtime import Gateway
from prism.gateway.wire import decode_body, query_int
from prism.model import Event
from prism.timeseries.series import MAX_PAGE_LIMIT, to_micros
from prism.timeseries.wire import (
    WirePage,
    WireWrite,
    WireWriteResults,
    event_from_wire,
    event_to_wire,
    result_to_wire,
)

__all__ = ["MAX_PAGE_SIZE_BYTES", "TS_PATH", "ts_routes"]

#: Largest ``page_size_bytes`` a client may ask for.
MAX_PAGE_SIZE_BYTES = 64 * 1024 * 1024
TS_PATH = "/v1/ts/{ns}/{series:path}"
TS = "timeseries"


def _item_key(event: Event) -> str:
    """What a protected value of ``event`` is bound to within its series: its identity."""
    return f"{to_micros(event.time, 'time')}/{event.id}/{event.key}"


def _time(raw: str | None, name: str) -> datetime | None:
    if raw is None or raw == "":
        return None
    try:
        when = datetime.fromisoformat(raw)
    except ValueError:
        raise HTTPProblem(400, "INVALID_ARGUMENT", f"{name} must be an RFC 3339 time, got {raw!r}") from None
    if when.tzinfo is None:
        raise HTTPProblem(400, "INVALID_ARGUMENT", f"{name} needs a UTC offset, like 2024-05-01T12:00:00Z")
    return when


async def write_events(call: Call) -> Reply:
    """POST events to a series; each event succeeds or fails on its own (immutability)."""
    series = call.key = call.params["series"]
    body = decode_body(call.body, WireWrite)
    call.key_count = len(body.events)
    events = []
    for n, wire in enumerate(body.events):
        event = event_from_wire(wire, f"events[{n}]")
        value = protect_at(call, f"events[{n}].value", series, event.value, _item_key(event))
        events.append(msgspec.structs.replace(event, value=value))
    results = await call.ns.timeseries(call.principal.tenant).write(series, events)
    return Reply.json(WireWriteResults([result_to_wire(r) for r in results]))


async def read_events(call: Call) -> Reply:
    """GET one page of a series' events in a time range, newest first unless ``order=asc``."""
    series = call.key = call.params["series"]
    params = call.query
    order = params.get("order") or "desc"
    if order not in ("desc", "asc"):
        raise HTTPProblem(400, "INVALID_ARGUMENT", f"order must be desc or asc, got {order!r}")
    page = await call.ns.timeseries(call.principal.tenant).read(
        series,
        start=_time(params.get("start"), "start"),
        end=_time(params.get("end"), "end"),
        limit=query_int(params.get("limit"), "limit", default=100, high=MAX_PAGE_LIMIT),
        newest_first=order == "desc",
        page_token=params.get("page_token") or None,
        page_size_bytes=(
            query_int(params.get("page_size_bytes"), "page_size_bytes", default=0, high=MAX_PAGE_SIZE_BYTES)
            or None
        ),
    )
    call.key_count = len(page.events)
    shown = [
        event_to_wire(msgspec.structs.replace(e, value=call.reveal(series, e.value, _item_key(e))))
        for e in page.events
    ]
    return Reply.json(WirePage(shown, page.next_page_token))


async def delete_series(call: Call) -> Reply:
    """DELETE every event of a series."""
    series = call.key = call.params["series"]
    await call.ns.timeseries(call.principal.tenant).delete_series(series)
    return Reply(204)


def ts_routes(gateway: Gateway) -> list[DataRoute]:
    """The /v1/ts routes, bound to ``gateway``."""
    return [
        DataRoute("GET", TS_PATH, read_events, "ts_read", "read", reveals=True, kind=TS),
        DataRoute(
            "POST", TS_PATH, write_events, "ts_write", "write", json_limit(gateway), idempotent=True, kind=TS
        ),
        DataRoute("DELETE", TS_PATH, delete_series, "ts_delete_series", "write", idempotent=True, kind=TS),
    ]
