"""Idempotency-Key: a retried write returns the first response and applies once."""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from gateway_helpers import GATES, client_for, full_config, headers

W = headers("writer")


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(full_config(tmp_path)) as c:
        yield c


def idem(key: str, who: str = "writer") -> dict[str, str]:
    return headers(who, **{"Idempotency-Key": key})


async def test_retried_put_returns_the_first_response_and_applies_once(client: httpx.AsyncClient) -> None:
    first = await client.put("/v1/kv/plain/i", content=b"v", headers=idem("req-1"))
    assert first.status_code == 201 and "idempotent-replayed" not in first.headers
    retry = await client.put("/v1/kv/plain/i", content=b"v", headers=idem("req-1"))
    assert retry.status_code == 201
    assert retry.headers["etag"] == first.headers["etag"]
    assert retry.headers["idempotent-replayed"] == "true"
    current = await client.get("/v1/kv/plain/i", headers=W)
    assert current.headers["etag"] == first.headers["etag"]
    # A new key is a new request.
    assert (await client.put("/v1/kv/plain/i", content=b"v", headers=idem("req-2"))).status_code == 200


async def test_same_key_with_a_different_request_is_422(client: httpx.AsyncClient) -> None:
    await client.put("/v1/kv/plain/j", content=b"one", headers=idem("req-x"))
    r = await client.put("/v1/kv/plain/j", content=b"two", headers=idem("req-x"))
    assert r.status_code == 422 and r.json()["code"] == "IDEMPOTENCY_KEY_REUSED"
    r = await client.put("/v1/kv/plain/other", content=b"one", headers=idem("req-x"))
    assert r.status_code == 422
    r = await client.put(
        "/v1/kv/plain/j", content=b"one", headers={**idem("req-x"), "Content-Type": "text/plain"}
    )
    assert r.status_code == 422
    assert (await client.get("/v1/kv/plain/j", headers=W)).content == b"one"


async def test_keys_are_private_to_each_caller(client: httpx.AsyncClient) -> None:
    a = await client.put("/v1/kv/plain/p", content=b"v", headers=idem("shared", "writer"))
    b = await client.put("/v1/kv/plain/p", content=b"v", headers=idem("shared", "admin"))
    assert a.status_code == 201 and b.status_code == 200
    assert "idempotent-replayed" not in b.headers


async def test_failed_conditions_are_replayed_too(client: httpx.AsyncClient) -> None:
    await client.put("/v1/kv/plain/cond", content=b"v", headers=W)
    hdrs = {**idem("cond-1"), "If-None-Match": "*"}
    assert (await client.put("/v1/kv/plain/cond", content=b"w", headers=hdrs)).status_code == 412
    await client.delete("/v1/kv/plain/cond", headers=W)
    retry = await client.put("/v1/kv/plain/cond", content=b"w", headers=hdrs)
    assert retry.status_code == 412 and retry.headers["idempotent-replayed"] == "true"
    assert retry.headers["content-type"] == "application/problem+json"
    assert (await client.get("/v1/kv/plain/cond", headers=W)).status_code == 404


async def test_batch_writes_and_deletes_replay(client: httpx.AsyncClient) -> None:
    body = {"items": [{"key": "b1", "value": base64.b64encode(b"x").decode(), "if_absent": True}]}
    first = await client.post("/v1/kv/plain/_bulk/put", json=body, headers=idem("bulk-1"))
    retry = await client.post("/v1/kv/plain/_bulk/put", json=body, headers=idem("bulk-1"))
    assert first.json() == retry.json() and retry.json()["results"][0]["ok"] is True
    ops = {"ops": [{"op": "delete", "key": "b1"}]}
    assert (await client.post("/v1/kv/plain/_transact", json=ops, headers=idem("tx-1"))).status_code == 200
    await client.put("/v1/kv/plain/b1", content=b"again", headers=W)
    assert (await client.post("/v1/kv/plain/_transact", json=ops, headers=idem("tx-1"))).status_code == 200
    assert (await client.get("/v1/kv/plain/b1", headers=W)).content == b"again"
    assert (await client.delete("/v1/kv/plain/b1", headers=idem("del-1"))).status_code == 204
    await client.put("/v1/kv/plain/b1", content=b"third", headers=W)
    assert (await client.delete("/v1/kv/plain/b1", headers=idem("del-1"))).status_code == 204
    assert (await client.get("/v1/kv/plain/b1", headers=W)).content == b"third"


@pytest.mark.parametrize("key", [b"", b"x" * 256, "caf\u00e9".encode(), b"tab\there"])
async def test_invalid_idempotency_keys_are_400(client: httpx.AsyncClient, key: bytes) -> None:
    r = await client.put(
        "/v1/kv/plain/k", content=b"v", headers={b"X-API-Key": b"key-writer", b"Idempotency-Key": key}
    )
    assert r.status_code == 400 and r.json()["code"] == "INVALID_IDEMPOTENCY_KEY"
    assert (await client.get("/v1/kv/plain/k", headers=W)).status_code == 404


async def test_reads_ignore_the_header(client: httpx.AsyncClient) -> None:
    await client.put("/v1/kv/plain/r", content=b"1", headers=W)
    assert (await client.get("/v1/kv/plain/r", headers=idem("read-1"))).content == b"1"
    await client.put("/v1/kv/plain/r", content=b"2", headers=W)
    assert (await client.get("/v1/kv/plain/r", headers=idem("read-1"))).content == b"2"


async def test_a_retry_while_the_first_runs_is_409(tmp_path: Path) -> None:
    name = f"gated-{uuid.uuid4().hex}"
    gate = asyncio.Event()
    GATES[name] = gate
    config = full_config(tmp_path)
    config["stores"] = {
        "main": "memory://",
        "slow": {"url": f"memory://{name}", "backend": "gateway_helpers:GatedBackend"},
    }
    config["namespaces"].append({"name": "slow", "store": "slow"})
    try:
        async with client_for(config) as c:
            first = asyncio.create_task(c.put("/v1/kv/slow/k", content=b"v", headers=idem("busy")))
            await asyncio.sleep(0.05)
            r = await c.put("/v1/kv/slow/k", content=b"v", headers=idem("busy"))
            assert r.status_code == 409 and r.json()["code"] == "IDEMPOTENCY_KEY_IN_USE"
            assert r.headers["retry-after"] == "1"
            gate.set()
            assert (await first).status_code == 201
            replay = await c.put("/v1/kv/slow/k", content=b"v", headers=idem("busy"))
            assert replay.status_code == 201 and replay.headers["idempotent-replayed"] == "true"
    finally:
        gate.set()
        GATES.pop(name, None)


async def test_a_timed_out_request_releases_its_key(tmp_path: Path) -> None:
    name = f"gated-{uuid.uuid4().hex}"
    gate = asyncio.Event()
    GATES[name] = gate
    config = full_config(tmp_path, server={"request_timeout": 0.2})
    config["stores"] = {
        "main": "memory://",
        "slow": {"url": f"memory://{name}", "backend": "gateway_helpers:GatedBackend"},
    }
    config["namespaces"].append({"name": "slow", "store": "slow"})
    try:
        async with client_for(config) as c:
            assert (await c.put("/v1/kv/slow/k", content=b"v", headers=idem("t"))).status_code == 503
            gate.set()
            r = await c.put("/v1/kv/slow/k", content=b"v", headers=idem("t"))
            assert r.status_code == 201 and "idempotent-replayed" not in r.headers
    finally:
        gate.set()
        GATES.pop(name, None)


async def test_keys_are_scoped_to_the_namespace(client: httpx.AsyncClient) -> None:
    # One client, one key, two namespaces: two requests, each applied once.
    a = await client.put("/v1/kv/plain/n", content=b"v", headers=idem("per-ns"))
    b = await client.put("/v1/kv/small/n", content=b"v", headers=idem("per-ns"))
    assert (a.status_code, b.status_code) == (201, 201)
    assert "idempotent-replayed" not in b.headers
    assert (await client.get("/v1/kv/small/n", headers=W)).content == b"v"


async def test_another_tenant_never_gets_a_replay(client: httpx.AsyncClient) -> None:
    # Same key, same path, same body: tenant B's request is its own and A's response stays A's.
    a = await client.put("/v1/kv/orders/t", content=b"v", headers=idem("tenant-key", "acme"))
    b = await client.put("/v1/kv/orders/t", content=b"v", headers=idem("tenant-key", "globex"))
    assert (a.status_code, b.status_code) == (201, 201)
    assert "idempotent-replayed" not in b.headers and a.headers["etag"] != b.headers["etag"]
    globex = await client.get("/v1/kv/orders/t", headers=headers("globex"))
    assert globex.headers["etag"] == b.headers["etag"]
