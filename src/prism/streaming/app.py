"""A standalone streaming server: the streaming routes in their own Starlette app.

The gateway mounts the same routes next to its own; this app serves them alone, for
``python -m prism.streaming`` (development, tests, a dedicated streaming tier).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from prism.streaming.routes import streaming_routes
from prism.streaming.service import StreamingService

__all__ = ["UVICORN_OPTIONS", "create_streaming_app"]

#: uvicorn settings that suit many long-lived WebSockets: no per-connection compression state,
#: protocol pings to find dead peers, and frames larger than the protocol limit reach the app
#: (which answers MESSAGE_TOO_LARGE instead of dropping the connection). HTTP goes through
#: Prism's protocol, which caps headers and connections and times out slow clients.
UVICORN_OPTIONS: Mapping[str, Any] = {
    "http": "prism.gateway.server:HttpProtocol",
    "ws": "websockets-sansio",
    "ws_per_message_deflate": False,
    "ws_ping_interval": 20.0,
    "ws_ping_timeout": 20.0,
    "ws_max_size": 4 * 1024 * 1024,
}


def create_streaming_app(service: StreamingService) -> Starlette:
    """A Starlette app serving the streaming API; it starts and stops ``service`` with its lifespan."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with service:
            yield

    async def health(request: Request) -> JSONResponse:
        store = await service.store.health()
        body = {
            "status": store["status"],
            "node": service.node,
            "queue": service.queue.engine,
            "pubsub": service.pubsub.engine,
            "jobs_running": len(service.rt.running),
            "followers": service.hub.followers,
        }
        return JSONResponse(body, status_code=200 if store["status"] == "UP" else 503)

    routes = [*streaming_routes(lambda: service), Route("/healthz", health)]
    return Starlette(routes=routes, lifespan=lifespan)
