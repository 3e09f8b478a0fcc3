"""A gateway serving HTTP (in-process ASGI) and gRPC (a real grpc.aio server on a free port) together."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
from grpc import aio

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
