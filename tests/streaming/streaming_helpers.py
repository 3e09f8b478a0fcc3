"""Helpers of the streaming tests: a real server (uvicorn on a free TCP port) around a service."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
import websockets

from prism.kv.store import connect
from prism.streaming.app import UVICORN_OPTIONS, create_streaming_app
from prism.streaming.auth import Identity, StaticTokens
from prism.streaming.config import StreamingConfig, parse_config
from prism.streaming.handlers import Router
from prism.streaming.service import StreamingService
from prism.testing.servers import free_port

IDENTITIES = {
    "alice-token": Identity("alice", "acme"),
    "bob-token": Identity("bob", "acme"),
    "carol-token": Identity("carol", "globex"),
    "root-token": Identity("root", "acme", frozenset({"admin"})),
    "reporter-token": Identity("rita", "acme", frozenset({"reports"})),
    **{f"load-{i}": Identity(f"user-{i}", "load") for i in range(100)},
}

#: Settings that keep the tests fast: short leases, quick retries, no long waits; and the
#: demo handlers (delay, generate_report) the tests drive.
FAST: dict[str, Any] = {
    "demo_handlers": True,
    "lease_seconds": 2.0,
    "heartbeat_interval": 0.5,
    "poll_interval": 0.2,
    "retry_backoff": 0.05,
    "retry_backoff_max": 0.2,
    "sync_threshold": 1.0,
    "cancel_grace": 0.5,
    "orphan_grace": 2.0,
}


class Server:
    """A running streaming server: its URLs and its service."""

    def __init__(self, service: StreamingService, port: int) -> None:
        self.service = service
        self.port = port
        self.http = f"http://127.0.0.1:{port}"
        self.ws = f"ws://127.0.0.1:{port}/v1/stream"

    def connect(self, token: str | None = "alice-token", **kwargs: Any) -> Any:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return websockets.connect(self.ws, additional_headers=headers, compression=None, **kwargs)


@asynccontextmanager
async def running(service: StreamingService) -> AsyncIterator[Server]:
    """Serve ``service`` with uvicorn on a free port until the block ends."""
    port = free_port()
    config = uvicorn.Config(
        create_streaming_app(service), host="127.0.0.1", port=port, log_level="warning", **UVICORN_OPTIONS
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    for _ in range(500):
        if server.started or task.done():
            break
        await asyncio.sleep(0.01)
    if task.done():
        task.result()
    try:
        yield Server(service, port)
    finally:
        server.should_exit = True
        await task


def make_service(
    store_url: str = "memory://", router: Router | None = None, **settings: Any
) -> StreamingService:
    config: StreamingConfig = parse_config({**FAST, **settings})
    return StreamingService(
        connect(store_url),
        config,
        store_url=store_url,
        router=router,
        authenticator=StaticTokens(IDENTITIES),
        owns_store=True,
    )


ServerFactory = Callable[..., Any]


async def recv_json(ws: Any, within: float = 5.0) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), within))
    return message


async def send_json(ws: Any, message: dict[str, Any]) -> None:
    await ws.send(json.dumps(message))


async def until_terminal(ws: Any, request_id: str, within: float = 10.0) -> list[dict[str, Any]]:
    """Every message about ``request_id`` up to and including its complete or error event."""
    out: list[dict[str, Any]] = []
    while True:
        msg = await recv_json(ws, within)
        if msg.get("request_id") != request_id:
            continue
        out.append(msg)
        if msg["type"] in ("complete", "error") and msg.get("seq") is not None:
            return out
