"""``prism request`` and ``prism worker`` as a user runs them: real processes against a real server."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path

import httpx
from streaming_helpers import Server, ServerFactory

PRISM = str(Path(sys.executable).parent / "prism")


async def prism(*args: str, stdin: bytes | None = None) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        PRISM, *args,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(stdin), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def common(server: Server, token: str = "alice-token") -> list[str]:
    return ["--url", server.http, "--token", token]


async def test_request_sync_async_follow_status_list_and_cancel(server: Server) -> None:
    code, out, _ = await prism("request", "echo", "--payload", '{"a": 1}', *common(server))
    assert code == 0 and json.loads(out) == {"a": 1}
    code, out, err = await prism(
        "request", "delay", "--payload", '{"seconds": 0.3, "step": 0.1}', "--follow", *common(server)
    )
    assert code == 0 and json.loads(out) == {"slept": 0.3}
    assert "100.0% slept 0.3 of 0.3 s" in err and err.count("\n") >= 3
    code, out, _ = await prism(
        "request", "delay", "--payload", '{"seconds": 30}', "--id", "cli-1", *common(server)
    )
    assert code == 0
    submitted = json.loads(out)
    rid = submitted["request_id"]
    code, out, _ = await prism("request", "status", rid, *common(server))
    assert code == 0 and json.loads(out)["request_id"] == rid
    code, out, _ = await prism("request", "cancel", rid, *common(server))
    assert code == 0 and json.loads(out)["status"] == "CANCELLED"
    code, out, _ = await prism("request", "list", "--status", "cancelled", *common(server))
    assert code == 0 and [r["request_id"] for r in json.loads(out)["requests"]] == [rid]
    code, out, _ = await prism(
        "request", "echo", "--payload", "-", *common(server), stdin=b'{"from": "stdin"}'
    )
    assert json.loads(out) == {"from": "stdin"}


async def test_request_errors(server: Server) -> None:
    code, _, err = await prism("request", "delay", "--payload", '{"seconds": "x"}', *common(server))
    assert code == 1 and "VALIDATION_ERROR" in err
    code, _, err = await prism("request", "echo", "--payload", "[1]", *common(server))
    assert code == 2 and "JSON object" in err
    code, _, err = await prism("request", "status", "rnope", *common(server))
    assert code == 1 and "NOT_FOUND" in err
    code, _, err = await prism("request", "echo", *common(server, token="bad"))
    assert code == 1 and "UNAUTHORIZED" in err
    code, _, err = await prism("request", "status", *common(server))
    assert code == 2


async def test_prism_worker_runs_jobs_submitted_to_a_server_without_workers(
    server_factory: ServerFactory, redis_url: str
) -> None:
    server = await server_factory(redis_url, run_workers=False)
    worker = await asyncio.create_subprocess_exec(
        PRISM, "worker", "--store", redis_url, "--concurrency", "2",
        "-o", "lease_seconds=2", "-o", "heartbeat_interval=0.5", "-o", "poll_interval=0.2",
        "-o", "demo_handlers=true",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        async with httpx.AsyncClient(
            base_url=server.http, headers={"Authorization": "Bearer alice-token"}
        ) as http:
            rid = (
                await http.post("/v1/requests", json={"action": "delay", "payload": {"seconds": 0.2}})
            ).json()["request_id"]
            for _ in range(300):
                body = (await http.get(f"/v1/requests/{rid}")).json()
                if body["status"] == "COMPLETED":
                    break
                await asyncio.sleep(0.1)
        assert body["status"] == "COMPLETED" and body["result"] == {"slept": 0.2}
    finally:
        worker.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(worker.communicate(), 30)
    assert worker.returncode == 0
    assert "2 workers on the redis queue" in err.decode()


async def test_prism_worker_refuses_bad_settings() -> None:
    code, _, err = await prism("worker")
    assert code == 2 and "--config" in err
    code, _, err = await prism("worker", "--store", "memory://", "-o", "lease_seconds=-3")
    assert code == 2 and "lease_seconds" in err
