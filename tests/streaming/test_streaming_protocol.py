"""The wire contract of /v1/stream, over a real WebSocket."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

import msgspec
import pytest
import websockets
from hypothesis import given
from hypothesis import strategies as st
from streaming_helpers import Server, ServerFactory, recv_json, send_json, until_terminal

from prism.streaming.handlers import ProgressReporter, Router
from prism.streaming.protocol import timestamp


async def test_echo_answers_with_the_payload_as_data(server: Server) -> None:
    async with server.connect() as ws:
        await send_json(ws, {"action": "echo", "payload": {"message": "hi", "n": [1, 2]}})
        msg = await recv_json(ws)
    assert msg["type"] == "response"
    assert msg["success"] is True
    assert msg["data"] == {"message": "hi", "n": [1, 2]}
    assert msg["request_id"].startswith("r")
    assert "error" not in msg


async def test_echo_with_an_id_echoes_the_id(server: Server) -> None:
    async with server.connect() as ws:
        await send_json(ws, {"action": "echo", "id": "c-1", "payload": {"x": 1}})
        msg = await recv_json(ws)
    assert msg["id"] == "c-1"
    assert msg["data"] == {"x": 1}


async def test_async_request_is_acknowledged_then_streams_progress_and_complete(server: Server) -> None:
    async with server.connect() as ws:
        await send_json(ws, {"action": "delay", "id": "d-1", "payload": {"seconds": 0.4, "step": 0.1}})
        ack = await recv_json(ws)
        assert ack["type"] == "acknowledgment"
        assert ack["status"] == "queued"
        assert ack["id"] == "d-1"
        assert isinstance(ack["message"], str)
        events = await until_terminal(ws, ack["request_id"])
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    *progress, complete = events
    assert complete["type"] == "complete"
    assert complete["result"] == {"slept": 0.4}
    assert complete["timestamp"].endswith("Z")
    assert progress and all(p["type"] == "progress" for p in progress)
    percentages = [p["percentage"] for p in progress]
    assert percentages == sorted(percentages) and percentages[-1] == 100
    for p in progress:
        assert set(p) >= {"request_id", "percentage", "message", "timestamp", "seq"}


async def test_malformed_json_gets_an_error_and_the_connection_stays_usable(server: Server) -> None:
    async with server.connect() as ws:
        await ws.send("{not json")
        error = await recv_json(ws)
        assert error["type"] == "error"
        assert error["error"]["code"] == "INVALID_MESSAGE"
        assert error["error"]["retryable"] is False
        await send_json(ws, {"action": "echo", "payload": {"still": "here"}})
        assert (await recv_json(ws))["data"] == {"still": "here"}


async def test_a_frame_over_the_limit_is_refused_and_the_connection_stays_usable(
    server_factory: ServerFactory,
) -> None:
    server = await server_factory(max_frame_bytes=1024)
    async with server.connect() as ws:
        await send_json(ws, {"action": "echo", "payload": {"blob": "x" * 2000}})
        error = await recv_json(ws)
        assert error["error"]["code"] == "MESSAGE_TOO_LARGE"
        assert error["error"]["details"] == {"limit": 1024}
        await send_json(ws, {"action": "echo", "payload": {"small": True}})
        assert (await recv_json(ws))["data"] == {"small": True}


async def test_a_client_that_keeps_sending_garbage_is_closed_with_1008(server_factory: ServerFactory) -> None:
    server = await server_factory(max_invalid_frames=3)
    async with server.connect() as ws:
        for _ in range(3):
            await ws.send("garbage")
        codes = [(await recv_json(ws))["error"]["code"] for _ in range(3)]
        assert codes == ["INVALID_MESSAGE"] * 3
        with pytest.raises(websockets.ConnectionClosed) as closed:
            while True:
                await recv_json(ws)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008


async def test_unknown_action_is_invalid_action(server: Server) -> None:
    async with server.connect() as ws:
        await send_json(ws, {"action": "nope", "id": "x"})
        error = await recv_json(ws)
    assert error["type"] == "error"
    assert error["error"]["code"] == "INVALID_ACTION"
    assert error["id"] == "x"
    assert "echo" in error["error"]["details"]["actions"]


async def test_invalid_payload_is_a_validation_error_naming_the_field(server: Server) -> None:
    async with server.connect() as ws:
        await send_json(ws, {"action": "delay", "id": "v1", "payload": {"seconds": "soon"}})
        error = await recv_json(ws)
        assert error["error"]["code"] == "VALIDATION_ERROR"
        assert error["error"]["details"]["field"] == "seconds"
        await send_json(ws, {"action": "delay", "id": "v2", "payload": {}})
        missing = await recv_json(ws)
        assert missing["error"]["details"]["field"] == "seconds"
        await send_json(ws, {"action": "echo", "payload": [1, 2]})
        not_object = await recv_json(ws)
        assert not_object["error"]["code"] == "VALIDATION_ERROR"
    # Nothing was stored for the refused requests.
    page = await server.service.requests.records.scan()
    assert page.keys == []


async def test_control_messages_ping_status_and_unknown_type(server: Server) -> None:
    async with server.connect() as ws:
        await send_json(ws, {"type": "ping"})
        pong = await recv_json(ws)
        assert pong["type"] == "pong" and pong["timestamp"].endswith("Z")
        await send_json(ws, {"type": "dance"})
        assert (await recv_json(ws))["error"]["code"] == "INVALID_MESSAGE"
        await send_json(ws, {"type": "status", "request_id": "rnothere"})
        missing = await recv_json(ws)
        assert missing["error"]["code"] == "NOT_FOUND"
        assert missing["request_id"] == "rnothere"
        await send_json(ws, {"action": "delay", "id": "s1", "payload": {"seconds": 0.1}})
        ack = await recv_json(ws)
        await until_terminal(ws, ack["request_id"])
        await send_json(ws, {"type": "status", "request_id": ack["request_id"]})
        status = await recv_json(ws)
    assert status["type"] == "status"
    assert status["status"] == "COMPLETED"
    assert status["result"] == {"slept": 0.1}
    assert status["progress"]["percentage"] == 100


async def test_connect_without_credentials_is_unauthorized(server: Server) -> None:
    for token in (None, "wrong-token"):
        async with server.connect(token) as ws:
            error = await recv_json(ws)
            assert error["error"]["code"] == "UNAUTHORIZED"
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await recv_json(ws)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008


async def test_browsers_authenticate_with_a_query_token(server: Server) -> None:
    async with websockets.connect(server.ws + "?token=bob-token") as ws:
        await send_json(ws, {"action": "echo", "payload": {"who": "bob"}})
        assert (await recv_json(ws))["success"] is True


async def test_identity_is_never_taken_from_the_message(server: Server) -> None:
    async with server.connect("alice-token") as ws:
        await send_json(
            ws,
            {
                "action": "delay",
                "id": "m1",
                "payload": {"seconds": 0},
                "metadata": {"user": "bob", "tenant": "x"},
            },
        )
        ack = await recv_json(ws)
        await until_terminal(ws, ack["request_id"])
    current = await server.service.requests.get(ack["request_id"])
    assert current is not None
    assert (current.record.user, current.record.tenant) == ("alice", "acme")


async def test_handler_permission_is_forbidden_without_the_role(server_factory: ServerFactory) -> None:
    router = Router()

    @router.handler("secret", permission="reports")
    async def secret(payload: dict[str, int]) -> str:
        return "ok"

    server = await server_factory(router=router)
    async with server.connect("alice-token") as ws:
        await send_json(ws, {"action": "secret"})
        assert (await recv_json(ws))["error"]["code"] == "FORBIDDEN"
    async with server.connect("reporter-token") as ws:
        await send_json(ws, {"action": "secret"})
        assert (await recv_json(ws))["data"] == "ok"
    async with server.connect("root-token") as ws:
        await send_json(ws, {"action": "secret"})
        assert (await recv_json(ws))["data"] == "ok"


async def test_a_repeated_id_returns_the_first_request_and_never_runs_it_twice(
    server_factory: ServerFactory,
) -> None:
    runs = []
    router = Router()

    @router.handler("count", estimated_duration=float("inf"))
    async def count(payload: dict[str, int]) -> int:
        runs.append(payload)
        return len(runs)

    server = await server_factory(router=router)
    async with server.connect() as ws:
        await send_json(ws, {"action": "count", "id": "once", "payload": {"n": 1}})
        first = await recv_json(ws)
        events = await until_terminal(ws, first["request_id"])
        assert events[-1]["result"] == 1
        await send_json(ws, {"action": "count", "id": "once", "payload": {"n": 1}})
        again = await recv_json(ws)
        assert again["type"] == "acknowledgment"
        assert again["request_id"] == first["request_id"]
        replayed = await until_terminal(ws, first["request_id"])
        await send_json(ws, {"action": "count", "id": "once", "payload": {"n": 2}})
        conflict = await recv_json(ws)
    assert replayed[-1]["result"] == 1
    assert conflict["error"]["code"] == "DUPLICATE_REQUEST"
    assert runs == [{"n": 1}]


async def test_repeated_sync_request_answers_from_the_stored_response(server_factory: ServerFactory) -> None:
    runs = []
    router = Router()

    @router.handler("stamp")
    async def stamp(payload: dict[str, int]) -> int:
        runs.append(1)
        return len(runs)

    server = await server_factory(router=router)
    async with server.connect() as ws:
        for _ in range(3):
            await send_json(ws, {"action": "stamp", "id": "same"})
            assert (await recv_json(ws))["data"] == 1
    assert runs == [1]


async def test_sync_handler_that_overruns_is_promoted_to_async(server_factory: ServerFactory) -> None:
    router = Router()

    @router.handler("slowish", estimated_duration=0.1)
    async def slowish(payload: dict[str, float], progress: ProgressReporter) -> str:
        await progress.report(10, "started")
        await asyncio.sleep(payload["seconds"])
        await progress.report(90, "almost")
        return "done"

    server = await server_factory(router=router, sync_threshold=1.0, sync_deadline=0.2)
    async with server.connect() as ws:
        await send_json(ws, {"action": "slowish", "payload": {"seconds": 0.01}})
        quick = await recv_json(ws)
        assert quick["type"] == "response" and quick["data"] == "done"
        await send_json(ws, {"action": "slowish", "id": "p1", "payload": {"seconds": 0.6}})
        ack = await recv_json(ws)
        assert ack["type"] == "acknowledgment" and ack["id"] == "p1"
        events = await until_terminal(ws, ack["request_id"])
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[0]["type"] == "progress" and events[0]["percentage"] == 10
    assert events[-1]["type"] == "complete" and events[-1]["result"] == "done"
    record = await server.service.requests.get(ack["request_id"])
    assert record is not None and record.record.status == "COMPLETED" and record.record.attempts == 1


async def test_handler_failure_is_an_error_event_with_processing_failed(
    server_factory: ServerFactory,
) -> None:
    router = Router()

    @router.handler("boom", estimated_duration=60)
    async def boom(payload: dict[str, int]) -> None:
        raise KeyError("missing thing")

    @router.handler("quick_boom")
    async def quick_boom(payload: dict[str, int]) -> None:
        raise ValueError("bad value")

    server = await server_factory(router=router)
    async with server.connect() as ws:
        await send_json(ws, {"action": "boom", "id": "b1"})
        ack = await recv_json(ws)
        (error,) = await until_terminal(ws, ack["request_id"])
        await send_json(ws, {"action": "quick_boom", "id": "b2"})
        response = await recv_json(ws)
    assert error["type"] == "error" and error["seq"] == 1
    assert error["error"]["code"] == "PROCESSING_FAILED"
    assert "missing thing" in error["error"]["message"]
    assert response["type"] == "response" and response["success"] is False
    assert response["error"]["code"] == "PROCESSING_FAILED"


async def test_rate_limit(server_factory: ServerFactory) -> None:
    server = await server_factory(rate_limit=1.0, rate_burst=3)
    async with server.connect() as ws:
        for _ in range(5):
            await send_json(ws, {"type": "ping"})
        replies = [await recv_json(ws) for _ in range(5)]
    kinds = [r["type"] for r in replies]
    assert kinds.count("pong") == 3
    limited = [r for r in replies if r["type"] == "error"]
    assert len(limited) == 2 and limited[0]["error"]["code"] == "RATE_LIMITED"
    assert limited[0]["error"]["retry_after"] > 0


async def test_idle_connections_are_closed(server_factory: ServerFactory) -> None:
    server = await server_factory(idle_timeout=0.3)
    async with server.connect() as ws:
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await recv_json(ws, within=3)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1000


class WireErrorBody(msgspec.Struct):
    code: str
    message: str
    retryable: bool


class WireMessage(msgspec.Struct):
    type: str
    request_id: str | None = None
    seq: int | None = None
    error: WireErrorBody | None = None


async def test_messages_are_valid_protocol_structs(server: Server) -> None:
    """Every message kind decodes as the documented shape (msgspec checks the types)."""
    async with server.connect() as ws:
        await send_json(ws, {"action": "delay", "id": "z", "payload": {"seconds": 0.1}})
        ack = await recv_json(ws)
        messages = [ack, *await until_terminal(ws, ack["request_id"])]
        await ws.send("[]")
        messages.append(await recv_json(ws))
    for msg in messages:
        msgspec.convert(msg, WireMessage)
    assert json.dumps(messages)


async def test_subscribe_sends_every_event_after_after_seq_even_those_already_sent(server: Server) -> None:
    """Another connection of the user got events of the request unasked; its subscribe still gets
    every event after ``after_seq``, in order, then the live ones."""
    async with server.connect() as one, server.connect() as two:
        await send_json(one, {"action": "delay", "id": "seen", "payload": {"seconds": 0.6, "step": 0.1}})
        rid = (await recv_json(one))["request_id"]
        unasked = [await recv_json(two), await recv_json(two)]
        assert [(m["type"], m["seq"]) for m in unasked] == [("progress", 1), ("progress", 2)]
        await send_json(two, {"type": "subscribe", "request_id": rid, "after_seq": 0})
        while (msg := await recv_json(two))["type"] != "subscribed":
            assert msg["type"] == "progress"  # sent before the subscribe was read
        events = await until_terminal(two, rid)
    assert [m["seq"] for m in events] == list(range(1, len(events) + 1))
    assert events[-1]["type"] == "complete"


async def test_disconnect_policy_cancel_stops_the_connections_requests(server_factory: ServerFactory) -> None:
    server = await server_factory(disconnect_policy="cancel")
    async with server.connect() as ws:
        await send_json(ws, {"action": "delay", "id": "bye", "payload": {"seconds": 30, "step": 0.1}})
        rid = (await recv_json(ws))["request_id"]
        await recv_json(ws)
    for _ in range(100):
        current = await server.service.requests.get(rid)
        if current is not None and current.record.status == "CANCELLED":
            break
        await asyncio.sleep(0.05)
    assert current is not None and current.record.status == "CANCELLED"


async def test_by_default_a_disconnect_leaves_the_job_running(server: Server) -> None:
    async with server.connect() as ws:
        await send_json(ws, {"action": "delay", "id": "stay", "payload": {"seconds": 0.3, "step": 0.1}})
        rid = (await recv_json(ws))["request_id"]
    async with server.connect() as ws:
        await send_json(ws, {"type": "subscribe", "request_id": rid, "after_seq": 0})
        events = await until_terminal(ws, rid)
    assert events[-1]["type"] == "complete"


@given(st.floats(min_value=0, max_value=2**33, allow_nan=False, allow_infinity=False))
def test_event_timestamps_are_rfc3339_utc_milliseconds(ts: float) -> None:
    expected = datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    assert timestamp(ts) == expected
