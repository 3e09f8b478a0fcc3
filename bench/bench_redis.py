"""Redis through Prism beside raw redis-py doing the same operations, in one run (method: bench._network).

Starts its own ``redis-server`` (``prism.testing.servers.redis``; no persistence),
or uses ``PRISM_TEST_REDIS_URL``. The raw baseline is redis-py's asyncio client
(hiredis parser) on plain string keys: ``GET``, ``SET``, ``MGET`` and ``MSET``, on a
blocking pool as large as Prism's. Prism reads flat entries with the same
``GET``/``MGET`` and writes through one Lua script per call, which keeps each entry's
etag, expiry and content type, maintains the namespace index for scans, checks
conditions and reports whether a live entry was replaced.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis.asyncio as aioredis

import prism
from bench._network import VALUE, Baseline, Call, Calls, NetworkBench, table
from bench._report import spread
from prism.testing.servers.redis import RedisServer

POOL_SIZE = 64
#: Seconds a raw call waits for a free connection of the blocking pool.
POOL_TIMEOUT = 5.0
RAW_PREFIX = "bench-raw:"
#: Calls per side and round of the CPU measurement (one after another).
CPU_CALLS = {"get": 600, "put": 600, "get_many(100)": 60, "put_many(100)": 60}


class RedisBench(NetworkBench):
    name = "redis"
    title = "Redis: Prism vs raw redis-py"
    packages = ("redis", "hiredis")
    server = "redis-server from `prism.testing.servers.redis` without persistence"
    baselines = (Baseline("raw redis-py", "raw"),)
    #: Enough calls for ~0.1-0.3 s per side and round.
    calls = {
        ("get", 1): 2000,
        ("put", 1): 1500,
        ("get_many(100)", 1): 200,
        ("put_many(100)", 1): 100,
        ("get", 64): 5000,
        ("put", 64): 4000,
        ("get_many(100)", 64): 400,
        ("put_many(100)", 64): 200,
    }
    warmup = 300
    options = {"max_connections": POOL_SIZE}
    clients = f"Each side has one client on a blocking pool of {POOL_SIZE} connections."
    notes = (
        "The raw baseline is redis-py's asyncio client on plain string keys: `GET`, `SET`, `MGET` and "
        "`MSET`. Prism reads a flat entry with one `GET` (many with one `MGET`) of a string that holds "
        "its metadata (expiry, etag, update time, content type: about 40 bytes) before the value. An "
        "unconditional put without ttl is one small script (`EVALSHA`: the entry's `SET ... GET`, and a "
        "`ZADD` to the namespace's scan index when the record is new), so that `existed` is exact and scans "
        "never miss the key; such a put_many is one `MULTI`/`EXEC` of `ZADD` (every record; a no-op for "
        "those listed), `MGET` (the entries it replaces, read back to tell `existed`) and `MSET`. Writes "
        "with conditions or a ttl go through the general write script, which also keeps the expiry schedule. "
        "Validation, etags, metrics and error mapping run in the client. The table below measures what "
        "is left: the server's extra work per call (the script, the index, the read-back) and the client's "
        "(the larger commands, the replies of the transaction, the KeyValue layer).",
    )

    _url = ""

    async def extra(self, store: prism.Store, namespace: str, sides: dict[str, Calls]) -> str:
        """CPU per call of this process and of the server (its INFO used_cpu), calls one after another."""
        info = aioredis.Redis.from_url(self._url)

        async def server_cpu() -> float:
            cpu = await info.info("cpu")
            return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])

        async def measure(call: Call, calls: int) -> tuple[float, float]:
            server = await server_cpu()
            start = time.process_time()
            for i in range(calls):
                await call(i)
            client = time.process_time() - start
            return client / calls, (await server_cpu() - server) / calls

        raw = self.baselines[0].label
        lines = [
            "Where the time goes: CPU per call at concurrency 1, of the benchmark's process (the client) "
            "and of the Redis server (its `INFO cpu`), in µs, median (min-max) of "
            f"{self.rounds} rounds. At concurrency 64 the client and the server share the machine's "
            "2 CPUs, so the sum is what a call costs.",
            "",
            "| op | Prism client | raw client | Prism server | raw server | Prism/raw, client + server |",
            "|---|---|---|---|---|---|",
        ]
        try:
            for op, calls in CPU_CALLS.items():
                got: dict[str, list[tuple[float, float]]] = {"prism": [], raw: []}
                for _ in range(self.rounds):
                    for who in got:
                        got[who].append(await measure(sides[who][op], calls))

                def cell(who: str, part: int) -> str:
                    median, lo, hi = spread([t[part] * 1e6 for t in got[who]])  # noqa: B023
                    return f"{median:.0f} ({lo:.0f}-{hi:.0f})"

                total = statistics.median(
                    (p[0] + p[1]) / (r[0] + r[1]) for p, r in zip(got["prism"], got[raw], strict=True)
                )
                cells = [cell("prism", 0), cell(raw, 0), cell("prism", 1), cell(raw, 1)]
                lines.append(f"| {op} | {' | '.join(cells)} | {total:.2f} |")
        finally:
            await info.aclose()
        return "\n".join(lines)

    def start_server(self) -> RedisServer:
        return RedisServer.local()

    @asynccontextmanager
    async def raw(self, url: str) -> AsyncIterator[list[Calls]]:
        self._url = url
        pool = aioredis.BlockingConnectionPool.from_url(url, max_connections=POOL_SIZE, timeout=POOL_TIMEOUT)
        client = aioredis.Redis(connection_pool=pool)
        keys = self.keys
        try:
            yield [
                table(
                    get=lambda i: client.get(RAW_PREFIX + keys.one(i)),
                    put=lambda i: client.set(RAW_PREFIX + keys.one(i), VALUE),
                    get_many=lambda i: client.mget([RAW_PREFIX + k for k in keys.batch(i)]),
                    put_many=lambda i: client.mset({RAW_PREFIX + k: VALUE for k in keys.batch(i)}),
                )
            ]
            await client.delete(*(RAW_PREFIX + k for k in keys.all()))
        finally:
            await client.aclose()
            await pool.aclose()


def main(argv: list[str]) -> None:
    """Measure Prism and raw redis-py side by side and write the redis section of docs/benchmarks.md."""
    RedisBench().run()
