"""The application factory: a Starlette app serving a :class:`GatewayConfig`.

``create_app(config)`` builds the Gateway (reading keys and secrets, so a bad
config fails here, before serving), the routes, the observability middleware and
the lifespan that opens and closes the stores. Other Prism layers add their own
routes and lifecycle hooks through ``extra_routes``, ``on_startup`` and
``on_shutdown``, or by exposing an extension function that ``prism serve`` loads
(see :data:`EXTENSION_GROUP`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.types import Receive, Scope, Send

from prism.gateway.asgi import DataTransport, RouteTable
from prism.gateway.config import GatewayConfig
from prism.gateway.observability import InFlight, ObservabilityMiddleware
from prism.gateway.pipeline import DataRoute, Pipeline
from prism.gateway.problem import problem_response
from prism.gateway.routes_admin import admin_routes
from prism.gateway.routes_kv import kv_routes
from prism.gateway.routes_migration import migration_routes
from prism.gateway.routes_namespaces import namespace_routes
from prism.gateway.routes_records import records_routes
from prism.gateway.routes_signals import signals_routes
from prism.gateway.routes_ts import ts_routes
from prism.gateway.routes_watch import WatchStreams
from prism.gateway.runtime import Gateway
from prism.gateway.wire import escape_problem
from prism.kv.store import Store

__all__ = ["EXTENSION_GROUP", "AppExtension", "GatewayApp", "Hook", "create_app", "load_extensions"]

log = logging.getLogger("prism.gateway")

#: A lifecycle hook: receives the running Gateway (config, stores, authenticator, audit).
Hook = Callable[[Gateway], Awaitable[None]]

#: The entry point group of gateway extensions: each names a function ``prism serve`` calls with
#: the GatewayConfig, which returns an AppExtension (or None to add nothing).
EXTENSION_GROUP = "prism.gateway"


@dataclass(frozen=True, slots=True)
class AppExtension:
    """Routes and lifecycle hooks another layer adds to the gateway app."""

    routes: Sequence[BaseRoute] = ()
    on_startup: Sequence[Hook] = ()
    on_shutdown: Sequence[Hook] = ()


def load_extensions(config: GatewayConfig, group: str = EXTENSION_GROUP) -> list[AppExtension]:
    """The extensions the installed packages declare in the entry point ``group`` for ``config``."""
    found: list[AppExtension] = []
    for point in sorted(entry_points(group=group), key=lambda p: p.name):
        extension = point.load()(config)
        if extension is not None:
            found.append(extension)
    return found


async def _not_found(request: Request, exc: Exception) -> Response:
    return problem_response(
        404, "NOT_FOUND", "no route matches this path", request_id=request.scope.get("prism.request_id")
    )


async def _method_not_allowed(request: Request, exc: Exception) -> Response:
    headers = dict(exc.headers or {}) if isinstance(exc, HTTPException) else {}
    return problem_response(
        405,
        "METHOD_NOT_ALLOWED",
        f"{request.method} is not allowed on this path",
        headers=headers,
        request_id=request.scope.get("prism.request_id"),
    )


async def _http_error(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 400
    detail = exc.detail if isinstance(exc, HTTPException) else "bad request"
    return problem_response(
        status, "HTTP_ERROR", str(detail), request_id=request.scope.get("prism.request_id")
    )


async def _internal_error(request: Request, exc: Exception) -> Response:
    log.error("unhandled error", exc_info=exc, extra={"request_id": request.scope.get("prism.request_id")})
    return problem_response(
        500,
        "INTERNAL",
        "the gateway failed to handle this request",
        request_id=request.scope.get("prism.request_id"),
    )


class GatewayApp(Starlette):
    """The gateway's Starlette app, with the data routes dispatched from one table before the generic stack.

    Every data route (``/v1/kv``, ``/v1/records``) is found in :attr:`data_routes` by
    splitting the path once and runs through the one pipeline (behind the same
    observability middleware), skipping Starlette's exception handling and routing
    layers; every other request (operations, the admin API, streaming, extensions)
    takes the usual Starlette path.
    """

    def __init__(
        self,
        *args: Any,
        gateway: Gateway,
        data_routes: Sequence[DataRoute],
        in_flight: InFlight,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.state.gateway = gateway
        self.data_routes = RouteTable(data_routes)
        self._data = ObservabilityMiddleware(
            DataTransport(Pipeline(gateway)), access_log=gateway.access_log, in_flight=in_flight, direct=True
        )
        self._bad_escape = ObservabilityMiddleware(
            _refuse_bad_escape, access_log=gateway.access_log, in_flight=in_flight
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            raw_path: bytes = scope.get("raw_path") or b""
            query: bytes = scope["query_string"]
            if (b"%" in raw_path or b"%" in query) and escape_problem(raw_path, query) is not None:
                # Before routing: such escapes decode to U+FFFD, so different keys would alias.
                await self._bad_escape(scope, receive, send)
                return
            path: str = scope["path"]
            root = scope.get("root_path")
            if root and path.startswith(root):
                path = path[len(root) :]
            match = self.data_routes.match(path, scope["method"])
            if match is not None:
                scope["prism.match"] = match
                scope["route"] = match[3]
                scope["path_params"] = match[1]
                await self._data(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


async def _refuse_bad_escape(scope: Scope, receive: Receive, send: Send) -> None:
    """400 for a path or query string with percent-escapes that are not UTF-8 (they would alias)."""
    problem = escape_problem(scope.get("raw_path") or b"", scope["query_string"])
    assert problem is not None
    await problem.response(scope.get("prism.request_id"))(scope, receive, send)


def create_app(
    config: GatewayConfig,
    *,
    extra_routes: Sequence[BaseRoute] = (),
    on_startup: Sequence[Hook] = (),
    on_shutdown: Sequence[Hook] = (),
    stores: Mapping[str, Store] | None = None,
    env: Mapping[str, str] | None = None,
) -> GatewayApp:
    """The ASGI app serving ``config``.

    ``extra_routes`` are mounted after the gateway's own routes; ``on_startup`` hooks
    run after the stores are open and ``on_shutdown`` hooks before they close.
    ``stores`` may supply already-built (unopened) stores by name, and ``env`` the
    environment to read secrets from (both default to the real thing).
    Raises ConfigError when a secret, key file or store in the config is unusable.
    """
    gateway = Gateway(config, env=env, stores=stores)
    watch = WatchStreams(gateway)
    # The watch route comes first: GET /v1/kv/{ns}/{key:path} would take its path too.
    data_routes = [
        *watch.routes(),
        *kv_routes(gateway),
        *records_routes(gateway),
        *ts_routes(gateway),
        *signals_routes(gateway),
    ]
    routes = [
        *admin_routes(gateway, data_routes),
        *namespace_routes(gateway),
        *migration_routes(gateway),
        *extra_routes,
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        await gateway.start()
        try:
            await watch.start(gateway)
            for hook in on_startup:
                await hook(gateway)
            if console is not None:
                await console.start()
            yield {"gateway": gateway}
        finally:
            await watch.stop(gateway)
            for hook in on_shutdown:
                try:
                    await hook(gateway)
                except Exception:
                    log.exception("a shutdown hook failed")
            if console is not None:
                await console.stop()
            await gateway.stop()

    in_flight = InFlight()
    app = GatewayApp(
        gateway=gateway,
        data_routes=data_routes,
        in_flight=in_flight,
        routes=routes,
        lifespan=lifespan,
        middleware=[Middleware(ObservabilityMiddleware, access_log=gateway.access_log, in_flight=in_flight)],
        exception_handlers={
            404: _not_found,
            405: _method_not_allowed,
            HTTPException: _http_error,
            Exception: _internal_error,
        },
    )
    # The admin console (admin.enabled): its routes after all others, started once the stores are open.
    console = None
    if config.admin.enabled:
        from prism.gateway.console import Console

        console = Console(gateway)
        app.router.routes.extend(console.routes())
    return app
