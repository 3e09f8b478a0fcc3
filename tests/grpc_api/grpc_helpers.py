"""A gateway serving HTTP (in-process ASGI) and gRPC (a real grpc.aio server on a free port) together."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, ClassVar

import httpx
from grpc import aio

from prism.backends.memory import MemoryBackend
from prism.gateway import create_app, parse_config
from prism.gateway.auth import hash_api_key
from prism.gateway.runtime import Gateway
from prism.grpc.server import GrpcServer

#: name -> (key, roles, tenant)
KEYS: dict[str, tuple[str, list[str], str | None]] = {
    "admin": ("key-admin-0123456789", ["admin"], None),
    "writer": ("key-writer-0123456789", ["writer"], None),
    "reader": ("key-reader-0123456789", ["reader"], None),
    "acme": ("key-acme-0123456789", ["writer"], "acme"),
}


def api_key(name: str) -> str:
    return KEYS[name][0]


def base_config(**overrides: Any) -> dict[str, Any]:
    """API keys, a plain namespace, a tenant-scoped one and a small one; the seed's calls go to ``plain``."""
    config: dict[str, Any] = {
        "stores": {"main": "memory://"},
        "auth": {
            "api_keys": [
                {"name": n, "sha256": hash_api_key(k), "roles": r, **({"tenant": t} if t else {})}
                for n, (k, r, t) in KEYS.items()
            ]
        },
        "namespaces": [
            {"name": "plain"},
            {"name": "orders", "tenant_scoped": True},
            {"name": "small", "max_value_bytes": 16},
        ],
        "compat": {"namespace": "plain"},
        "audit": {"sink": "none"},
    }
    config.update(overrides)
    return config


class StalledBackend(MemoryBackend):
    """A memory backend whose writes wait until cancelled, counting the cancellations."""

    runs_inline: ClassVar[bool] = False
    cancelled: ClassVar[int] = 0

    @classmethod
    def from_url(cls, url: str, **options: Any) -> StalledBackend:
        return cls()

    async def write(self, ns: str, ops: Any) -> Any:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            StalledBackend.cancelled += 1
            raise
        return await super().write(ns, ops)


@dataclass
class Serving:
    gateway: Gateway
    http: httpx.AsyncClient
    channel: aio.Channel
    port: int


@contextlib.asynccontextmanager
async def serving(config: dict[str, Any] | None = None) -> AsyncIterator[Serving]:
    """The gateway of ``config`` with its lifespan running, its HTTP client and a gRPC channel to it."""
    app = create_app(parse_config(config or base_config(), source="test.yaml", env={}), env={})
    async with app.router.lifespan_context(app):
        gateway = app.state.gateway
        server = GrpcServer(gateway)
        port = server.bind("127.0.0.1", 0)
        await server.start()
        try:
            transport = httpx.ASGITransport(app=app)
            async with (
                httpx.AsyncClient(transport=transport, base_url="http://gateway") as http,
                aio.insecure_channel(f"127.0.0.1:{port}") as channel,
            ):
                yield Serving(gateway, http, channel, port)
        finally:
            await server.stop(1)
