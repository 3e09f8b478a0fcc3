"""PostgreSQL engines: a Queue on a ``FOR UPDATE SKIP LOCKED`` table, and PubSub on LISTEN/NOTIFY.

Both open their own connections from the store URL (``postgresql://user:pass@host/db``;
Prism's query options are dropped, ``sslmode`` is kept). The queue's table, created
on first use::

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
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import asyncpg

from prism.backends.messaging import Lease, PubSub, Queue, check_seconds
from prism.backends.urls import mask_url
from prism.errors import BackendUnavailable, InvalidArgument

__all__ = ["PostgresPubSub", "PostgresQueue"]

log = logging.getLogger("prism.patterns")

TABLE = "prism_queue"
#: Connections of a queue's pool (leases, acks and enqueues of one process).
POOL_SIZE = 4
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

_LEASE = f"""
WITH picked AS (
    SELECT id FROM {TABLE} WHERE queue = $1 AND visible_at <= {_NOW}
    ORDER BY visible_at, id LIMIT $2 FOR UPDATE SKIP LOCKED
)
UPDATE {TABLE} q SET visible_at = {_NOW} + $3, token = $4, deliveries = q.deliveries + 1
FROM picked WHERE q.id = picked.id
RETURNING q.id, q.data, q.deliveries
"""


def _dsn(url: str) -> str:
    parts = urlsplit(url)
    scheme = "postgresql" if parts.scheme in ("postgres", "postgresql") else parts.scheme
    kept = {k: v[0] for k, v in parse_qs(parts.query).items() if k in ("sslmode", "sslrootcert")}
    return urlunsplit((scheme, parts.netloc, parts.path, urlencode(kept), ""))


def _unavailable(what: str, url: str, exc: BaseException) -> BackendUnavailable:
    return BackendUnavailable(
        f"postgres {what} failed at {mask_url(url)}: {type(exc).__name__}: {exc}", cause=exc
    )


_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, asyncio.TimeoutError)


def _channel(kind: str, name: str) -> str:
    """A LISTEN channel name (at most 63 bytes) for a queue or topic."""
    return f"prism_{kind}_{hashlib.sha256(name.encode()).hexdigest()[:40]}"


class PostgresQueue(Queue):
    """A Queue on the ``prism_queue`` table (see the module docstring)."""

    engine = "postgres"

    def __init__(self, name: str, url: str) -> None:
        super().__init__(name)
        self._url = url
        self._dsn = _dsn(url)
        self._channel = _channel("q", name)
        self._wakeup = asyncio.Event()
        self._listener: Any = None

    @classmethod
    def from_url(cls, url: str, name: str, *, store: Any = None, **options: Any) -> PostgresQueue:
        if options:
            raise InvalidArgument(f"the postgres queue takes no options, got {sorted(options)}")
        return cls(name, url)

    async def _open(self) -> None:
        try:
            self._pool: Any = await asyncpg.create_pool(self._dsn, min_size=1, max_size=POOL_SIZE)
            async with self._pool.acquire() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", TABLE)
                await conn.execute(_DDL)
            self._listener = await asyncpg.connect(self._dsn)
            await self._listener.add_listener(self._channel, self._on_notify)
        except _ERRORS as exc:
            await self._close()
            raise _unavailable("queue setup", self._url, exc) from exc

    async def _close(self) -> None:
        self._wakeup.set()
        if self._listener is not None:
            await self._listener.close()
        pool = getattr(self, "_pool", None)
        if pool is not None:
            await pool.close()

    def _on_notify(self, *args: Any) -> None:
        self._wakeup.set()

    async def enqueue(self, data: bytes, *, delay: float = 0.0) -> str:
        delay = check_seconds(delay, "delay")
        if not isinstance(data, bytes):
            raise InvalidArgument(f"a message is bytes, got {type(data).__name__}")
        self._check_open()
        try:
            row = await self._pool.fetchrow(
                f"WITH ins AS (INSERT INTO {TABLE} (queue, data, visible_at) VALUES ($1, $2, {_NOW} + $3) "
                "RETURNING id) SELECT id, pg_notify($4, '') FROM ins",
                self.name, data, delay, self._channel,
            )  # fmt: skip
        except _ERRORS as exc:
            raise _unavailable("enqueue", self._url, exc) from exc
        return str(row["id"])

    async def lease(self, max_messages: int, lease_seconds: float, wait: float) -> list[Lease]:
        lease_seconds = check_seconds(lease_seconds, "lease_seconds", positive=True)
        wait = check_seconds(wait, "wait")
        if max_messages < 1:
            raise InvalidArgument("max_messages must be >= 1")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while True:
            self._check_open()
            self._wakeup.clear()
            token = os.urandom(12).hex()
            try:
                rows = await self._pool.fetch(_LEASE, self.name, max_messages, lease_seconds, token)
                if rows:
                    return [Lease(str(r["id"]), bytes(r["data"]), r["deliveries"], token) for r in rows]
                nearest = await self._pool.fetchval(
                    f"SELECT min(visible_at) - {_NOW} FROM {TABLE} WHERE queue = $1", self.name
                )
            except _ERRORS as exc:
                raise _unavailable("lease", self._url, exc) from exc
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
        try:
            status: str = await self._pool.execute(sql, int(lease.message_id), lease.handle, *args)
        except _ERRORS as exc:
            raise _unavailable(what, self._url, exc) from exc
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
                await self._pool.execute("SELECT pg_notify($1, '')", self._channel)
            except _ERRORS as exc:
                log.debug("queue wake-up notify failed: %s", exc)

    async def depth(self) -> int:
        self._check_open()
        try:
            count: int = await self._pool.fetchval(
                f"SELECT count(*) FROM {TABLE} WHERE queue = $1", self.name
            )
        except _ERRORS as exc:
            raise _unavailable("depth", self._url, exc) from exc
        return count


class PostgresPubSub(PubSub):
    """Fan-out over LISTEN/NOTIFY: one listening connection per instance, a channel per topic."""

    engine = "postgres"
    #: NOTIFY payloads are under 8,000 bytes.
    max_message_bytes: ClassVar[int] = 7900

    def __init__(self, url: str) -> None:
        super().__init__()
        self._url = url
        self._dsn = _dsn(url)
        self._topics: dict[str, str] = {}
        self._channels: dict[str, str] = {}
        self._listener: Any = None
        self._watch: asyncio.Task[None] | None = None

    @classmethod
    def from_url(cls, url: str, *, store: Any = None, **options: Any) -> PostgresPubSub:
        if options:
            raise InvalidArgument(f"the postgres pubsub takes no options, got {sorted(options)}")
        return cls(url)

    async def _open(self) -> None:
        try:
            self._pool: Any = await asyncpg.create_pool(self._dsn, min_size=1, max_size=2)
            await self._connect_listener()
        except _ERRORS as exc:
            pool = getattr(self, "_pool", None)
            if pool is not None:
                await pool.close()
            raise _unavailable("pubsub connect", self._url, exc) from exc

    async def _connect_listener(self) -> None:
        self._listener = await asyncpg.connect(self._dsn)
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
            except _ERRORS as exc:
                log.warning("postgres LISTEN reconnect failed: %s", exc)
                await asyncio.sleep(RELISTEN_DELAY)

    async def _close(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
        if self._listener is not None and not self._listener.is_closed():
            await self._listener.close()
        await self._pool.close()

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
        try:
            await self._pool.execute("SELECT pg_notify($1, $2)", _channel("ps", topic), payload)
        except _ERRORS as exc:
            raise _unavailable("publish", self._url, exc) from exc

    async def _listen(self, topic: str) -> None:
        channel = self._topics[topic] = _channel("ps", topic)
        self._channels[channel] = topic
        try:
            await self._listener.add_listener(channel, self._on_notify)
        except _ERRORS as exc:
            del self._topics[topic], self._channels[channel]
            raise _unavailable("subscribe", self._url, exc) from exc

    async def _unlisten(self, topic: str) -> None:
        channel = self._topics.pop(topic, None)
        if channel is None:
            return
        self._channels.pop(channel, None)
        try:
            await self._listener.remove_listener(channel, self._on_notify)
        except _ERRORS as exc:
            log.warning("postgres UNLISTEN of %s failed: %s", topic, exc)
