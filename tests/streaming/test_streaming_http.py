"""POST /v1/requests, GET /v1/requests[/{id}], cancel, and the SSE event stream with Last-Event-ID."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
from streaming_helpers import IDENTITIES, Server

ALICE = {"Authorization": "Bearer alice-token"}
BOB = {"Authorization": "Bearer bob-token"}


async def wait_status(
    client: httpx.AsyncClient, rid: str, status: str, within: float = 10.0
) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + within
    while True:
        body: dict[str, Any] = (await client.get(f"/v1/requests/{rid}", headers=ALICE)).json()
        if body["status"] == status:
            return body
        assert asyncio.get_running_loop().time() < deadline, body
        await asyncio.sleep(0.05)


def parse_sse(text: str) -> list[dict[str, Any]]:
    events = []
    for block in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            if line.startswith(":") or ":" not in line:
                continue
            name, _, value = line.partition(":")
            fields[name] = value.strip()
        if "data" in fields:
            events.append(
                {"id": int(fields["id"]), "event": fields["event"], "data": json.loads(fields["data"])}
            )
    return events


async def test_submit_poll_and_list(server: Server) -> None:
    async with httpx.AsyncClient(base_url=server.http) as client:
        created = await client.post(
            "/v1/requests", headers=ALICE, json={"action": "delay", "payload": {"seconds": 0.2}}
        )
        assert created.status_code == 202
        body = created.json()
        assert set(body) == {"request_id", "status"} and body["status"] == "PENDING"
        assert created.headers["location"] == f"/v1/requests/{body['request_id']}"
        done = await wait_status(client, body["request_id"], "COMPLETED")
        assert done["action"] == "delay"
        assert done["result"] == {"slept": 0.2}
        assert done["progress"] == {"percentage": 100.0, "message": "slept 0.2 of 0.2 s"}
        assert "error" not in done
        listed = (await client.get("/v1/requests?status=COMPLETED&limit=10", headers=ALICE)).json()
        assert [r["request_id"] for r in listed["requests"]] == [body["request_id"]]
        assert (await client.get("/v1/requests?status=PENDING", headers=ALICE)).json()["requests"] == []
        assert (await client.get("/v1/requests", headers=BOB)).json()["requests"] == []
        bad = await client.get("/v1/requests?status=DONE", headers=ALICE)
        assert bad.status_code == 422 and bad.json()["code"] == "VALIDATION_ERROR"
        assert bad.headers["content-type"] == "application/problem+json"


async def test_list_is_newest_first_and_pages(server: Server) -> None:
    async with httpx.AsyncClient(base_url=server.http) as client:
        ids = []
        for i in range(5):
            r = await client.post("/v1/requests", headers=ALICE, json={"action": "echo", "payload": {"i": i}})
            ids.append(r.json()["request_id"])
            await asyncio.sleep(0.002)
        first = (await client.get("/v1/requests?limit=3", headers=ALICE)).json()
        token = first["next_page_token"]
        second = (await client.get(f"/v1/requests?limit=3&page_token={token}", headers=ALICE)).json()
    seen = [r["request_id"] for r in first["requests"] + second["requests"]]
    assert seen == ids[::-1]
    assert "next_page_token" not in second


async def test_an_admin_lists_another_users_requests_of_its_tenant_only(server: Server) -> None:
    root, carol = {"Authorization": "Bearer root-token"}, {"Authorization": "Bearer carol-token"}
    alice = IDENTITIES["alice-token"].owner
    async with httpx.AsyncClient(base_url=server.http) as client:
        r = await client.post("/v1/requests", headers=ALICE, json={"action": "echo", "payload": {}})
        rid = r.json()["request_id"]
        listed = (await client.get("/v1/requests", params={"user": alice}, headers=root)).json()
        assert [x["request_id"] for x in listed["requests"]] == [rid]
        # Naming oneself is the plain list; naming someone else needs the admin role.
        own = (await client.get("/v1/requests", params={"user": alice}, headers=ALICE)).json()
        assert [x["request_id"] for x in own["requests"]] == [rid]
        refused = await client.get("/v1/requests", params={"user": alice}, headers=BOB)
        assert refused.status_code == 403 and refused.json()["code"] == "FORBIDDEN"
        # Carol, of another tenant and no admin, is refused too.
        assert (await client.get("/v1/requests", params={"user": alice}, headers=carol)).status_code == 403


async def test_idempotency_key_returns_the_first_request(server: Server) -> None:
    async with httpx.AsyncClient(base_url=server.http) as client:
        headers = {**ALICE, "Idempotency-Key": "k-1"}
        one = await client.post(
            "/v1/requests", headers=headers, json={"action": "delay", "payload": {"seconds": 0}}
        )
        two = await client.post(
            "/v1/requests", headers=headers, json={"action": "delay", "payload": {"seconds": 0}}
        )
        other = await client.post(
            "/v1/requests", headers=headers, json={"action": "delay", "payload": {"seconds": 1}}
        )
        bob = await client.post(
            "/v1/requests",
            headers={**BOB, "Idempotency-Key": "k-1"},
            json={"action": "delay", "payload": {"seconds": 0}},
        )
    assert one.json()["request_id"] == two.json()["request_id"]
    assert two.headers["idempotent-replayed"] == "true"
    assert other.status_code == 409 and other.json()["code"] == "DUPLICATE_REQUEST"
    assert bob.status_code == 202 and bob.json()["request_id"] != one.json()["request_id"]


async def test_bad_submissions(server: Server) -> None:
    async with httpx.AsyncClient(base_url=server.http) as client:
        none = await client.post("/v1/requests", json={"action": "echo"})
        assert none.status_code == 401 and none.json()["code"] == "UNAUTHORIZED"
        garbage = await client.post("/v1/requests", headers=ALICE, content=b"{oops")
        assert garbage.status_code == 400 and garbage.json()["code"] == "INVALID_MESSAGE"
        unknown = await client.post("/v1/requests", headers=ALICE, json={"action": "fly"})
        assert unknown.status_code == 400 and unknown.json()["code"] == "INVALID_ACTION"
        invalid = await client.post(
            "/v1/requests", headers=ALICE, json={"action": "delay", "payload": {"seconds": -1}}
        )
        assert invalid.status_code == 422 and invalid.json()["details"]["field"] == "seconds"
        big = await client.post(
            "/v1/requests", headers=ALICE, json={"action": "echo", "payload": {"x": "y" * 200_000}}
        )
        assert big.status_code == 413 and big.json()["code"] == "MESSAGE_TOO_LARGE"
        missing = await client.get("/v1/requests/rnope", headers=ALICE)
        assert missing.status_code == 404 and missing.json()["code"] == "NOT_FOUND"
        listed = (await client.get("/v1/requests", headers=ALICE)).json()
    assert listed["requests"] == []


async def test_sse_streams_every_event_and_resumes_after_last_event_id(server: Server) -> None:
    async with httpx.AsyncClient(base_url=server.http, timeout=10) as client:
        created = await client.post(
            "/v1/requests", headers=ALICE, json={"action": "delay", "payload": {"seconds": 0.5, "step": 0.1}}
        )
        rid = created.json()["request_id"]
        response = await client.get(f"/v1/requests/{rid}/events", headers=ALICE)
        assert response.headers["content-type"].startswith("text/event-stream")
        events = parse_sse(response.text)
        assert [e["id"] for e in events] == list(range(1, len(events) + 1))
        assert events[-1]["event"] == "complete" and events[-1]["data"]["result"] == {"slept": 0.5}
        assert all(e["event"] == "progress" for e in events[:-1])
        resumed = await client.get(f"/v1/requests/{rid}/events", headers={**ALICE, "Last-Event-ID": "3"})
        after = parse_sse(resumed.text)
        assert [e["id"] for e in after] == [e["id"] for e in events if e["id"] > 3]
        nothing = await client.get(f"/v1/requests/{rid}/events?after_seq={events[-1]['id']}", headers=ALICE)
        assert parse_sse(nothing.text) == []


async def test_sse_follows_live_and_ends_with_the_terminal_event(server: Server) -> None:
    async with httpx.AsyncClient(base_url=server.http, timeout=10) as client:
        created = await client.post(
            "/v1/requests", headers=ALICE, json={"action": "delay", "payload": {"seconds": 1.0, "step": 0.2}}
        )
        rid = created.json()["request_id"]
        async with client.stream("GET", f"/v1/requests/{rid}/events", headers=ALICE) as stream:
            chunks = [text async for text in stream.aiter_text()]
        events = parse_sse("".join(chunks))
    assert [e["id"] for e in events] == list(range(1, 7))
    assert events[-1]["event"] == "complete"


async def test_cancel_over_http(server: Server) -> None:
    async with httpx.AsyncClient(base_url=server.http, timeout=10) as client:
        created = await client.post(
            "/v1/requests", headers=ALICE, json={"action": "delay", "payload": {"seconds": 30}}
        )
        rid = created.json()["request_id"]
        await wait_status(client, rid, "PROCESSING")
        denied = await client.post(f"/v1/requests/{rid}/cancel", headers=BOB)
        assert denied.status_code == 404
        cancelled = await client.post(f"/v1/requests/{rid}/cancel", headers=ALICE)
        assert cancelled.status_code == 200
        assert cancelled.json()["status"] == "CANCELLED"
        assert cancelled.json()["error"]["code"] == "CANCELLED"
        again = await client.post(f"/v1/requests/{rid}/cancel", headers=ALICE)
        assert again.json()["status"] == "CANCELLED"
        events = parse_sse((await client.get(f"/v1/requests/{rid}/events", headers=ALICE)).text)
    assert events[-1]["event"] == "error"
    assert events[-1]["data"]["error"]["code"] == "CANCELLED"
    # The worker saw the cancel and stopped; nothing ran on.
    await asyncio.sleep(0.2)
    assert rid not in server.service.rt.running
