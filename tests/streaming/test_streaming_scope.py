"""Delivery scope: a connection gets the events of the requests it asked about, and only those.

Also the submission burst: every submission is either accepted, or refused and never
run, or answered with an error that says its outcome is unknown.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import pytest
import websockets
from streaming_helpers import FAST, Server, ServerFactory, recv_json, send_json, until_terminal

from prism.streaming.requests import RequestStatus, new_request_id

DELAY = {"seconds": 0.3, "step": 0.1}


async def _submit(ws: Any, client_id: str, payload: dict[str, Any] | None = None) -> str:
    await send_json(ws, {"action": "delay", "payload": payload or DELAY, "id": client_id})
    while True:
        msg = await recv_json(ws)
        if msg["type"] == "acknowledgment" and msg.get("id") == client_id:
            return str(msg["request_id"])


async def _drain(ws: Any, seconds: float) -> list[dict[str, Any]]:
    """Every message that arrives within ``seconds``."""
    out: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while (left := end - loop.time()) > 0:
        try:
            out.append(json.loads(await asyncio.wait_for(ws.recv(), left)))
        except TimeoutError:
            break
    return out


async def test_a_connection_does_not_get_the_events_of_another_connection_of_the_same_user(
    server: Server,
) -> None:
    async with server.connect() as first, server.connect() as second:
        mine = await _submit(first, "scope-1")
        theirs = await _submit(second, "scope-2")
        events = await until_terminal(first, mine)
        assert events[-1]["type"] == "complete"
        assert [m for m in await _drain(first, 0.5) if m.get("request_id") == theirs] == []
        other = await until_terminal(second, theirs)
        assert other[-1]["type"] == "complete"
        assert [m for m in await _drain(second, 0.2) if m.get("request_id") == mine] == []


async def test_a_subscribe_routes_another_connections_request_here(server: Server) -> None:
    async with server.connect() as first, server.connect() as second:
        rid = await _submit(first, "sub-1", {"seconds": 0.5, "step": 0.1})
        await send_json(second, {"type": "subscribe", "request_id": rid})
        events = await until_terminal(second, rid)
        assert events[0]["type"] == "subscribed"
        assert events[-1]["type"] == "complete"
        seqs = [m["seq"] for m in events if m.get("seq") is not None]
        assert seqs == list(range(1, len(seqs) + 1))


async def test_the_feed_is_an_explicit_opt_in_that_gets_every_request_of_the_user(
    server_factory: ServerFactory,
) -> None:
    server = await server_factory(feed_connections=1)
    async with server.connect() as dashboard, server.connect() as worker, server.connect() as third:
        await send_json(dashboard, {"type": "feed"})
        reply = await recv_json(dashboard)
        assert reply == {"type": "feed", "connections": 1, "limit": 1}
        await send_json(third, {"type": "feed"})
        refused = await recv_json(third)
        assert refused["type"] == "error"
        assert refused["error"]["code"] == "FORBIDDEN"
        rid = await _submit(worker, "feed-1")
        events = await until_terminal(dashboard, rid)
        assert events[-1]["type"] == "complete"
        assert [m for m in await _drain(third, 0.3) if m.get("request_id") == rid] == []


async def test_the_feed_can_be_turned_off(server_factory: ServerFactory) -> None:
    server = await server_factory(feed_connections=0)
    async with server.connect() as ws:
        await send_json(ws, {"type": "feed"})
        reply = await recv_json(ws)
        assert reply["type"] == "error"
        assert reply["error"]["code"] == "FORBIDDEN"


BURST = 1000
CONNECTIONS = 10


@pytest.mark.parametrize("store", ["redis_url", "postgres_url", "nats_url"])
async def test_a_burst_of_submissions_never_runs_a_request_answered_with_an_error(
    server_factory: ServerFactory, store: str, request: pytest.FixtureRequest
) -> None:
    # 1,000 submissions of one principal within a second, over ten connections.
    url = request.getfixturevalue(store)
    server = await server_factory(
        url, run_workers=True, rate_burst=BURST, namespace_prefix="burst", queue_name="burst"
    )
    answers: dict[str, dict[str, Any]] = {}

    async def one(index: int, ws: Any) -> None:
        ids = [f"burst-{index}-{j}" for j in range(BURST // CONNECTIONS)]
        for client_id in ids:
            await send_json(ws, {"action": "delay", "payload": {"seconds": 0.05}, "id": client_id})
        while not all(i in answers for i in ids):
            msg = await recv_json(ws, 60)
            if msg["type"] in ("acknowledgment", "error") and msg.get("id") in ids:
                answers.setdefault(msg["id"], msg)

    async def connected(stack: contextlib.AsyncExitStack) -> Any:
        # A connection whose own record cannot be written is refused with 1013: open another.
        for _ in range(50):
            ws = await stack.enter_async_context(server.connect())
            await send_json(ws, {"type": "ping"})
            try:
                if (await recv_json(ws))["type"] == "pong":
                    return ws
            except websockets.ConnectionClosed:
                pass
        raise AssertionError("no connection could be opened")

    async with contextlib.AsyncExitStack() as stack:
        sockets = [await connected(stack) for _ in range(CONNECTIONS)]
        await asyncio.gather(*(one(i, ws) for i, ws in enumerate(sockets)))
    assert len(answers) == BURST
    await asyncio.sleep(2.0)  # let what was accepted run
    requests = server.service.requests
    ran_after_error = []
    for client_id, answer in answers.items():
        if answer["type"] != "error":
            continue
        if (answer["error"].get("details") or {}).get("status") == "unknown":
            continue  # the answer says it may be running
        assert answer["error"]["code"] in ("INTERNAL_ERROR", "RATE_LIMITED")
        stored = await requests.get(new_request_id("acme", "alice", client_id))
        if stored is not None and stored.record.status != RequestStatus.FAILED:
            ran_after_error.append((client_id, stored.record.status))
        elif stored is not None:
            assert stored.record.attempts == 0, client_id
    assert ran_after_error == []


async def _draft_record(server: Server, client_id: str) -> Any:
    from prism.streaming.auth import Identity
    from prism.streaming.commands import Draft

    service = server.service
    principal = Identity("alice", "acme")
    spec = service.access.handler_for(principal, "delay")
    rid = new_request_id("acme", "alice", client_id)
    draft = Draft(principal, spec, rid, b'{"seconds": 0.05}', client_id, None)
    return draft.record(service.config.max_attempts, queued=True)


async def test_a_record_write_without_an_answer_that_landed_is_accepted(
    server_factory: ServerFactory,
) -> None:
    """The first write was applied although its caller heard nothing: the submission stands."""
    from prism.errors import BackendTimeout

    server = await server_factory()
    record = await _draft_record(server, "landed")
    await server.service.requests.create(record)
    submission = await server.service.commands._settle(record, BackendTimeout("no answer"))
    assert submission.created and submission.record.status == RequestStatus.PENDING


async def test_a_record_write_without_an_answer_that_did_not_land_never_runs(
    server_factory: ServerFactory,
) -> None:
    """Settled as never stored: a late arrival of the first write is refused, no worker runs it,
    and a repeat of the client id submits it afresh."""
    from prism.errors import BackendTimeout, PreconditionFailed
    from prism.streaming.errors import StreamError
    from prism.streaming.jobs import QueueMessage, encode_message

    server = await server_factory()
    service = server.service
    record = await _draft_record(server, "lost")
    await service.queue.enqueue(encode_message(QueueMessage(record.request_id, 0.0)))
    with pytest.raises(StreamError) as refused:
        await service.commands._settle(record, BackendTimeout("no answer"))
    assert refused.value.code == "INTERNAL_ERROR" and refused.value.retryable
    with pytest.raises(PreconditionFailed):
        await service.requests.create(record)  # the first write, arriving late
    await asyncio.sleep(1.0)  # the queued message reaches a worker, which drops it
    stored = await service.requests.get(record.request_id)
    assert stored is not None and stored.record.status == RequestStatus.FAILED
    assert stored.record.attempts == 0
    async with server.connect() as ws:
        await send_json(ws, {"action": "delay", "payload": {"seconds": 0.05}, "id": "lost"})
        ack = await recv_json(ws)
        assert ack["type"] == "acknowledgment" and ack["message"] == "request queued"
        events = await until_terminal(ws, record.request_id)
    assert events[-1]["type"] == "complete"


async def test_anonymous_callers_of_the_gateway_get_no_feed_and_only_their_own_requests() -> None:
    """With auth off every caller is the same anonymous principal: each connection still gets
    the events of its own requests only, and the feed is refused."""
    import uvicorn

    from prism.gateway import create_app, parse_config
    from prism.gateway.app import load_extensions
    from prism.streaming.app import UVICORN_OPTIONS
    from prism.testing.servers import free_port

    config = parse_config(
        {
            "stores": {"main": "memory://anonymous-scope"},
            "namespaces": [{"name": "default", "store": "main"}],
            "streaming": {**FAST},
        }
    )
    (extension,) = load_extensions(config)
    app = create_app(
        config,
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
    url = f"ws://127.0.0.1:{port}/v1/stream"
    try:
        async with websockets.connect(url) as first, websockets.connect(url) as second:
            await send_json(first, {"type": "feed"})
            refused = await recv_json(first)
            assert refused["type"] == "error" and refused["error"]["code"] == "FORBIDDEN"
            mine = await _submit(first, "anon-1")
            theirs = await _submit(second, "anon-2")
            assert (await until_terminal(first, mine))[-1]["type"] == "complete"
            assert (await until_terminal(second, theirs))[-1]["type"] == "complete"
            assert [m for m in await _drain(first, 0.3) if m.get("request_id") == theirs] == []
    finally:
        server.should_exit = True
        await task


async def test_a_settling_write_that_landed_without_an_answer_still_settles(
    server_factory: ServerFactory,
) -> None:
    from prism.errors import BackendTimeout
    from prism.streaming.errors import StreamError

    server = await server_factory()
    record = await _draft_record(server, "settled-twice")
    with pytest.raises(StreamError):
        await server.service.commands._settle(record, BackendTimeout("no answer"))
    with pytest.raises(StreamError) as again:
        await server.service.commands._settle(record, BackendTimeout("no answer"))
    assert again.value.retryable and again.value.details is None
