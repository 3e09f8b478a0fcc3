"""/openapi.json and /docs describe every mounted route, with bodies generated from the handlers' structs."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from html.parser import HTMLParser
from typing import Any

import httpx
import msgspec
from gateway_helpers import ENV, api_keys_config, headers, running
from starlette.applications import Starlette
from starlette.routing import Route, WebSocketRoute

from prism.gateway import create_app, load_extensions, parse_config
from prism.gateway.routes_kv import BulkDeleteItem, BulkGetRequest, BulkPutItem, TransactOp
from prism.streaming.openapi import Accepted, RequestPage, RequestState
from prism.streaming.protocol import Inbound, Progress

CONFIG: dict[str, Any] = {
    "stores": {"main": "memory://"},
    "auth": {"api_keys": api_keys_config()},
    "namespaces": [{"name": "plain"}, {"name": "orders", "tenant_scoped": True}],
    "audit": {"sink": "none"},
    "server": {"access_log": False},
    "streaming": {"poll_interval": 0.05},
}


def build() -> Starlette:
    """The app ``prism serve`` builds: the gateway with every installed extension (streaming)."""
    config = parse_config(CONFIG, source="test.yaml", env=ENV)
    extensions = load_extensions(config)
    return create_app(
        config,
        extra_routes=[r for e in extensions for r in e.routes],
        on_startup=[h for e in extensions for h in e.on_startup],
        on_shutdown=[h for e in extensions for h in e.on_shutdown],
        env=ENV,
    )


@contextlib.asynccontextmanager
async def serving() -> AsyncIterator[tuple[Starlette, httpx.AsyncClient]]:
    app = build()
    async with running(app) as client:
        yield app, client


def resolve(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema or "allOf" in schema:
        ref = schema["$ref"] if "$ref" in schema else schema["allOf"][0]["$ref"]
        schema = doc["components"]["schemas"][ref.rsplit("/", 1)[-1]]
    return schema


def body_schema(doc: dict[str, Any], path: str, method: str) -> dict[str, Any]:
    return resolve(doc, doc["paths"][path][method]["requestBody"]["content"]["application/json"]["schema"])


async def test_every_route_of_the_app_is_described_with_its_methods() -> None:
    async with serving() as (app, client):
        doc = (await client.get("/openapi.json")).json()
    mounted: dict[str, set[str]] = {}
    for route in app.routes:
        assert isinstance(route, Route | WebSocketRoute)
        path = route.path.replace(":path}", "}")
        methods = {"get"} if isinstance(route, WebSocketRoute) else {m.lower() for m in route.methods or ()}
        mounted.setdefault(path, set()).update(methods - {"head"})
    streaming = {"/v1/stream", "/v1/requests", "/v1/requests/{request_id}/events", "/v1/dead-letters"}
    assert streaming <= set(mounted)
    for path, methods in mounted.items():
        assert path in doc["paths"], path
        described = {m for m in doc["paths"][path] if m != "parameters"}
        assert methods <= described, (path, methods - described)
        for method in methods:
            op = doc["paths"][path][method]
            assert "default" not in op["responses"], f"{method.upper()} {path} is not described"
            assert op["summary"] and op["operationId"]
    assert doc["paths"]["/v1/kv/{ns}/{key}"]["head"]["operationId"] == "headKey"
    ids = [op["operationId"] for item in doc["paths"].values() for m, op in item.items() if m != "parameters"]
    assert len(ids) == len(set(ids))


async def test_request_bodies_are_the_handlers_structs() -> None:
    async with serving() as (_, client):
        doc = (await client.get("/openapi.json")).json()

    def fields(struct: type[msgspec.Struct]) -> set[str]:
        return set(struct.__struct_fields__)

    bulk_put = body_schema(doc, "/v1/kv/{ns}/_bulk/put", "post")
    assert bulk_put["required"] == ["items"]
    item = resolve(doc, bulk_put["properties"]["items"]["items"])
    assert set(item["properties"]) == fields(BulkPutItem) and item["required"] == ["key", "value"]
    assert {"type": "string", "format": "byte"}.items() <= item["properties"]["value"].items()
    assert all(field.get("description") for field in item["properties"].values())
    assert item["properties"]["ttl"]["exclusiveMinimum"] is True and item["properties"]["ttl"]["nullable"]
    record = resolve(doc, body_schema(doc, "/v1/records/{ns}/{id}", "put")["properties"]["items"]["items"])
    assert set(record["properties"]) == fields(BulkPutItem)
    delete = body_schema(doc, "/v1/kv/{ns}/_bulk/delete", "post")
    assert set(resolve(doc, delete["properties"]["items"]["items"])["properties"]) == fields(BulkDeleteItem)
    op = resolve(doc, body_schema(doc, "/v1/kv/{ns}/_transact", "post")["properties"]["ops"]["items"])
    assert set(op["properties"]) == fields(TransactOp)
    assert op["properties"]["op"]["enum"] == ["delete", "put"]
    assert set(body_schema(doc, "/v1/kv/{ns}/_bulk/get", "post")["properties"]) == fields(BulkGetRequest)
    submit = body_schema(doc, "/v1/requests", "post")
    assert set(submit["properties"]) == {"action", "id", "payload", "metadata"} <= fields(Inbound)
    assert submit["required"] == ["action"] and submit["additionalProperties"] is False
    assert "nullable" not in submit["properties"]["action"]
    accepted = doc["paths"]["/v1/requests"]["post"]["responses"]["202"]["content"]["application/json"]
    assert set(resolve(doc, accepted["schema"])["properties"]) == fields(Accepted)
    # the WebSocket's messages, both ways
    messages = doc["paths"]["/v1/stream"]["get"]["x-websocket-messages"]
    assert set(resolve(doc, messages["client"])["properties"]) == fields(Inbound)
    server = {
        resolve(doc, m)["properties"]["type"]["enum"][0]: resolve(doc, m) for m in messages["server"]["anyOf"]
    }
    assert {"acknowledgment", "response", "progress", "complete", "error", "status", "pong"} <= set(server)
    assert set(server["progress"]["properties"]) == fields(Progress) | {"type"}


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.text: list[str] = []
        self.code: list[str] = []
        self._in_code = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._in_code += tag == "code"

    def handle_endtag(self, tag: str) -> None:
        self._in_code -= tag == "code"

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._in_code:
            self.code.append(data)


async def test_docs_page_renders_markdown_and_lists_body_fields() -> None:
    async with serving() as (_, client):
        response = await client.get("/docs")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    assert "<script" not in response.text
    page = _Text()
    page.feed(response.text)
    text = "".join(page.text)
    assert "`" not in text, text[max(0, text.find("`") - 80) : text.find("`") + 80]
    assert {"application/problem+json", "*", "Idempotent-Replayed: true"} <= set(page.code)
    # body fields of a batch write, of the objects it holds, and of a streaming request
    fields = ("items", "key", "value", "ttl", "if_match", "if_absent", "content_type", "action", "payload")
    for name in fields:
        assert name in page.code, name
    assert "/v1/stream" in page.code
    assert "WebSocket messages from the server:" in text and "percentage" in page.code


async def test_streaming_answers_have_the_documented_shape() -> None:
    """Real answers decode with the structs the document is generated from (no unknown or missing field)."""
    async with serving() as (_, client):
        alice = headers("writer")
        body = {"action": "echo", "payload": {"n": 1}}
        answer = await client.post("/v1/requests", json=body, headers=alice)
        assert answer.status_code == 202, answer.text
        accepted = msgspec.json.decode(answer.content, type=Accepted)
        state = None
        for _ in range(200):
            got = await client.get(f"/v1/requests/{accepted.request_id}", headers=alice)
            state = msgspec.json.decode(got.content, type=RequestState)
            if state.status == "COMPLETED":
                break
            await asyncio.sleep(0.02)
        assert state is not None and state.status == "COMPLETED" and state.result == {"n": 1}
        page = await client.get("/v1/requests", headers=alice)
        listed = msgspec.json.decode(page.content, type=RequestPage)
        assert [r.request_id for r in listed.requests] == [accepted.request_id]
        cancelled = await client.post(f"/v1/requests/{accepted.request_id}/cancel", headers=alice)
        assert msgspec.json.decode(cancelled.content, type=RequestState).status == "COMPLETED"
        dead = await client.get("/v1/dead-letters", headers=headers("admin"))
        assert msgspec.json.decode(dead.content, type=RequestPage).requests == []


def ns_enum(doc: dict[str, Any]) -> list[str] | None:
    params = doc["paths"]["/v1/kv/{ns}/{key}"]["parameters"]
    schema: dict[str, Any] = next(p for p in params if p["name"] == "ns")["schema"]
    enum: list[str] | None = schema.get("enum")
    return enum


async def test_the_api_description_names_only_the_namespaces_the_caller_may_see() -> None:
    async with serving() as (_, client):
        anonymous = await client.get("/openapi.json")
        page = await client.get("/docs")
        bad_key = await client.get("/openapi.json", headers={"X-API-Key": "not-a-key"})
        writer = (await client.get("/openapi.json", headers=headers("writer"))).json()
        tenant = (await client.get("/openapi.json", headers=headers("acme"))).json()
    assert anonymous.status_code == 200 and ns_enum(anonymous.json()) is None
    assert b'"orders"' not in anonymous.content and "orders" not in page.text
    assert ns_enum(bad_key.json()) is None
    # A caller without a tenant cannot use the tenant-scoped namespace, so it is not named to it.
    assert ns_enum(writer) == ["plain"]
    assert ns_enum(tenant) == ["plain", "orders"]
