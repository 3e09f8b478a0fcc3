"""One pipeline for every data route: declared needs, one dispatch table, and no ASGI in the steps."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import pytest
from gateway_helpers import ENV, build_app, client_for, full_config, headers, running

from prism.gateway import parse_config
from prism.gateway.asgi import RouteTable
from prism.gateway.pipeline import Call, DataRoute, Pipeline
from prism.gateway.reply import Reply
from prism.gateway.runtime import Gateway
from prism.gateway.wire import BatchResults, Entry, KeyPage, NamespaceDetail

W = headers("writer")


def _scope(method: str, path: str, hdrs: list[tuple[bytes, bytes]]) -> dict[str, Any]:
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
        "headers": [(b"host", b"gateway"), *hdrs],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 2),
    }


async def _call_without_body(app: Any, method: str, path: str, hdrs: list[tuple[bytes, bytes]]) -> list[Any]:
    """Send a request whose body never arrives: a route that tried to read it would fail the test."""

    async def receive() -> dict[str, Any]:
        raise AssertionError(f"{method} {path} read the request body")

    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    await app(_scope(method, path, hdrs), receive, send)
    return sent


async def test_routes_without_a_body_never_read_one(tmp_path: Path) -> None:
    app = build_app(full_config(tmp_path))
    key = [(b"x-api-key", b"key-writer"), (b"content-length", b"1000000000")]
    async with running(app) as c:
        assert (await c.put("/v1/kv/plain/k", content=b"v", headers=W)).status_code == 201
        get = await _call_without_body(app, "GET", "/v1/kv/plain/k", key)
        assert get[0]["status"] == 200 and get[1]["body"] == b"v"
        scan = await _call_without_body(app, "GET", "/v1/kv/plain", key)
        assert scan[0]["status"] == 200
        delete = await _call_without_body(app, "DELETE", "/v1/kv/plain/k", key)
        assert delete[0]["status"] == 204
        assert (await c.get("/v1/kv/plain/k", headers=W)).status_code == 404


async def test_head_answers_the_headers_of_a_get_without_its_body(tmp_path: Path) -> None:
    async with client_for(full_config(tmp_path)) as c:
        await c.put("/v1/kv/plain/k", content=b"hello", headers={**W, "Content-Type": "text/plain"})
        get = await c.get("/v1/kv/plain/k", headers=W)
        head = await c.head("/v1/kv/plain/k", headers=W)
        assert head.status_code == 200 and head.content == b""
        assert head.headers["content-length"] == "5" and head.headers["etag"] == get.headers["etag"]
        assert head.headers["content-type"] == "text/plain"
        listing = await c.head("/v1/kv/plain", headers=W)
        assert listing.status_code == 200 and listing.content == b""
        assert listing.headers["content-length"] == str(len((await c.get("/v1/kv/plain", headers=W)).content))
        missing = await c.head("/v1/kv/plain/nothing", headers=W)
        assert missing.status_code == 404 and missing.content == b""


async def test_a_method_a_path_does_not_take_is_405_listing_every_method_it_takes(tmp_path: Path) -> None:
    async with client_for(full_config(tmp_path)) as c:
        r = await c.patch("/v1/kv/plain/k", headers=W)
        assert r.status_code == 405 and r.json()["code"] == "METHOD_NOT_ALLOWED"
        assert r.headers["allow"] == "GET, HEAD, PUT, DELETE"
        r = await c.get("/v1/kv/plain/_bulk/put", headers=W)  # a key named "_bulk/put"
        assert r.status_code == 404 and r.json()["code"] == "KEY_NOT_FOUND"
        r = await c.put("/v1/kv/plain", headers=W)
        assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD"
        r = await c.post("/v1/records/plain/r", headers=W)
        assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD, PUT, DELETE"
        assert (await c.get("/v1/kv/", headers=W)).json()["code"] == "NOT_FOUND"


async def test_keys_with_slashes_and_line_breaks_take_every_method(tmp_path: Path) -> None:
    async with client_for(full_config(tmp_path)) as c:
        path = "/v1/kv/plain/a/b%0Ac"
        assert (await c.put(path, content=b"v", headers=W)).status_code == 201
        assert (await c.get(path, headers=W)).content == b"v"
        assert (await c.get("/v1/kv/plain", headers=W)).json()["keys"] == ["a/b\nc"]
        assert (await c.delete(path, headers=W)).status_code == 204
        assert (await c.head(path, headers=W)).status_code == 404


async def test_refused_single_key_reads_are_audited(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    async with client_for(full_config(tmp_path, audit={"sink": "file", "path": str(log)})) as c:
        assert (await c.get("/v1/kv/plain/k")).status_code == 401
        assert (await c.get("/v1/kv/plain/k", headers=headers("nobody"))).status_code == 403
        assert (await c.head("/v1/kv/ghost/k", headers=W)).status_code == 404
        assert (await c.get("/v1/kv/plain/k", headers=W)).status_code == 404
    events = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(e["operation"], e["status"], e["outcome"], e["namespace"]) for e in events] == [
        ("get", 401, "MISSING_CREDENTIALS", "plain"),
        ("get", 403, "FORBIDDEN", "plain"),
        ("get", 404, "NAMESPACE_NOT_FOUND", "ghost"),
        ("get", 404, "KEY_NOT_FOUND", "plain"),
    ]


async def test_json_bodies_are_the_wire_structs(tmp_path: Path) -> None:
    async with client_for(full_config(tmp_path)) as c:
        r = await c.post(
            "/v1/kv/plain/_bulk/put",
            json={"items": [{"key": "a", "value": "eA=="}, {"key": "b", "value": "eQ=="}]},
            headers=W,
        )
        results = msgspec.json.decode(r.content, type=BatchResults)
        assert [(x.key, x.ok) for x in results.results] == [("a", True), ("b", True)]
        page = msgspec.json.decode((await c.get("/v1/kv/plain", headers=W)).content, type=KeyPage)
        assert page.keys == ["a", "b"] and page.next_page_token is None
        detail = (await c.get("/v1/namespaces/plain", headers=headers("reader"))).json()
        doc = (await c.get("/openapi.json", headers=W)).json()
    # Only admins see where a namespace lives; the schema requires only what every caller gets.
    assert "store" not in detail and msgspec.convert(detail, NamespaceDetail).name == "plain"
    required = doc["components"]["schemas"]["NamespaceDetail"]["required"]
    assert "store" not in required and set(required) <= set(detail)
    entry = doc["components"]["schemas"]["Entry"]
    assert set(entry["properties"]) == set(Entry.__struct_fields__)
    listing = doc["paths"]["/v1/kv/{ns}"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert listing == {"$ref": "#/components/schemas/KeyPage"}


async def test_the_pipeline_runs_without_asgi(tmp_path: Path) -> None:
    """A transport only builds a Call and sends the Reply: the steps know nothing of HTTP servers."""
    config = parse_config(
        full_config(tmp_path, audit={"sink": "file", "path": str(tmp_path / "a.log")}), env=ENV
    )
    gateway = Gateway(config, env=ENV)

    async def echo(call: Call) -> Reply:
        call.key = call.params["key"]
        return Reply(200, call.body + b" from " + call.principal.subject.encode())

    async def body(limit: int) -> bytes:
        return b"hello"

    route = DataRoute("PUT", "/v1/kv/{ns}/{key:path}", echo, "put", "write", lambda served: 10)
    await gateway.start()
    try:
        pipeline = Pipeline(gateway)
        call = Call(
            gateway, "PUT", "/x", {"ns": "plain", "key": "k"}, [(b"x-api-key", b"key-writer")], read_body=body
        )
        reply = await pipeline.run(route, call)
        assert (reply.status, reply.body) == (200, b"hello from writer")
        refused = Call(gateway, "PUT", "/x", {"ns": "plain", "key": "k"}, [(b"x-api-key", b"key-reader")])
        reply = await pipeline.run(route, refused)
        assert reply.status == 403 and json.loads(reply.body)["code"] == "FORBIDDEN"
        tight = DataRoute("PUT", route.path, echo, "put", "write", lambda served: 2)
        reply = await pipeline.run(
            tight, Call(gateway, "PUT", "/x", call.params, call.headers, read_body=body)
        )
        assert reply.status == 413
    finally:
        await gateway.stop()
    events = [json.loads(line) for line in (tmp_path / "a.log").read_text().splitlines()]
    assert [(e["status"], e.get("key")) for e in events] == [(200, "k"), (403, None), (413, None)]


def test_a_route_template_the_table_cannot_split_is_refused_by_name() -> None:
    async def nothing(call: Call) -> Reply:
        return Reply(204)

    with pytest.raises(ValueError, match=r"'/v1/kv/\{key\}': a template is /prefix/\{ns\}"):
        RouteTable([DataRoute("GET", "/v1/kv/{key}", nothing, "get", "read")])
    table = RouteTable([DataRoute("GET", "/v2/things/{ns}/{id:path}", nothing, "get", "read")])
    found = table.match("/v2/things/a/b/c", "HEAD")
    assert found is not None and found[1] == {"ns": "a", "id": "b/c"}
    assert table.match("/v2/things/a", "GET") is None
    missing = table.match("/v2/things/a/b", "PUT")
    assert missing is not None and missing[0] is None and missing[2] == ("GET", "HEAD")


@pytest.mark.parametrize(
    "path",
    [
        "/v1/kv/plain?limit=1&limit=2",
        "/v1/records/plain/r?page_size_bytes=1&page_size_bytes=2",
        "/v1/kv/plain/k?ttl=5&ttl=6",
    ],
)
async def test_a_query_parameter_given_twice_is_refused(tmp_path: Path, path: str) -> None:
    async with client_for(full_config(tmp_path)) as c:
        method = "PUT" if "ttl=" in path else "GET"
        r = await c.request(method, path, content=b"v", headers=headers("writer"))
        assert r.status_code == 400, r.text
        assert "given 2 times" in r.json()["detail"]


@pytest.mark.parametrize(
    "path",
    ["/v1/kv/plain?limit=", "/v1/records/plain/r?page_size_bytes=", "/v1/records/plain/r?limit="],
)
async def test_an_empty_integer_query_parameter_is_refused(tmp_path: Path, path: str) -> None:
    async with client_for(full_config(tmp_path)) as c:
        r = await c.get(path, headers=headers("reader"))
        assert r.status_code == 400, r.text
        assert r.json()["detail"].endswith("must be an integer")
