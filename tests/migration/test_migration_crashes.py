"""Crash safety: a process killed with SIGKILL during a backfill or a cutover.

The killed process is a real one (``crash_child.py``); the test then opens the same
migration from this process, as a restarted gateway would.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import prism
from prism.migration import MigrationSettings
from prism.model import Put

CHILD = Path(__file__).with_name("crash_child.py")
#: Same timings as the child: a dead process's heartbeat is gone after heartbeat_ttl.
SETTINGS = MigrationSettings(poll_interval=0.1, heartbeat_ttl=1.0, page_size=20)
#: Longest wait for the child to reach the point where it is killed.
CHILD_DEADLINE = 60.0


def _lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


def _spawn(mode: str, source: str, target: str, ns: str, out: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, str(CHILD), mode, source, target, ns, str(out)],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "src")},
        stderr=subprocess.PIPE,
    )


async def _wait_for(proc: subprocess.Popen[bytes], out: Path, ready: Any) -> list[dict[str, Any]]:
    deadline = time.monotonic() + CHILD_DEADLINE
    while time.monotonic() < deadline:
        lines = _lines(out)
        if ready(lines):
            return lines
        if proc.poll() is not None:
            pytest.fail(f"the child exited early: {proc.stderr.read().decode() if proc.stderr else ''}")
        await asyncio.sleep(0.02)
    proc.kill()
    pytest.fail(f"the child never got there: {_lines(out)[-3:]}")


def _kill(proc: subprocess.Popen[bytes]) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    if proc.stderr is not None:
        proc.stderr.close()


async def _seed(source: str, ns: str, count: int) -> None:
    async with prism.connect(source) as store:
        handle = store.namespace(ns)
        puts = [Put(f"seed-{i:05d}", b"v%d" % i) for i in range(count)]
        for i in range(0, count, 100):
            await handle.put_many(puts[i : i + 100])


async def test_backfill_killed_resumes_from_its_checkpoint(
    sqlite_url: str, redis: str, namespace: str, tmp_path: Path
) -> None:
    await _seed(sqlite_url, namespace, 300)
    async with prism.migrate(sqlite_url, redis, namespace, settings=SETTINGS) as m:
        await m.start()
    out = tmp_path / "backfill.jsonl"
    proc = _spawn("backfill", sqlite_url, redis, namespace, out)
    await _wait_for(proc, out, lambda lines: any(line.get("copied", 0) >= 80 for line in lines))
    _kill(proc)
    assert not any(line.get("done") for line in _lines(out))

    async with prism.migrate(sqlite_url, redis, namespace, settings=SETTINGS) as m:
        status = await m.status()
        checkpoint = await m.records.read_progress()
        assert status["phase"] == "backfilling", status
        assert checkpoint.cursor is not None and checkpoint.copied >= 80, checkpoint
        resumed: list[tuple[int, str | None]] = []
        status = await m.backfill(progress=lambda p: resumed.append((p.copied, p.cursor)))
        # The first page after the restart starts after the checkpoint, and counts on from it.
        assert resumed and resumed[0][1] is not None and resumed[0][1] > checkpoint.cursor, (
            resumed,
            checkpoint,
        )
        assert resumed[0][0] > checkpoint.copied
        # Nothing before the checkpoint was copied again: at most the page in flight at the kill.
        assert 300 <= status["backfill"]["copied"] <= 300 + SETTINGS.page_size, status
        status = await m.verify()
        assert status["phase"] == "verified" and status["verify"]["checked"] == 300, status


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_cutover_killed_leaves_one_primary_with_every_write(
    sqlite_url: str, redis: str, namespace: str, tmp_path: Path, seed: int
) -> None:
    await _seed(sqlite_url, namespace, 50)
    async with prism.migrate(sqlite_url, redis, namespace, settings=SETTINGS) as m:
        await m.start()
        await m.backfill()
        assert (await m.verify())["phase"] == "verified"
    out = tmp_path / "switch.jsonl"
    proc = _spawn("switch", sqlite_url, redis, namespace, out)
    await _wait_for(proc, out, lambda lines: sum("phase" in line for line in lines) >= 2 * seed)
    await asyncio.sleep(random.Random(seed).uniform(0.0, 0.3))
    _kill(proc)
    acknowledged = {line["key"]: line["etag"] for line in _lines(out) if "key" in line}
    assert acknowledged

    async with prism.migrate(sqlite_url, redis, namespace, settings=SETTINGS) as m:
        # A fence left up by the dead process lifts by itself after its deadline.
        deadline = time.monotonic() + SETTINGS.fence_timeout + 3.0
        while (status := await m.status())["phase"] == "cutting_over" and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            await m.router.refresh()
        assert status["phase"] in ("cut_over", "verified"), status
        primary = redis if status["phase"] == "cut_over" else sqlite_url
        assert status["primary"] == (m.target_name if primary == redis else m.source_name)
        handle = m.namespace_handle()
        assert m.router.primary is (m.router.target if primary == redis else m.router.source)
        for key, etag in acknowledged.items():
            item = await handle.get(key)
            assert item is not None and item.etag == etag, f"{key}: an acknowledged write is lost"
        # The other store is in step too: the switch back and forth proves it.
        await asyncio.sleep(SETTINGS.heartbeat_ttl + 0.2)  # the dead process's heartbeat expires
        status = await (m.cutover() if status["phase"] == "verified" else m.rollback())
        for key, etag in acknowledged.items():
            item = await handle.get(key)
            assert item is not None and item.etag == etag, f"{key}: missing from the other store"
