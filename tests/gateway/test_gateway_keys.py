"""Keys and record ids that the library allows are reachable on every route that names them."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from gateway_helpers import client_for, full_config, headers

W = headers("writer")


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(full_config(tmp_path)) as c:
        yield c


@pytest.mark.parametrize("key", ["line\nbreak", "carriage\rreturn", "\n"])
async def test_keys_with_line_breaks_work_on_every_single_key_route(
    client: httpx.AsyncClient, key: str
) -> None:
    url = f"/v1/kv/plain/{quote(key, safe='')}"
    assert (await client.put(url, content=b"v", headers=W)).status_code in (200, 201)
    got = await client.get(url, headers=W)
    assert got.status_code == 200 and got.content == b"v"
    assert (await client.delete(url, headers=W)).status_code in (200, 204)
    assert (await client.get(url, headers=W)).status_code == 404


async def test_record_ids_with_line_breaks_work_on_every_record_route(client: httpx.AsyncClient) -> None:
    url = "/v1/records/plain/order%0A1"
    item = {"key": "a", "value": base64.b64encode(b"x").decode()}
    assert (await client.put(url, json={"items": [item]}, headers=W)).status_code == 200
    got = await client.get(url, headers=W)
    assert got.status_code == 200 and [i["key"] for i in got.json()["items"]] == ["a"]
    assert (await client.delete(url, headers=W)).status_code in (200, 204)
    assert (await client.get(url, headers=W)).json()["items"] == []


async def test_timeouts_have_their_own_title(client: httpx.AsyncClient) -> None:
    from prism.gateway.problem import HTTPProblem

    assert bytes(HTTPProblem(408, "BODY_TIMEOUT", "slow").response(None).body).count(b"Request Timeout") == 1
    assert b"Request Header Fields Too Large" in HTTPProblem(431, "X", "big").response(None).body
