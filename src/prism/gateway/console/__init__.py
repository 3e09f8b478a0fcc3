"""The admin console at ``/admin``: see and steer a running gateway in a browser.

Off unless ``admin.enabled`` (on in the zero-config demo). A principal signs in with an
API key or a JWT, which is exchanged for a session cookie (see :mod:`.sessions`).
Every page and every button is a call to the gateway's own HTTP API made in-process
with that principal's credential (:mod:`.inprocess`), so the console shows and does
exactly what the principal's roles allow through the API, audited as the API is. The
Audit page is the exception: it reads the audit sink itself (there is no API for it)
and filters the events by the principal's roles and tenant.
Pages are server-rendered HTML with one small script (``static/console.js``) for
confirmations, live charts over SSE and live request events; nothing is loaded
from anywhere else.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator
from importlib.resources import files
from typing import Any

import jwt
import msgspec
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from prism.errors import AuthError
from prism.gateway.audit import AuditUnavailable
from prism.gateway.console import pages_data, pages_namespaces, pages_ops
from prism.gateway.console.core import Context, Refused, read_form, signed_in
from prism.gateway.console.html import SECURITY_HEADERS, Markup, esc, page, table
from prism.gateway.console.overview import Sampler, streaming_counts
from prism.gateway.console.sessions import COOKIE, AttemptLimiter, Sessions, SessionsFull
from prism.gateway.pipeline import audit_event
from prism.gateway.policy import can_see
from prism.gateway.runtime import Gateway
from prism.model import Principal
from prism.streaming.config import parse_config

__all__ = ["Console"]

#: The cookie carrying the sign-in form's CSRF token until a session exists.
LOGIN_COOKIE = "prism_console_login"
_STATIC = {"console.css": "text/css; charset=utf-8", "console.js": "text/javascript; charset=utf-8"}


class Console:
    """The console's routes and its overview sampler, for one gateway."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        settings = gateway.config.admin
        self.sessions = Sessions(
            settings.session_ttl, settings.max_sessions, settings.max_sessions_per_principal
        )
        self.attempts = AttemptLimiter(settings.login_rate, settings.login_burst)
        self.sampler = Sampler(gateway, settings.sample_interval, settings.window)
        self.secure = gateway.config.server.tls is not None
        #: The streaming settings (already checked when the gateway started), for the overview.
        self.streaming = parse_config(gateway.config.streaming, gateway.config.handlers)

    async def start(self) -> None:
        """Begin sampling the overview's numbers (after the stores are open)."""
        await self.sampler.start()

    async def stop(self) -> None:
        """Stop sampling and end every session."""
        await self.sampler.stop()
        self.sessions.close_all()

    def routes(self) -> list[BaseRoute]:
        """The ``/admin`` routes."""

        def guarded(handler: Any) -> Any:
            return signed_in(self.sessions, self.gateway, handler)

        return [
            Route("/admin", self._to_root, methods=["GET"]),
            Route("/admin/", guarded(self.overview), methods=["GET"]),
            Route("/admin/overview/stream", guarded(self.overview_stream), methods=["GET"]),
            Route("/admin/login", self.login_page, methods=["GET"]),
            Route("/admin/login", self.login, methods=["POST"]),
            Route("/admin/logout", guarded(self.logout), methods=["POST"]),
            Route("/admin/static/{name}", self.static, methods=["GET"]),
            Route("/admin/namespaces", guarded(pages_data.namespaces), methods=["GET"]),
            Route("/admin/namespaces/new", guarded(pages_namespaces.new), methods=["GET"]),
            Route("/admin/namespaces/plan", guarded(pages_namespaces.plan), methods=["POST"]),
            Route("/admin/namespaces/apply", guarded(pages_namespaces.apply), methods=["POST"]),
            Route("/admin/namespaces/{ns}", guarded(pages_data.namespace), methods=["GET"]),
            Route("/admin/namespaces/{ns}/edit", guarded(pages_namespaces.edit), methods=["GET"]),
            Route("/admin/namespaces/{ns}/delete", guarded(pages_namespaces.delete), methods=["POST"]),
            Route("/admin/namespaces/{ns}/migration", guarded(pages_data.migration_start), methods=["POST"]),
            Route(
                "/admin/namespaces/{ns}/migration/{action}",
                guarded(pages_data.migration_action),
                methods=["POST"],
            ),
            Route("/admin/namespaces/{ns}/keys", guarded(pages_data.keys), methods=["GET"]),
            Route("/admin/namespaces/{ns}/item", guarded(pages_data.item), methods=["GET"]),
            Route("/admin/namespaces/{ns}/item/delete", guarded(pages_data.delete_key), methods=["POST"]),
            Route("/admin/requests", guarded(pages_ops.requests), methods=["GET"]),
            Route("/admin/requests/{request_id}", guarded(pages_ops.request_detail), methods=["GET"]),
            Route("/admin/requests/{request_id}/events", guarded(pages_ops.request_events), methods=["GET"]),
            Route("/admin/requests/{request_id}/cancel", guarded(pages_ops.cancel), methods=["POST"]),
            Route("/admin/dead-letters", guarded(pages_ops.dead_letters), methods=["GET"]),
            Route(
                "/admin/dead-letters/{request_id}/retry",
                guarded(pages_ops.retry_dead_letter),
                methods=["POST"],
            ),
            Route(
                "/admin/dead-letters/{request_id}/discard",
                guarded(pages_ops.discard_dead_letter),
                methods=["POST"],
            ),
            Route("/admin/audit", guarded(pages_ops.audit), methods=["GET"]),
        ]

    # -- signing in and out ----------------------------------------------------------------

    async def _to_root(self, request: Request) -> Response:
        return RedirectResponse("/admin/", 308)

    def _login_form(
        self, token: str, next_path: str, message: str | None = None, status: int = 200
    ) -> Response:
        open_door = not self.gateway.config.auth.enabled
        hint = (
            "<p>This gateway has no authentication configured: leave the credential empty to sign in as "
            "the anonymous principal.</p>"
            if open_door
            else "<p>Sign in with an API key or a JSON Web Token the gateway accepts.</p>"
        )
        body = Markup(
            f'{hint}<form method="post" action="/admin/login" class="login">'
            f'<input type="hidden" name="csrf" value="{esc(token)}">'
            f'<input type="hidden" name="next" value="{esc(next_path)}">'
            "<fieldset><legend>Credential</legend>"
            '<label><input type="radio" name="kind" value="api_key" checked> API key</label>'
            '<label><input type="radio" name="kind" value="jwt"> JSON Web Token</label></fieldset>'
            '<label for="credential">API key or token</label>'
            '<input id="credential" name="credential" type="password" autocomplete="current-password" '
            f"{'' if open_door else 'required '}autofocus>"
            '<button type="submit">Sign in</button></form>'
        )
        response = page("Sign in", body, None, flash=message, error=message is not None, status=status)
        self._set_cookie(response, LOGIN_COOKIE, token, max_age=600, path="/admin/login")
        return response

    def _set_cookie(
        self, response: Response, name: str, value: str, *, max_age: int, path: str = "/admin"
    ) -> None:
        response.set_cookie(
            name, value, max_age=max_age, path=path, secure=self.secure, httponly=True, samesite="strict"
        )

    async def login_page(self, request: Request) -> Response:
        import secrets

        return self._login_form(secrets.token_urlsafe(32), _next(request.query_params.get("next")))

    async def login(self, request: Request) -> Response:
        """One sign-in attempt: rate-limited per client address, and audited whatever its outcome."""
        import secrets

        started = time.perf_counter()
        try:
            self.gateway.audit.admit()  # failing closed, no attempt goes unaudited
        except AuditUnavailable as exc:
            return self._login_form(secrets.token_urlsafe(32), "/admin/", str(exc), 503)
        address = request.client.host if request.client is not None else "unknown"
        wait = self.attempts.take(address)
        if wait > 0:
            message = "too many sign-in attempts from this address; try again later"
            response = self._login_form(secrets.token_urlsafe(32), "/admin/", message, 429)
            response.headers["Retry-After"] = str(max(1, math.ceil(wait)))
            self._audit_sign_in(request, None, 429, "RATE_LIMITED", started)
            return response
        response, principal, outcome = await self._sign_in(request)
        self._audit_sign_in(request, principal, response.status_code, outcome, started)
        return response

    def _audit_sign_in(
        self, request: Request, principal: Principal | None, status: int, outcome: str, started: float
    ) -> None:
        # Who tried and how it ended, never the credential.
        request_id = request.scope.get("prism.request_id")
        event = audit_event(request_id, principal, None, "console_sign_in", status, outcome, started)
        self.gateway.audit.record(event)

    async def _sign_in(self, request: Request) -> tuple[Response, Principal | None, str]:
        import hmac
        import secrets

        fresh = secrets.token_urlsafe(32)
        try:
            form = await read_form(request)
        except Refused as exc:
            return self._login_form(fresh, "/admin/", exc.message, exc.status), None, "BAD_REQUEST"
        sent = form.get("csrf", "")
        expected = request.cookies.get(LOGIN_COOKIE, "")
        target = _next(form.get("next"))
        if not sent or not expected or not hmac.compare_digest(sent.encode(), expected.encode()):
            message = "the sign-in form expired or its CSRF token is wrong; try again"
            return self._login_form(fresh, target, message, 403), None, "CSRF_FAILED"
        kind = form.get("kind", "api_key")
        credential = form.get("credential", "").strip()
        authenticator = self.gateway.authenticator
        expires_at: float | None = None
        try:
            if kind == "api_key":
                header = ("X-API-Key", credential)
                principal = authenticator.authenticate(credential or None, None)
            elif kind == "jwt":
                header = ("Authorization", f"Bearer {credential}")
                principal = authenticator.authenticate(None, header[1] if credential else None)
                if credential:
                    claims = jwt.decode(credential, options={"verify_signature": False})
                    exp = claims.get("exp")
                    expires_at = float(exp) if isinstance(exp, int | float) else None
            else:
                return self._login_form(fresh, target, "kind: api_key or jwt", 400), None, "BAD_REQUEST"
        except AuthError as exc:
            # The reason, never the credential.
            return self._login_form(fresh, target, f"sign-in refused: {exc.detail}", 401), None, exc.code
        except jwt.PyJWTError:
            message = "sign-in refused: the token cannot be read"
            return self._login_form(fresh, target, message, 401), None, "INVALID_TOKEN"
        if not credential:
            header = ("X-Prism-Console", "anonymous")  # auth is off: the API needs no credential
        try:
            session_id, session = self.sessions.open(principal, header, expires_at)
        except SessionsFull as exc:
            return self._login_form(fresh, target, str(exc), 503), principal, "SESSIONS_FULL"
        response = RedirectResponse(target, 303, headers=SECURITY_HEADERS)
        self._set_cookie(response, COOKIE, session_id, max_age=max(1, int(session.expires_at - time.time())))
        response.delete_cookie(
            LOGIN_COOKIE, path="/admin/login", secure=self.secure, httponly=True, samesite="strict"
        )
        return response, principal, "ok"

    async def logout(self, ctx: Context) -> Response:
        self.sessions.close(ctx.request.cookies.get(COOKIE))
        response = RedirectResponse("/admin/login", 303, headers=SECURITY_HEADERS)
        response.delete_cookie(COOKIE, path="/admin", secure=self.secure, httponly=True, samesite="strict")
        return response

    async def static(self, request: Request) -> Response:
        name = request.path_params["name"]
        media = _STATIC.get(name)
        if media is None:
            return Response("not found", 404, media_type="text/plain")
        data = (files("prism.gateway.console") / "static" / name).read_bytes()
        return Response(
            data,
            200,
            media_type=media,
            headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
        )

    # -- overview --------------------------------------------------------------------------

    def _visible(self, ctx: Context) -> list[str]:
        principal = ctx.session.principal
        return [name for name, served in self.gateway.namespaces.items() if can_see(principal, served.config)]

    def _snapshot(self, ctx: Context) -> dict[str, Any]:
        series = self.sampler.series(self._visible(ctx))
        return {
            "interval": self.sampler.interval,
            "window": self.gateway.config.admin.window,
            "namespaces": {
                name: [[p.at, p.rps, p.error_rate, p.p50, p.p99] for p in points]
                for name, points in series.items()
            },
            "stores": {
                name: {"status": h.status, "latency_ms": round(h.latency * 1000, 2), "error": h.error}
                for name, h in self.sampler.stores.items()
            },
            "streaming": streaming_counts(),
        }

    async def overview(self, ctx: Context) -> Response:
        snap = self._snapshot(ctx)
        stores = table(
            ("Store", "Health", "Probe latency", "Error"),
            [
                (n, s["status"], f"{s['latency_ms']:g} ms", s["error"] or "")
                for n, s in snap["stores"].items()
            ],
        )
        queued = await ctx.api.call("GET", "/v1/requests", query={"status": "PENDING", "limit": 100})
        waiting = len(queued.json()["requests"]) if queued.ok else None
        counts = snap["streaming"]
        pending = "n/a" if waiting is None else (str(waiting) if waiting < 100 else "100+")
        settings = self.streaming
        if settings.enabled:
            work = Markup(
                '<p class="hint">This gateway process\'s view, from its own metrics: the jobs and '
                "connections are this process's; the queue depth is its last sample of the shared queue "
                f"(every {settings.metrics_interval:g} s).</p>"
                '<dl class="counts">'
                f"<dt>Workers here</dt><dd>{settings.workers}</dd>"
                "<dt>Jobs running here (leases held)</dt>"
                f'<dd data-count="jobs_running">{counts["jobs_running"]:g}</dd>'
                f'<dt>Queue depth</dt><dd data-count="queue_depth">{counts["queue_depth"]:g}</dd>'
                f'<dt>Streaming connections</dt><dd data-count="connections">{counts["connections"]:g}</dd>'
                f'<dt>Events delivered</dt><dd data-count="delivered">{counts["delivered"]:g}</dd>'
                f"<dt>Delivery latency p50</dt>"
                f'<dd data-count="delivery_p50">{esc(counts["delivery_p50"])}</dd>'
                f"<dt>Delivery latency p99</dt>"
                f'<dd data-count="delivery_p99">{esc(counts["delivery_p99"])}</dd>'
                f"<dt>Your pending requests</dt><dd>{pending}</dd></dl>"
            )
        else:
            work = Markup("<p>Streaming is off in this gateway (<code>streaming.enabled</code>).</p>")
        charts = "".join(
            f'<figure class="chart" data-ns="{esc(name)}"><figcaption>{esc(name)}</figcaption>'
            '<div class="plots"></div></figure>'
            for name in snap["namespaces"]
        )
        body = Markup(
            f"<section><h2>Stores</h2>{stores}</section><section><h2>Streaming</h2>{work}</section>"
            f"<section><h2>Namespaces, last {self.gateway.config.admin.window / 60:g} minutes</h2>"
            f'<p class="hint">Requests per second, server-error rate, p50 and p99 latency; live.</p>'
            f'<div class="charts" data-stream="/admin/overview/stream" '
            f'data-initial="{esc(msgspec.json.encode(snap).decode())}">{charts}</div></section>'
        )
        return page("Overview", body, ctx.session, current="Overview")

    async def overview_stream(self, ctx: Context) -> Response:
        """The overview's numbers as SSE: one ``sample`` event now and after each new sample."""
        sampler = self.sampler
        session = ctx.session

        async def events() -> AsyncIterator[bytes]:
            while session.live:
                yield b"event: sample\ndata: " + msgspec.json.encode(self._snapshot(ctx)) + b"\n\n"
                quiet = False
                async with sampler.changed:
                    try:
                        await asyncio.wait_for(sampler.changed.wait(), timeout=sampler.interval * 3)
                    except TimeoutError:
                        quiet = True
                # Sent with the lock released: a client that stops reading never stalls the sampler.
                if quiet:
                    yield b": keep-alive\n\n"

        return StreamingResponse(
            events(), media_type="text/event-stream", headers={**SECURITY_HEADERS, "X-Accel-Buffering": "no"}
        )


def _next(value: str | None) -> str:
    """Where to go after signing in: a console path only (never another site)."""
    if value and value.startswith("/admin/") and not value.startswith("//") and "\\" not in value:
        return value
    return "/admin/"
