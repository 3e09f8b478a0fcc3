"""PostgreSQL through Prism beside raw asyncpg doing the same operations, in one run (method: bench._network).

Starts its own PostgreSQL server (``prism.testing.servers.postgres``; fsync off, so
the numbers measure the client and the statements, not the disk), or uses
``PRISM_TEST_POSTGRES_URL``.

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

import secrets
import statistics
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

import prism
from bench._network import BATCH, VALUE, Baseline, Call, Calls, Keys, NetworkBench, table
from bench._report import spread
from prism.model import StoredWrite
from prism.testing.servers.postgres import PostgresServer

POOL_SIZE = 20
#: Calls per round of the client CPU breakdown (concurrency 1).
CPU_CALLS = {"get": 600, "put": 500, "get_many(100)": 80, "put_many(100)": 40}
SAME_ROWS = Baseline("raw, same rows", "raw")
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


async def _no_reset(con: Any) -> None:
    """The raw pool skips asyncpg's per-release reset query, as Prism's pool does."""


def _in_order(rows: Sequence[Any], keys: list[str]) -> list[Any]:
    """The rows of a batch read by key, in the order asked, as a client would hand them back."""
    found = {row[0]: row for row in rows}
    return [found.get(k) for k in keys]


def rows_calls(pool: Any, keys: Keys) -> Calls:
    """Raw asyncpg writing and reading what Prism does, in Prism's table."""

    async def get_many(i: int) -> None:
        batch = keys.batch(i)
        _in_order(await pool.fetch(ROWS_GET_MANY, ROWS_NAMESPACE, batch), batch)

    def put_many(i: int) -> Any:
        etags = [secrets.token_hex(8) for _ in range(BATCH)]
        return pool.execute(ROWS_PUT_MANY, ROWS_NAMESPACE, keys.batch(i), [VALUE] * BATCH, etags)

    return table(
        get=lambda i: pool.fetchrow(ROWS_GET, ROWS_NAMESPACE, keys.one(i)),
        put=lambda i: pool.execute(ROWS_PUT, ROWS_NAMESPACE, keys.one(i), VALUE, secrets.token_hex(8)),
        get_many=get_many,
        put_many=put_many,
    )


def plain_calls(pool: Any, keys: Keys) -> Calls:
    """Raw asyncpg on a bare key-value table."""

    async def get_many(i: int) -> None:
        batch = keys.batch(i)
        _in_order(await pool.fetch(PLAIN_GET_MANY, batch), batch)

    return table(
        get=lambda i: pool.fetchval(PLAIN_GET, keys.one(i)),
        put=lambda i: pool.execute(PLAIN_PUT, keys.one(i), VALUE),
        get_many=get_many,
        put_many=lambda i: pool.execute(PLAIN_PUT_MANY, keys.batch(i), [VALUE] * BATCH),
    )


def backend_calls(store: prism.Store, namespace: str, keys: Keys) -> Calls:
    """The backend under the public API, handed what the KeyValue layer would hand it."""
    backend = store.backend
    now = time.time()
    writes = {k: StoredWrite(k, "", VALUE, etag=f"etag-{k}", updated_at=now) for k in keys.all()}
    return table(
        get=lambda i: backend.get(namespace, keys.one(i), ""),
        put=lambda i: backend.write(namespace, [writes[keys.one(i)]]),
        get_many=lambda i: backend.get_many(namespace, [(k, "") for k in keys.batch(i)]),
        put_many=lambda i: backend.write(namespace, [writes[k] for k in keys.batch(i)]),
    )


async def client_cpu(call: Call, calls: int) -> float:
    """CPU seconds this process spends per call, calls made one after another."""
    start = time.process_time()
    for i in range(calls):
        await call(i)
    return (time.process_time() - start) / calls


class PostgresBench(NetworkBench):
    name = "postgres"
    title = "PostgreSQL: Prism vs raw asyncpg"
    packages = ("asyncpg",)
    server = "PostgreSQL from `prism.testing.servers.postgres` with fsync off"
    baselines = (SAME_ROWS, Baseline("raw, plain table", "plain"))
    #: Enough calls for ~0.1-0.3 s per side and round.
    calls = {
        ("get", 1): 1500,
        ("put", 1): 1200,
        ("get_many(100)", 1): 200,
        ("put_many(100)", 1): 60,
        ("get", 64): 4000,
        ("put", 64): 3000,
        ("get_many(100)", 64): 400,
        ("put_many(100)", 64): 120,
    }
    options = {"pool_min_size": POOL_SIZE, "pool_max_size": POOL_SIZE}
    clients = f"Each side has one pool of {POOL_SIZE} connections."
    notes = (
        "*Raw, same rows*: hand-written asyncpg storing what Prism stores in Prism's table (a value, a fresh "
        "etag, `updated_at`; reads filter expired rows): a primary-key `SELECT`, an `INSERT ... ON CONFLICT "
        "DO UPDATE`, `record = ANY($2)`, and that upsert over `unnest` arrays. *Raw, plain table*: the same "
        "statements on a bare `(key, value)` table, for scale. Both raw sides use asyncpg's `Pool` with its "
        "reset query switched off; Prism uses its own leaner pool of asyncpg connections. Prism also "
        "validates keys and values, reports whether a live item was replaced, and counts every call in "
        "its metrics.",
        "Prism's put_many(100) is one statement too, the same upsert over `unnest` arrays, with no round "
        "trip more than the raw one: what it adds is per row. On conflict it replaces only a live row (an "
        "expired one is replaced apart, so that `existed` is exact), every written row is returned as "
        "`xmax = 0` (inserted or replaced) and gathered into arrays for the client, and the client builds "
        "each row's etag and metadata and, after the call, one result per key (the KeyValue layer's part "
        "in the table below).",
    )

    def start_server(self) -> PostgresServer:
        return PostgresServer.launch()

    @asynccontextmanager
    async def raw(self, url: str) -> AsyncIterator[list[Calls]]:
        self._pool = await asyncpg.create_pool(url, min_size=POOL_SIZE, max_size=POOL_SIZE, reset=_no_reset)
        try:
            await self._pool.execute(PLAIN_DDL)
            await self._pool.execute(f"TRUNCATE {PLAIN_TABLE}")
            yield [rows_calls(self._pool, self.keys), plain_calls(self._pool, self.keys)]
        finally:
            await self._pool.close()

    async def prepare(self) -> None:
        await self._pool.execute(f"ANALYZE prism_kv; ANALYZE {PLAIN_TABLE}")

    async def extra(self, store: prism.Store, namespace: str, sides: dict[str, Calls]) -> str:
        """Client CPU per call at concurrency 1: the public API, the backend alone, raw same rows."""
        layers = {
            "prism": sides["prism"],
            "backend": backend_calls(store, namespace, self.keys),
            "same rows": sides[SAME_ROWS.label],
        }
        cpu: dict[str, dict[str, list[float]]] = {}
        for op, calls in CPU_CALLS.items():
            cpu[op] = {layer: [] for layer in layers}
            for _ in range(self.rounds):
                for layer, layer_calls in layers.items():
                    cpu[op][layer].append(await client_cpu(layer_calls[op], calls))
        lines = [
            f"Where Prism's time goes: client CPU per call at concurrency 1 (µs, median (min-max) of "
            f"{self.rounds} rounds), for the public API, for the PostgreSQL backend alone (called with the "
            "writes and addresses the KeyValue layer would hand it), and for raw asyncpg writing the same "
            "rows. The difference between the first two is the KeyValue layer's validation, etags, results "
            "and metrics.",
            "",
            "| op | Prism API | backend alone | raw, same rows | KeyValue layer per call | backend/raw |",
            "|---|---|---|---|---|---|",
        ]
        for op, times in cpu.items():
            cells = {}
            for layer, seconds in times.items():
                median, lo, hi = spread([t * 1e6 for t in seconds])
                cells[layer] = f"{median:.0f} ({lo:.0f}-{hi:.0f})"
            medians = {layer: statistics.median(seconds) for layer, seconds in times.items()}
            above = (medians["prism"] - medians["backend"]) * 1e6
            lines.append(
                f"| {op} | {cells['prism']} | {cells['backend']} | {cells['same rows']} | {above:.0f} "
                f"| {medians['backend'] / medians['same rows']:.2f} |"
            )
        return "\n".join(lines)


def main(argv: list[str]) -> None:
    """Measure Prism and raw asyncpg side by side and write the postgres section of docs/benchmarks.md."""
    PostgresBench().run()
