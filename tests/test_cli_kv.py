"""``prism kv``: a real process per command, on a real embedded store."""

from __future__ import annotations

import json
import os
import pty
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from prism import Put, connect_sync
from prism.gateway.auth import hash_api_key
from prism.testing.servers import free_port

API_KEY = "k-cli-0123456789abcdef"


#: The environment of the commands: no gateway named by the caller's environment.
LOCAL = {k: v for k, v in os.environ.items() if k not in ("PRISM_URL", "PRISM_TOKEN")}


def prism(tmp: Path, *args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "prism", "kv", *args],
        input=stdin,
        capture_output=True,
        cwd=tmp,
        timeout=60,
        env=LOCAL,
    )


def listed(result: subprocess.CompletedProcess[bytes]) -> list[str]:
    """The keys of ``prism kv ls`` output piped to another program (one JSON object per line)."""
    assert result.returncode == 0, result.stderr
    return [json.loads(line)["key"] for line in result.stdout.splitlines()]


def test_put_get_ls_delete_on_the_default_embedded_store(tmp_path: Path) -> None:
    put = prism(tmp_path, "put", "default", "greeting", "hello")
    assert put.returncode == 0 and put.stdout.strip()
    assert (tmp_path / ".prism" / "data.db").exists()
    assert prism(tmp_path, "get", "default", "greeting").stdout == b"hello"
    assert prism(tmp_path, "put", "default", "blob", stdin=b"\x00\xffbytes").returncode == 0
    assert prism(tmp_path, "get", "default", "blob").stdout == b"\x00\xffbytes"
    (tmp_path / "v.txt").write_bytes(b"from a file")
    assert prism(tmp_path, "put", "default", "file", "--file", "v.txt").returncode == 0
    shown = json.loads(prism(tmp_path, "--json", "get", "default", "file").stdout)
    assert shown["key"] == "file" and shown["value"] == "ZnJvbSBhIGZpbGU="
    assert listed(prism(tmp_path, "ls", "default")) == ["blob", "file", "greeting"]
    assert listed(prism(tmp_path, "ls", "default", "gr")) == ["greeting"]
    assert prism(tmp_path, "delete", "default", "greeting").returncode == 0
    missing = prism(tmp_path, "get", "default", "greeting")
    assert missing.returncode == 1 and b"not found" in missing.stderr


def test_errors_are_one_line_without_a_traceback(tmp_path: Path) -> None:
    etag = prism(tmp_path, "put", "default", "k", "v").stdout.decode().strip()
    for args in (
        ("put", "default", "k", "v2", "--if-match", "wrong"),
        ("put", "default", "k", "v2", "--if-absent"),
        ("--store", "nosuch://x", "ls", "default"),
        ("put", "default", "k", "v", "--ttl", "-1"),
        ("put", "default", "k", "--file", "missing.bin"),
    ):
        result = prism(tmp_path, *args)
        assert result.returncode != 0, args
        assert b"Traceback" not in result.stderr, args
        assert len(result.stderr.decode().strip().splitlines()) == 1, (args, result.stderr)
    assert prism(tmp_path, "put", "default", "k", "v2", "--if-match", etag).returncode == 0


def on_a_terminal(cwd: Path, *args: str) -> str:
    """What ``prism kv ARGS`` prints when its output is a terminal."""
    leader, follower = pty.openpty()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "prism", "kv", *args],
            stdout=follower,
            stderr=subprocess.PIPE,
            cwd=cwd,
            timeout=60,
            env=LOCAL,
        )
        os.close(follower)
        follower = -1
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the terminal closed: everything was read
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(leader)
        if follower >= 0:
            os.close(follower)
    assert proc.returncode == 0, proc.stderr
    return b"".join(chunks).decode().replace("\r\n", "\n")


def test_ls_prints_a_table_on_a_terminal_and_says_when_more_keys_exist(tmp_path: Path) -> None:
    for key in ("k1", "k2", "k3"):
        assert prism(tmp_path, "put", "default", key, "v" * int(key[1])).returncode == 0
    assert prism(tmp_path, "put", "default", "tab\there", "x", "--content-type", "text/plain").returncode == 0
    table = on_a_terminal(tmp_path, "ls", "default", "--long").splitlines()
    assert table[0].split() == ["KEY", "BYTES", "CONTENT", "TYPE", "EXPIRES", "AT"]
    assert [line.split()[:3] for line in table[1:5]] == [
        ["k1", "1", "-"],
        ["k2", "2", "-"],
        ["k3", "3", "-"],
        ["tab\\there", "1", "text/plain"],
    ]
    assert table[5] == "4 keys"
    cut = on_a_terminal(tmp_path, "ls", "default", "--limit", "2").splitlines()
    assert cut[:3] == ["KEY", "k1", "k2"] and cut[3].startswith("first 2 keys; more exist")
    token = cut[3].rsplit(" ", 1)[1].rstrip(")")
    rest = on_a_terminal(tmp_path, "ls", "default", "--page-token", token).splitlines()
    assert rest == ["KEY", "k3", "tab\\there", "2 keys"]


def test_ls_piped_or_json_says_when_output_was_truncated(tmp_path: Path) -> None:
    for key in ("a", "b", "c"):
        prism(tmp_path, "put", "default", key, "v")
    piped = prism(tmp_path, "ls", "default", "--limit", "2")
    assert listed(piped) == ["a", "b"]
    assert b"listed the first 2 keys; more exist" in piped.stderr
    whole = prism(tmp_path, "ls", "default")
    assert listed(whole) == ["a", "b", "c"] and whole.stderr == b""
    document = json.loads(prism(tmp_path, "--json", "ls", "default", "--limit", "2").stdout)
    assert document["keys"] == ["a", "b"] and document["truncated"] is True and document["next_page_token"]
    last = json.loads(
        prism(tmp_path, "--json", "ls", "default", "--page-token", document["next_page_token"]).stdout
    )
    assert last == {"keys": ["c"], "truncated": False, "next_page_token": None}


def test_reads_elsewhere_never_create_a_data_directory_and_a_first_write_says_where(tmp_path: Path) -> None:
    for args in (("get", "default", "k"), ("ls", "default"), ("delete", "default", "k")):
        result = prism(tmp_path, *args)
        assert result.returncode == 1, args
        assert f"there is no data directory {tmp_path / '.prism'}".encode() in result.stderr, args
        assert not (tmp_path / ".prism").exists(), args
    first = prism(tmp_path, "put", "default", "k", "v")
    assert first.returncode == 0
    assert f"created the data directory {tmp_path / '.prism'}".encode() in first.stderr
    again = prism(tmp_path, "put", "default", "k", "v2")
    assert again.returncode == 0 and again.stderr == b""


def test_a_store_url_in_a_missing_directory_is_refused(tmp_path: Path) -> None:
    result = prism(tmp_path, "--store", "sqlite:///elsewhere/data.db", "put", "default", "k", "v")
    assert result.returncode == 1
    assert f"the directory '{tmp_path / 'elsewhere'}' does not exist".encode() in result.stderr
    assert not (tmp_path / "elsewhere").exists()


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[str]:
    """A real ``prism serve`` that only accepts API_KEY, in its own directory."""
    home = tmp_path / "gateway"
    home.mkdir()
    (home / "prism.yaml").write_text(
        "stores: {main: 'memory://'}\nnamespaces: [{name: default}]\naudit: {sink: none}\n"
        f"auth: {{api_keys: [{{name: cli, sha256: {hash_api_key(API_KEY)}, roles: [writer]}}]}}\n"
    )
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "prism", "serve", "--config", "prism.yaml", "--port", str(port)],
        cwd=home,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert proc.poll() is None and time.monotonic() < deadline, "prism serve did not start"
        time.sleep(0.1)
    try:
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)


def test_kv_talks_to_a_running_gateway(tmp_path: Path, gateway: str) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    def run(*args: str, **env: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [sys.executable, "-m", "prism", "kv", *args],
            capture_output=True,
            cwd=elsewhere,
            timeout=60,
            env={**LOCAL, "PRISM_TOKEN": API_KEY, **env},
        )

    assert run("--url", gateway, "put", "default", "greeting", "hello").returncode == 0
    assert run("--url", gateway, "get", "default", "greeting").stdout == b"hello"
    assert listed(run("ls", "default", PRISM_URL=gateway)) == ["greeting"]
    assert run("delete", "default", "greeting", PRISM_URL=gateway).returncode == 0
    assert run("get", "default", "greeting", PRISM_URL=gateway).returncode == 1
    refused = run("--url", gateway, "ls", "default", PRISM_TOKEN="wrong-token")
    assert refused.returncode == 1 and b"401 INVALID_CREDENTIALS" in refused.stderr
    assert b"wrong-token" not in refused.stderr and b"Traceback" not in refused.stderr
    assert not (elsewhere / ".prism").exists()
    # --store wins over PRISM_URL, so a local store stays reachable with PRISM_URL set.
    local = run("--store", "memory://", "ls", "default", PRISM_URL=gateway)
    assert local.returncode == 0 and local.stdout == b""


def test_a_reader_that_stops_early_ends_the_listing_quietly(tmp_path: Path) -> None:
    (tmp_path / ".prism").mkdir()
    with connect_sync(f"sqlite:///{tmp_path}/.prism/data.db") as store:
        ns = store.namespace("many")
        for start in range(0, 3000, 1000):
            ns.put_many([Put(f"{i:05d}-" + "k" * 100, b"v") for i in range(start, start + 1000)])
    proc = subprocess.Popen(
        [sys.executable, "-m", "prism", "kv", "ls", "many", "--limit", "3000"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=tmp_path,
        env=LOCAL,
    )
    assert proc.stdout is not None and proc.stderr is not None
    assert json.loads(proc.stdout.readline())["key"].startswith("00000-")
    proc.stdout.close()  # like `prism kv ls many | head -1`
    assert proc.wait(timeout=60) == 141
    with proc.stderr:
        assert proc.stderr.read() == b""


def serve(home: Path, config: str, port: int) -> subprocess.Popen[bytes]:
    """``prism serve`` of ``config`` on ``port``, once it answers."""
    (home / "prism.yaml").write_text(config)
    proc = subprocess.Popen(
        [sys.executable, "-m", "prism", "serve", "--config", "prism.yaml", "--port", str(port)],
        cwd=home,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        assert proc.poll() is None and time.monotonic() < deadline, "prism serve did not start"
        time.sleep(0.1)


def stop(proc: subprocess.Popen[bytes], sig: signal.Signals = signal.SIGTERM) -> None:
    proc.send_signal(sig)
    proc.wait(timeout=20)


def watch_config(store: str) -> str:
    return (
        f"stores: {{main: '{store}'}}\nnamespaces: [{{name: default}}]\naudit: {{sink: none}}\n"
        "streaming: {enabled: false}\n"
        f"auth: {{api_keys: [{{name: cli, sha256: {hash_api_key(API_KEY)}, roles: [writer]}}]}}\n"
    )


def read_line(proc: subprocess.Popen[bytes], within: float = 15.0) -> dict[str, object]:
    """The next JSON line ``proc`` prints (failing after ``within`` seconds)."""
    assert proc.stdout is not None
    timer = threading.Timer(within, proc.kill)
    timer.start()
    try:
        line = proc.stdout.readline()
    finally:
        timer.cancel()
    assert line, f"no line within {within} s"
    found: dict[str, object] = json.loads(line)
    return found


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["drained", "killed"])
def test_kv_watch_prints_changes_and_resumes_across_a_gateway_restart(
    tmp_path: Path, sig: signal.Signals
) -> None:
    store = f"sqlite:///{tmp_path / 'fed.db'}?feed=true"
    with connect_sync(store) as lib:
        start = lib.namespace("default").watch().start()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    auth = {"X-API-Key": API_KEY}
    gateway = serve(tmp_path, watch_config(store), port)
    watcher = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "prism",
            "kv",
            "--url",
            url,
            "watch",
            "default",
            "--after",
            start,
            "--count",
            "5",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**LOCAL, "PRISM_TOKEN": API_KEY},
    )
    try:
        etags = {}
        for key in ("a", "b"):
            etags[key] = httpx.put(f"{url}/v1/kv/default/{key}", content=b"1", headers=auth).headers["etag"]
        got = [read_line(watcher) for _ in range(2)]
        assert [(g["key"], g["op"], f'"{g["etag"]}"') for g in got] == [
            ("a", "put", etags["a"]),
            ("b", "put", etags["b"]),
        ]
        stop(gateway, sig)
        # Written while the gateway is down: the watch resumes after "b" and misses none of them.
        with connect_sync(store) as lib:
            lib.namespace("default").put("c", b"1")
            lib.namespace("default").delete("a")
        gateway = serve(tmp_path, watch_config(store), port)
        assert [(g["key"], g["op"]) for g in (read_line(watcher), read_line(watcher))] == [
            ("c", "put"),
            ("a", "delete"),
        ]
        httpx.put(f"{url}/v1/kv/default/e", content=b"1", headers=auth)
        assert read_line(watcher)["key"] == "e"
        # --count 5 reached: the command ends by itself.
        assert watcher.wait(timeout=15) == 0
        assert b"reconnecting" in watcher.stderr.read()  # type: ignore[union-attr]
    finally:
        if watcher.poll() is None:
            watcher.kill()
        watcher.wait()
        for pipe in (watcher.stdout, watcher.stderr):
            if pipe is not None:
                pipe.close()
        stop(gateway)


def test_kv_watch_stops_when_the_gateway_refuses_for_good(tmp_path: Path) -> None:
    port = free_port()
    gateway = serve(tmp_path, watch_config("memory://"), port)
    try:
        result = subprocess.run(
            [sys.executable, "-m", "prism", "kv", "--url", f"http://127.0.0.1:{port}", "watch", "default"],
            capture_output=True,
            timeout=60,
            env={**LOCAL, "PRISM_TOKEN": API_KEY},
        )
    finally:
        stop(gateway)
    assert result.returncode == 1
    assert b"409 FEED_NOT_ENABLED" in result.stderr and b"feed=true" in result.stderr
    assert b"Traceback" not in result.stderr


def test_kv_watch_on_a_store_with_a_feed(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'fed.db'}?feed=true"
    with connect_sync(store) as lib:
        ns = lib.namespace("default")
        start = ns.watch().start()
        ns.put_many([Put("x", b"1"), Put("y", b"2")])
        ns.delete("x")
    result = prism(tmp_path, "--store", store, "watch", "default", "--after", start, "--count", "3")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(line["key"], line["op"]) for line in lines] == [("x", "put"), ("y", "put"), ("x", "delete")]
    assert lines[2]["etag"] is None and lines[0]["cursor"] != lines[1]["cursor"]
    refused = prism(tmp_path, "--store", f"sqlite:///{tmp_path / 'plain.db'}", "watch", "default")
    assert refused.returncode == 1 and b"feed=true" in refused.stderr
