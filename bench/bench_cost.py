"""Cost at scale: memory and storage per key, bulk load rates, and embedded reads as the data grows.

``python -m bench cost [--keys=N] [--embedded-keys=N] [--rounds=N] [--only=PART,...]``
(parts: redis, postgres, embedded, dynamodb; ``--only`` replaces just those parts of
an existing section and their figures in ``cost.json``). Starts its own
``redis-server`` and PostgreSQL (``prism.testing.servers``) and measures, side by
side in one run, with 100-byte values:

* **Redis memory per flat key**: ``INFO memory`` ``used_memory`` freed by ``FLUSHDB``
  of a database holding ``--keys`` keys written by raw ``MSET`` and of one written by
  Prism's ``put_many``, and ``MEMORY USAGE`` of one key of each (plus Prism's scan
  index per key).
* **Redis bulk load**: keys/s of one ``MSET`` of 1,000 keys per round trip (raw) and
  of ``put_many`` of 1,000 (Prism), in interleaved rounds of new keys.
* **PostgreSQL bulk load**: keys/s of asyncpg's ``COPY`` of 1,000 rows into a table
  like Prism's and of ``put_many`` of 1,000, interleaved; **storage per row**:
  ``pg_total_relation_size`` of Prism's table and of a plain ``(key text primary
  key, value bytea)`` table holding the same keys and values, after ``VACUUM``.
* **`prism kv import` / `export`** of the Redis and PostgreSQL data sets, beside the
  raw bulk rate.
* **Embedded store**: ``get`` of random keys at 10,000 keys and at
  ``--embedded-keys``, interleaved rounds; the file size per key beside diskcache's
  for the same keys and values.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import diskcache
import redis.asyncio as aioredis

import prism
from bench._report import environment, spread, write_section
from prism import Put
from prism.testing.servers.postgres import PostgresServer
from prism.testing.servers.redis import RedisServer

VALUE = bytes(range(100))
BATCH = 1000
SMALL = 10_000
NAMESPACE = "cost"
GETS_PER_ROUND = 20_000
#: The SQLite store options of the second embedded get row: a 256 MiB page cache and a
#: 1 GiB memory map, both more than the 1,000,000-key file.
TUNED = "cache_size=262144&mmap_size=1073741824"


def _option(argv: list[str], name: str, default: int) -> int:
    for arg in argv:
        if arg.startswith(f"--{name}="):
            return int(arg.split("=", 1)[1])
    return default


def _key(i: int) -> str:
    return f"k{i:07d}"


async def _interleaved(
    sides: dict[str, Callable[[int], Awaitable[None]]], chunks: int, rounds: int
) -> dict[str, list[float]]:
    """keys/s per round of each side loading ``chunks`` batches of new keys, the first side rotating."""
    rates: dict[str, list[float]] = {name: [] for name in sides}
    names = list(sides)
    batch_no = 0
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            start = time.perf_counter()
            for c in range(chunks):
                await sides[name](batch_no + c)
            rates[name].append(chunks * BATCH / (time.perf_counter() - start))
        batch_no += chunks
    return rates


def _rate(values: list[float]) -> str:
    median, lo, hi = spread(values)
    return f"{median / 1000:,.0f}k ({lo / 1000:,.0f}k-{hi / 1000:,.0f}k)"


def _row(*cells: str) -> str:
    return "| " + " | ".join(cells) + " |"


def _ratio(side: list[float], base: list[float]) -> float:
    return statistics.median(s / b for s, b in zip(side, base, strict=True))


async def _cli(*args: str) -> float:
    """Seconds one ``prism kv`` command takes, run in this process (without the interpreter's start-up)."""
    from prism.cli import main as cli_main

    start = time.perf_counter()
    code = await asyncio.to_thread(cli_main, ["kv", *args, "--no-progress"])
    if code != 0:
        raise RuntimeError(f"prism kv {' '.join(args)} exited with {code}")
    return time.perf_counter() - start


async def _transfer(source: str, target: str, target_ns: str, dump: Path) -> tuple[float, float]:
    """Seconds of ``prism kv export`` from ``source`` into ``dump`` and of its ``import`` into ``target``."""
    export_s = await _cli("--store", source, "export", NAMESPACE, "-o", str(dump))
    import_s = await _cli("--store", target, "import", target_ns, str(dump))
    return export_s, import_s


def _transfer_row(loaded: int, times: tuple[float, float], raw: str, raw_rate: float, api: float) -> str:
    export_s, import_s = times
    return _row(
        f"`prism kv export` / `import` of the {loaded:,} keys, keys/s (the command's `main`, in process)",
        f"{raw_rate / 1000:,.0f}k ({raw})",
        f"{loaded / export_s / 1000:,.0f}k / {loaded / import_s / 1000:,.0f}k",
        f"import {loaded / import_s / raw_rate:.2f}x (put_many {api:.2f}x)",
    )


# -- Redis ----------------------------------------------------------------------------


async def _redis(
    url_for: Callable[[int], str], keys: int, rounds: int, work: Path
) -> tuple[str, dict[str, Any]]:
    raw = aioredis.Redis.from_url(url_for(1))
    store = await prism.connect(url_for(2), max_connections=8)
    admin = aioredis.Redis.from_url(url_for(2))
    ns = store.namespace(NAMESPACE)
    try:
        await raw.flushdb()
        await admin.flushdb()

        async def raw_load(b: int) -> None:
            await raw.mset({_key(b * BATCH + i): VALUE for i in range(BATCH)})

        async def prism_load(b: int) -> None:
            await ns.put_many([Put(_key(b * BATCH + i), VALUE) for i in range(BATCH)])

        chunks = max(1, keys // BATCH // rounds)
        rates = await _interleaved({"raw": raw_load, "prism": prism_load}, chunks, rounds)
        loaded = chunks * rounds * BATCH

        raw_key_usage = await raw.memory_usage(_key(0))
        entry = f"prism:{{{NAMESPACE}}}:e:{_key(0)}"
        prism_key_usage = await admin.memory_usage(entry)
        index_usage = await admin.memory_usage(f"prism:{{{NAMESPACE}}}:ids", samples=0)
        encoding = (await admin.object("encoding", f"prism:{{{NAMESPACE}}}:ids")).decode()

        # Export the Prism data, and import it into a fresh database: the command-line rates.
        moved = await _transfer(url_for(2), url_for(3), NAMESPACE, work / "redis.jsonl")

        async def freed(client: aioredis.Redis) -> int:
            before = int((await client.info("memory"))["used_memory"])
            await client.flushdb()
            return before - int((await client.info("memory"))["used_memory"])

        raw_bytes = await freed(raw)
        prism_bytes = await freed(admin)
        await aioredis.Redis.from_url(url_for(3)).flushdb()
        assert raw_key_usage is not None and prism_key_usage is not None and index_usage is not None
        figures = {
            "redis": {
                "bytes_per_key": round(prism_bytes / loaded),
                "baseline": "SET",
                "baseline_bytes_per_key": round(raw_bytes / loaded),
                "note": f"INFO used_memory per key at {loaded:,} keys; "
                f"{index_usage / loaded:.0f} B of it is the ordered scan index",
            }
        }
        raw_rate = statistics.median(rates["raw"])
        usage = (prism_key_usage + index_usage / loaded) / raw_key_usage
        text = "\n".join(
            [
                f"**Redis**, {loaded:,} keys per side (key `k0000000`, 100-byte value):",
                "",
                "| measure | raw | Prism | Prism ÷ raw |",
                "|---|---|---|---|",
                _row(
                    "memory per key (`INFO memory` used_memory freed by `FLUSHDB`)",
                    f"{raw_bytes / loaded:,.0f} B",
                    f"{prism_bytes / loaded:,.0f} B",
                    f"{prism_bytes / raw_bytes:.2f}x",
                ),
                _row(
                    "`MEMORY USAGE` of one key",
                    f"{raw_key_usage} B",
                    f"{prism_key_usage} B + {index_usage / loaded:,.0f} B of scan index ({encoding}) per key",
                    f"{usage:.2f}x",
                ),
                _row(
                    "bulk load, keys/s (`MSET` of 1,000 vs `put_many` of 1,000)",
                    _rate(rates["raw"]),
                    _rate(rates["prism"]),
                    f"{_ratio(rates['prism'], rates['raw']):.2f}x",
                ),
                _transfer_row(loaded, moved, "`MSET`", raw_rate, _ratio(rates["prism"], rates["raw"])),
            ]
        )
        return text, figures
    finally:
        await store.close()
        await raw.aclose()
        await admin.aclose()


# -- PostgreSQL -------------------------------------------------------------------------

PLAIN_DDL = "CREATE TABLE IF NOT EXISTS cost_plain (key text PRIMARY KEY, value bytea NOT NULL)"


async def _postgres(url: str, keys: int, rounds: int, work: Path) -> tuple[str, dict[str, Any]]:
    store = await prism.connect(url, pool_max_size=4)
    ns = store.namespace(NAMESPACE)
    await ns.put("warm", VALUE)
    await ns.delete("warm")
    con = await asyncpg.connect(url)
    try:
        await con.execute("DROP TABLE IF EXISTS cost_copy; DROP TABLE IF EXISTS cost_plain")
        await con.execute("CREATE TABLE cost_copy (LIKE prism_kv INCLUDING ALL)")
        await con.execute(PLAIN_DDL)
        await con.execute("DELETE FROM prism_kv WHERE namespace = $1", NAMESPACE)
        columns = ["namespace", "record", "key", "value", "etag", "expires_at", "content_type", "updated_at"]

        async def copy_load(b: int) -> None:
            from datetime import UTC, datetime

            now = datetime.now(UTC)
            rows = [
                (NAMESPACE, _key(b * BATCH + i), "", VALUE, f"{b:010x}{i:010x}", None, None, now)
                for i in range(BATCH)
            ]
            await con.copy_records_to_table("cost_copy", records=rows, columns=columns)

        async def prism_load(b: int) -> None:
            await ns.put_many([Put(_key(b * BATCH + i), VALUE) for i in range(BATCH)])

        chunks = max(1, keys // BATCH // rounds)
        rates = await _interleaved({"COPY": copy_load, "prism": prism_load}, chunks, rounds)
        loaded = chunks * rounds * BATCH
        await con.execute("INSERT INTO cost_plain SELECT record, value FROM cost_copy")
        for table in ("prism_kv", "cost_plain", "cost_copy"):
            await con.execute(f"VACUUM ANALYZE {table}")
        # prism_kv holds only this namespace here (the bench's own server).
        sizes = {
            t: int(await con.fetchval("SELECT pg_total_relation_size($1::regclass)", t))
            for t in ("prism_kv", "cost_plain")
        }
        moved = await _transfer(url, url, NAMESPACE + "-copy", work / "pg.jsonl")
        await con.execute("DELETE FROM prism_kv WHERE namespace = $1", NAMESPACE + "-copy")
        figures = {
            "postgres": {
                "bytes_per_key": round(sizes["prism_kv"] / loaded),
                "baseline": "plain table",
                "baseline_bytes_per_key": round(sizes["cost_plain"] / loaded),
                "note": f"pg_total_relation_size per row after VACUUM at {loaded:,} rows",
            }
        }
        copy_rate = statistics.median(rates["COPY"])
        text = "\n".join(
            [
                f"**PostgreSQL**, {loaded:,} rows per side (fsync off):",
                "",
                "| measure | raw | Prism | Prism ÷ raw |",
                "|---|---|---|---|",
                _row(
                    "storage per row (`pg_total_relation_size` after `VACUUM`; raw: `(key text primary key, "
                    "value bytea)`)",
                    f"{sizes['cost_plain'] / loaded:,.0f} B",
                    f"{sizes['prism_kv'] / loaded:,.0f} B",
                    f"{sizes['prism_kv'] / sizes['cost_plain']:.2f}x",
                ),
                _row(
                    "bulk load, keys/s (`COPY` of 1,000 rows into a table like Prism's vs "
                    "`put_many` of 1,000)",
                    _rate(rates["COPY"]),
                    _rate(rates["prism"]),
                    f"{_ratio(rates['prism'], rates['COPY']):.2f}x",
                ),
                _transfer_row(loaded, moved, "`COPY`", copy_rate, _ratio(rates["prism"], rates["COPY"])),
            ]
        )
        return text, figures
    finally:
        await con.close()
        await store.close()


# -- embedded ---------------------------------------------------------------------------


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


async def _embedded(big: int, rounds: int, work: Path) -> tuple[str, dict[str, Any]]:
    stores = {}
    for n in (SMALL, big):
        (work / f"e{n}").mkdir()
        store = await prism.connect(f"sqlite:///{work}/e{n}/data.db")
        ns = store.namespace(NAMESPACE)
        for b in range(n // BATCH):
            await ns.put_many([Put(_key(b * BATCH + i), VALUE) for i in range(BATCH)])
        stores[n] = (store, ns)
    cache = diskcache.Cache(str(work / "dc"))
    for b in range(big // BATCH):
        with cache.transact():
            for i in range(BATCH):
                cache.set(_key(b * BATCH + i), VALUE)
    cache.close()
    # The same files through stores with a larger page cache and a memory map (TUNED).
    tuned = {}
    for n in (SMALL, big):
        store = await prism.connect(f"sqlite:///{work}/e{n}/data.db?{TUNED}")
        tuned[n] = (store, store.namespace(NAMESPACE))
    times: dict[int, list[float]] = {SMALL: [], big: []}
    tuned_times: dict[int, list[float]] = {SMALL: [], big: []}
    rng = random.Random(7)
    for r in range(rounds):
        for n in (SMALL, big) if r % 2 == 0 else (big, SMALL):
            for side, into in (
                ((stores, times), (tuned, tuned_times))
                if r % 4 < 2
                else ((tuned, tuned_times), (stores, times))
            ):
                ns = side[n][1]
                picks = [_key(rng.randrange(n)) for _ in range(GETS_PER_ROUND)]
                start = time.perf_counter()
                for key in picks:
                    await ns.get(key)
                into[n].append((time.perf_counter() - start) / GETS_PER_ROUND)
    for store, _ in [*stores.values(), *tuned.values()]:
        await store.close()
    prism_size = _dir_bytes(work / f"e{big}")
    disk_size = _dir_bytes(work / "dc")
    small_us, big_us = (spread([t * 1e6 for t in times[n]]) for n in (SMALL, big))
    tuned_small, tuned_big = (spread([t * 1e6 for t in tuned_times[n]]) for n in (SMALL, big))
    figures = {
        "sqlite": {
            "bytes_per_key": round(prism_size / big),
            "baseline": "diskcache",
            "baseline_bytes_per_key": round(disk_size / big),
            "note": f"database file size per key at {big:,} keys",
        }
    }
    text = "\n".join(
        [
            f"**Embedded store** (SQLite), {SMALL:,} and {big:,} keys, {GETS_PER_ROUND:,} gets of random "
            "keys per round:",
            "",
            "| measure | baseline | Prism | ratio |",
            "|---|---|---|---|",
            _row(
                f"get, µs (at {SMALL:,} keys vs at {big:,})",
                f"{small_us[0]:.1f} ({small_us[1]:.1f}-{small_us[2]:.1f})",
                f"{big_us[0]:.1f} ({big_us[1]:.1f}-{big_us[2]:.1f})",
                f"{_ratio(times[big], times[SMALL]):.2f}x",
            ),
            _row(
                f"get, µs, `{TUNED}` (at {SMALL:,} keys vs at {big:,})",
                f"{tuned_small[0]:.1f} ({tuned_small[1]:.1f}-{tuned_small[2]:.1f})",
                f"{tuned_big[0]:.1f} ({tuned_big[1]:.1f}-{tuned_big[2]:.1f})",
                f"{_ratio(tuned_times[big], tuned_times[SMALL]):.2f}x",
            ),
            _row(
                f"file size per key at {big:,} keys (diskcache vs Prism)",
                f"{disk_size / big:,.0f} B",
                f"{prism_size / big:,.0f} B",
                f"{prism_size / disk_size:.2f}x",
            ),
        ]
    )
    return text, figures


# -- DynamoDB capacity units -------------------------------------------------------------


def _attribute_bytes(attrs: dict[str, Any]) -> int:
    """An item's size by DynamoDB's published rules: names plus values (S: UTF-8, B: bytes, N: digits)."""
    size = 0
    for name, typed in attrs.items():
        size += len(name.encode())
        ((kind, value),) = typed.items()
        if kind == "S":
            size += len(value.encode())
        elif kind == "B":
            size += len(value)
        else:
            digits = value.lstrip("-").replace(".", "").strip("0") or "0"
            size += (len(digits) + 1) // 2 + 1
    return size


def _index_entry(item: dict[str, Any]) -> dict[str, Any] | None:
    """An item's entry in the ``prism_records`` index (its keys, the table's keys, the projected
    expiry), or None when it lacks an index key and so is not in the index."""
    from prism.backends.dynamodb import layout

    if layout.NS not in item or layout.RID not in item:
        return None
    names = (layout.PK, layout.SK, layout.NS, layout.RID, layout.EXPIRES)
    return {k: item[k] for k in names if k in item}


def _write_units(old: dict[str, Any] | None, new: dict[str, Any]) -> tuple[int, int]:
    """(table, index) write units of a put of ``new`` over ``old`` by DynamoDB's rules.

    The table is charged ceil(larger of the old and new item size / 1 KB). The index is
    charged nothing when the index entry (keys and projected attributes) is unchanged,
    one write of the new entry (its size plus 100 bytes, per KB) when it is new or only
    its projected attributes change, and a delete of the old entry besides when an
    index key changes.
    """
    from prism.backends.dynamodb import layout

    size = _attribute_bytes(new)
    table = -(-max(size, _attribute_bytes(old) if old is not None else 0) // 1024)
    before = _index_entry(old) if old is not None else None
    after = _index_entry(new)
    if before == after:
        return table, 0
    index = 0
    if after is not None:
        index += -(-(_attribute_bytes(after) + 100) // 1024)
    if before is not None and (after is None or any(before[k] != after[k] for k in (layout.NS, layout.RID))):
        index += -(-(_attribute_bytes(before) + 100) // 1024)
    return table, index


def _dynamodb() -> tuple[str, dict[str, Any]]:
    """Write and read capacity units of put_many of 1,000 keys, new and replaced, from Prism's own items.

    moto answers every call with a fixed ConsumedCapacity, so the units come from the
    items Prism builds (``layout.item_attributes``) and DynamoDB's sizing rules
    (``_write_units``); a strongly consistent read costs ceil(size / 4 KB). The
    replacing put writes the same key again with a new value and etag and the same
    expiry (none, and an hour ahead), as a second put_many does.
    """
    from prism.backends.dynamodb import layout
    from prism.model import StoredWrite

    now = time.time()
    ns = NAMESPACE
    prism_wcu = prism_rcu = raw_wcu = unindexed_wcu = 0
    replace_wcu = {"no ttl": 0, "ttl": 0}
    prism_bytes = 0
    for i in range(BATCH):
        op = StoredWrite(_key(i), "", VALUE, etag=f"{i:020x}", updated_at=now)
        key = layout.key_of(ns, op.record, op.key)
        item = layout.item_attributes(ns, op, key)
        prism_bytes += _attribute_bytes(item)
        table, index = _write_units(None, item)
        prism_wcu += table + index
        prism_rcu += -(-_attribute_bytes(item) // 4096)
        table, index = _write_units(None, layout.item_attributes(ns, op, key, indexed=False))
        unindexed_wcu += table + index
        raw_wcu += -(-_attribute_bytes({"pk": {"S": _key(i)}, "v": {"B": VALUE}}) // 1024)
        again = StoredWrite(_key(i), "", VALUE[::-1], etag=f"{i + BATCH:020x}", updated_at=now + 1)
        table, index = _write_units(item, layout.item_attributes(ns, again, key))
        replace_wcu["no ttl"] += table + index
        expires = now + 3600
        with_ttl = StoredWrite(_key(i), "", VALUE, etag=f"{i:020x}", expires_at=expires, updated_at=now)
        old = layout.item_attributes(ns, with_ttl, key)
        new = StoredWrite(
            _key(i), "", VALUE[::-1], etag=f"{i + BATCH:020x}", expires_at=expires, updated_at=now + 1
        )
        table, index = _write_units(old, layout.item_attributes(ns, new, key))
        replace_wcu["ttl"] += table + index
    raw_size = _attribute_bytes({"pk": {"S": _key(0)}, "v": {"B": VALUE}})
    figures = {
        "dynamodb": {
            "bytes_per_key": round(prism_bytes / BATCH),
            "baseline": "BatchWriteItem",
            "baseline_bytes_per_key": raw_size,
            "write_units_per_put": prism_wcu / BATCH,
            "baseline_write_units_per_put": raw_wcu / BATCH,
            "replace_write_units_per_put": replace_wcu["no ttl"] / BATCH,
            "unindexed_write_units_per_put": unindexed_wcu / BATCH,
            "baseline_replace_write_units_per_put": raw_wcu / BATCH,
            "read_units_per_put": f"{prism_rcu / BATCH:g} (0 with existed=False or blind_batch_puts)",
            "note": "item size and capacity units by DynamoDB's sizing rules; a new key is written to the "
            "table and to the prism_records scan index, a replacing put that keeps the expiry to the table "
            "only",
        }
    }
    text = "\n".join(
        [
            f"**DynamoDB capacity units** of a put_many of {BATCH:,} keys (100-byte values), from the items "
            "Prism writes and DynamoDB's sizing rules (moto reports a fixed ConsumedCapacity):",
            "",
            "| measure | raw BatchWriteItem (`pk`, `v`) | Prism | Prism ÷ raw |",
            "|---|---|---|---|",
            f"| item size | {raw_size} B | {prism_bytes / BATCH:.0f} B | |",
            f"| write units per new key (table + `prism_records` scan index) | {raw_wcu / BATCH:g} "
            f"| {prism_wcu / BATCH:g} | {prism_wcu / raw_wcu:.2f}x |",
            f"| write units per replaced key, same expiry (none) (table; index entry unchanged) "
            f"| {raw_wcu / BATCH:g} | {replace_wcu['no ttl'] / BATCH:g} "
            f"| {replace_wcu['no ttl'] / raw_wcu:.2f}x |",
            f"| write units per replaced key, same expiry (an hour ahead) | {raw_wcu / BATCH:g} "
            f"| {replace_wcu['ttl'] / BATCH:g} | {replace_wcu['ttl'] / raw_wcu:.2f}x |",
            f"| write units per new key, `scan_index=false` (no index entry) | {raw_wcu / BATCH:g} "
            f"| {unindexed_wcu / BATCH:g} | {unindexed_wcu / raw_wcu:.2f}x |",
            f"| read units per key, default (consistent BatchGetItem of the replaced items) | 0 "
            f"| {prism_rcu / BATCH:g} | |",
            "| read units per key, `put_many(..., existed=False)` (a PutItem per key) or "
            "`blind_batch_puts=true` | 0 | 0 | |",
        ]
    )
    return text, figures


PARTS = ("redis", "postgres", "embedded", "dynamodb")


def _parts(argv: list[str]) -> tuple[str, ...]:
    """The parts ``--only=NAME[,NAME]`` selects (every part without it)."""
    for arg in argv:
        if arg.startswith("--only="):
            names = tuple(n for n in arg.split("=", 1)[1].split(",") if n)
            unknown = [n for n in names if n not in PARTS]
            if unknown or not names:
                raise SystemExit(f"--only takes parts of {', '.join(PARTS)}, got {arg.split('=', 1)[1]!r}")
            return names
    return PARTS


async def _measure(argv: list[str], work: Path) -> tuple[dict[str, str], dict[str, Any]]:
    keys = _option(argv, "keys", 200_000)
    big = _option(argv, "embedded-keys", 1_000_000)
    rounds = _option(argv, "rounds", 20)
    wanted = _parts(argv)
    parts: dict[str, str] = {}
    figures: dict[str, Any] = {}
    if "redis" in wanted:
        redis_server = RedisServer.local()
        try:
            parts["redis"], more = await _redis(redis_server.url_for, keys, rounds, work)
            figures.update(more)
        finally:
            redis_server.close()
    if "postgres" in wanted:
        pg = PostgresServer.launch()
        try:
            parts["postgres"], more = await _postgres(pg.url, keys, rounds, work)
            figures.update(more)
        finally:
            pg.close()
    if "embedded" in wanted:
        parts["embedded"], more = await _embedded(big, rounds, work)
        figures.update(more)
    if "dynamodb" in wanted:
        parts["dynamodb"], more = _dynamodb()
        figures.update(more)
    return parts, figures


def _block(name: str, text: str) -> str:
    return f"<!-- cost:{name} -->\n{text.strip()}\n<!-- /cost:{name} -->"


def _merged_section(parts: dict[str, str], run_line: str) -> str:
    """The section with the measured parts replaced (each under ``run_line``) and the rest kept."""
    from bench._report import DOC

    text = DOC.read_text(encoding="utf-8") if DOC.exists() else ""
    begin, end = "<!-- bench:cost -->", "<!-- /bench:cost -->"
    if begin not in text or end not in text:
        raise SystemExit("--only updates an existing cost section: run `python -m bench cost` once first")
    section = text.split(begin, 1)[1].split(end, 1)[0]
    for name, part in {**parts, "notes": NOTES}.items():
        pattern = re.compile(
            re.escape(f"<!-- cost:{name} -->") + ".*?" + re.escape(f"<!-- /cost:{name} -->"), re.S
        )
        if not pattern.search(section):
            raise SystemExit(f"the cost section has no {name} part: run `python -m bench cost` once first")
        body = part if name == "notes" else f"{run_line}\n\n{part}"
        section = pattern.sub(lambda _, body=body, name=name: _block(name, body), section)
    return section


NOTES = """**Where the targets stand, and why.**

- *Redis memory per key (target <= 1.3x `SET`): missed.* The ordered scan index (`prism:{ns}:ids`, a
  sorted set that is a skiplist past 128 members) alone costs about 100 bytes per key, more than half
  of what a raw `SET` of a 100-byte value costs (the `MEMORY USAGE` row), so no encoding of the entry
  reaches 1.3x while every namespace keeps an index that pages through keys in order and stays stable
  under writes, which is what `scan` promises on every backend. That is the trade-off kept: the index
  stays. The entry itself is about 64 bytes over the raw key: the `prism:{ns}:e:` prefix and the
  metadata (etag, update time; expiry and content type when set) stored before the value, about 57
  bytes, rounded up to the allocator's size class. Without the index an entry alone would be about
  1.4x.
- *Redis bulk load (>= 0.5x `MSET`)*: a put_many is one `MULTI` of `ZADD` (the index), `MGET` (to
  report `existed`) and `MSET`: the `ZADD` and the `MGET` are the server's work beyond `MSET`.
- *PostgreSQL bulk load (>= 0.5x `COPY`)*: put_many of 1,000 is one `INSERT ... SELECT FROM unnest(...)
  ON CONFLICT ... RETURNING` that reports `existed` per key; `COPY` reports nothing and checks no
  conflict. *Storage per row (<= 1.5x)*: the namespace, record and empty item key in the primary key,
  the etag and the update time are the extra bytes.
- *Embedded store*: a get at 1,000,000 keys walks a deeper B-tree than at 10,000 (one SQLite index
  lookup either way), and with SQLite's default 2 MB page cache the 1,000,000-key file (about 180 MB)
  is mostly not in it, so most gets copy a leaf page in with a `read` call (from the OS page cache).
  With the defaults the ratio sits at the 1.5x target's edge and moves with the machine's load (1.36x
  to 1.78x in earlier runs on 2026-12-07 at load averages of 5 to 12). With the store options
  `cache_size` and `mmap_size` larger than the file the pages are read in place (second get row):
  the rest of the gap is the deeper tree and the CPU caches, which a 2 MB file fits and a 180 MB one
  does not. The defaults stay SQLite's (a memory map turns an I/O error into a crash of the process,
  and the page cache is memory per connection); a store that wants flat reads at scale sets both.
  The file is smaller than diskcache's for the same keys and values.
- *DynamoDB*: every Prism item carries `ns` and `rid`, the keys of the `prism_records` index that
  serves ordered scans, so writing a new key costs a unit on the table and one on the index: 2x the
  write units of BatchWriteItem into a table without an index (the same ceiling as Redis's scan
  index). A put that replaces a key and keeps its expiry leaves the index entry (`ns`, `rid`, the table
  keys and the projected expiry `x`) as it was, so DynamoDB writes nothing to the index: 1 unit, the
  same as BatchWriteItem. Only new keys (and puts that change an expiry) still cost the index write;
  a store opened with `scan_index=false` writes no index entry (1 unit per new key too) and refuses
  `scan`, for namespaces that are only read by key.
  The read of replaced items (1 read unit per key, consistent) tells `existed` and finds replaced
  chunked values; `put_many(..., existed=False)` skips it and sends each unconditional put as a
  PutItem that returns the old item (no read units, the same write units, one request per key instead
  of one per 25), and the store option `blind_batch_puts=true` skips it inside BatchWriteItem for
  stores that never write chunked values.
- *`prism kv import`* is put_many of 1,000 fed from JSON lines, reading the next batch while the store
  writes the last; *export* is a scan page and a get_many per 1,000 keys. Run as a command, each also
  pays the interpreter's start-up (one to two seconds on this machine under this load).
"""


def main(argv: list[str]) -> None:
    """Measure and write the cost section of docs/benchmarks.md (``--only``: just those parts)."""
    command = ("python -m bench cost " + " ".join(a for a in argv if a.startswith("--"))).strip()
    only = len(_parts(argv)) < len(PARTS)
    started = time.time()
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="prism-cost-") as work:
        parts, figures = asyncio.run(_measure(argv, Path(work)))
    took = time.time() - started
    run = (
        f"`{command}` ({environment('redis', 'asyncpg', 'diskcache')}; {took / 60:.1f} min, "
        f"load average {load:.1f} on 2 cores at the start)"
    )
    if only:
        section = _merged_section(parts, f"Measured by {run}:")
    else:
        header = [
            "## Cost at scale",
            "",
            f"{run}. Rates are medians of interleaved rounds with their spread; each side loads new keys "
            "in every round.",
            "",
        ]
        blocks = [_block(name, parts[name]) for name in PARTS] + [_block("notes", NOTES)]
        section = "\n".join(header) + "\n" + "\n\n".join(blocks) + "\n"
    write_section("cost", section)
    from prism.backends.matrix import COST_FILE

    record: dict[str, Any] = {
        "command": command,
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "figures": {},
    }
    if only and COST_FILE.exists():
        earlier = json.loads(COST_FILE.read_text(encoding="utf-8"))
        commands = [c for c in earlier["command"].split("; ") if c != command]
        record["command"] = "; ".join([*commands, command])
        record["figures"] = earlier["figures"]
    record["figures"].update(figures)
    COST_FILE.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    print(
        f"wrote {COST_FILE.name}; run `make docs` to put its figures into docs/backends.md", file=sys.stderr
    )
