"""Edge cases of isolation, replay and durability found by review: each guards one fix."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import msgspec
import pytest
import websockets
from streaming_helpers import (
    Server,
    ServerFactory,
    make_service,
    recv_json,
    running,
    send_json,
    until_terminal,
)

from prism.errors import BackendUnavailable, PreconditionFailed
from prism.streaming.auth import Identity, StaticTokens
from prism.streaming.protocol import ErrorBody
from prism.streaming.requests import RequestRecord, RequestStatus, fingerprint, new_request_id


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_the_same_client_id_of_two_users_names_two_requests(server: Server) -> None:
    async with httpx.AsyncClient(base_url=server.http) as client:
        body = {"action": "delay", "payload": {"seconds": 0.1, "step": 0.1}, "id": "shared-id"}
        alice = await client.post("/v1/requests", headers=_auth("alice-token"), json=body)
        bob = await client.post("/v1/requests", headers=_auth("bob-token"), json=body)
        carol = await client.post("/v1/requests", headers=_auth("carol-token"), json=body)
        assert alice.status_code == bob.status_code == carol.status_code == 202
        assert "Idempotent-Replayed" not in bob.headers and "Idempotent-Replayed" not in carol.headers
        ids = {alice.json()["request_id"], bob.json()["request_id"], carol.json()["request_id"]}
        assert len(ids) == 3
        bob_view = await client.get(f"/v1/requests/{alice.json()['request_id']}", headers=_auth("bob-token"))
        assert bob_view.status_code == 404


@pytest.mark.parametrize("kind", ["status", "subscribe", "cancel"])
async def test_a_request_id_that_names_a_log_entry_is_not_found(server: Server, kind: str) -> None:
    async with server.connect("alice-token") as ws:
        await send_json(ws, {"action": "delay", "payload": {"seconds": 0.2, "step": 0.1}})
        ack = await recv_json(ws)
        await until_terminal(ws, ack["request_id"])
        current = await server.service.requests.get(ack["request_id"])
        assert current is not None
        # Events are copied to "<request_id>/<seq>" entries beside the record: never a request.
        await server.service.log.copy(ack["request_id"], [(1, current.record.tail[0].encode())])
        bogus = f"{ack['request_id']}/0000000001"
        await send_json(ws, {"type": kind, "request_id": bogus})
        reply = await recv_json(ws)
        assert reply["type"] == "error" and reply["error"]["code"] == "NOT_FOUND"
        assert reply["request_id"] == bogus


async def test_subscribe_after_a_seq_beyond_the_last_still_gets_what_follows(server: Server) -> None:
    async with httpx.AsyncClient(base_url=server.http) as client:
        r = await client.post(
            "/v1/requests",
            headers=_auth("alice-token"),
            json={"action": "delay", "payload": {"seconds": 0.6, "step": 0.1}},
        )
    rid = r.json()["request_id"]
    async with server.connect("root-token") as ws:
        await send_json(ws, {"type": "subscribe", "request_id": rid, "after_seq": 10_000})
        subscribed = await recv_json(ws)
        assert subscribed["type"] == "subscribed"
        events = await until_terminal(ws, rid, within=5.0)
    assert events[-1]["type"] == "complete"
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))


async def test_sse_with_a_last_event_id_beyond_the_last_still_ends(server: Server) -> None:
    async with httpx.AsyncClient(base_url=server.http, timeout=10) as client:
        r = await client.post(
            "/v1/requests",
            headers=_auth("alice-token"),
            json={"action": "delay", "payload": {"seconds": 0.4, "step": 0.1}},
        )
        rid = r.json()["request_id"]
        headers = {**_auth("alice-token"), "Last-Event-ID": "999"}
        text = (await client.get(f"/v1/requests/{rid}/events", headers=headers)).text
    assert "event: complete" in text


async def test_identities_with_a_nul_character_are_refused() -> None:
    service = make_service()
    service.authenticator = StaticTokens(
        {"nul-token": Identity("alice\x00x", "acme"), "tenant-token": Identity("bob", "acme\x00alice")}
    )
    async with running(service) as server:
        for token in ("nul-token", "tenant-token"):
            async with server.connect(token) as ws:
                reply = await recv_json(ws)
                assert reply["type"] == "error" and reply["error"]["code"] == "UNAUTHORIZED"
                with pytest.raises(websockets.ConnectionClosed) as closed:
                    await ws.recv()
                assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
            async with httpx.AsyncClient(base_url=server.http) as client:
                assert (await client.get("/v1/requests", headers=_auth(token))).status_code == 401


def _record(request_id: str, user: str = "alice", tenant: str = "acme", **fields: Any) -> RequestRecord:
    return RequestRecord(
        request_id=request_id, action="delay", payload=msgspec.Raw(b"{}"), user=user, tenant=tenant, **fields
    )


class _IndexDown:
    """The index namespace of a store whose writes fail (a crash between two writes, as seen after it)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def put(self, *args: Any, **kwargs: Any) -> Any:
        raise BackendUnavailable("the index is down")


async def test_a_failure_between_indexing_and_storing_never_hides_a_stored_request(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    requests = server.service.requests
    monkeypatch.setattr(requests, "index", _IndexDown(requests.index))
    rid = new_request_id("acme", "alice", None)
    with pytest.raises(BackendUnavailable):
        await requests.create(_record(rid))
    monkeypatch.undo()
    listed, _ = await requests.list_for("acme", "alice", status=None, limit=10, page_token=None)
    stored = await requests.get(rid)
    # Stored means listed: a request the index does not know of must not exist.
    assert stored is None or rid in [r.request_id for r in listed]


async def test_a_lost_create_race_lists_the_request_once(server: Server) -> None:
    requests = server.service.requests
    rid = new_request_id("acme", "alice", "race")
    await requests.create(_record(rid, client_id="race"))
    await asyncio.sleep(0.002)
    with pytest.raises(PreconditionFailed):
        await requests.create(_record(rid, client_id="race"))
    listed, _ = await requests.list_for("acme", "alice", status=None, limit=10, page_token=None)
    assert [r.request_id for r in listed] == [rid]


async def test_a_failure_while_dead_lettering_never_hides_a_dead_letter(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    requests = server.service.requests
    rid = new_request_id("acme", "alice", None)
    current = await requests.create(_record(rid, status=RequestStatus.PROCESSING, attempts=1))
    monkeypatch.setattr(requests, "index", _IndexDown(requests.index))
    failed = msgspec.structs.replace(
        current.record,
        status=RequestStatus.FAILED,
        error=ErrorBody(code="PROCESSING_FAILED", message="boom", retryable=False),
    )
    with pytest.raises(BackendUnavailable):
        await requests.replace(current, failed)
    monkeypatch.undo()
    dead, _ = await requests.dead_letters("acme", limit=10, page_token=None)
    stored = await requests.get(rid)
    assert stored is not None
    assert stored.record.status != RequestStatus.FAILED or rid in [r.request_id for r in dead]


async def test_dead_letters_stay_within_the_admins_tenant(server_factory: ServerFactory) -> None:
    server = await server_factory()
    requests = server.service.requests
    rids = {}
    for user, tenant in (("alice", "acme"), ("carol", "globex")):
        rid = rids[tenant] = new_request_id(tenant, user, None)
        current = await requests.create(_record(rid, user=user, tenant=tenant, status="PROCESSING"))
        await requests.replace(
            current,
            msgspec.structs.replace(
                current.record,
                status=RequestStatus.FAILED,
                error=ErrorBody(code="PROCESSING_FAILED", message="boom", retryable=False),
            ),
        )
    async with httpx.AsyncClient(base_url=server.http) as client:
        root = (await client.get("/v1/dead-letters", headers=_auth("root-token"))).json()["requests"]
        alice = await client.get("/v1/dead-letters", headers=_auth("alice-token"))
    assert [r["request_id"] for r in root] == [rids["acme"]]
    assert alice.status_code == 403


async def test_a_record_under_another_identity_is_never_returned_for_a_client_id(server: Server) -> None:
    requests = server.service.requests
    rid = new_request_id("acme", "alice", "mine")
    payload = b'{"seconds":0.1}'
    await requests.create(
        msgspec.structs.replace(
            _record(rid, user="bob", client_id="mine", fingerprint=fingerprint("delay", payload)),
            payload=msgspec.Raw(payload),
        )
    )
    async with httpx.AsyncClient(base_url=server.http) as client:
        r = await client.post(
            "/v1/requests",
            headers=_auth("alice-token"),
            json={"action": "delay", "payload": {"seconds": 0.1}, "id": "mine"},
        )
    assert r.status_code != 202 and rid not in r.text


async def test_a_negative_last_event_id_is_a_validation_error(server: Server) -> None:
    async with httpx.AsyncClient(base_url=server.http) as client:
        r = await client.post("/v1/requests", headers=_auth("alice-token"), json={"action": "echo"})
        rid = r.json()["request_id"]
        headers = {**_auth("alice-token"), "Last-Event-ID": "-3"}
        reply = await client.get(f"/v1/requests/{rid}/events", headers=headers)
    assert reply.status_code == 422
    assert reply.json()["details"] == {"field": "Last-Event-ID"}


def _sample(name: str, **labels: str) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_metrics_count_requests_jobs_events_and_connections(server: Server) -> None:
    before = {
        status: _sample("prism_streaming_requests_total", action="delay", status=status)
        for status in ("PENDING", "PROCESSING", "COMPLETED")
    }
    echo_before = _sample("prism_streaming_requests_total", action="echo", status="COMPLETED")
    delivered = _sample("prism_streaming_events_delivered_total")
    open_before = _sample("prism_streaming_connections", transport="websocket")
    async with server.connect("alice-token") as ws:
        await send_json(ws, {"type": "ping"})
        await recv_json(ws)
        assert _sample("prism_streaming_connections", transport="websocket") == open_before + 1
        await send_json(ws, {"action": "delay", "payload": {"seconds": 0.4, "step": 0.1}})
        ack = await recv_json(ws)
        first = await recv_json(ws)
        assert first["type"] == "progress" and _sample("prism_streaming_jobs_running") >= 1
        events = [first, *await until_terminal(ws, ack["request_id"])]
        await send_json(ws, {"action": "echo", "payload": {"a": 1}})
        assert (await recv_json(ws))["type"] == "response"
    after = {
        status: _sample("prism_streaming_requests_total", action="delay", status=status)
        for status in ("PENDING", "PROCESSING", "COMPLETED")
    }
    assert {status: after[status] - before[status] for status in after} == {
        "PENDING": 1,
        "PROCESSING": 1,
        "COMPLETED": 1,
    }
    assert _sample("prism_streaming_requests_total", action="echo", status="COMPLETED") == echo_before + 1
    assert _sample("prism_streaming_events_delivered_total") - delivered == len(events)
    for _ in range(100):
        if _sample("prism_streaming_connections", transport="websocket") == open_before:
            break
        await asyncio.sleep(0.02)
    assert _sample("prism_streaming_connections", transport="websocket") == open_before
