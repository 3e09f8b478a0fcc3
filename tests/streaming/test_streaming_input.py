"""Bad input to streaming: undecodable frames and bodies, paths, and results that cannot be encoded.

A malformed message gets INVALID_MESSAGE (an error frame on the WebSocket, which stays
usable; a 400 problem over HTTP) and nothing is stored. A handler whose result cannot be
encoded or stored fails its request once, saying why, instead of being retried as if its
worker had died.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

import httpx
from streaming_helpers import ServerFactory, recv_json, send_json

from prism.streaming.handlers import Router

DEEP = 20_000
ALICE = {"Authorization": "Bearer alice-token"}

#: Frames and bodies that used to raise UnicodeDecodeError or RecursionError.
BAD_MESSAGES: list[tuple[bytes, str]] = [
    (b'{"action": "ec\xffho"}', "not UTF-8"),
    (b'{"action": "echo", "payload": {"name": "a\xed\xa0\x80"}}', "not UTF-8"),
    (b'{"action": "echo", "id": "\xc3("}', "not UTF-8"),
    (b"\xff", "not UTF-8"),
    (b'{"action": "echo", "payload": {"x": ' + b"[" * DEEP + b"]" * DEEP + b"}}", "nests too deeply"),
    (b'{"action": "echo", "metadata": ' + b'{"a":' * DEEP + b"1" + b"}" * DEEP + b"}", "nests too deeply"),
]


def _router() -> Router:
    router = Router()

    def deep() -> Any:
        value: Any = []
        for _ in range(DEEP):
            value = [value]
        return value

    @router.handler("deep_result", estimated_duration=math.inf)
    async def deep_result(payload: dict[str, Any]) -> Any:
        return deep()

    @router.handler("deep_result_inline")
    async def deep_result_inline(payload: dict[str, Any]) -> Any:
        return deep()

    @router.handler("surrogate_result", estimated_duration=math.inf)
    async def surrogate_result(payload: dict[str, Any]) -> Any:
        return {"name": "\ud800"}

    @router.handler("object_result", estimated_duration=math.inf)
    async def object_result(payload: dict[str, Any]) -> Any:
        return {"handle": object()}

    @router.handler("huge_result", estimated_duration=math.inf)
    async def huge_result(payload: dict[str, Any]) -> Any:
        return {"blob": "x" * (5 * 1024 * 1024)}

    @router.handler("huge_result_inline")
    async def huge_result_inline(payload: dict[str, Any]) -> Any:
        return {"blob": "x" * (5 * 1024 * 1024)}

    return router


async def test_undecodable_frames_get_invalid_message_and_the_websocket_stays_usable(
    server_factory: ServerFactory,
) -> None:
    server = await server_factory()
    async with server.connect() as ws:
        for frame, reason in BAD_MESSAGES:
            await ws.send(frame)
            reply = await recv_json(ws)
            assert reply["type"] == "error", reply
            assert reply["error"]["code"] == "INVALID_MESSAGE" and reason in reply["error"]["message"]
            await send_json(ws, {"type": "ping"})
            assert (await recv_json(ws))["type"] == "pong"
        await send_json(ws, {"action": "echo", "id": "after", "payload": {"still": "here"}})
        reply = await recv_json(ws)
        assert reply["type"] == "response" and reply["data"] == {"still": "here"}
    async with httpx.AsyncClient(base_url=server.http, headers=ALICE) as c:
        assert [r["action"] for r in (await c.get("/v1/requests")).json()["requests"]] == ["echo"]


async def test_undecodable_request_bodies_are_400_and_store_nothing(server_factory: ServerFactory) -> None:
    server = await server_factory()
    async with httpx.AsyncClient(base_url=server.http, headers=ALICE) as c:
        for body, reason in BAD_MESSAGES:
            r = await c.post("/v1/requests", content=body)
            assert r.status_code == 400, r.text
            assert r.headers["content-type"] == "application/problem+json"
            assert r.json()["code"] == "INVALID_MESSAGE" and reason in r.json()["detail"]
            assert r.headers.get("connection") != "close"
        assert (await c.get("/v1/requests")).json()["requests"] == []


async def test_percent_escapes_that_are_not_utf8_are_400(server_factory: ServerFactory) -> None:
    server = await server_factory()
    async with httpx.AsyncClient(base_url=server.http, headers=ALICE) as c:
        for method, path, escape in [
            ("GET", "/v1/requests/%FF", "%FF"),
            ("POST", "/v1/requests/r%ED%A0%80/cancel", "%ED%A0%80"),
            ("GET", "/v1/requests/%C3/events", "%C3"),
            ("GET", "/v1/requests?status=%FF", "%FF"),
        ]:
            r = await c.request(method, path)
            assert r.status_code == 400, r.text
            assert r.json()["code"] == "INVALID_MESSAGE" and escape in r.json()["detail"]


async def _terminal(c: httpx.AsyncClient, request_id: str) -> dict[str, Any]:
    for _ in range(200):
        body: dict[str, Any] = (await c.get(f"/v1/requests/{request_id}")).json()
        if body["status"] in ("COMPLETED", "FAILED", "CANCELLED"):
            return body
        await asyncio.sleep(0.05)
    raise AssertionError(f"request {request_id} did not finish: {body}")


async def test_results_that_cannot_be_encoded_or_stored_fail_the_request_once(
    server_factory: ServerFactory,
) -> None:
    server = await server_factory(router=_router(), max_attempts=3)
    async with httpx.AsyncClient(base_url=server.http, headers=ALICE) as c:
        for action, reason in [
            ("deep_result", "the handler's result is not JSON: it nests too deeply"),
            ("surrogate_result", "the handler's result is not JSON"),
            ("object_result", "the handler's result is not JSON"),
            ("huge_result", "the handler's result cannot be stored"),
        ]:
            r = await c.post("/v1/requests", json={"action": action})
            assert r.status_code == 202, r.text
            done = await _terminal(c, r.json()["request_id"])
            assert done["status"] == "FAILED" and done["attempts"] == 1, done
            assert done["error"]["code"] == "PROCESSING_FAILED" and reason in done["error"]["message"]
            assert done["error"]["retryable"] is False
    async with server.connect() as ws:
        # Inline (quick) handlers answer at once, with and without an id that stores the request.
        for message in (
            {"action": "deep_result_inline"},
            {"action": "deep_result_inline", "id": "d1"},
            {"action": "huge_result_inline", "id": "h1"},
        ):
            await send_json(ws, message)
            reply = await recv_json(ws)
            assert reply["type"] == "response" and reply["success"] is False, reply
            assert reply["error"]["code"] == "PROCESSING_FAILED"
            if "id" in message:
                async with httpx.AsyncClient(base_url=server.http, headers=ALICE) as c:
                    stored = (await c.get(f"/v1/requests/{reply['request_id']}")).json()
                    assert stored["status"] == "FAILED", stored
                    assert stored["error"]["message"] == reply["error"]["message"]
