"""``kind: timeseries`` namespaces: their config, and ``/v1/ts/{ns}/{series}`` through the gateway."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from gateway_helpers import ENV, build_app, client_for, full_config, headers

import prism
from prism.gateway.config import ConfigError, parse_config
from prism.testing.servers.redis import redis_server


def _config(*namespaces: dict[str, Any], store: str = "memory://") -> dict[str, Any]:
    return {"stores": {"main": store}, "namespaces": list(namespaces), "audit": {"sink": "none"}}


def test_timeseries_namespaces_take_their_settings() -> None:
    config = parse_config(
        _config(
            {
                "name": "clicks",
                "kind": "timeseries",
                "timeseries": {"slice_seconds": 60, "retention_seconds": 3600},
            },
            {"name": "plain"},
        ),
        env=ENV,
    )
    clicks, plain = config.namespaces
    assert clicks.kind == "timeseries" and clicks.timeseries is not None
    assert (clicks.timeseries.slice_seconds, clicks.timeseries.retention_seconds) == (60, 3600)
    assert plain.kind == "kv" and plain.timeseries is None


@pytest.mark.parametrize(
    ("namespace", "where", "message"),
    [
        ({"name": "x", "kind": "queue"}, "$.namespaces[0].kind", "Invalid enum value 'queue'"),
        (
            {"name": "x", "timeseries": {}},
            "$.namespaces[0].timeseries",
            "only a namespace of kind: timeseries",
        ),
        ({"name": "x", "kind": "timeseries", "default_ttl": 60}, "$.namespaces[0].default_ttl", "retention"),
        (
            {"name": "x", "kind": "timeseries", "timeseries": {"slice_seconds": 0}},
            "$.namespaces[0].timeseries",
            "slice_seconds",
        ),
        (
            {"name": "x", "kind": "timeseries", "timeseries": {"slice": 60}},
            "$.namespaces[0].timeseries",
            "slice",
        ),
    ],
)
def test_bad_timeseries_settings_name_the_field(namespace: dict[str, Any], where: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(_config(namespace), source="test.yaml", env=ENV)
    assert where in str(caught.value) and message in str(caught.value)


def test_a_store_without_timeseries_is_refused_naming_why(tmp_path: Path) -> None:
    config = _config({"name": "clicks", "kind": "timeseries"}, store="nats://127.0.0.1:1")
    with pytest.raises(ConfigError) as caught:
        build_app(config)
    text = str(caught.value)
    assert "$.namespaces[0].kind" in text and "JetStream KV buckets cannot read" in text


# -- /v1/ts ------------------------------------------------------------------------------


def _ts_config(tmp_path: Path, url: str = "memory://", **audit: Any) -> dict[str, Any]:
    return full_config(
        tmp_path,
        stores={"main": url},
        namespaces=[
            {"name": "clicks", "kind": "timeseries", "timeseries": {"retention_seconds": 86400}},
            {"name": "events", "kind": "timeseries", "tenant_scoped": True},
            {
                "name": "visits",
                "kind": "timeseries",
                "tenant_scoped": True,
                "pii": {"fields": ["email"], "encrypt": True},
            },
            {"name": "plain"},
        ],
        audit=audit or {"sink": "none"},
    )


def _at(seconds_ago: float) -> str:
    return (datetime.now(UTC) - timedelta(seconds=seconds_ago)).isoformat().replace("+00:00", "Z")


async def test_write_read_page_and_delete_a_series(tmp_path: Path) -> None:
    t1, t2, t3 = _at(30), _at(20), _at(10)
    async with client_for(_ts_config(tmp_path)) as c:
        r = await c.post(
            "/v1/ts/clicks/user:42",
            json={
                "events": [
                    {"time": t1, "id": "e1", "data": {"page": "/"}},
                    {"time": t2, "id": "e2", "value": base64.b64encode(b"\x00\xff").decode()},
                    {
                        "time": t3,
                        "id": "e3",
                        "key": "k",
                        "data": [1, 2],
                        "content_type": "application/x-list",
                    },
                ]
            },
            headers=headers("writer"),
        )
        assert r.status_code == 200, r.text
        assert [(x["id"], x["ok"]) for x in r.json()["results"]] == [("e1", True), ("e2", True), ("e3", True)]
        again = await c.post(
            "/v1/ts/clicks/user:42",
            json={
                "events": [
                    {"time": t1, "id": "e1", "data": {"page": "/"}},
                    {"time": t1, "id": "e1", "data": 0},
                ]
            },
            headers=headers("writer"),
        )
        first, conflict = again.json()["results"]
        assert first["ok"] and first["existed"]
        assert (
            not conflict["ok"]
            and conflict["code"] == "PRECONDITION_FAILED"
            and "immutable" in conflict["error"]
        )

        page = (await c.get("/v1/ts/clicks/user:42", params={"limit": 2}, headers=headers("reader"))).json()
        assert [e["id"] for e in page["events"]] == ["e3", "e2"] and page["next_page_token"]
        assert page["events"][1]["value"] == base64.b64encode(b"\x00\xff").decode()
        assert "data" not in page["events"][0]  # not application/json: only the value
        rest = await c.get(
            "/v1/ts/clicks/user:42",
            params={"limit": 2, "page_token": page["next_page_token"]},
            headers=headers("reader"),
        )
        assert [(e["id"], e["data"]) for e in rest.json()["events"]] == [("e1", {"page": "/"})]
        assert rest.json()["next_page_token"] is None
        asc = await c.get(
            "/v1/ts/clicks/user:42",
            params={"order": "asc", "start": t2, "end": t3},
            headers=headers("reader"),
        )
        assert [e["id"] for e in asc.json()["events"]] == ["e2"]

        assert (await c.delete("/v1/ts/clicks/user:42", headers=headers("writer"))).status_code == 204
        assert (await c.get("/v1/ts/clicks/user:42", headers=headers("reader"))).json()["events"] == []


async def test_bad_requests_are_problems_naming_the_field(tmp_path: Path) -> None:
    async with client_for(_ts_config(tmp_path)) as c:
        for body, words in (
            ({"events": [{"time": "2024-01-01T00:00:00", "id": "e", "data": 1}]}, "events[0].time"),
            ({"events": [{"time": _at(1), "id": "e"}]}, "exactly one of value"),
            ({"events": [{"time": _at(1), "id": "", "data": 1}]}, "id"),
            ({"events": [{"time": _at(1), "id": "e", "data": 1, "extra": 1}]}, "extra"),
            ({"events": [{"time": _at(90000), "id": "old", "data": 1}]}, "older than"),
        ):
            r = await c.post("/v1/ts/clicks/s", json=body, headers=headers("writer"))
            assert r.status_code == 400 and words in r.json()["detail"], (body, r.text)
        for params in ({"order": "sideways"}, {"start": "yesterday"}, {"limit": "0"}, {"page_token": "nope"}):
            r = await c.get("/v1/ts/clicks/s", params=params, headers=headers("reader"))
            assert r.status_code == 400, (params, r.text)


async def test_auth_policies_and_kinds_apply(tmp_path: Path) -> None:
    async with client_for(_ts_config(tmp_path)) as c:
        event = {"events": [{"time": _at(1), "id": "e", "data": 1}]}
        assert (await c.post("/v1/ts/clicks/s", json=event)).status_code == 401
        assert (await c.post("/v1/ts/clicks/s", json=event, headers=headers("reader"))).status_code == 403
        assert (await c.get("/v1/ts/clicks/s", headers=headers("nobody"))).status_code == 403
        assert (await c.get("/v1/ts/nosuch/s", headers=headers("reader"))).status_code == 404
        wrong = await c.get("/v1/ts/plain/s", headers=headers("reader"))
        assert wrong.status_code == 404 and "kv" in wrong.json()["detail"]
        wrong = await c.get("/v1/kv/clicks/k", headers=headers("reader"))
        assert wrong.status_code == 404 and "timeseries" in wrong.json()["detail"]


async def test_tenants_see_only_their_own_series(tmp_path: Path) -> None:
    async with client_for(_ts_config(tmp_path)) as c:
        for tenant in ("acme", "globex"):
            r = await c.post(
                "/v1/ts/events/shared",
                json={"events": [{"time": _at(1), "id": "e", "data": tenant}]},
                headers=headers(tenant),
            )
            assert r.status_code == 200
        for tenant in ("acme", "globex"):
            got = (await c.get("/v1/ts/events/shared", headers=headers(tenant))).json()["events"]
            assert [e["data"] for e in got] == [tenant]
        assert (await c.get("/v1/ts/events/shared", headers=headers("writer"))).status_code == 403


async def test_pii_fields_are_encrypted_at_rest_and_masked_without_pii_read(tmp_path: Path) -> None:
    url = f"memory://ts-pii-{uuid.uuid4().hex}"
    config = _ts_config(tmp_path, url)
    store = prism.connect(url)
    async with store, client_for(config, stores={"main": store}) as c:
        visit = {"email": "ann@example.com", "page": "/pay"}
        r = await c.post(
            "/v1/ts/visits/u1",
            json={"events": [{"time": _at(1), "id": "v1", "data": visit}]},
            headers=headers("acme"),
        )
        assert r.status_code == 200, r.text
        stored = (await store.timeseries("visits~t~acme").read("u1")).events[0].value
        assert b"ann@example.com" not in stored and b"/pay" in stored
        masked = (await c.get("/v1/ts/visits/u1", headers=headers("acme"))).json()["events"][0]["data"]
        assert masked == {"email": "***", "page": "/pay"}
        clear = (await c.get("/v1/ts/visits/u1", headers=headers("acme-pii"))).json()["events"][0]["data"]
        assert clear == visit


async def test_each_request_is_audited(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    config = _ts_config(tmp_path, sink="file", path=str(log), flush_interval=0.02)
    async with client_for(config) as c:
        await c.post(
            "/v1/ts/clicks/s",
            json={"events": [{"time": _at(2), "id": "a", "data": 1}, {"time": _at(1), "id": "b", "data": 2}]},
            headers=headers("writer"),
        )
        await c.get("/v1/ts/clicks/s", headers=headers("reader"))
        await c.post("/v1/ts/clicks/s", json={"events": []}, headers=headers("reader"))
        await c.delete("/v1/ts/clicks/s", headers=headers("writer"))
    events = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(e["operation"], e["status"]) for e in events] == [
        ("ts_write", 200),
        ("ts_read", 200),
        ("ts_write", 403),
        ("ts_delete_series", 204),
    ]
    assert events[0]["key"] == "s" and events[0]["key_count"] == 2 and events[1]["key_count"] == 2


async def test_the_openapi_document_describes_the_routes(tmp_path: Path) -> None:
    async with client_for(_ts_config(tmp_path)) as c:
        doc = (await c.get("/openapi.json")).json()
    path = doc["paths"]["/v1/ts/{ns}/{series}"]
    assert set(path) >= {"get", "post", "delete"}
    schemas = doc["components"]["schemas"]
    assert "WireWrite" in schemas and "WirePage" in schemas


async def test_timeseries_namespaces_serve_beside_a_control_store_and_do_not_migrate(tmp_path: Path) -> None:
    config = _ts_config(tmp_path)
    config["stores"]["other"] = "memory://"
    config["control"] = {"store": "control"}
    with redis_server() as server:
        config["stores"]["control"] = server.url
        async with client_for(config) as c:
            event = {"time": _at(5), "id": "e1", "data": {"page": "/"}}
            r = await c.post("/v1/ts/clicks/s", json={"events": [event]}, headers=headers("writer"))
            assert r.status_code == 200, r.text
            r = await c.get("/v1/ts/clicks/s", headers=headers("reader"))
            assert [e["id"] for e in r.json()["events"]] == ["e1"]
            to_other = {"to": "other"}
            r = await c.post("/v1/namespaces/clicks/migration", json=to_other, headers=headers("admin"))
            assert r.status_code == 400 and "only KeyValue namespaces migrate" in r.json()["detail"], r.text
            r = await c.post("/v1/namespaces/plain/migration", json=to_other, headers=headers("admin"))
            assert r.status_code == 201, r.text
