"""Namespaces, their live migration, and the key browser: each page a view of the API's answers."""

from __future__ import annotations

import asyncio
import base64
import json
import re
from typing import Any
from urllib.parse import quote

from starlette.responses import RedirectResponse, Response

from prism.gateway.console import pages_namespaces
from prism.gateway.console.core import Context, Refused
from prism.gateway.console.html import SECURITY_HEADERS, Markup, esc, form, link, next_page, page, table, url
from prism.gateway.console.inprocess import ApiAnswer
from prism.migration.migration import allowed_actions

__all__ = ["delete_key", "item", "keys", "migration_action", "migration_start", "namespace", "namespaces"]

#: What each migration action's button says when it asks for confirmation.
_CONFIRM = {
    "backfill": "Copy every item of {ns} to the target store?",
    "verify": "Compare every item of {ns} in both stores?",
    "cutover": "Switch {ns} to the target store once the stores are proven in step?",
    "cutover_forced": "Switch {ns} to the target store WITHOUT a clean verify?",
    "rollback": "Switch {ns} back to the source store?",
    "complete": "Complete the migration of {ns}? The source store stops receiving writes.",
    "abort": "Abort the migration of {ns}? Shadow writes to the target stop.",
}


def _refused(answer_status: int, problem: str) -> Refused:
    return Refused(answer_status if answer_status >= 400 else 502, problem)


async def namespaces(ctx: Context) -> Response:
    answer = await ctx.api.call("GET", "/v1/namespaces")
    if not answer.ok:
        raise _refused(answer.status, answer.problem)
    rows = [
        (
            link(f"/admin/namespaces/{quote(ns['name'], safe='')}", ns["name"]),
            "runtime" if pages_namespaces.is_runtime(ctx, ns["name"]) else "config file",
            "yes" if ns.get("tenant_scoped") else "no",
            ", ".join(ns.get("actions", [])),
        )
        for ns in answer.json()["namespaces"]
    ]
    body = table(
        ("Namespace", "Defined in", "Tenant-scoped", "You may"), rows, empty="No namespace is visible to you."
    )
    if pages_namespaces.may_administer(ctx):
        body = Markup(f"<p>{link('/admin/namespaces/new', 'New namespace', class_='button')}</p>{body}")
    flash = ctx.request.query_params.get("done")
    return page("Namespaces", body, ctx.session, current="Namespaces", flash=flash)


def _section(title: str, content: object) -> Markup:
    return Markup(f"<section><h2>{esc(title)}</h2>{esc(content)}</section>")


def _pairs(rows: list[tuple[str, object]]) -> Markup:
    items = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in rows)
    return Markup(f"<dl>{items}</dl>")


async def namespace(ctx: Context) -> Response:
    name = ctx.request.path_params["ns"]
    answer = await ctx.api.call("GET", f"/v1/namespaces/{name}")
    if not answer.ok:
        raise _refused(answer.status, answer.problem)
    ns = answer.json()
    limits = ns.get("limits") or {}
    facts: list[tuple[str, object]] = [
        ("Health", (ns.get("health") or {}).get("status", "unknown")),
        ("Tenant-scoped", "yes" if ns.get("tenant_scoped") else "no"),
        ("Largest value", f"{ns.get('max_value_bytes')} bytes"),
        ("Default expiry", "none" if ns.get("default_ttl") is None else f"{ns['default_ttl']:g} s"),
        ("Rate limit", pages_namespaces.rate_limits(limits)),
        ("Concurrency limit", limits.get("concurrency") or "none"),
        ("You may", ", ".join(ns.get("actions", []))),
    ]
    admin = "admin" in ns.get("actions", [])
    base = f"/admin/namespaces/{quote(name, safe='')}"
    if admin:
        access = ns.get("access") or {}
        pii = ns.get("pii")
        facts += [
            ("Store", f"{ns.get('store')} ({ns.get('backend')})"),
            ("Readers", ", ".join(access.get("read", []))),
            ("Writers", ", ".join(access.get("write", []))),
            ("Admins", ", ".join(access.get("admin", []))),
            (
                "PII fields",
                "none"
                if not pii
                else ", ".join(pii.get("fields", [])) + (" (encrypted)" if pii.get("encrypt") else ""),
            ),
            ("Audited", "yes" if ns.get("audit", True) else "no"),
        ]
    parts = [Markup(f"<p>{link(f'{base}/keys', 'Browse keys', class_='button')}</p>")]
    parts.append(_section("Settings", _pairs(facts)))
    if admin:
        parts.append(_needs_section(ns))
        parts.append(_cache_section(ns))
        parts.append(await _feed_section(ctx, name))
    parts.append(await _signals_section(ctx, name))
    if admin:
        parts.append(await _migration_section(ctx, name, ns))
    parts.append(_section("Changing settings", _changing(ctx, name, admin)))
    flash = ctx.request.query_params.get("done")
    return page(f"Namespace {name}", Markup("".join(parts)), ctx.session, current="Namespaces", flash=flash)


def _needs_section(ns: dict[str, Any]) -> Markup:
    needs = ns.get("needs")
    if not needs:
        return _section("Declared needs", Markup("<p>None declared: the planner checks nothing.</p>"))
    rows: list[tuple[str, object]] = [
        (field, ("yes" if value else "no") if isinstance(value, bool) else value)
        for field, value in needs.items()
        if value is not None
    ]
    return _section("Declared needs", _pairs(rows))


def _ratio(value: object) -> str:
    return "no reads yet" if not isinstance(value, int | float) else f"{value * 100:.1f}%"


def _cache_section(ns: dict[str, Any]) -> Markup:
    """The cache tiers with this process's counters (the API's ``cache``)."""
    cache = ns.get("cache")
    if not cache:
        return _section("Cache", Markup("<p>Not cached: every read goes to the store.</p>"))
    rows = []
    for tier, t in cache.items():
        where = f"store {t['store']}" if "store" in t else f"in process, at most {t.get('max_items')} items"
        rows.append(
            (
                tier,
                where,
                f"{t.get('ttl'):g} s" if isinstance(t.get("ttl"), int | float) else "",
                _ratio(t.get("hit_ratio")),
                t.get("hits", 0),
                t.get("misses", 0),
                t.get("errors", 0),
                ("degraded" if t.get("degraded") else "ok")
                if tier == "shared"
                else ("evicted by the change feed" if t.get("bound") == "feed" else "bounded by its ttl"),
            )
        )
    body = table(("Tier", "Where", "TTL", "Hit ratio", "Hits", "Misses", "Errors", "State"), rows)
    note = Markup('<p class="hint">Counters of this gateway process since it started.</p>')
    return _section("Cache", Markup(f"{body}{note}"))


async def _feed_section(ctx: Context, name: str) -> Markup:
    """Whether the namespace can be watched: a short ``GET /v1/kv/{ns}/_watch``, closed at its first frame.

    Its lag is not shown: the API gives no measure of it.
    """
    try:
        async with asyncio.timeout(ctx.gateway.config.server.request_timeout):
            text = await _probe_feed(ctx, name)
    except TimeoutError:
        text = "<p>Unknown: the watch did not answer in time.</p>"
    note = '<p class="hint">Its lag is not shown: the API gives no measure of it.</p>'
    return _section("Change feed", Markup(text + note))


async def _probe_feed(ctx: Context, name: str) -> str:
    async with ctx.api.stream(f"/v1/kv/{name}/_watch") as (head, chunks):
        if not head.ok:
            body = b"".join([c async for c in chunks])
            reason = ApiAnswer(head.status, head.headers, body).problem
            return f"<p><strong>Not kept</strong>: {esc(reason)}</p>"
        cursor = ""
        async for chunk in chunks:
            found = re.search(rb"^id: (\S+)$", chunk, re.MULTILINE)
            cursor = found.group(1).decode("utf-8", "replace") if found else ""
            break
        return (
            f"<p><strong>Kept</strong>: <code>GET /v1/kv/{esc(name)}/_watch</code> streams its changes"
            + (f" (the feed is at cursor <code>{esc(cursor)}</code>)" if cursor else "")
            + ".</p>"
        )


async def _signals_section(ctx: Context, name: str) -> Markup:
    answer = await ctx.api.call("GET", f"/v1/namespaces/{name}/signals")
    if not answer.ok:
        return _section("Signals", Markup(f'<p class="flash error">{esc(answer.problem)}</p>'))
    sig = answer.json()
    retry = sig.get("retry") or {}
    rows: list[tuple[str, object]] = [
        ("Latency target", f"{sig['latency_target_ms']:g} ms"),
        ("Deadline", f"{sig['latency_max_ms']:g} ms"),
        ("Hedge a read after", f"{sig['hedge_after_ms']:g} ms"),
        ("Retry", f"{retry.get('max_attempts')} attempts, {retry.get('backoff_ms')} ms apart"),
        ("Page size", f"{sig['page_size_bytes']} bytes"),
        (
            "Compression",
            ", ".join(sig.get("compression", [])) + f" above {sig['compress_above_bytes']} bytes",
        ),
        ("Ask again after", f"{sig['refresh_after_s']:g} s"),
    ]
    return _section("Signals", _pairs(rows))


def _changing(ctx: Context, name: str, admin: bool) -> Markup:
    """Change and delete for a runtime namespace's admins; where to change it otherwise."""
    if not pages_namespaces.is_runtime(ctx, name):
        return Markup(
            "<p>This namespace is declared in the gateway's config file: it is read-only here; "
            "change it in the config file.</p>"
        )
    if not admin or not pages_namespaces.may_administer(ctx):
        return Markup("<p>A runtime namespace; only its namespace admins may change or delete it.</p>")
    change = link(f"/admin/namespaces/{quote(name, safe='')}/edit", "Change settings", class_="button")
    return Markup(
        f"<p>A runtime namespace, placed by the planner.</p><p>{change}</p>"
        f"{pages_namespaces.delete_form(ctx, name)}"
    )


async def _migration_section(ctx: Context, name: str, ns: dict[str, Any]) -> Markup:
    base = f"/admin/namespaces/{quote(name, safe='')}/migration"
    answer = await ctx.api.call("GET", f"/v1/namespaces/{name}/migration")
    content: list[Markup] = []
    status: dict[str, Any] | None = answer.json() if answer.ok else None
    if answer.status == 400:
        return _section("Migration", Markup(f"<p>{esc(answer.problem)}</p>"))
    if not answer.ok and answer.status != 404:
        return _section("Migration", Markup(f'<p class="flash error">{esc(answer.problem)}</p>'))
    finished = status is None or status["phase"] in ("complete", "aborted")
    if status is not None:
        backfill = status["backfill"]
        verify = status["verify"]
        shadow = status["shadow"]
        content.append(
            _pairs(
                [
                    ("Phase", status["phase"]),
                    ("From → to", f"{status['from']} → {status['to']}"),
                    ("Serving from", status["primary"]),
                    (
                        "Backfill",
                        f"{backfill['copied']} copied, {backfill['skipped']} skipped"
                        + (" (done)" if backfill["done"] else ""),
                    ),
                    (
                        "Verify",
                        f"{verify['checked']} checked, {verify['missing']} missing, "
                        f"{verify['extra']} extra, {verify['different']} different"
                        + (" (done)" if verify["done"] else ""),
                    ),
                    (
                        "Shadow writes",
                        f"{shadow['writes']} written, {shadow['failed']} failed, {shadow['pending']} pending",
                    ),
                    ("Error", status.get("error") or "none"),
                ]
            )
        )
        content.append(
            Markup('<p class="hint" data-refresh="2">This section refreshes while a step runs.</p>')
            if status["phase"] in ("backfilling", "verifying", "cutting_over")
            else Markup("")
        )
        buttons = []
        for action in allowed_actions(status["phase"], backfill_done=backfill["done"]):
            verb = "cutover" if action == "cutover_forced" else action
            fields = {"force": "true"} if action == "cutover_forced" else {}
            label = "Force cutover" if action == "cutover_forced" else action.capitalize()
            buttons.append(
                form(
                    f"{base}/{verb}",
                    ctx.session,
                    label,
                    fields,
                    confirm=_CONFIRM[action].format(ns=name),
                    danger=action in ("abort", "cutover_forced", "complete"),
                )
            )
        content.append(Markup(f'<div class="actions">{"".join(buttons)}</div>'))
    else:
        content.append(Markup("<p>No migration has been started.</p>"))
    if finished:
        here = ns.get("store")
        choices = "".join(
            f'<option value="{esc(s)}">{esc(s)}</option>' for s in ctx.gateway.stores if s != here
        )
        if choices:
            inputs = Markup(
                '<label for="migrate-to">Target store</label>'
                f'<select id="migrate-to" name="to">{choices}</select>'
            )
            content.append(
                form(
                    base,
                    ctx.session,
                    "Start migration",
                    inputs=inputs,
                    confirm=f"Start migrating {name}? Shadow writes to the target begin at once.",
                )
            )
    return _section("Migration", Markup("".join(content)))


async def migration_start(ctx: Context) -> Response:
    name = ctx.request.path_params["ns"]
    to = ctx.form.get("to", "")
    if not to:
        raise Refused(400, "to: choose the store to migrate to")
    answer = await ctx.api.call(
        "POST",
        f"/v1/namespaces/{name}/migration",
        body=json.dumps({"to": to}).encode(),
        content_type="application/json",
    )
    if not answer.ok:
        raise _refused(answer.status, answer.problem)
    return _back(name, f"migration to {to} started")


async def migration_action(ctx: Context) -> Response:
    name = ctx.request.path_params["ns"]
    action = ctx.request.path_params["action"]
    body = {"force": True} if ctx.form.get("force") == "true" else {}
    answer = await ctx.api.call(
        "POST",
        f"/v1/namespaces/{name}/migration/{action}",
        body=json.dumps(body).encode(),
        content_type="application/json",
    )
    if not answer.ok:
        raise _refused(answer.status, answer.problem)
    return _back(name, f"{action}: {answer.json().get('phase', 'done')}")


def _back(name: str, done: str) -> Response:
    return RedirectResponse(
        url(f"/admin/namespaces/{quote(name, safe='')}", done=done), 303, headers=SECURITY_HEADERS
    )


async def keys(ctx: Context) -> Response:
    name = ctx.request.path_params["ns"]
    params = ctx.request.query_params
    prefix = params.get("prefix", "")
    token = params.get("page_token") or None
    size = ctx.gateway.config.admin.page_size
    answer = await ctx.api.call(
        "GET", f"/v1/kv/{name}", query={"prefix": prefix, "limit": size, "page_token": token}
    )
    if not answer.ok:
        raise _refused(answer.status, answer.problem)
    found = answer.json()
    base = f"/admin/namespaces/{quote(name, safe='')}"
    rows = [(link(url(f"{base}/item", key=k), k),) for k in found["keys"]]
    tenant = ctx.session.principal.tenant
    scope = Markup(f"<p>Keys of tenant <strong>{esc(tenant)}</strong> only.</p>") if tenant else Markup("")
    search = Markup(
        f'<form method="get" action="{esc(base)}/keys" class="search"><label for="prefix">Key prefix</label>'
        f'<input id="prefix" name="prefix" value="{esc(prefix)}" autocomplete="off">'
        '<button type="submit">Scan</button></form>'
    )
    more = Markup("")
    if found.get("next_page_token"):
        more = next_page(url(f"{base}/keys", prefix=prefix, page_token=found["next_page_token"]))
    body = Markup(f"{scope}{search}{table(('Key',), rows, empty='No key under this prefix.')}{more}")
    return page(f"Keys of {name}", body, ctx.session, current="Namespaces", flash=params.get("done"))


def _render_value(value: bytes, view: str) -> str:
    if view == "hex":
        lines = []
        for at in range(0, len(value), 16):
            chunk = value[at : at + 16]
            lines.append(
                f"{at:08x}  {chunk.hex(' '):<47}  {''.join(chr(b) if 32 <= b < 127 else '.' for b in chunk)}"
            )
        return "\n".join(lines)
    if view == "json":
        try:
            return json.dumps(json.loads(value), indent=2, ensure_ascii=False, sort_keys=True)
        except ValueError:
            return "(this value is not JSON; showing it as text)\n" + value.decode("utf-8", "replace")
    return value.decode("utf-8", "replace")


def _through_bulk(key: str) -> bool:
    """Whether ``key`` is read and deleted through the bulk routes: every route under a namespace
    (``_watch``, ``_bulk/...``, ``_transact``) starts with ``_``, so ``GET /v1/kv/{ns}/_watch``
    opens a change feed instead of reading the key. Other keys take the single-key routes, whose
    audit events name the key."""
    return key.startswith("_")


async def _read_key(ctx: Context, name: str, key: str) -> tuple[bytes, str, str, str]:
    """The value, etag, content type and expiry ("never" without a ttl) of one key."""
    if not _through_bulk(key):
        answer = await ctx.api.call("GET", f"/v1/kv/{name}/{key}")
        if not answer.ok:
            raise _refused(answer.status, answer.problem)
        return (
            answer.body,
            answer.headers.get("etag", "").strip('"'),
            answer.headers.get("content-type", "application/octet-stream"),
            answer.headers.get("x-prism-expires-at", "never"),
        )
    answer = await ctx.api.call(
        "POST",
        f"/v1/kv/{name}/_bulk/get",
        body=json.dumps({"keys": [key]}).encode(),
        content_type="application/json",
    )
    if not answer.ok:
        raise _refused(answer.status, answer.problem)
    entry: dict[str, Any] = answer.json()["items"][0]
    if not entry.get("found"):
        raise Refused(404, f"key: {key!r} is not in {name}")
    return (
        base64.b64decode(entry["value"]),
        entry.get("etag", ""),
        entry.get("content_type") or "application/octet-stream",
        entry.get("expires_at") or "never",
    )


async def item(ctx: Context) -> Response:
    name = ctx.request.path_params["ns"]
    key = ctx.request.query_params.get("key", "")
    if not key:
        raise Refused(400, "key: name the key to show")
    value, etag, content_type, expires = await _read_key(ctx, name, key)
    default = "json" if "json" in content_type else "text"
    view = ctx.request.query_params.get("view", default)
    if view not in ("text", "json", "hex"):
        raise Refused(400, "view: one of text, json, hex")
    base = f"/admin/namespaces/{quote(name, safe='')}"
    views = " ".join(
        (
            f'<strong aria-current="true">{v}</strong>'
            if v == view
            else link(url(f"{base}/item", key=key, view=v), v)
        )
        for v in ("text", "json", "hex")
    )
    meta = _pairs(
        [
            ("ETag", etag),
            ("Expires", expires),
            ("Content type", content_type),
            ("Size", f"{len(value)} bytes"),
        ]
    )
    delete = form(
        f"{base}/item/delete",
        ctx.session,
        "Delete",
        {"key": key},
        confirm=f"Delete key {key!r} from {name}?",
        danger=True,
    )
    preview = ctx.gateway.config.admin.value_preview_bytes
    shown = value[:preview]
    cut = Markup("")
    if len(value) > preview:
        cut = Markup(f'<p class="hint">Showing the first {preview} of {len(value)} bytes.</p>')
    body = Markup(
        f"<p>{link(url(f'{base}/keys'), '← Keys')}</p>{meta}<p class='views'>View as: {views}</p>{cut}"
        f'<pre class="value" tabindex="0">{esc(_render_value(shown, view))}</pre>{delete}'
    )
    return page(f"{name} / {key}", body, ctx.session, current="Namespaces")


async def delete_key(ctx: Context) -> Response:
    name = ctx.request.path_params["ns"]
    key = ctx.form.get("key", "")
    if not key:
        raise Refused(400, "key: name the key to delete")
    if not _through_bulk(key):
        answer = await ctx.api.call("DELETE", f"/v1/kv/{name}/{key}")
        if not answer.ok:
            raise _refused(answer.status, answer.problem)
    else:
        answer = await ctx.api.call(
            "POST",
            f"/v1/kv/{name}/_bulk/delete",
            body=json.dumps({"items": [{"key": key}]}).encode(),
            content_type="application/json",
        )
        if not answer.ok:
            raise _refused(answer.status, answer.problem)
        result = answer.json()["results"][0]
        if not result["ok"]:
            error = result.get("error", {})
            status = 404 if error.get("code") == "NOT_FOUND" else 409
            raise Refused(status, f"{error.get('code', 'REFUSED')}: {error.get('detail', 'not deleted')}")
    base = f"/admin/namespaces/{quote(name, safe='')}"
    return RedirectResponse(url(f"{base}/keys", done=f"deleted {key}"), 303, headers=SECURITY_HEADERS)
