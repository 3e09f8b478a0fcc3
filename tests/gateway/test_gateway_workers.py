"""``prism serve --workers 2``: both workers serve with the transport's limits, and SIGTERM drains both."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from serve_helpers import PRISM, serving
from test_gateway_transport import problem_code, raw, read_response

HERE = Path(__file__).parent
WORKER_BANNER = re.compile(r"Prism gateway worker (\d+) listening on")


def worker_pids(stdout: str) -> set[int]:
    return {int(pid) for pid in WORKER_BANNER.findall(stdout)}


def wait_for_workers(served: Any, count: int) -> set[int]:
    """The pids of the workers, once ``count`` of them have opened their stores and listen."""
    deadline = time.monotonic() + 60
    while len(pids := worker_pids(served.stdout())) < count:
        assert served.proc.poll() is None, served.stderr()
        assert time.monotonic() < deadline, f"{len(pids)} of {count} workers started:\n{served.stderr()}"
        time.sleep(0.05)
    return pids


def running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie that nobody reaped yet is not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def test_two_workers_serve_with_the_transport_limits(tmp_path: Path) -> None:
    config = {
        "stores": {"main": f"sqlite:///{tmp_path}/data.db"},
        "namespaces": [{"name": "default"}],
        "server": {"max_header_bytes": 4096, "header_timeout": 1},
    }
    with serving(tmp_path, config, "--workers", "2") as served:
        pids = wait_for_workers(served, 2)
        assert len(pids) == 2 and all(running(pid) for pid in pids)
        assert httpx.put(f"{served.url}/v1/kv/default/k", content=b"v", timeout=10).status_code == 201
        # Every new connection may land on either worker; each one holds the same store and limits.
        for _ in range(10):
            with httpx.Client(timeout=10) as client:
                assert client.get(f"{served.url}/v1/kv/default/k").content == b"v"
                refused = client.get(f"{served.url}/healthz", headers={"X-Big": "a" * 5000})
                assert refused.status_code == 431 and refused.json()["code"] == "HEADERS_TOO_LARGE"
        status, _, body = read_response(raw(served.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: 1"))
        assert status == 408 and problem_code(body) == "HEADER_TIMEOUT"


def slow_config(tmp_path: Path) -> dict[str, Any]:
    """Two workers on a store whose writes take 2 s (each worker has its own copy of it)."""
    return {
        "stores": {"main": {"url": "slow://drain?delay=2", "backend": "gateway_helpers:SlowBackend"}},
        "namespaces": [{"name": "default"}],
        "audit": {"sink": "none"},
        # Streaming would open its own store on this URL, which only the slow backend understands.
        "streaming": {"enabled": False},
        "server": {"shutdown_timeout": 5},
    }


def in_flight(url: str) -> float:
    """``prism_http_requests_in_flight`` of whichever worker answers this new connection."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    match = re.search(r"^prism_http_requests_in_flight(?:\{[^}]*\})? ([0-9.]+)$", text, re.M)
    assert match is not None, "/metrics has no prism_http_requests_in_flight"
    return float(match.group(1))


def test_sigterm_drains_and_stops_both_workers(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]))
    with serving(tmp_path, slow_config(tmp_path), "--workers", "2") as served:
        pids = wait_for_workers(served, 2)
        statuses: list[int] = []
        errors: list[Exception] = []

        def slow_put(key: str) -> None:
            try:
                response = httpx.put(f"{served.url}/v1/kv/default/{key}", content=b"v", timeout=20)
                statuses.append(response.status_code)
            except httpx.HTTPError as exc:
                errors.append(exc)

        puts = [threading.Thread(target=slow_put, args=(f"k{i}",)) for i in range(2)]
        for thread in puts:
            thread.start()
        # SIGTERM only once a put is being served (a /metrics request counts itself too).
        deadline = time.monotonic() + 20
        while in_flight(served.url) < 2:
            assert time.monotonic() < deadline, "no slow put reached a worker"
        served.proc.send_signal(signal.SIGTERM)
        # The parent and both workers are gone within the drain bound (server.shutdown_timeout = 5 s).
        assert served.proc.wait(timeout=5 + 10) == 0
        assert not any(running(pid) for pid in pids)
        for thread in puts:
            thread.join(timeout=20)
        # The puts the workers had accepted were answered before they stopped; none was cut off.
        assert statuses and all(status == 201 for status in statuses), (statuses, errors)
        assert all(isinstance(exc, httpx.ConnectError) for exc in errors), errors
    assert "Traceback" not in served.stderr(), served.stderr()


def test_workers_refuse_a_memory_store(tmp_path: Path) -> None:
    config = {"stores": {"main": "memory://"}, "namespaces": [{"name": "default"}]}
    (tmp_path / "p.yaml").write_text(json.dumps(config))
    command = [PRISM, "serve", "-c", "p.yaml", "--workers", "2"]
    proc = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "in-memory and cannot be shared by --workers > 1" in proc.stderr
