"""``prism kv export`` / ``prism kv import``: JSON lines out of one store and into another."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from prism import Put, connect_sync
from prism.testing.servers.redis import redis_server

#: The environment of the commands: no gateway named by the caller's environment.
LOCAL = {k: v for k, v in os.environ.items() if k not in ("PRISM_URL", "PRISM_TOKEN")}


def kv(tmp: Path, *args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "prism", "kv", *args],
        input=stdin,
        capture_output=True,
        cwd=tmp,
        timeout=60,
        env=LOCAL,
    )


def fill(url: str) -> None:
    with connect_sync(url) as store:
        ns = store.namespace("src")
        ns.put_many(Put(f"user:{i:04d}", bytes([i % 256]) * (i % 7), content_type="x/y") for i in range(250))
        ns.put("config", b"\x00\xff", ttl=600)
        ns.put("gone", b"soon")


def test_export_then_import_copies_values_content_types_and_expiry(tmp_path: Path) -> None:
    source, target = f"sqlite:///{tmp_path}/a.db", f"sqlite:///{tmp_path}/b.db"
    fill(source)
    exported = kv(tmp_path, "--store", source, "export", "src", "--batch", "64", "-o", "dump.jsonl")
    assert exported.returncode == 0, exported.stderr
    lines = [json.loads(line) for line in (tmp_path / "dump.jsonl").read_bytes().splitlines()]
    assert [line["key"] for line in lines] == ["config", "gone"] + [f"user:{i:04d}" for i in range(250)]
    assert base64.b64decode(lines[0]["value"]) == b"\x00\xff" and lines[0]["expires_at"] is not None
    assert lines[2]["content_type"] == "x/y" and lines[2]["etag"] and lines[2]["updated_at"]

    imported = kv(tmp_path, "--store", target, "import", "dst", "dump.jsonl", "--batch", "100")
    assert imported.returncode == 0, imported.stderr
    assert b"imported 252 keys" in imported.stderr
    with connect_sync(source) as a, connect_sync(target) as b:
        src, dst = a.namespace("src"), b.namespace("dst")
        keys = src.scan(limit=1000).keys
        assert dst.scan(limit=1000).keys == keys
        for old, new in zip(src.get_many(keys), dst.get_many(keys), strict=True):
            assert old is not None and new is not None
            assert (new.value, new.content_type) == (old.value, old.content_type)
        config = dst.get("config")
        old_config = src.get("config")
        assert config is not None and old_config is not None and config.expires_at is not None
        assert old_config.expires_at is not None
        assert abs((config.expires_at - old_config.expires_at).total_seconds()) < 1


def test_export_of_a_prefix_to_stdout_and_import_from_stdin(tmp_path: Path) -> None:
    source, target = f"sqlite:///{tmp_path}/a.db", f"sqlite:///{tmp_path}/b.db"
    fill(source)
    exported = kv(tmp_path, "--store", source, "export", "src", "user:00")
    assert exported.returncode == 0, exported.stderr
    assert len(exported.stdout.splitlines()) == 100
    imported = kv(tmp_path, "--store", target, "import", "dst", stdin=exported.stdout)
    assert imported.returncode == 0, imported.stderr
    with connect_sync(target) as b:
        assert b.namespace("dst").scan(limit=1000).keys == [f"user:{i:04d}" for i in range(100)]


def test_import_skips_expired_lines_and_needs_only_key_and_value(tmp_path: Path) -> None:
    past = (datetime.now(UTC) - timedelta(seconds=5)).isoformat()
    lines = [
        {"key": "a", "value": base64.b64encode(b"1").decode()},
        {"key": "b", "value": "Mg==", "expires_at": past},
        {"key": "c", "value": "Mw==", "content_type": "text/plain"},
    ]
    stdin = b"".join(json.dumps(line).encode() + b"\n" for line in lines)
    imported = kv(tmp_path, "--store", f"sqlite:///{tmp_path}/b.db", "import", "dst", stdin=stdin)
    assert imported.returncode == 0, imported.stderr
    assert b"imported 2 keys" in imported.stderr and b"skipped 1 already expired" in imported.stderr
    with connect_sync(f"sqlite:///{tmp_path}/b.db") as b:
        ns = b.namespace("dst")
        assert ns.scan().keys == ["a", "c"]
        c = ns.get("c")
        assert c is not None and c.value == b"3" and c.content_type == "text/plain"


def test_a_bad_line_stops_the_import_naming_the_line(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/b.db"
    good = b'{"key": "a", "value": "MQ=="}\n'
    for bad, message in [
        (b'{"key": "b"}\n', b"line 2: Object missing required field `value`"),
        (b'{"key": "b", "value": "not base64!"}\n', b"line 2: Invalid base64 encoded string - at `$.value`"),
        (b'{"key": \n', b"line 2: not a JSON object"),
        (b'{"key": "b", "value": "Mg==", "expires_at": "soon"}\n', b"line 2: expires_at must be an ISO 8601"),
    ]:
        result = kv(tmp_path, "--store", url, "import", "dst", stdin=good + bad)
        assert result.returncode == 1 and message in result.stderr, result.stderr
    spaced = kv(tmp_path, "--store", url, "import", "dst", stdin=good + b"\n" + b'{"key": "b"}\n')
    assert b"line 3: Object missing required field `value`" in spaced.stderr, spaced.stderr
    with connect_sync(url) as b:
        # Nothing of a batch with a bad line is written.
        assert b.namespace("dst").scan().keys == []


def test_batch_and_files_are_checked(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/b.db"
    too_big = kv(tmp_path, "--store", url, "import", "dst", "--batch", "1001")
    assert too_big.returncode == 1 and b"--batch must be between 1 and 1000, got 1001" in too_big.stderr
    bad_batch = kv(tmp_path, "--store", url, "export", "src", "--batch", "0")
    assert bad_batch.returncode == 1 and b"--batch must be between 1 and 1000, got 0" in bad_batch.stderr
    missing = kv(tmp_path, "--store", url, "import", "dst", "nope.jsonl")
    assert missing.returncode == 1 and b"cannot read nope.jsonl" in missing.stderr


def test_progress_is_shown_when_asked(tmp_path: Path) -> None:
    source = f"sqlite:///{tmp_path}/a.db"
    fill(source)
    exported = kv(tmp_path, "--store", source, "export", "src", "--progress", "-o", "d.jsonl")
    assert exported.returncode == 0 and b"exported 252 keys" in exported.stderr
    imported = kv(tmp_path, "--store", source, "import", "dst", "d.jsonl", "--progress")
    assert b"100% imported 252 keys" in imported.stderr
    quiet = kv(tmp_path, "--store", source, "export", "src", "-o", "e.jsonl")
    assert quiet.stderr == b""


def test_export_and_import_on_redis_in_several_batches(tmp_path: Path) -> None:
    with redis_server() as server:
        url = server.url_for(5)
        ns = f"t-{uuid.uuid4().hex[:8]}"
        with connect_sync(url) as store:
            for start in (0, 600):
                store.namespace(ns).put_many(
                    Put(f"k{i:04d}", str(i).encode()) for i in range(start, start + 600)
                )
        exported = kv(tmp_path, "--store", url, "export", ns, "--batch", "500", "-o", "dump.jsonl")
        assert exported.returncode == 0, exported.stderr
        # A key given twice ends with its last line, even across batches written back to back.
        with (tmp_path / "dump.jsonl").open("ab") as dump:
            dump.write(b'{"key": "k0000", "value": "bGFzdA=="}\n')
        imported = kv(tmp_path, "--store", url, "import", ns + "-copy", "dump.jsonl", "--batch", "300")
        assert imported.returncode == 0 and b"imported 1201 keys" in imported.stderr, imported.stderr
        with connect_sync(url) as store:
            copy = store.namespace(ns + "-copy")
            keys = [f"k{i:04d}" for i in range(1200)]
            first = copy.scan(limit=1000)
            assert first.keys + copy.scan(limit=1000, page_token=first.next_page_token).keys == keys
            values = [
                item.value if item else None for item in copy.get_many(keys[:600]) + copy.get_many(keys[600:])
            ]
            assert values == [b"last"] + [str(i).encode() for i in range(1, 1200)]
