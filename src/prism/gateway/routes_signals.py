"""``GET /v1/namespaces/{ns}/signals`` and the deadline pages of keys and items are read under.

Signals (prism.control.signals) tell a namespace's clients their deadline, when to
hedge a read, how to retry and compress; anyone who may read the namespace may ask.
:func:`keys_page` and :func:`items_page` are what the scan and record-page handlers
of every transport read through: the page is read in chunks and, when the next chunk
would pass its share (``signals.page_budget``) of the namespace's ``latency_max_ms``, it
is answered early with what it has and a page token (counted in
``prism_early_pages_total``), never with an error.
"""

from __future__ import annotations

from prometheus_client import Counter

from prism.control.signals import items_within, scan_within
from prism.gateway.pipeline import Call, DataRoute
from prism.gateway.reply import Reply
from prism.gateway.runtime import Gateway
from prism.model import Item, Page

__all__ = ["EARLY_PAGES", "items_page", "keys_page", "signals_routes"]

EARLY_PAGES = Counter(
    "prism_early_pages_total",
    "Pages of keys or items answered early, with a page token, because reading on would pass "
    "the namespace's latency_max_ms; by namespace and operation.",
    ["namespace", "op"],
)


async def get_signals(call: Call) -> Reply:
    """GET /v1/namespaces/{ns}/signals."""
    return Reply.json(call.ns.signals(call.gateway.signals))


def _budget(call: Call) -> float:
    """How long a page may read the store: its share of the deadline, the rest left for the answer."""
    share = call.gateway.config.signals.page_budget
    return call.ns.signals(call.gateway.signals).latency_max_ms / 1000 * share


async def keys_page(call: Call, prefix: str, *, limit: int, page_token: str | None) -> Page[str]:
    """One page of keys, answered early (with a page token) rather than past ``latency_max_ms``."""
    chunk = call.gateway.config.signals.page_chunk
    if limit <= chunk:
        # One read of the store: nothing to cut short.
        return await call.kv.scan(prefix, limit=limit, page_token=page_token)
    page, cut = await scan_within(
        call.kv, prefix, limit=limit, page_token=page_token, chunk=chunk, budget_s=_budget(call)
    )
    if cut:
        EARLY_PAGES.labels(call.ns.name, "scan").inc()
    return page


async def items_page(
    call: Call,
    record: str,
    *,
    start: str | None,
    end: str | None,
    keys: list[str] | None,
    limit: int,
    page_size_bytes: int | None,
    page_token: str | None,
) -> Page[Item]:
    """One page of a record's items, answered early as :func:`keys_page` is."""
    chunk = call.gateway.config.signals.page_chunk
    if keys is not None or limit <= chunk:
        return await call.kv.get_items(
            record,
            start=start,
            end=end,
            keys=keys,
            limit=limit,
            page_size_bytes=page_size_bytes,
            page_token=page_token,
        )
    page, cut = await items_within(
        call.kv,
        record,
        start=start,
        end=end,
        limit=limit,
        page_size_bytes=page_size_bytes,
        page_token=page_token,
        chunk=chunk,
        budget_s=_budget(call),
    )
    if cut:
        EARLY_PAGES.labels(call.ns.name, "records_get").inc()
    return page


def signals_routes(gateway: Gateway) -> list[DataRoute]:
    """The signals route, readable by anyone who may read the namespace, of either kind."""
    return [DataRoute("GET", "/v1/namespaces/{ns}/signals", get_signals, "signals", "read", kind="any")]
