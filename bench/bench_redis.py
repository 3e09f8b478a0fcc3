"""Redis through Prism beside raw redis-py doing the same operations, in one run.

Starts its own ``redis-server`` (``prism.testing.servers.redis``; no persistence),
or uses ``PRISM_TEST_REDIS_URL``. Measures get, put, get_many(100) and put_many(100)
with 100 B values at concurrency 1 and 64: ``tasks`` coroutines share one store (or
one raw client on a pool of the same size) and run their share of the calls. Each
round times Prism and raw back to back, the order alternating between rounds, so a
ratio compares two runs made moments apart; the table shows the median time per call
with the spread over rounds, and the median of the per-round ratios.

The raw baseline is redis-py's asyncio client (hiredis parser) on plain string keys:
``GET``, ``SET``, ``MGET`` and ``MSET``. Prism reads flat entries with the same
``GET``/``MGET`` and writes through one Lua script per call, which keeps each entry's
etag, expiry and content type, maintains the namespace index for scans, checks
conditions and reports whether a live entry was replaced.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis

import prism
from bench._report import environment, spread, write_section
from prism.testing.servers._base import ServerUnavailable, env_url
from prism.testing.servers.redis import RedisServer

COMMAND = "make bench ARGS=redis"
ROUNDS = 7
VALUE = bytes(range(100))
BATCH = 100
KEYS = 1000
POOL_SIZE = 64
#: Calls per round for each (operation, concurrency): enough for ~0.1-0.3 s per side.
CALLS = {
    ("get", 1): 2000,
    ("put", 1): 1500,
    ("get_many(100)", 1): 200,
    ("put_many(100)", 1): 100,
    ("get", 64): 5000,
    ("put", 64): 4000,
    ("get_many(100)", 64): 400,
    ("put_many(100)", 64): 200,
}
#: Targets: Prism's time per call at most this multiple of raw's.
TARGETS = {1: 1.3, 64: 1.15}
RAW_PREFIX = "bench-raw:"

Call = Callable[[int], Awaitable[Any]]


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


def raw_calls(client: aioredis.Redis) -> dict[str, Call]:
    async def get(i: int) -> None:
        await client.get(f"{RAW_PREFIX}key:{i % KEYS}")

    async def put(i: int) -> None:
        await client.set(f"{RAW_PREFIX}key:{i % KEYS}", VALUE)

    async def get_many(i: int) -> None:
        await client.mget([RAW_PREFIX + k for k in _keys(i)])

    async def put_many(i: int) -> None:
        await client.mset({RAW_PREFIX + k: VALUE for k in _keys(i)})

    return {"get": get, "put": put, "get_many(100)": get_many, "put_many(100)": put_many}


async def run_calls(call: Call, calls: int, tasks: int) -> float:
    """Seconds per call: ``calls`` calls split over ``tasks`` concurrent tasks."""

    async def worker(first: int) -> None:
        for i in range(first, calls, tasks):
            await call(i)

    start = time.perf_counter()
    await asyncio.gather(*(worker(t) for t in range(tasks)))
    return (time.perf_counter() - start) / calls


async def measure(url: str) -> dict[tuple[str, int], dict[str, list[float]]]:
    results: dict[tuple[str, int], dict[str, list[float]]] = {}
    pool = aioredis.BlockingConnectionPool.from_url(url, max_connections=POOL_SIZE, timeout=5)
    client = aioredis.Redis(connection_pool=pool)
    async with prism.connect(url, max_connections=POOL_SIZE) as store:
        ns = store.namespace(f"bench-{os.getpid()}")
        sides = {"prism": prism_calls(ns), "raw": raw_calls(client)}
        for side in sides.values():  # fill every key and warm both pools
            for i in range(KEYS // BATCH):
                await side["put_many(100)"](i)
            for name in ("get", "put", "get_many(100)"):
                await run_calls(side[name], 300, POOL_SIZE)
        for (name, tasks), calls in CALLS.items():
            times: dict[str, list[float]] = {"prism": [], "raw": []}
            for r in range(ROUNDS):
                order = ("prism", "raw") if r % 2 == 0 else ("raw", "prism")
                for who in order:
                    times[who].append(await run_calls(sides[who][name], calls, tasks))
            results[name, tasks] = times
            ratio = statistics.median(p / q for p, q in zip(times["prism"], times["raw"], strict=True))
            print(f"  {name:>14} x{tasks:<3} prism/raw {ratio:.3f}", file=sys.stderr)
        await ns.delete_many([f"key:{i}" for i in range(KEYS)])
    await client.delete(*(f"{RAW_PREFIX}key:{i}" for i in range(KEYS)))
    await client.aclose()
    await pool.aclose()
    return results


def report(results: dict[tuple[str, int], dict[str, list[float]]], loop_name: str) -> str:
    lines = [
        "## Redis: Prism vs raw redis-py",
        "",
        f"Command: `{COMMAND}` ({environment('redis', 'hiredis', 'uvloop', 'msgspec')}, "
        f"event loop {loop_name}, redis-server from `prism.testing.servers.redis` without persistence, "
        f"{os.cpu_count()} CPUs shared by client and server).",
        "",
        f"100 B values, {ROUNDS} rounds; time per call in µs, median (min-max) over rounds; the ratio is the "
        "median of the per-round Prism/raw ratios. Concurrency N = N tasks sharing one store / one raw "
        f"client, each on a blocking pool of {POOL_SIZE} connections. Targets: Prism/raw <= {TARGETS[1]} at "
        f"concurrency 1 and <= {TARGETS[64]} at concurrency 64.",
        "",
        "| op | concurrency | Prism µs/call | raw redis-py µs/call | Prism/raw | target |",
        "|---|---|---|---|---|---|",
    ]
    for (name, tasks), times in results.items():
        cells = []
        for side in ("prism", "raw"):
            median, lo, hi = spread([t * 1e6 for t in times[side]])
            cells.append(f"{median:.0f} ({lo:.0f}-{hi:.0f})")
        ratio = statistics.median(p / q for p, q in zip(times["prism"], times["raw"], strict=True))
        target = TARGETS[tasks]
        verdict = "met" if ratio <= target else "missed"
        lines.append(f"| {name} | {tasks} | {cells[0]} | {cells[1]} | {ratio:.2f} | <= {target} {verdict} |")
    lines += [
        "",
        "The raw baseline is redis-py's asyncio client on plain string keys: `GET`, `SET`, `MGET` and "
        "`MSET`. Prism reads a flat entry with one `GET` (many with one `MGET`) of a string that holds "
        "its metadata before the value, and writes through one Lua script per call (`EVALSHA`) that "
        "checks conditions, tells whether a live entry was replaced, stores the etag, expiry and content "
        "type with the value, and keeps the namespace's scan index and expiry schedule in step. "
        "Validation, etag generation, metrics and error mapping run in the client. A script costs the "
        "server several times a plain `SET` per key, which is what separates the write rows.",
    ]
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    """Measure Prism and raw redis-py side by side and write the redis section of docs/benchmarks.md."""
    try:
        import uvloop
    except ImportError:
        loop_name, runner = "asyncio", asyncio.run
    else:
        loop_name, runner = "uvloop", uvloop.run
    url = env_url("redis")
    try:
        server = None if url else RedisServer.local()
    except ServerUnavailable as exc:
        sys.exit(f"bench redis: {exc}")
    try:
        results = runner(measure(server.url if server is not None else str(url)))
    finally:
        if server is not None:
            server.close()
    write_section("redis", report(results, loop_name))
