"""``prism serve`` as a real process over TCP: startup, refusals, bad configs, and SIGTERM draining."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from prism.gateway.auth import hash_api_key
from prism.testing.servers._base import ServerUnavailable, free_port, wait_for_port

HERE = Path(__file__).parent
PRISM = [str(Path(sys.executable).with_name("prism"))]


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}


class Served:
    def __init__(self, proc: subprocess.Popen[str], port: int) -> None:
        self.proc = proc
        self.port = port
        self.url = f"http://127.0.0.1:{port}"

    def stop(self) -> tuple[int, str, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        out, err = self.proc.communicate(timeout=20)
        return self.proc.returncode, out, err


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[object]:
    started: list[Served] = []

    def start(*args: str, port: int | None = None, wait: bool = True) -> Served:
        port = port or free_port()
        proc = subprocess.Popen(
            [*PRISM, "serve", "--port", str(port), *args],
            cwd=tmp_path,
            env=env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        served = Served(proc, port)
        started.append(served)
        deadline = time.monotonic() + 30
        while wait:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                out, err = proc.communicate()
                raise AssertionError(f"prism serve did not start:\n{out}\n{err}")
            try:
                wait_for_port(port, timeout=0.2)
                break
            except ServerUnavailable:
                continue
        return served

    yield start
    for served in started:
        if served.proc.poll() is None:
            served.proc.kill()
            served.proc.communicate()


def test_serve_without_config_uses_embedded_sqlite(serve: object, tmp_path: Path) -> None:
    served = serve()  # type: ignore[operator]
    with httpx.Client(base_url=served.url, timeout=10) as c:
        assert c.put("/v1/kv/default/greeting", content=b"hello").status_code == 201
        assert c.get("/v1/kv/default/greeting").content == b"hello"
        assert c.get("/readyz").json()["status"] == "ready"
        assert c.get("/openapi.json").status_code == 200
    code, out, err = served.stop()
    assert code == 0, err
    assert f"listening on http://127.0.0.1:{served.port}" in out
    assert f"curl -X PUT --data-binary 'hello' http://127.0.0.1:{served.port}/v1/kv/default/greeting" in out
    assert (tmp_path / ".prism" / "data.db").exists()
    assert "Traceback" not in err
    # Access logs are JSON lines on stderr.
    assert '"logger":"prism.gateway.access"' in err


def test_serve_with_config_and_api_key(serve: object, tmp_path: Path) -> None:
    (tmp_path / "prism.yaml").write_text(
        textwrap.dedent(f"""
        stores:
          main: "sqlite:///{tmp_path}/data.db"
        auth:
          api_keys:
            - {{name: ci, sha256: "{hash_api_key("ci-key")}", roles: [writer], tenant: acme}}
        namespaces:
          - {{name: orders, tenant_scoped: true}}
        audit: {{sink: file, path: audit.log}}
    """)
    )
    served = serve("--config", "prism.yaml", "--host", "127.0.0.1")  # type: ignore[operator]
    with httpx.Client(base_url=served.url, timeout=10) as c:
        assert c.put("/v1/kv/orders/o1", content=b"x").status_code == 401
        assert c.put("/v1/kv/orders/o1", content=b"x", headers={"X-API-Key": "ci-key"}).status_code == 201
        assert c.get("/v1/kv/orders/o1", headers={"Authorization": "Bearer ci-key"}).content == b"x"
    code, out, _ = served.stop()
    assert code == 0
    assert "-H 'X-API-Key: <your key>'" in out
    assert '"key":"o1"' in (tmp_path / "audit.log").read_text()


def test_bad_config_is_one_line_and_exit_code_2(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("stores: {main: 'memory://'}\nnamespaces: [{name: a, store: nope}]\n")
    proc = subprocess.run(
        [*PRISM, "serve", "--config", "bad.yaml"],
        cwd=tmp_path,
        env=env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert (
        proc.stderr.strip()
        == "prism: error: bad.yaml: $.namespaces[0].store: unknown store 'nope' (stores: main)"
    )


def test_non_loopback_without_auth_is_refused_unless_insecure(serve: object, tmp_path: Path) -> None:
    proc = subprocess.run(
        [*PRISM, "serve", "--host", "0.0.0.0", "--port", str(free_port())],
        cwd=tmp_path,
        env=env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "refusing to serve on 0.0.0.0 without authentication" in proc.stderr
    assert "Traceback" not in proc.stderr
    served = serve("--host", "0.0.0.0", "--insecure")  # type: ignore[operator]
    assert httpx.get(f"{served.url}/healthz", timeout=10).status_code == 200
    assert served.stop()[0] == 0


def test_store_that_cannot_open_fails_startup_cleanly(tmp_path: Path) -> None:
    (tmp_path / "not-a-dir").write_text("a file where the database directory should be")
    (tmp_path / "p.yaml").write_text(
        f"stores: {{main: 'sqlite:///{tmp_path}/not-a-dir/data.db'}}\nnamespaces: [{{name: a}}]\n"
    )
    proc = subprocess.run(
        [*PRISM, "serve", "--config", "p.yaml", "--port", str(free_port())],
        cwd=tmp_path,
        env=env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert "prism: error: store 'main'" in proc.stderr
    assert "Traceback" not in proc.stderr


def _in_flight(url: str) -> float:
    for line in httpx.get(f"{url}/metrics", timeout=2).text.splitlines():
        if line.startswith("prism_http_requests_in_flight "):
            return float(line.split()[1])
    raise AssertionError("/metrics has no prism_http_requests_in_flight")


def test_sigterm_drains_in_flight_requests(serve: object, tmp_path: Path) -> None:
    (tmp_path / "slow.yaml").write_text(
        textwrap.dedent("""
        stores:
          main: {url: "memory://drain?delay=1.5", backend: "gateway_helpers:SlowBackend"}
        namespaces: [{name: default}]
        audit: {sink: none}
    """)
    )
    served = serve("--config", "slow.yaml")  # type: ignore[operator]
    result: dict[str, object] = {}

    def slow_put() -> None:
        try:
            result["status"] = httpx.put(
                f"{served.url}/v1/kv/default/k", content=b"v", timeout=10
            ).status_code
        except httpx.HTTPError as exc:
            result["error"] = exc

    thread = threading.Thread(target=slow_put)
    thread.start()
    # SIGTERM only once the put is being served, whatever the machine's load.
    deadline = time.monotonic() + 10
    while _in_flight(served.url) < 2:  # the put, and this /metrics request itself
        assert time.monotonic() < deadline, "the slow put never reached the server"
        time.sleep(0.02)
    started = time.monotonic()
    served.proc.send_signal(signal.SIGTERM)
    # New connections are not served while the in-flight put drains: refused, or (one the kernel
    # had already queued when the listener closed) closed without an answer.
    while True:
        try:
            httpx.get(f"{served.url}/healthz", timeout=0.5)
        except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError, httpx.ReadTimeout):
            break
        assert time.monotonic() - started < 1.2, "still accepting connections after SIGTERM"
        time.sleep(0.02)
    assert thread.is_alive(), "the put finished before the drain began"
    thread.join(timeout=15)
    # The process exits on its own once drained (a second SIGTERM would skip the drain).
    served.proc.wait(timeout=15)
    code, _, err = served.stop()
    assert result.get("status") == 201, (result, err)
    assert code == 0, err
    assert time.monotonic() - started < 10
