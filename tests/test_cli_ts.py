"""``prism ts``: a real process per command, on a real embedded store."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from prism.cli.ts import parse_duration
from prism.errors import InvalidArgument

LOCAL = {k: v for k, v in os.environ.items() if k not in ("PRISM_URL", "PRISM_TOKEN")}


def prism_ts(tmp: Path, *args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "prism", "ts", *args],
        input=stdin,
        capture_output=True,
        cwd=tmp,
        timeout=60,
        env=LOCAL,
    )


def _lines(*events: dict[str, object]) -> bytes:
    return b"".join(json.dumps(e).encode() + b"\n" for e in events)


def _ago(seconds: float) -> str:
    return (datetime.now(UTC) - timedelta(seconds=seconds)).isoformat()


def test_write_from_json_lines_then_read_piped(tmp_path: Path) -> None:
    events = _lines(
        {"time": _ago(10), "id": "e1", "data": {"page": "/home"}},
        {"time": _ago(7200), "id": "e0", "value": "AP8="},
        {"time": _ago(5), "id": "e2", "key": "k", "value": "aGk=", "content_type": "text/plain"},
    )
    written = prism_ts(tmp_path, "write", "clicks", "user:42", stdin=events)
    assert written.returncode == 0, written.stderr
    assert b"3 written, 0 already there, 0 refused" in written.stderr
    again = prism_ts(tmp_path, "write", "clicks", "user:42", stdin=events)
    assert b"0 written, 3 already there" in again.stderr
    read = prism_ts(tmp_path, "read", "clicks", "user:42", "--since", "1h")
    assert read.returncode == 0, read.stderr
    got = [json.loads(line) for line in read.stdout.splitlines()]
    assert [(e["id"], e["key"]) for e in got] == [("e2", "k"), ("e1", "")]
    assert got[1]["data"] == {"page": "/home"} and got[1]["content_type"] == "application/json"
    assert got[0]["value"] == "aGk=" and "data" not in got[0]
    everything = prism_ts(tmp_path, "read", "clicks", "user:42", "--oldest-first", "--limit", "2")
    assert [json.loads(line)["id"] for line in everything.stdout.splitlines()] == ["e0", "e1"]
    assert b"more exist" in everything.stderr


def test_conflicts_and_bad_lines_are_reported(tmp_path: Path) -> None:
    t = _ago(1)
    assert (
        prism_ts(
            tmp_path, "write", "ns", "s", stdin=_lines({"time": t, "id": "e", "value": "AA=="})
        ).returncode
        == 0
    )
    conflict = prism_ts(tmp_path, "write", "ns", "s", stdin=_lines({"time": t, "id": "e", "value": "AQ=="}))
    assert conflict.returncode == 1 and b"immutable" in conflict.stderr
    for bad in (
        b'{"time": "2024-01-01T00:00:00", "id": "naive", "value": ""}\n',
        b'{"time": "' + t.encode() + b'", "id": "both", "value": "", "data": 1}\n',
        b"not json\n",
    ):
        result = prism_ts(tmp_path, "write", "ns", "s", stdin=bad)
        assert result.returncode == 1 and result.stderr.startswith(b"prism: error:"), result.stderr
        assert b"Traceback" not in result.stderr


def test_read_prints_a_table_on_a_terminal(tmp_path: Path) -> None:
    prism_ts(tmp_path, "write", "ns", "s", stdin=_lines({"time": _ago(3), "id": "e1", "data": "hello"}))
    leader, follower = pty.openpty()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "prism", "ts", "read", "ns", "s", "--since", "15m"],
            stdout=follower,
            stderr=subprocess.PIPE,
            cwd=tmp_path,
            timeout=60,
            env=LOCAL,
        )
        os.close(follower)
        follower = -1
        output = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:
                break
            if not chunk:
                break
            output += chunk
    finally:
        os.close(leader)
        if follower >= 0:
            os.close(follower)
    assert proc.returncode == 0, proc.stderr
    lines = output.decode().replace("\r\n", "\n").splitlines()
    assert lines[0].split() == ["TIME", "ID", "KEY", "CONTENT", "TYPE", "VALUE"]
    assert "e1" in lines[1] and '"hello"' in lines[1]


def test_durations() -> None:
    assert parse_duration("90s") == timedelta(seconds=90)
    assert parse_duration("1.5h") == timedelta(minutes=90)
    assert parse_duration("7d") == timedelta(days=7)
    for bad in ("1y", "h", "-1h", ""):
        with pytest.raises(InvalidArgument):
            parse_duration(bad)


def test_reading_where_nothing_was_written_says_so(tmp_path: Path) -> None:
    result = prism_ts(tmp_path, "read", "ns", "s")
    assert result.returncode == 1 and b"no data directory" in result.stderr
