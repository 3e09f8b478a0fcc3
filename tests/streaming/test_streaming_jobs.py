"""Workers and the request state machine: retries with backoff, dead letters, timeouts, cancel, coalescing."""

from __future__ import annotations

import asyncio
import itertools
import time

import msgspec
import pytest
from prometheus_client import REGISTRY
from streaming_helpers import ServerFactory, recv_json, send_json, until_terminal

from prism.errors import PreconditionFailed
from prism.kv.store import connect
from prism.streaming.config import parse_config
from prism.streaming.errors import Cancelled, RetryableError
from prism.streaming.handlers import ProgressReporter, Router
from prism.streaming.jobs import backoff
from prism.streaming.requests import InvalidTransition, RequestRecord, RequestStore, check_transition


def flaky_router(failures: int, calls: list[float]) -> Router:
    router = Router()

    @router.handler("flaky", estimated_duration=60, retries=3)
    async def flaky(payload: dict[str, int], progress: ProgressReporter) -> dict[str, int]:
        calls.append(time.monotonic())
        await progress.report(10 * len(calls), f"attempt {progress.attempt}")
        if len(calls) <= failures:
            raise RetryableError("upstream busy")
        return {"attempt": progress.attempt}

    @router.handler("slow", estimated_duration=60, timeout=0.3, retries=0)
    async def slow(payload: dict[str, int]) -> None:
        await asyncio.sleep(5)

    @router.handler("stubborn", estimated_duration=60)
    async def stubborn(payload: dict[str, int], progress: ProgressReporter) -> str:
        await progress.report(5, "ignoring cancels")
        await asyncio.Event().wait()
        return "never"

    return router


async def test_retryable_failures_are_retried_with_backoff_then_complete(
    server_factory: ServerFactory,
) -> None:
    calls: list[float] = []
    server = await server_factory(router=flaky_router(2, calls), retry_backoff=0.1, retry_jitter=0.0)
    async with server.connect() as ws:
        await send_json(ws, {"action": "flaky", "id": "f"})
        ack = await recv_json(ws)
        events = await until_terminal(ws, ack["request_id"])
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[-1]["result"] == {"attempt": 3}
    retries = [e for e in events if (e.get("metadata") or {}).get("status") == "RETRYING"]
    assert [r["metadata"]["attempt"] for r in retries] == [1, 2]
    # Exponential: the second wait is about twice the first.
    gaps = [b - a for a, b in itertools.pairwise(calls)]
    assert gaps[0] >= 0.09 and gaps[1] >= 0.19
    percentages = [e["percentage"] for e in events if e["type"] == "progress"]
    assert percentages == sorted(percentages)
    record = (await server.service.requests.get(ack["request_id"])).record
    assert (record.status, record.attempts) == ("COMPLETED", 3)


def _sample(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


async def test_after_max_attempts_the_request_is_dead_lettered(server_factory: ServerFactory) -> None:
    calls: list[float] = []
    server = await server_factory(router=flaky_router(10, calls))
    dead_before = _sample("prism_streaming_dead_letters_total")
    delivered_before = _sample("prism_streaming_delivery_seconds_count")
    async with server.connect() as ws:
        await send_json(ws, {"action": "flaky", "id": "dead"})
        ack = await recv_json(ws)
        events = await until_terminal(ws, ack["request_id"])
    error = events[-1]
    assert error["type"] == "error"
    assert "gave up after 4 attempts" in error["error"]["message"]
    assert "upstream busy" in error["error"]["message"]
    assert len(calls) == 4
    root = server.service
    from prism.streaming.auth import Identity

    dead, _ = await root.queries.dead_letters(
        Identity("root", "acme", frozenset({"admin"})), limit=10, page_token=None
    )
    assert [r.request_id for r in dead] == [ack["request_id"]]
    assert dead[0].status == "FAILED" and dead[0].error is not None
    assert _sample("prism_streaming_dead_letters_total") == dead_before + 1
    # Each live event sent to the socket was timed from its timestamp.
    assert _sample("prism_streaming_delivery_seconds_count") >= delivered_before + len(events)


async def test_the_queue_depth_is_sampled_into_a_gauge(server_factory: ServerFactory) -> None:
    server = await server_factory(router=flaky_router(0, []), run_workers=False, metrics_interval=0.05)
    async with server.connect() as ws:
        for n in range(3):
            await send_json(ws, {"action": "flaky", "id": f"q{n}"})
            assert (await recv_json(ws))["type"] == "acknowledgment"
    deadline = time.monotonic() + 5
    while _sample("prism_streaming_queue_depth") != 3:
        assert time.monotonic() < deadline, "the queue depth gauge never showed the 3 queued requests"
        await asyncio.sleep(0.05)


async def test_a_handler_past_its_timeout_fails_with_timeout(server_factory: ServerFactory) -> None:
    server = await server_factory(router=flaky_router(0, []))
    async with server.connect() as ws:
        await send_json(ws, {"action": "slow", "id": "t"})
        ack = await recv_json(ws)
        (error,) = await until_terminal(ws, ack["request_id"])
    assert error["error"]["code"] == "TIMEOUT"


async def test_cancel_reaches_the_handler_and_ends_with_cancelled(server_factory: ServerFactory) -> None:
    server = await server_factory(router=flaky_router(0, []))
    async with server.connect() as ws:
        await send_json(ws, {"action": "delay", "id": "c", "payload": {"seconds": 30, "step": 0.05}})
        ack = await recv_json(ws)
        rid = ack["request_id"]
        first = await recv_json(ws)
        assert first["type"] == "progress"
        await send_json(ws, {"type": "cancel", "request_id": rid})
        seen = [first, *await until_terminal(ws, rid)]
        status = await recv_json(ws)
        # The stubborn handler ignores the cancel; it is interrupted after the grace period.
        await send_json(ws, {"action": "stubborn", "id": "s"})
        stubborn = await recv_json(ws)
        await recv_json(ws)
        await send_json(ws, {"type": "cancel", "request_id": stubborn["request_id"]})
        await until_terminal(ws, stubborn["request_id"])
    events = [m for m in seen if m.get("seq") is not None]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[-1]["type"] == "error" and events[-1]["error"]["code"] == "CANCELLED"
    assert status["type"] == "status" and status["status"] == "CANCELLED"
    await asyncio.sleep(0.8)
    assert server.service.rt.running == {}


async def test_backoff_grows_exponentially_within_jitter_and_cap() -> None:
    config = parse_config({"retry_backoff": 1.0, "retry_backoff_max": 5.0, "retry_jitter": 0.5})
    for attempt, base in ((1, 1.0), (2, 2.0), (3, 4.0), (4, 5.0), (9, 5.0)):
        delays = [backoff(config, attempt) for _ in range(50)]
        assert all(base * 0.5 <= d <= base * 1.5 for d in delays)
        assert len(set(delays)) > 1
    assert backoff(config, 1, retry_after=30) == 30


def test_state_machine_edges() -> None:
    allowed = [
        ("PENDING", "PROCESSING"), ("PENDING", "CANCELLED"), ("PROCESSING", "COMPLETED"),
        ("PROCESSING", "RETRYING"), ("RETRYING", "PROCESSING"), ("PROCESSING", "FAILED"),
    ]  # fmt: skip
    for old, new in allowed:
        check_transition(old, new)
    for old, new in (
        ("COMPLETED", "PROCESSING"),
        ("CANCELLED", "COMPLETED"),
        ("PENDING", "COMPLETED"),
        ("FAILED", "RETRYING"),
        ("RETRYING", "COMPLETED"),
    ):
        with pytest.raises(InvalidTransition):
            check_transition(old, new)


async def test_conditional_writes_let_only_one_completion_win() -> None:
    config = parse_config({})
    async with connect("memory://") as store:
        requests = RequestStore(store, config)
        record = RequestRecord(
            request_id="r1", action="x", payload=msgspec.Raw(b"{}"), user="u", tenant="t", status="PROCESSING"
        )
        current = await requests.create(record)
        done = msgspec.structs.replace(record, status="COMPLETED", result=1)
        cancel = msgspec.structs.replace(record, status="CANCELLED")
        outcomes = await asyncio.gather(
            requests.replace(current, done), requests.replace(current, cancel), return_exceptions=True
        )
        winners = [o for o in outcomes if not isinstance(o, BaseException)]
        assert len(winners) == 1
        assert isinstance(next(o for o in outcomes if isinstance(o, BaseException)), PreconditionFailed)
        final = await requests.get("r1")
        assert final is not None and final.record.status == winners[0].record.status
        with pytest.raises(InvalidTransition):
            await requests.replace(final, msgspec.structs.replace(final.record, status="PROCESSING"))
        with pytest.raises(PreconditionFailed):
            await requests.create(record)


async def test_progress_is_coalesced_to_the_rate_keeping_the_latest_and_never_backwards() -> None:
    sent: list[tuple[float, str, float]] = []

    async def sink(pct: float, message: str, metadata: object, at: float) -> None:
        sent.append((pct, message, time.monotonic()))

    reporter = ProgressReporter("r", rate=10.0, sink=sink)
    start = time.monotonic()
    for i in range(1, 101):
        await reporter.report(i, f"step {i}")
        await asyncio.sleep(0.003)
    await reporter.report(50, "late and lower")
    await reporter.flush()
    elapsed = time.monotonic() - start
    assert sent[0][:2] == (1, "step 1")
    assert sent[-1][:2] == (100, "late and lower")
    assert len(sent) <= elapsed * 10 + 2
    assert [p for p, _, _ in sent] == sorted(p for p, _, _ in sent)
    times = [t for _, _, t in sent]
    # At most 10 in any one-second window: the 11th send is at least a second after the first.
    assert all(later - earlier >= 0.999 for earlier, later in zip(times, times[10:], strict=False))
    assert len(sent) >= 2
    with pytest.raises(ValueError):
        await reporter.report(101)
    reporter.cancel()
    with pytest.raises(Cancelled):
        await reporter.report(100)
    await reporter.close()
