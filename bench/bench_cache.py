"""The cache tier, side by side in one run: shared-cache hits, near-cache hits, and the gateway.

    python -m bench cache [--rounds 5] [--calls 3000] [--duration 3] [--quick]

Starts its own ``redis-server`` and PostgreSQL (``prism.testing.servers``) and measures:

* a shared-cache hit through the library (``await ns.get(key)`` on a namespace with
  ``cache=Cache(redis_store)``) beside a raw redis-py ``GET`` of a string holding the
  same bytes as the cache entry, one call after another, alternating sides per round;
* a near-cache hit (``ns.get`` on a namespace with ``near_cache=NearCache()``), async
  and blocking;
* the near cache's staleness across processes: another store handle writes, and the
  time until the near-cached handle reads the new value is taken (PostgreSQL with
  its change feed, so the bound is the feed's delivery);
* ``GET /v1/kv/hot/k`` (1 KiB) on ``prism serve`` over a PostgreSQL namespace, without
  a cache, with the shared cache, and with the shared and near caches: maximum
  throughput, closed loop, with the load generator of ``bench.bench_gateway``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import redis.asyncio as aioredis

import prism
from bench._report import environment, spread, write_section
from bench.bench_gateway import _free_port, _generator, _wait_for_port
from prism.testing.servers._base import env_url
from prism.testing.servers.postgres import PostgresServer
from prism.testing.servers.redis import RedisServer

ROOT = Path(__file__).resolve().parent.parent
VALUE = b"x" * 100
GATEWAY_VALUE = b"x" * 1024
#: Targets of the issue: shared hit / raw GET, near hit, cached gateway / uncached gateway.
SHARED_RATIO_TARGET = 1.2
NEAR_TARGET_US = 3.0
GATEWAY_RATIO_TARGET = 2.0
#: The cache calls' timeout in these runs (seconds).
CACHE_TIMEOUT = 1.0


async def _per_call(call: Callable[[], Awaitable[None]], calls: int) -> float:
    """Seconds per call of ``call()``, one after another."""
    return (await _per_call_cpu(call, calls))[0]


async def _per_call_cpu(call: Callable[[], Awaitable[None]], calls: int) -> tuple[float, float]:
    """Seconds per call of ``call()``, one after another: wall clock, and this process's CPU."""
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(calls):
        await call()
    return (time.perf_counter() - start) / calls, (time.process_time() - cpu) / calls


async def _library(redis_url: str, pg_url: str, rounds: int, calls: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"raw": [], "shared": [], "near": [], "near_sync": [], "stale_ms": []}
    out |= {"raw_cpu": [], "shared_cpu": []}
    async with prism.connect(redis_url) as cache_store, prism.connect(pg_url) as store:
        # A cache call past CACHE_TIMEOUT goes to the store: generous here, so that a stall of
        # this shared machine measures a slow hit rather than a store read.
        ns = store.namespace("bench-cache", cache=prism.Cache(cache_store, timeout=CACHE_TIMEOUT))
        await ns.put("k", VALUE)
        await ns.get("k")
        await ns.get("k")  # the first read creates the cache generation, the second fills
        entry = await cache_store.backend.get("prism-cache.bench-cache", "e:k", "")
        assert entry is not None, "the shared cache was not filled"
        raw = aioredis.Redis.from_url(redis_url)
        # The raw side reads a string as long as what the cache's GET returns for the entry.
        await raw.set("bench-raw-entry", entry.value + b"m" * 40)
        near = store.namespace("bench-near", near_cache=prism.NearCache(ttl=3600))
        await near.put("k", VALUE)
        await near.get("k")

        async def raw_get() -> None:
            await raw.get("bench-raw-entry")

        async def shared_get() -> None:
            await ns.get("k")

        async def near_get() -> None:
            await near.get("k")

        for _ in range(calls // 10):  # warm both connections
            await raw_get()
            await shared_get()
        for r in range(rounds):
            sides = [("raw", raw_get), ("shared", shared_get)]
            for name, fn in sides if r % 2 == 0 else reversed(sides):
                wall, cpu = await _per_call_cpu(fn, calls)
                out[name].append(wall)
                out[name + "_cpu"].append(cpu)
            out["near"].append(await _per_call(near_get, calls * 20))
        await raw.aclose()
        from prism.kv.cache import CachedBackend

        tier = ns._backend
        assert isinstance(tier, CachedBackend) and tier.stats.shared is not None
        out["errors"] = [float(tier.stats.shared.errors)]
        out["hits"] = [float(tier.stats.shared.hits)]
    return out


def _near_sync(rounds: int, calls: int) -> list[float]:
    """A near-cache hit through the blocking API (no coroutine at all)."""
    times = []
    with tempfile.TemporaryDirectory() as d, prism.connect_sync(f"sqlite:///{d}/n.db") as store:
        ns = store.namespace("bench-near", near_cache=prism.NearCache(ttl=3600))
        ns.put("k", VALUE)
        ns.get("k")
        get = ns.get
        for _ in range(rounds):
            start = time.perf_counter()
            for _ in range(calls):
                get("k")
            times.append((time.perf_counter() - start) / calls)
    return times


async def _staleness(pg_url: str, samples: int) -> list[float]:
    """Milliseconds from an acknowledged write elsewhere until a near-cached reader sees it."""
    feed_url = pg_url + ("&" if "?" in pg_url else "?") + "feed=true"
    out = []
    async with prism.connect(feed_url) as reader_store, prism.connect(feed_url) as writer_store:
        reader = reader_store.namespace("bench-stale", near_cache=prism.NearCache(ttl=60, poll_interval=0.1))
        writer = writer_store.namespace("bench-stale")
        await writer.put("k", b"0")
        for i in range(1, samples + 1):
            await reader.get("k")  # cached
            await asyncio.sleep(0.05)
            await writer.put("k", str(i).encode())
            acked = time.perf_counter()
            while True:
                item = await reader.get("k")
                if item is not None and item.value == str(i).encode():
                    break
                await asyncio.sleep(0.0005)
            out.append((time.perf_counter() - acked) * 1000)
    return out


def _gateway_config(directory: Path, name: str, pg_url: str, redis_url: str, tiers: str) -> Path:
    ns: dict[str, object] = {"name": "hot", "store": "main"}
    if tiers in ("shared", "shared+near"):
        ns["cache"] = {"store": "cache", "timeout": CACHE_TIMEOUT}
    if tiers == "shared+near":
        ns["near_cache"] = {"max_items": 10000, "ttl": 5}
    if tiers == "memory":
        pg_url = "memory://"  # no store I/O at all: the most any cache could give
    cfg = {
        "stores": {"main": pg_url, "cache": redis_url},
        "namespaces": [ns],
        "audit": {"sink": "none"},
        "server": {"access_log": False},
        "streaming": {"enabled": False},
    }
    path = directory / f"{name}.json"
    path.write_text(json.dumps(cfg))
    return path


def _gateway(pg_url: str, redis_url: str, rounds: int, duration: float) -> dict[str, list[float]]:
    prism_cmd = str(Path(sys.executable).with_name("prism"))
    results: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as d:
        procs: dict[str, tuple[subprocess.Popen[bytes], int]] = {}
        try:
            for tiers in ("none", "shared", "shared+near", "memory"):
                port = _free_port()
                config = _gateway_config(Path(d), tiers.replace("+", "-"), pg_url, redis_url, tiers)
                proc = subprocess.Popen(
                    [prism_cmd, "serve", "--config", str(config), "--port", str(port)],
                    cwd=ROOT,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                procs[tiers] = (proc, port)
                _wait_for_port(port, proc)
                results[tiers] = []
            for seeded in ("none", "memory"):
                _, port = procs[seeded]
                r = httpx.put(f"http://127.0.0.1:{port}/v1/kv/hot/k", content=GATEWAY_VALUE, timeout=10)
                r.raise_for_status()
            for _, port in procs.values():  # warm up (and fill the caches)
                _generator(["closed", str(port), "/v1/kv/hot/k", "8", "1", "{}"])
            for r_ in range(rounds):
                order = list(procs) if r_ % 2 == 0 else list(reversed(procs))
                for tiers in order:
                    _, port = procs[tiers]
                    res = _generator(["closed", str(port), "/v1/kv/hot/k", "32", str(duration), "{}"])
                    if res["errors"]:
                        raise RuntimeError(f"{res['errors']} error responses from the {tiers} gateway")
                    results[tiers].append(float(res["rps"]))
        finally:
            for proc, _ in procs.values():
                proc.terminate()
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
    return results


def _cell(values: list[float], scale: float, unit: str) -> str:
    med, lo, hi = spread([v * scale for v in values])
    return f"{med:.2f} {unit} ({lo:.2f}-{hi:.2f})"


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench cache")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--quick", action="store_true", help="fewer rounds and calls, for a smoke run")
    args = parser.parse_args([a for a in argv if a != "cache"])
    if args.quick:
        args.rounds, args.calls, args.duration = 2, 500, 1.0
    redis_url = env_url("redis")
    redis_server = None
    if redis_url is None:
        redis_server = RedisServer.local()
        redis_url = redis_server.url
    pg_url = env_url("postgres")
    pg_server = None
    if pg_url is None:
        pg_server = PostgresServer.launch()
        pg_url = pg_server.url
    try:
        lib = asyncio.run(_library(redis_url, pg_url, args.rounds, args.calls))
        lib["near_sync"] = _near_sync(args.rounds, args.calls * 20)
        lib["stale_ms"] = asyncio.run(_staleness(pg_url, 20 if not args.quick else 5))
        gw = _gateway(pg_url, redis_url, args.rounds, args.duration)
    finally:
        if redis_server is not None:
            redis_server.close()
        if pg_server is not None:
            pg_server.close()
    ratios = [s / r for s, r in zip(lib["shared"], lib["raw"], strict=True)]
    shared_ratio = statistics.median(ratios)
    cpu_ratios = [s / r for s, r in zip(lib["shared_cpu"], lib["raw_cpu"], strict=True)]
    cpu_ratio = statistics.median(cpu_ratios)
    near_us = statistics.median(lib["near"]) * 1e6
    gw_shared = statistics.median(s / n for s, n in zip(gw["shared"], gw["none"], strict=True))
    gw_near = statistics.median(s / n for s, n in zip(gw["shared+near"], gw["none"], strict=True))
    gw_memory = statistics.median(s / n for s, n in zip(gw["memory"], gw["none"], strict=True))
    stale = sorted(lib["stale_ms"])

    def verdict(ok: bool) -> str:
        return "met" if ok else "**missed**"

    command = " ".join(["python -m bench cache", *(a for a in argv if a != "cache")])
    lines = [
        "## Cache tier",
        "",
        f"`{command}` ({args.rounds} rounds; {environment('redis', 'hiredis', 'asyncpg', 'uvicorn')})",
        "",
        "Library, one call after another (median per call, min-max over rounds):",
        "",
        "| read | time per call | target | |",
        "|---|---|---|---|",
        f"| raw redis-py `GET` of the entry's bytes | {_cell(lib['raw'], 1e6, 'µs')} | | |",
        f"| shared-cache hit, `await ns.get(k)` | {_cell(lib['shared'], 1e6, 'µs')} | "
        f"<= {SHARED_RATIO_TARGET}x raw: **{shared_ratio:.2f}x** (min-max {min(ratios):.2f}-"
        f"{max(ratios):.2f}) | "
        f"{verdict(shared_ratio <= SHARED_RATIO_TARGET)} |",
        f"| client CPU per call (`time.process_time()`, same calls): raw `GET` / shared-cache hit | "
        f"{_cell(lib['raw_cpu'], 1e6, 'µs')} / {_cell(lib['shared_cpu'], 1e6, 'µs')} | "
        f"<= {SHARED_RATIO_TARGET}x raw: **{cpu_ratio:.2f}x** (min-max {min(cpu_ratios):.2f}-"
        f"{max(cpu_ratios):.2f}) | {verdict(cpu_ratio <= SHARED_RATIO_TARGET)} |",
        f"| near-cache hit, `await ns.get(k)` | {_cell(lib['near'], 1e6, 'µs')} | <= {NEAR_TARGET_US} µs | "
        f"{verdict(near_us <= NEAR_TARGET_US)} |",
        f"| near-cache hit, blocking `ns.get(k)` | {_cell(lib['near_sync'], 1e6, 'µs')} | | |",
        "",
        f"The shared tier answered {lib['hits'][0]:.0f} hits with {lib['errors'][0]:.0f} cache errors "
        f"(cache timeout {CACHE_TIMEOUT} s in this run).",
        "",
        "Near-cache staleness across processes on PostgreSQL with `feed=true` (another handle writes; "
        f"time from its acknowledgement until the near-cached reader sees the value; poll_interval 0.1 s): "
        f"median {statistics.median(stale):.1f} ms, max {stale[-1]:.1f} ms over {len(stale)} writes.",
        "",
        "Gateway, `GET /v1/kv/hot/k` (1 KiB) on a PostgreSQL namespace, `prism serve` (one process), "
        "32 keep-alive connections, closed loop (requests/s, median and min-max):",
        "",
        "| namespace | requests/s | vs no cache | |",
        "|---|---|---|---|",
        f"| no cache | {_cell(gw['none'], 1, '')} | 1.00x | |",
        f"| shared cache (Redis) | {_cell(gw['shared'], 1, '')} | **{gw_shared:.2f}x** | "
        f"{verdict(gw_shared >= GATEWAY_RATIO_TARGET)} (target >= {GATEWAY_RATIO_TARGET}x) |",
        f"| shared + near cache | {_cell(gw['shared+near'], 1, '')} | **{gw_near:.2f}x** | "
        f"{verdict(gw_near >= GATEWAY_RATIO_TARGET)} (target >= {GATEWAY_RATIO_TARGET}x) |",
        f"| for reference: a `memory://` store, no cache | {_cell(gw['memory'], 1, '')} | "
        f"**{gw_memory:.2f}x** | the most a cache could give this gateway |",
    ]
    print("\n".join(lines))
    write_section("cache", "\n".join(lines))
