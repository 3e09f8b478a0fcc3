"""Runtime namespaces from the console: a form, the planner's dry run, a confirmed apply, delete.

Each step is a call to ``PUT``/``DELETE /v1/namespaces/{ns}`` with the signed-in
principal's credential, so the API decides who may create, change or delete, checks
every field and names the one it refuses. The console only turns the form into the
API's body and shows the answer: the plan (the chosen store and the stores passed
over, each with its failed needs), a refusal with its reasons, or the result.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from starlette.responses import RedirectResponse, Response

from prism.gateway.console.core import Context, Refused
from prism.gateway.console.html import SECURITY_HEADERS, Markup, esc, form, page, table, url

__all__ = ["apply", "delete", "edit", "is_runtime", "may_administer", "new", "plan", "rate_limits"]

#: The needs the form asks for: (field, label, kind) with kind ``number``, ``int`` or a choice list.
_NEEDS: tuple[tuple[str, str, object], ...] = (
    ("access_pattern", "Access pattern", ("kv", "records", "timeseries")),
    ("read_rps", "Reads per second", "number"),
    ("write_rps", "Writes per second", "number"),
    ("item_bytes_p99", "Item size p99 (bytes)", "int"),
    ("total_bytes", "Total size (bytes)", "int"),
    ("ttl_seconds", "Items expire after (s)", "number"),
    ("consistency", "Consistency", ("eventual", "strong")),
    ("latency_p99_ms", "Latency p99 (ms)", "number"),
    ("transactions", "Transactions", ("false", "true")),
    ("durability", "Durability", ("", "memory", "disk", "replicated")),
)


def may_administer(ctx: Context) -> bool:
    """Whether to offer the forms (the API still decides on every call)."""
    roles = ctx.session.principal.roles
    return ctx.gateway.runtime_namespaces is not None and not roles.isdisjoint(
        ctx.gateway.config.auth.namespace_admin_roles
    )


def is_runtime(ctx: Context, name: str) -> bool:
    """Whether ``name`` is a runtime namespace (config-file namespaces are read-only)."""
    runtime = ctx.gateway.runtime_namespaces
    return runtime is not None and name in runtime.served and name not in runtime.yaml_names


def rate_limits(limits: dict[str, object]) -> str:
    """A namespace's rate limits as one line: its own ``rate``, else those of its declared rates."""
    rate = limits.get("rate")
    if isinstance(rate, int | float):
        return f"{rate:g}/s, burst {limits.get('burst')}"
    parts = [
        f"{side} {rate:g}/s, burst {limits.get(f'{side}_burst')}"
        for side in ("read", "write")
        if isinstance(rate := limits.get(f"{side}_rate"), int | float)
    ]
    return "; ".join(parts) or "none"


def _refused(status: int, problem: str) -> Refused:
    return Refused(status if status >= 400 else 502, problem)


def _number(field: str, raw: str, kind: object) -> object:
    """``raw`` as the API's type; text that is not a number goes as it is, for the API to name."""
    raw = raw.strip()
    if raw == "":
        return None
    try:
        value = float(raw) if kind == "number" else int(raw)
    except ValueError:
        return raw
    return value


def _roles(raw: str) -> list[str]:
    return [r.strip() for r in raw.replace("\n", ",").split(",") if r.strip()]


def body_from_form(fields: dict[str, str]) -> dict[str, Any]:
    """The body of ``PUT /v1/namespaces/{ns}`` the form describes (empty fields left out)."""
    needs: dict[str, Any] = {}
    for field, _label, kind in _NEEDS:
        raw = fields.get(f"needs.{field}", "")
        if isinstance(kind, tuple):
            if raw == "":
                continue
            needs[field] = (raw == "true") if field == "transactions" else raw
        else:
            value = _number(field, raw, kind)
            if value is not None:
                needs[field] = value
    body: dict[str, Any] = {
        "needs": needs,
        "access": {
            "read": _roles(fields.get("access.read", "")),
            "write": _roles(fields.get("access.write", "")),
            "admin": _roles(fields.get("access.admin", "")),
        },
        "tenant_scoped": fields.get("tenant_scoped") == "true",
        "audit": fields.get("audit") == "true",
    }
    pii = _roles(fields.get("pii.fields", ""))
    if pii:
        body["pii"] = {"fields": pii, "encrypt": fields.get("pii.encrypt") == "true"}
    for field in ("max_value_bytes", "default_ttl"):
        value = _number(field, fields.get(field, ""), "int" if field == "max_value_bytes" else "number")
        if value is not None:
            body[field] = value
    store = fields.get("store", "")
    if store:
        body["store"] = store
    return body


def _values_of(detail: dict[str, Any]) -> dict[str, str]:
    """The form's fields filled from ``GET /v1/namespaces/{ns}`` (for editing)."""
    values: dict[str, str] = {}
    for field, value in (detail.get("needs") or {}).items():
        if value is None:
            continue
        values[f"needs.{field}"] = (
            ("true" if value else "false")
            if isinstance(value, bool)
            else f"{value:g}"
            if isinstance(value, float)
            else str(value)
        )
    access = detail.get("access") or {}
    for role in ("read", "write", "admin"):
        values[f"access.{role}"] = ", ".join(access.get(role, []))
    pii = detail.get("pii")
    if pii:
        values["pii.fields"] = ", ".join(pii.get("fields", []))
        values["pii.encrypt"] = "true" if pii.get("encrypt") else ""
    values["tenant_scoped"] = "true" if detail.get("tenant_scoped") else ""
    values["audit"] = "true" if detail.get("audit", True) else ""
    if detail.get("default_ttl") is not None:
        values["default_ttl"] = f"{detail['default_ttl']:g}"
    values["max_value_bytes"] = str(detail.get("max_value_bytes", ""))
    return values


def _input(name: str, label: str, value: str, *, kind: str = "text", hint: str = "") -> str:
    ident = "f-" + name.replace(".", "-").replace("_", "-")
    described = f' aria-describedby="{ident}-hint"' if hint else ""
    note = f'<small id="{ident}-hint">{esc(hint)}</small>' if hint else ""
    mode = ' inputmode="decimal"' if kind == "number" else ""
    return (
        f'<label for="{ident}">{esc(label)}</label>'
        f'<input id="{ident}" name="{esc(name)}" value="{esc(value)}"{mode}{described} '
        f'autocomplete="off">{note}'
    )


def _select(name: str, label: str, choices: tuple[str, ...], value: str) -> str:
    ident = "f-" + name.replace(".", "-").replace("_", "-")
    options = "".join(
        f'<option value="{esc(c)}"{" selected" if c == value else ""}>{esc(c or "(not declared)")}</option>'
        for c in choices
    )
    return (
        f'<label for="{ident}">{esc(label)}</label><select id="{ident}" name="{esc(name)}">{options}</select>'
    )


def _check(name: str, label: str, checked: bool) -> str:
    ident = "f-" + name.replace(".", "-").replace("_", "-")
    on = " checked" if checked else ""
    return (
        f'<label for="{ident}" class="check"><input type="checkbox" id="{ident}" name="{esc(name)}" '
        f'value="true"{on}> {esc(label)}</label>'
    )


def _form(ctx: Context, name: str | None, values: dict[str, str], stores: list[str]) -> Markup:
    """The namespace form; ``name`` None asks for the name (creating)."""
    v = values.get
    parts = ['<form method="post" action="/admin/namespaces/plan" class="nsform">']
    parts.append(f'<input type="hidden" name="csrf" value="{esc(ctx.session.csrf)}">')
    if name is None:
        parts.append(_input("name", "Name", v("name", ""), hint="Letters, digits, '_', '-', '.'"))
    else:
        parts.append(f'<input type="hidden" name="name" value="{esc(name)}">')
    parts.append("<fieldset><legend>Needs (the planner places the namespace on a store meeting all)</legend>")
    for field, label, kind in _NEEDS:
        key = f"needs.{field}"
        if isinstance(kind, tuple):
            parts.append(_select(key, label, kind, v(key, "")))
        else:
            parts.append(_input(key, label, v(key, ""), kind="number"))
    parts.append("</fieldset><fieldset><legend>Access (roles, comma-separated)</legend>")
    parts.append(_input("access.read", "Readers", v("access.read", "reader, writer, admin")))
    parts.append(_input("access.write", "Writers", v("access.write", "writer, admin")))
    parts.append(_input("access.admin", "Admins", v("access.admin", "admin")))
    parts.append("</fieldset><fieldset><legend>Limits and expiry</legend>")
    parts.append(
        _input(
            "max_value_bytes",
            "Largest value (bytes)",
            v("max_value_bytes", ""),
            kind="number",
            hint="Empty: the store's largest. The rate limit follows the declared reads and writes.",
        )
    )
    parts.append(_input("default_ttl", "Default expiry (s)", v("default_ttl", ""), kind="number"))
    parts.append("</fieldset><fieldset><legend>Personal data</legend>")
    parts.append(_input("pii.fields", "PII fields", v("pii.fields", ""), hint="JSON fields, comma-separated"))
    parts.append(_check("pii.encrypt", "Encrypt PII fields", v("pii.encrypt") == "true"))
    parts.append("</fieldset><fieldset><legend>Other</legend>")
    if name is None:
        parts.append(_check("tenant_scoped", "Tenant-scoped", v("tenant_scoped") == "true"))
    elif v("tenant_scoped") == "true":
        parts.append('<input type="hidden" name="tenant_scoped" value="true">')
    parts.append(_check("audit", "Audited", v("audit", "true") == "true"))
    if name is None:
        parts.append(_select("store", "Store (empty: the planner chooses)", ("", *stores), v("store", "")))
    parts.append("</fieldset>")
    parts.append('<button type="submit">Plan</button></form>')
    return Markup("".join(parts))


async def new(ctx: Context) -> Response:
    if ctx.gateway.runtime_namespaces is None:
        raise Refused(501, "runtime namespaces are turned off (control.store, control.namespaces.enabled)")
    if not may_administer(ctx):
        raise Refused(403, "you may not create namespaces (auth.namespace_admin_roles)")
    body = Markup(
        "<p>Declare what the namespace needs; <strong>Plan</strong> asks the planner where it would go "
        "without changing anything.</p>"
    ) + _form(ctx, None, {}, list(ctx.gateway.stores))
    return page("New namespace", Markup(body), ctx.session, current="Namespaces")


async def edit(ctx: Context) -> Response:
    name = ctx.request.path_params["ns"]
    answer = await ctx.api.call("GET", f"/v1/namespaces/{name}")
    if not answer.ok:
        raise _refused(answer.status, answer.problem)
    detail = answer.json()
    if "admin" not in detail.get("actions", []) or not may_administer(ctx):
        raise Refused(403, f"you may not change namespace {name!r}")
    if not is_runtime(ctx, name):
        raise Refused(409, f"namespace {name!r} is declared in the config file; change it there")
    body = Markup(
        f"<p>The namespace stays on store <strong>{esc(detail.get('store'))}</strong>; changed needs "
        "are checked there.</p>"
    ) + _form(ctx, name, _values_of(detail), [])
    return page(f"Change {name}", Markup(body), ctx.session, current="Namespaces")


def _fails(stores: list[dict[str, Any]]) -> Markup:
    rows = []
    for store in stores:
        for fail in store.get("fails", []):
            has = fail.get("has")
            rows.append(
                (
                    store.get("store"),
                    fail.get("need"),
                    fail.get("wanted"),
                    "not declared" if has is None else has,
                )
            )
    return table(("Store", "Need", "Wanted", "Has"), rows, empty="No store was passed over.")


async def plan(ctx: Context) -> Response:
    """The dry run: the planner's decision and why, with the confirmed apply (or the refusal)."""
    name = ctx.form.get("name", "").strip()
    if not name:
        raise Refused(400, "name: name the namespace")
    body = body_from_form(ctx.form)
    encoded = json.dumps(body, sort_keys=True)
    answer = await ctx.api.call(
        "PUT",
        f"/v1/namespaces/{name}",
        query={"dry_run": "true"},
        body=encoded.encode(),
        content_type="application/json",
    )
    values = {k: v for k, v in ctx.form.items() if k != "csrf"}
    editing = is_runtime(ctx, name)
    again = _form(ctx, name if editing else None, values, [] if editing else list(ctx.gateway.stores))
    if answer.status == 422:
        problem = answer.json() or {}
        reasons = Markup(
            f'<section><h2>Refused</h2><p class="flash error" role="alert">{esc(answer.problem)}</p>'
            f"{_fails(problem.get('stores') or [])}</section>"
        )
        return page(
            f"Plan for {name}",
            Markup(reasons + Markup(f"<section><h2>Change the needs</h2>{again}</section>")),
            ctx.session,
            current="Namespaces",
            status=422,
        )
    if not answer.ok:
        return page(
            f"Plan for {name}",
            Markup(f"<section><h2>Change the form</h2>{again}</section>"),
            ctx.session,
            current="Namespaces",
            flash=answer.problem,
            error=True,
            status=answer.status if answer.status >= 400 else 502,
        )
    decision = answer.json()
    limits = decision.get("limits") or {}
    verb = "create" if decision.get("created") else "change"
    facts = (
        f"<dl><dt>Namespace</dt><dd>{esc(name)}</dd>"
        f"<dt>Would {verb} it on store</dt><dd data-plan-store>{esc(decision.get('store'))}</dd>"
        "<dt>Rate limits from the declared rates</dt><dd>" + esc(rate_limits(limits)) + "</dd></dl>"
    )
    passed = decision.get("refused") or []
    why = (
        Markup("<h3>Stores passed over before it</h3>") + _fails(passed)
        if passed
        else Markup("<p>The first store in the config's order meets every need.</p>")
    )
    apply_form = form(
        "/admin/namespaces/apply",
        ctx.session,
        f"Apply: {verb} {name}",
        {"name": name, "body": encoded},
        confirm=f"{verb.capitalize()} namespace {name} on store {decision.get('store')}?",
    )
    content = Markup(
        f'<section><h2>The planner\'s decision</h2><p class="hint">A dry run: nothing has changed yet.</p>'
        f"{facts}{why}{apply_form}</section><section><h2>Change the form</h2>{again}</section>"
    )
    return page(f"Plan for {name}", content, ctx.session, current="Namespaces")


async def apply(ctx: Context) -> Response:
    name = ctx.form.get("name", "").strip()
    raw = ctx.form.get("body", "")
    if not name:
        raise Refused(400, "name: name the namespace")
    try:
        json.loads(raw)
    except ValueError:
        raise Refused(400, "body: the planned definition is not JSON; plan again") from None
    answer = await ctx.api.call(
        "PUT",
        f"/v1/namespaces/{name}",
        body=raw.encode(),
        content_type="application/json",
    )
    if not answer.ok:
        raise _refused(answer.status, answer.problem)
    result = answer.json()
    done = f"{'created' if result.get('created') else 'changed'} on store {result.get('store')}"
    return RedirectResponse(
        url(f"/admin/namespaces/{quote(name, safe='')}", done=done), 303, headers=SECURITY_HEADERS
    )


async def delete(ctx: Context) -> Response:
    name = ctx.request.path_params["ns"]
    purge = ctx.form.get("purge") == "true"
    runtime = ctx.gateway.runtime_namespaces
    # A delete waits out requests in flight, then may purge: longer than one request.
    answer = await ctx.api.call(
        "DELETE",
        f"/v1/namespaces/{name}",
        query={"purge": "true" if purge else None},
        within=None if runtime is None else runtime.delete_timeout() + 1.0,
    )
    if not answer.ok:
        raise _refused(answer.status, answer.problem)
    result = answer.json()
    done = f"deleted {name}" + (f", {result.get('purged_records', 0)} records purged" if purge else "")
    return RedirectResponse(url("/admin/namespaces", done=done), 303, headers=SECURITY_HEADERS)


def delete_form(ctx: Context, name: str) -> Markup:
    """Delete, with a purge checkbox, asking first."""
    purge = Markup(_check("purge", "Purge its data too", False))
    return form(
        f"/admin/namespaces/{quote(name, safe='')}/delete",
        ctx.session,
        "Delete namespace",
        confirm=f"Delete namespace {name}? With purge, its data is deleted too.",
        danger=True,
        inputs=purge,
    )
