"""PostgreSQL through Prism beside raw asyncpg doing the same operations, in one run.

Starts its own PostgreSQL server (``prism.testing.servers.postgres``; fsync off, so
the numbers measure the client and the statements, not the disk). Measures get,
put, get_many(100) and put_many(100) with 100 B values at concurrency 1 and 64:
``tasks`` coroutines share one store (or one raw pool of the same size) and run
their share of the calls. Each round times Prism and raw back to back (the order
alternating between rounds), so a ratio compares two runs made seconds apart; the
table shows the median time per call with the spread over rounds, and the median of
the per-round ratios.

Two raw baselines, both hand-written asyncpg on a pool of the same size without
asyncpg's reset query on release. "Same rows" writes what Prism writes, into Prism's
table: a value with a fresh etag and ``updated_at``, read back with the expiry filter
(``SELECT ... WHERE namespace = $1 AND record = $2 AND key = ''``, an ``INSERT ... ON
CONFLICT DO UPDATE``, ``record = ANY($2)``, the upsert over ``unnest`` arrays); the
targets are stated against it. "Plain" is the same four statements on a bare
``(key text COLLATE "C" PRIMARY KEY, value bytea)`` table, for scale: no etag, no
expiry, no metadata. Prism also validates every key and value, reports whether a live
item was replaced, and counts every call in its metrics.

A second table splits Prism's client CPU per call between the KeyValue layer and the
PostgreSQL backend (called directly with what the KeyValue layer would hand it).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

import prism
from bench._report import environment, spread, write_section
from prism.model import StoredWrite
from prism.testing.servers._base import env_url
from prism.testing.servers.postgres import PostgresServer

COMMAND = "make bench ARGS=postgres"
ROUNDS = 7
VALUE = bytes(range(100))
BATCH = 100
KEYS = 1000
POOL_SIZE = 20
#: Calls per round for each (operation, concurrency): enough for ~0.1-0.3 s per side.
CALLS = {
    ("get", 1): 1500,
    ("put", 1): 1200,
    ("get_many(100)", 1): 200,
    ("put_many(100)", 1): 60,
    ("get", 64): 4000,
    ("put", 64): 3000,
    ("get_many(100)", 64): 400,
    ("put_many(100)", 64): 120,
}
#: Calls per round of the client CPU breakdown (concurrency 1).
CPU_CALLS = {"get": 600, "put": 500, "get_many(100)": 80, "put_many(100)": 40}
#: Targets: Prism's time per call at most this multiple of raw's.
TARGETS = {1: 1.3, 64: 1.15}

SIDES = ("prism", "same rows", "plain")
PLAIN_TABLE = "bench_plain_kv"
PLAIN_DDL = (
    f'CREATE TABLE IF NOT EXISTS {PLAIN_TABLE} (key text COLLATE "C" PRIMARY KEY, value bytea NOT NULL)'
)
PLAIN_GET = f"SELECT value FROM {PLAIN_TABLE} WHERE key = $1"
PLAIN_PUT = (
    f"INSERT INTO {PLAIN_TABLE} (key, value) VALUES ($1, $2) "
    "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value"
)
PLAIN_GET_MANY = f"SELECT key, value FROM {PLAIN_TABLE} WHERE key = ANY($1::text[])"
PLAIN_PUT_MANY = (
    f"INSERT INTO {PLAIN_TABLE} (key, value) SELECT * FROM unnest($1::text[], $2::bytea[]) "
    "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value"
)
ROWS_NAMESPACE = "bench-raw"
_LIVE = "(expires_at IS NULL OR expires_at > now())"
_SET = (
    "value = EXCLUDED.value, etag = EXCLUDED.etag, expires_at = NULL, content_type = NULL, "
    "updated_at = EXCLUDED.updated_at"
)
ROWS_GET = (
    "SELECT value, etag, expires_at, content_type, updated_at FROM prism_kv "
    f"WHERE namespace = $1 AND record = $2 AND key = '' AND {_LIVE}"
)
ROWS_PUT = (
    "INSERT INTO prism_kv (namespace, record, key, value, etag, updated_at) "
    "VALUES ($1, $2, '', $3, $4, now()) "
    f"ON CONFLICT (namespace, record, key) DO UPDATE SET {_SET}"
)
ROWS_GET_MANY = (
    "SELECT record, value, etag, expires_at, content_type, updated_at FROM prism_kv "
    f"WHERE namespace = $1 AND record = ANY($2::text[]) AND key = '' AND {_LIVE}"
)
ROWS_PUT_MANY = (
    "INSERT INTO prism_kv (namespace, record, key, value, etag, updated_at) "
    "SELECT $1, r, '', v, e, now() FROM unnest($2::text[], $3::bytea[], $4::text[]) AS i(r, v, e) "
    f"ON CONFLICT (namespace, record, key) DO UPDATE SET {_SET}"
)

Call = Callable[[int], Awaitable[Any]]


async def _no_reset(con: Any) -> None:
    """The raw pool skips asyncpg's per-release reset query, as Prism's pool does."""


def _keys(i: int) -> list[str]:
    start = (i * BATCH) % KEYS
    return [f"key:{(start + j) % KEYS}" for j in range(BATCH)]


def prism_calls(ns: Any) -> dict[str, Call]:
    async def get(i: int) -> None:
        await ns.get(f"key:{i % KEYS}")

    async def put(i: int) -> None:
        await ns.put(f"key:{i % KEYS}", VALUE)

    async def get_many(i: int) -> None:
        await ns.get_many(_keys(i))

    async def put_many(i: int) -> None:
        await ns.put_many([prism.Put(k, VALUE) for k in _keys(i)])

    return {"get": get, "put": put, "get_many(100)": get_many, "put_many(100)": put_many}


def rows_calls(pool: Any) -> dict[str, Call]:
    async def get(i: int) -> None:
        await pool.fetchrow(ROWS_GET, ROWS_NAMESPACE, f"key:{i % KEYS}")

    async def put(i: int) -> None:
        await pool.execute(ROWS_PUT, ROWS_NAMESPACE, f"key:{i % KEYS}", VALUE, secrets.token_hex(8))

    async def get_many(i: int) -> None:
        keys = _keys(i)
        rows = await pool.fetch(ROWS_GET_MANY, ROWS_NAMESPACE, keys)
        found = {row[0]: row for row in rows}
        _ = [found.get(k) for k in keys]

    async def put_many(i: int) -> None:
        etags = [secrets.token_hex(8) for _ in range(BATCH)]
        await pool.execute(ROWS_PUT_MANY, ROWS_NAMESPACE, _keys(i), [VALUE] * BATCH, etags)

    return {"get": get, "put": put, "get_many(100)": get_many, "put_many(100)": put_many}


def plain_calls(pool: Any) -> dict[str, Call]:
    async def get(i: int) -> None:
        await pool.fetchval(PLAIN_GET, f"key:{i % KEYS}")

    async def put(i: int) -> None:
        await pool.execute(PLAIN_PUT, f"key:{i % KEYS}", VALUE)

    async def get_many(i: int) -> None:
        keys = _keys(i)
        rows = await pool.fetch(PLAIN_GET_MANY, keys)
        found = {row[0]: row[1] for row in rows}
        _ = [found.get(k) for k in keys]

    async def put_many(i: int) -> None:
        await pool.execute(PLAIN_PUT_MANY, _keys(i), [VALUE] * BATCH)

    return {"get": get, "put": put, "get_many(100)": get_many, "put_many(100)": put_many}


async def run_calls(call: Call, calls: int, tasks: int) -> float:
    """Seconds per call: ``calls`` calls split over ``tasks`` concurrent tasks."""

    async def worker(first: int) -> None:
        for i in range(first, calls, tasks):
            await call(i)

    start = time.perf_counter()
    await asyncio.gather(*(worker(t) for t in range(tasks)))
    return (time.perf_counter() - start) / calls


def backend_calls(store: Any, namespace: str) -> dict[str, Call]:
    """The backend under the public API, handed what the KeyValue layer would hand it."""
    backend = store.backend
    now = time.time()
    writes = [StoredWrite(f"key:{j}", "", VALUE, etag=f"etag{j}", updated_at=now) for j in range(KEYS)]

    async def get(i: int) -> None:
        await backend.get(namespace, f"key:{i % KEYS}", "")

    async def put(i: int) -> None:
        await backend.write(namespace, [writes[i % KEYS]])

    async def get_many(i: int) -> None:
        await backend.get_many(namespace, [(k, "") for k in _keys(i)])

    async def put_many(i: int) -> None:
        start = (i * BATCH) % KEYS
        await backend.write(namespace, writes[start : start + BATCH])

    return {"get": get, "put": put, "get_many(100)": get_many, "put_many(100)": put_many}


async def client_cpu(call: Call, calls: int) -> float:
    """CPU seconds this process spends per call, calls made one after another."""
    start = time.process_time()
    for i in range(calls):
        await call(i)
    return (time.process_time() - start) / calls


def ratio(times: dict[str, list[float]], baseline: str) -> float:
    """Median over rounds of Prism's time divided by ``baseline``'s in the same round."""
    return statistics.median(p / q for p, q in zip(times["prism"], times[baseline], strict=True))


Results = dict[tuple[str, int], dict[str, list[float]]]


async def measure(url: str) -> tuple[Results, Results]:
    """Wall time per call by (op, concurrency) and side; client CPU per call by (op, 1) and layer."""
    results: Results = {}
    cpu: Results = {}
    pool = await asyncpg.create_pool(url, min_size=POOL_SIZE, max_size=POOL_SIZE, reset=_no_reset)
    async with prism.connect(url, pool_min_size=POOL_SIZE, pool_max_size=POOL_SIZE) as store:
        ns = store.namespace("bench")
        await pool.execute(PLAIN_DDL)
        await pool.execute(f"TRUNCATE {PLAIN_TABLE}")
        sides = {"prism": prism_calls(ns), "same rows": rows_calls(pool), "plain": plain_calls(pool)}
        for side_calls in sides.values():  # fill every key
            for i in range(KEYS // BATCH):
                await side_calls["put_many(100)"](i)
        await pool.execute(f"ANALYZE prism_kv; ANALYZE {PLAIN_TABLE}")
        for side_calls in sides.values():  # warm the pools and their statement caches
            for name in ("get", "put", "get_many(100)", "put_many(100)"):
                await run_calls(side_calls[name], 2 * POOL_SIZE, POOL_SIZE)
        for (name, tasks), calls in CALLS.items():
            times: dict[str, list[float]] = {side: [] for side in SIDES}
            for r in range(ROUNDS):
                for k in range(len(SIDES)):
                    side = SIDES[(r + k) % len(SIDES)]
                    times[side].append(await run_calls(sides[side][name], calls, tasks))
            results[name, tasks] = times
            print(
                f"  {name:>14} x{tasks:<3} prism/same rows {ratio(times, 'same rows'):.3f} "
                f"prism/plain {ratio(times, 'plain'):.3f}",
                file=sys.stderr,
            )
        layers = {
            "prism": sides["prism"],
            "backend": backend_calls(store, "bench"),
            "same rows": sides["same rows"],
        }
        for name, calls in CPU_CALLS.items():
            cpu[name, 1] = {layer: [] for layer in layers}
            for _ in range(ROUNDS):
                for layer, layer_calls in layers.items():
                    cpu[name, 1][layer].append(await client_cpu(layer_calls[name], calls))
    await pool.close()
    return results, cpu


def report(results: Results, cpu: Results, loop_name: str) -> str:
    lines = [
        "## PostgreSQL: Prism vs raw asyncpg",
        "",
        f"Command: `{COMMAND}` ({environment('asyncpg', 'uvloop', 'msgspec')}, "
        f"event loop {loop_name}, PostgreSQL from `prism.testing.servers.postgres` with fsync off, "
        f"{os.cpu_count()} CPUs shared by the client, the server and whatever else ran).",
        "",
        f"100 B values, {ROUNDS} rounds; time per call in µs, median (min-max) over rounds; a ratio is the "
        "median of the per-round ratios. Concurrency N = N tasks sharing one store / one raw pool, "
        f"{POOL_SIZE} connections each. Targets, against raw asyncpg writing the same rows: Prism/raw "
        f"<= {TARGETS[1]} at concurrency 1 and <= {TARGETS[64]} at concurrency 64.",
        "",
        "| op | concurrency | Prism | raw, same rows | Prism/raw | target | raw, plain table | Prism/plain |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (name, tasks), times in results.items():
        cells = {}
        for side in SIDES:
            median, lo, hi = spread([t * 1e6 for t in times[side]])
            cells[side] = f"{median:.0f} ({lo:.0f}-{hi:.0f})"
        same, plain = ratio(times, "same rows"), ratio(times, "plain")
        target = TARGETS[tasks]
        verdict = "met" if same <= target else "missed"
        lines.append(
            f"| {name} | {tasks} | {cells['prism']} | {cells['same rows']} | {same:.2f} "
            f"| <= {target} {verdict} | {cells['plain']} | {plain:.2f} |"
        )
    lines += [
        "",
        "*Raw, same rows*: hand-written asyncpg storing what Prism stores in Prism's table (a value, a fresh "
        "etag, `updated_at`; reads filter expired rows): a primary-key `SELECT`, an `INSERT ... ON CONFLICT "
        "DO UPDATE`, `record = ANY($2)`, and that upsert over `unnest` arrays. *Raw, plain table*: the same "
        "statements on a bare `(key, value)` table, for scale. Both raw sides use asyncpg's `Pool` with its "
        "reset query switched off; Prism uses its own leaner pool of asyncpg connections. Prism also "
        "validates keys and values, reports whether a live item was replaced, and counts every call in "
        "its metrics.",
        "",
        f"Where Prism's time goes: client CPU per call at concurrency 1 (µs, median (min-max) of {ROUNDS} "
        "rounds), for the public API, for the PostgreSQL backend alone (called with the writes and "
        "addresses the KeyValue layer would hand it), and for raw asyncpg writing the same rows. The "
        "difference between the first two is the KeyValue layer's validation, etags, results and metrics.",
        "",
        "| op | Prism API | backend alone | raw, same rows | KeyValue layer per call | backend/raw |",
        "|---|---|---|---|---|---|",
    ]
    for (name, _), times in cpu.items():
        cells = {}
        for layer in ("prism", "backend", "same rows"):
            median, lo, hi = spread([t * 1e6 for t in times[layer]])
            cells[layer] = f"{median:.0f} ({lo:.0f}-{hi:.0f})"
        above = statistics.median(times["prism"]) - statistics.median(times["backend"])
        backend_ratio = statistics.median(times["backend"]) / statistics.median(times["same rows"])
        lines.append(
            f"| {name} | {cells['prism']} | {cells['backend']} | {cells['same rows']} | {above * 1e6:.0f} "
            f"| {backend_ratio:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    """Measure Prism and raw asyncpg side by side and write the postgres section of docs/benchmarks.md."""
    try:
        import uvloop
    except ImportError:
        loop_name, runner = "asyncio", asyncio.run
    else:
        loop_name, runner = "uvloop", uvloop.run
    url = env_url("postgres")
    server = None if url else PostgresServer.launch()
    try:
        results, cpu = runner(measure(server.url if server is not None else str(url)))
    finally:
        if server is not None:
            server.close()
    write_section("postgres", report(results, cpu, loop_name))
