"""The console's request handling: who is signed in, the CSRF check, and the API on their behalf."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from prism.gateway.console.html import SECURITY_HEADERS, Markup, page
from prism.gateway.console.inprocess import InProcessApi
from prism.gateway.console.sessions import COOKIE, Session, Sessions
from prism.gateway.runtime import Gateway

__all__ = ["MAX_FORM_BYTES", "Context", "Handler", "Refused", "read_form", "signed_in"]

#: Largest console form accepted, in bytes.
MAX_FORM_BYTES = 64 * 1024


class Refused(Exception):
    """A console request refused before anything was done (shown as a page with ``status``)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(slots=True)
class Context:
    """One console request of a signed-in principal: its session, the API as that principal, the form."""

    request: Request
    session: Session
    api: InProcessApi
    gateway: Gateway
    form: dict[str, str]


Handler = Callable[[Context], Awaitable[Response]]


async def read_form(request: Request) -> dict[str, str]:
    """An ``application/x-www-form-urlencoded`` body (each field once); 413 past MAX_FORM_BYTES."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise Refused(413, f"the form is over {MAX_FORM_BYTES} bytes")
    fields: dict[str, str] = {}
    for name, value in parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True):
        if name in fields:
            raise Refused(400, f"the form field {name!r} is sent twice")
        fields[name] = value
    return fields


def signed_in(
    sessions: Sessions, gateway: Gateway, handler: Handler
) -> Callable[[Request], Awaitable[Response]]:
    """``handler`` for signed-in principals only; a POST must carry the session's CSRF token.

    Without a live session a GET goes to the sign-in page and anything else is refused
    (401). A POST without the token, or with another, is refused (403) before the
    handler runs, so nothing is changed.
    """
    secure = gateway.config.server.tls is not None
    timeout = gateway.config.server.request_timeout

    async def route(request: Request) -> Response:
        session = sessions.get(request.cookies.get(COOKIE))
        if session is None:
            if request.method == "GET":
                return RedirectResponse(
                    f"/admin/login?next={request.url.path}", 303, headers=SECURITY_HEADERS
                )
            return page(
                "Signed out",
                Markup('<p>Sign in again: <a href="/admin/login">sign in</a>.</p>'),
                None,
                flash="your session has ended or never began",
                error=True,
                status=401,
            )
        form: dict[str, str] = {}
        try:
            if request.method != "GET":
                form = await read_form(request)
                if not session.check_csrf(form.get("csrf")):
                    raise Refused(403, "the form's CSRF token is missing or wrong; nothing was changed")
            peer = request.scope.get("client")
            api = InProcessApi(
                request.app,
                session.credential,
                secure=secure,
                timeout=timeout,
                client=(str(peer[0]), int(peer[1])) if peer else None,
            )
            return await handler(Context(request, session, api, gateway, form))
        except Refused as exc:
            return page("Refused", Markup(""), session, flash=exc.message, error=True, status=exc.status)

    return route
