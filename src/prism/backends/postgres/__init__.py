"""``postgresql://user:password@host:port/database`` (also ``postgres://``): items in one PostgreSQL table.

Every namespace lives in one table (``prism_kv`` unless ``table`` says otherwise),
keyed by (namespace, record, key) and created on first use. Its DDL, which an
operator can run by hand (``python -m prism.backends.postgres [TABLE] | psql``)::

    CREATE TABLE IF NOT EXISTS "prism_kv" (
        namespace    text COLLATE "C" NOT NULL,
        record       text COLLATE "C" NOT NULL,
        key          text COLLATE "C" NOT NULL,   -- '' for a flat entry
        value        bytea NOT NULL,
        etag         text NOT NULL,
        expires_at   timestamptz,                 -- NULL: never expires
        content_type text,
        updated_at   timestamptz NOT NULL,
        PRIMARY KEY (namespace, record, key)
    );
    CREATE INDEX IF NOT EXISTS "prism_kv_expires_at" ON "prism_kv" (expires_at)
        WHERE expires_at IS NOT NULL;

The ``"C"`` collation makes the primary key's order the keys' code-point order, so
scans by prefix and range reads are index range scans (``record >= prefix AND record
< next(prefix)``), never ``LIKE``. The database must use the UTF8 encoding.

Writes: a put is one ``INSERT ... ON CONFLICT DO UPDATE`` that replaces only a live
row (a second statement when the stored item had expired, so ``existed`` is exact);
if_match is a conditional ``UPDATE`` and if_absent an upsert that replaces only an
expired row, so of two concurrent if_absent puts of one key exactly one wins. A batch
of unconditional puts is one statement over ``unnest`` arrays, a batch lookup one
statement probing the primary key once per address. Other batches, and transactions,
run in one database transaction. Every batch and transaction locks its keys in
code-point order, so concurrent writers do not deadlock. A transaction that meets a
failed condition rolls back as a whole and raises the failure that comes first in
the caller's order.
An item whose ``expires_at`` has passed (by the database server's clock) is absent
for every read, scan and condition; a background task deletes such rows every
``purge_interval`` seconds.

Connections: one pool per store, of asyncpg connections with prepared-statement
caches. Idle connections are reused most-recent first, a released connection goes
straight to the longest-waiting caller, and a connection interrupted by a deadline
is closed rather than reused.

Options (keyword arguments of ``prism.connect`` or URL query parameters):

* ``connect_timeout`` (2 s), ``operation_timeout`` (5 s), ``max_retries`` (5),
  ``retry_base`` (0.02 s), ``retry_cap`` (0.5 s): every call ends within its
  operation timeout; dropped connections, restarts, deadlocks and serialization
  failures are retried with capped exponential backoff and jitter inside it;
* ``pool_min_size`` (1), ``pool_max_size`` (20): connections opened at start and kept,
  and the most open at once; callers beyond ``pool_max_size`` wait for a free one
  (within their operation timeout);
* ``pool_idle_timeout`` (300 s; 0 keeps them): idle connections above the minimum are
  closed after it;
* ``statement_cache_size`` (100): prepared statements kept per connection;
* ``table`` (``prism_kv``, or ``schema.table``) and ``create_table`` (true): with
  ``create_table=false`` the table must exist (run the DDL above);
* ``purge_interval`` (60 s; 0 disables the background purge) and ``purge_batch``
  (1000 rows per delete statement);
* ``feed`` (false): create and read the table's change feed (``Namespace.watch``);
  without it no trigger is created and ``watch`` is unsupported;
* ``feed_retention`` (86400 s) and ``feed_max_changes`` (1,000,000), only with
  ``feed=true``: how long and how many changes the change feed keeps (all the
  namespaces together; trimmed by the background purge). A namespace may have its own
  (``store.namespace(name, feed_retention=, feed_max_changes=)``): it is then listed in
  ``TABLE_changes_ns_floor`` and trimmed on its own, by the retention the purging store
  gives it (so every store that purges should give the same);
* ``sslmode`` (libpq's modes: disable, allow, prefer, require, verify-ca,
  verify-full); keyword ``ssl`` takes an ``ssl.SSLContext`` instead.
* ``replica_urls`` (none): streaming replicas (one URL, or a list) that take the
  reads asked with ``consistency="eventual"`` (``get``, ``get_many``, range reads);
  strong reads, scans and every write go to the primary. ``replica_max_lag`` (5 s):
  a replica whose replay is further behind than this is skipped, as is one that
  failed a read or its last check, until a check every ``replica_check_interval``
  (1 s) finds it well; with no replica fit, reads go to the primary. A read on a
  replica that takes more than half of ``operation_timeout`` counts as failed and is
  made on the primary in the time left;
* ``target_session_attrs`` (libpq's: any, primary, standby, prefer-standby,
  read-write, read-only): with several hosts in the URL (``host1:5432,host2:5432``)
  a connection is made to the first that fits, so ``read-write`` follows a promoted
  replica. While no host is a primary, calls fail with ``BackendUnavailable`` within
  ``operation_timeout`` and the store reconnects by itself once one is.

Change feed (only with ``feed=true``): a deferred constraint trigger on the table logs
every row change into ``TABLE_changes`` at commit, in the writing transaction, numbered
by a sequence and without a lock, so concurrent commits do not queue for the log. A
key's changes are numbered in its commit order (its next writer waits for its row lock),
but across keys a change may commit after a higher-numbered one; a reader therefore
delivers only up to its *horizon*: the last number N it read from the sequence once
every transaction that had a transaction id when N was read has finished (a transaction
id it takes after reading N, in a statement of its own, bounds them; each read costs one
such id; the sequence must keep its ``CACHE 1``, as the DDL creates it, or its last
number would not bound the numbers handed out; a ``feed=true`` store refuses to open on
one with more, naming it). So a reader never passes a change that commits later, and a
cursor resumed in any process misses nothing. A transaction left open anywhere on the
server holds the horizon back (delivery waits, nothing is skipped), and a watch opened
without a cursor waits for the transactions in progress, within the operation timeout.
Feeds created by earlier versions took one advisory lock per table at commit instead;
they keep it until the SQL of ``feed_ddl(TABLE)`` is run again (which replaces the
trigger's function; run it once every process reads with a horizon). The purge's deletes
of expired rows are logged as ``expire``. Watchers read the log; a NOTIFY on
``prism_feed:TABLE`` (the payload is the namespace) wakes them through one LISTEN
connection per store, and without it they poll every ``poll_interval`` of ``watch``.
``feed_ddl(TABLE)`` prints its SQL. With ``create_table=false`` and no feed table, the
store declares no ``watch``. The trigger belongs to the table, not to a store: once a
``feed=true`` store has created it, every commit to the table keeps logging whatever
later stores are opened with, until the SQL of ``feed_drop_ddl(TABLE)`` removes it.

Token buckets (the gateway's rate limits shared across processes, ``control.store``)
are rows of a second table, ``TABLE_buckets`` (``prism_kv_buckets``), created on
first use like the main table (``bucket_ddl(TABLE)`` prints its SQL). Taking a token
is one ``INSERT ... ON CONFLICT DO UPDATE ... RETURNING`` statement: the row lock
queues concurrent takers and the refill is timed by the server's clock.

Supported: TTL, etags, atomic multi-key transactions, range reads, prefix scans and
strongly consistent reads (every strong read goes to the primary the URL names). Values up to
64 MiB. A conditional write whose connection drops mid-statement is reported as
BackendUnavailable, not retried, since it may or may not have been applied.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import operator
import ssl as ssl_module
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, ClassVar, TypeVar
from urllib.parse import urlsplit

import asyncpg

from prism.backends._feed import (
    cursor_ahead,
    cursor_expired,
    feed_capabilities,
    feed_settings,
    parse_cursor,
    retention_options,
)
from prism.backends._retry import NetworkSettings, call_with_retry, parse_flag, split_options
from prism.backends.base import Backend, RolledBack
from prism.backends.postgres._errors import (
    AmbiguousWrite,
    ConnectTimedOut,
    is_transient,
    lost_connection,
    map_error,
)
from prism.backends.postgres._horizon import FeedHorizon
from prism.backends.postgres._pool import ConnectionPool
from prism.backends.postgres._replicas import ReplicaSet
from prism.backends.postgres._sql import (
    BATCH_UNIFORM,
    DEFAULT_TABLE,
    Statements,
    bucket_ddl,
    bucket_table,
    ddl,
    feed_channel,
    feed_ddl,
    feed_drop_ddl,
    feed_ns_floor_ddl,
    feed_table,
    prefix_end,
)
from prism.errors import BackendUnavailable, InvalidArgument, PrismError
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

__all__ = [
    "DEFAULT_TABLE",
    "PostgresBackend",
    "Statements",
    "bucket_ddl",
    "ddl",
    "feed_ddl",
    "feed_drop_ddl",
    "feed_ns_floor_ddl",
]

#: Seconds between readings while a new watch waits for the transactions in progress to finish.
FEED_SETTLE_PAUSE = 0.001

R = TypeVar("R")
log = logging.getLogger("prism.backends.postgres")

#: The largest value this backend accepts (PostgreSQL itself allows 1 GB per bytea).
MAX_VALUE_BYTES = 64 * 1024 * 1024
SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
SESSION_ATTRS = ("any", "primary", "standby", "prefer-standby", "read-write", "read-only")


def _target_of(dsn: str) -> str:
    """``host:port[,host:port...]/database`` of a URL, without credentials (for messages and health)."""
    parts = urlsplit(dsn)
    hosts = parts.netloc.rpartition("@")[2] or "localhost"
    shown = []
    for host in hosts.split(","):
        name, colon, port = host.rpartition(":") if not host.endswith("]") else (host, "", "")
        if not colon:
            name, port = host, ""
        if port and not port.isdigit():
            raise InvalidArgument(f"bad port {port!r} in the postgres URL")
        shown.append(f"{name or 'localhost'}:{port or 5432}")
    return f"{','.join(shown)}/{parts.path.lstrip('/') or '(default)'}"


def _urls(raw: Any) -> tuple[str, ...]:
    urls = (raw,) if isinstance(raw, str) else raw
    if not isinstance(urls, list | tuple) or not all(isinstance(u, str) and "://" in u for u in urls):
        raise ValueError("expected a postgresql:// URL or a list of them")
    return tuple(urls)


async def _put(con: Any, sql: Statements, values: tuple[Any, ...]) -> bool:
    """An unconditional put; whether a live item was replaced."""
    while True:
        inserted = await con.fetchval(sql.upsert, *values)
        if inserted is not None:
            return not inserted
        # The stored item has expired: replace it unless another writer revived it meanwhile.
        if await con.fetchval(sql.insert_if_absent, *values):
            return False


def _unconditional(op: StoredWrite) -> bool:
    return op.if_match is None and not op.if_absent


def _all_unconditional(ops: Sequence[StoredWrite]) -> bool:
    return not any(map(_if_absent, ops)) and list(map(_if_match, ops)).count(None) == len(ops)


_address = operator.attrgetter("record", "key")
_if_absent = operator.attrgetter("if_absent")
_if_match = operator.attrgetter("if_match")
_REPLACED = WriteOutcome(True, True)
_CREATED = WriteOutcome(True, False)


def _key_order(ops: Sequence[StoredWrite]) -> list[int]:
    """Op indexes sorted by address (stable): the lock order shared by every writer."""
    addresses = list(map(_address, ops))
    return sorted(range(len(ops)), key=addresses.__getitem__)


def _option(options: dict[str, Any], name: str, default: Any, conv: Callable[[Any], Any]) -> Any:
    if name not in options:
        return default
    raw = options.pop(name)
    try:
        return conv(raw)
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(f"postgres option {name} has a bad value {raw!r}: {exc}") from exc


def _as_int(raw: Any) -> int:
    if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
        raise ValueError("expected an integer")
    return int(raw)


class PostgresBackend(Backend):
    name = "postgres"
    capabilities = Capabilities(
        max_value_bytes=MAX_VALUE_BYTES, token_buckets=True, timeseries=True, watch=True, watch_expiry=True
    )
    runs_inline: ClassVar[bool] = False
    feed_opt_in: ClassVar[bool] = True
    namespace_feed_retention: ClassVar[bool] = True
    timeseries_driver = "prism.backends.postgres.timeseries:PostgresTimeSeries"

    def __init__(
        self,
        dsn: str,
        *,
        settings: NetworkSettings | None = None,
        pool_min_size: int = 1,
        pool_max_size: int = 20,
        pool_idle_timeout: float = 300.0,
        statement_cache_size: int = 100,
        table: str = DEFAULT_TABLE,
        create_table: bool = True,
        purge_interval: float = 60.0,
        purge_batch: int = 1000,
        ssl: str | ssl_module.SSLContext | None = None,
        feed: bool = False,
        feed_retention: float | None = None,
        feed_max_changes: int | None = None,
        replica_urls: Sequence[str] = (),
        replica_max_lag: float = 5.0,
        replica_check_interval: float = 1.0,
        target_session_attrs: str | None = None,
    ) -> None:
        self.feed_retention, self.feed_max_changes = feed_settings(feed, feed_retention, feed_max_changes)
        #: Whether the store creates and reads the table's change feed (``feed=true``).
        self.feed = feed
        self.capabilities = feed_capabilities(type(self).capabilities, feed)
        if not 0 <= pool_min_size <= pool_max_size or pool_max_size < 1:
            raise InvalidArgument(
                f"pool sizes need 0 <= pool_min_size <= pool_max_size and pool_max_size >= 1, "
                f"got {pool_min_size} and {pool_max_size}"
            )
        if pool_idle_timeout < 0 or statement_cache_size < 0 or purge_interval < 0 or purge_batch < 1:
            raise InvalidArgument(
                "pool_idle_timeout, statement_cache_size and purge_interval must be >= 0 and purge_batch >= 1"
            )
        if isinstance(ssl, str) and ssl not in SSL_MODES:
            raise InvalidArgument(f"sslmode must be one of {', '.join(SSL_MODES)}, got {ssl!r}")
        if ssl is not None and not isinstance(ssl, str | ssl_module.SSLContext):
            raise InvalidArgument("ssl must be an ssl.SSLContext or an sslmode string")
        if target_session_attrs is not None and target_session_attrs not in SESSION_ATTRS:
            raise InvalidArgument(
                f"target_session_attrs must be one of {', '.join(SESSION_ATTRS)}, "
                f"got {target_session_attrs!r}"
            )
        if not replica_max_lag >= 0 or not replica_check_interval > 0:
            raise InvalidArgument(
                "replica_max_lag must be >= 0 and replica_check_interval > 0 seconds, "
                f"got {replica_max_lag!r} and {replica_check_interval!r}"
            )
        self._dsn = dsn
        #: Where the store points, without credentials (for messages and health).
        self.target = _target_of(dsn)
        self.replica_urls = tuple(replica_urls)
        replica_targets = [_target_of(url) for url in self.replica_urls]
        self.replica_max_lag = replica_max_lag
        self.replica_check_interval = replica_check_interval
        self.target_session_attrs = target_session_attrs
        self.settings = settings or NetworkSettings()
        self.pool_min_size = pool_min_size
        self.pool_max_size = pool_max_size
        self.pool_idle_timeout = pool_idle_timeout
        self.statement_cache_size = statement_cache_size
        self.table = table
        self.statements = Statements(table)
        self.create_table = create_table
        self.purge_interval = purge_interval
        self.purge_batch = purge_batch
        self._ssl = ssl
        self._pool: ConnectionPool | None = None
        self._replica_targets = replica_targets
        self._replicas: ReplicaSet | None = None
        self._purge_task: asyncio.Task[None] | None = None
        self._buckets_ready = False
        # The change feed's wake-up: one LISTEN connection, opened by the first watch
        # that waits, and an event per namespace that its notifications set.
        self._feed_listener: Any = None
        self._feed_listening: asyncio.Lock | None = None
        self._feed_events: dict[str, asyncio.Event] = {}
        #: The number below which no change of the table can still commit, as this store knows it.
        self._feed_horizon = FeedHorizon()

    @classmethod
    def from_url(cls, url: str, **options: Any) -> PostgresBackend:
        try:
            dsn, opts = split_options(url, options)
        except ValueError as exc:
            raise InvalidArgument(f"malformed postgres URL: {exc}") from exc
        settings = NetworkSettings.from_options(opts)
        kwargs: dict[str, Any] = {
            "pool_min_size": _option(opts, "pool_min_size", 1, _as_int),
            "pool_max_size": _option(opts, "pool_max_size", 20, _as_int),
            "pool_idle_timeout": _option(opts, "pool_idle_timeout", 300.0, float),
            "statement_cache_size": _option(opts, "statement_cache_size", 100, _as_int),
            "table": _option(opts, "table", DEFAULT_TABLE, str),
            "create_table": _option(opts, "create_table", True, lambda raw: parse_flag("create_table", raw)),
            "purge_interval": _option(opts, "purge_interval", 60.0, float),
            "purge_batch": _option(opts, "purge_batch", 1000, _as_int),
            "replica_urls": _option(opts, "replica_urls", (), _urls),
            "replica_max_lag": _option(opts, "replica_max_lag", 5.0, float),
            "replica_check_interval": _option(opts, "replica_check_interval", 1.0, float),
            "target_session_attrs": _option(opts, "target_session_attrs", None, str),
        }
        kwargs.update(retention_options(opts))
        sslmode = _option(opts, "sslmode", None, str)
        context = opts.pop("ssl", None)
        if sslmode is not None and context is not None:
            raise InvalidArgument("give either sslmode or ssl, not both")
        if opts:
            raise InvalidArgument(
                f"unknown postgres option(s) {sorted(opts)}; known: connect_timeout, operation_timeout, "
                "max_retries, retry_base, retry_cap, pool_min_size, pool_max_size, pool_idle_timeout, "
                "statement_cache_size, table, create_table, purge_interval, purge_batch, feed, "
                "feed_retention, feed_max_changes, sslmode, ssl, replica_urls, replica_max_lag, "
                "replica_check_interval, target_session_attrs"
            )
        return cls(dsn, settings=settings, ssl=sslmode if context is None else context, **kwargs)

    # -- running calls --------------------------------------------------------------

    async def _read(self, what: str, fn: Callable[[Any], Awaitable[R]], consistent: bool) -> R:
        """A read: on a replica fit to answer when it may be eventually consistent, else the primary.

        A replica that fails the read is skipped from then on (until its next good
        check), and the read goes to the primary within what is left of the deadline.
        """
        replicas = self._replicas
        replica = None if consistent or replicas is None else replicas.pick()
        if replica is None or replicas is None:
            return await self._run(what, fn)
        started = time.monotonic()
        try:
            async with asyncio.timeout(self.settings.operation_timeout / 2):
                con = await replica.pool.acquire()
                try:
                    result = await fn(con)
                except asyncio.CancelledError:
                    con.terminate()
                    raise
                finally:
                    replica.pool.release(con)
        except (PrismError, RolledBack):
            raise
        except Exception as exc:
            replicas.failed(replica, exc)
            log.warning(
                "postgres replica %s failed a read (%s); reading from the primary", replica.target, exc
            )
            left = max(self.settings.operation_timeout - (time.monotonic() - started), 0.001)
            return await self._run(
                what, fn, settings=dataclasses.replace(self.settings, operation_timeout=left)
            )
        replica.reads += 1
        return result

    async def _run(
        self,
        what: str,
        fn: Callable[[Any], Awaitable[R]],
        *,
        idempotent: bool = True,
        settings: NetworkSettings | None = None,
    ) -> R:
        """Run ``fn`` on a pooled connection under the operation deadline, mapping driver errors."""
        pool = self._pool
        if pool is None:
            raise BackendUnavailable(f"the postgres store at {self.target} is not open")

        async def attempt() -> R:
            con = await pool.acquire()
            try:
                return await fn(con)
            except asyncio.CancelledError:
                # Interrupted mid-statement (the deadline passed): drop the connection rather than
                # wait for the server to acknowledge a cancel request.
                con.terminate()
                raise
            except Exception as exc:
                if not idempotent and lost_connection(exc):
                    raise AmbiguousWrite(str(exc)) from exc
                raise
            finally:
                pool.release(con)

        describe = f"postgres {what} on {self.target}"
        try:
            return await call_with_retry(
                settings or self.settings,
                attempt,
                is_transient=is_transient,
                describe=describe,
                engine="postgresql",
            )
        except (PrismError, RolledBack):
            raise
        except Exception as exc:
            raise map_error(exc, describe, self.table) from exc

    # -- lifecycle ------------------------------------------------------------------

    async def _connect(self, dsn: str | None = None) -> Any:
        """One new connection (to the primary, or to the replica at ``dsn``), within connect_timeout."""
        settings = self.settings
        extra: dict[str, Any] = {} if self._ssl is None else {"ssl": self._ssl}
        if dsn is None and self.target_session_attrs is not None:
            extra["target_session_attrs"] = self.target_session_attrs
        try:
            return await asyncpg.connect(
                dsn or self._dsn,
                timeout=settings.connect_timeout,
                statement_cache_size=self.statement_cache_size,
                server_settings={
                    "application_name": "prism",
                    # A statement the client gave up on does not run on unattended.
                    "statement_timeout": str(max(1, round(settings.operation_timeout * 1000))),
                },
                **extra,
            )
        except TimeoutError as exc:
            raise ConnectTimedOut(f"no connection within {settings.connect_timeout} s") from exc

    async def open(self) -> None:
        await self.open_pool()
        try:
            await self._run("prepare", self._prepare)
            await self._open_replicas()
        except BaseException:
            await self.close()
            raise
        if self.purge_interval > 0:
            self._purge_task = asyncio.get_running_loop().create_task(
                self._purge_loop(), name=f"prism-postgres-purge-{self.table}"
            )

    async def open_pool(self) -> None:
        """Start the connection pool only (the queue and pub/sub of this engine need no KV table)."""
        pool = ConnectionPool(
            self._connect,
            min_size=self.pool_min_size,
            max_size=self.pool_max_size,
            idle_timeout=self.pool_idle_timeout,
        )
        describe = f"postgres connect to {self.target}"
        try:
            await call_with_retry(
                self.settings, pool.start, is_transient=is_transient, describe=describe, engine="postgresql"
            )
        except BaseException as exc:
            await pool.close(grace=0)
            if isinstance(exc, Exception) and not isinstance(exc, PrismError):
                raise map_error(exc, describe, self.table) from exc
            raise
        self._pool = pool

    async def _open_replicas(self) -> None:
        if not self.replica_urls:
            return

        def connector(url: str) -> Callable[[], Awaitable[Any]]:
            return lambda: self._connect(url)

        self._replicas = ReplicaSet(
            [
                (target, connector(url))
                for target, url in zip(self._replica_targets, self.replica_urls, strict=True)
            ],
            max_lag=self.replica_max_lag,
            check_interval=self.replica_check_interval,
            check_timeout=self.settings.operation_timeout,
            pool_max_size=self.pool_max_size,
            pool_idle_timeout=self.pool_idle_timeout,
        )
        await self._replicas.start()

    async def connect(self, what: str) -> Any:
        """One connection of its own (a LISTEN connection), with this store's settings and error mapping."""
        describe = f"postgres {what} on {self.target}"
        try:
            return await call_with_retry(
                self.settings,
                self._connect,
                is_transient=is_transient,
                describe=describe,
                engine="postgresql",
            )
        except PrismError:
            raise
        except Exception as exc:
            raise map_error(exc, describe, self.table) from exc

    async def run(self, what: str, fn: Callable[[Any], Awaitable[R]], *, idempotent: bool = True) -> R:
        """Run ``fn(connection)`` on the pool under the deadline, retried and mapped like every store call."""
        return await self._run(what, fn, idempotent=idempotent)

    async def _prepare(self, con: Any) -> None:
        encoding, exists = await con.fetchrow(self.statements.prepare, self.statements.table)
        if encoding != "UTF8":
            raise InvalidArgument(f"the postgres database at {self.target} uses {encoding}; Prism needs UTF8")
        if not exists:
            if not self.create_table:
                raise BackendUnavailable(
                    f"table {self.table} does not exist at {self.target} and create_table is false: "
                    f"create it with the SQL of prism.backends.postgres.ddl({self.table!r})"
                )
            async with con.transaction():
                # Concurrent first uses queue here instead of racing in the catalog.
                await con.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"prism:{self.table}")
                await con.execute(ddl(self.table))
        await self._prepare_feed(con)

    async def _prepare_feed(self, con: Any) -> None:
        """Create the change feed of the table when missing; without create_table, go without one."""
        if not self.feed:
            return
        if await con.fetchval("SELECT to_regclass($1) IS NOT NULL", self.statements.changes):
            # A feed made before namespaces could have a retention of their own lacks their floors.
            if not await con.fetchval("SELECT to_regclass($1) IS NOT NULL", self.statements.feed_ns_floors):
                if not self.create_table:
                    raise BackendUnavailable(
                        f"table {self.table}'s change feed lacks {self.statements.feed_ns_floors} and "
                        "create_table is false: run the SQL of "
                        f"prism.backends.postgres.feed_ns_floor_ddl({self.table!r})"
                    )
                await con.execute(feed_ns_floor_ddl(self.table))
            await self._check_feed_sequence(con)
            return
        if not self.create_table:
            log.warning(
                "table %s has no change feed and create_table is false: watch is unsupported until "
                "the SQL of prism.backends.postgres.feed_ddl(%r) is run",
                self.table,
                self.table,
            )
            self.capabilities = dataclasses.replace(self.capabilities, watch=False, watch_expiry=False)
            return
        async with con.transaction():
            await con.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"prism:{feed_table(self.table)}")
            if not await con.fetchval("SELECT to_regclass($1) IS NOT NULL", self.statements.changes):
                await con.execute(feed_ddl(self.table))

    async def _check_feed_sequence(self, con: Any) -> None:
        """Refuse a feed sequence that hands numbers out in blocks: readers could not bound them."""
        seq = self.statements.feed_sequence
        cache = await con.fetchval("SELECT seqcache FROM pg_sequence WHERE seqrelid = to_regclass($1)", seq)
        if cache is not None and cache > 1:
            raise BackendUnavailable(
                f"table {self.table}'s change feed sequence {seq} has CACHE {cache}: a watcher bounds the "
                f"changes still to commit by the sequence's last number, which needs CACHE 1; run "
                f"ALTER SEQUENCE {seq} CACHE 1"
            )

    async def _prepare_buckets(self, con: Any) -> None:
        if await con.fetchval("SELECT to_regclass($1) IS NOT NULL", self.statements.buckets):
            return
        table = bucket_table(self.table)
        if not self.create_table:
            raise BackendUnavailable(
                f"table {table} does not exist at {self.target} and create_table is false: "
                f"create it with the SQL of prism.backends.postgres.bucket_ddl({self.table!r})"
            )
        async with con.transaction():
            await con.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"prism:{table}")
            await con.execute(bucket_ddl(self.table))

    async def take_token(self, bucket: str, rate: float, burst: float) -> float:
        """One token from ``bucket``, a row of ``TABLE_buckets`` taken by one upsert on the server's clock."""
        if not (rate > 0 and burst >= 1):
            raise InvalidArgument(f"a token bucket needs rate > 0 and burst >= 1, got {rate!r} and {burst!r}")
        if not self._buckets_ready:
            await self._run("prepare token buckets", self._prepare_buckets)
            self._buckets_ready = True
        sql = self.statements.take_token
        granted, tokens = await self._run(
            "take_token", lambda con: con.fetchrow(sql, bucket, float(rate), float(burst)), idempotent=False
        )
        return 0.0 if granted else (1.0 - tokens) / rate

    async def close(self) -> None:
        task, self._purge_task = self._purge_task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        listener, self._feed_listener = self._feed_listener, None
        if listener is not None:
            listener.terminate()
        replicas, self._replicas = self._replicas, None
        if replicas is not None:
            await replicas.close(grace=self.settings.operation_timeout)
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close(grace=self.settings.operation_timeout)

    async def health(self) -> dict[str, Any]:
        start = time.perf_counter()
        version = await self._run(
            "health", lambda con: con.fetchval("SELECT current_setting('server_version')")
        )
        pool = self._pool
        return {
            "server_version": version,
            "latency_ms": round((time.perf_counter() - start) * 1000, 3),
            "target": self.target,
            "table": self.table,
            "pool_size": 0 if pool is None else pool.size,
            "pool_idle": 0 if pool is None else pool.idle,
            "pool_max_size": self.pool_max_size,
            **({"replicas": self._replicas.health()} if self._replicas is not None else {}),
        }

    # -- expiry ---------------------------------------------------------------------

    async def purge_expired(self) -> int:
        """Delete expired rows now, ``purge_batch`` per statement; the number deleted."""
        total = 0
        while True:
            status = await self._run(
                "purge", lambda con: con.execute(self.statements.purge, self.purge_batch)
            )
            deleted = int(status.rsplit(" ", 1)[-1])
            total += deleted
            if deleted < self.purge_batch:
                break
        if self.capabilities.watch:
            await self.trim_feed()
        return total

    async def trim_feed(self) -> None:
        """Discard the changes past the feed's retention (age and count); the newest always stays."""
        sql = self.statements

        async def trim(con: Any) -> None:
            async with con.transaction():
                head = int(await con.fetchval(sql.feed_head))
                # Namespaces given a retention of their own leave the shared floor before any
                # trim, starting from it: what was trimmed of them so far is below their floor.
                for ns in self._namespace_feed_limits or ():
                    await con.execute(sql.feed_ns_register, ns)
                floor = head - self.feed_max_changes
                aged = await con.fetchval(sql.feed_aged, self.purge_batch, self.feed_retention)
                if aged is not None:
                    floor = max(floor, min(int(aged), head - 1))
                if floor > 0:
                    await con.execute(sql.feed_trim, floor)
                    await con.execute(sql.feed_raise_floor, floor)
                # Every listed namespace, by the retention this store gives it (its own, else the store's).
                for row in await con.fetch(sql.feed_ns_list):
                    ns = row[0]
                    retention, max_changes = self.feed_limits(ns)
                    beyond = await con.fetchval(sql.feed_ns_beyond, ns, max_changes)
                    own = 0 if beyond is None else int(beyond)
                    aged = await con.fetchval(sql.feed_ns_aged, ns, self.purge_batch, retention)
                    if aged is not None:
                        own = max(own, int(aged))
                    own = min(own, head - 1)
                    if own > 0:
                        await con.execute(sql.feed_ns_trim, ns, own)
                        await con.execute(sql.feed_ns_raise_floor, ns, own)

        await self._run("trim_feed", trim)

    def _on_feed_notify(self, con: Any, pid: int, channel: str, payload: str) -> None:
        event = self._feed_events.get(payload)
        if event is not None:
            event.set()

    async def _listen_for_changes(self) -> bool:
        """Open the LISTEN connection once; False when it cannot be opened (watches then poll)."""
        if self._feed_listener is not None and not self._feed_listener.is_closed():
            return True
        if self._feed_listening is None:
            self._feed_listening = asyncio.Lock()
        async with self._feed_listening:
            if self._feed_listener is None or self._feed_listener.is_closed():
                try:
                    con = await self.connect("feed listen")
                    await con.add_listener(feed_channel(self.table), self._on_feed_notify)
                except (PrismError, asyncpg.PostgresError, OSError) as exc:
                    log.warning("the change feed's LISTEN failed, watches poll instead: %s", exc)
                    return False
                self._feed_listener = con
        return True

    async def wait_for_changes(self, ns: str, seconds: float, after: str | None = None) -> None:
        listener = self._feed_listener
        if (listener is None or listener.is_closed()) and not await self._listen_for_changes():
            await asyncio.sleep(seconds)
            return
        event = self._feed_events.get(ns)
        if event is None:
            event = self._feed_events[ns] = asyncio.Event()
        try:
            await asyncio.wait_for(event.wait(), seconds)
        except TimeoutError:
            return
        # Every watcher waiting was woken by the set; the next wait is for the next change.
        event.clear()

    async def read_changes(
        self, ns: str, prefix: str, after: str | None, limit: int
    ) -> tuple[list[Change], str]:
        start = None if after is None else parse_cursor(after)
        sql = self.statements
        end = prefix_end(prefix) if prefix else None

        async def read(con: Any) -> tuple[list[Change], str]:
            # The head first, the floor last: a trim between the statements shows in the floor.
            number, bound = await con.fetchrow(sql.feed_number_and_bound)
            snapshot, newest = await con.fetchrow(sql.feed_snapshot)
            head = self._feed_horizon.advance(number, bound, str(snapshot))
            if start is None:
                # A new watch starts at the newest number, once the transactions that may hold a
                # number below it have finished (the operation deadline bounds the wait).
                while head < number:
                    await asyncio.sleep(FEED_SETTLE_PAUSE)
                    later, bound = await con.fetchrow(sql.feed_number_and_bound)
                    snapshot, _ = await con.fetchrow(sql.feed_snapshot)
                    head = self._feed_horizon.advance(later, bound, str(snapshot))
                return [], str(number)
            if start > max(number, int(newest)):
                raise cursor_ahead(str(after))
            args: tuple[Any, ...] = (ns, start, head, prefix, limit)
            rows = (
                await con.fetch(sql.feed_read[end is not None], *(args if end is None else (*args, end)))
                if head > start
                else []  # nothing below the horizon yet
            )
            if start < await con.fetchval(sql.feed_ns_floor, ns):
                raise cursor_expired(str(after))
            changes = [
                Change(
                    key=record,
                    op=op,
                    cursor=str(seq),
                    item_key=key,
                    etag=etag,
                    updated_at=epoch_to_datetime(at),
                )
                for seq, record, key, op, etag, at in rows
            ]
            upto = rows[-1][0] if len(rows) == limit else max(head, start)
            return changes, str(upto)

        return await self._run("read_changes", read)

    async def _purge_loop(self) -> None:
        while True:
            await asyncio.sleep(self.purge_interval)
            try:
                await self.purge_expired()
            except PrismError as exc:
                log.warning("purging expired postgres items failed: %s", exc)

    # -- reads ----------------------------------------------------------------------

    async def get(self, ns: str, record: str, key: str, *, consistent: bool = False) -> Item | None:
        row = await self._read(
            "get", lambda con: con.fetchrow(self.statements.get, ns, record, key), consistent
        )
        return None if row is None else Item(key or record, *row)

    async def get_many(
        self, ns: str, addresses: Sequence[tuple[str, str]], *, consistent: bool = False
    ) -> list[Item | None]:
        if not addresses:
            return []
        sql = self.statements
        # One row per address, in request order (all columns NULL where nothing live is stored).
        keys = [key for _, key in addresses]
        if not any(keys):
            records = [record for record, _ in addresses]
            rows = await self._read("get_many", lambda con: con.fetch(sql.get_flat, ns, records), consistent)
            return [None if row[0] is None else Item(r, *row) for r, row in zip(records, rows, strict=True)]
        record = addresses[0][0]
        if all(r == record for r, _ in addresses):
            rows = await self._read(
                "get_many", lambda con: con.fetch(sql.get_keys, ns, record, keys), consistent
            )
        else:
            records = [r for r, _ in addresses]
            rows = await self._read(
                "get_many", lambda con: con.fetch(sql.get_pairs, ns, records, keys), consistent
            )
        return [None if row[0] is None else Item(key, *row) for key, row in zip(keys, rows, strict=True)]

    async def scan(self, ns: str, prefix: str, after: str | None, limit: int) -> list[str]:
        upper = prefix_end(prefix)
        if after is not None and after >= prefix:
            lower, past = after, True
        else:
            lower, past = prefix, False
        args: tuple[Any, ...] = (ns, lower, limit) if upper is None else (ns, lower, limit, upper)
        sql = self.statements.scan[past, upper is not None]
        rows = await self._run("scan", lambda con: con.fetch(sql, *args))
        return [row[0] for row in rows]

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
        if after is not None and (start is None or after >= start):
            lower, past = after, True
        else:
            lower, past = start or "", False
        args: tuple[Any, ...] = (ns, record, lower, limit) if end is None else (ns, record, lower, limit, end)
        sql = self.statements.range[past, end is not None]
        rows = await self._read("get_range", lambda con: con.fetch(sql, *args), consistent)
        return [Item(*row) for row in rows]

    # -- writes ---------------------------------------------------------------------

    async def _apply(self, con: Any, ns: str, op: StoredWrite) -> WriteOutcome:
        """One write as one statement (two when a failed condition must tell whether the item existed)."""
        sql = self.statements
        address = (ns, op.record, op.key)
        if op.value is not None:
            values = (*address, op.value, op.etag, op.expires_at, op.content_type, op.updated_at)
            if op.if_absent and op.if_match is None:
                if await con.fetchval(sql.insert_if_absent, *values):
                    return _CREATED
                return condition_failed(True)
            if op.if_match is not None and not op.if_absent:
                if await con.fetchval(sql.update_if_match, *values, op.if_match):
                    return _REPLACED
                return condition_failed(bool(await con.fetchval(sql.live, *address)))
            if op.if_match is None:
                return _REPLACED if await _put(con, sql, values) else _CREATED
        elif _unconditional(op):
            return _REPLACED if await con.fetchval(sql.delete, *address) else _CREATED
        elif op.if_match is not None and not op.if_absent:
            if await con.fetchval(sql.delete_if_match, *address, op.if_match):
                return _REPLACED
            return condition_failed(bool(await con.fetchval(sql.live, *address)))
        # if_absent on a delete, or both conditions at once: decide under the row's lock.
        existed = bool(await con.fetchval(sql.live_for_update, *address))
        if existed:
            return condition_failed(True)
        if op.if_match is not None:
            return condition_failed(False)
        await con.execute(sql.delete, *address)
        return WriteOutcome(True, False)

    async def write(self, ns: str, ops: Sequence[StoredWrite]) -> list[WriteOutcome]:
        if not ops:
            return []
        idempotent = _all_unconditional(ops)
        if len(ops) == 1:
            (op,) = ops
            return [await self._run("write", lambda con: self._apply(con, ns, op), idempotent=idempotent)]
        if idempotent and len(set(map(_address, ops))) == len(ops):
            deletes = [op.value for op in ops].count(None)
            if deletes == 0:
                return await self._upsert_many(ns, ops)
            if deletes == len(ops):
                return await self._delete_many(ns, ops)
        order = _key_order(ops)

        async def body(con: Any) -> list[WriteOutcome]:
            outcomes: list[WriteOutcome | None] = [None] * len(ops)
            async with con.transaction():
                for i in order:
                    outcomes[i] = await self._apply(con, ns, ops[i])
            return [o for o in outcomes if o is not None]

        return await self._run("write", body, idempotent=idempotent)

    async def _upsert_many(self, ns: str, ops: Sequence[StoredWrite]) -> list[WriteOutcome]:
        order = _key_order(ops)
        ordered = [ops[i] for i in order]
        column = operator.attrgetter
        args: list[Any] = [
            ns,
            list(map(column("record"), ordered)),
            list(map(column("value"), ordered)),
            list(map(column("etag"), ordered)),
        ]
        uniform = 0
        for bit, name in enumerate(BATCH_UNIFORM):
            values = list(map(column(name), ordered))
            first = values[0]
            if values.count(first) == len(values):
                uniform |= 1 << bit
                args.append(first)
            else:
                args.append(values)
        sql = self.statements

        async def body(con: Any) -> list[bool]:
            inserted, records, keys = await con.fetchrow(sql.upsert_many[uniform], *args)
            written = dict(zip(zip(records or (), keys or (), strict=True), inserted or (), strict=True))
            if len(written) == len(ordered):
                return [written[op.record, op.key] for op in ordered]
            # Some rows found an expired item and were left alone: replace those one by one.
            flags = []
            for op in ordered:
                was_inserted = written.get((op.record, op.key))
                if was_inserted is None:
                    values = (ns, op.record, op.key, op.value, op.etag, op.expires_at, op.content_type)
                    was_inserted = not await _put(con, sql, (*values, op.updated_at))
                flags.append(was_inserted)
            return flags

        outcomes: list[WriteOutcome] = [_CREATED] * len(ops)
        for i, was_inserted in zip(order, await self._run("write", body), strict=True):
            if not was_inserted:
                outcomes[i] = _REPLACED
        return outcomes

    async def _delete_many(self, ns: str, ops: Sequence[StoredWrite]) -> list[WriteOutcome]:
        ordered = sorted(ops, key=_address)
        records = [op.record for op in ordered]
        keys = [op.key for op in ordered]
        rows = await self._run("write", lambda con: con.fetch(self.statements.delete_many, ns, records, keys))
        live = {(row[0], row[1]) for row in rows if row[2]}
        return [WriteOutcome(True, (op.record, op.key) in live) for op in ops]

    async def transact(self, ns: str, ops: Sequence[StoredWrite]) -> list[WriteOutcome]:
        if not ops:
            return []
        # Ops on different keys commute, so running them in key order (same-key ops keep their
        # order) gives the same result without deadlocks. Past a failed condition the rest still
        # runs, only to find the failure that comes first in the caller's order; then all rolls back.
        order = _key_order(ops)

        async def body(con: Any) -> list[WriteOutcome]:
            outcomes: list[WriteOutcome | None] = [None] * len(ops)
            failed: list[int] = []
            async with con.transaction():
                for i in order:
                    outcome = outcomes[i] = await self._apply(con, ns, ops[i])
                    if not outcome.ok:
                        failed.append(i)
                if failed:
                    first = min(failed)
                    refused = outcomes[first]
                    assert refused is not None
                    if refused.error is not None:
                        raise refused.error
                    raise RolledBack(transaction_refused(len(ops), first, refused.existed))
            return [o for o in outcomes if o is not None]

        try:
            return await self._run("transact", body, idempotent=_all_unconditional(ops))
        except RolledBack as refused:
            return refused.outcomes

    async def delete_range(self, ns: str, record: str, start: str | None, end: str | None) -> int:
        sql = self.statements.delete_range[end is not None]
        args: tuple[Any, ...] = (ns, record, start or "") if end is None else (ns, record, start or "", end)
        count = await self._run("delete_range", lambda con: con.fetchval(sql, *args))
        return int(count)
