"""Streaming requests and dead letters (through the API), and the audit trail read back."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import msgspec
from starlette.responses import RedirectResponse, Response, StreamingResponse

from prism.gateway.console.core import Context, Refused
from prism.gateway.console.html import SECURITY_HEADERS, Markup, esc, form, link, next_page, page, table, url
from prism.gateway.policy import may
from prism.kv.namespace import Namespace
from prism.model import Principal

__all__ = [
    "audit",
    "cancel",
    "dead_letters",
    "discard_dead_letter",
    "request_detail",
    "request_events",
    "requests",
    "retry_dead_letter",
]

DEAD_COLUMNS = ("Request", "Action", "Attempts", "Error", "Failed at", "Actions")
AUDIT_COLUMNS = ("Time", "Principal", "Namespace", "Action", "Key", "Outcome", "Status")
STATUSES = ("PENDING", "PROCESSING", "RETRYING", "COMPLETED", "FAILED", "CANCELLED")


def _select(name: str, label: str, options: tuple[str, ...], chosen: str) -> str:
    opts = "".join(
        f'<option value="{esc(o)}"{" selected" if o == chosen else ""}>{esc(o or "any")}</option>'
        for o in ("", *options)
    )
    return f'<label for="{name}">{esc(label)}</label><select id="{name}" name="{name}">{opts}</select>'


def _text(name: str, label: str, value: str, kind: str = "text") -> str:
    field = f'<input id="{name}" name="{name}" type="{kind}" value="{esc(value)}">'
    return f'<label for="{name}">{esc(label)}</label>{field}'


async def requests(ctx: Context) -> Response:
    params = ctx.request.query_params
    status = params.get("status", "")
    action = params.get("action", "")
    user = params.get("user", "")
    if status and status not in STATUSES:
        raise Refused(400, f"status: one of {', '.join(STATUSES)}")
    size = ctx.gateway.config.admin.page_size
    answer = await ctx.api.call(
        "GET",
        "/v1/requests",
        query={
            "status": status,
            "action": action,
            "user": user,
            "limit": size,
            "page_token": params.get("page_token"),
        },
    )
    if answer.status == 404:
        return page(
            "Requests",
            Markup("<p>Streaming is not enabled on this gateway.</p>"),
            ctx.session,
            current="Requests",
        )
    if not answer.ok:
        raise Refused(answer.status, answer.problem)
    found = answer.json()
    listed = found["requests"]
    rows = [
        (
            link(f"/admin/requests/{quote(r['request_id'], safe='')}", r["request_id"]),
            r["action"],
            r["status"],
            f"{r['progress']['percentage'] or 0:g}%",
            r["attempts"],
            r["created_at"],
        )
        for r in listed
    ]
    columns = ("Request", "Action", "Status", "Progress", "Attempts", "Created")
    filters = Markup(
        '<form method="get" action="/admin/requests" class="search">'
        f"{_select('status', 'Status', STATUSES, status)}"
        f"{_text('action', 'Action', action)}"
        f"{_text('user', 'User (admins: another user of your tenant, e.g. apikey:NAME)', user)}"
        '<button type="submit">Filter</button></form>'
    )
    more = Markup("")
    if found.get("next_page_token"):
        more = next_page(
            url(
                "/admin/requests",
                status=status,
                action=action,
                user=user,
                page_token=found["next_page_token"],
            )
        )
    whose = f"The requests of {esc(user)}" if user else "Your own streaming requests"
    body = Markup(
        f"<p>{whose}, newest first. {link('/admin/dead-letters', 'Dead letters')}</p>"
        f'<p class="hint" data-refresh="{ctx.gateway.config.admin.sample_interval:g}">'
        "This list refreshes itself.</p>"
        f"{filters}{table(columns, rows, empty='No request matches.')}{more}"
    )
    return page("Requests", body, ctx.session, current="Requests", flash=params.get("done"))


async def request_detail(ctx: Context) -> Response:
    rid = ctx.request.path_params["request_id"]
    answer = await ctx.api.call("GET", f"/v1/requests/{rid}")
    if not answer.ok:
        raise Refused(answer.status, answer.problem)
    r = answer.json()
    facts = [
        ("Action", r["action"]),
        ("Status", r["status"]),
        ("Progress", f"{r['progress']['percentage'] or 0:g}% {r['progress'].get('message') or ''}"),
        ("Attempts", r["attempts"]),
        ("Created", r["created_at"]),
        ("Updated", r["updated_at"]),
        ("Finished", r.get("finished_at") or "not yet"),
    ]
    if "error" in r:
        facts.append(("Error", f"{r['error'].get('code')}: {r['error'].get('message')}"))
    dl = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in facts)
    actions = Markup("")
    if r["status"] in ("PENDING", "PROCESSING", "RETRYING"):
        actions = form(
            f"/admin/requests/{quote(rid, safe='')}/cancel",
            ctx.session,
            "Cancel request",
            confirm=f"Cancel request {rid}?",
            danger=True,
        )
    result = Markup("")
    if "result" in r:
        pretty = msgspec.json.format(msgspec.json.encode(r["result"])).decode()
        result = Markup(f'<h2>Result</h2><pre class="value" tabindex="0">{esc(pretty)}</pre>')
    events_url = f"/admin/requests/{quote(rid, safe='')}/events"
    body = Markup(
        f"<p>{link('/admin/requests', '← Requests')}</p><dl>{dl}</dl>{actions}{result}"
        f'<section><h2>Events</h2><ol class="events" data-events="{esc(events_url)}" aria-live="polite"></ol>'
        f"<noscript><p>The event history needs JavaScript.</p></noscript></section>"
    )
    return page(
        f"Request {rid}", body, ctx.session, current="Requests", flash=ctx.request.query_params.get("done")
    )


async def request_events(ctx: Context) -> Response:
    """The request's events as SSE, passed on from the API's stream (resuming after Last-Event-ID)."""
    rid = ctx.request.path_params["request_id"]
    after = ctx.request.headers.get("last-event-id") or ctx.request.query_params.get("after_seq") or "0"
    if not after.isdigit():
        raise Refused(400, "Last-Event-ID: an event number")
    api = ctx.api
    opened = api.stream(f"/v1/requests/{rid}/events", query={"after_seq": after})
    head, chunks = await opened.__aenter__()
    if not head.ok:
        await opened.__aexit__(None, None, None)
        body = await _collect(chunks)
        raise Refused(head.status, body.decode("utf-8", "replace")[:500])

    async def relay() -> AsyncIterator[bytes]:
        try:
            async for chunk in chunks:
                if not ctx.session.live:
                    return  # signed out meanwhile
                yield chunk
        finally:
            await opened.__aexit__(None, None, None)

    return StreamingResponse(
        relay(), media_type="text/event-stream", headers={**SECURITY_HEADERS, "X-Accel-Buffering": "no"}
    )


async def _collect(chunks: AsyncIterator[bytes]) -> bytes:
    return b"".join([c async for c in chunks])


async def cancel(ctx: Context) -> Response:
    rid = ctx.request.path_params["request_id"]
    answer = await ctx.api.call("POST", f"/v1/requests/{rid}/cancel")
    if not answer.ok:
        raise Refused(answer.status, answer.problem)
    return RedirectResponse(
        url(f"/admin/requests/{quote(rid, safe='')}", done=f"cancelled: {answer.json()['status']}"),
        303,
        headers=SECURITY_HEADERS,
    )


async def dead_letters(ctx: Context) -> Response:
    params = ctx.request.query_params
    size = ctx.gateway.config.admin.page_size
    answer = await ctx.api.call(
        "GET", "/v1/dead-letters", query={"limit": size, "page_token": params.get("page_token")}
    )
    if not answer.ok:
        raise Refused(answer.status, answer.problem)
    found = answer.json()
    rows = []
    for r in found["requests"]:
        rid = quote(r["request_id"], safe="")
        error = r.get("error") or {}
        buttons = form(
            f"/admin/dead-letters/{rid}/retry",
            ctx.session,
            "Retry",
            confirm=f"Run {r['action']} request {r['request_id']} again as a new request?",
        ) + form(
            f"/admin/dead-letters/{rid}/discard",
            ctx.session,
            "Discard",
            confirm=f"Discard dead letter {r['request_id']}? It will not run again.",
            danger=True,
        )
        rows.append(
            (
                link(f"/admin/requests/{rid}", r["request_id"]),
                r["action"],
                r["attempts"],
                f"{error.get('code', '')}: {error.get('message', '')}",
                r.get("finished_at", ""),
                Markup(buttons),
            )
        )
    more = Markup("")
    if found.get("next_page_token"):
        more = next_page(url("/admin/dead-letters", page_token=found["next_page_token"]))
    body = Markup(
        f"<p>Requests of your tenant that failed for good. {link('/admin/requests', 'Requests')}</p>"
        f"{table(DEAD_COLUMNS, rows, empty='No dead letter.')}"
        f"{more}"
    )
    return page("Dead letters", body, ctx.session, current="Requests", flash=params.get("done"))


async def retry_dead_letter(ctx: Context) -> Response:
    rid = ctx.request.path_params["request_id"]
    answer = await ctx.api.call("POST", f"/v1/dead-letters/{rid}/retry")
    if not answer.ok:
        raise Refused(answer.status, answer.problem)
    again = answer.json()["request_id"]
    return RedirectResponse(
        url("/admin/dead-letters", done=f"retried as {again}"), 303, headers=SECURITY_HEADERS
    )


async def discard_dead_letter(ctx: Context) -> Response:
    rid = ctx.request.path_params["request_id"]
    answer = await ctx.api.call("DELETE", f"/v1/dead-letters/{rid}")
    if not answer.ok:
        raise Refused(answer.status, answer.problem)
    return RedirectResponse(
        url("/admin/dead-letters", done=f"discarded {rid}"), 303, headers=SECURITY_HEADERS
    )


# -- audit ---------------------------------------------------------------------------------


def _visible(principal: Principal, event: dict[str, Any], ctx: Context) -> bool:
    """An event is shown to an admin of its namespace (of every namespace, for events outside one),
    and never across tenants: a principal of a tenant sees only its tenant's events, and the events
    of a tenant-scoped namespace only to principals of that tenant."""
    if principal.tenant is not None and event.get("tenant") != principal.tenant:
        return False
    namespaces = ctx.gateway.namespaces
    name = event.get("namespace")
    if name is None:
        return all(may(principal, s.config, "admin") for s in namespaces.values())
    served = namespaces.get(name)
    if served is None:
        return False
    if served.tenant_scoped and (principal.tenant is None or event.get("tenant") != principal.tenant):
        return False
    return may(principal, served.config, "admin")


async def _read_events(ctx: Context) -> list[bytes]:
    """The last ``admin.audit_scan_limit`` lines of the audit sink, oldest first."""
    config = ctx.gateway.config
    limit = config.admin.audit_scan_limit
    if config.audit.sink == "file":
        assert config.audit.path is not None
        path = config.resolve_path(config.audit.path)

        def tail() -> list[bytes]:
            try:
                with path.open("rb") as f:
                    return list(collections.deque(f, maxlen=limit))
            except FileNotFoundError:
                return []

        return await asyncio.to_thread(tail)
    store = ctx.gateway.stores[config.audit.store or next(iter(config.stores))]
    ns = store.namespace(config.audit.namespace)
    lines: list[bytes] = []
    batch = await _newest_keys(ns, limit)
    for at in range(0, len(batch), 500):
        lines.extend(got.value for got in await ns.get_many(batch[at : at + 500]) if got is not None)
    return lines


#: The characters of the namespace sink's keys (``{ns:020d}-{pid}-{seq:06d}``), newest first.
_AUDIT_KEY_CHARS = "9876543210-"
_SCAN_PAGE = 1000


async def _newest_keys(ns: Namespace, limit: int) -> list[str]:
    """The newest ``limit`` keys of the namespace sink, oldest first, read from the newest end.

    Scans only go forward, so the keys are walked by prefix: a prefix whose keys fit in one
    scan of what is still needed is taken whole, a larger one is split by its next
    character, newest first, until ``limit`` keys are found (no key is the prefix of
    another, so every split ends). The work follows ``limit``, never the length of the
    whole history: the keys kept, plus at most one oversized prefix per character of a
    key (about 40), each read up to ``min(limit, 1000)`` keys before it is split.
    """
    chunks: list[list[str]] = []  # newest first, each oldest first
    need = limit

    async def collect(prefix: str) -> None:
        nonlocal need
        found = await ns.scan(prefix, limit=min(need, _SCAN_PAGE))
        if found.next_page_token is None:
            chunks.append(found.keys[-need:])
            need -= len(chunks[-1])
            return
        for char in _AUDIT_KEY_CHARS:
            if need <= 0:
                return
            await collect(prefix + char)

    await collect("")
    return [key for chunk in reversed(chunks) for key in chunk]


def _when(text: str, field: str) -> datetime | None:
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise Refused(400, f"{field}: a date and time such as 2026-01-31T12:00") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _stored_time(value: object) -> datetime | None:
    """The time of a stored audit line (None when it is not a date and time)."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


async def audit(ctx: Context) -> Response:
    config = ctx.gateway.config
    params = ctx.request.query_params
    principal = ctx.session.principal
    if not any(may(principal, s.config, "admin") for s in ctx.gateway.namespaces.values()):
        raise Refused(
            403, f"{principal.subject!r} administers no namespace, so it may not read the audit trail"
        )
    if config.audit.sink not in ("file", "namespace"):
        body = Markup(
            f"<p>The audit sink is <code>{esc(config.audit.sink)}</code>; the console reads back only "
            "a file or a namespace sink.</p>"
        )
        return page("Audit", body, ctx.session, current="Audit")
    since = _when(params.get("since", ""), "since")
    until = _when(params.get("until", ""), "until")
    wanted = {k: params.get(k, "") for k in ("principal", "namespace", "operation", "outcome")}
    shown: list[dict[str, Any]] = []
    limit = config.admin.page_size
    for line in reversed(await _read_events(ctx)):
        try:
            event = msgspec.json.decode(line)
        except msgspec.DecodeError:
            continue
        if not isinstance(event, dict) or not _visible(principal, event, ctx):
            continue
        if any(v and str(event.get(k, "")) != v for k, v in wanted.items()):
            continue
        stamp = event.get("time")
        moment = _stored_time(stamp) if stamp else None
        if stamp and moment is None:
            continue  # a stored line whose time cannot be read, skipped like an undecodable one
        if moment is not None and ((since and moment < since) or (until and moment > until)):
            continue
        shown.append(event)
        if len(shown) >= limit:
            break
    rows = [
        (
            e.get("time"),
            e.get("principal", "(unknown)"),
            e.get("namespace", ""),
            e.get("operation"),
            e.get("key", ""),
            e.get("outcome"),
            e.get("status"),
        )
        for e in shown
    ]
    filters = Markup(
        '<form method="get" action="/admin/audit" class="search">'
        f"{_text('since', 'From', params.get('since', ''), 'datetime-local')}"
        f"{_text('until', 'Until', params.get('until', ''), 'datetime-local')}"
        f"{_text('principal', 'Principal', wanted['principal'])}"
        f"{_text('namespace', 'Namespace', wanted['namespace'])}"
        f"{_text('operation', 'Action', wanted['operation'])}{_text('outcome', 'Outcome', wanted['outcome'])}"
        '<button type="submit">Search</button></form>'
    )
    body = Markup(
        f"<p>The newest {limit} matching events (times in UTC) of the namespaces you administer.</p>{filters}"
        f"{table(AUDIT_COLUMNS, rows, empty='No event matches.')}"
    )
    return page("Audit", body, ctx.session, current="Audit")
