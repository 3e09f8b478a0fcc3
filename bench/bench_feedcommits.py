"""What a PostgreSQL change feed costs the writers: the same puts with ``feed=true`` and without.

    python -m bench feedcommits [--seconds=3] [--rounds=3] [--writers=64] [--rate=1000] [--quick]

(Options take their values after `=`: `python -m bench` reads every word without a leading
dash as a benchmark name.)

Starts its own PostgreSQL (``prism.testing.servers``, fsync off) unless
``PRISM_TEST_POSTGRES_URL`` names one, and two tables in it: one with the change feed
(``feed=true``: the deferred trigger that logs each numbered change at commit), one
without, and for comparison one whose trigger takes one advisory lock per table at
commit, as the feed's trigger did before. In each round, alternating which table goes first:

* closed loop: ``--writers`` tasks each put one new key after another for ``--seconds``
  (commits per second: the most the table takes);
* open loop: puts issued on the clock at ``--rate`` per second for ``--seconds`` (up to
  ``--writers`` in flight), each put's time from issue to acknowledgement (p50 / p99):
  the wait a change spends before it can be delivered at all.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from typing import Any

import asyncpg

import prism
from bench._report import environment, spread, write_section
from prism.backends.postgres import feed_ddl
from prism.testing.servers._base import env_url
from prism.testing.servers.postgres import PostgresServer

LOCKED = "feed, one lock per table (the trigger before)"


def _url(base: str, table: str, feed: bool) -> str:
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}table={table}" + ("&feed=true" if feed else "")


async def _closed(ns: Any, writers: int, seconds: float) -> float:
    done = 0
    stop = time.monotonic() + seconds

    async def writer(w: int) -> None:
        nonlocal done
        i = 0
        while time.monotonic() < stop:
            await ns.put(f"c{w}:{i}", b"x")
            i += 1
            done += 1

    started = time.monotonic()
    await asyncio.gather(*(writer(w) for w in range(writers)))
    return done / (time.monotonic() - started)


async def _open(ns: Any, rate: float, seconds: float, in_flight_max: int) -> tuple[float, float, float]:
    total = int(rate * seconds)
    gate = asyncio.Semaphore(in_flight_max)
    latencies: list[float] = []
    tasks: set[asyncio.Task[None]] = set()

    async def put(i: int, issued: float) -> None:
        try:
            await ns.put(f"o{i}", b"x")
            latencies.append(time.perf_counter() - issued)
        finally:
            gate.release()

    started = time.monotonic()
    for i in range(total):
        due = started + i / rate
        now = time.monotonic()
        if due > now:
            await asyncio.sleep(due - now)
        await gate.acquire()
        task = asyncio.create_task(put(i, time.perf_counter()))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    await asyncio.gather(*tasks)
    achieved = total / (time.monotonic() - started)
    latencies.sort()
    p50 = latencies[len(latencies) // 2] * 1000
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000
    return p50, p99, achieved


async def _measure(base: str, args: argparse.Namespace) -> dict[str, dict[str, list[float]]]:
    tag = uuid.uuid4().hex[:6]
    tables = {
        "no feed": f"bench_feed_off_{tag}",
        "feed": f"bench_feed_on_{tag}",
        LOCKED: f"bench_feed_locked_{tag}",
    }
    out: dict[str, dict[str, list[float]]] = {
        side: {"cps": [], "p50": [], "p99": [], "rate": []} for side in tables
    }
    stores = {side: await prism.connect(_url(base, t, side != "no feed")) for side, t in tables.items()}
    # The trigger as it was before: one advisory lock per table at commit (for comparison).
    con = await asyncpg.connect(base.split("?")[0])
    try:
        lock = f"BEGIN\n    PERFORM pg_advisory_xact_lock(hashtext('prism-feed:{tables[LOCKED]}'));\n"
        await con.execute(feed_ddl(tables[LOCKED]).replace("BEGIN\n", lock, 1))
    finally:
        await con.close()
    try:
        for r in range(args.rounds):
            order = list(tables) if r % 2 == 0 else list(reversed(tables))
            for side in order:
                ns = stores[side].namespace(f"r{r}")
                await ns.put("warm", b"x")
                out[side]["cps"].append(await _closed(ns, args.writers, args.seconds))
                p50, p99, achieved = await _open(ns, args.rate, args.seconds, args.writers)
                out[side]["p50"].append(p50)
                out[side]["p99"].append(p99)
                out[side]["rate"].append(achieved)
    finally:
        for store in stores.values():
            await store.close()
    return out


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench feedcommits")
    parser.add_argument("names", nargs="*", help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--writers", type=int, default=64)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--quick", action="store_true", help="1 round of 1 s")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.seconds = 1, 1.0
    pg_url = env_url("postgres")
    server = None
    if pg_url is None:
        server = PostgresServer.launch()
        pg_url = server.url
    try:
        load_before = _load()
        res = asyncio.run(_measure(pg_url, args))
        load_after = _load()
    finally:
        if server is not None:
            server.close()

    def cell(values: list[float], fmt: str) -> str:
        med, lo, hi = spread(values)
        return f"{med:{fmt}} ({lo:{fmt}}-{hi:{fmt}})"

    ratio = statistics.median(f / n for f, n in zip(res["feed"]["cps"], res["no feed"]["cps"], strict=True))
    command = " ".join(["python -m bench feedcommits", *(a for a in argv if a.startswith("-"))])
    lines = [
        "## PostgreSQL change feed: what it costs the writers",
        "",
        f"`{command}` ({args.rounds} rounds of {args.seconds:g} s per measure; "
        f"{environment('asyncpg')}; load average {load_before} before, {load_after} after; 2 shared cores; "
        "PostgreSQL with fsync off)",
        "",
        "The same puts (new keys, one namespace) on a table with the change feed (`feed=true`) and on one "
        "without, alternating; median of rounds (min-max).",
        "",
        f"| table | commits/s, {args.writers} writers, closed loop | put p50 ms at {args.rate:g}/s | "
        f"put p99 ms at {args.rate:g}/s | puts/s achieved |",
        "|---|---|---|---|---|",
    ]
    for side in ("no feed", "feed", LOCKED):
        v = res[side]
        lines.append(
            f"| {side} | {cell(v['cps'], '.0f')} | {cell(v['p50'], '.1f')} | {cell(v['p99'], '.1f')} | "
            f"{cell(v['rate'], '.0f')} |"
        )
    locked_ratio = statistics.median(
        f / n for f, n in zip(res[LOCKED]["cps"], res["no feed"]["cps"], strict=True)
    )
    lines += [
        "",
        f"Commits/s with the feed: **{ratio:.2f}x** those without; with the trigger as it was before "
        f"(one lock per table at commit): **{locked_ratio:.2f}x** (medians of the rounds' ratios).",
    ]
    print("\n".join(lines))
    write_section("feedcommits", "\n".join(lines))


def _load() -> str:
    try:
        with open("/proc/loadavg") as f:
            return f.read().split()[0]
    except OSError:
        return "?"
