"""Live migration through the gateway: the admin API, two ``prism serve`` processes, and ``prism migrate``."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from gateway_helpers import api_keys_config, client_for, headers
from test_gateway_limits_shared import two_gateways

import prism
from prism.migration import MigrationSettings
from prism.migration.state import ControlRecords
from prism.model import Put
from prism.testing.servers import free_port
from prism.testing.servers.redis import redis_server

PRISM = str(Path(sys.executable).with_name("prism"))
#: Longest wait for a background backfill or verify in these small tests.
STEP_DEADLINE = 60.0


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with redis_server() as server:
        yield server.url


def gateway_config(tmp_path: Path, redis_url: str, ns: str, **extra: Any) -> dict[str, Any]:
    return {
        "stores": {"local": f"sqlite:///{tmp_path}/data.db", "redis_main": redis_url, "scratch": "memory://"},
        "namespaces": [
            {
                "name": ns,
                "store": "local",
                "access": {"read": ["reader"], "write": ["writer"], "admin": ["admin"]},
            },
        ],
        "control": {"store": "redis_main"},
        "server": {"access_log": False},
        "streaming": {"enabled": False},
        **extra,
    }


async def _until(client: httpx.AsyncClient, path: str, phase: str, auth: dict[str, str]) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + STEP_DEADLINE
    while True:
        body: dict[str, Any] = (await client.get(path, headers=auth)).json()
        if body["phase"] == phase or body.get("error") or loop.time() > deadline:
            return body
        await asyncio.sleep(0.05)


async def test_the_admin_api_drives_a_migration_and_audits_it(tmp_path: Path, redis_url: str) -> None:
    ns = f"users-{uuid.uuid4().hex[:8]}"
    audit = tmp_path / "audit.jsonl"
    cfg = gateway_config(tmp_path, redis_url, ns, auth={"api_keys": api_keys_config()})
    cfg["audit"] = {"sink": "file", "path": str(audit)}
    admin = headers("admin")
    path = f"/v1/namespaces/{ns}/migration"
    async with client_for(cfg) as c:
        for i in range(30):
            assert (
                await c.put(f"/v1/kv/{ns}/k{i}", content=b"v%d" % i, headers=headers("writer"))
            ).status_code == 201
        etag = (await c.get(f"/v1/kv/{ns}/k0", headers=headers("reader"))).headers["etag"]
        assert (await c.get(path, headers=admin)).status_code == 404
        r = await c.post(path, json={"to": "redis_main"}, headers=headers("writer"))
        assert r.status_code == 403
        r = await c.post(path, json={"to": "nowhere"}, headers=admin)
        assert r.status_code == 400 and r.json()["code"] == "UNKNOWN_STORE"
        r = await c.post(path, json={"to": "local"}, headers=admin)
        assert r.status_code == 400 and "already on store" in r.json()["detail"]
        r = await c.post("/v1/namespaces/nothing/migration", json={"to": "redis_main"}, headers=admin)
        assert r.status_code == 404
        r = await c.post(path, json={"to": "redis_main", "shadow_read_sample": 1.0}, headers=admin)
        assert r.status_code == 201, r.text
        assert {k: r.json()[k] for k in ("namespace", "from", "to", "phase")} == {
            "namespace": ns,
            "from": "local",
            "to": "redis_main",
            "phase": "shadowing",
        }
        assert (await c.post(path, json={"to": "redis_main"}, headers=admin)).status_code == 409
        r = await c.post(f"{path}/cutover", headers=admin)
        assert r.status_code == 409 and "clean verify first" in r.json()["detail"]
        assert (await c.post(f"{path}/backfill", json={"rps": 1000}, headers=admin)).status_code == 202
        assert (await _until(c, path, "backfilled", admin))["backfill"] == {
            "copied": 30,
            "skipped": 0,
            "done": True,
        }
        assert (await c.post(f"{path}/verify", headers=admin)).status_code == 202
        status = await _until(c, path, "verified", admin)
        assert status["phase"] == "verified" and status["verify"]["checked"] == 30, status
        assert (await c.get(f"/v1/kv/{ns}/k1", headers=headers("reader"))).status_code == 200
        r = await c.post(f"{path}/cutover", headers=admin)
        assert r.status_code == 200 and r.json()["primary"] == "redis_main", r.text
        # An etag taken before the cutover still matches.
        r = await c.put(f"/v1/kv/{ns}/k0", content=b"after", headers={**headers("writer"), "If-Match": etag})
        assert r.status_code in (200, 201), r.text
        r = await c.post(f"{path}/complete", headers=admin)
        assert r.status_code == 200 and r.json()["phase"] == "complete"
        status = (await c.get(path, headers=admin)).json()
        assert status["shadow_reads"]["compared"] >= 1 and status["shadow_reads"]["mismatches"] == 0
    async with prism.connect(redis_url) as store:
        item = await store.namespace(ns).get("k0")
        assert item is not None and item.value == b"after"
    events = [json.loads(line) for line in audit.read_text().splitlines()]
    ops = [e.get("operation") for e in events if e.get("namespace") == ns]
    for op in (
        "migration_start",
        "migration_get",
        "migration_backfill",
        "migration_cutover",
        "migration_complete",
    ):
        assert op in ops, (op, ops)
    refused = [e for e in events if e.get("operation") == "migration_start" and e.get("status") == 403]
    assert refused


def _cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PRISM_URL": url}
    env.pop("PRISM_TOKEN", None)
    return subprocess.run([PRISM, "migrate", *args], capture_output=True, text=True, env=env, timeout=120)


async def test_two_processes_follow_the_phases_driven_by_the_cli(tmp_path: Path, redis_url: str) -> None:
    ns = f"users-{uuid.uuid4().hex[:8]}"
    cfg = gateway_config(tmp_path, redis_url, ns, audit={"sink": "none"})
    acknowledged: dict[str, str] = {}
    with two_gateways(tmp_path, cfg) as (one, two):
        async with httpx.AsyncClient(timeout=10) as http:
            for i in range(100):
                r = await http.put(f"{two}/v1/kv/{ns}/seed-{i:03d}", content=b"seed")
                acknowledged[f"seed-{i:03d}"] = r.headers["etag"]
            stop = asyncio.Event()

            async def write_on_two() -> None:
                i = 0
                while not stop.is_set():
                    key = f"live-{i:05d}"
                    r = await http.put(f"{two}/v1/kv/{ns}/{key}", content=key.encode())
                    assert r.status_code == 201, r.text
                    acknowledged[key] = r.headers["etag"]
                    i += 1
                    # A steady load (about 200 writes/s at most), not a flood that a loaded
                    # machine's backfill could chase for minutes.
                    await asyncio.sleep(0.005)

            writer = asyncio.create_task(write_on_two())
            try:
                steps = [
                    ("start", ns, "--to", "redis_main"),
                    ("backfill", ns, "--rps", "500"),
                    ("verify", ns),
                    ("cutover", ns),
                ]
                for step in steps:
                    done = await asyncio.to_thread(_cli, one, *step)
                    assert done.returncode == 0, (step, done.stdout, done.stderr)
                assert "cut_over" in done.stdout and "primary redis_main" in done.stdout, done.stdout
                await asyncio.sleep(0.5)
            finally:
                stop.set()
                await writer
            refused = await asyncio.to_thread(_cli, one, "abort", ns)
            assert refused.returncode == 1 and "roll back first" in refused.stderr
            done = await asyncio.to_thread(_cli, one, "complete", ns)
            assert done.returncode == 0 and "complete" in done.stdout
            status = await asyncio.to_thread(_cli, two, "--json", "status", ns)
            assert json.loads(status.stdout)["phase"] == "complete"
            assert json.loads(status.stdout)["shadow"]["writes"] > 0  # process two shadowed its writes
    assert len(acknowledged) > 110
    async with prism.connect(redis_url) as store:
        handle = store.namespace(ns)
        for key, etag in acknowledged.items():
            item = await handle.get(key)
            assert item is not None and f'"{item.etag}"' in (etag, f'"{etag}"'), f"{key}: a write is lost"


def _serve(tmp_path: Path, port: int) -> subprocess.Popen[str]:
    with open(tmp_path / f"serve-{port}.err", "w") as err:
        return subprocess.Popen(
            [PRISM, "serve", "--config", str(tmp_path / "prism.yaml"), "--port", str(port)],
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=err,
            text=True,
        )


async def _up(http: httpx.AsyncClient, url: str, proc: subprocess.Popen[str]) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while loop.time() < deadline:
        assert proc.poll() is None, "prism serve exited: see its serve-PORT.err"
        try:
            if (await http.get(f"{url}/healthz")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.1)
    raise AssertionError("prism serve did not start")


async def test_a_gateway_killed_during_backfill_resumes_from_its_checkpoint(
    tmp_path: Path, redis_url: str
) -> None:
    ns = f"users-{uuid.uuid4().hex[:8]}"
    (tmp_path / "prism.yaml").write_text(
        json.dumps(gateway_config(tmp_path, redis_url, ns, audit={"sink": "none"}))
    )
    count, page = 1000, MigrationSettings().page_size
    path = f"/v1/namespaces/{ns}/migration"
    async with prism.connect(f"sqlite:///{tmp_path}/data.db") as store:
        await store.namespace(ns).put_many([Put(f"k{i:05d}", b"v") for i in range(count)])
    async with httpx.AsyncClient(timeout=10) as http:
        url = f"http://127.0.0.1:{free_port()}"
        proc = _serve(tmp_path, int(url.rsplit(":", 1)[1]))
        try:
            await _up(http, url, proc)
            assert (await http.post(f"{url}{path}", json={"to": "redis_main"})).status_code == 201
            assert (await http.post(f"{url}{path}/backfill", json={"rps": 200})).status_code == 202
            loop = asyncio.get_running_loop()
            deadline = loop.time() + STEP_DEADLINE
            while (await http.get(f"{url}{path}")).json()["backfill"]["copied"] < 2 * page:
                assert loop.time() < deadline
                await asyncio.sleep(0.02)
        finally:
            proc.kill()  # SIGKILL: no shutdown, the backfill stops mid-page
            proc.wait()
        url = f"http://127.0.0.1:{free_port()}"
        proc = _serve(tmp_path, int(url.rsplit(":", 1)[1]))
        try:
            await _up(http, url, proc)
            status = (await http.get(f"{url}{path}")).json()
            assert status["phase"] == "backfilling" and status["backfill"]["copied"] >= 2 * page, status
            async with prism.connect(redis_url) as control:
                records = ControlRecords(control.backend, ns)
                killed_at = (await records.read_progress()).cursor
                assert killed_at is not None
                r = await http.post(f"{url}{path}/backfill", json={"rps": 200})
                assert r.status_code == 202
                cursors: list[str] = []
                loop = asyncio.get_running_loop()
                deadline = loop.time() + STEP_DEADLINE
                while not (status := (await http.get(f"{url}{path}")).json())["backfill"]["done"]:
                    assert loop.time() < deadline and not status["error"], status
                    cursors.append((await records.read_progress()).cursor or "")
                    await asyncio.sleep(0.02)
        finally:
            proc.terminate()
            proc.wait()
    # Every checkpoint of the resumed backfill lies past the one it was killed after:
    # it went on from there instead of starting over.
    assert cursors and min(cursors) >= killed_at, (killed_at, sorted(set(cursors)))
    assert count <= status["backfill"]["copied"] < count + page, status
