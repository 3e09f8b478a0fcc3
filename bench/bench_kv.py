"""The embedded store through the public API, beside diskcache and raw sqlite3.

Measures get / put / get_many(100) / put_many(100) with 100 B and 1 KiB values, in
one process and one run, through Prism's async and blocking APIs, diskcache, and
plain ``sqlite3`` doing the same work on a table of the same shape. Reports the
median time per key over several rounds with the spread, and the ratios the
targets are stated in.
"""

from __future__ import annotations

import asyncio
import sqlite3
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import diskcache

import prism
from bench._report import environment, spread, write_section

ROUNDS = 7
SINGLE_OPS = 4000
BATCH_CALLS = 80
BATCH = 100
COMMAND = "make bench ARGS=kv"


def timed(fn: Callable[[], None], keys: int) -> list[float]:
    """Microseconds per key for each round."""
    out = []
    fn()  # warm-up
    for _ in range(ROUNDS):
        start = time.perf_counter()
        fn()
        out.append((time.perf_counter() - start) / keys * 1e6)
    return out


def timed_async(loop: asyncio.AbstractEventLoop, fn: Callable[[], Awaitable[None]], keys: int) -> list[float]:
    return timed(lambda: loop.run_until_complete(fn()), keys)


def bench_prism_async(path: Path, value: bytes) -> dict[str, list[float]]:
    loop = asyncio.new_event_loop()
    store = loop.run_until_complete(prism.connect(f"sqlite:///{path}"))
    ns = store.namespace("bench")
    keys = [f"key:{i}" for i in range(BATCH)]
    puts = [prism.Put(k, value) for k in keys]

    async def get() -> None:
        for _ in range(SINGLE_OPS):
            await ns.get("key:1")

    async def put() -> None:
        for i in range(SINGLE_OPS):
            await ns.put(keys[i % BATCH], value)

    async def get_many() -> None:
        for _ in range(BATCH_CALLS):
            await ns.get_many(keys)

    async def put_many() -> None:
        for _ in range(BATCH_CALLS):
            await ns.put_many(puts)

    loop.run_until_complete(put_many())
    result = {
        "get": timed_async(loop, get, SINGLE_OPS),
        "put": timed_async(loop, put, SINGLE_OPS),
        "get_many(100)": timed_async(loop, get_many, BATCH_CALLS * BATCH),
        "put_many(100)": timed_async(loop, put_many, BATCH_CALLS * BATCH),
    }
    loop.run_until_complete(store.close())
    loop.close()
    return result


def bench_prism_sync(path: Path, value: bytes) -> dict[str, list[float]]:
    with prism.connect_sync(f"sqlite:///{path}") as store:
        ns = store.namespace("bench")
        keys = [f"key:{i}" for i in range(BATCH)]
        puts = [prism.Put(k, value) for k in keys]
        ns.put_many(puts)

        def get() -> None:
            for _ in range(SINGLE_OPS):
                ns.get("key:1")

        def put() -> None:
            for i in range(SINGLE_OPS):
                ns.put(keys[i % BATCH], value)

        def get_many() -> None:
            for _ in range(BATCH_CALLS):
                ns.get_many(keys)

        def put_many() -> None:
            for _ in range(BATCH_CALLS):
                ns.put_many(puts)

        return {
            "get": timed(get, SINGLE_OPS),
            "put": timed(put, SINGLE_OPS),
            "get_many(100)": timed(get_many, BATCH_CALLS * BATCH),
            "put_many(100)": timed(put_many, BATCH_CALLS * BATCH),
        }


def bench_diskcache(path: Path, value: bytes) -> dict[str, list[float]]:
    cache = diskcache.Cache(str(path))
    keys = [f"key:{i}" for i in range(BATCH)]
    for k in keys:
        cache.set(k, value)

    def get() -> None:
        for _ in range(SINGLE_OPS):
            cache.get("key:1")

    def put() -> None:
        for i in range(SINGLE_OPS):
            cache.set(keys[i % BATCH], value)

    def get_many() -> None:
        for _ in range(BATCH_CALLS):
            for k in keys:
                cache.get(k)

    def put_many() -> None:
        for _ in range(BATCH_CALLS):
            with cache.transact():
                for k in keys:
                    cache.set(k, value)

    result = {
        "get": timed(get, SINGLE_OPS),
        "put": timed(put, SINGLE_OPS),
        "get_many(100)": timed(get_many, BATCH_CALLS * BATCH),
        "put_many(100)": timed(put_many, BATCH_CALLS * BATCH),
    }
    cache.close()
    return result


def bench_sqlite3(path: Path, value: bytes) -> dict[str, list[float]]:
    conn = sqlite3.connect(str(path), isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("CREATE TABLE kv (key TEXT PRIMARY KEY, value BLOB NOT NULL)")
    keys = [f"key:{i}" for i in range(BATCH)]
    conn.executemany("INSERT INTO kv VALUES (?, ?)", [(k, value) for k in keys])
    marks = ",".join("?" * BATCH)

    def get() -> None:
        for _ in range(SINGLE_OPS):
            conn.execute("SELECT value FROM kv WHERE key = ?", ("key:1",)).fetchone()

    def put() -> None:
        for i in range(SINGLE_OPS):
            conn.execute("INSERT OR REPLACE INTO kv VALUES (?, ?)", (keys[i % BATCH], value))

    def get_many() -> None:
        for _ in range(BATCH_CALLS):
            conn.execute(f"SELECT key, value FROM kv WHERE key IN ({marks})", keys).fetchall()

    def put_many() -> None:
        for _ in range(BATCH_CALLS):
            conn.execute("BEGIN")
            conn.executemany("INSERT OR REPLACE INTO kv VALUES (?, ?)", [(k, value) for k in keys])
            conn.execute("COMMIT")

    result = {
        "get": timed(get, SINGLE_OPS),
        "put": timed(put, SINGLE_OPS),
        "get_many(100)": timed(get_many, BATCH_CALLS * BATCH),
        "put_many(100)": timed(put_many, BATCH_CALLS * BATCH),
    }
    conn.close()
    return result


def fmt(values: list[float]) -> str:
    median, lo, hi = spread(values)
    return f"{median:.2f} ({lo:.2f}-{hi:.2f})"


def main(argv: list[str]) -> None:
    sections = []
    verdicts = []
    for size in (100, 1024):
        value = bytes(range(256)) * (size // 256) + bytes(size % 256)
        with tempfile.TemporaryDirectory() as tmp:
            base = Path(tmp)
            results = {
                "prism async": bench_prism_async(base / "a.db", value),
                "prism sync": bench_prism_sync(base / "s.db", value),
                "diskcache": bench_diskcache(base / "dc", value),
                "raw sqlite3": bench_sqlite3(base / "raw.db", value),
            }
        ops = list(results["diskcache"])
        lines = [
            f"#### {size} B values: µs per key, median of {ROUNDS} rounds (min-max)",
            "",
            "| op | " + " | ".join(results) + " | diskcache ÷ prism async | diskcache ÷ prism sync |",
            "|---|" + "---|" * (len(results) + 2),
        ]
        med = {name: {op: spread(v)[0] for op, v in r.items()} for name, r in results.items()}
        for op in ops:
            cells = " | ".join(fmt(results[name][op]) for name in results)
            ra = med["diskcache"][op] / med["prism async"][op]
            rs = med["diskcache"][op] / med["prism sync"][op]
            lines.append(f"| {op} | {cells} | {ra:.2f} | {rs:.2f} |")
        sections.append("\n".join(lines))
        for single, batch in (("get", "get_many(100)"), ("put", "put_many(100)")):
            ceiling = med["raw sqlite3"][single] / med["raw sqlite3"][batch]
            verdicts.append(
                f"- {size} B, raw sqlite3 {batch}: {ceiling:.1f}x the per-key throughput of its own single "
                f"{single} (the ceiling of the engine itself, for comparison)"
            )
        for api in ("prism async", "prism sync"):
            for op in ("get", "put"):
                ratio = med["diskcache"][op] / med[api][op]
                verdicts.append(
                    f"- {size} B, {api} {op}: {ratio:.2f}x diskcache's speed "
                    f"(target >= 1.0: {'met' if ratio >= 1.0 else 'missed'})"
                )
            for single, batch in (("get", "get_many(100)"), ("put", "put_many(100)")):
                gain = med[api][single] / med[api][batch]
                verdicts.append(
                    f"- {size} B, {api} {batch}: {gain:.1f}x the per-key throughput of single {single} "
                    f"(target >= 10: {'met' if gain >= 10 else 'missed'})"
                )
    markdown = "\n\n".join(
        [
            "## Embedded store (SQLite) through the public API",
            f"Command: `{COMMAND}`. Measured {environment('prism', 'diskcache')}.",
            *sections,
            "Targets:",
            "\n".join(verdicts),
        ]
    )
    write_section("kv", markdown)
    print(markdown)
