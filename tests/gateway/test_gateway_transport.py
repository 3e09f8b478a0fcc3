"""The transport of ``prism serve`` against misbehaving clients: header floods, slowloris, too many
connections, slow bodies; and what serve says when it starts (or cannot)."""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from serve_helpers import PRISM, serving
from websockets.sync.client import connect as ws_connect

from prism.testing.servers._base import free_port

PROBLEM = "application/problem+json"


def small_config(**server: Any) -> dict[str, Any]:
    return {
        "stores": {"main": "memory://"},
        "namespaces": [{"name": "default"}],
        "server": server,
    }


def raw(port: int, data: bytes = b"", timeout: float = 10) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    if data:
        sock.sendall(data)
    return sock


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of the one response on ``sock`` (read until the server closes it)."""
    data = b""
    with sock:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


def problem_code(body: bytes) -> str:
    code: str = json.loads(body)["code"]
    return code


def healthz_seconds(url: str) -> float:
    started = time.monotonic()
    assert httpx.get(f"{url}/healthz", timeout=10).status_code == 200
    return time.monotonic() - started


# -- header floods ----------------------------------------------------------------------------


def test_headers_over_the_limit_get_431_and_the_connection_is_closed(tmp_path: Path) -> None:
    with serving(tmp_path) as served:
        # 17 KiB of request line and headers that never end: over the default 16 KiB.
        sock = raw(served.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 17 * 1024)
        status, headers, body = read_response(sock)
        assert status == 431
        assert headers["content-type"] == PROBLEM and headers["connection"] == "close"
        assert problem_code(body) == "HEADERS_TOO_LARGE"
        assert "16384 bytes" in json.loads(body)["detail"]
        # Headers just under the limit are served.
        under = httpx.get(f"{served.url}/healthz", headers={"X-Big": "a" * 15 * 1024}, timeout=10)
        assert under.status_code == 200


def test_max_header_bytes_is_a_setting(tmp_path: Path) -> None:
    with serving(tmp_path, small_config(max_header_bytes=4096)) as served:
        refused = httpx.get(f"{served.url}/healthz", headers={"X-Big": "a" * 5000}, timeout=10)
        assert refused.status_code == 431 and refused.json()["code"] == "HEADERS_TOO_LARGE"
        assert httpx.get(f"{served.url}/healthz", headers={"X-Big": "a" * 3000}).status_code == 200


def test_header_floods_are_cut_off_while_healthz_stays_responsive(tmp_path: Path) -> None:
    sent: list[int] = []

    def flood(port: int) -> None:
        sock = raw(port, b"GET / HTTP/1.1\r\nHost: x\r\nX-Flood: ")
        total = 0
        try:
            for _ in range(1024):  # up to 64 MiB of one header
                sock.sendall(b"a" * 65536)
                total += 65536
        except OSError:
            pass
        finally:
            sent.append(total)
            sock.close()

    with serving(tmp_path) as served:
        floods = [threading.Thread(target=flood, args=(served.port,)) for _ in range(4)]
        for thread in floods:
            thread.start()
        latencies = [healthz_seconds(served.url) for _ in range(5)]
        for thread in floods:
            thread.join(timeout=30)
        assert not any(thread.is_alive() for thread in floods)
    # Each flood was refused after a few socket buffers, not read to its end.
    assert max(sent) < 16 * 1024 * 1024, sent
    assert max(latencies) < 1.0, latencies


# -- header timeout and slowloris -------------------------------------------------------------


def test_a_half_sent_request_is_closed_after_the_header_timeout(tmp_path: Path) -> None:
    with serving(tmp_path, small_config(header_timeout=1)) as served:
        started = time.monotonic()
        half = raw(served.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: 1")
        silent = raw(served.port)
        status, headers, body = read_response(half)
        assert status == 408 and headers["content-type"] == PROBLEM
        assert problem_code(body) == "HEADER_TIMEOUT"
        # A connection that never sent a byte is closed without a response.
        with silent:
            assert silent.recv(100) == b""
        assert 0.8 < time.monotonic() - started < 5


def test_a_half_sent_second_request_on_a_kept_alive_connection_gets_408(tmp_path: Path) -> None:
    with serving(tmp_path, small_config(header_timeout=1, keep_alive_timeout=30)) as served:
        with raw(served.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n") as sock:
            status, _, _ = read_response_or_first(sock)
            assert status == 200
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: 1")
            status, headers, body = read_response(sock)
        assert status == 408 and headers["connection"] == "close"
        assert problem_code(body) == "HEADER_TIMEOUT"


def test_slowloris_does_not_stop_a_normal_client(tmp_path: Path) -> None:
    with serving(tmp_path, small_config(header_timeout=3)) as served:
        sockets = [raw(served.port, b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ") for _ in range(2000)]
        try:
            assert healthz_seconds(served.url) < 1.0
            for sock in sockets[:50]:
                sock.sendall(b"a")
            assert healthz_seconds(served.url) < 1.0
            # They are all let go after the header timeout.
            for sock in sockets[::100]:
                status, _, body = read_response(sock)
                assert status == 408 and problem_code(body) == "HEADER_TIMEOUT"
        finally:
            for sock in sockets:
                sock.close()


# -- connection cap ---------------------------------------------------------------------------


def test_connections_over_the_cap_are_refused_with_503(tmp_path: Path) -> None:
    with serving(tmp_path, small_config(max_connections=5)) as served:
        idle = [raw(served.port) for _ in range(5)]
        time.sleep(0.3)
        status, headers, body = read_response(raw(served.port))
        assert status == 503 and headers["content-type"] == PROBLEM
        assert problem_code(body) == "TOO_MANY_CONNECTIONS"
        idle.pop().close()
        time.sleep(0.3)
        assert httpx.get(f"{served.url}/healthz", timeout=10).status_code == 200
        metrics = httpx.get(f"{served.url}/metrics", timeout=10).text
        assert 'prism_http_connections_refused_total{reason="max_connections"} 1.0' in metrics
        for sock in idle:
            sock.close()


def test_websocket_upgrade_passes_the_guarded_transport(tmp_path: Path) -> None:
    with serving(tmp_path) as served, ws_connect(f"ws://127.0.0.1:{served.port}/v1/stream") as ws:
        ws.send(json.dumps({"type": "ping"}))
        assert json.loads(ws.recv(timeout=10))["type"] == "pong"


# -- slow bodies ------------------------------------------------------------------------------


def test_slow_bodies_get_408_and_hold_no_concurrency_slot(tmp_path: Path) -> None:
    config = small_config(body_timeout=1, request_timeout=2)
    config["namespaces"] = [{"name": "orders", "limits": {"concurrency": 2}}]
    with serving(tmp_path, config) as served:
        head = b"PUT /v1/kv/orders/slow HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n"
        slow = [raw(served.port, head + b"abcd") for _ in range(2)]
        time.sleep(0.3)
        started = time.monotonic()
        # Both slow clients are still sending: the namespace's two slots are free.
        for i in range(3):
            r = httpx.put(f"{served.url}/v1/kv/orders/k{i}", content=b"x", timeout=10)
            assert r.status_code == 201, r.text
        assert time.monotonic() - started < 1.0
        for sock in slow:
            status, headers, body = read_response(sock)
            assert status == 408 and headers["connection"] == "close"
            assert problem_code(body) == "BODY_TIMEOUT"
        assert httpx.get(f"{served.url}/v1/kv/orders/slow", timeout=10).status_code == 404


def test_a_slow_streaming_request_body_gets_408(tmp_path: Path) -> None:
    config = small_config()
    config["streaming"] = {"body_timeout": 1}
    with serving(tmp_path, config) as served:
        head = b"POST /v1/requests HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        started = time.monotonic()
        with raw(served.port, head + b"Content-Length: 100\r\n\r\n{") as sock:
            status, _, body = read_response_or_first(sock)
        assert status == 408 and problem_code(body) == "REQUEST_TIMEOUT"
        assert time.monotonic() - started < 5


def read_response_or_first(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """The first response on a keep-alive connection (read up to its Content-Length)."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    while len(body) < int(headers["content-length"]):
        body += sock.recv(65536)
    return int(lines[0].split()[1]), headers, body


# -- starting up ------------------------------------------------------------------------------


def test_a_port_out_of_range_is_one_line_and_exit_2(tmp_path: Path) -> None:
    proc = subprocess.run(
        [PRISM, "serve", "--port", "99999"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    assert proc.stderr == "prism: error: --port must be from 0 to 65535, not 99999\n"
    assert not (tmp_path / ".prism").exists()


def test_the_banner_is_printed_only_once_the_stores_are_open(tmp_path: Path) -> None:
    (tmp_path / "not-a-dir").write_text("a file where the database directory should be")
    config = {"stores": {"main": f"sqlite:///{tmp_path}/not-a-dir/data.db"}, "namespaces": [{"name": "a"}]}
    (tmp_path / "p.yaml").write_text(json.dumps(config))
    proc = subprocess.run(
        [PRISM, "serve", "--config", "p.yaml", "--port", str(free_port())],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert "listening" not in proc.stdout


def test_zero_config_says_which_data_directory_it_uses(tmp_path: Path) -> None:
    with serving(tmp_path) as served:
        out = served.stdout()
    data_dir = tmp_path.resolve() / ".prism"
    assert f"Created the data directory {data_dir}\n" in out
    assert f"Data directory: {data_dir} (embedded SQLite store)" in out
    # The second start finds it and says so without creating anything.
    with serving(tmp_path) as served:
        out = served.stdout()
    assert "Created" not in out and f"Data directory: {data_dir}" in out


def test_a_config_file_creates_no_data_directory(tmp_path: Path) -> None:
    with serving(tmp_path, small_config()) as served:
        assert "Data directory" not in served.stdout()
    assert not (tmp_path / ".prism").exists()


def test_an_unread_body_trickling_after_the_response_does_not_keep_the_connection(tmp_path: Path) -> None:
    with serving(tmp_path, small_config(keep_alive_timeout=1)) as served:
        head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n"
        with raw(served.port, head + b"abcd") as sock:
            status, _, _ = read_response_or_first(sock)
            assert status == 200
            started = time.monotonic()
            closed = False
            while time.monotonic() - started < 10:
                try:
                    sock.sendall(b"x")
                    sock.settimeout(1)
                    closed = sock.recv(100) == b""
                except TimeoutError:
                    continue
                except OSError:
                    closed = True
                if closed:
                    break
            assert closed and time.monotonic() - started < 3


def test_a_head_that_begins_mid_chunk_is_held_to_the_limit(tmp_path: Path) -> None:
    with serving(tmp_path, small_config(max_header_bytes=4096)) as served:
        with raw(
            served.port, b"PUT /v1/kv/default/k HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n"
        ) as sock:
            time.sleep(0.3)
            # One chunk: the rest of the first request's body, then a pipelined head of 6 KiB.
            sock.sendall(
                b"hello" + b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 6000 + b"\r\n\r\n"
            )
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        assert b"HTTP/1.1 431 " in data and b"HEADERS_TOO_LARGE" in data
        assert b"HTTP/1.1 200 " not in data
