"""Shared helpers of the gateway tests: configs, credentials, tokens and an in-process client."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from starlette.applications import Starlette

from prism.backends.memory import MemoryBackend
from prism.gateway import create_app, parse_config
from prism.gateway.auth import hash_api_key
from prism.kv.store import Store

HS_SECRET = "s3cret-for-tests-only-0123456789abcdef"
ISSUER = "https://id.example.test"
AUDIENCE = "prism"
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
PII_KEY_1 = base64.b64encode(bytes(range(32))).decode()
PII_KEY_2 = base64.b64encode(bytes(range(32, 64))).decode()

#: name -> (key text, roles, tenant)
KEYS: dict[str, tuple[str, list[str], str | None]] = {
    "admin": ("key-admin", ["admin", "pii:read"], None),
    "writer": ("key-writer", ["writer"], None),
    "reader": ("key-reader", ["reader"], None),
    "acme": ("key-acme-writer", ["writer"], "acme"),
    "acme-pii": ("key-acme-pii", ["writer", "pii:read"], "acme"),
    "globex": ("key-globex-writer", ["writer"], "globex"),
    "globex-pii": ("key-globex-pii", ["reader", "pii:read"], "globex"),
    "nobody": ("key-nobody", [], None),
}


def headers(name: str, **extra: str) -> dict[str, str]:
    """Request headers authenticating as API key ``name``."""
    return {"X-API-Key": KEYS[name][0], **extra}


def api_keys_config() -> list[dict[str, Any]]:
    return [
        {"name": name, "sha256": hash_api_key(key), "roles": roles, **({"tenant": tenant} if tenant else {})}
        for name, (key, roles, tenant) in KEYS.items()
    ]


def pem_public(key: Any) -> bytes:
    return bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def token(
    alg: str = "RS256",
    *,
    key: Any = None,
    sub: str = "user-1",
    tenant: str | None = "acme",
    roles: list[str] | None = None,
    exp_in: float = 300,
    nbf_in: float | None = None,
    iat_in: float = 0,
    aud: str | None = AUDIENCE,
    iss: str | None = ISSUER,
    headers_: dict[str, Any] | None = None,
    drop: tuple[str, ...] = (),
) -> str:
    """A signed JWT with the usual claims, shifted in time as asked."""
    now = time.time()
    claims: dict[str, Any] = {
        "sub": sub,
        "exp": int(now + exp_in),
        "iat": int(now + iat_in),
        "roles": roles if roles is not None else ["writer"],
    }
    if tenant is not None:
        claims["tenant_id"] = tenant
    if nbf_in is not None:
        claims["nbf"] = int(now + nbf_in)
    if aud is not None:
        claims["aud"] = aud
    if iss is not None:
        claims["iss"] = iss
    for name in drop:
        claims.pop(name, None)
    if key is None:
        key = {"HS": HS_SECRET.encode(), "RS": RSA_KEY, "ES": EC_KEY, "PS": RSA_KEY}[alg[:2]]
    return jwt.encode(claims, key, algorithm=alg, headers=headers_)


def bearer(tok: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tok}"}


def full_config(tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    """A config using every feature: keys and JWT, a plain, a tenant-scoped and a PII namespace."""
    pub = tmp_path / "jwt.pub"
    pub.write_bytes(pem_public(RSA_KEY))
    config: dict[str, Any] = {
        "stores": {"main": "memory://"},
        "auth": {
            "api_keys": api_keys_config(),
            "jwt": {
                "algorithms": ["RS256", "HS256"],
                "secret_env": "PRISM_TEST_JWT_SECRET",
                "public_key_file": str(pub),
                "issuer": ISSUER,
                "audience": AUDIENCE,
                "clock_skew": 5,
            },
        },
        "pii_keys": {"active": "k1", "keys": [{"id": "k1", "env": "PRISM_TEST_PII_K1"}]},
        "namespaces": [
            {"name": "plain"},
            {"name": "orders", "tenant_scoped": True},
            {"name": "people", "tenant_scoped": True, "pii": {"fields": ["email", "name"], "encrypt": True}},
            {"name": "small", "max_value_bytes": 16},
        ],
        "audit": {"sink": "none"},
    }
    config.update(overrides)
    return config


ENV = {"PRISM_TEST_JWT_SECRET": HS_SECRET, "PRISM_TEST_PII_K1": PII_KEY_1, "PRISM_TEST_PII_K2": PII_KEY_2}


def build_app(
    config: dict[str, Any], *, env: Mapping[str, str] | None = None, stores: Mapping[str, Store] | None = None
) -> Starlette:
    env = ENV if env is None else env
    return create_app(parse_config(config, source="test.yaml", env=env), env=env, stores=stores)


@contextlib.asynccontextmanager
async def running(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client talking to ``app`` in-process, with the app's lifespan running."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            yield client


@contextlib.asynccontextmanager
async def client_for(
    config: dict[str, Any], *, env: Mapping[str, str] | None = None, stores: Mapping[str, Store] | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    async with running(build_app(config, env=env, stores=stores)) as client:
        yield client


#: Gates of GatedBackend stores, by the name in their URL (``memory://NAME``).
GATES: dict[str, asyncio.Event] = {}


class GatedBackend(MemoryBackend):
    """A memory backend whose reads and writes wait while its gate is closed.

    It stands in for a slow or hung database server (plugged in through the
    ``backend:`` option of a store, like any third-party backend).
    """

    runs_inline: ClassVar[bool] = False

    def __init__(self, shared_name: str = "") -> None:
        super().__init__(shared_name)
        self._gate_name = shared_name

    @classmethod
    def from_url(cls, url: str, **options: Any) -> GatedBackend:
        return cls(url.split("://", 1)[1].strip("/"))

    async def _wait(self) -> None:
        gate = GATES.get(self._gate_name)
        if gate is not None:
            await gate.wait()

    async def get(self, ns: str, record: str, key: str, *, consistent: bool = False) -> Any:
        await self._wait()
        return await super().get(ns, record, key, consistent=consistent)

    async def write(self, ns: str, ops: Any) -> Any:
        await self._wait()
        return await super().write(ns, ops)


class SlowBackend(MemoryBackend):
    """A memory backend whose writes take ``?delay=SECONDS`` (for drain tests across processes)."""

    runs_inline: ClassVar[bool] = False

    def __init__(self, shared_name: str = "", delay: float = 1.0) -> None:
        super().__init__(shared_name)
        self.delay = delay

    @classmethod
    def from_url(cls, url: str, **options: Any) -> SlowBackend:
        rest = url.split("://", 1)[1]
        name, _, query = rest.partition("?")
        delay = float(query.split("delay=", 1)[1]) if "delay=" in query else 1.0
        return cls(name.strip("/"), delay)

    async def write(self, ns: str, ops: Any) -> Any:
        await asyncio.sleep(self.delay)
        return await super().write(ns, ops)
