"""``prism worker`` and ``python -m prism.streaming`` stop within ``shutdown_timeout``, also during an outage.

The exit deadlines asserted here are the behaviour under test (a process must be gone
within its bound), not a speed measurement. The outage scenario runs 150 jobs per
engine rather than 1,000 so the three engines fit in CI time on 2 cores; the jobs are
real (each a ``delay`` handler holding its lease when the store goes away).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from prism.testing.servers import free_port
from prism.testing.servers._base import ServerUnavailable, wait_for_port

PRISM = str(Path(sys.executable).parent / "prism")
JOBS = 150
#: Seconds each job runs: long enough to be running when the store goes away.
DELAY = 12.0
SHUTDOWN_TIMEOUT = 4.0
#: Slack on top of shutdown_timeout for the process to be reaped and seen as gone.
SLACK = 1.0
WORKER_OPTIONS = [
    "-o", "demo_handlers=true", "-o", "lease_seconds=3", "-o", "heartbeat_interval=1",
    "-o", "poll_interval=0.2", "-o", f"shutdown_timeout={SHUTDOWN_TIMEOUT}", "-o", "cancel_grace=1",
]  # fmt: skip
HEADERS = {"Authorization": "Bearer alice-token"}


def _local_server(engine: str) -> Any:
    """A private server of ``engine`` this test may stop and start again (skips when unavailable)."""
    try:
        if engine == "redis":
            from prism.testing.servers.redis import RedisServer

            return RedisServer.local()
        if engine == "postgresql":
            from prism.testing.servers.postgres import PostgresServer

            return PostgresServer.launch()
        from prism.testing.servers.nats import NatsServer

        return NatsServer.local()
    except ServerUnavailable as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"no local {engine} server: {exc}")


@pytest.fixture(params=["redis", "postgresql", "nats"])
def store_server(request: pytest.FixtureRequest) -> Iterator[Any]:
    server = _local_server(request.param)
    try:
        yield server
    finally:
        server.close()


async def _spawn(*argv: str, log: Path | None = None) -> asyncio.subprocess.Process:
    """A process whose stderr is piped (read when it exits), or written to ``log`` (never blocks it)."""
    if log is None:
        stderr: Any = asyncio.subprocess.PIPE
    else:
        stderr = log.open("ab")
    try:
        return await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=stderr
        )
    finally:
        if log is not None:
            stderr.close()


async def _gateway(url: str, port: int, log: Path | None = None) -> asyncio.subprocess.Process:
    process = await _spawn(
        sys.executable, "-m", "prism.streaming", "--store", url, "--port", str(port),
        "--token", "alice-token=alice", *WORKER_OPTIONS, "-o", "run_workers=false", log=log,
    )  # fmt: skip
    await asyncio.to_thread(wait_for_port, port, 30.0)
    return process


async def _worker(url: str, log: Path | None = None) -> asyncio.subprocess.Process:
    return await _spawn(
        PRISM, "worker", "--store", url, "--concurrency", str(JOBS + 50), *WORKER_OPTIONS, log=log
    )


async def _exit_within(process: asyncio.subprocess.Process, bound: float) -> tuple[int, str, float]:
    """(status, stderr, seconds to exit) of a process that was just signalled; kills it past ``bound``."""
    started = time.monotonic()
    try:
        _, err = await asyncio.wait_for(process.communicate(), bound + 30)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    took = time.monotonic() - started
    assert process.returncode is not None
    return process.returncode, err.decode(errors="replace"), took


async def _statuses(http: httpx.AsyncClient, ids: list[str]) -> list[dict[str, Any]]:
    limit = asyncio.Semaphore(20)

    async def one(rid: str) -> dict[str, Any]:
        async with limit:
            body: dict[str, Any] = (await http.get(f"/v1/requests/{rid}")).json()
            return body

    return list(await asyncio.gather(*(one(rid) for rid in ids)))


async def test_every_process_stops_in_time_during_an_outage_and_the_jobs_complete_once_later(
    store_server: Any, tmp_path: Path
) -> None:
    url = store_server.url
    port = free_port()
    gateway = await _gateway(url, port)
    worker = await _worker(url)
    second: asyncio.subprocess.Process | None = None
    try:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", headers=HEADERS, timeout=30
        ) as http:
            limit = asyncio.Semaphore(20)

            async def submit() -> str:
                async with limit:
                    response = await http.post(
                        "/v1/requests", json={"action": "delay", "payload": {"seconds": DELAY, "step": 0.5}}
                    )
                    assert response.status_code == 202, response.text
                    rid: str = response.json()["request_id"]
                    return rid

            ids = list(await asyncio.gather(*(submit() for _ in range(JOBS))))
            for _ in range(600):
                bodies = await _statuses(http, ids)
                if all(b["status"] != "PENDING" for b in bodies):
                    break
                await asyncio.sleep(0.1)
            # On a loaded machine a few may have finished already; the rest are in flight.
            in_flight = sum(b["status"] == "PROCESSING" for b in bodies)
            assert in_flight >= JOBS // 2, sorted(b["status"] for b in bodies)
            # A rollout during an outage: the store, the gateway and the worker are told to stop at once.
            await asyncio.to_thread(store_server.stop)
            gateway.send_signal(signal.SIGTERM)
            worker.send_signal(signal.SIGTERM)
            (w_code, w_err, w_took), (g_code, g_err, g_took) = await asyncio.gather(
                _exit_within(worker, SHUTDOWN_TIMEOUT + SLACK),
                _exit_within(gateway, SHUTDOWN_TIMEOUT + SLACK),
            )
        assert w_took <= SHUTDOWN_TIMEOUT + SLACK, w_err
        assert g_took <= SHUTDOWN_TIMEOUT + SLACK and g_code in (0, 4), g_err
        # The last line counts the jobs it was running: finished, released or abandoned, and the
        # exit status says whether any was abandoned (or 4: it ran out of time, and says so).
        last = w_err.rstrip().splitlines()[-1]
        handed_back: int | None = None
        if "stopped: " in last:
            tally = last.split("stopped: ")[1].replace(",", "").split()
            finished, released, abandoned = (int(word) for word in tally if word.isdigit())
            assert in_flight // 2 <= finished + released + abandoned <= in_flight, last
            assert w_code == (3 if abandoned else 0), last
            handed_back = released + abandoned
        else:
            assert w_code == 4 and "did not stop within shutdown_timeout=4 s" in last, last
        # The store comes back; another worker runs every job to completion, each exactly once more.
        await asyncio.to_thread(store_server.start)
        gateway = await _gateway(url, port, log=tmp_path / "gateway.log")
        second = await _worker(url, log=tmp_path / "worker.log")
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", headers=HEADERS, timeout=30
        ) as http:
            for _ in range(1200):
                try:
                    bodies = await _statuses(http, ids)
                except httpx.TransportError:
                    await asyncio.sleep(0.2)  # the gateway reconnecting to the store it just got back
                    continue
                if all(b["status"] == "COMPLETED" for b in bodies):
                    break
                await asyncio.sleep(0.2)
        assert all(b["status"] == "COMPLETED" for b in bodies), sorted({b["status"] for b in bodies})
        assert all(b["result"] == {"slept": DELAY} for b in bodies)
        # A job handed back ran once on the stopped worker and once on the next; none ran twice there.
        attempts = sorted(b["attempts"] for b in bodies)
        assert set(attempts) <= {1, 2}, attempts
        if handed_back is not None:
            assert attempts.count(2) == handed_back, (attempts, last)
    finally:
        for process in (gateway, worker, second):
            if process is not None and process.returncode is None:
                process.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(process.communicate(), SHUTDOWN_TIMEOUT + 10)
                except TimeoutError:
                    process.kill()
                    await process.wait()


async def test_a_second_signal_during_a_slow_drain_exits_at_once(redis_url: str) -> None:
    options = ["-o", "demo_handlers=true", "-o", "shutdown_timeout=60", "-o", "cancel_grace=50"]
    for _ in range(3):
        worker = await _spawn(PRISM, "worker", "--store", redis_url, "--concurrency", "1", *options)
        try:
            port = free_port()
            gateway = await _gateway(redis_url, port)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=HEADERS) as http:
                rid = (
                    await http.post("/v1/requests", json={"action": "delay", "payload": {"seconds": 40}})
                ).json()["request_id"]
                for _ in range(300):
                    if (await http.get(f"/v1/requests/{rid}")).json()["status"] == "PROCESSING":
                        break
                    await asyncio.sleep(0.05)
            gateway.send_signal(signal.SIGTERM)
            await gateway.wait()
            # The first signal starts a drain that would wait cancel_grace (50 s) for the job.
            worker.send_signal(signal.SIGTERM)
            await asyncio.sleep(1.0)
            draining = worker.returncode is None
            worker.send_signal(signal.SIGTERM)
            code, err, took = await _exit_within(worker, 2.0)
        finally:
            if worker.returncode is None:
                worker.kill()
                await worker.wait()
        last = err.rstrip().splitlines()[-1]
        assert draining, last
        assert code == 4, last
        assert took <= 2.0, f"{took:.2f} s"
        assert last == "prism worker: second SIGTERM received, exiting at once without finishing the drain"
