"""TimeSeries through Prism beside the raw drivers, in one run: writes, newest-1000 reads, retention drop.

Starts its own PostgreSQL (fsync off) and ``redis-server`` (no persistence) from
``prism.testing.servers``. Measured side by side, sides alternating within each round:

* batched writes of 1,000 new events: ``ts.write`` vs raw asyncpg ``executemany``
  into a plain table indexed on ``(series, t, id)`` / vs a raw pipeline of 1,000
  ``ZADD`` (one round trip);
* reading the newest 1,000 events of one series of ``--events`` events (1,000,000
  by default, all in one slice): ``ts.read(limit=1000)`` vs the same query by hand
  on the same data (asyncpg ``SELECT ... ORDER BY t DESC ... LIMIT 1000`` on Prism's
  table; ``ZREVRANGEBYLEX ... LIMIT 0 1000`` on Prism's sorted set);
* dropping that slice when it leaves retention: ``ts.drop_expired()`` vs dropping an
  identical copy by hand (``DROP TABLE`` of a copy of the partition; ``UNLINK`` of a
  ``COPY`` of the sorted set), each once.

The big series is loaded by hand in Prism's own layout (``COPY`` into the partition;
pipelined ``ZADD`` of Prism's members), after one Prism write has created the slice.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import redis.asyncio as aioredis

import prism
from bench._report import environment, spread, write_section
from prism.backends.redis.timeseries import _event as _event_of
from prism.backends.redis.timeseries import _member
from prism.backends.timeseries import StoredEvent, short_name
from prism.testing.servers.postgres import PostgresServer
from prism.testing.servers.redis import redis_server

BATCH = 1000
VALUE = b"x" * 100
DAY = 86400
#: Seconds the raw Redis client waits for a reply (copying a million-member sorted set is slow).
RAW_TIMEOUT = 300.0
PLAIN_DDL = (
    "CREATE TABLE IF NOT EXISTS bench_ts_plain (series text NOT NULL, t bigint NOT NULL, id text NOT NULL, "
    "value bytea NOT NULL, PRIMARY KEY (series, t, id))"
)
PLAIN_INSERT = "INSERT INTO bench_ts_plain VALUES ($1, $2, $3, $4)"
READ_SQL = (
    "SELECT t, id, ikey, value, ctype FROM {table} WHERE series = $1 "
    "ORDER BY t DESC, id DESC, ikey DESC LIMIT 1000"
)

Timed = Callable[[int], Awaitable[Any]]


def _events(n: int, start: datetime, step: timedelta, tag: str) -> list[prism.Event]:
    return [prism.Event(time=start + i * step, id=f"{tag}{i}", value=VALUE) for i in range(n)]


async def _time(call: Timed, calls: int) -> float:
    begin = time.perf_counter()
    for i in range(calls):
        await call(i)
    return (time.perf_counter() - begin) / calls


async def _side_by_side(prism_call: Timed, raw_call: Timed, calls: int, rounds: int) -> dict[str, Any]:
    """Per-call seconds of each side over ``rounds`` rounds, the first side alternating; ratios per round."""
    ours: list[float] = []
    theirs: list[float] = []
    for r in range(rounds):
        if r % 2 == 0:
            ours.append(await _time(prism_call, calls))
            theirs.append(await _time(raw_call, calls))
        else:
            theirs.append(await _time(raw_call, calls))
            ours.append(await _time(prism_call, calls))
    ratios = [o / t for o, t in zip(ours, theirs, strict=True)]
    return {"prism": spread(ours), "raw": spread(theirs), "ratio": statistics.median(ratios)}


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _as_events(rows: Any) -> list[prism.Event]:
    """What any Python API handing out events pays on top of the raw driver: one Event and datetime each."""
    epoch, delta = _EPOCH, timedelta
    return [
        prism.Event(time=epoch + delta(0, 0, t), id=i, value=v, key=k, content_type=c)
        for t, i, k, v, c in rows
    ]


def _decoded(member: bytes) -> tuple[int, str, str, bytes, str | None]:
    event = _event_of(member)
    return event.time, event.id, event.key, event.value, event.content_type


def _slice_start(days_ago: int) -> datetime:
    now = int(time.time())
    return datetime.fromtimestamp((now // DAY - days_ago) * DAY, UTC)


async def bench_postgres(url: str, events: int, rounds: int, calls: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    pool = await asyncpg.create_pool(url, min_size=2, max_size=2)
    await pool.execute(PLAIN_DDL)
    ns = f"bench-{uuid.uuid4().hex[:8]}"
    async with prism.connect(url) as store:
        ts = store.timeseries(ns, slice_seconds=DAY)
        # -- batched writes of 1,000 new events
        base = datetime.now(UTC) - timedelta(hours=12)
        step = timedelta(microseconds=1)
        counter = iter(range(1 << 30))

        async def prism_write(i: int) -> None:
            n = next(counter)
            await ts.write("w", _events(BATCH, base + timedelta(seconds=n), step, f"p{n}-"))

        async def raw_write(i: int) -> None:
            n = next(counter)
            t0 = int((base + timedelta(seconds=n)).timestamp() * 1e6)
            await pool.executemany(PLAIN_INSERT, [("w", t0 + j, f"r{n}-{j}", VALUE) for j in range(BATCH)])

        await prism_write(0)
        await raw_write(0)
        out["write"] = await _side_by_side(prism_write, raw_write, calls, rounds)
        # -- the big series, in one past slice
        start = _slice_start(2)
        await ts.write("big", [prism.Event(time=start, id="first", value=VALUE)])
        table = f"prism_ts_{short_name(ns)}"
        partition = f"{table}_{int(start.timestamp()) // DAY}"
        t0 = int(start.timestamp() * 1e6)
        spacing = DAY * 1_000_000 // (events + 1)
        loaded = time.perf_counter()
        chunk = 100_000
        for at in range(1, events, chunk):
            rows = [
                ("big", t0 + k * spacing, f"e{k}", "", VALUE, None)
                for k in range(at, min(at + chunk, events))
            ]
            await pool.copy_records_to_table(
                table, records=rows, columns=["series", "t", "id", "ikey", "value", "ctype"]
            )
        out["load_seconds"] = time.perf_counter() - loaded
        await pool.execute(f"ANALYZE {table}")
        read_sql = READ_SQL.format(table=table)

        async def prism_read(i: int) -> None:
            page = await ts.read("big", limit=1000)
            assert len(page.events) == 1000

        async def raw_read(i: int) -> None:
            rows = await pool.fetch(read_sql, "big")
            assert len(rows) == 1000

        out["read"] = await _side_by_side(prism_read, raw_read, calls, rounds)

        async def raw_read_events(i: int) -> None:
            rows = await pool.fetch(read_sql, "big")
            assert len(_as_events((r[0], r[1], r[2], r[3], r[4]) for r in rows)) == 1000

        out["read_events"] = await _side_by_side(prism_read, raw_read_events, calls, rounds)
        # -- retention: an identical copy dropped by hand, then Prism's drop of the slice
        count = await pool.fetchval(f"SELECT count(*) FROM {partition}")
        await pool.execute(f"CREATE TABLE bench_ts_copy (LIKE {partition} INCLUDING ALL)")
        await pool.execute(f"INSERT INTO bench_ts_copy SELECT * FROM {partition}")
        begin = time.perf_counter()
        await pool.execute("DROP TABLE bench_ts_copy")
        by_hand = time.perf_counter() - begin
    async with prism.connect(url) as store:
        expiring = store.timeseries(ns, slice_seconds=DAY, retention_seconds=DAY)
        await expiring._ready()  # a fresh handle's one-time layout check (a KV read), not part of the drop
        begin = time.perf_counter()
        dropped = await expiring.drop_expired()
        ours = time.perf_counter() - begin
        assert dropped >= 1
        remaining = await pool.fetchval(f"SELECT count(*) FROM {table} WHERE series = 'big'")
        assert remaining == 0, remaining
    out["drop"] = {"rows": count, "prism": ours, "raw": by_hand}
    await pool.execute("DROP TABLE bench_ts_plain")
    await pool.close()
    return out


async def bench_redis(url: str, events: int, rounds: int, calls: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    raw = aioredis.Redis.from_url(url, socket_timeout=RAW_TIMEOUT)
    ns = f"bench-{uuid.uuid4().hex[:8]}"
    async with prism.connect(url) as store:
        ts = store.timeseries(ns, slice_seconds=DAY)
        base = datetime.now(UTC) - timedelta(hours=12)
        step = timedelta(microseconds=1)
        counter = iter(range(1 << 30))

        async def prism_write(i: int) -> None:
            n = next(counter)
            await ts.write("w", _events(BATCH, base + timedelta(seconds=n), step, f"p{n}-"))

        async def raw_write(i: int) -> None:
            n = next(counter)
            t0 = int((base + timedelta(seconds=n)).timestamp() * 1e6)
            pipe = raw.pipeline(transaction=False)
            for j in range(BATCH):
                pipe.zadd("bench-raw:w", {f"r{n}-{j}": t0 + j})
            await pipe.execute()

        await prism_write(0)
        await raw_write(0)
        out["write"] = await _side_by_side(prism_write, raw_write, calls, rounds)
        start = _slice_start(2)
        await ts.write("big", [prism.Event(time=start, id="first", value=VALUE)])
        slice_no = int(start.timestamp()) // DAY
        key = f"prism:ts:{{{short_name(ns)}}}:e:{slice_no}:big"
        t0 = int(start.timestamp() * 1e6)
        spacing = DAY * 1_000_000 // (events + 1)
        loaded = time.perf_counter()
        chunk = 10_000
        for at in range(1, events, chunk):
            members = {
                _member(StoredEvent(t0 + k * spacing, f"e{k}", "", VALUE, None))[1]: 0
                for k in range(at, min(at + chunk, events))
            }
            await raw.zadd(key, members)
        out["load_seconds"] = time.perf_counter() - loaded

        async def prism_read(i: int) -> None:
            page = await ts.read("big", limit=1000)
            assert len(page.events) == 1000

        async def raw_read(i: int) -> None:
            got = await raw.zrevrangebylex(key, "+", "-", start=0, num=1000)
            assert len(got) == 1000

        out["read"] = await _side_by_side(prism_read, raw_read, calls, rounds)

        async def raw_read_events(i: int) -> None:
            got = await raw.zrevrangebylex(key, "+", "-", start=0, num=1000)
            assert len(_as_events(_decoded(m) for m in got)) == 1000

        out["read_events"] = await _side_by_side(prism_read, raw_read_events, calls, rounds)
        count = await raw.zcard(key)
        await raw.copy(key, "bench-raw:copy")
        begin = time.perf_counter()
        await raw.unlink("bench-raw:copy")
        by_hand = time.perf_counter() - begin
    async with prism.connect(url) as store:
        expiring = store.timeseries(ns, slice_seconds=DAY, retention_seconds=DAY)
        await expiring._ready()  # a fresh handle's one-time layout check (a KV read), not part of the drop
        begin = time.perf_counter()
        dropped = await expiring.drop_expired()
        ours = time.perf_counter() - begin
        assert dropped >= 1 and await raw.exists(key) == 0
    out["drop"] = {"rows": count, "prism": ours, "raw": by_hand}
    await raw.delete("bench-raw:w")
    await raw.aclose()
    return out


def _ms(values: tuple[float, float, float], per: float = 1.0) -> str:
    median, low, high = (v * 1000 / per for v in values)
    return f"{median:.2f} ({low:.2f}-{high:.2f})"


def _verdict(ratio: float, target: float, at_least: bool) -> str:
    met = ratio >= target if at_least else ratio <= target
    sign = ">=" if at_least else "<="
    return f"{sign} {target} {'met' if met else 'missed'}"


def _section(results: dict[str, dict[str, Any]], args: argparse.Namespace, command: str) -> str:
    lines = [
        "## TimeSeries: Prism vs raw asyncpg and redis-py",
        "",
        f"Command: `{command}` ({environment('prism', 'asyncpg', 'redis', 'msgspec')}, PostgreSQL and "
        "redis-server from `prism.testing.servers` (fsync off, no persistence), 2 CPUs shared by the "
        "client, the servers and whatever else ran; 1-minute load average "
        f"{results['load']['before']:.1f} before and {results['load']['after']:.1f} after the run).",
        "",
        f"{args.rounds} rounds of {args.calls} calls per side, the first side alternating; times are per "
        "call, median (min-max) over rounds; a ratio is the median of the per-round ratios. Writes are "
        f"batches of {BATCH} new events of {len(VALUE)} B, written one batch after another. The read "
        f"series holds {args.events:,} events in one slice.",
        "",
        "| engine | op | Prism ms/call | raw ms/call | measure | target |",
        "|---|---|---|---|---|---|",
    ]
    for engine, raw_name in (("postgres", "asyncpg executemany"), ("redis", "pipelined ZADD")):
        r = results[engine]
        write = r["write"]
        throughput = 1 / write["ratio"]
        lines.append(
            f"| {engine} | write {BATCH} events (vs {raw_name}) | {_ms(write['prism'])} | "
            f"{_ms(write['raw'])} | throughput {throughput:.2f}x raw | "
            f"{_verdict(round(throughput, 2), 0.5, True)} |"
        )
        read = r["read"]
        lines.append(
            f"| {engine} | read newest 1000 of {args.events:,} | {_ms(read['prism'])} | {_ms(read['raw'])} | "
            f"time {read['ratio']:.2f}x raw | {_verdict(round(read['ratio'], 2), 1.3, False)} |"
        )
        floor = r["read_events"]
        lines.append(
            f"| {engine} | read newest 1000, raw + building `Event`s | {_ms(floor['prism'])} | "
            f"{_ms(floor['raw'])} | time {floor['ratio']:.2f}x raw + Events | the Python floor |"
        )
        drop = r["drop"]
        ratio = drop["prism"] / drop["raw"]
        lines.append(
            f"| {engine} | drop a slice of {drop['rows']:,} events (once) | {drop['prism'] * 1000:.1f} | "
            f"{drop['raw'] * 1000:.1f} | time {ratio:.2f}x by hand | whole-slice drop |"
        )
    lines += [
        "",
        "*Raw* sides: PostgreSQL writes are asyncpg `executemany` of one `INSERT` per event into a plain "
        "table with a primary key on `(series, t, id)`; reads are the same `SELECT ... ORDER BY t DESC, "
        "id DESC, ikey DESC LIMIT 1000` on Prism's partitioned table. Redis writes are one pipeline of "
        f"{BATCH} `ZADD` (one round trip); reads are `ZREVRANGEBYLEX ... LIMIT 0 1000` on Prism's sorted "
        "set; *raw + building `Event`s* adds what any Python API that hands out events pays on top "
        "(one `prism.Event` and `datetime` per event, and on Redis decoding Prism's members), the floor "
        "under Prism's read. Prism's write is one `INSERT ... SELECT FROM unnest(...) ON CONFLICT DO "
        "NOTHING RETURNING` "
        "on PostgreSQL, and on Redis one Lua script that looks up each event's identity before adding it "
        "(immutability); Prism's read also validates, makes `datetime`s and `Event`s, and a page token. "
        "A drop by hand is `DROP TABLE` of a copy of the partition / `UNLINK` of a `COPY` of the sorted "
        "set; Prism's drop also finds the expired slices (a catalog look-up). Load times of the big "
        f"series (by hand, in Prism's layout): PostgreSQL {results['postgres']['load_seconds']:.1f} s, "
        f"Redis {results['redis']['load_seconds']:.1f} s.",
    ]
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench timeseries")
    parser.add_argument("names", nargs="*", help=argparse.SUPPRESS)
    parser.add_argument("--events", type=int, default=1_000_000, help="events in the read series (1000000)")
    parser.add_argument("--rounds", type=int, default=7, help="rounds per measurement (7)")
    parser.add_argument("--calls", type=int, default=20, help="calls per side and round (20)")
    args, _ = parser.parse_known_args(argv)
    results: dict[str, dict[str, Any]] = {}
    load_before = os.getloadavg()[0]
    pg = PostgresServer.launch()
    try:
        results["postgres"] = asyncio.run(bench_postgres(pg.url, args.events, args.rounds, args.calls))
    finally:
        pg.close()
    with redis_server() as server:
        results["redis"] = asyncio.run(bench_redis(server.url, args.events, args.rounds, args.calls))
    results["load"] = {"before": load_before, "after": os.getloadavg()[0]}
    extra = "" if args.events == 1_000_000 else f" --events={args.events}"
    command = f".venv/bin/python -m bench timeseries{extra}"
    write_section("timeseries", _section(results, args, command))
