"""Contract tests of /v1/kv against the real app: every route, every documented status."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from gateway_helpers import client_for, full_config, headers

W = headers("writer")


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(full_config(tmp_path)) as c:
        yield c


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, object] = response.json()
    assert body["status"] == status
    assert body["code"] == code
    assert str(body["type"]).endswith(code.lower().replace("_", "-"))
    assert body["title"] and body["detail"]
    return body


async def test_put_creates_then_replaces_and_get_returns_raw_value(client: httpx.AsyncClient) -> None:
    r = await client.put(
        "/v1/kv/plain/user:1", content=b"\x00\x01raw", headers={**W, "Content-Type": "image/png"}
    )
    assert r.status_code == 201
    first = r.headers["etag"]
    assert first.startswith('"') and first.endswith('"')
    r = await client.put(
        "/v1/kv/plain/user:1", content=b"second", headers={**W, "Content-Type": "text/plain"}
    )
    assert r.status_code == 200
    assert r.headers["etag"] != first
    r = await client.get("/v1/kv/plain/user:1", headers=W)
    assert r.status_code == 200
    assert r.content == b"second"
    assert r.headers["content-type"].startswith("text/plain")
    assert r.headers["etag"] != first
    assert "x-prism-expires-at" not in r.headers


async def test_head_has_the_headers_and_no_body(client: httpx.AsyncClient) -> None:
    await client.put("/v1/kv/plain/h", content=b"12345", headers={**W, "Content-Type": "application/json"})
    r = await client.head("/v1/kv/plain/h", headers=W)
    assert r.status_code == 200
    assert r.content == b""
    assert r.headers["content-length"] == "5"
    assert r.headers["content-type"] == "application/json"
    assert r.headers["etag"]
    assert (await client.head("/v1/kv/plain/missing", headers=W)).status_code == 404


async def test_value_without_content_type_is_octet_stream(client: httpx.AsyncClient) -> None:
    await client.put("/v1/kv/plain/bin", content=b"abc", headers=W)
    r = await client.get("/v1/kv/plain/bin", headers=W)
    assert r.headers["content-type"] == "application/octet-stream"


async def test_missing_key_is_404_problem(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get("/v1/kv/plain/nope", headers=W), 404, "KEY_NOT_FOUND")


async def test_unknown_namespace_is_404(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get("/v1/kv/nowhere/k", headers=W), 404, "NAMESPACE_NOT_FOUND")
    assert_problem(await client.put("/v1/kv/nowhere/k", content=b"x", headers=W), 404, "NAMESPACE_NOT_FOUND")


async def test_ttl_sets_expiry_header_and_entry_expires(client: httpx.AsyncClient) -> None:
    before = datetime.now(UTC)
    r = await client.put("/v1/kv/plain/t", params={"ttl": "0.4"}, content=b"soon", headers=W)
    assert r.status_code == 201
    r = await client.get("/v1/kv/plain/t", headers=W)
    expires = datetime.fromisoformat(r.headers["x-prism-expires-at"].replace("Z", "+00:00"))
    assert r.headers["x-prism-expires-at"].endswith("Z")
    assert 0.2 < (expires - before).total_seconds() < 2
    await asyncio.sleep(0.5)
    assert (await client.get("/v1/kv/plain/t", headers=W)).status_code == 404
    listed = (await client.get("/v1/kv/plain", headers=W)).json()["keys"]
    assert "t" not in listed


@pytest.mark.parametrize("ttl", ["0", "-3", "abc", "inf", "nan", "1e300", str(100 * 365 * 86400 + 1)])
async def test_invalid_ttl_is_400_and_writes_nothing(client: httpx.AsyncClient, ttl: str) -> None:
    r = await client.put("/v1/kv/plain/badttl", params={"ttl": ttl}, content=b"x", headers=W)
    assert_problem(r, 400, "INVALID_TTL")
    assert (await client.get("/v1/kv/plain/badttl", headers=W)).status_code == 404


async def test_if_match_and_if_none_match_conditions(client: httpx.AsyncClient) -> None:
    r = await client.put("/v1/kv/plain/c", content=b"v1", headers={**W, "If-None-Match": "*"})
    assert r.status_code == 201
    etag = r.headers["etag"]
    r = await client.put("/v1/kv/plain/c", content=b"v2", headers={**W, "If-None-Match": "*"})
    assert_problem(r, 412, "PRECONDITION_FAILED")
    r = await client.put("/v1/kv/plain/c", content=b"v2", headers={**W, "If-Match": '"not-the-etag"'})
    assert_problem(r, 412, "PRECONDITION_FAILED")
    assert (await client.get("/v1/kv/plain/c", headers=W)).content == b"v1"
    r = await client.put("/v1/kv/plain/c", content=b"v2", headers={**W, "If-Match": etag})
    assert r.status_code == 200
    r = await client.put("/v1/kv/plain/never", content=b"x", headers={**W, "If-Match": etag})
    assert_problem(r, 412, "PRECONDITION_FAILED")
    assert_problem(
        await client.put("/v1/kv/plain/c", content=b"x", headers={**W, "If-Match": "*"}),
        400,
        "INVALID_HEADER",
    )


async def test_get_with_matching_if_none_match_is_304(client: httpx.AsyncClient) -> None:
    etag = (await client.put("/v1/kv/plain/cached", content=b"x", headers=W)).headers["etag"]
    r = await client.get("/v1/kv/plain/cached", headers={**W, "If-None-Match": etag})
    assert r.status_code == 304
    assert r.headers["etag"] == etag
    r = await client.get("/v1/kv/plain/cached", headers={**W, "If-None-Match": '"other"'})
    assert r.status_code == 200


async def test_value_over_namespace_limit_is_413(client: httpx.AsyncClient) -> None:
    r = await client.put("/v1/kv/small/k", content=b"x" * 17, headers=W)
    assert_problem(r, 413, "BODY_TOO_LARGE")
    assert (await client.put("/v1/kv/small/k", content=b"x" * 16, headers=W)).status_code == 201


async def test_streamed_body_over_limit_is_413(client: httpx.AsyncClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(4):
            yield b"x" * 8

    r = await client.put("/v1/kv/small/streamed", content=chunks(), headers=W)
    assert_problem(r, 413, "BODY_TOO_LARGE")
    assert (await client.get("/v1/kv/small/streamed", headers=W)).status_code == 404


@pytest.mark.parametrize("path", ["/v1/kv/plain/", "/v1/kv/plain/a%00b", "/v1/kv/plain/" + "k" * 1025])
async def test_invalid_keys_are_400(client: httpx.AsyncClient, path: str) -> None:
    assert_problem(await client.put(path, content=b"x", headers=W), 400, "INVALID_KEY")
    assert_problem(await client.get(path, headers=W), 400, "INVALID_KEY")


async def test_keys_may_hold_slashes_and_unicode(client: httpx.AsyncClient) -> None:
    assert (await client.put("/v1/kv/plain/a/b/c", content=b"deep", headers=W)).status_code == 201
    assert (await client.put("/v1/kv/plain/caf%C3%A9", content=b"u", headers=W)).status_code == 201
    assert (await client.get("/v1/kv/plain/a/b/c", headers=W)).content == b"deep"
    keys = (await client.get("/v1/kv/plain", headers=W)).json()["keys"]
    assert "a/b/c" in keys and "café" in keys


async def test_delete_is_204_also_when_missing_and_honours_if_match(client: httpx.AsyncClient) -> None:
    etag = (await client.put("/v1/kv/plain/d", content=b"x", headers=W)).headers["etag"]
    r = await client.delete("/v1/kv/plain/d", headers={**W, "If-Match": '"wrong"'})
    assert_problem(r, 412, "PRECONDITION_FAILED")
    assert (await client.get("/v1/kv/plain/d", headers=W)).status_code == 200
    assert (await client.delete("/v1/kv/plain/d", headers={**W, "If-Match": etag})).status_code == 204
    assert (await client.get("/v1/kv/plain/d", headers=W)).status_code == 404
    assert (await client.delete("/v1/kv/plain/d", headers=W)).status_code == 204


async def test_bulk_get_answers_every_key_in_order(client: httpx.AsyncClient) -> None:
    await client.put("/v1/kv/plain/b1", content=b"one", headers={**W, "Content-Type": "text/plain"})
    await client.put("/v1/kv/plain/b2", params={"ttl": 60}, content=b"two", headers=W)
    r = await client.post("/v1/kv/plain/_bulk/get", json={"keys": ["b2", "missing", "b1"]}, headers=W)
    assert r.status_code == 200
    items = r.json()["items"]
    assert [i["key"] for i in items] == ["b2", "missing", "b1"]
    assert [i["found"] for i in items] == [True, False, True]
    assert base64.b64decode(items[0]["value"]) == b"two"
    assert items[0]["expires_at"].endswith("Z")
    assert items[2]["content_type"] == "text/plain" and items[2]["expires_at"] is None
    assert items[2]["etag"]
    assert items[1] == {"key": "missing", "found": False}


async def test_bulk_put_fails_only_the_key_whose_condition_fails(client: httpx.AsyncClient) -> None:
    await client.put("/v1/kv/plain/exists", content=b"old", headers=W)
    body = {
        "items": [
            {"key": "p1", "value": b64(b"v1"), "content_type": "text/plain"},
            {"key": "exists", "value": b64(b"new"), "if_absent": True},
            {"key": "p3", "value": b64(b"v3"), "ttl": 60},
        ]
    }
    r = await client.post("/v1/kv/plain/_bulk/put", json=body, headers=W)
    assert r.status_code == 200
    results = r.json()["results"]
    assert [x["ok"] for x in results] == [True, False, True]
    assert results[0]["etag"] and "error" not in results[0]
    assert results[1]["error"]["code"] == "PRECONDITION_FAILED"
    assert (await client.get("/v1/kv/plain/exists", headers=W)).content == b"old"
    assert (await client.get("/v1/kv/plain/p3", headers=W)).headers["x-prism-expires-at"]


@pytest.mark.parametrize(
    "body",
    [
        {"items": [{"key": "ok1", "value": b64(b"x")}, {"key": "", "value": b64(b"x")}]},
        {"items": [{"key": "ok1", "value": b64(b"x")}, {"key": "bad", "value": "***not base64***"}]},
        {"items": [{"key": "ok1", "value": b64(b"x")}, {"key": "bad", "value": b64(b"x"), "ttl": -1}]},
        {"items": [{"key": "ok1", "value": b64(b"x")}, {"key": "bad", "value": b64(b"x"), "ttl": 1e300}]},
        {"items": [{"key": "ok1", "value": b64(b"x"), "surprise": 1}]},
        {"items": "nope"},
    ],
)
async def test_bulk_put_with_bad_input_is_400_and_writes_nothing(
    client: httpx.AsyncClient, body: object
) -> None:
    r = await client.post("/v1/kv/plain/_bulk/put", json=body, headers=W)
    assert r.status_code == 400, r.text
    assert r.json()["code"] in {"INVALID_BODY", "INVALID_KEY", "INVALID_ARGUMENT"}
    assert (await client.get("/v1/kv/plain/ok1", headers=W)).status_code == 404


async def test_bulk_put_not_json_is_400(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/kv/plain/_bulk/put", content=b"{nope", headers=W)
    assert_problem(r, 400, "INVALID_BODY")
    assert_problem(await client.post("/v1/kv/plain/_bulk/put", headers=W), 400, "INVALID_BODY")


async def test_bulk_delete_results_per_key(client: httpx.AsyncClient) -> None:
    etag = (await client.put("/v1/kv/plain/x1", content=b"1", headers=W)).headers["etag"].strip('"')
    await client.put("/v1/kv/plain/x2", content=b"2", headers=W)
    body = {"items": [{"key": "x1", "if_match": etag}, {"key": "x2", "if_match": "wrong"}, {"key": "x3"}]}
    r = await client.post("/v1/kv/plain/_bulk/delete", json=body, headers=W)
    assert r.status_code == 200
    assert [x["ok"] for x in r.json()["results"]] == [True, False, True]
    assert (await client.get("/v1/kv/plain/x1", headers=W)).status_code == 404
    assert (await client.get("/v1/kv/plain/x2", headers=W)).status_code == 200


async def test_transact_applies_all_or_nothing(client: httpx.AsyncClient) -> None:
    await client.put("/v1/kv/plain/acct", content=b"100", headers=W)
    ops = {"ops": [{"op": "put", "key": "t1", "value": b64(b"a")}, {"op": "delete", "key": "acct"}]}
    r = await client.post("/v1/kv/plain/_transact", json=ops, headers=W)
    assert r.status_code == 200
    assert [x["ok"] for x in r.json()["results"]] == [True, True]
    assert (await client.get("/v1/kv/plain/acct", headers=W)).status_code == 404
    failing = {
        "ops": [
            {"op": "put", "key": "t2", "value": b64(b"b")},
            {"op": "put", "key": "t1", "value": b64(b"c"), "if_absent": True},
        ]
    }
    r = await client.post("/v1/kv/plain/_transact", json=failing, headers=W)
    body = assert_problem(r, 412, "PRECONDITION_FAILED")
    assert "t1" in str(body["detail"]) and "nothing was applied" in str(body["detail"])
    assert (await client.get("/v1/kv/plain/t2", headers=W)).status_code == 404
    assert (await client.get("/v1/kv/plain/t1", headers=W)).content == b"a"


@pytest.mark.parametrize(
    "ops",
    [
        [{"op": "put", "key": "t9"}],
        [{"op": "delete", "key": "t9", "value": b64(b"x")}],
        [{"op": "merge", "key": "t9"}],
    ],
)
async def test_transact_rejects_malformed_ops(client: httpx.AsyncClient, ops: list[object]) -> None:
    r = await client.post("/v1/kv/plain/_transact", json={"ops": ops}, headers=W)
    assert_problem(r, 400, "INVALID_BODY")


async def test_scan_pages_through_keys_with_prefix(client: httpx.AsyncClient) -> None:
    for i in range(5):
        await client.put(f"/v1/kv/plain/s:{i}", content=b"x", headers=W)
    await client.put("/v1/kv/plain/other", content=b"x", headers=W)
    seen: list[str] = []
    token = None
    pages = 0
    while True:
        params: dict[str, str | int] = {
            "prefix": "s:",
            "limit": 2,
            **({"page_token": token} if token else {}),
        }
        r = await client.get("/v1/kv/plain", params=params, headers=W)
        assert r.status_code == 200
        body = r.json()
        seen += body["keys"]
        pages += 1
        token = body["next_page_token"]
        if token is None:
            break
    assert seen == [f"s:{i}" for i in range(5)]
    assert pages == 3


@pytest.mark.parametrize(
    "params", [{"limit": "0"}, {"limit": "5000"}, {"limit": "x"}, {"page_token": "garbage!"}]
)
async def test_scan_bad_parameters_are_400(client: httpx.AsyncClient, params: dict[str, str]) -> None:
    r = await client.get("/v1/kv/plain", params=params, headers=W)
    assert r.status_code == 400
    assert r.json()["code"] == "INVALID_ARGUMENT"


async def test_json_body_limit_is_413(tmp_path: Path) -> None:
    async with client_for(full_config(tmp_path, server={"max_body_bytes": 64})) as c:
        body = {"items": [{"key": f"k{i}", "value": b64(b"x" * 10)} for i in range(10)]}
        assert_problem(await c.post("/v1/kv/plain/_bulk/put", json=body, headers=W), 413, "BODY_TOO_LARGE")


async def test_unknown_route_and_method_are_problems(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get("/v2/anything"), 404, "NOT_FOUND")
    r = await client.patch("/v1/kv/plain/k", headers=W)
    assert_problem(r, 405, "METHOD_NOT_ALLOWED")
    assert "GET" in r.headers["allow"]
