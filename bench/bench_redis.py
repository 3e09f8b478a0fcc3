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

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis.asyncio as aioredis

from bench._network import VALUE, Baseline, Calls, NetworkBench, table
from prism.testing.servers.redis import RedisServer

POOL_SIZE = 64
#: Seconds a raw call waits for a free connection of the blocking pool.
POOL_TIMEOUT = 5.0
RAW_PREFIX = "bench-raw:"


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
        "its metadata before the value, and writes through one Lua script per call (`EVALSHA`) that "
        "checks conditions, tells whether a live entry was replaced, stores the etag, expiry and content "
        "type with the value, and keeps the namespace's scan index and expiry schedule in step. "
        "Validation, etag generation, metrics and error mapping run in the client. A script costs the "
        "server several times a plain `SET` per key, which is what separates the write rows.",
    )

    def start_server(self) -> RedisServer:
        return RedisServer.local()

    @asynccontextmanager
    async def raw(self, url: str) -> AsyncIterator[list[Calls]]:
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
