"""Contract tests of /v1/records: items of a record written together and read by range or keys."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
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


async def put_items(client: httpx.AsyncClient, record: str, keys: list[str]) -> httpx.Response:
    items = [{"key": k, "value": b64(k.encode() * 3), "content_type": "text/plain"} for k in keys]
    return await client.put(f"/v1/records/plain/{record}", json={"items": items}, headers=W)


async def test_put_then_get_items_in_key_order(client: httpx.AsyncClient) -> None:
    r = await put_items(client, "order:1", ["c", "a", "b"])
    assert r.status_code == 200
    assert [x["ok"] for x in r.json()["results"]] == [True, True, True]
    r = await client.get("/v1/records/plain/order:1", headers=W)
    assert r.status_code == 200
    body = r.json()
    assert [i["key"] for i in body["items"]] == ["a", "b", "c"]
    assert base64.b64decode(body["items"][0]["value"]) == b"aaa"
    assert body["items"][0]["content_type"] == "text/plain"
    assert body["items"][0]["etag"] and body["items"][0]["expires_at"] is None
    assert body["next_page_token"] is None


async def test_range_keys_and_paging(client: httpx.AsyncClient) -> None:
    await put_items(client, "r", ["a", "b", "c", "d", "e"])
    r = await client.get("/v1/records/plain/r", params={"start": "b", "end": "e"}, headers=W)
    assert [i["key"] for i in r.json()["items"]] == ["b", "c", "d"]
    r = await client.get(
        "/v1/records/plain/r", params=[("keys", "e"), ("keys", "a"), ("keys", "zz")], headers=W
    )
    assert sorted(i["key"] for i in r.json()["items"]) == ["a", "e"]
    keys: list[str] = []
    token = None
    while True:
        params = {"limit": 2, **({"page_token": token} if token else {})}
        body = (await client.get("/v1/records/plain/r", params=params, headers=W)).json()
        keys += [i["key"] for i in body["items"]]
        token = body["next_page_token"]
        if token is None:
            break
    assert keys == ["a", "b", "c", "d", "e"]
    r = await client.get("/v1/records/plain/r", params={"page_size_bytes": 4}, headers=W)
    assert len(r.json()["items"]) == 1 and r.json()["next_page_token"]


async def test_record_item_conditions_fail_one_item(client: httpx.AsyncClient) -> None:
    await put_items(client, "cond", ["a"])
    items = [{"key": "a", "value": b64(b"new"), "if_absent": True}, {"key": "b", "value": b64(b"b")}]
    r = await client.put("/v1/records/plain/cond", json={"items": items}, headers=W)
    assert [x["ok"] for x in r.json()["results"]] == [False, True]
    assert r.json()["results"][0]["error"]["code"] == "PRECONDITION_FAILED"


async def test_delete_range_then_all(client: httpx.AsyncClient) -> None:
    await put_items(client, "del", ["a", "b", "c"])
    r = await client.delete("/v1/records/plain/del", params={"start": "b"}, headers=W)
    assert r.status_code == 200 and r.json() == {"deleted": 2}
    assert [i["key"] for i in (await client.get("/v1/records/plain/del", headers=W)).json()["items"]] == ["a"]
    r = await client.delete("/v1/records/plain/del", headers=W)
    assert r.json() == {"deleted": 1}
    assert (await client.get("/v1/records/plain/del", headers=W)).json()["items"] == []


async def test_records_show_up_in_key_scans(client: httpx.AsyncClient) -> None:
    await put_items(client, "scan-me", ["x"])
    assert "scan-me" in (await client.get("/v1/kv/plain", headers=W)).json()["keys"]


@pytest.mark.parametrize("params", [{"limit": "0"}, {"page_token": "bogus"}, {"page_size_bytes": "-1"}])
async def test_bad_record_parameters_are_400(client: httpx.AsyncClient, params: dict[str, str]) -> None:
    r = await client.get("/v1/records/plain/r", params=params, headers=W)
    assert r.status_code == 400 and r.json()["code"] == "INVALID_ARGUMENT"


async def test_bad_record_body_is_400_and_writes_nothing(client: httpx.AsyncClient) -> None:
    items = [{"key": "a", "value": b64(b"x")}, {"key": "b", "value": b64(b"x"), "ttl": 0}]
    r = await client.put("/v1/records/plain/bad", json={"items": items}, headers=W)
    assert r.status_code == 400
    assert (await client.get("/v1/records/plain/bad", headers=W)).json()["items"] == []
