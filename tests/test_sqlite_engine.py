"""What the embedded store promises beyond the conformance suite: processes, locks, threads."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import prism

INCREMENTER = """
import sys, prism
url, n = sys.argv[1], int(sys.argv[2])
with prism.connect_sync(url) as store:
    ns = store.namespace("counters")
    done = 0
    while done < n:
        item = ns.get("c")
        try:
            if item is None:
                ns.put("c", b"1", if_absent=True)
            else:
                ns.put("c", str(int(item.value) + 1).encode(), if_match=item.etag)
            done += 1
        except prism.PreconditionFailed:
            pass
"""


def test_processes_sharing_one_file_lose_no_conditional_increment(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/shared.db"
    procs = [
        subprocess.Popen([sys.executable, "-c", INCREMENTER, url, "150"], stderr=subprocess.PIPE)
        for _ in range(3)
    ]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()
    with prism.connect_sync(url) as store:
        item = store.namespace("counters").get("c")
    assert item is not None and item.value == b"450"


async def test_waiting_for_another_process_lock_does_not_block_the_event_loop(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    async with prism.connect(f"sqlite:///{path}") as store:
        ns = store.namespace("n")
        await ns.put("warm", b"up")
        other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        other.execute("BEGIN IMMEDIATE")
        threading.Timer(0.4, lambda: other.execute("COMMIT")).start()
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        task = asyncio.create_task(ticker())
        started = time.monotonic()
        await ns.put("k", b"v")
        waited = time.monotonic() - started
        task.cancel()
        other.close()
        assert waited >= 0.3
        assert ticks >= 10, "the event loop stalled while the write waited for the lock"
        item = await ns.get("k")
        assert item is not None and item.value == b"v"


async def test_a_lock_held_past_busy_timeout_is_backend_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "stuck.db"
    async with prism.connect(f"sqlite:///{path}?busy_timeout=0.2") as store:
        ns = store.namespace("n")
        await ns.put("k", b"old")
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(prism.BackendUnavailable, match="locked"):
                await ns.put("k", b"new")
        finally:
            other.execute("ROLLBACK")
            other.close()
        item = await ns.get("k")
        assert item is not None and item.value == b"old"


def test_blocking_store_from_many_threads(tmp_path: Path) -> None:
    with prism.connect_sync(f"sqlite:///{tmp_path}/t.db") as store:
        ns = store.namespace("n")

        def work(i: int) -> None:
            for j in range(100):
                ns.put(f"k{i}:{j}", str(j).encode())
                assert ns.get(f"k{i}:{j}") is not None

        threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        keys: list[str] = []
        token = None
        while True:
            page = ns.scan(limit=250, page_token=token)
            keys += page.keys
            token = page.next_page_token
            if token is None:
                break
        assert len(keys) == 600 == len(set(keys))


def test_blocking_store_inside_a_running_event_loop(tmp_path: Path) -> None:
    async def notebook_cell() -> bytes | None:
        with prism.connect_sync(f"sqlite:///{tmp_path}/nb.db") as store:
            ns = store.namespace("n")
            ns.put("k", b"v")
            item = ns.get("k")
            return None if item is None else item.value

    assert asyncio.run(notebook_cell()) == b"v"


async def test_expired_rows_are_purged_by_later_writes(tmp_path: Path) -> None:
    path = tmp_path / "purge.db"
    async with prism.connect(f"sqlite:///{path}?purge_interval=0.1") as store:
        ns = store.namespace("n")
        await ns.put_many([prism.Put(f"k{i}", b"v", ttl=0.1) for i in range(20)])
        await asyncio.sleep(0.3)
        await ns.put("trigger", b"v")
        rows = sqlite3.connect(path).execute("SELECT count(*) FROM prism_items").fetchone()[0]
        assert rows == 1


def test_memory_database_and_bad_urls() -> None:
    with prism.connect_sync("sqlite:///:memory:") as store:
        ns = store.namespace("n")
        ns.put("k", b"v")
        assert ns.exists("k")
    with pytest.raises(prism.InvalidArgument, match="unknown SQLite options"):
        prism.connect("sqlite:///x.db?bogus=1")
    with pytest.raises(prism.InvalidArgument, match="sqlite:///"):
        prism.connect("sqlite://")
    with pytest.raises(prism.InvalidArgument, match="Did you mean 'sqlite'"):
        prism.connect("sqlit:///x.db")


async def test_an_unwritable_path_is_backend_unavailable(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(prism.BackendUnavailable, match="cannot open"):
        await prism.connect(f"sqlite:///{blocker}/db.sqlite")


def test_reads_leave_no_read_transaction_open(tmp_path: Path) -> None:
    """A get ends its read at once: another process's checkpoint can empty the WAL right after it."""
    path = tmp_path / "wal.db"
    with prism.connect_sync(f"sqlite:///{path}") as store:
        ns = store.namespace("n")
        ns.put("k", b"v")
        other = sqlite3.connect(path, isolation_level=None)
        try:
            for read in (lambda: ns.get("k"), lambda: ns.get("missing"), lambda: ns.exists("k")):
                read()
                other.execute("INSERT INTO prism_items VALUES ('x', 'y', '', x'00', 'e', NULL, NULL, 0)")
                other.execute("DELETE FROM prism_items WHERE ns = 'x'")
                busy, _, _ = other.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
                assert busy == 0, "a read transaction was left open"
        finally:
            other.close()


async def test_cache_and_mmap_sizes_are_set_on_every_connection(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/sized.db?cache_size=65536&mmap_size=268435456"
    async with prism.connect(url) as store:
        await store.namespace("n").put("k", b"v")
        backend = store.backend
        for conn in (backend._conn, backend._slow_conn):  # type: ignore[attr-defined]
            assert conn is not None
            assert conn.execute("PRAGMA cache_size").fetchone()[0] == -65536
            assert conn.execute("PRAGMA mmap_size").fetchone()[0] == 268435456
    async with prism.connect(f"sqlite:///{tmp_path}/plain.db") as store:
        conn = store.backend._conn  # type: ignore[attr-defined]
        assert conn.execute("PRAGMA cache_size").fetchone()[0] == -2000
        assert conn.execute("PRAGMA mmap_size").fetchone()[0] == 0


@pytest.mark.parametrize(
    ("query", "field"),
    [("cache_size=0", "cache_size"), ("cache_size=lots", "cache_size"), ("mmap_size=-1", "mmap_size")],
)
def test_bad_cache_and_mmap_sizes_name_the_option(tmp_path: Path, query: str, field: str) -> None:
    with pytest.raises(prism.InvalidArgument, match=field):
        prism.connect(f"sqlite:///{tmp_path}/bad.db?{query}")
