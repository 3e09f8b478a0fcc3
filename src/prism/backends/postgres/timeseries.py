"""The PostgreSQL engine's TimeSeries store: a range-partitioned table per namespace.

Namespace ``ns`` is the table ``prism_ts_<hash of ns>`` (in the schema of the store's
``table`` option), keyed by ``(series, t, id, ikey)`` with text in the "C" collation
(code-point order) and partitioned by range of ``t`` (microseconds): one partition
per slice, ``prism_ts_<hash>_<slice>``. Partitions are created on first write into a
slice and one slice ahead of the present; retention drops whole partitions with
``DROP TABLE``, never row by row. A write is one ``INSERT ... SELECT FROM unnest(...)
ON CONFLICT DO NOTHING RETURNING`` statement (plus one look-up when some events were
there already); a read is one index-ordered query that PostgreSQL prunes to the
partitions of its range. Everything rides on the backend's pool, deadlines, retries
and error mapping.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import asyncpg

from prism.backends.base import Backend
from prism.backends.postgres import PostgresBackend
from prism.backends.timeseries import (
    EventWrite,
    Identity,
    SeriesSpec,
    StoredEvent,
    TimeSeriesDriver,
    compare_existing,
    short_name,
    slice_label,
)

__all__ = ["PostgresTimeSeries"]

#: Errors of two sessions creating the same table at once: the other one won, which is fine.
_ALREADY_THERE = (asyncpg.exceptions.DuplicateTableError, asyncpg.exceptions.UniqueViolationError)


class PostgresTimeSeries(TimeSeriesDriver):
    """Events in per-namespace tables partitioned by slice."""

    def __init__(self, backend: Backend) -> None:
        super().__init__(backend)
        assert isinstance(backend, PostgresBackend)
        self._pg = backend
        schema, dot, _ = backend.table.rpartition(".")
        self._schema = f"{schema}." if dot else ""
        #: Partitions this process created or saw, by parent table.
        self._partitions: dict[str, set[int]] = {}

    def _parent(self, spec: SeriesSpec) -> str:
        return f"prism_ts_{short_name(spec.ns)}"

    def _qualified(self, name: str) -> str:
        return f"{self._schema}{name}"

    async def _ensure(self, con: Any, spec: SeriesSpec, slices: set[int]) -> None:
        parent = self._parent(spec)
        known = self._partitions.get(parent)
        if known is None:
            await self._create(
                con,
                f"CREATE TABLE IF NOT EXISTS {self._qualified(parent)} ("
                'series text COLLATE "C" NOT NULL, t bigint NOT NULL, id text COLLATE "C" NOT NULL, '
                'ikey text COLLATE "C" NOT NULL, value bytea NOT NULL, ctype text, '
                "PRIMARY KEY (series, t, id, ikey)) PARTITION BY RANGE (t)",
            )
            known = self._partitions[parent] = set()
        for slice_no in sorted(slices - known):
            low, high = slice_no * spec.slice_us, (slice_no + 1) * spec.slice_us
            await self._create(
                con,
                f"CREATE TABLE IF NOT EXISTS {self._qualified(parent)}_{slice_label(slice_no)} "
                f"PARTITION OF {self._qualified(parent)} FOR VALUES FROM ({low}) TO ({high})",
            )
            known.add(slice_no)

    @staticmethod
    async def _create(con: Any, ddl: str) -> None:
        try:
            await con.execute(ddl)
        except _ALREADY_THERE:
            pass

    async def write(self, spec: SeriesSpec, series: str, events: Sequence[StoredEvent]) -> list[EventWrite]:
        parent = self._qualified(self._parent(spec))
        slices = {spec.slice_of(e.time) for e in events}
        ahead = spec.slice_of(int(time.time() * 1_000_000)) + 1
        times = [e.time for e in events]
        ids = [e.id for e in events]
        keys = [e.key for e in events]
        insert = (
            f"INSERT INTO {parent} (series, t, id, ikey, value, ctype) "
            "SELECT $1, * FROM unnest($2::bigint[], $3::text[], $4::text[], $5::bytea[], $6::text[]) "
            "ON CONFLICT DO NOTHING RETURNING t, id, ikey"
        )

        async def body(con: Any) -> list[EventWrite]:
            if not slices <= self._partitions.get(self._parent(spec), set()):
                await self._ensure(con, spec, slices | {ahead})
            try:
                rows = await con.fetch(
                    insert,
                    series,
                    times,
                    ids,
                    keys,
                    [e.value for e in events],
                    [e.content_type for e in events],
                )
            except asyncpg.exceptions.CheckViolationError:  # a partition was dropped by another process
                self._partitions.pop(self._parent(spec), None)
                await self._ensure(con, spec, slices | {ahead})
                rows = await con.fetch(
                    insert,
                    series,
                    times,
                    ids,
                    keys,
                    [e.value for e in events],
                    [e.content_type for e in events],
                )
            if len(rows) == len(events):
                return [EventWrite.CREATED] * len(events)
            created = {(r[0], r[1], r[2]) for r in rows}
            others = [e for e in events if e.identity not in created]
            found_rows = await con.fetch(
                f"SELECT t, id, ikey, value, ctype FROM {parent} WHERE series = $1 AND (t, id, ikey) IN "
                "(SELECT * FROM unnest($2::bigint[], $3::text[], $4::text[]))",
                series,
                [e.time for e in others],
                [e.id for e in others],
                [e.key for e in others],
            )
            found = {(r[0], r[1], r[2]): StoredEvent(*r) for r in found_rows}
            return [
                EventWrite.CREATED if e.identity in created else compare_existing(found.get(e.identity), e)
                for e in events
            ]

        return await self._pg._run("ts_write", body)

    async def read(
        self,
        spec: SeriesSpec,
        series: str,
        start_us: int,
        end_us: int,
        after: Identity | None,
        newest_first: bool,
        limit: int,
    ) -> list[StoredEvent]:
        order = "DESC" if newest_first else "ASC"
        args: list[Any] = [series, start_us, end_us, limit]
        where = "series = $1 AND t >= $2 AND t < $3"
        if after is not None:
            where += f" AND (t, id, ikey) {'<' if newest_first else '>'} ($5, $6, $7)"
            args += list(after)
        sql = (
            f"SELECT t, id, ikey, value, ctype FROM {self._qualified(self._parent(spec))} WHERE {where} "
            f"ORDER BY t {order}, id {order}, ikey {order} LIMIT $4"
        )

        async def body(con: Any) -> list[StoredEvent]:
            try:
                rows = await con.fetch(sql, *args)
            except asyncpg.exceptions.UndefinedTableError:
                return []
            return [StoredEvent(*row) for row in rows]

        return await self._pg._run("ts_read", body)

    async def delete_series(self, spec: SeriesSpec, series: str) -> None:
        sql = f"DELETE FROM {self._qualified(self._parent(spec))} WHERE series = $1"

        async def body(con: Any) -> None:
            try:
                await con.execute(sql, series)
            except asyncpg.exceptions.UndefinedTableError:
                pass

        await self._pg._run("ts_delete_series", body)

    async def drop_slices(self, spec: SeriesSpec, before: int) -> int:
        parent = self._parent(spec)
        prefix = f"{parent}_"

        async def body(con: Any) -> int:
            try:
                names = await con.fetch(
                    "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                    "WHERE i.inhparent = $1::regclass",
                    self._qualified(parent),
                )
            except asyncpg.exceptions.UndefinedTableError:
                return 0
            dropped = 0
            for (name,) in names:
                slice_no = int(name[len(prefix) :].replace("n", "-"))
                if slice_no < before:
                    await con.execute(f"DROP TABLE IF EXISTS {self._qualified(name)}")
                    self._partitions.get(parent, set()).discard(slice_no)
                    dropped += 1
            return dropped

        return await self._pg._run("ts_drop_slices", body)
