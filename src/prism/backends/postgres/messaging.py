"""PostgreSQL engines: a Queue on a ``FOR UPDATE SKIP LOCKED`` table, and PubSub on LISTEN/NOTIFY.

Both read the same URL and options as the PostgreSQL store (``sslmode``/``ssl``,
``connect_timeout``, ``operation_timeout``, retries, pool sizes...) and run every
statement through a ``PostgresBackend``'s pool, deadlines, retries and error mapping.
Given an open store on the same URL (and no options of their own) they use that
store's pool; otherwise each opens a pool of its own. The pub/sub, and a queue
waiting for work, also hold one LISTEN connection made with the same settings. The
queue's table, created on first use::

    CREATE TABLE IF NOT EXISTS prism_queue (
        id         bigserial PRIMARY KEY,
        queue      text NOT NULL,
        data       bytea NOT NULL,
        visible_at double precision NOT NULL,   -- epoch seconds, by the database clock
        token      text,                        -- the current lease, NULL when none
        deliveries integer NOT NULL DEFAULT 0
    );

A lease sets ``visible_at`` to now + lease and a fresh ``token`` on the oldest visible
rows, skipping rows another transaction holds, so concurrent consumers never get the
same row; heartbeat, ack and release act only while the token still matches. Enqueues
NOTIFY the queue's channel so waiting consumers wake at once.

NOTIFY payloads are text: a message that is UTF-8 without NUL travels as is, anything
else base64-encoded; either way at most ``max_message_bytes`` once encoded.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar, TypeVar
from urllib.parse import urlsplit

import asyncpg

from prism.backends.messaging import Lease, PubSub, Queue, check_seconds
from prism.backends.postgres import PostgresBackend
from prism.backends.urls import mask_url
from prism.errors import BackendUnavailable, InvalidArgument, PrismError

__all__ = ["PostgresPubSub", "PostgresQueue", "shared_backend"]

R = TypeVar("R")

log = logging.getLogger("prism.patterns")

TABLE = "prism_queue"
#: Seconds between attempts to re-establish a lost LISTEN connection.
RELISTEN_DELAY = 0.5
_NOW = "extract(epoch from clock_timestamp())"

_DDL = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    id         bigserial PRIMARY KEY,
    queue      text NOT NULL,
    data       bytea NOT NULL,
    visible_at double precision NOT NULL,
    token      text,
    deliveries integer NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS {TABLE}_ready ON {TABLE} (queue, visible_at);
"""

_NEAREST = f"SELECT min(visible_at) - {_NOW} FROM {TABLE} WHERE queue = $1"

_LEASE = f"""
WITH picked AS (
    SELECT id FROM {TABLE} WHERE queue = $1 AND visible_at <= {_NOW}
    ORDER BY visible_at, id LIMIT $2 FOR UPDATE SKIP LOCKED
)
UPDATE {TABLE} q SET visible_at = {_NOW} + $3, token = $4, deliveries = q.deliveries + 1
FROM picked WHERE q.id = picked.id
RETURNING q.id, q.data, q.deliveries
"""


_LISTEN_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, asyncio.TimeoutError)


def shared_backend(url: str, store: Any, options: dict[str, Any]) -> tuple[PostgresBackend, bool]:
    """The PostgreSQL backend to run on, and whether this object owns it.

    ``store``'s backend is shared when it points at the same server and database and
    the URL carries no options of its own or the same as the store's; otherwise a
    backend is built from ``url`` and ``options`` (validated like a store's), of which
    only the pool is opened.
    """
    own = PostgresBackend.from_url(url, **options)
    backend = getattr(store, "backend", None)
    if not isinstance(backend, PostgresBackend) or _server(backend) != _server(own):
        return own, True
    if (not options and not urlsplit(url).query) or _config(own) == _config(backend):
        return backend, False
    return own, True


def _config(backend: PostgresBackend) -> tuple[Any, ...]:
    """Everything the URL and options of a PostgreSQL store configure."""
    b = backend
    return (b._dsn, b.settings, b.pool_min_size, b.pool_max_size, b.pool_idle_timeout, b.statement_cache_size,
            b.table, b.create_table, b.purge_interval, b.purge_batch, b._ssl)  # fmt: skip


def _server(backend: PostgresBackend) -> tuple[str, str]:
    parts = urlsplit(backend._dsn)
    return parts.netloc, parts.path


class _OnBackend:
    """Runs statements through a PostgresBackend's pool; owns it or borrows an open store's."""

    _backend: PostgresBackend
    _owns: bool

    def _bind(self, backend: PostgresBackend, owns: bool) -> None:
        self._backend = backend
        self._owns = owns

    async def _open_backend(self) -> None:
        if self._owns:
            await self._backend.open_pool()

    async def _close_backend(self) -> None:
        if self._owns:
            await self._backend.close()

    async def _run(self, what: str, fn: Callable[[Any], Awaitable[R]], *, idempotent: bool = True) -> R:
        return await self._backend.run(what, fn, idempotent=idempotent)


def _fetch(sql: str, *args: Any) -> Callable[[Any], Awaitable[Any]]:
    """A statement returning rows, to run on a pooled connection."""
    return lambda con: con.fetch(sql, *args)


async def _create_table(con: Any) -> None:
    async with con.transaction():
        # Concurrent first uses queue here instead of racing in the catalog.
        await con.execute("SELECT pg_advisory_xact_lock(hashtext($1))", TABLE)
        await con.execute(_DDL)


def _channel(kind: str, name: str) -> str:
    """A LISTEN channel name (at most 63 bytes) for a queue or topic."""
    return f"prism_{kind}_{hashlib.sha256(name.encode()).hexdigest()[:40]}"


class PostgresQueue(_OnBackend, Queue):
    """A Queue on the ``prism_queue`` table (see the module docstring)."""

    engine = "postgres"

    def __init__(self, name: str, backend: PostgresBackend, owns: bool = True) -> None:
        super().__init__(name)
        self._bind(backend, owns)
        self._channel = _channel("q", name)
        self._wakeup = asyncio.Event()
        self._listener: Any = None

    def __repr__(self) -> str:
        return f"<PostgresQueue {self.name!r} {mask_url(self._backend._dsn)} {self._state.value}>"

    @classmethod
    def from_url(cls, url: str, name: str, *, store: Any = None, **options: Any) -> PostgresQueue:
        """A queue on ``postgresql://`` with the PostgreSQL store's options."""
        return cls(name, *shared_backend(url, store, options))

    async def _open(self) -> None:
        await self._open_backend()
        try:
            await self._run("queue setup", _create_table)
            self._listener = await self._backend.connect("queue listen")
            await self._listener.add_listener(self._channel, self._on_notify)
        except BaseException:
            await self._close()
            raise

    async def _close(self) -> None:
        self._wakeup.set()
        if self._listener is not None:
            await self._listener.close()
        await self._close_backend()

    def _on_notify(self, *args: Any) -> None:
        self._wakeup.set()

    async def enqueue(self, data: bytes, *, delay: float = 0.0) -> str:
        delay = check_seconds(delay, "delay")
        if not isinstance(data, bytes):
            raise InvalidArgument(f"a message is bytes, got {type(data).__name__}")
        self._check_open()
        sql = (
            f"WITH ins AS (INSERT INTO {TABLE} (queue, data, visible_at) VALUES ($1, $2, {_NOW} + $3) "
            "RETURNING id) SELECT id, pg_notify($4, '') FROM ins"
        )
        row = await self._run(
            "enqueue", lambda con: con.fetchrow(sql, self.name, data, delay, self._channel), idempotent=False
        )
        return str(row["id"])

    async def lease(self, max_messages: int, lease_seconds: float, wait: float) -> list[Lease]:
        lease_seconds = check_seconds(lease_seconds, "lease_seconds", positive=True)
        wait = check_seconds(wait, "wait")
        if isinstance(max_messages, bool) or not isinstance(max_messages, int) or max_messages < 1:
            raise InvalidArgument(f"max_messages must be an integer >= 1, got {max_messages!r}")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while True:
            self._check_open()
            self._wakeup.clear()
            token = os.urandom(12).hex()
            # Re-running a lease is safe: rows leased by a lost reply come back when their lease ends.
            rows = await self._run("lease", _fetch(_LEASE, self.name, max_messages, lease_seconds, token))
            if rows:
                return [Lease(str(r["id"]), bytes(r["data"]), r["deliveries"], token) for r in rows]
            nearest = await self._run("lease", lambda con: con.fetchval(_NEAREST, self.name))
            remaining = deadline - loop.time()
            if remaining <= 0:
                return []
            if nearest is not None:
                remaining = min(remaining, max(0.01, float(nearest)))
            try:
                await asyncio.wait_for(self._wakeup.wait(), timeout=remaining)
            except TimeoutError:
                pass

    async def _settle(self, what: str, sql: str, lease: Lease, *args: Any) -> bool:
        self._check_open()
        # Idempotent: each statement acts only while the lease's token still matches.
        status: str = await self._run(
            what, lambda con: con.execute(sql, int(lease.message_id), lease.handle, *args)
        )
        return not status.endswith(" 0")

    async def heartbeat(self, lease: Lease, lease_seconds: float) -> bool:
        lease_seconds = check_seconds(lease_seconds, "lease_seconds", positive=True)
        sql = f"UPDATE {TABLE} SET visible_at = {_NOW} + $3 WHERE id = $1 AND token = $2"
        return await self._settle("heartbeat", sql, lease, lease_seconds)

    async def ack(self, lease: Lease) -> None:
        await self._settle("ack", f"DELETE FROM {TABLE} WHERE id = $1 AND token = $2", lease)

    async def release(self, lease: Lease, delay: float = 0.0) -> None:
        delay = check_seconds(delay, "delay")
        sql = f"UPDATE {TABLE} SET visible_at = {_NOW} + $3, token = NULL WHERE id = $1 AND token = $2"
        if await self._settle("release", sql, lease, delay) and delay == 0:
            try:
                await self._run("release", lambda con: con.execute("SELECT pg_notify($1, '')", self._channel))
            except PrismError as exc:
                log.debug("queue wake-up notify failed: %s", exc)

    async def depth(self) -> int:
        self._check_open()
        sql = f"SELECT count(*) FROM {TABLE} WHERE queue = $1"
        count: int = await self._run("depth", lambda con: con.fetchval(sql, self.name))
        return count


class PostgresPubSub(_OnBackend, PubSub):
    """Fan-out over LISTEN/NOTIFY: one listening connection per instance, a channel per topic."""

    engine = "postgres"
    #: NOTIFY payloads are under 8,000 bytes.
    max_message_bytes: ClassVar[int] = 7900

    def __init__(self, backend: PostgresBackend, owns: bool = True) -> None:
        super().__init__()
        self._bind(backend, owns)
        self._topics: dict[str, str] = {}
        self._channels: dict[str, str] = {}
        self._listener: Any = None
        self._watch: asyncio.Task[None] | None = None

    @classmethod
    def from_url(cls, url: str, *, store: Any = None, **options: Any) -> PostgresPubSub:
        """A pub/sub on ``postgresql://`` with the PostgreSQL store's options."""
        return cls(*shared_backend(url, store, options))

    def __repr__(self) -> str:
        return f"<PostgresPubSub {mask_url(self._backend._dsn)} {self._state.value}>"

    async def _open(self) -> None:
        await self._open_backend()
        try:
            await self._connect_listener()
        except BaseException:
            await self._close_backend()
            raise

    async def _connect_listener(self) -> None:
        self._listener = await self._backend.connect("pubsub listen")
        self._listener.add_termination_listener(self._on_lost)
        for channel in self._topics.values():
            await self._listener.add_listener(channel, self._on_notify)

    def _on_lost(self, connection: Any) -> None:
        if self._state.value == "open" and (self._watch is None or self._watch.done()):
            self._watch = asyncio.get_running_loop().create_task(self._relisten())

    async def _relisten(self) -> None:
        while self._state.value == "open":
            try:
                await self._connect_listener()
                log.warning("postgres LISTEN connection re-established")
                return
            except (PrismError, *_LISTEN_ERRORS) as exc:
                log.warning("postgres LISTEN reconnect failed: %s", exc)
                await asyncio.sleep(RELISTEN_DELAY)

    async def _close(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
        if self._listener is not None and not self._listener.is_closed():
            await self._listener.close()
        await self._close_backend()

    def _on_notify(self, connection: Any, pid: int, channel: str, payload: str) -> None:
        topic = self._channels.get(channel)
        if topic is None:
            return
        data = payload[1:].encode() if payload[:1] == "t" else base64.b64decode(payload[1:])
        self._dispatch(topic, data)

    async def _publish(self, topic: str, data: bytes) -> None:
        try:
            text = data.decode()
            payload = "t" + text if "\x00" not in text else ""
        except UnicodeDecodeError:
            payload = ""
        if not payload:
            payload = "b" + base64.b64encode(data).decode()
        if len(payload.encode()) > self.max_message_bytes + 1:
            raise InvalidArgument(
                f"this message is {len(payload)} bytes once encoded for NOTIFY; the limit is "
                f"{self.max_message_bytes}"
            )
        channel = _channel("ps", topic)
        await self._run(
            "publish", lambda con: con.execute("SELECT pg_notify($1, $2)", channel, payload), idempotent=False
        )

    async def _listen(self, topic: str) -> None:
        channel = self._topics[topic] = _channel("ps", topic)
        self._channels[channel] = topic
        try:
            await self._listener.add_listener(channel, self._on_notify)
        except _LISTEN_ERRORS as exc:
            del self._topics[topic], self._channels[channel]
            raise BackendUnavailable(
                f"postgres subscribe on {self._backend.target}: {type(exc).__name__}: {exc}", cause=exc
            ) from exc

    async def _unlisten(self, topic: str) -> None:
        channel = self._topics.pop(topic, None)
        if channel is None:
            return
        self._channels.pop(channel, None)
        try:
            await self._listener.remove_listener(channel, self._on_notify)
        except _LISTEN_ERRORS as exc:
            log.warning("postgres UNLISTEN of %s failed: %s", topic, exc)
