"""Isolation: nobody follows, reads, cancels or lists another user's request; admins see their tenant."""

from __future__ import annotations

import asyncio

import httpx
from streaming_helpers import Server, recv_json, send_json, until_terminal


async def start_job(server: Server, token: str, seconds: float = 2.0) -> str:
    async with httpx.AsyncClient(base_url=server.http) as client:
        r = await client.post(
            "/v1/requests",
            headers={"Authorization": f"Bearer {token}"},
            json={"action": "delay", "payload": {"seconds": seconds, "step": 0.1}},
        )
    rid: str = r.json()["request_id"]
    return rid


async def test_other_users_cannot_see_follow_or_cancel_a_request(server: Server) -> None:
    rid = await start_job(server, "alice-token")
    for token in ("bob-token", "carol-token"):
        async with server.connect(token) as ws:
            for kind in ("subscribe", "status", "cancel"):
                await send_json(ws, {"type": kind, "request_id": rid})
                reply = await recv_json(ws)
                assert reply["type"] == "error" and reply["error"]["code"] == "NOT_FOUND", (token, kind)
            # No event of alice's request reaches bob's connection.
            await send_json(ws, {"type": "ping"})
            while (msg := await recv_json(ws))["type"] != "pong":
                assert msg.get("request_id") != rid
        async with httpx.AsyncClient(base_url=server.http) as client:
            headers = {"Authorization": f"Bearer {token}"}
            assert (await client.get(f"/v1/requests/{rid}", headers=headers)).status_code == 404
            assert (await client.get(f"/v1/requests/{rid}/events", headers=headers)).status_code == 404
            assert (await client.post(f"/v1/requests/{rid}/cancel", headers=headers)).status_code == 404
            assert (await client.get("/v1/requests", headers=headers)).json()["requests"] == []
    current = await server.service.requests.get(rid)
    assert current is not None and current.record.status in ("PENDING", "PROCESSING")


async def test_a_connection_taking_the_feed_gets_every_request_of_the_user(server: Server) -> None:
    async with server.connect("alice-token") as one, server.connect("alice-token") as two:
        await send_json(two, {"type": "feed"})
        assert (await recv_json(two))["type"] == "feed"
        await send_json(one, {"action": "delay", "id": "fan", "payload": {"seconds": 0.3, "step": 0.1}})
        ack = await recv_json(one)
        first = await until_terminal(one, ack["request_id"])
        second = await until_terminal(two, ack["request_id"])
    assert [e["seq"] for e in first] == [e["seq"] for e in second]
    assert second[-1]["type"] == "complete"


async def test_admin_of_the_tenant_may_follow_and_cancel_but_not_across_tenants(server: Server) -> None:
    rid = await start_job(server, "alice-token", seconds=30)
    async with server.connect("root-token") as ws:
        await send_json(ws, {"type": "subscribe", "request_id": rid, "after_seq": 0})
        subscribed = await recv_json(ws)
        assert subscribed["type"] == "subscribed" and subscribed["request_id"] == rid
        progress = await recv_json(ws)
        assert progress["type"] == "progress" and progress["request_id"] == rid
        await send_json(ws, {"type": "cancel", "request_id": rid})
        events = await until_terminal(ws, rid)
        assert events[-1]["error"]["code"] == "CANCELLED"
        assert "root" in events[-1]["error"]["message"]
    carol_rid = await start_job(server, "carol-token", seconds=0.1)
    async with server.connect("root-token") as ws:
        await send_json(ws, {"type": "status", "request_id": carol_rid})
        assert (await recv_json(ws))["error"]["code"] == "NOT_FOUND"


async def test_connections_are_listed_by_user_and_tenant(server: Server) -> None:
    registry = server.service.connections
    async with server.connect("alice-token"), server.connect("alice-token"), server.connect("carol-token"):
        await asyncio.sleep(0.1)
        alice = await registry.list_by_user("acme", "alice")
        acme = await registry.list_by_tenant("acme")
        globex = await registry.list_by_tenant("globex")
        assert len(alice) == 2 and {c.user for c in alice} == {"alice"}
        assert len(acme) == 2
        assert [c.user for c in globex] == ["carol"]
        assert all(c.node == server.service.node for c in acme)
    await asyncio.sleep(0.1)
    assert await registry.list_by_tenant("acme") == []


async def test_stale_connection_records_are_swept(server: Server) -> None:
    import time

    from prism.streaming.connections import ConnectionRecord

    registry = server.service.connections
    old = time.time() - 10_000
    ghost = ConnectionRecord(
        id="cghost", user="ghost", tenant="acme", node="dead", connected_at=old, last_seen=old
    )
    await registry.save(ghost)
    assert [c.id for c in await registry.list_by_user("acme", "ghost")] == ["cghost"]
    assert await registry.sweep() == 3
    assert await registry.list_by_user("acme", "ghost") == []
