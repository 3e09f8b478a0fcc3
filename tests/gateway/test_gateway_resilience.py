"""Limits and failures: 429 with Retry-After, backend outages and hangs as 503 within the timeout."""

from __future__ import annotations

import asyncio
import sqlite3
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from gateway_helpers import GATES, build_app, client_for, full_config, headers, running

W = headers("writer")


@pytest.fixture
def gate() -> Iterator[tuple[str, asyncio.Event]]:
    name = f"gated-{uuid.uuid4().hex}"
    event = asyncio.Event()
    event.set()
    GATES[name] = event
    yield name, event
    event.set()
    GATES.pop(name, None)


def gated_config(tmp_path: Path, name: str, **extra: Any) -> dict[str, Any]:
    config = full_config(tmp_path, **extra)
    config["stores"] = {
        "main": "memory://",
        "slow": {"url": f"memory://{name}", "backend": "gateway_helpers:GatedBackend"},
    }
    config["namespaces"].append({"name": "slow", "store": "slow"})
    return config


async def test_rate_limit_answers_429_with_retry_after(tmp_path: Path) -> None:
    config = full_config(tmp_path)
    config["namespaces"][0]["limits"] = {"rate": 1, "burst": 2}
    async with client_for(config) as c:
        statuses = [(await c.get("/v1/kv/plain/k", headers=W)).status_code for _ in range(3)]
        assert statuses == [404, 404, 429]
        r = await c.get("/v1/kv/plain/k", headers=W)
        assert r.status_code == 429 and r.json()["code"] == "RATE_LIMITED"
        assert int(r.headers["retry-after"]) >= 1
        # Other namespaces are not affected.
        assert (await c.get("/v1/kv/small/k", headers=W)).status_code == 404
        metrics = (await c.get("/metrics")).text
        assert 'prism_http_rate_limited_total{limit="rate",namespace="plain"}' in metrics
        await asyncio.sleep(1.05)
        assert (await c.get("/v1/kv/plain/k", headers=W)).status_code == 404


async def test_global_default_limits_apply_to_every_namespace(tmp_path: Path) -> None:
    async with client_for(full_config(tmp_path, limits={"rate": 1, "burst": 1})) as c:
        assert (await c.get("/v1/kv/plain/k", headers=W)).status_code == 404
        assert (await c.get("/v1/kv/plain/k", headers=W)).status_code == 429
        assert (await c.get("/v1/kv/small/k", headers=W)).status_code == 404


async def test_concurrency_limit_answers_429(tmp_path: Path, gate: tuple[str, asyncio.Event]) -> None:
    name, event = gate
    config = gated_config(tmp_path, name)
    config["namespaces"][-1]["limits"] = {"concurrency": 1}
    async with client_for(config) as c:
        event.clear()
        first = asyncio.create_task(c.put("/v1/kv/slow/k", content=b"x", headers=W))
        await asyncio.sleep(0.05)
        r = await c.get("/v1/kv/slow/k", headers=W)
        assert r.status_code == 429 and r.json()["code"] == "TOO_MANY_CONCURRENT_REQUESTS"
        assert r.headers["retry-after"] == "1"
        event.set()
        assert (await first).status_code == 201
        assert (await c.get("/v1/kv/slow/k", headers=W)).status_code == 200


async def test_hung_backend_is_503_within_the_request_timeout(
    tmp_path: Path, gate: tuple[str, asyncio.Event]
) -> None:
    name, event = gate
    config = gated_config(tmp_path, name, server={"request_timeout": 0.3})
    async with client_for(config) as c:
        event.clear()
        started = time.monotonic()
        r = await c.get("/v1/kv/slow/k", headers=W)
        elapsed = time.monotonic() - started
        assert r.status_code == 503 and r.json()["code"] == "TIMEOUT"
        assert r.json()["detail"] == "the request did not finish within 0.3 s; retry later"
        assert r.headers["retry-after"] == "1"
        assert 0.25 < elapsed < 2
        # The other store's namespaces are unaffected.
        assert (await c.get("/v1/kv/plain/k", headers=W)).status_code == 404


async def test_closed_store_is_503(tmp_path: Path) -> None:
    app = build_app(full_config(tmp_path))
    async with running(app) as c:
        await app.state.gateway.stores["main"].close()
        r = await c.get("/v1/kv/plain/k", headers=W)
        assert r.status_code == 503 and r.json()["code"] == "STORE_CLOSED"
        assert r.headers["retry-after"] == "1"
        assert (await c.get("/readyz")).status_code == 503


async def test_locked_sqlite_database_is_503_backend_unavailable(tmp_path: Path) -> None:
    db = tmp_path / "data.db"
    config = full_config(tmp_path, stores={"main": f"sqlite:///{db}?busy_timeout=0.2"})
    async with client_for(config) as c:
        assert (await c.put("/v1/kv/plain/k", content=b"v1", headers=W)).status_code == 201
        blocker = sqlite3.connect(db, isolation_level=None)
        try:
            blocker.execute("BEGIN EXCLUSIVE")
            started = time.monotonic()
            r = await c.put("/v1/kv/plain/k", content=b"v2", headers=W)
            assert r.status_code == 503, r.text
            body = r.json()
            assert body["code"] == "BACKEND_UNAVAILABLE" and r.headers["retry-after"] == "1"
            assert str(db) not in body["detail"]
            assert time.monotonic() - started < 5
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert (await c.get("/v1/kv/plain/k", headers=W)).content == b"v1"
