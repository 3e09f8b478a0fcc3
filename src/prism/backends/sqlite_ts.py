"""The SQLite engine's TimeSeries store: a table per namespace and slice, dropped whole.

Slice ``n`` of namespace ``ns`` is the table ``prism_ts_<hash of ns>_<n>``, keyed by
``(series, t, id, ikey)`` (``t`` in microseconds) without a rowid, so a series reads
as one index range. ``prism_ts_slices (ns, series, slice)`` lists which slices hold
events of which series: a read visits only those, in order, and retention drops each
old slice's table with ``DROP TABLE`` (no row-by-row delete). Calls ride on the
SQLite backend's own connection, lock and transactions.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from prism.backends.base import Backend
from prism.backends.sqlite import SQLiteBackend
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

__all__ = ["SQLiteTimeSeries"]

CATALOG = """
CREATE TABLE IF NOT EXISTS prism_ts_slices (
    ns TEXT NOT NULL,
    series TEXT NOT NULL,
    slice INTEGER NOT NULL,
    PRIMARY KEY (ns, series, slice)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS prism_ts_slices_by_slice ON prism_ts_slices (ns, slice);
"""


def _table(spec: SeriesSpec, slice_no: int) -> str:
    return f"prism_ts_{short_name(spec.ns)}_{slice_label(slice_no)}"


def _create(table: str) -> str:
    return (
        f"CREATE TABLE IF NOT EXISTS {table} (series TEXT NOT NULL, t INTEGER NOT NULL, "
        "id TEXT NOT NULL, ikey TEXT NOT NULL, value BLOB NOT NULL, ctype TEXT, "
        "PRIMARY KEY (series, t, id, ikey)) WITHOUT ROWID"
    )


def _missing_table(exc: sqlite3.OperationalError) -> bool:
    return "no such table" in str(exc)


class SQLiteTimeSeries(TimeSeriesDriver):
    """Events in per-slice tables of the store's SQLite file."""

    def __init__(self, backend: Backend) -> None:
        super().__init__(backend)
        assert isinstance(backend, SQLiteBackend)
        self._db = backend
        self._catalog_ready = False

    def _ensure_catalog(self, conn: sqlite3.Connection) -> None:
        if not self._catalog_ready:
            conn.executescript(CATALOG)
            self._catalog_ready = True

    async def write(self, spec: SeriesSpec, series: str, events: Sequence[StoredEvent]) -> list[EventWrite]:
        by_slice: dict[int, list[int]] = {}
        for i, event in enumerate(events):
            by_slice.setdefault(spec.slice_of(event.time), []).append(i)
        if not self._catalog_ready:
            await self._db._run(self._ensure_catalog)

        def body(conn: sqlite3.Connection, now: float) -> list[EventWrite]:
            outcomes: list[EventWrite] = [EventWrite.CREATED] * len(events)
            for slice_no, indexes in by_slice.items():
                table = _table(spec, slice_no)
                conn.execute(_create(table))
                conn.execute(
                    "INSERT OR IGNORE INTO prism_ts_slices (ns, series, slice) VALUES (?, ?, ?)",
                    (spec.ns, series, slice_no),
                )
                insert = f"INSERT OR IGNORE INTO {table} VALUES (?, ?, ?, ?, ?, ?)"
                select = (
                    f"SELECT value, ctype FROM {table} WHERE series = ? AND t = ? AND id = ? AND ikey = ?"
                )
                for i in indexes:
                    e = events[i]
                    cur = conn.execute(insert, (series, e.time, e.id, e.key, e.value, e.content_type))
                    if cur.rowcount == 0:
                        row = conn.execute(select, (series, e.time, e.id, e.key)).fetchone()
                        found = StoredEvent(e.time, e.id, e.key, row[0], row[1]) if row else None
                        outcomes[i] = compare_existing(found, e)
            return outcomes

        return await self._db._run(self._db._write_txn(body))

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
        first, last = spec.slices_between(start_us, end_us)
        order = "DESC" if newest_first else "ASC"
        where = "series = ? AND t >= ? AND t < ?"
        base: list[Any] = [series, start_us, end_us]
        if after is not None:
            where += f" AND (t, id, ikey) {'<' if newest_first else '>'} (?, ?, ?)"
            base += list(after)
        if not self._catalog_ready:
            await self._db._run(self._ensure_catalog)

        def run(conn: sqlite3.Connection) -> list[StoredEvent]:
            slices = [
                row[0]
                for row in conn.execute(
                    "SELECT slice FROM prism_ts_slices WHERE ns = ? AND series = ? AND slice BETWEEN ? AND ? "
                    f"ORDER BY slice {order}",
                    (spec.ns, series, first, last),
                )
            ]
            out: list[StoredEvent] = []
            for slice_no in slices:
                sql = (
                    f"SELECT t, id, ikey, value, ctype FROM {_table(spec, slice_no)} WHERE {where} "
                    f"ORDER BY t {order}, id {order}, ikey {order} LIMIT ?"
                )
                try:
                    rows = conn.execute(sql, (*base, limit - len(out))).fetchall()
                except sqlite3.OperationalError as exc:
                    if _missing_table(exc):  # dropped by retention meanwhile
                        continue
                    raise
                out.extend(StoredEvent(*row) for row in rows)
                if len(out) >= limit:
                    break
            return out

        return await self._db._run(run)

    async def delete_series(self, spec: SeriesSpec, series: str) -> None:
        if not self._catalog_ready:
            await self._db._run(self._ensure_catalog)

        def body(conn: sqlite3.Connection, now: float) -> None:
            slices = conn.execute(
                "SELECT slice FROM prism_ts_slices WHERE ns = ? AND series = ?", (spec.ns, series)
            ).fetchall()
            for (slice_no,) in slices:
                try:
                    conn.execute(f"DELETE FROM {_table(spec, slice_no)} WHERE series = ?", (series,))
                except sqlite3.OperationalError as exc:
                    if not _missing_table(exc):
                        raise
            conn.execute("DELETE FROM prism_ts_slices WHERE ns = ? AND series = ?", (spec.ns, series))

        await self._db._run(self._db._write_txn(body))

    async def drop_slices(self, spec: SeriesSpec, before: int) -> int:
        if not self._catalog_ready:
            await self._db._run(self._ensure_catalog)

        def body(conn: sqlite3.Connection, now: float) -> int:
            slices = conn.execute(
                "SELECT DISTINCT slice FROM prism_ts_slices WHERE ns = ? AND slice < ?", (spec.ns, before)
            ).fetchall()
            for (slice_no,) in slices:
                conn.execute(f"DROP TABLE IF EXISTS {_table(spec, slice_no)}")
            conn.execute("DELETE FROM prism_ts_slices WHERE ns = ? AND slice < ?", (spec.ns, before))
            return len(slices)

        return await self._db._run(self._db._write_txn(body))
