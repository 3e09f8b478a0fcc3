"""The Python SDK: request/response, progress callbacks, errors, and reconnect-and-resume."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from streaming_helpers import Server, ServerFactory

from prism.streaming.client import ProgressUpdate, RequestError, StreamClient


async def test_request_returns_the_data_or_result_and_reports_progress(server: Server) -> None:
    updates: list[ProgressUpdate] = []
    async with StreamClient(server.http, token="alice-token") as client:
        assert await client.request("echo", {"x": 1}) == {"x": 1}
        result = await client.request(
            "generate_report",
            {"start_date": "2024-01-01", "end_date": "2024-01-14", "step_seconds": 0.05},
            on_progress=updates.append,
            timeout=10,
        )
        assert await client.ping() >= 0
    assert result["rows"] == 14 * 24 and result["url"].endswith(".pdf")
    assert [u.seq for u in updates] == list(range(1, len(updates) + 1))
    assert [u.percentage for u in updates][-1] == 100
    assert {u.message for u in updates} >= {"Querying data...", "Complete!"}


async def test_errors_raise_request_error_with_the_code(server: Server) -> None:
    async with StreamClient(server.http, token="alice-token") as client:
        with pytest.raises(RequestError) as invalid:
            await client.request("delay", {"seconds": "x"})
        assert invalid.value.code == "VALIDATION_ERROR"
        with pytest.raises(RequestError) as unknown:
            await client.request("teleport")
        assert unknown.value.code == "INVALID_ACTION"
        handle = await client.submit("delay", {"seconds": 30, "step": 0.05})
        await handle.acknowledged.wait()
        assert handle.request_id is not None
        status = await client.cancel(handle.request_id)
        assert status["status"] == "CANCELLED"
        with pytest.raises(RequestError) as cancelled:
            await handle.result(timeout=5)
        assert cancelled.value.code == "CANCELLED"
        with pytest.raises(RequestError) as missing:
            await client.status("rmissing")
        assert missing.value.code == "NOT_FOUND"


async def test_reconnect_and_resume_receive_every_seq_exactly_once(server: Server) -> None:
    async with StreamClient(server.http, token="alice-token", reconnect_delay=0.05) as client:
        handles = [
            await client.submit("delay", {"seconds": 1.5, "step": 0.05}, id=f"resume-{i}") for i in range(3)
        ]
        for handle in handles:
            await handle.acknowledged.wait()
        for _ in range(3):
            await asyncio.sleep(0.3)
            await client.drop_connection()
        results = await asyncio.gather(*(h.result(timeout=15) for h in handles))
        assert client.reconnects >= 3
    assert results == [{"slept": 1.5}] * 3
    for handle in handles:
        # Reports every 50 ms are coalesced to 10 a second; every event number arrives once, in order.
        assert handle.seqs == list(range(1, len(handle.seqs) + 1)), handle.seqs
        assert len(handle.seqs) >= 14
        record = (await server.service.requests.get(handle.request_id or "")).record  # type: ignore[union-attr]
        assert record.seq == handle.seqs[-1]


async def test_a_request_in_flight_during_a_drop_is_sent_again_and_runs_once(server: Server) -> None:
    async with StreamClient(server.http, token="alice-token", reconnect_delay=0.05) as client:
        handle = await client.submit("delay", {"seconds": 0.3, "step": 0.1}, id="drop-before-ack")
        await client.drop_connection()
        assert await handle.result(timeout=10) == {"slept": 0.3}
    listed, _ = await server.service.requests.list_for(
        "acme", "alice", status=None, limit=10, page_token=None
    )
    assert [r.client_id for r in listed] == ["drop-before-ack"]


async def test_follow_a_request_from_another_client(server: Server) -> None:
    async with (
        StreamClient(server.http, token="alice-token") as one,
        StreamClient(server.http, token="alice-token") as two,
    ):
        handle = await one.submit("delay", {"seconds": 0.5, "step": 0.1})
        await handle.acknowledged.wait()
        assert handle.request_id is not None
        followed = await two.follow(handle.request_id, after_seq=2)
        assert await followed.result(timeout=10) == {"slept": 0.5}
        assert await handle.result(timeout=10) == {"slept": 0.5}
    assert followed.seqs == list(range(3, 7))


async def test_follow_gets_every_event_after_after_seq_even_those_the_connection_already_got(
    server: Server,
) -> None:
    """A connection gets every event of its user's requests; the ones that came before ``follow()``
    asked for the request are sent again, so none is lost and each reaches on_progress once, in order."""
    async with (
        StreamClient(server.http, token="alice-token") as one,
        StreamClient(server.http, token="alice-token") as two,
    ):
        third = asyncio.Event()

        def on_progress(update: ProgressUpdate) -> None:
            if update.seq >= 3:
                third.set()

        handle = await one.submit("delay", {"seconds": 1.0, "step": 0.1}, on_progress=on_progress)
        assert handle.request_id is not None
        # Events 2 and 3 reach connection two too, which follows nothing yet.
        await asyncio.wait_for(third.wait(), 10)
        await asyncio.sleep(0.05)
        updates: list[ProgressUpdate] = []
        followed = await two.follow(handle.request_id, after_seq=1, on_progress=updates.append)
        assert await followed.result(timeout=10) == {"slept": 1.0}
        assert await handle.result(timeout=10) == {"slept": 1.0}
    assert followed.seqs == list(range(2, max(handle.seqs) + 1))
    assert [u.seq for u in updates] == followed.seqs[:-1]


async def test_lost_publishes_are_recovered_from_the_store(
    server_factory: ServerFactory, redis_url: str
) -> None:
    """Redis pub/sub drops messages while its connection is down; followers still see every event once."""
    import redis.asyncio as aioredis

    # progress_rate above the handler's ten reports a second: with the rate equal to it, a report
    # that comes a little early under load is coalesced with the next, and a job has fewer events.
    server = await server_factory(redis_url, resync_interval=0.3, progress_rate=100)
    admin: Any = aioredis.from_url(redis_url)
    try:
        async with StreamClient(server.http, token="alice-token") as client:
            handles = [await client.submit("delay", {"seconds": 1.2, "step": 0.1}) for _ in range(3)]
            for _ in range(12):
                await admin.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
                await asyncio.sleep(0.1)
            results = await asyncio.gather(*(h.result(timeout=20) for h in handles))
    finally:
        await admin.aclose()
    assert results == [{"slept": 1.2}] * 3
    for handle in handles:
        stored = await server.service.requests.get(handle.request_id or "")
        assert stored is not None and stored.record.seq == 13
        assert handle.seqs == list(range(1, 14))
