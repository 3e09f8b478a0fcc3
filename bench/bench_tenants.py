"""What recording the tenants of a tenant-scoped runtime namespace costs a write.

A tenant-scoped runtime namespace records each tenant in the control store before the
tenant's first write through a process; later writes only look the tenant up in a set.
This benchmark sends ``PUT`` requests in-process (ASGI calls, no server) by one tenant
to a tenant-scoped namespace of the config file (never recorded) and to a tenant-scoped
runtime namespace on the same memory store, in alternating rounds, and reports the
process CPU microseconds per request of each: the target is no measurable difference.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bench._report import environment, spread, write_section
from prism.gateway import create_app
from prism.gateway.auth import hash_api_key
from prism.gateway.config import parse_config

COMMAND = "python -m bench tenants"
ROUNDS = 21
REQUESTS = 5000
KEY = "bench-tenant-key"


def _config() -> dict[str, Any]:
    return {
        "stores": {"main": "memory://bench-tenants"},
        "namespaces": [{"name": "fixed", "tenant_scoped": True}],
        "auth": {
            "api_keys": [
                {"name": "t", "sha256": hash_api_key(KEY), "roles": ["writer", "admin"], "tenant": "acme"}
            ]
        },
        "audit": {"sink": "none"},
        "server": {"access_log": False},
        "streaming": {"enabled": False},
    }


async def _run() -> tuple[list[float], list[float]]:
    app = create_app(parse_config(_config(), source="bench"))
    headers = [(b"host", b"bench"), (b"x-api-key", KEY.encode()), (b"content-length", b"5")]
    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    async def body() -> dict[str, Any]:
        return {"type": "http.request", "body": b"value", "more_body": False}

    async def admin_body() -> dict[str, Any]:
        return {"type": "http.request", "body": b'{"tenant_scoped": true}', "more_body": False}

    def scope(method: str, path: str, extra: list[tuple[bytes, bytes]] | None = None) -> dict[str, Any]:
        return {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": extra if extra is not None else headers,
            "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 2),
        }

    async def cost(ns: str) -> float:
        puts = [scope("PUT", f"/v1/kv/{ns}/k{i % 100}") for i in range(REQUESTS)]
        started = time.process_time()
        for put in puts:
            sent.clear()
            await app(put, body, send)
        spent = time.process_time() - started
        if sent[0]["status"] not in (200, 201):
            raise RuntimeError(f"a write to {ns} failed: {sent}")
        return spent / REQUESTS * 1e6

    fixed: list[float] = []
    runtime: list[float] = []
    async with app.router.lifespan_context(app):
        admin = [(b"host", b"bench"), (b"x-api-key", KEY.encode()), (b"content-length", b"23")]
        await app(scope("PUT", "/v1/namespaces/rt", admin), admin_body, send)
        if sent[0]["status"] != 201:
            raise RuntimeError(f"creating the runtime namespace failed: {sent}")
        for ns in ("fixed", "rt"):  # warm up; the runtime namespace records its tenant here
            await cost(ns)
        for _ in range(ROUNDS):
            fixed.append(await cost("fixed"))
            runtime.append(await cost("rt"))
    return fixed, runtime


def main(argv: list[str]) -> None:
    fixed, runtime = asyncio.run(_run())
    f, r = spread(fixed), spread(runtime)
    lines = [
        "## Tenant-scoped runtime namespaces: the cost of recording tenants",
        "",
        f"`{COMMAND}` ({ROUNDS} alternating rounds of {REQUESTS} in-process `PUT`s by one tenant, "
        f"memory store; {environment('starlette', 'msgspec')}). CPU µs per request, median (min-max):",
        "",
        "| namespace | µs per PUT |",
        "|---|---|",
        f"| tenant-scoped, config file (never recorded) | {f[0]:.1f} ({f[1]:.1f}-{f[2]:.1f}) |",
        f"| tenant-scoped, runtime (tenant recorded once) | {r[0]:.1f} ({r[1]:.1f}-{r[2]:.1f}) |",
        "",
        f"Difference of the medians: {r[0] - f[0]:+.1f} µs ({(r[0] / f[0] - 1) * 100:+.1f}%).",
    ]
    markdown = "\n".join(lines)
    print(markdown)
    write_section("tenants", markdown)
