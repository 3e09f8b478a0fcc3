"""The console's HTML: every value escaped on the way in, one layout (package data), a few builders."""

from __future__ import annotations

import html
import string
from collections.abc import Iterable, Mapping, Sequence
from functools import cache
from importlib.resources import files
from urllib.parse import urlencode

from starlette.responses import HTMLResponse

from prism.gateway.console.sessions import Session

__all__ = ["Markup", "esc", "form", "link", "next_page", "page", "table", "url"]


class Markup(str):
    """Text that is already HTML (built from escaped parts); everything else is escaped when joined."""

    __slots__ = ()


def esc(value: object) -> Markup:
    """``value`` as HTML text (Markup passes through unchanged)."""
    if isinstance(value, Markup):
        return value
    return Markup(html.escape("" if value is None else str(value), quote=True))


def join(parts: Iterable[object], sep: str = "") -> Markup:
    return Markup(sep.join(esc(p) for p in parts))


def url(path: str, **params: object) -> str:
    """``path`` with the non-empty ``params`` as its query string."""
    query = {k: str(v) for k, v in params.items() if v is not None and v != ""}
    return f"{path}?{urlencode(query)}" if query else path


def link(href: str, text: object, **attrs: str) -> Markup:
    extra = "".join(f' {k.replace("_", "-")}="{esc(v)}"' for k, v in attrs.items())
    return Markup(f'<a href="{esc(href)}"{extra}>{esc(text)}</a>')


def table(
    headers: Sequence[str], rows: Iterable[Sequence[object]], *, empty: str = "Nothing to show."
) -> Markup:
    """A table; without rows, the ``empty`` sentence instead."""
    body = [Markup("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>") for row in rows]
    if not body:
        return Markup(f'<p class="empty">{esc(empty)}</p>')
    head = "".join(f'<th scope="col">{esc(h)}</th>' for h in headers)
    return Markup(
        f'<div class="scroll"><table><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def next_page(href: str) -> Markup:
    """The link to the next page of a listing."""
    return Markup(f"<p>{link(href, 'Next page →', rel='next')}</p>")


def form(
    action: str,
    session: Session,
    button: str,
    fields: Mapping[str, object] | None = None,
    *,
    confirm: str | None = None,
    danger: bool = False,
    inputs: Markup | None = None,
) -> Markup:
    """A POST form carrying the session's CSRF token; ``confirm`` asks before it is sent."""
    hidden = "".join(
        f'<input type="hidden" name="{esc(k)}" value="{esc(v)}">' for k, v in (fields or {}).items()
    )
    ask = f' data-confirm="{esc(confirm)}"' if confirm else ""
    cls = ' class="danger"' if danger else ""
    return Markup(
        f'<form method="post" action="{esc(action)}"{ask} class="inline">'
        f'<input type="hidden" name="csrf" value="{esc(session.csrf)}">{hidden}{inputs or ""}'
        f'<button type="submit"{cls}>{esc(button)}</button></form>'
    )


@cache
def _layout() -> string.Template:
    return string.Template((files("prism.gateway.console") / "templates" / "layout.html").read_text("utf-8"))


_NAV = (
    ("Overview", "/admin/"),
    ("Namespaces", "/admin/namespaces"),
    ("Requests", "/admin/requests"),
    ("Audit", "/admin/audit"),
)

#: Sent with every console page: no framing, scripts and styles only from the console itself.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def page(
    title: str,
    body: Markup,
    session: Session | None,
    *,
    current: str = "",
    flash: str | None = None,
    error: bool = False,
    status: int = 200,
) -> HTMLResponse:
    """A whole console page: the layout around ``body`` (navigation only when signed in)."""
    if session is None:
        nav = Markup("")
        who = Markup("")
        csrf = ""
    else:
        here = ' aria-current="page"'
        nav = join(
            Markup(f'<a href="{href}"{here if name == current else ""}>{name}</a>') for name, href in _NAV
        )
        principal = session.principal
        tenant = f" · tenant {principal.tenant}" if principal.tenant else ""
        who = Markup(
            f'<div class="who"><span>{esc(principal.subject)}{esc(tenant)}</span>'
            f"{form('/admin/logout', session, 'Sign out')}</div>"
        )
        csrf = session.csrf
    note = Markup("")
    if flash:
        role = "alert" if error else "status"
        note = Markup(f'<p class="flash{" error" if error else ""}" role="{role}">{esc(flash)}</p>')
    text = _layout().substitute(title=esc(title), nav=nav, who=who, body=body, flash=note, csrf=esc(csrf))
    return HTMLResponse(text, status, headers=SECURITY_HEADERS)
