"""Identity in streaming behind the gateway: how a caller authenticated is part of who it is.

An API key named ``alice`` and a JWT whose ``sub`` is ``alice`` (in the same tenant)
are two callers; so are tokens of two issuers with the same subject. None of them
lists, reads, follows, cancels or reuses the client ids of another's requests, over
HTTP, SSE or the WebSocket. Credentials follow one rule on every streaming route.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import uvicorn
import websockets
from streaming_helpers import FAST

from prism.gateway import create_app, parse_config
from prism.gateway.app import load_extensions
from prism.gateway.auth import hash_api_key
from prism.streaming.app import UVICORN_OPTIONS
from prism.streaming.handlers import ProgressReporter, Router
from prism.testing.servers import free_port

router = Router()


@router.handler("wait", estimated_duration=60.0)
async def wait(payload: dict[str, float], progress: ProgressReporter) -> dict[str, float]:
    """Sleep ``seconds`` (cancellable)."""
    await progress.sleep(payload["seconds"])
    return {"slept": payload["seconds"]}


SECRET = "identity-tests-secret-0123456789abcdef"
ENV = {"PRISM_IDENTITY_JWT_SECRET": SECRET}
KEY = "key-alice-identity"


def jwt_for(sub: str, *, iss: str | None = "https://id-one.example", roles: list[str] | None = None) -> str:
    claims: dict[str, Any] = {
        "sub": sub,
        "tenant_id": "acme",
        "roles": roles or ["writer"],
        "exp": int(time.time()) + 300,
        "iat": int(time.time()),
    }
    if iss is not None:
        claims["iss"] = iss
    return jwt.encode(claims, SECRET, algorithm="HS256")


def config(**extra: Any) -> dict[str, Any]:
    return {
        "stores": {"main": f"memory://identity-{os.urandom(4).hex()}"},
        "namespaces": [{"name": "default", "store": "main"}],
        "auth": {
            "api_keys": [
                {"name": "alice", "sha256": hash_api_key(KEY), "roles": ["writer"], "tenant": "acme"}
            ],
            "jwt": {"algorithms": ["HS256"], "secret_env": "PRISM_IDENTITY_JWT_SECRET"},
        },
        "audit": {"sink": "none"},
        "streaming": {**FAST},
        "handlers": ["test_streaming_identity:router"],
        **extra,
    }


@contextlib.asynccontextmanager
async def serve(raw: dict[str, Any]) -> AsyncIterator[str]:
    """``prism serve``'s app (gateway and streaming) for ``raw`` on a free port, until the block ends."""
    parsed = parse_config(raw, env=ENV)
    (extension,) = load_extensions(parsed)
    app = create_app(
        parsed,
        env=ENV,
        extra_routes=extension.routes,
        on_startup=extension.on_startup,
        on_shutdown=extension.on_shutdown,
    )
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", **UVICORN_OPTIONS)
    )
    task = asyncio.create_task(server.serve())
    for _ in range(1000):
        if server.started or task.done():
            break
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@pytest.fixture
async def gateway() -> AsyncIterator[str]:
    async with serve(config()) as base:
        yield base


KEY_HEADERS = {"X-API-Key": KEY}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def submit(client: httpx.AsyncClient, headers: dict[str, str], client_id: str, seconds: float) -> str:
    r = await client.post(
        "/v1/requests",
        headers=headers,
        json={"action": "wait", "id": client_id, "payload": {"seconds": seconds}},
    )
    assert r.status_code == 202, r.text
    rid: str = r.json()["request_id"]
    return rid


async def assert_invisible(base: str, client: httpx.AsyncClient, headers: dict[str, str], rid: str) -> None:
    """Everything ``headers`` may try on request ``rid`` answers as if it did not exist."""
    assert (await client.get(f"/v1/requests/{rid}", headers=headers)).status_code == 404
    assert (await client.get(f"/v1/requests/{rid}/events", headers=headers)).status_code == 404
    assert (await client.post(f"/v1/requests/{rid}/cancel", headers=headers)).status_code == 404
    listed = await client.get("/v1/requests", headers=headers)
    assert listed.status_code == 200
    assert rid not in [r["request_id"] for r in listed.json()["requests"]]
    ws_url = base.replace("http://", "ws://") + "/v1/stream"
    async with websockets.connect(ws_url, additional_headers=headers) as ws:
        for kind in ("subscribe", "status", "cancel"):
            await ws.send(json.dumps({"type": kind, "request_id": rid}))
            reply = json.loads(await ws.recv())
            assert reply["type"] == "error" and reply["error"]["code"] == "NOT_FOUND", (kind, reply)
        await ws.send(json.dumps({"type": "ping"}))
        while (msg := json.loads(await ws.recv()))["type"] != "pong":
            assert msg.get("request_id") != rid


async def test_a_token_with_the_key_name_as_subject_is_another_caller(gateway: str) -> None:
    async with httpx.AsyncClient(base_url=gateway, timeout=10) as client:
        rid = await submit(client, KEY_HEADERS, "same-id", 30)
        # The key sees its request; a token with sub "alice" in the same tenant does not.
        mine = await client.get("/v1/requests", headers=KEY_HEADERS)
        assert [r["request_id"] for r in mine.json()["requests"]] == [rid]
        token = jwt_for("alice")
        await assert_invisible(gateway, client, bearer(token), rid)
        # The same client id is the token's own: a new request, not a replay of the key's.
        other = await submit(client, bearer(token), "same-id", 30)
        assert other != rid
        # ... and the key does not see the token's request either.
        await assert_invisible(gateway, client, KEY_HEADERS, other)
        still = await client.get(f"/v1/requests/{rid}", headers=KEY_HEADERS)
        assert still.json()["status"] in ("PENDING", "PROCESSING")
        for headers, request_id in ((KEY_HEADERS, rid), (bearer(token), other)):
            cancelled = await client.post(f"/v1/requests/{request_id}/cancel", headers=headers)
            assert cancelled.status_code == 200


async def test_tokens_of_two_issuers_with_one_subject_are_two_callers(gateway: str) -> None:
    one, two = jwt_for("bob", iss="https://id-one.example"), jwt_for("bob", iss="https://id-two.example")
    async with httpx.AsyncClient(base_url=gateway, timeout=10) as client:
        rid = await submit(client, bearer(one), "job", 30)
        await assert_invisible(gateway, client, bearer(two), rid)
        # A token of the same issuer and subject is the same caller.
        again = jwt_for("bob", iss="https://id-one.example", roles=["writer", "extra"])
        assert (await client.get(f"/v1/requests/{rid}", headers=bearer(again))).status_code == 200
        await client.post(f"/v1/requests/{rid}/cancel", headers=bearer(one))


async def test_events_reach_only_the_owner_websocket(gateway: str) -> None:
    ws_url = gateway.replace("http://", "ws://") + "/v1/stream"
    async with (
        websockets.connect(ws_url, additional_headers=KEY_HEADERS) as key_ws,
        websockets.connect(ws_url, additional_headers=bearer(jwt_for("alice"))) as jwt_ws,
    ):
        await asyncio.sleep(0.05)
        await key_ws.send(json.dumps({"action": "wait", "id": "fan", "payload": {"seconds": 0.2}}))
        ack = json.loads(await key_ws.recv())
        rid = ack["request_id"]
        while (msg := json.loads(await key_ws.recv()))["type"] not in ("complete", "error"):
            pass
        assert msg["request_id"] == rid
        await jwt_ws.send(json.dumps({"type": "ping"}))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1):
                while (got := json.loads(await jwt_ws.recv()))["type"] != "pong":
                    assert got.get("request_id") != rid


async def test_streaming_routes_follow_the_one_credential_rule(gateway: str) -> None:
    async with httpx.AsyncClient(base_url=gateway, timeout=10) as client:
        rid = await submit(client, KEY_HEADERS, "rule", 30)
        in_url = {"token": KEY}
        # ?token= is refused on every route but the SSE event stream (and the WebSocket).
        for method, path in (
            ("POST", "/v1/requests"),
            ("GET", "/v1/requests"),
            ("GET", f"/v1/requests/{rid}"),
            ("POST", f"/v1/requests/{rid}/cancel"),
            ("GET", "/v1/dead-letters"),
        ):
            body = {"action": "wait", "payload": {"seconds": 0}} if path == "/v1/requests" else None
            r = await client.request(method, path, params=in_url, json=body)
            assert r.status_code == 401, (method, path)
            assert r.json()["details"] == {"reason": "QUERY_TOKEN_NOT_ALLOWED"}
            assert "?token=" in r.json()["detail"]
        # A header and ?token= together, or a header twice, are refused everywhere.
        events = f"/v1/requests/{rid}/events"
        r = await client.get(events, params=in_url, headers=bearer(jwt_for("alice")))
        assert r.status_code == 401 and r.json()["details"] == {"reason": "AMBIGUOUS_CREDENTIALS"}
        twice = [("X-API-Key", KEY), ("X-API-Key", "another-key")]
        for method, path in (
            ("GET", "/v1/requests"),
            ("GET", events),
            ("POST", f"/v1/requests/{rid}/cancel"),
        ):
            r = await client.request(method, path, headers=twice)
            assert r.status_code == 401 and r.json()["details"] == {"reason": "AMBIGUOUS_CREDENTIALS"}
        # ?token= alone opens the event stream.
        async with client.stream("GET", events, params=in_url) as stream:
            assert stream.status_code == 200
            assert stream.headers["content-type"].startswith("text/event-stream")
        status = await client.get(f"/v1/requests/{rid}", headers=KEY_HEADERS)
        assert status.json()["status"] in ("PENDING", "PROCESSING")
        await client.post(f"/v1/requests/{rid}/cancel", headers=KEY_HEADERS)


async def test_the_websocket_takes_one_credential(gateway: str) -> None:
    ws_url = gateway.replace("http://", "ws://") + "/v1/stream"
    async with websockets.connect(f"{ws_url}?token={KEY}") as ws:
        await ws.send(json.dumps({"type": "ping"}))
        assert json.loads(await ws.recv())["type"] == "pong"
    for url, headers in (
        (f"{ws_url}?token={KEY}", bearer(jwt_for("alice"))),
        (ws_url, [("X-API-Key", KEY), ("X-API-Key", KEY)]),
    ):
        async with websockets.connect(url, additional_headers=headers) as ws:
            reply = json.loads(await ws.recv())
            assert reply["error"]["code"] == "UNAUTHORIZED"
            assert reply["error"]["details"] == {"reason": "AMBIGUOUS_CREDENTIALS"}
            with pytest.raises(websockets.ConnectionClosed) as info:
                await ws.recv()
            assert info.value.rcvd is not None and info.value.rcvd.code == 1008


async def test_streaming_requests_are_audited(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    audit = {"sink": "file", "path": str(log), "flush_interval": 0.02}
    async with serve(config(audit=audit)) as base, httpx.AsyncClient(base_url=base, timeout=10) as client:
        rid = await submit(client, KEY_HEADERS, "audited", 0)
        assert (await client.get("/v1/requests")).status_code == 401
        assert (await client.get(f"/v1/requests/{rid}", headers=bearer(jwt_for("alice")))).status_code == 404
        ws_url = base.replace("http://", "ws://") + "/v1/stream"
        async with websockets.connect(ws_url, additional_headers=KEY_HEADERS) as ws:
            await ws.send(json.dumps({"type": "ping"}))
            await ws.recv()
    events = [json.loads(line) for line in log.read_text().splitlines()]
    seen = [(e["operation"], e["status"], e["outcome"], e.get("principal_kind")) for e in events]
    assert seen == [
        ("requests_submit", 202, "ok", "api_key"),
        ("requests_list", 401, "UNAUTHORIZED", None),
        ("request_get", 404, "NOT_FOUND", "jwt"),
        ("stream_connect", 101, "ok", "api_key"),
    ]


async def test_failing_closed_a_submission_is_acknowledged_only_once_audited(tmp_path: Path) -> None:
    audit = {"sink": "file", "path": "/dev/full", "on_failure": "reject"}
    async with serve(config(audit=audit)) as base, httpx.AsyncClient(base_url=base, timeout=10) as client:
        r = await client.post(
            "/v1/requests", headers=KEY_HEADERS, json={"action": "wait", "payload": {"seconds": 0}}
        )
        assert r.status_code == 503 and r.json()["code"] == "AUDIT_UNAVAILABLE"
        # Known down: refused before anything is done.
        r = await client.get("/v1/requests", headers=KEY_HEADERS)
        assert r.status_code == 503 and r.json()["code"] == "AUDIT_UNAVAILABLE"


async def test_websocket_messages_are_audited(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    audit = {"sink": "file", "path": str(log), "flush_interval": 0.02}
    async with serve(config(audit=audit)) as base:
        ws_url = base.replace("http://", "ws://") + "/v1/stream"
        async with websockets.connect(ws_url, additional_headers=KEY_HEADERS) as ws:
            await ws.send(json.dumps({"action": "wait", "id": "w1", "payload": {"seconds": 30}}))
            ack = json.loads(await ws.recv())
            assert ack["type"] == "acknowledgment"
            rid = ack["request_id"]
            await ws.send(json.dumps({"type": "status", "request_id": rid}))
            while json.loads(await ws.recv())["type"] != "status":
                pass
            await ws.send(json.dumps({"type": "status", "request_id": "r" + "0" * 32}))
            while json.loads(await ws.recv())["type"] != "error":
                pass
            await ws.send(json.dumps({"type": "cancel", "request_id": rid}))
            while json.loads(await ws.recv())["type"] != "status":
                pass
    events = [json.loads(line) for line in log.read_text().splitlines()]
    seen = [(e["operation"], e["status"], e["outcome"]) for e in events]
    assert seen == [
        ("stream_connect", 101, "ok"),
        ("stream_submit", 202, "ok"),
        ("stream_status", 200, "ok"),
        ("stream_status", 404, "NOT_FOUND"),
        ("stream_cancel", 200, "ok"),
    ]
    assert all(e["principal"] == "alice" and e["principal_kind"] == "api_key" for e in events)


async def test_failing_closed_a_websocket_submission_is_acknowledged_only_once_audited(
    tmp_path: Path,
) -> None:
    # A long flush interval: the sink is not yet known to fail when the request comes.
    audit = {"sink": "file", "path": "/dev/full", "on_failure": "reject", "flush_interval": 30}
    async with serve(config(audit=audit)) as base:
        ws_url = base.replace("http://", "ws://") + "/v1/stream"
        async with websockets.connect(ws_url, additional_headers=KEY_HEADERS) as ws:
            await ws.send(json.dumps({"action": "wait", "id": "w1", "payload": {"seconds": 0}}))
            reply = json.loads(await ws.recv())
            assert reply["type"] == "error" and reply["error"]["code"] == "AUDIT_UNAVAILABLE"
            # Known down now: refused before anything is done, and the connection stays usable.
            await ws.send(json.dumps({"action": "wait", "id": "w2", "payload": {"seconds": 0}}))
            # (The first request was stored before its event failed: its own events may come first.)
            while (reply := json.loads(await ws.recv())).get("id") != "w2":
                assert reply["type"] != "acknowledgment"
            assert reply["type"] == "error" and reply["error"]["code"] == "AUDIT_UNAVAILABLE"
            await ws.send(json.dumps({"type": "ping"}))
            assert json.loads(await ws.recv())["type"] == "pong"
