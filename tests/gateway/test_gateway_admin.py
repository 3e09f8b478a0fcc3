"""Namespaces, health, readiness, metrics, and the API description."""

from __future__ import annotations

import re
from pathlib import Path

from gateway_helpers import bearer, build_app, client_for, full_config, headers, running, token

import prism


async def test_namespace_list_shows_only_what_the_caller_may_see(tmp_path: Path) -> None:
    async with client_for(full_config(tmp_path)) as c:
        r = await c.get("/v1/namespaces", headers=headers("writer"))
        assert r.status_code == 200
        names = {n["name"]: n for n in r.json()["namespaces"]}
        # No tenant: the tenant-scoped namespaces are hidden.
        assert set(names) == {"plain", "small"}
        assert names["plain"]["actions"] == ["read", "write"]
        r = await c.get("/v1/namespaces", headers=headers("acme"))
        assert {n["name"] for n in r.json()["namespaces"]} == {"plain", "orders", "people", "small"}
        r = await c.get("/v1/namespaces", headers=headers("nobody"))
        assert r.json()["namespaces"] == []
        r = await c.get("/v1/namespaces")
        assert r.status_code == 401


async def test_namespace_detail_has_settings_capabilities_health_and_no_secrets(tmp_path: Path) -> None:
    config = full_config(tmp_path)
    config["stores"] = {"main": "memory://", "other": "memory://${PRISM_TEST_STORE_NAME}"}
    config["namespaces"].append(
        {"name": "elsewhere", "store": "other", "limits": {"rate": 50, "concurrency": 4}}
    )
    env = {
        "PRISM_TEST_JWT_SECRET": "s3cret-for-tests-only-0123456789abcdef",
        "PRISM_TEST_PII_K1": "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
        "PRISM_TEST_STORE_NAME": "hidden-x",
    }
    async with running(build_app(config, env=env)) as c:
        r = await c.get("/v1/namespaces/elsewhere", headers=headers("admin"))
        assert r.status_code == 200
        body = r.json()
        assert body["store"] == "other" and body["backend"] == "memory"
        assert body["capabilities"]["transactions"] is True
        assert body["health"] == {"status": "UP"}
        assert body["limits"] == {"rate": 50, "burst": 50, "concurrency": 4}
        assert body["access"]["write"] == ["writer", "admin"]
        assert "hidden-x" not in r.text and "memory://" not in r.text
        r = await c.get("/v1/namespaces/people", headers=headers("acme"))
        # A writer sees limits and health, not which fields hold personal data.
        assert r.status_code == 200 and "pii" not in r.json()
        assert (await c.get("/v1/namespaces/people", headers=headers("writer"))).status_code == 403
        assert (await c.get("/v1/namespaces/nope", headers=headers("admin"))).status_code == 404
        assert (await c.get("/v1/namespaces/plain")).status_code == 401


async def test_operational_routes_need_no_credentials(tmp_path: Path) -> None:
    async with client_for(full_config(tmp_path)) as c:
        assert (await c.get("/healthz")).json() == {"status": "ok"}
        r = await c.get("/readyz")
        assert r.status_code == 200 and r.json()["status"] == "ready"
        assert r.json()["stores"] == {"main": {"status": "UP"}}
        await c.put("/v1/kv/plain/m", content=b"x", headers=headers("writer"))
        r = await c.get("/metrics")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
        assert re.search(
            r'prism_http_requests_total\{method="PUT",namespace="plain",route="/v1/kv/\{ns\}/\{key:path\}",'
            r'status="201"\} [1-9]',
            r.text,
        )
        assert "prism_kv_operations_total" in r.text
        assert "prism_http_request_duration_seconds_bucket" in r.text
        r = await c.get("/openapi.json")
        doc = r.json()
        assert doc["openapi"].startswith("3.")
        assert "/v1/kv/{ns}/{key}" in doc["paths"] and "/v1/records/{ns}/{id}" in doc["paths"]
        # Without credentials the description names no namespace (see test_gateway_openapi.py).
        assert "enum" not in doc["paths"]["/v1/kv/{ns}"]["parameters"][0]["schema"]
        r = await c.get("/docs")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        assert "/v1/kv/{ns}/{key}" in r.text
        assert "<script" not in r.text and not re.search(r"(src|href)=\"?https?://", r.text)


async def test_readyz_is_503_with_details_when_a_store_is_down(tmp_path: Path) -> None:
    config = full_config(tmp_path)
    config["stores"] = {"main": "memory://", "flaky": "memory://"}
    flaky = prism.connect("memory://")
    app = build_app(config, stores={"flaky": flaky})
    async with running(app) as c:
        assert (await c.get("/readyz")).status_code == 200
        await flaky.close()
        r = await c.get("/readyz")
        assert r.status_code == 503
        assert r.headers["retry-after"] == "1"
        body = r.json()
        assert body["status"] == "unready"
        assert body["stores"]["main"] == {"status": "UP"}
        assert body["stores"]["flaky"]["status"] == "DOWN" and "closed" in body["stores"]["flaky"]["error"]
        assert (await c.get("/healthz")).status_code == 200


async def test_jwt_callers_see_namespaces_too(tmp_path: Path) -> None:
    async with client_for(full_config(tmp_path)) as c:
        r = await c.get("/v1/namespaces", headers=bearer(token(roles=["reader"])))
        assert {n["name"] for n in r.json()["namespaces"]} == {"plain", "orders", "people", "small"}
        assert all(n["actions"] == ["read"] for n in r.json()["namespaces"])
