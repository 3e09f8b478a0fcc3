"""PII fields: encrypted at rest, masked without pii:read, decrypted with it; key rotation."""

from __future__ import annotations

import base64
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from gateway_helpers import ENV, PII_KEY_2, build_app, full_config, headers, running

import prism
from prism.gateway.config import ConfigError

WRITER = headers("acme")
PII_READER = headers("acme-pii")
PERSON = {"email": "ann@example.com", "name": "Ann Example", "plan": "pro", "visits": 3}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def shared_url() -> str:
    return f"memory://pii-{uuid.uuid4().hex}"


def config_with_keys(
    tmp_path: Path, url: str, active: str, keys: list[dict[str, str]], **extra: Any
) -> dict[str, Any]:
    config = full_config(tmp_path, stores={"main": url}, pii_keys={"active": active, "keys": keys}, **extra)
    return config


K1 = {"id": "k1", "env": "PRISM_TEST_PII_K1"}
K2 = {"id": "k2", "env": "PRISM_TEST_PII_K2"}


async def raw_value(url: str, physical: str, key: str) -> bytes:
    async with prism.connect(url) as store:
        item = await store.namespace(physical).get(key)
        assert item is not None
        return item.value


async def test_fields_are_encrypted_at_rest_and_masked_or_revealed_on_read(tmp_path: Path) -> None:
    url = shared_url()
    async with running(build_app(config_with_keys(tmp_path, url, "k1", [K1]))) as c:
        r = await c.put(
            "/v1/kv/people/u1",
            content=json.dumps(PERSON).encode(),
            headers={**WRITER, "Content-Type": "application/json"},
        )
        assert r.status_code == 201
        stored = await raw_value(url, "people~t~acme", "u1")
        assert b"ann@example.com" not in stored and b"Ann Example" not in stored
        doc = json.loads(stored)
        assert doc["plan"] == "pro" and doc["visits"] == 3
        assert doc["email"]["prism:enc"] == "v1" and doc["email"]["kid"] == "k1"

        masked = (await c.get("/v1/kv/people/u1", headers=WRITER)).json()
        assert masked == {**PERSON, "email": "***", "name": "***"}
        clear = await c.get("/v1/kv/people/u1", headers=PII_READER)
        assert clear.json() == PERSON
        assert clear.headers["content-type"] == "application/json"

        r = await c.post("/v1/kv/people/_bulk/get", json={"keys": ["u1"]}, headers=WRITER)
        assert json.loads(base64.b64decode(r.json()["items"][0]["value"]))["email"] == "***"
        r = await c.post("/v1/kv/people/_bulk/get", json={"keys": ["u1"]}, headers=PII_READER)
        assert json.loads(base64.b64decode(r.json()["items"][0]["value"]))["email"] == "ann@example.com"


async def test_bulk_transact_and_record_writes_are_encrypted_too(tmp_path: Path) -> None:
    url = shared_url()
    value = b64(json.dumps(PERSON).encode())
    async with running(build_app(config_with_keys(tmp_path, url, "k1", [K1]))) as c:
        await c.post(
            "/v1/kv/people/_bulk/put", json={"items": [{"key": "b1", "value": value}]}, headers=WRITER
        )
        await c.post(
            "/v1/kv/people/_transact",
            json={"ops": [{"op": "put", "key": "t1", "value": value}]},
            headers=WRITER,
        )
        await c.put(
            "/v1/records/people/r1", json={"items": [{"key": "profile", "value": value}]}, headers=WRITER
        )
        for key in ("b1", "t1"):
            assert b"ann@example.com" not in await raw_value(url, "people~t~acme", key)
        async with prism.connect(url) as store:
            page = await store.namespace("people~t~acme").get_items("r1")
            assert b"ann@example.com" not in page.items[0].value
        items = (await c.get("/v1/records/people/r1", headers=WRITER)).json()["items"]
        assert json.loads(base64.b64decode(items[0]["value"]))["email"] == "***"
        items = (await c.get("/v1/records/people/r1", headers=PII_READER)).json()["items"]
        assert json.loads(base64.b64decode(items[0]["value"])) == PERSON


async def test_nested_fields_and_non_json_values(tmp_path: Path) -> None:
    url = shared_url()
    config = config_with_keys(tmp_path, url, "k1", [K1])
    config["namespaces"][2]["pii"]["fields"] = ["email", "address.street"]
    async with running(build_app(config)) as c:
        doc = {"address": {"street": "1 Main St", "city": "Springfield"}, "email": None}
        await c.put("/v1/kv/people/n1", content=json.dumps(doc).encode(), headers=WRITER)
        assert b"1 Main St" not in await raw_value(url, "people~t~acme", "n1")
        got = (await c.get("/v1/kv/people/n1", headers=WRITER)).json()
        assert got == {"address": {"street": "***", "city": "Springfield"}, "email": "***"}
        assert (await c.get("/v1/kv/people/n1", headers=PII_READER)).json() == doc
        for raw in (b"[1, 2]", b'"ann"', b"42"):
            await c.put("/v1/kv/people/raw", content=raw, headers=WRITER)
            assert await raw_value(url, "people~t~acme", "raw") == raw
            assert (await c.get("/v1/kv/people/raw", headers=WRITER)).json() == json.loads(raw)
        # Anything that is not JSON is refused: its fields could be neither encrypted nor masked.
        for raw in (b"plain text email ann@example.com", b"{not json"):
            r = await c.put("/v1/kv/people/opaque", content=raw, headers=WRITER)
            assert r.status_code == 400 and r.json()["code"] == "PII_VALUE_NOT_JSON"
            assert (await c.get("/v1/kv/people/opaque", headers=WRITER)).status_code == 404


async def test_keys_rotate_without_losing_old_values(tmp_path: Path) -> None:
    url = shared_url()
    body = json.dumps(PERSON).encode()
    async with running(build_app(config_with_keys(tmp_path, url, "k1", [K1]))) as c:
        await c.put("/v1/kv/people/old", content=body, headers=WRITER)
    async with running(build_app(config_with_keys(tmp_path, url, "k2", [K1, K2]))) as c:
        assert (await c.get("/v1/kv/people/old", headers=PII_READER)).json() == PERSON
        await c.put("/v1/kv/people/new", content=body, headers=WRITER)
        assert json.loads(await raw_value(url, "people~t~acme", "new"))["email"]["kid"] == "k2"
        assert json.loads(await raw_value(url, "people~t~acme", "old"))["email"]["kid"] == "k1"
        # Rewriting re-encrypts with the active key.
        await c.put("/v1/kv/people/old", content=body, headers=WRITER)
        assert json.loads(await raw_value(url, "people~t~acme", "old"))["email"]["kid"] == "k2"
    async with running(build_app(config_with_keys(tmp_path, url, "k2", [K2]))) as c:
        assert (await c.get("/v1/kv/people/old", headers=PII_READER)).json() == PERSON


async def test_missing_key_or_moved_ciphertext_fails_loudly_for_clear_readers(tmp_path: Path) -> None:
    url = shared_url()
    body = json.dumps(PERSON).encode()
    async with running(build_app(config_with_keys(tmp_path, url, "k1", [K1]))) as c:
        await c.put("/v1/kv/people/a", content=body, headers=WRITER)
        stolen = await raw_value(url, "people~t~acme", "a")
        async with prism.connect(url) as store:
            await store.namespace("people~t~acme").put("b", stolen)
            await store.namespace("people~t~globex").put("a", stolen)
        # A ciphertext is bound to its tenant and key: copied elsewhere it does not decrypt.
        for hdrs, key in ((PII_READER, "b"), (headers("globex-pii"), "a")):
            r = await c.get(f"/v1/kv/people/{key}", headers=hdrs)
            assert r.status_code == 500 and r.json()["code"] == "PII_DECRYPT_FAILED"
        assert (await c.get("/v1/kv/people/a", headers=headers("globex"))).json()["email"] == "***"
    async with running(build_app(config_with_keys(tmp_path, url, "k2", [K2]))) as c:
        r = await c.get("/v1/kv/people/a", headers=PII_READER)
        assert r.status_code == 500 and "k1" in r.json()["detail"]
        assert (await c.get("/v1/kv/people/a", headers=WRITER)).json()["email"] == "***"


async def test_audit_values_are_masked(tmp_path: Path) -> None:
    audit_file = tmp_path / "audit.log"
    config = config_with_keys(
        tmp_path,
        shared_url(),
        "k1",
        [K1],
        audit={"sink": "file", "path": str(audit_file), "include_values": True},
    )
    async with running(build_app(config)) as c:
        await c.put("/v1/kv/people/u", content=json.dumps(PERSON).encode(), headers=WRITER)
        await c.put("/v1/kv/plain/bin", content=b"ann@example.com", headers=WRITER)
    text = audit_file.read_text()
    assert "ann@example.com" not in text and "Ann Example" not in text
    lines = [json.loads(line) for line in text.splitlines()]
    put = next(e for e in lines if e["namespace"] == "people")
    assert put["values"] == {"u": {**PERSON, "email": "***", "name": "***"}}
    plain = next(e for e in lines if e["namespace"] == "plain")
    assert plain["values"] == {"bin": {"bytes": 15}}


@pytest.mark.parametrize(
    ("keys", "env", "path"),
    [
        ([{"id": "k1", "env": "MISSING_VAR"}], ENV, "$.pii_keys.keys[0].env"),
        ([{"id": "k1", "env": "SHORT"}], {**ENV, "SHORT": b64(b"too short")}, "$.pii_keys.keys[0].env"),
        ([{"id": "k1", "file": "nope.key"}], ENV, "$.pii_keys.keys[0].file"),
    ],
)
def test_bad_keys_are_config_errors(
    tmp_path: Path, keys: list[dict[str, str]], env: dict[str, str], path: str
) -> None:
    config = config_with_keys(tmp_path, "memory://", "k1", keys)
    with pytest.raises(ConfigError) as info:
        build_app(config, env=env)
    assert info.value.path == path


async def test_a_key_file_encrypts_and_decrypts(tmp_path: Path) -> None:
    (tmp_path / "k2.key").write_text(PII_KEY_2 + "\n")
    url = shared_url()
    config = config_with_keys(tmp_path, url, "k2", [{"id": "k2", "file": str(tmp_path / "k2.key")}])
    async with running(build_app(config)) as c:
        r = await c.put("/v1/kv/people/p1", content=json.dumps(PERSON).encode(), headers=WRITER)
        assert r.status_code == 201
        assert b"ann@example.com" not in await raw_value(url, "people~t~acme", "p1")
        assert (await c.get("/v1/kv/people/p1", headers=PII_READER)).json() == PERSON


async def test_fields_inside_arrays_are_protected(tmp_path: Path) -> None:
    url = shared_url()
    config = config_with_keys(tmp_path, url, "k1", [K1])
    config["namespaces"][2]["pii"]["fields"] = ["email", "contacts.email"]
    contacts = {"contacts": [{"email": "ann@example.com", "kind": "work"}, {"email": "bob@example.com"}]}
    people = [PERSON, {"email": "cy@example.com"}]
    async with running(build_app(config)) as c:
        for key, doc in (("contacts", contacts), ("list", people)):
            await c.put(f"/v1/kv/people/{key}", content=json.dumps(doc).encode(), headers=WRITER)
            assert b"@example.com" not in await raw_value(url, "people~t~acme", key)
            assert (await c.get(f"/v1/kv/people/{key}", headers=PII_READER)).json() == doc
            masked = (await c.get(f"/v1/kv/people/{key}", headers=WRITER)).text
            assert "@example.com" not in masked and "***" in masked
        got = (await c.get("/v1/kv/people/contacts", headers=WRITER)).json()
        assert got == {"contacts": [{"email": "***", "kind": "work"}, {"email": "***"}]}


async def test_values_too_deep_to_check_are_refused_and_write_nothing(tmp_path: Path) -> None:
    url = shared_url()
    config = config_with_keys(tmp_path, url, "k1", [K1])
    config["namespaces"].append({"name": "masked", "pii": {"fields": ["email"]}})
    deep = b'{"email": "ann@example.com", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    async with running(build_app(config)) as c:
        for ns, who in (("people", WRITER), ("masked", headers("writer"))):
            r = await c.put(f"/v1/kv/{ns}/deep", content=deep, headers=who)
            assert r.status_code == 400, (ns, r.status_code)
            assert (await c.get(f"/v1/kv/{ns}/deep", headers=who)).status_code == 404
            bulk = {"items": [{"key": "deep", "value": b64(deep)}]}
            assert (await c.post(f"/v1/kv/{ns}/_bulk/put", json=bulk, headers=who)).status_code == 400
            assert (await c.get(f"/v1/kv/{ns}/deep", headers=who)).status_code == 404
