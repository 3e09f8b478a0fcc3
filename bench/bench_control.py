"""Runtime namespaces: how long a change takes to be served by another process, and the planner's cost.

Two ``prism serve`` processes share a Redis control store (a server this benchmark
starts). Each round creates a namespace through one process and times, from the
moment its ``PUT`` is answered, until the other process serves it (a write to the
namespace succeeds), then changes its declared rate through the second process and
times until the first shows the new limit; the processes alternate roles. The target
is the issue's: every process serves a change within 2 s (with the default
``control.namespaces.poll_interval`` of 0.5 s). A burst of concurrent placements
through both processes measures the conditional changes of the catalog under
contention, and ``plan()`` is timed alone over 20 stores.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench._report import environment, spread, write_section
from prism.control.planner import StoreOffer, plan
from prism.gateway.config import NeedsConfig, StoreCapacityConfig
from prism.model import Capabilities
from prism.testing.servers.redis import RedisServer

COMMAND = "python -m bench control"
ROUNDS = 20
BURST = 40
TARGET_SECONDS = 2.0
PRISM = str(Path(sys.executable).with_name("prism"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start(directory: Path, config: dict[str, Any]) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    path = directory / "prism.yaml"
    path.write_text(json.dumps(config))
    proc = subprocess.Popen(
        [PRISM, "serve", "--config", str(path), "--port", str(port), "--grpc-port", "0"],
        cwd=directory,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("prism serve did not start")


async def _until(check: Any) -> float:
    started = time.perf_counter()
    while not await check():  # noqa: ASYNC110 - polling another process over HTTP
        await asyncio.sleep(0.005)
    return time.perf_counter() - started


async def _propagation(urls: list[str]) -> tuple[list[float], list[float], float]:
    created: list[float] = []
    changed: list[float] = []
    async with httpx.AsyncClient(timeout=10) as http:
        for i in range(ROUNDS):
            a, b = urls[i % 2], urls[1 - i % 2]
            name = f"bench-{i}"
            r = await http.put(f"{a}/v1/namespaces/{name}", json={"needs": {"read_rps": 10}})
            r.raise_for_status()

            async def served(url: str = b, ns: str = name) -> bool:
                return (await http.put(f"{url}/v1/kv/{ns}/k", content=b"v")).status_code < 300

            created.append(await _until(served))
            r = await http.put(f"{b}/v1/namespaces/{name}", json={"needs": {"read_rps": 20}})
            r.raise_for_status()

            async def limited(url: str = a, ns: str = name) -> bool:
                detail = (await http.get(f"{url}/v1/namespaces/{ns}")).json()
                return bool(detail["limits"].get("read_rate") == 24.0)

            changed.append(await _until(limited))
        puts = [
            http.put(f"{urls[i % 2]}/v1/namespaces/burst-{i}", json={"needs": {"write_rps": 1}})
            for i in range(BURST)
        ]
        started = time.perf_counter()
        answers = await asyncio.gather(*puts)
        burst = time.perf_counter() - started
        assert all(r.status_code == 201 for r in answers), [r.text for r in answers if r.status_code != 201]
    return created, changed, burst


def _planner_cost() -> float:
    stores = [
        StoreOffer(
            f"s{i}",
            "redis",
            Capabilities(),
            StoreCapacityConfig(read_rps=1000, write_rps=1000, latency_p99_ms=5, durability="disk"),
            tuple(NeedsConfig(read_rps=10) for _ in range(50)),
        )
        for i in range(20)
    ]
    needs = NeedsConfig(read_rps=600, latency_p99_ms=10, durability="disk")
    calls = 2000
    started = time.perf_counter()
    for _ in range(calls):
        plan(needs, stores)
    return (time.perf_counter() - started) / calls


def _fmt(values: list[float]) -> str:
    med, low, high = spread(values)
    p90 = sorted(values)[int(0.9 * (len(values) - 1))]
    return f"{med * 1000:.0f} ms (p90 {p90 * 1000:.0f}, max {high * 1000:.0f}, min {low * 1000:.0f})"


def _met(values: list[float]) -> str:
    return "met" if max(values) <= TARGET_SECONDS else "missed"


def main(argv: list[str]) -> None:
    server = RedisServer.local()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        with tempfile.TemporaryDirectory() as raw:
            config = {
                "stores": {
                    "main": {"url": server.url_for(7), "capacity": {"read_rps": 1e6, "write_rps": 1e6}}
                },
                "namespaces": [{"name": "default"}],
                "control": {"store": "main"},
                "audit": {"sink": "none"},
                "server": {"access_log": False},
                "streaming": {"enabled": False},
            }
            urls = []
            for name in ("a", "b"):
                directory = Path(raw) / name
                directory.mkdir()
                proc, url = _start(directory, config)
                procs.append(proc)
                urls.append(url)
            created, changed, burst = asyncio.run(_propagation(urls))
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        server.close()
    cost = _planner_cost()
    worst = max(created + changed)
    verdict = "met" if worst <= TARGET_SECONDS else f"missed by {worst - TARGET_SECONDS:.2f} s"
    load = os.getloadavg()[0]
    markdown = f"""## Runtime namespaces: a change served by another process

Command: `{COMMAND}` ({environment("prism", "redis", "httpx")},
two `prism serve` processes on one Redis control store started by `prism.testing.servers.redis`,
`control.namespaces.poll_interval` 0.5 s (the default), 2 CPUs shared by both processes, Redis,
the client and whatever else ran; load average {load:.1f}).

{ROUNDS} rounds; the time from a change answered by one process until the other serves it,
median (p90, max, min). Target: every change served everywhere within {TARGET_SECONDS:g} s.

| change | time until the other process serves it | target |
|---|---|---|
| namespace created | {_fmt(created)} | <= {TARGET_SECONDS:g} s {_met(created)} |
| declared rate changed | {_fmt(changed)} | <= {TARGET_SECONDS:g} s {_met(changed)} |

Worst case {worst * 1000:.0f} ms: {verdict}. The wait is the poll: a process reads the catalog
every `poll_interval`, so a change waits about half of it on average and all of it at worst.

{BURST} namespaces placed at once, half through each process (each placement a conditional
change of the one catalog entry, retried on a lost race): {burst * 1000:.0f} ms in all.
`plan()` over 20 stores with 50 namespaces each: {cost * 1e6:.0f} µs per call.
"""
    write_section("control", markdown)
