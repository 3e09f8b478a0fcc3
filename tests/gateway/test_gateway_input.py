"""Bad input at the gateway: PII values that are not RFC 8259 JSON, undecodable bodies and paths.

Every case talks to a real server (uvicorn on a free port) and checks what a client and
the audit log see: a 400 problem naming the rule, nothing written, the connection kept.
"""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from gateway_helpers import ENV, full_config, headers

import prism
from prism.backends.memory import MemoryBackend
from prism.gateway import create_app, parse_config
from prism.gateway.app import load_extensions
from prism.model import Put
from prism.streaming.app import UVICORN_OPTIONS
from prism.testing.servers import free_port

WRITER = headers("writer")
ACME = headers("acme")
PII_READER = headers("admin")  # admin and pii:read, no tenant
DEEP = 20_000


class FailingBackend(MemoryBackend):
    """A third-party backend whose writes fail with an error no Prism layer expects."""

    @classmethod
    def from_url(cls, url: str, **options: Any) -> FailingBackend:
        return cls(url.split("://", 1)[1].strip("/"))

    async def write(self, ns: str, ops: Any) -> Any:
        raise RuntimeError("the disk is on fire")


class Gateway:
    """A gateway served by uvicorn, with its store URL and audit file."""

    def __init__(self, url: str, store: str, audit: Path) -> None:
        self.url = url
        self.store = store
        self.audit_file = audit

    def audit(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.audit_file.read_text().splitlines()]


@asynccontextmanager
async def serving(tmp_path: Path) -> AsyncIterator[Gateway]:
    store = f"memory://input-{uuid.uuid4().hex}"
    audit = tmp_path / "audit.log"
    raw = full_config(
        tmp_path,
        stores={"main": store, "broken": {"url": "memory://broken", "backend": f"{__name__}:FailingBackend"}},
        audit={"sink": "file", "path": str(audit), "flush_interval": 0.05},
        streaming={},
        server={"access_log": False},
    )
    raw["namespaces"] += [
        # Masked for readers without pii:read, stored as sent (no encryption).
        {"name": "contacts", "pii": {"fields": ["email", "address.street"]}},
        {"name": "fragile", "store": "broken"},
    ]
    config = parse_config(raw, source="test.yaml", env=ENV)
    extensions = load_extensions(config)
    app = create_app(
        config,
        env=ENV,
        extra_routes=[r for e in extensions for r in e.routes],
        on_startup=[h for e in extensions for h in e.on_startup],
        on_shutdown=[h for e in extensions for h in e.on_shutdown],
    )
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="critical", **UVICORN_OPTIONS)
    )
    task = asyncio.create_task(server.serve())
    for _ in range(1000):
        if server.started or task.done():
            break
        await asyncio.sleep(0.01)
    if task.done():
        task.result()
    try:
        yield Gateway(f"http://127.0.0.1:{port}", store, audit)
    finally:
        server.should_exit = True
        await task


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def assert_problem(r: httpx.Response, status: int, code: str, *detail: str) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["code"] == code, body
    for part in detail:
        assert part in body["detail"], body
    # The server answered and kept the connection: no 500 tore it down.
    assert r.headers.get("connection") != "close"


#: Values other parsers read as objects (or read differently) that Prism's parser refuses.
NOT_JSON: list[tuple[bytes, str]] = [
    (b'{"email": "ann@example.com", "n": 1e400}', "a number is out of range"),
    (b'{"email": "ann@example.com", "n": NaN}', "NaN and Infinity are not JSON numbers"),
    (b'{"email": "ann@example.com", "n": -Infinity}', "NaN and Infinity are not JSON numbers"),
    (b'\xef\xbb\xbf{"email": "ann@example.com"}', "byte order mark"),
    ('{"email": "ann@example.com"}'.encode("utf-16"), "UTF-16 byte order mark"),
    (b'{"email": "ann@example.com\\ud800"}', "lone UTF-16 surrogate escape"),
    (b'{"email": "ann@example.com"} {"email": 1}', "data after the JSON value"),
    (b'{"email": "ann@example.com", "email": "x"}', "the name 'email' more than once"),
    (b'{"email": "ann@example.com", "em\\u0061il": "x"}', "the name 'email' more than once"),
    (b'{"address": {"street": "1 Main St"}, "address": 5}', "the name 'address' more than once"),
    (b'{"email": "ann@example.com \xff"}', "not UTF-8"),
    (b"plain text ann@example.com", "not well-formed JSON"),
    (b"", "it is empty"),
    (b'{"email": "ann@example.com", "x": ' + b"[" * DEEP + b"]" * DEEP + b"}", "nests too deeply"),
]


async def test_pii_namespaces_refuse_values_that_are_not_rfc8259_json(tmp_path: Path) -> None:
    async with serving(tmp_path) as gw, httpx.AsyncClient(base_url=gw.url) as c:
        for ns, who, physical in (("people", ACME, "people~t~acme"), ("contacts", WRITER, "contacts")):
            for value, rule in NOT_JSON:
                r = await c.put(f"/v1/kv/{ns}/k", content=value, headers=who)
                assert_problem(r, 400, "PII_VALUE_NOT_JSON", "RFC 8259", rule)

                good = b64(b'{"email": "bob@example.com"}')
                r = await c.post(
                    f"/v1/kv/{ns}/_bulk/put",
                    json={"items": [{"key": "ok", "value": good}, {"key": "k", "value": b64(value)}]},
                    headers=who,
                )
                assert_problem(r, 400, "PII_VALUE_NOT_JSON", "items[1].value: ", rule)

                r = await c.post(
                    f"/v1/kv/{ns}/_transact",
                    json={"ops": [{"op": "put", "key": "k", "value": b64(value)}]},
                    headers=who,
                )
                assert_problem(r, 400, "PII_VALUE_NOT_JSON", "ops[0].value: ", rule)

                r = await c.put(
                    f"/v1/records/{ns}/rec",
                    json={"items": [{"key": "ok", "value": good}, {"key": "k", "value": b64(value)}]},
                    headers=who,
                )
                assert_problem(r, 400, "PII_VALUE_NOT_JSON", "items[1].value: ", rule)

            # Nothing was written, not even the good entries sent beside a refused one.
            async with prism.connect(gw.store) as store:
                assert (await store.namespace(physical).scan("")).keys == []
            assert (await c.get(f"/v1/records/{ns}/rec", headers=who)).json()["items"] == []

        # JSON that is not an object holds no fields and is stored as sent.
        for value in (b"[1, 2]", b'"ann"', b"42", b"null"):
            assert (await c.put("/v1/kv/contacts/scalar", content=value, headers=WRITER)).status_code < 300
            assert (await c.get("/v1/kv/contacts/scalar", headers=PII_READER)).content == value
    refused = [e for e in gw.audit() if e.get("operation") == "put" and e.get("key") == "k"]
    assert len(refused) == 2 * len(NOT_JSON)
    assert {(e["status"], e["outcome"]) for e in refused} == {(400, "PII_VALUE_NOT_JSON")}


async def test_stored_values_that_are_not_json_are_withheld_unless_pii_read(tmp_path: Path) -> None:
    opaque = b'{"email": "ann@example.com"} trailing'
    twice = b'{"address": {"street": "1 Main St", "city": "A"}, "address": {"city": "B"}}'
    async with serving(tmp_path) as gw:
        # Written around the gateway (the library knows nothing of PII fields).
        async with prism.connect(gw.store) as store:
            contacts = store.namespace("contacts")
            await contacts.put("opaque", opaque)
            await contacts.put("twice", twice)
            await contacts.put_items("rec", [Put("opaque", opaque)])
        async with httpx.AsyncClient(base_url=gw.url) as c:
            r = await c.get("/v1/kv/contacts/opaque", headers=WRITER)
            assert_problem(r, 500, "PII_VALUE_NOT_JSON", "data after the JSON value", "pii:read")
            assert b"ann@example.com" not in r.content
            r = await c.post("/v1/kv/contacts/_bulk/get", json={"keys": ["opaque"]}, headers=WRITER)
            assert_problem(r, 500, "PII_VALUE_NOT_JSON")
            r = await c.get("/v1/records/contacts/rec", headers=WRITER)
            assert_problem(r, 500, "PII_VALUE_NOT_JSON")
            # pii:read sees the stored bytes as they are.
            assert (await c.get("/v1/kv/contacts/opaque", headers=PII_READER)).content == opaque

            # A value with a repeated name reads as Prism parsed it (the last one wins),
            # re-encoded: no parser can find the street of the first "address" in it.
            r = await c.get("/v1/kv/contacts/twice", headers=WRITER)
            assert r.status_code == 200 and r.json() == {"address": {"city": "B"}}
            assert b"1 Main St" not in r.content
    reads = [e for e in gw.audit() if e.get("operation") == "get" and e.get("key") == "opaque"]
    withheld = [e for e in reads if e["principal"] == "writer"]
    # Nothing was shown, so the audit does not say "masked".
    assert [(e["status"], e["outcome"], e.get("pii")) for e in withheld] == [
        (500, "PII_VALUE_NOT_JSON", None)
    ]
    batches = [e for e in gw.audit() if e.get("operation") in ("bulk_get", "records_get")]
    assert [(e["status"], e.get("pii")) for e in batches] == [(500, None), (500, None)]


def _bodies(route: str) -> list[bytes]:
    """Bodies no JSON route may answer with anything but a 400 problem."""
    bad_string = {
        "_bulk/get": b'{"keys": ["a\xffb"]}',
        "_bulk/put": b'{"items": [{"key": "a\xffb", "value": ""}]}',
        "_bulk/delete": b'{"items": [{"key": "a\xffb"}]}',
        "_transact": b'{"ops": [{"op": "delete", "key": "a\xffb"}]}',
        "records": b'{"items": [{"key": "a\xed\xa0\x80", "value": ""}]}',
        "raw-pii": b'{"email": "a\xffb"}',
        "requests": b'{"action": "ec\xffho"}',
    }[route]
    deep_array = b"[" * DEEP + b"]" * DEEP
    deep_object = b'{"a":' * DEEP + b"1" + b"}" * DEEP
    return [
        bad_string,
        b"\xff\xfe\x00",
        b'{"metadata": ' + deep_object + b"}",
        b'{"action": "echo", "payload": {"x": ' + deep_array + b"}}",
        b'{"action": "echo", "metadata": ' + deep_object + b"}",
        deep_array,
        b'{"a": NaN}',
        b'"\\ud800"',
        b"{",
    ]


async def test_undecodable_bodies_are_400_on_every_json_route(tmp_path: Path) -> None:
    routes: list[tuple[str, str, str, dict[str, str]]] = [
        ("_bulk/get", "POST", "/v1/kv/plain/_bulk/get", WRITER),
        ("_bulk/put", "POST", "/v1/kv/plain/_bulk/put", WRITER),
        ("_bulk/delete", "POST", "/v1/kv/plain/_bulk/delete", WRITER),
        ("_transact", "POST", "/v1/kv/plain/_transact", WRITER),
        ("records", "PUT", "/v1/records/plain/r1", WRITER),
        ("raw-pii", "PUT", "/v1/kv/contacts/k", WRITER),
        ("requests", "POST", "/v1/requests", WRITER),
    ]
    codes = {"requests": "INVALID_MESSAGE", "raw-pii": "PII_VALUE_NOT_JSON"}
    async with serving(tmp_path) as gw, httpx.AsyncClient(base_url=gw.url) as c:
        for route, method, path, who in routes:
            for body in _bodies(route):
                r = await c.request(method, path, content=body, headers=who)
                assert_problem(r, 400, codes.get(route, "INVALID_BODY"))
        # The same client and server go on serving.
        assert (
            await c.post("/v1/kv/plain/_bulk/get", json={"keys": ["x"]}, headers=WRITER)
        ).status_code == 200
    events = [e for e in gw.audit() if e.get("namespace") in ("plain", "contacts")]
    assert len(events) == 6 * len(_bodies("records")) + 1
    assert {e["status"] for e in events} == {400, 200}


async def test_an_unexpected_failure_is_a_500_problem_and_audited_as_such(tmp_path: Path) -> None:
    async with serving(tmp_path) as gw, httpx.AsyncClient(base_url=gw.url) as c:
        r = await c.put("/v1/kv/fragile/k", content=b"x", headers=WRITER)
        assert_problem(r, 500, "INTERNAL", "failed to handle this request")
        assert "fire" not in r.text
        assert (await c.put("/v1/kv/plain/k", content=b"x", headers=WRITER)).status_code == 201
    (event,) = [e for e in gw.audit() if e.get("namespace") == "fragile"]
    assert (event["status"], event["outcome"]) == (500, "INTERNAL")


PathCase = tuple[str, str, str]


async def test_percent_escapes_that_are_not_utf8_are_refused_everywhere(tmp_path: Path) -> None:
    cases: list[PathCase] = [
        ("GET", "/v1/kv/plain/%FF", "%FF"),
        ("HEAD", "/v1/kv/plain/%FF", ""),
        ("PUT", "/v1/kv/plain/%ED%A0%80", "%ED%A0%80"),
        ("DELETE", "/v1/kv/plain/a%FFb", "%FF"),
        ("GET", "/v1/kv/%FF/k", "%FF"),
        ("GET", "/v1/kv/%FF", "%FF"),
        ("POST", "/v1/kv/plain%C3/_bulk/get", "%C3"),
        ("GET", "/v1/records/plain/r%C3%28", "%C3"),
        ("PUT", "/v1/records/plain/%FE", "%FE"),
        ("DELETE", "/v1/records/plain/%80", "%80"),
        ("GET", "/v1/namespaces/%FF", "%FF"),
        ("GET", "/v1/requests/%FF", "%FF"),
        ("POST", "/v1/requests/%FF/cancel", "%FF"),
        ("GET", "/v1/requests/%FF/events", "%FF"),
    ]
    query_cases: list[PathCase] = [
        ("GET", "/v1/kv/plain?prefix=%FF", "%FF"),
        ("GET", "/v1/records/plain/r?keys=a&keys=%ED%A0%80", "%ED%A0%80"),
        ("DELETE", "/v1/records/plain/r?start=%FF", "%FF"),
        ("GET", "/v1/requests?status=%FF", "%FF"),
    ]
    async with serving(tmp_path) as gw, httpx.AsyncClient(base_url=gw.url, headers=WRITER) as c:
        for code, group in (("INVALID_PATH", cases), ("INVALID_QUERY", query_cases)):
            for method, path, escape in group:
                r = await c.request(method, path, content=b"{}" if method in ("PUT", "POST") else None)
                if method == "HEAD":
                    assert r.status_code == 400
                    continue
                assert_problem(r, 400, code, escape, "not UTF-8")
        # U+FFFD itself, percent-encoded as UTF-8, is an ordinary key and aliases nothing.
        assert (await c.put("/v1/kv/plain/%EF%BF%BD", content=b"replacement")).status_code == 201
        assert (await c.get("/v1/kv/plain/%EF%BF%BD")).content == b"replacement"
        assert (await c.get("/v1/kv/plain/%FF")).status_code == 400
        assert (await c.put("/v1/kv/plain/caf%C3%A9", content=b"ok")).status_code == 201
        assert (await c.get("/v1/kv/plain?prefix=caf%C3%A9")).json()["keys"] == ["café"]
    # Nothing was written under a replacement character by the refused requests.
    async with prism.connect(gw.store) as store:
        assert (await store.namespace("plain").scan("")).keys == ["café", "\ufffd"]


async def test_content_types_no_http_header_can_carry_are_refused(tmp_path: Path) -> None:
    euro = "text/plain; charset=\u20ac"
    async with serving(tmp_path) as gw, httpx.AsyncClient(base_url=gw.url, headers=WRITER) as c:
        item = {"key": "k", "value": b64(b"x"), "content_type": euro}
        r = await c.post("/v1/kv/plain/_bulk/put", json={"items": [item]})
        assert_problem(r, 400, "INVALID_BODY", "items[0].content_type", "Latin-1")
        r = await c.post("/v1/kv/plain/_transact", json={"ops": [{"op": "put", **item}]})
        assert_problem(r, 400, "INVALID_BODY", "ops[0].content_type", "Latin-1")
        r = await c.put("/v1/records/plain/rec", json={"items": [item]})
        assert_problem(r, 400, "INVALID_BODY", "items[0].content_type", "Latin-1")
        assert (await c.get("/v1/kv/plain/k")).status_code == 404

        # Latin-1 text goes out as the same header it came in as.
        item["content_type"] = "text/plain; charset=caf\u00e9"
        assert (await c.post("/v1/kv/plain/_bulk/put", json={"items": [item]})).status_code == 200
        r = await c.get("/v1/kv/plain/k")
        assert r.status_code == 200 and (b"content-type", b"text/plain; charset=caf\xe9") in r.headers.raw

        # One written around the gateway is served (as UTF-8 bytes), not a 500.
        async with prism.connect(gw.store) as store:
            await store.namespace("plain").put("lib", b"x", content_type=euro)
        r = await c.get("/v1/kv/plain/lib")
        assert r.status_code == 200 and (b"content-type", euro.encode()) in r.headers.raw
