"""Scale-out: three ``prism serve`` processes on one engine; a job runs on one replica, its client on another.

The worker process is killed with SIGKILL mid-job: the job is retried on another
replica once its lease expires and completes exactly once (one stored result, one
``complete``), while the client sees every event number once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from streaming_helpers import recv_json, send_json, until_terminal

from prism.gateway.auth import hash_api_key
from prism.kv.store import connect
from prism.streaming.client import StreamClient
from prism.streaming.config import parse_config
from prism.streaming.eventlog import EventLog
from prism.streaming.requests import RequestStore
from prism.testing.servers import free_port

ENGINES = ["redis", "postgres", "nats"]

OPTIONS = {
    "demo_handlers": True,
    "lease_seconds": 2,
    "heartbeat_interval": 0.5,
    "poll_interval": 0.2,
    "retry_backoff": 0.1,
    "orphan_grace": 5,
    "workers": 4,
    # Apart from the other tests that share the engine's server.
    "namespace_prefix": "scaleout",
    "queue_name": "scaleout",
}


class Replica:
    """One ``prism serve`` process on the shared engine, with streaming mounted."""

    def __init__(self, store_url: str, *, workers: bool) -> None:
        self.port = free_port()
        self.dir = tempfile.TemporaryDirectory(prefix="prism-replica-")
        config = {
            "stores": {"main": store_url},
            "namespaces": [{"name": "default", "store": "main"}],
            "auth": {
                "api_keys": [{"name": "alice", "sha256": hash_api_key("alice-token"), "tenant": "acme"}]
            },
            "server": {"log_level": "warning", "access_log": False},
            "streaming": {**OPTIONS, "run_workers": workers},
        }
        path = Path(self.dir.name) / "prism.yaml"
        path.write_text(yaml.safe_dump(config))
        self.log = open(Path(self.dir.name) / "stderr.log", "wb")  # noqa: SIM115
        self.process = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "prism"),
                "serve",
                "--config",
                str(path),
                "--port",
                str(self.port),
            ],
            stdout=subprocess.DEVNULL,
            stderr=self.log,
        )
        self.http = f"http://127.0.0.1:{self.port}"
        self.ws = f"ws://127.0.0.1:{self.port}/v1/stream"

    def runs(self, owner: str | None) -> bool:
        """Whether the record owner ``owner`` ("worker:<host>-<pid>-<n>:<k>") is this process."""
        return owner is not None and f"-{self.process.pid}-" in owner

    def ready(self) -> Replica:
        deadline = time.monotonic() + 60
        with httpx.Client() as client:
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(f"replica exited: {self.output()[-2000:]}")
                try:
                    client.get(self.http + "/v1/requests", headers={"Authorization": "Bearer alice-token"})
                    return self
                except httpx.HTTPError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)

    def output(self) -> str:
        return (Path(self.dir.name) / "stderr.log").read_text(errors="replace")

    def kill(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
        self.log.close()
        self.dir.cleanup()


@pytest.fixture(scope="module", params=ENGINES)
def engine_url(request: pytest.FixtureRequest) -> str:
    url: str = request.getfixturevalue(f"{request.param}_url")
    return url


@pytest.fixture(scope="module")
def cluster(engine_url: str) -> Iterator[list[Replica]]:
    """Three server processes on one engine: replica 0 serves clients only; 1 and 2 also run workers."""
    replicas = [
        Replica(engine_url, workers=False),
        Replica(engine_url, workers=True),
        Replica(engine_url, workers=True),
    ]
    try:
        for replica in replicas:
            replica.ready()
        yield replicas
    finally:
        for i, replica in enumerate(replicas):
            text = replica.output()
            if "Traceback" in text or "ERROR" in text:
                print(f"--- replica {i} (pid {replica.process.pid}) log ---\n{text[-4000:]}")
            replica.stop()


async def stored(engine_url: str, request_id: str) -> tuple[Any, list[dict[str, Any]]]:
    import msgspec

    config = parse_config({"namespace_prefix": OPTIONS["namespace_prefix"]})
    async with connect(engine_url) as store:
        current = await RequestStore(store, config).get(request_id)
        assert current is not None
        events = await EventLog(store, config).read(request_id, 0, current.record.seq)
    return current.record, [msgspec.json.decode(data) for _, data in events]


async def test_client_on_one_replica_follows_a_job_on_another(
    cluster: list[Replica], engine_url: str
) -> None:
    front = cluster[0]
    async with StreamClient(front.http, token="alice-token") as client:
        updates: list[Any] = []
        result = await client.request(
            "delay", {"seconds": 0.6, "step": 0.1}, on_progress=updates.append, timeout=20
        )
        assert await client.request("echo", {"via": "front"}) == {"via": "front"}
    assert result == {"slept": 0.6}
    assert [u.seq for u in updates] == list(range(1, len(updates) + 1)) and len(updates) >= 5
    rid = updates[0].request_id
    record, _ = await stored(engine_url, rid)
    assert record.status == "COMPLETED"
    assert not front.runs(record.owner)
    assert any(r.runs(record.owner) for r in cluster[1:])


async def test_killing_the_worker_mid_job_retries_elsewhere_and_completes_once(
    cluster: list[Replica], engine_url: str
) -> None:
    front = cluster[0]
    import websockets

    async with websockets.connect(front.ws, additional_headers={"Authorization": "Bearer alice-token"}) as ws:
        await send_json(
            ws,
            {"action": "delay", "id": f"kill-{os.urandom(4).hex()}", "payload": {"seconds": 3, "step": 0.1}},
        )
        ack = await recv_json(ws)
        rid = ack["request_id"]
        seen = [await recv_json(ws, within=10) for _ in range(5)]
        record, _ = await stored(engine_url, rid)
        victim = next(r for r in cluster[1:] if r.runs(record.owner))
        survivor = next(r for r in cluster[1:] if r is not victim)
        victim.kill()
        seen += await until_terminal(ws, rid, within=30)
    victim.stop()
    cluster[cluster.index(victim)] = Replica(engine_url, workers=True).ready()
    events = [m for m in seen if m.get("seq") is not None]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    completes = [e for e in events if e["type"] == "complete"]
    assert len(completes) == 1 and completes[0]["result"] == {"slept": 3}
    percentages = [e["percentage"] for e in events if e["type"] == "progress"]
    assert percentages == sorted(percentages)
    record, logged = await stored(engine_url, rid)
    assert record.status == "COMPLETED" and record.attempts == 2
    assert record.result == {"slept": 3}
    assert survivor.runs(record.owner)
    assert [e["seq"] for e in logged] == [e["seq"] for e in events]
    assert sum(1 for e in logged if e["type"] == "complete") == 1


async def test_resume_on_another_replica_after_a_disconnect(cluster: list[Replica], engine_url: str) -> None:
    import websockets

    headers = {"Authorization": "Bearer alice-token"}
    async with websockets.connect(cluster[0].ws, additional_headers=headers) as ws:
        await send_json(
            ws,
            {
                "action": "delay",
                "id": f"roam-{os.urandom(4).hex()}",
                "payload": {"seconds": 1.2, "step": 0.1},
            },
        )
        rid = (await recv_json(ws))["request_id"]
        first = [await recv_json(ws) for _ in range(3)]
    async with websockets.connect(cluster[1].ws, additional_headers=headers) as ws:
        await send_json(ws, {"type": "subscribe", "request_id": rid, "after_seq": first[-1]["seq"]})
        rest = await until_terminal(ws, rid, within=20)
    events = [m for m in first + rest if m.get("seq") is not None]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[-1]["type"] == "complete"
