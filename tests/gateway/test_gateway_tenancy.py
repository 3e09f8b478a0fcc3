"""Tenant isolation: one tenant can never read, list, overwrite or delete another's keys, on any route."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from gateway_helpers import bearer, client_for, full_config, headers, token

ACME = headers("acme")
GLOBEX = headers("globex")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(full_config(tmp_path)) as c:
        r = await c.put("/v1/kv/orders/secret", content=b"acme-data", headers=ACME)
        assert r.status_code == 201
        r = await c.put(
            "/v1/records/orders/rec", json={"items": [{"key": "i", "value": b64(b"acme-item")}]}, headers=ACME
        )
        assert r.status_code == 200
        yield c


async def acme_still_intact(c: httpx.AsyncClient) -> None:
    assert (await c.get("/v1/kv/orders/secret", headers=ACME)).content == b"acme-data"
    items = (await c.get("/v1/records/orders/rec", headers=ACME)).json()["items"]
    assert [base64.b64decode(i["value"]) for i in items] == [b"acme-item"]


async def test_reads_never_see_another_tenant(client: httpx.AsyncClient) -> None:
    assert (await client.get("/v1/kv/orders/secret", headers=GLOBEX)).status_code == 404
    assert (await client.head("/v1/kv/orders/secret", headers=GLOBEX)).status_code == 404
    r = await client.post("/v1/kv/orders/_bulk/get", json={"keys": ["secret", "rec"]}, headers=GLOBEX)
    assert [i["found"] for i in r.json()["items"]] == [False, False]
    assert (await client.get("/v1/kv/orders", headers=GLOBEX)).json()["keys"] == []
    assert (await client.get("/v1/kv/orders", params={"prefix": "sec"}, headers=GLOBEX)).json()["keys"] == []
    assert (await client.get("/v1/records/orders/rec", headers=GLOBEX)).json()["items"] == []
    assert sorted((await client.get("/v1/kv/orders", headers=ACME)).json()["keys"]) == ["rec", "secret"]


async def test_writes_never_touch_another_tenant(client: httpx.AsyncClient) -> None:
    acme_etag = (await client.get("/v1/kv/orders/secret", headers=ACME)).headers["etag"]
    r = await client.put("/v1/kv/orders/secret", content=b"evil", headers={**GLOBEX, "If-Match": acme_etag})
    assert r.status_code == 412
    # Globex gets its own, separate "secret".
    assert (await client.put("/v1/kv/orders/secret", content=b"globex", headers=GLOBEX)).status_code == 201
    assert (
        await client.delete("/v1/kv/orders/secret", headers={**GLOBEX, "If-Match": acme_etag})
    ).status_code == 412
    items = [{"key": "secret", "value": b64(b"evil"), "if_match": acme_etag.strip('"')}]
    r = await client.post("/v1/kv/orders/_bulk/put", json={"items": items}, headers=GLOBEX)
    assert r.json()["results"][0]["ok"] is False
    r = await client.post("/v1/kv/orders/_bulk/delete", json={"items": [{"key": "rec"}]}, headers=GLOBEX)
    assert r.json()["results"][0]["ok"] is True
    ops = {"ops": [{"op": "delete", "key": "rec"}, {"op": "put", "key": "secret2", "value": b64(b"x")}]}
    assert (await client.post("/v1/kv/orders/_transact", json=ops, headers=GLOBEX)).status_code == 200
    r = await client.put(
        "/v1/records/orders/rec", json={"items": [{"key": "i", "value": b64(b"evil")}]}, headers=GLOBEX
    )
    assert r.json()["results"][0]["ok"] is True
    assert (await client.delete("/v1/records/orders/rec", headers=GLOBEX)).json() == {"deleted": 1}
    assert (await client.delete("/v1/kv/orders/secret", headers=GLOBEX)).status_code == 204
    await acme_still_intact(client)
    assert sorted((await client.get("/v1/kv/orders", headers=ACME)).json()["keys"]) == ["rec", "secret"]


ROUTES = [
    ("GET", "/v1/kv/orders/secret", None),
    ("HEAD", "/v1/kv/orders/secret", None),
    ("PUT", "/v1/kv/orders/secret", b"x"),
    ("DELETE", "/v1/kv/orders/secret", None),
    ("GET", "/v1/kv/orders", None),
    ("POST", "/v1/kv/orders/_bulk/get", b'{"keys": ["secret"]}'),
    ("POST", "/v1/kv/orders/_bulk/put", b'{"items": []}'),
    ("POST", "/v1/kv/orders/_bulk/delete", b'{"items": [{"key": "secret"}]}'),
    ("POST", "/v1/kv/orders/_transact", b'{"ops": [{"op": "delete", "key": "secret"}]}'),
    ("GET", "/v1/records/orders/rec", None),
    ("PUT", "/v1/records/orders/rec", b'{"items": []}'),
    ("DELETE", "/v1/records/orders/rec", None),
]


@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
async def test_callers_without_a_tenant_are_refused_on_every_route(
    client: httpx.AsyncClient, method: str, path: str, body: bytes | None
) -> None:
    for hdrs in (headers("writer"), headers("admin"), bearer(token(tenant=None, roles=["admin"]))):
        r = await client.request(method, path, content=body, headers=hdrs)
        assert r.status_code == 403, (method, path, r.text)
        if method != "HEAD":
            assert r.json()["code"] == "TENANT_REQUIRED"
    await acme_still_intact(client)


async def test_jwt_tenants_are_isolated_like_key_tenants(client: httpx.AsyncClient) -> None:
    acme_jwt = bearer(token(tenant="acme", sub="alice"))
    globex_jwt = bearer(token(tenant="globex", sub="bob"))
    assert (await client.get("/v1/kv/orders/secret", headers=acme_jwt)).content == b"acme-data"
    assert (await client.get("/v1/kv/orders/secret", headers=globex_jwt)).status_code == 404


async def test_physical_names_are_not_reachable_directly(client: httpx.AsyncClient) -> None:
    for name in ("orders~t~acme", "orders%7Et%7Eacme"):
        r = await client.get(f"/v1/kv/{name}/secret", headers=headers("admin"))
        assert r.status_code == 404 and r.json()["code"] == "NAMESPACE_NOT_FOUND"


async def test_unscoped_namespaces_are_shared(client: httpx.AsyncClient) -> None:
    await client.put("/v1/kv/plain/shared", content=b"for-all", headers=ACME)
    assert (await client.get("/v1/kv/plain/shared", headers=GLOBEX)).content == b"for-all"
