"""The embedded store through the public API, beside diskcache and raw sqlite3.

Measures get / put / get_many(100) / put_many(100) with 100 B and 1 KiB values, in
one process and one run, through Prism's async and blocking APIs, diskcache, and
plain ``sqlite3`` doing the same work on a table of the same shape. The sides take
turns round by round (see ``interleaved``); it reports the median time per key with
the spread, and the ratios the targets are stated in, as medians of per-round ratios.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from contextlib import ExitStack
from pathlib import Path

import diskcache

import prism
from bench._report import environment, spread, write_section

ROUNDS = 9
SINGLE_OPS = 3000
BATCH_CALLS = 60
BATCH = 100
COMMAND = "make bench ARGS=kv"
OPS = ("get", "put", "get_many(100)", "put_many(100)")
KEYS = {
    "get": SINGLE_OPS,
    "put": SINGLE_OPS,
    "get_many(100)": BATCH_CALLS * BATCH,
    "put_many(100)": BATCH_CALLS * BATCH,
}

#: One side of the comparison: for each op, a callable that runs one round of it.
Side = dict[str, Callable[[], None]]


def interleaved(sides: dict[str, Side]) -> dict[str, dict[str, list[float]]]:
    """Microseconds per key for each side, op and round.

    Within a round every side runs the op once, the side going first rotating from
    round to round, so load that comes and goes on a shared machine falls on all
    sides alike; ratios are then taken round by round.
    """
    names = list(sides)
    out: dict[str, dict[str, list[float]]] = {name: {op: [] for op in OPS} for name in names}
    for op in OPS:
        for name in names:
            sides[name][op]()  # warm-up
        for r in range(ROUNDS):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                start = time.perf_counter()
                sides[name][op]()
                out[name][op].append((time.perf_counter() - start) / KEYS[op] * 1e6)
    return out


def prism_async(stack: ExitStack, path: Path, value: bytes) -> Side:
    loop = asyncio.new_event_loop()
    stack.callback(loop.close)
    store = loop.run_until_complete(prism.connect(f"sqlite:///{path}"))
    stack.callback(lambda: loop.run_until_complete(store.close()))
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

    def run(fn: Callable[[], Awaitable[None]]) -> Callable[[], None]:
        return lambda: loop.run_until_complete(fn())

    loop.run_until_complete(ns.put_many(puts))
    return {"get": run(get), "put": run(put), "get_many(100)": run(get_many), "put_many(100)": run(put_many)}


def prism_sync(stack: ExitStack, path: Path, value: bytes) -> Side:
    store = stack.enter_context(prism.connect_sync(f"sqlite:///{path}"))
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

    return {"get": get, "put": put, "get_many(100)": get_many, "put_many(100)": put_many}


def disk_cache(stack: ExitStack, path: Path, value: bytes) -> Side:
    cache = diskcache.Cache(str(path))
    stack.callback(cache.close)
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

    return {"get": get, "put": put, "get_many(100)": get_many, "put_many(100)": put_many}


def raw_sqlite3(stack: ExitStack, path: Path, value: bytes) -> Side:
    conn = sqlite3.connect(str(path), isolation_level=None)
    stack.callback(conn.close)
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

    return {"get": get, "put": put, "get_many(100)": get_many, "put_many(100)": put_many}


def fmt(values: list[float]) -> str:
    median, lo, hi = spread(values)
    return f"{median:.2f} ({lo:.2f}-{hi:.2f})"


def speed_vs_diskcache(results: dict[str, dict[str, list[float]]], side: str, op: str) -> float:
    """diskcache's time over the side's, median of the per-round ratios (above 1: the side is faster)."""
    return statistics.median(d / p for d, p in zip(results["diskcache"][op], results[side][op], strict=True))


def main(argv: list[str]) -> None:
    sections = []
    verdicts = []
    for size in (100, 1024):
        value = bytes(range(256)) * (size // 256) + bytes(size % 256)
        with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
            base = Path(tmp)
            results = interleaved(
                {
                    "prism async": prism_async(stack, base / "a.db", value),
                    "prism sync": prism_sync(stack, base / "s.db", value),
                    "diskcache": disk_cache(stack, base / "dc", value),
                    "raw sqlite3": raw_sqlite3(stack, base / "raw.db", value),
                }
            )
        lines = [
            f"#### {size} B values: µs per key, median of {ROUNDS} rounds (min-max)",
            "",
            "| op | " + " | ".join(results) + " | diskcache ÷ prism async | diskcache ÷ prism sync |",
            "|---|" + "---|" * (len(results) + 2),
        ]
        med = {name: {op: spread(v)[0] for op, v in r.items()} for name, r in results.items()}
        for op in OPS:
            cells = " | ".join(fmt(results[name][op]) for name in results)
            ra = speed_vs_diskcache(results, "prism async", op)
            rs = speed_vs_diskcache(results, "prism sync", op)
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
                ratio = speed_vs_diskcache(results, api, op)
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
    load = os.getloadavg()[0]
    markdown = "\n\n".join(
        [
            "## Embedded store (SQLite) through the public API",
            f"Command: `{COMMAND}`. Measured {environment('prism', 'diskcache')}; 1-minute load average "
            f"{load:.1f} on {os.cpu_count()} CPUs when the run ended.",
            "Each round runs every side once, the side going first rotating from round to round; "
            "a ratio is the median of the per-round ratios.",
            *sections,
            "Targets:",
            "\n".join(verdicts),
        ]
    )
    write_section("kv", markdown)
    print(markdown)
