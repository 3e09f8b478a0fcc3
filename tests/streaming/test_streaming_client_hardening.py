"""StreamClient never leaves a caller guessing: ids known at submit, Prism errors, no endless waits."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator

import pytest
import websockets
from streaming_helpers import Server, make_service, running

from prism.errors import BackendUnavailable, InvalidArgument, PrismError, Timeout
from prism.streaming.client import RequestError, StreamClient
from prism.testing.servers import free_port


async def test_submit_returns_a_handle_whose_request_id_is_known(server: Server) -> None:
    async with StreamClient(server.http, token="alice-token") as client:
        queued = await client.submit("delay", {"seconds": 0.2, "step": 0.1})
        assert queued.request_id is not None and queued.request_id.startswith("r")
        # Usable at once, with no wait on ``acknowledged``.
        status = await client.status(queued.request_id)
        assert status["request_id"] == queued.request_id
        assert status["status"] in ("PENDING", "PROCESSING", "COMPLETED")
        quick = await client.submit("echo", {"x": 1})
        assert quick.request_id is not None and quick.request_id.startswith("r")
        assert await quick.result(timeout=5) == {"x": 1}
        assert await queued.result(timeout=10) == {"slept": 0.2}


async def test_a_refused_request_raises_at_submit_and_names_the_valid_actions(server: Server) -> None:
    async with StreamClient(server.http, token="alice-token") as client:
        with pytest.raises(RequestError) as refused:
            await client.submit("teleport", {})
        assert isinstance(refused.value, PrismError)
        assert refused.value.code == "INVALID_ACTION"
        assert {"delay", "echo", "generate_report"} <= set(refused.value.details["actions"])
        with pytest.raises(RequestError) as invalid:
            await client.submit("delay", {"seconds": "x"})
        assert invalid.value.code == "VALIDATION_ERROR"
        # The connection stays usable.
        assert await client.request("echo", {"ok": True}) == {"ok": True}


async def test_an_unreachable_server_raises_backend_unavailable() -> None:
    port = free_port()
    with pytest.raises(BackendUnavailable) as refused:
        async with StreamClient(f"http://127.0.0.1:{port}/v1/stream?token=s3cret-token"):
            pass
    message = str(refused.value)
    assert f"ws://127.0.0.1:{port}/v1/stream" in message and "refused" in message.lower()
    assert "s3cret-token" not in message


async def test_a_server_that_never_answers_the_handshake_times_out_as_backend_unavailable() -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # connections complete in the backlog; nothing ever answers
        port = silent.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(BackendUnavailable) as timed_out:
            async with StreamClient(f"http://127.0.0.1:{port}", connect_timeout=0.5):
                pass
    assert time.monotonic() - started < 5
    assert "connect_timeout (0.5 s)" in str(timed_out.value)
    assert isinstance(timed_out.value, Timeout)


async def test_a_handshake_refused_by_http_status_is_backend_unavailable(server: Server) -> None:
    with pytest.raises(BackendUnavailable) as refused:
        async with StreamClient(f"{server.http}/not-a-stream", token="alice-token"):
            pass
    assert "refused the WebSocket handshake with HTTP 403" in str(refused.value)


async def test_follow_status_and_cancel_without_a_request_id_fail_at_once(server: Server) -> None:
    async with StreamClient(server.http, token="alice-token") as client:
        for call in (
            lambda: client.follow(None),  # type: ignore[arg-type]
            lambda: client.status(""),
            lambda: client.cancel(None),  # type: ignore[arg-type]
            lambda: client.follow("rabc", after_seq=-1),
        ):
            with pytest.raises(InvalidArgument) as invalid:
                await asyncio.wait_for(call(), 2)
            assert "request id" in str(invalid.value) or "after_seq" in str(invalid.value)


@pytest.fixture
async def silent_server() -> AsyncIterator[str]:
    """A WebSocket server that accepts connections and never says anything."""

    async def handler(ws: websockets.ServerConnection) -> None:
        await ws.wait_closed()

    async with websockets.serve(handler, "127.0.0.1", 0) as ws_server:
        port = next(iter(ws_server.sockets)).getsockname()[1]
        yield f"ws://127.0.0.1:{port}/v1/stream"


async def test_no_wait_for_the_server_outlasts_reply_timeout(silent_server: str) -> None:
    async with StreamClient(silent_server, reply_timeout=0.3) as client:
        for call in (
            lambda: client.submit("echo", {}),
            lambda: client.follow("rsomething"),
            lambda: client.status("rsomething"),
            lambda: client.ping(),
        ):
            started = time.monotonic()
            with pytest.raises(RequestError) as timed_out:
                await asyncio.wait_for(call(), 5)
            assert timed_out.value.code == "TIMEOUT" and "reply_timeout (0.3 s)" in timed_out.value.message
            assert isinstance(timed_out.value, Timeout) and timed_out.value.retryable
            assert time.monotonic() - started < 2


async def test_calls_after_reconnecting_gave_up_fail_instead_of_waiting() -> None:
    async with running(make_service()) as server:
        client = StreamClient(
            server.http, token="alice-token", reconnect_delay=0.05, max_reconnect_attempts=1
        )
        await client.connect()
        assert await client.request("echo", {"a": 1}) == {"a": 1}
    # The server is gone: the one reconnect attempt fails and the client says so from then on.
    try:
        for _ in range(100):
            if client._reader is not None and client._reader.done():
                break
            await asyncio.sleep(0.05)
        started = time.monotonic()
        with pytest.raises(RequestError) as gone:
            await asyncio.wait_for(client.submit("echo", {"a": 2}), 5)
        assert gone.value.code == "INTERNAL_ERROR" and "reconnect attempts failed" in gone.value.message
        with pytest.raises(RequestError):
            await asyncio.wait_for(client.status("rsomething"), 5)
        assert time.monotonic() - started < 1
    finally:
        await client.close()


async def test_result_past_its_timeout_is_a_request_error_and_the_request_goes_on(server: Server) -> None:
    async with StreamClient(server.http, token="alice-token") as client:
        handle = await client.submit("delay", {"seconds": 0.6, "step": 0.1})
        with pytest.raises(RequestError) as waited:
            await handle.result(timeout=0.05)
        assert waited.value.code == "TIMEOUT" and "keeps running" in waited.value.message
        assert isinstance(waited.value, Timeout)
        assert waited.value.request_id == handle.request_id
        assert await handle.result(timeout=10) == {"slept": 0.6}


async def test_misuse_raises_invalid_argument(server: Server) -> None:
    with pytest.raises(InvalidArgument, match="a stream URL looks like"):
        StreamClient("localhost:8080")
    with pytest.raises(InvalidArgument, match="reply_timeout must be > 0"):
        StreamClient(server.http, reply_timeout=0)
    async with StreamClient(server.http, token="alice-token") as client:
        first = asyncio.create_task(client.submit("delay", {"seconds": 0.1}, id="twice"))
        await asyncio.sleep(0)
        with pytest.raises(InvalidArgument, match="already in flight"):
            await client.submit("delay", {"seconds": 0.1}, id="twice")
        assert await (await first).result(timeout=10) == {"slept": 0.1}


async def test_follow_after_an_event_not_reached_yet_still_gets_the_outcome(server: Server) -> None:
    """An ``after_seq`` past the last event counts as the last (as on the server): no event is lost."""
    async with (
        StreamClient(server.http, token="alice-token") as one,
        StreamClient(server.http, token="alice-token") as two,
    ):
        handle = await one.submit("delay", {"seconds": 0.5, "step": 0.1})
        assert handle.request_id is not None
        followed = await two.follow(handle.request_id, after_seq=100)
        assert await followed.result(timeout=10) == {"slept": 0.5}
        assert followed.seqs and followed.seqs[-1] == max(handle.seqs)
