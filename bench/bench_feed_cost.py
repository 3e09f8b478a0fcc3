"""What the change feed costs a Redis store's writes: put and put_many(100) with ``feed=true`` beside
the same store without it, in one run.

Starts its own ``redis-server`` (``prism.testing.servers.redis``; no persistence), or
uses ``PRISM_TEST_REDIS_URL``. Three stores on the one server write 100 B values to
namespaces of their own: one without the feed, one with it and the default retention
(nothing is trimmed in a run this short: the stream only grows), and one with
``feed_max_changes=10000``, trimmed at every write once it is full (the steady state of
a busy namespace). In a round each side runs once, the side going first rotating from
round to round; a ratio is the median over rounds of the feed side's time to the plain
side's in the same round. A second table gives the CPU per call of this process and of
the server (its ``INFO cpu``) at concurrency 1.
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

VALUE = bytes(range(100))
BATCH = 100
KEYS = 1000
ROUNDS = 7
#: Calls per round and side by (operation, concurrency).
CALLS = {("put", 1): 1500, ("put", 64): 4000, ("put_many(100)", 1): 100, ("put_many(100)", 64): 200}
#: Calls per side and round of the CPU measurement.
CPU_CALLS = {"put": 600, "put_many(100)": 60}
SIDES = {
    "feed off": {},
    "feed on": {"feed": True},
    "feed on, 10k kept": {"feed": True, "feed_max_changes": 10_000},
}
POOL = 64

Call = Callable[[int], Awaitable[Any]]


def _calls(ns: prism.Namespace) -> dict[str, Call]:
    def key(i: int) -> str:
        return f"k{i % KEYS}"

    def batch(i: int) -> list[prism.Put]:
        first = (i * BATCH) % KEYS
        return [prism.Put(f"k{(first + j) % KEYS}", VALUE) for j in range(BATCH)]

    return {"put": lambda i: ns.put(key(i), VALUE), "put_many(100)": lambda i: ns.put_many(batch(i))}


async def _run(call: Call, calls: int, tasks: int) -> float:
    async def worker(first: int) -> None:
        for i in range(first, calls, tasks):
            await call(i)

    start = time.perf_counter()
    await asyncio.gather(*(worker(t) for t in range(tasks)))
    return (time.perf_counter() - start) / calls


async def _measure(url: str) -> tuple[dict[tuple[str, int], dict[str, list[float]]], str]:
    stores = {name: prism.connect(url, max_connections=POOL, **opts) for name, opts in SIDES.items()}
    info = aioredis.Redis.from_url(url)
    results: dict[tuple[str, int], dict[str, list[float]]] = {}
    try:
        for store in stores.values():
            await store.open()
        sides = {
            name: _calls(s.namespace(f"feedcost-{os.getpid()}-{i}"))
            for i, (name, s) in enumerate(stores.items())
        }
        names = list(sides)
        for calls in sides.values():  # every key once, every connection opened, every script loaded
            await _run(calls["put_many(100)"], KEYS // BATCH, 1)
            for call in calls.values():
                await _run(call, 200, POOL)
        for (op, tasks), count in CALLS.items():
            times: dict[str, list[float]] = {n: [] for n in names}
            for r in range(ROUNDS):
                order = names[r % len(names) :] + names[: r % len(names)]
                for name in order:
                    times[name].append(await _run(sides[name][op], count, tasks))
            results[op, tasks] = times
            ratios = " ".join(f"{n}/off {_ratio(times, n):.3f}" for n in names[1:])
            print(f"  {op:>14} x{tasks:<3} {ratios}", file=sys.stderr)

        async def server_cpu() -> float:
            cpu = await info.info("cpu")
            return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])

        lines = [
            "CPU per call at concurrency 1, of the benchmark's process (client) and of the Redis server, "
            f"in µs, median (min-max) of {ROUNDS} rounds:",
            "",
            "| op | " + " | ".join(f"{n} client | {n} server" for n in names) + " |",
            "|---|" + "---|---|" * len(names),
        ]
        for op, calls_n in CPU_CALLS.items():
            got: dict[str, list[tuple[float, float]]] = {n: [] for n in names}
            for _ in range(ROUNDS):
                for name in names:
                    server = await server_cpu()
                    start = time.process_time()
                    for i in range(calls_n):
                        await sides[name][op](i)
                    client = (time.process_time() - start) / calls_n
                    got[name].append((client, (await server_cpu() - server) / calls_n))
            cells = []
            for name in names:
                for part in (0, 1):
                    median, lo, hi = spread([t[part] * 1e6 for t in got[name]])
                    cells.append(f"{median:.0f} ({lo:.0f}-{hi:.0f})")
            lines.append(f"| {op} | " + " | ".join(cells) + " |")
        return results, "\n".join(lines)
    finally:
        await info.aclose()
        for store in stores.values():
            await store.close()


def _ratio(times: dict[str, list[float]], name: str) -> float:
    return statistics.median(p / q for p, q in zip(times[name], times["feed off"], strict=True))


def _report(results: dict[tuple[str, int], dict[str, list[float]]], cpu: str, where: str) -> str:
    names = list(SIDES)
    head = ["op", "concurrency", *(f"{n} µs/call" for n in names), *(f"{n} / off" for n in names[1:])]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (op, tasks), times in results.items():
        cells = []
        for name in names:
            median, lo, hi = spread([t * 1e6 for t in times[name]])
            cells.append(f"{median:.0f} ({lo:.0f}-{hi:.0f})")
        rows.append(
            f"| {op} | {tasks} | "
            + " | ".join(cells)
            + " | "
            + " | ".join(f"{_ratio(times, n):.2f}" for n in names[1:])
            + " |"
        )
    packages = environment("prism", "redis", "hiredis", "msgspec")
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return "\n\n".join(
        [
            "## Redis: what the change feed costs writes",
            f"Command: `make bench ARGS=feed_cost` ({packages}, {where}, {os.cpu_count()} CPUs shared by "
            f"the client, the server and whatever else ran; load average {load} when it ended). Times on a "
            "loaded machine drift from round to round; the CPU table below is steadier than the time table.",
            f"100 B values over {KEYS} keys, {ROUNDS} rounds; time per call in µs, median (min-max) over "
            "rounds; a ratio is the median of the per-round ratios to the store without the feed. "
            f"Concurrency N = N tasks sharing one store (a pool of {POOL} connections). With the feed every "
            "put also appends one stream entry (`XADD`) of its record, etag and time, and trims the stream "
            "(`XTRIM MAXLEN ~` and `MINID ~`), inside the put's script; a put_many appends its 100 entries "
            "inside its `MULTI`/`EXEC` and trims with one small script there.",
            "\n".join(rows),
            cpu,
        ]
    )


def main(argv: list[str]) -> None:
    """Measure Redis writes with and without the change feed; write the feed_cost section."""
    url = env_url("redis")
    server = None
    if url is None:
        try:
            server = RedisServer.local()
        except ServerUnavailable as exc:
            sys.exit(f"bench feed_cost: {exc}")
        url = server.url
    try:
        import uvloop

        run: Callable[[Any], Any] = uvloop.run
    except ImportError:
        run = asyncio.run
    try:
        results, cpu = run(_measure(url))
    finally:
        if server is not None:
            server.close()
    where = (
        "redis-server from `prism.testing.servers.redis` without persistence"
        if server
        else "PRISM_TEST_REDIS_URL"
    )
    write_section("feed_cost", _report(results, cpu, where))
