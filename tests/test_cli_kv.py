"""``prism kv``: a real process per command, on a real embedded store."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def prism(tmp: Path, *args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "prism", "kv", *args], input=stdin, capture_output=True, cwd=tmp, timeout=60
    )


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
    assert prism(tmp_path, "ls", "default").stdout.decode().split() == ["blob", "file", "greeting"]
    assert prism(tmp_path, "ls", "default", "gr").stdout.decode().split() == ["greeting"]
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
