"""``sqlite:///PATH``: the embedded store, the default.

``sqlite:///data/prism.db`` is relative to the working directory, ``sqlite:////var/lib/x.db``
absolute, ``sqlite:///:memory:`` private to the store. The file is in WAL mode, so
readers never wait for writers, and several processes may share it. The file is
created when missing, its directory never is: a wrong path fails with an error
naming the directory instead of quietly starting an empty store somewhere else.

Calls run directly on the caller's thread: a read or a write to a local WAL file
takes microseconds, far less than a hop to a worker thread. Only when another
process holds the write lock (SQLITE_BUSY) does the call move to a worker thread,
which waits for the lock on a second connection up to ``busy_timeout`` seconds, so
the event loop is never blocked waiting for another process.

Options (keyword arguments or URL query parameters):

* ``busy_timeout`` (5.0 s): how long a write waits for another process's lock
  before failing with BackendUnavailable;
* ``purge_interval`` (60 s): how often writes also delete up to ``purge_batch``
  (1000) expired rows (reads never return expired rows either way);
* ``synchronous`` (``NORMAL``): SQLite's durability level; ``FULL`` also survives
  power loss at the cost of an fsync per commit;
* ``cache_size`` (2000 KiB, SQLite's default) and ``mmap_size`` (0 bytes: off): the
  page cache of each connection and how much of the file SQLite reads through a
  memory map instead of ``read`` calls. On a database larger than the page cache a
  get reads pages it does not hold; ``mmap_size`` at least the file's size (with a
  larger ``cache_size``) lets gets at a million keys run closer to gets at ten
  thousand (see the cost section of docs/benchmarks.md);
* ``feed`` (false): keep a change feed (``Namespace.watch``); without it writes log
  nothing and ``watch`` is unsupported. The feed costs a row more per write (a put
  about 1.2x as long);
* ``feed_retention`` (86400 s) and ``feed_max_changes`` (1,000,000), only with
  ``feed=true``: how long and how many changes the change feed keeps (all the
  namespaces together); it is trimmed when expired rows are purged. A namespace may
  have its own (``store.namespace(name, feed_retention=, feed_max_changes=)``): it is
  then listed in ``prism_change_ns_floor`` and trimmed on its own, by the retention the
  purging store gives it (so every store that writes it should give the same).

Layout: one table ``prism_items (ns, rid, ikey)`` primary key, with the value and
its metadata in columns, and a partial index on ``expires_at``. The change feed (with
``feed=true``) is the table ``prism_changes``, numbered in commit order by its rowid (the newest row is
never trimmed, so a number is never reused) and written in the same transaction as
the write it records, so a committed write always has its change
and a rolled-back one never does. Expired items are reported (op ``expire``) when the
purge deletes them, so within ``purge_interval`` of their expiry if the store is written.
Writes of stores opened without ``feed=true`` on the same file are not in the feed.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, TypeVar

from prism.backends._feed import (
    cursor_ahead,
    cursor_expired,
    feed_capabilities,
    feed_settings,
    parse_cursor,
    retention_options,
)
from prism.backends._retry import split_options
from prism.backends.base import NOT_NOW, Backend, NotNow, RolledBack
from prism.errors import BackendUnavailable, InvalidArgument
from prism.model import (
    Capabilities,
    Change,
    Item,
    StoredWrite,
    WriteOutcome,
    condition_failed,
    epoch_to_datetime,
    transaction_refused,
)

__all__ = ["SQLiteBackend"]

R = TypeVar("R")

SCHEMA = """
CREATE TABLE IF NOT EXISTS prism_items (
    ns TEXT NOT NULL,
    rid TEXT NOT NULL,
    ikey TEXT NOT NULL,
    value BLOB NOT NULL,
    etag TEXT NOT NULL,
    expires_at REAL,
    content_type TEXT,
    updated_at REAL NOT NULL,
    PRIMARY KEY (ns, rid, ikey)
);
CREATE INDEX IF NOT EXISTS prism_items_expiry ON prism_items (expires_at) WHERE expires_at IS NOT NULL;
"""

#: The change feed's tables, created only with ``feed=true``.
FEED_SCHEMA = """
CREATE TABLE IF NOT EXISTS prism_changes (
    seq INTEGER PRIMARY KEY,
    ns TEXT NOT NULL,
    rid TEXT NOT NULL,
    ikey TEXT NOT NULL,
    op TEXT NOT NULL,
    etag TEXT,
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS prism_change_floor (id INTEGER PRIMARY KEY CHECK (id = 1), floor INTEGER NOT NULL);
INSERT OR IGNORE INTO prism_change_floor (id, floor) VALUES (1, 0);
CREATE TABLE IF NOT EXISTS prism_change_ns_floor (ns TEXT PRIMARY KEY, floor INTEGER NOT NULL);
"""

_LIVE = "(expires_at IS NULL OR expires_at > ?)"
_COLUMNS = "value, etag, expires_at, content_type, updated_at"
_GET = f"SELECT {_COLUMNS} FROM prism_items WHERE ns = ? AND rid = ? AND ikey = ? AND {_LIVE}"
# The item whether live or not: the caller compares expires_at with the time (one bound
# parameter less, and no clock read for items without a ttl).
_GET_ANY = f"SELECT {_COLUMNS} FROM prism_items WHERE ns = ? AND rid = ? AND ikey = ?"
_CURRENT = "SELECT etag, expires_at FROM prism_items WHERE ns = ? AND rid = ? AND ikey = ?"
_UPSERT = (
    "INSERT INTO prism_items (ns, rid, ikey, value, etag, expires_at, content_type, updated_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (ns, rid, ikey) DO UPDATE SET value = excluded.value, "
    "etag = excluded.etag, expires_at = excluded.expires_at, content_type = excluded.content_type, "
    "updated_at = excluded.updated_at"
)
_DELETE = "DELETE FROM prism_items WHERE ns = ? AND rid = ? AND ikey = ?"
_EXPIRED = (
    "SELECT rowid, ns, rid, ikey, etag, expires_at FROM prism_items "
    "WHERE expires_at IS NOT NULL AND expires_at <= ? ORDER BY expires_at LIMIT ?"
)
_DELETE_ROW = "DELETE FROM prism_items WHERE rowid = ?"
_LOG = "INSERT INTO prism_changes (ns, rid, ikey, op, etag, at) VALUES (?, ?, ?, ?, ?, ?)"
# The newest change is never trimmed, so the next one always gets a greater number.
_HEAD = "SELECT max(seq) FROM prism_changes"
# A namespace given a feed retention of its own is listed in prism_change_ns_floor with the
# newest of its changes discarded; the others share the floor of prism_change_floor.
_NS_FLOOR = (
    "SELECT coalesce((SELECT floor FROM prism_change_ns_floor WHERE ns = ?), "
    "(SELECT floor FROM prism_change_floor WHERE id = 1))"
)
_OWN = "ns NOT IN (SELECT ns FROM prism_change_ns_floor)"
# The newest change to discard by age: among the oldest rows (the log is in time order but
# for clock steps, so the oldest rows are where old changes are).
_AGED = (
    f"SELECT max(seq) FROM (SELECT seq, at FROM prism_changes WHERE {_OWN} ORDER BY seq LIMIT ?) WHERE at < ?"
)
_NS_AGED = (
    "SELECT max(seq) FROM (SELECT seq, at FROM prism_changes WHERE ns = ? ORDER BY seq LIMIT ?) WHERE at < ?"
)
# The newest change of a namespace past its most changes (None when it has no more).
_NS_BEYOND = "SELECT seq FROM prism_changes WHERE ns = ? ORDER BY seq DESC LIMIT 1 OFFSET ?"
_NS_REGISTER = (
    "INSERT OR IGNORE INTO prism_change_ns_floor (ns, floor) "
    "SELECT ?, floor FROM prism_change_floor WHERE id = 1"
)


class _Busy(Exception):
    """Another process holds the lock; retry off the event loop."""


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    text = str(exc)
    return "locked" in text or "busy" in text


def _prefix_end(prefix: str) -> str | None:
    """The smallest string greater than every string starting with ``prefix``."""
    while prefix:
        last = ord(prefix[-1])
        if last < 0x10FFFF:
            nxt = last + 1
            if 0xD800 <= nxt <= 0xDFFF:  # surrogates are not valid in UTF-8 text
                nxt = 0xE000
            return prefix[:-1] + chr(nxt)
        prefix = prefix[:-1]
    return None


def _check_parent(path: str) -> None:
    """Refuse a database whose directory is missing: creating it silently hides a wrong path."""
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise BackendUnavailable(
            f"cannot open SQLite database {path!r}: the directory {parent!r} does not exist "
            "(create it first; Prism does not create directories for a store)"
        )


def _range_clause(column: str, lo: str | None, hi: str | None, after: str | None) -> tuple[str, list[str]]:
    sql, args = "", []
    if lo is not None:
        sql += f" AND {column} >= ?"
        args.append(lo)
    if hi is not None:
        sql += f" AND {column} < ?"
        args.append(hi)
    if after is not None:
        sql += f" AND {column} > ?"
        args.append(after)
    return sql, args


def _item(key: str, row: tuple[Any, ...]) -> Item:
    return Item(key, *row)


def _apply(conn: sqlite3.Connection, ns: str, op: StoredWrite, now: float, feed: bool) -> WriteOutcome:
    row = conn.execute(_CURRENT, (ns, op.record, op.key)).fetchone()
    existed = row is not None and (row[1] is None or row[1] > now)
    if op.if_absent and existed:
        return condition_failed(True)
    if op.if_match is not None and not (existed and row[0] == op.if_match):
        return condition_failed(existed)
    if op.value is None:
        if row is not None:
            conn.execute(_DELETE, (ns, op.record, op.key))
            if feed:
                conn.execute(_LOG, (ns, op.record, op.key, "delete", None, now))
    else:
        conn.execute(
            _UPSERT,
            (ns, op.record, op.key, op.value, op.etag, op.expires_at, op.content_type, op.updated_at),
        )
        if feed:
            conn.execute(_LOG, (ns, op.record, op.key, "put", op.etag, now))
    return WriteOutcome(True, existed)


def _head(conn: sqlite3.Connection) -> int:
    seq = conn.execute(_HEAD).fetchone()[0]
    return 0 if seq is None else int(seq)


class SQLiteBackend(Backend):
    name = "sqlite"
    capabilities = Capabilities(timeseries=True, watch=True, watch_expiry=True)
    runs_inline: ClassVar[bool] = True
    feed_opt_in: ClassVar[bool] = True
    namespace_feed_retention: ClassVar[bool] = True
    timeseries_driver = "prism.backends.sqlite_ts:SQLiteTimeSeries"

    def __init__(
        self,
        path: str,
        *,
        busy_timeout: float = 5.0,
        purge_interval: float = 60.0,
        purge_batch: int = 1000,
        synchronous: str = "NORMAL",
        cache_size: int = 2000,
        mmap_size: int = 0,
        feed: bool = False,
        feed_retention: float | None = None,
        feed_max_changes: int | None = None,
    ) -> None:
        self.feed_retention, self.feed_max_changes = feed_settings(feed, feed_retention, feed_max_changes)
        #: Whether writes log their changes into ``prism_changes`` (``feed=true``).
        self.feed = feed
        self.capabilities = feed_capabilities(type(self).capabilities, feed)
        if synchronous.upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise InvalidArgument(f"synchronous must be OFF, NORMAL, FULL or EXTRA, got {synchronous!r}")
        if type(cache_size) is not int or cache_size < 1:
            raise InvalidArgument(f"cache_size must be a number of KiB >= 1, got {cache_size!r}")
        if type(mmap_size) is not int or mmap_size < 0:
            raise InvalidArgument(f"mmap_size must be a number of bytes >= 0, got {mmap_size!r}")
        if busy_timeout < 0 or purge_interval <= 0 or purge_batch < 1:
            raise InvalidArgument("busy_timeout >= 0, purge_interval > 0 and purge_batch >= 1 are required")
        self.path = path
        self.busy_timeout = busy_timeout
        self.purge_interval = purge_interval
        self.purge_batch = purge_batch
        self.synchronous = synchronous.upper()
        self.cache_size = cache_size
        self.mmap_size = mmap_size
        self._conn: sqlite3.Connection | None = None
        self._get_cursor: sqlite3.Cursor | None = None
        self._slow_conn: sqlite3.Connection | None = None
        # The blocking API may share one store between threads; the event loop holds
        # the lock only for the microseconds of one statement batch.
        self._lock = threading.Lock()
        self._slow_lock = threading.Lock()
        self._next_purge = 0.0

    @classmethod
    def from_url(cls, url: str, **options: Any) -> SQLiteBackend:
        _, opts = split_options(url, options)
        path = url.split("://", 1)[1].split("?", 1)[0]
        if not path.startswith("/") or path == "/":
            raise InvalidArgument(
                "a SQLite URL is sqlite:///relative/path.db, sqlite:////absolute/path.db or sqlite:///:memory:"
            )
        path = path[1:]
        kwargs: dict[str, Any] = {}
        key = ""
        try:
            numbers = (
                ("busy_timeout", float),
                ("purge_interval", float),
                ("purge_batch", int),
                ("cache_size", int),
                ("mmap_size", int),
            )
            for key, conv in numbers:
                if key in opts:
                    kwargs[key] = conv(opts.pop(key))
        except (TypeError, ValueError) as exc:
            raise InvalidArgument(f"bad SQLite option {key}: {exc}") from exc
        if "synchronous" in opts:
            kwargs["synchronous"] = str(opts.pop("synchronous"))
        kwargs.update(retention_options(opts))
        if opts:
            raise InvalidArgument(f"unknown SQLite options: {sorted(opts)}")
        return cls(path, **kwargs)

    # -- lifecycle ------------------------------------------------------------------

    def _connect(self, busy_timeout: float) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path,
            timeout=busy_timeout,
            isolation_level=None,
            check_same_thread=False,
            cached_statements=256,
        )
        conn.execute(f"PRAGMA synchronous = {self.synchronous}")
        conn.execute(f"PRAGMA cache_size = -{self.cache_size}")
        if self.mmap_size:
            conn.execute(f"PRAGMA mmap_size = {self.mmap_size}")
        return conn

    async def open(self) -> None:
        try:
            if self.path != ":memory:":
                _check_parent(self.path)
            conn = self._connect(self.busy_timeout)
            if self.path != ":memory:":
                conn.execute("PRAGMA journal_mode = WAL")
            conn.executescript(SCHEMA)
            if self.feed:
                conn.executescript(FEED_SCHEMA)
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
        except (sqlite3.Error, OSError) as exc:
            raise BackendUnavailable(f"cannot open SQLite database {self.path!r}: {exc}", cause=exc) from exc
        # The inline connection never waits for a lock: it hands the call to a thread instead.
        conn.execute("PRAGMA busy_timeout = 0")
        self._conn = conn
        self._get_cursor = conn.cursor()
        if self.path != ":memory:":
            self._slow_conn = self._connect(self.busy_timeout)

    async def close(self) -> None:
        for conn in (self._conn, self._slow_conn):
            if conn is not None:
                conn.close()
        self._conn = self._slow_conn = self._get_cursor = None

    async def health(self) -> dict[str, Any]:
        def probe(conn: sqlite3.Connection) -> dict[str, Any]:
            mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
            return {"path": self.path, "journal_mode": mode, "sqlite_version": sqlite3.sqlite_version}

        return await self._run(probe)

    # -- running calls --------------------------------------------------------------

    async def _run(self, fn: Callable[[sqlite3.Connection], R]) -> R:
        conn = self._conn
        if conn is None:
            raise BackendUnavailable("the SQLite store is closed")
        with self._lock:
            try:
                return fn(conn)
            except _Busy:
                pass
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc) or self._slow_conn is None:
                    raise BackendUnavailable(f"SQLite error: {exc}", cause=exc) from exc
            except sqlite3.Error as exc:
                raise BackendUnavailable(f"SQLite error: {exc}", cause=exc) from exc
        return await asyncio.to_thread(self._run_slow, fn)

    def _run_slow(self, fn: Callable[[sqlite3.Connection], R]) -> R:
        with self._slow_lock:
            conn = self._slow_conn
            if conn is None:
                raise BackendUnavailable("the SQLite store is closed")
            try:
                return fn(conn)
            except _Busy as exc:
                raise BackendUnavailable(
                    f"SQLite database {self.path!r} stayed locked for {self.busy_timeout} s"
                ) from exc
            except sqlite3.OperationalError as exc:
                if _is_busy(exc):
                    raise BackendUnavailable(
                        f"SQLite database {self.path!r} stayed locked for {self.busy_timeout} s", cause=exc
                    ) from exc
                raise BackendUnavailable(f"SQLite error: {exc}", cause=exc) from exc
            except sqlite3.Error as exc:
                raise BackendUnavailable(f"SQLite error: {exc}", cause=exc) from exc

    def _write_txn(self, body: Callable[[sqlite3.Connection, float], R]) -> Callable[[sqlite3.Connection], R]:
        """Wrap ``body`` in BEGIN IMMEDIATE ... COMMIT, rolling back on any failure."""

        def run(conn: sqlite3.Connection) -> R:
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                if _is_busy(exc):
                    raise _Busy from exc
                raise
            try:
                now = time.time()
                result = body(conn, now)
                if now >= self._next_purge:
                    self._next_purge = now + self.purge_interval
                    self._purge(conn, now)
                conn.execute("COMMIT")
                return result
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

        return run

    def _purge(self, conn: sqlite3.Connection, now: float) -> None:
        """Delete up to ``purge_batch`` expired items (logging their expiry), and trim the feed."""
        expired = conn.execute(_EXPIRED, (now, self.purge_batch)).fetchall()
        if expired and self.feed:
            conn.executemany(
                _LOG, [(ns, rid, ikey, "expire", etag, at) for _, ns, rid, ikey, etag, at in expired]
            )
        if expired:
            conn.executemany(_DELETE_ROW, [(row[0],) for row in expired])
        if not self.feed:
            return
        head = _head(conn)
        # Namespaces given a retention of their own leave the shared floor before any trim,
        # starting from it: what was trimmed of them so far is below their floor.
        for ns in self._namespace_feed_limits or ():
            conn.execute(_NS_REGISTER, (ns,))
        floor = head - self.feed_max_changes
        aged = conn.execute(_AGED, (self.purge_batch, now - self.feed_retention)).fetchone()[0]
        if aged is not None:
            # The newest change stays: new changes are numbered after it.
            floor = max(floor, min(int(aged), head - 1))
        if floor > 0:
            conn.execute(f"DELETE FROM prism_changes WHERE seq <= ? AND {_OWN}", (floor,))
            conn.execute("UPDATE prism_change_floor SET floor = max(floor, ?) WHERE id = 1", (floor,))
        # Every listed namespace, by the retention this store gives it (its own, else the store's).
        for (ns,) in conn.execute("SELECT ns FROM prism_change_ns_floor").fetchall():
            retention, max_changes = self.feed_limits(ns)
            beyond = conn.execute(_NS_BEYOND, (ns, max_changes)).fetchone()
            own = 0 if beyond is None else int(beyond[0])
            aged = conn.execute(_NS_AGED, (ns, self.purge_batch, now - retention)).fetchone()[0]
            if aged is not None:
                own = max(own, int(aged))
            own = min(own, head - 1)
            if own > 0:
                conn.execute("DELETE FROM prism_changes WHERE ns = ? AND seq <= ?", (ns, own))
                conn.execute("UPDATE prism_change_ns_floor SET floor = max(floor, ?) WHERE ns = ?", (own, ns))

    # -- reads ----------------------------------------------------------------------

    def get_now(self, ns: str, record: str, key: str, consistent: bool = False) -> Item | NotNow | None:
        cursor = self._get_cursor
        if cursor is None:
            raise BackendUnavailable("the SQLite store is closed")
        # The hot path: one indexed lookup under the thread lock, never waiting for a lock
        # of another process (busy_timeout is 0 on this connection): that wait is get's.
        with self._lock:
            try:
                # One cursor for these lookups (under the lock): fetchone steps a primary-key
                # lookup to its end, which resets the statement and ends the read.
                row = cursor.execute(_GET_ANY, (ns, record, key)).fetchone()
            except sqlite3.OperationalError as exc:
                if _is_busy(exc):
                    return NOT_NOW
                raise BackendUnavailable(f"SQLite error: {exc}", cause=exc) from exc
            except sqlite3.Error as exc:
                raise BackendUnavailable(f"SQLite error: {exc}", cause=exc) from exc
        if row is None or (row[2] is not None and row[2] <= time.time()):  # absent, or expired
            return None
        return Item(key or record, *row)

    async def get(self, ns: str, record: str, key: str, *, consistent: bool = False) -> Item | None:
        item = self.get_now(ns, record, key)
        if item is not NOT_NOW:
            return item

        def read(conn: sqlite3.Connection) -> Item | None:
            row = conn.execute(_GET, (ns, record, key, time.time())).fetchone()
            return None if row is None else Item(key or record, *row)

        return await self._run(read)

    async def get_many(
        self, ns: str, addresses: Sequence[tuple[str, str]], *, consistent: bool = False
    ) -> list[Item | None]:
        if all(key == "" for _, key in addresses):
            return await self._get_flat(ns, [record for record, _ in addresses])

        def read(conn: sqlite3.Connection) -> list[Item | None]:
            now = time.time()
            found: dict[tuple[str, str], Item] = {}
            wanted = list(dict.fromkeys(addresses))
            # One statement per chunk of addresses, matched as row values.
            for i in range(0, len(wanted), 250):
                chunk = wanted[i : i + 250]
                marks = ",".join("(?,?)" for _ in chunk)
                args: list[Any] = [ns]
                for record, key in chunk:
                    args += (record, key)
                args.append(now)
                rows = conn.execute(
                    f"SELECT rid, ikey, {_COLUMNS} FROM prism_items WHERE ns = ? "
                    f"AND (rid, ikey) IN (VALUES {marks}) AND {_LIVE}",
                    args,
                ).fetchall()
                for row in rows:
                    found[(row[0], row[1])] = _item(row[1], row[2:])
            return [found.get(address) for address in addresses]

        return await self._run(read)

    async def _get_flat(self, ns: str, records: list[str]) -> list[Item | None]:
        """get_many of flat entries: one ``rid IN (...)`` lookup per chunk (items keyed by record id)."""

        def read(conn: sqlite3.Connection) -> list[Item | None]:
            now = time.time()
            found: dict[str, Item] = {}
            wanted = list(dict.fromkeys(records))
            for i in range(0, len(wanted), 500):
                chunk = wanted[i : i + 500]
                rows = conn.execute(
                    f"SELECT rid, {_COLUMNS} FROM prism_items WHERE ns = ? AND ikey = '' "
                    f"AND rid IN ({','.join('?' * len(chunk))}) AND {_LIVE}",
                    (ns, *chunk, now),
                ).fetchall()
                for row in rows:
                    found[row[0]] = Item(*row)
            return [found.get(record) for record in records]

        return await self._run(read)

    async def scan(self, ns: str, prefix: str, after: str | None, limit: int) -> list[str]:
        lo = prefix or None
        hi = _prefix_end(prefix) if prefix else None
        clause, bounds = _range_clause("rid", lo, hi, after)
        sql = f"SELECT DISTINCT rid FROM prism_items WHERE ns = ?{clause} AND {_LIVE} ORDER BY rid LIMIT ?"

        def read(conn: sqlite3.Connection) -> list[str]:
            return [row[0] for row in conn.execute(sql, (ns, *bounds, time.time(), limit))]

        return await self._run(read)

    async def get_range(
        self,
        ns: str,
        record: str,
        start: str | None,
        end: str | None,
        after: str | None,
        limit: int,
        *,
        consistent: bool = False,
    ) -> list[Item]:
        clause, bounds = _range_clause("ikey", start, end, after)
        sql = (
            f"SELECT ikey, {_COLUMNS} FROM prism_items WHERE ns = ? AND rid = ?{clause} AND {_LIVE} "
            "ORDER BY ikey LIMIT ?"
        )

        def read(conn: sqlite3.Connection) -> list[Item]:
            rows = conn.execute(sql, (ns, record, *bounds, time.time(), limit)).fetchall()
            return [_item(row[0], row[1:]) for row in rows]

        return await self._run(read)

    async def read_changes(
        self, ns: str, prefix: str, after: str | None, limit: int
    ) -> tuple[list[Change], str]:
        start = None if after is None else parse_cursor(after)
        clause, bounds = _range_clause("rid", prefix or None, _prefix_end(prefix) if prefix else None, None)
        sql = (
            f"SELECT seq, rid, ikey, op, etag, at FROM prism_changes WHERE ns = ? AND seq > ? AND seq <= ?"
            f"{clause} ORDER BY seq LIMIT ?"
        )

        def read(conn: sqlite3.Connection) -> tuple[list[Change], str]:
            # The head first, the floor last: a trim between the statements shows in the floor.
            head = _head(conn)
            if start is None:
                return [], str(head)
            if start > head:
                raise cursor_ahead(str(after))
            rows = conn.execute(sql, (ns, start, head, *bounds, limit)).fetchall()
            if start < conn.execute(_NS_FLOOR, (ns,)).fetchone()[0]:
                raise cursor_expired(str(after))
            changes = [
                Change(
                    key=rid,
                    op=op,
                    cursor=str(seq),
                    item_key=ikey,
                    etag=etag,
                    updated_at=epoch_to_datetime(at),
                )
                for seq, rid, ikey, op, etag, at in rows
            ]
            upto = rows[-1][0] if len(rows) == limit else max(head, start)
            return changes, str(upto)

        return await self._run(read)

    # -- writes ---------------------------------------------------------------------

    async def write(self, ns: str, ops: Sequence[StoredWrite]) -> list[WriteOutcome]:
        return await self._run(
            self._write_txn(lambda conn, now: [_apply(conn, ns, op, now, self.feed) for op in ops])
        )

    async def transact(self, ns: str, ops: Sequence[StoredWrite]) -> list[WriteOutcome]:
        def body(conn: sqlite3.Connection, now: float) -> list[WriteOutcome]:
            outcomes = []
            for i, op in enumerate(ops):
                outcome = _apply(conn, ns, op, now, self.feed)
                if not outcome.ok:
                    raise RolledBack(transaction_refused(len(ops), i, outcome.existed))  # rolls back
                outcomes.append(outcome)
            return outcomes

        try:
            return await self._run(self._write_txn(body))
        except RolledBack as refused:
            return refused.outcomes

    async def delete_range(self, ns: str, record: str, start: str | None, end: str | None) -> int:
        clause, bounds = _range_clause("ikey", start, end, None)
        where = f"WHERE ns = ? AND rid = ?{clause}"

        def body(conn: sqlite3.Connection, now: float) -> int:
            live: int = conn.execute(
                f"SELECT count(*) FROM prism_items {where} AND {_LIVE}", (ns, record, *bounds, now)
            ).fetchone()[0]
            if self.feed:
                conn.execute(
                    "INSERT INTO prism_changes (ns, rid, ikey, op, etag, at) "
                    f"SELECT ns, rid, ikey, 'delete', NULL, ? FROM prism_items {where} ORDER BY ikey",
                    (now, ns, record, *bounds),
                )
            conn.execute(f"DELETE FROM prism_items {where}", (ns, record, *bounds))
            return live

        return await self._run(self._write_txn(body))
