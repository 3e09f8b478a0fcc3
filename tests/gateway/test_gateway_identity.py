"""Who is calling and what is recorded: credentials, reserved namespaces, audit, visibility.

* One credential rule on every gateway route: one credential per request, and no
  ``?token=`` outside the WebSocket handshake and SSE event streams.
* Prism's internal namespaces can never be configured or reached as data.
* Every request that reaches authentication is audited (401 and 404 included), and
  with ``on_failure: reject`` no write is acknowledged before its event is written.
* Only a namespace's admins see its access lists, PII fields and store.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import msgspec
import pytest
from gateway_helpers import ENV, bearer, client_for, full_config, headers, running, token

import prism
from prism.gateway import create_app, parse_config
from prism.gateway.app import load_extensions
from prism.gateway.auth import hash_api_key
from prism.gateway.config import ConfigError, GatewayConfig, NamespaceConfig
from prism.streaming.handlers import Router
from prism.testing.servers.redis import redis_server

router = Router()


@router.handler("noop", estimated_duration=0.0)
async def noop(payload: msgspec.Raw) -> msgspec.Raw:
    """Answer with the payload."""
    return payload


# -- one credential rule ---------------------------------------------------------------

#: (method, path, body) of every gateway route that takes credentials.
ROUTES = [
    ("GET", "/v1/kv/plain/k", None),
    ("HEAD", "/v1/kv/plain/k", None),
    ("PUT", "/v1/kv/plain/k", b"x"),
    ("DELETE", "/v1/kv/plain/k", None),
    ("GET", "/v1/kv/plain", None),
    ("POST", "/v1/kv/plain/_bulk/get", b'{"keys": ["k"]}'),
    ("POST", "/v1/kv/plain/_transact", b'{"ops": [{"op": "delete", "key": "k"}]}'),
    ("GET", "/v1/records/plain/r", None),
    ("PUT", "/v1/records/plain/r", b'{"items": []}'),
    ("GET", "/v1/namespaces", None),
    ("GET", "/v1/namespaces/plain", None),
]


@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
async def test_query_tokens_are_refused_outside_websocket_and_sse(
    tmp_path: Path, method: str, path: str, body: bytes | None
) -> None:
    async with client_for(full_config(tmp_path)) as c:
        # Alone: a valid key in the URL is still refused, with a message saying where it is accepted.
        r = await c.request(method, path, params={"token": "key-writer"}, content=body)
        assert r.status_code == 401
        if method != "HEAD":
            assert r.json()["code"] == "QUERY_TOKEN_NOT_ALLOWED"
            assert "WebSocket" in r.json()["detail"] and "SSE" in r.json()["detail"]
        # Beside a valid header: refused too, nothing is written.
        r = await c.request(
            method, path, params={"token": "key-admin"}, content=body, headers=headers("writer")
        )
        assert r.status_code == 401
        # Repeated headers are refused on every route.
        twice = [("X-API-Key", "key-writer"), ("X-API-Key", "key-admin")]
        r = await c.request(method, path, content=body, headers=twice)
        assert r.status_code == 401
        if method != "HEAD":
            assert r.json()["code"] == "AMBIGUOUS_CREDENTIALS"
        check = await c.get("/v1/kv/plain/k", headers=headers("writer"))
        assert check.status_code == 404


async def test_idempotency_keys_belong_to_one_issuer_and_subject(tmp_path: Path) -> None:
    config = full_config(tmp_path)
    del config["auth"]["jwt"]["issuer"]
    one = bearer(token(sub="svc", iss="https://one.example"))
    two = bearer(token(sub="svc", iss="https://two.example"))
    async with client_for(config) as c:
        first = await c.put("/v1/kv/orders/k", content=b"a", headers={**one, "Idempotency-Key": "same"})
        assert first.status_code == 201
        # The same key and request from another issuer's "svc" is its own write, not a replay.
        second = await c.put("/v1/kv/orders/k", content=b"a", headers={**two, "Idempotency-Key": "same"})
        assert second.status_code == 200 and "idempotent-replayed" not in second.headers
        assert second.headers["etag"] != first.headers["etag"]
        again = await c.put("/v1/kv/orders/k", content=b"a", headers={**one, "Idempotency-Key": "same"})
        assert again.headers["idempotent-replayed"] == "true"


# -- reserved namespaces -----------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "streaming_requests",
        "streaming_request_index",
        "streaming_connections",
        "Streaming_Requests",
        "prism_queue_streaming",
        "prism-audit",
        "prism-idempotency",
        "prism.internal",
    ],
)
def test_internal_namespace_names_are_refused_in_config(tmp_path: Path, name: str) -> None:
    config = full_config(tmp_path)
    config["namespaces"].append({"name": name})
    with pytest.raises(ConfigError) as info:
        parse_config(config, source="test.yaml", env=ENV)
    assert info.value.path == "$.namespaces[4].name"
    assert "reserved" in info.value.message and repr(name) in info.value.message


def test_a_custom_streaming_prefix_is_reserved_too(tmp_path: Path) -> None:
    config = full_config(tmp_path, streaming={"namespace_prefix": "jobs"})
    config["namespaces"].append({"name": "jobs_requests"})
    with pytest.raises(ConfigError, match="'jobs_' are reserved") as info:
        parse_config(config, source="test.yaml", env=ENV)
    assert info.value.path == "$.namespaces[4].name"
    # The same name is an ordinary data namespace when streaming uses another prefix.
    config = full_config(tmp_path)
    config["namespaces"].append({"name": "jobs_requests"})
    parse_config(config, source="test.yaml", env=ENV)


def test_the_audit_namespace_cannot_be_an_internal_store(tmp_path: Path) -> None:
    config = full_config(tmp_path, audit={"sink": "namespace", "namespace": "streaming_requests"})
    with pytest.raises(ConfigError) as info:
        parse_config(config, source="test.yaml", env=ENV)
    assert info.value.path == "$.audit.namespace"


def test_a_config_built_in_code_cannot_serve_an_internal_namespace() -> None:
    config = GatewayConfig(
        stores={"main": "memory://"},
        namespaces=[NamespaceConfig(name="ok"), NamespaceConfig(name="streaming_requests")],
    )
    with pytest.raises(ConfigError) as info:
        create_app(config)
    assert info.value.path == "$.namespaces[1].name"


async def test_internal_stores_are_not_reachable_over_http(tmp_path: Path) -> None:
    config = full_config(tmp_path, handlers=["test_gateway_identity:router"])
    config["stores"] = {"main": f"memory://internal-{uuid.uuid4().hex}"}
    parsed = parse_config(config, source="test.yaml", env=ENV)
    (extension,) = load_extensions(parsed)
    app = create_app(
        parsed,
        env=ENV,
        extra_routes=extension.routes,
        on_startup=extension.on_startup,
        on_shutdown=extension.on_shutdown,
    )
    async with running(app) as c:
        r = await c.post(
            "/v1/requests",
            json={"action": "noop", "id": "mine", "payload": {"x": 1}},
            headers=headers("acme"),
        )
        assert r.status_code == 202, r.text
        rid = r.json()["request_id"]
        kept = await c.put(
            "/v1/kv/plain/x", content=b"x", headers=headers("writer", **{"Idempotency-Key": "k1"})
        )
        assert kept.status_code == 201
        admin = headers("admin")
        probes = [
            ("GET", f"/v1/kv/streaming_requests/{rid}"),
            ("GET", "/v1/kv/streaming_requests"),
            ("GET", "/v1/kv/streaming_request_index"),
            ("GET", "/v1/kv/streaming_connections"),
            ("GET", f"/v1/records/streaming_requests/{rid}"),
            ("POST", "/v1/kv/streaming_requests/_bulk/get"),
            ("GET", "/v1/kv/prism-idempotency"),
            ("GET", "/v1/namespaces/streaming_requests"),
        ]
        for method, path in probes:
            body = b'{"keys": ["' + rid.encode() + b'"]}' if method == "POST" else None
            r = await c.request(method, path, headers=admin, content=body)
            assert r.status_code == 404, (path, r.text)
            assert r.json()["code"] == "NAMESPACE_NOT_FOUND"
        listed = await c.get("/v1/namespaces", headers=admin)
        assert all(not n["name"].startswith(("streaming_", "prism")) for n in listed.json()["namespaces"])


# -- audit completeness -------------------------------------------------------------------


def audit_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


async def test_refused_requests_are_audited_on_every_route(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    config = full_config(tmp_path, audit={"sink": "file", "path": str(log), "flush_interval": 0.02})
    async with client_for(config) as c:
        assert (await c.put("/v1/kv/plain/k", content=b"x")).status_code == 401
        assert (await c.get("/v1/kv/plain/k", headers={"X-API-Key": "wrong"})).status_code == 401
        assert (await c.get("/v1/kv/nope/k", headers=headers("writer"))).status_code == 404
        assert (await c.put("/v1/kv/nope/k", content=b"x", headers=headers("writer"))).status_code == 404
        assert (await c.get("/v1/records/nope/r", headers=bearer(token()))).status_code == 404
        assert (await c.get("/v1/namespaces")).status_code == 401
        assert (await c.get("/v1/namespaces/nope", headers=headers("admin"))).status_code == 404
        assert (await c.get("/v1/namespaces", headers=headers("reader"))).status_code == 200
    events = audit_lines(log)
    seen = [(e["operation"], e.get("namespace"), e["status"], e["outcome"]) for e in events]
    assert seen == [
        ("put", "plain", 401, "MISSING_CREDENTIALS"),
        ("get", "plain", 401, "INVALID_CREDENTIALS"),
        ("get", "nope", 404, "NAMESPACE_NOT_FOUND"),
        ("put", "nope", 404, "NAMESPACE_NOT_FOUND"),
        ("records_get", "nope", 404, "NAMESPACE_NOT_FOUND"),
        ("namespaces_list", None, 401, "MISSING_CREDENTIALS"),
        ("namespace_get", "nope", 404, "NAMESPACE_NOT_FOUND"),
        ("namespaces_list", None, 200, "ok"),
    ]
    assert "principal" not in events[0] and "principal" not in events[1]
    assert events[2]["principal"] == "writer" and "issuer" not in events[2]
    assert events[4]["principal_kind"] == "jwt" and events[4]["issuer"] == "https://id.example.test"
    assert "wrong" not in log.read_text()


async def test_failing_closed_no_write_is_acknowledged_before_its_event_is_written(tmp_path: Path) -> None:
    url = f"memory://durable-{uuid.uuid4().hex}"
    config = full_config(tmp_path, audit={"sink": "file", "path": "/dev/full", "on_failure": "reject"})
    config["stores"] = {"main": url}
    async with client_for(config) as c:
        # The sink fails from its first write: the very first write is not acknowledged.
        r = await c.put("/v1/kv/plain/first", content=b"x", headers=headers("writer"))
        assert r.status_code == 503
        assert r.json()["code"] == "AUDIT_UNAVAILABLE" and r.headers["retry-after"] == "1"
        # Known down: reads and writes are refused before anything is done.
        r = await c.put("/v1/kv/plain/second", content=b"x", headers=headers("writer"))
        assert r.status_code == 503
        assert (await c.get("/v1/kv/plain/first", headers=headers("writer"))).status_code == 503
    async with prism.connect(url) as store:
        assert await store.namespace("plain").get("second") is None


async def test_failing_closed_on_a_namespace_sink_whose_redis_stops(tmp_path: Path) -> None:
    with redis_server() as redis:
        if redis.external:
            pytest.skip("needs a Redis server this test may stop (PRISM_TEST_REDIS_URL points elsewhere)")
        config = full_config(
            tmp_path,
            audit={"sink": "namespace", "store": "audit", "on_failure": "reject", "confirm_timeout": 3},
        )
        config["stores"] = {"main": f"memory://redis-sink-{uuid.uuid4().hex}", "audit": redis.url}
        async with client_for(config) as c:
            for i in range(3):
                r = await c.put(f"/v1/kv/plain/k{i}", content=b"x", headers=headers("writer"))
                assert r.status_code == 201
            # Each acknowledged write's event is already in the audit namespace.
            async with prism.connect(redis.url) as store:
                page = await store.namespace("prism-audit").scan(limit=100)
                stored = [
                    json.loads(i.value) for i in await store.namespace("prism-audit").get_many(page.keys) if i
                ]
            assert sorted(e["key"] for e in stored) == ["k0", "k1", "k2"]
            redis.stop()
            r = await c.put("/v1/kv/plain/after", content=b"x", headers=headers("writer"))
            assert r.status_code == 503 and r.json()["code"] == "AUDIT_UNAVAILABLE"
            redis.start()


# -- who sees what -------------------------------------------------------------------------


async def test_namespace_settings_are_for_its_admins(tmp_path: Path) -> None:
    config = full_config(tmp_path)
    config["auth"]["api_keys"].append(
        {"name": "acme-admin", "sha256": hash_api_key("key-acme-admin"), "roles": ["admin"], "tenant": "acme"}
    )
    secret_bits = ("access", "pii", "store", "backend", "capabilities", "audit")
    async with client_for(config) as c:
        for who in (headers("acme"), bearer(token(roles=["reader"]))):
            r = await c.get("/v1/namespaces/people", headers=who)
            assert r.status_code == 200
            body = r.json()
            assert body["name"] == "people" and body["health"] == {"status": "UP"}
            assert "limits" in body and "actions" in body
            assert not set(secret_bits) & set(body), body
            assert "email" not in r.text
        r = await c.get("/v1/namespaces/people", headers={"X-API-Key": "key-acme-admin"})
        body = r.json()
        assert body["pii"] == {"fields": ["email", "name"], "encrypt": True}
        assert body["access"]["admin"] == ["admin"] and body["store"] == "main"
        listed = await c.get("/v1/namespaces", headers=headers("acme"))
        for entry in listed.json()["namespaces"]:
            assert set(entry) == {"name", "tenant_scoped", "actions"}
