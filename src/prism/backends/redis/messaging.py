"""The Redis engine's queue (Redis Streams and a consumer group) and pub/sub (Redis channels).

Both read the same URL and options as the Redis KeyValue backend (``RedisSettings``:
TLS, timeouts, retries, pool size, ``key_prefix``...) and send every command through a
``RedisLink``, so deadlines, retries and error mapping are the backend's own. Given an
open store on the same URL, they use that store's pool; otherwise each opens one.
Keys of queue ``q`` share one hash tag, so a cluster keeps them together:

* ``<prefix>:queue:{q}:stream`` — the stream; one consumer group ``prism`` leases its entries;
* ``<prefix>:queue:{q}:delayed`` — a sorted set of messages not yet due (by due time),
  moved to the stream when due.

A lease is the pending entry's (consumer, delivery count): a heartbeat re-claims the
entry for its consumer (resetting its idle time), and an entry idle for longer than
the lease is claimed by the next poll of any consumer (``XAUTOCLAIM``), which also
counts a delivery, so the stale lease can no longer ack or release it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from typing import Any, ClassVar

from redis.asyncio.client import PubSub as RedisChannels
from redis.exceptions import RedisError

from prism.backends.messaging import Lease, PubSub, Queue, check_seconds
from prism.backends.redis import RedisBackend
from prism.backends.redis._connection import NoConnection, RedisLink, RedisSettings
from prism.backends.redis._lua import Script
from prism.backends.urls import mask_url
from prism.errors import BackendUnavailable, InvalidArgument

__all__ = ["RedisPubSub", "RedisQueue", "shared_link"]

log = logging.getLogger("prism.patterns")

GROUP = "prism"
#: Most delayed messages moved to the stream per poll.
PROMOTE_BATCH = 100
#: Seconds between attempts to re-establish a lost pub/sub connection.
RESUBSCRIBE_DELAY = 0.5

_CREATE_GROUP = """
local r = redis.pcall('XGROUP', 'CREATE', KEYS[1], ARGV[1], '0', 'MKSTREAM')
if type(r) == 'table' and r.err and not string.find(r.err, 'BUSYGROUP', 1, true) then
  return redis.error_reply(r.err)
end
return 1
"""

_PROMOTE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, member in ipairs(due) do
  redis.call('ZREM', KEYS[2], member)
  local sep = string.find(member, ':', 1, true)
  redis.call('XADD', KEYS[1], '*', 'd', string.sub(member, sep + 1))
end
return #due
"""

_CLAIM_STALLED = """
local res = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], '0-0', 'COUNT', ARGV[4])
local out = {}
for _, entry in ipairs(res[2]) do
  local fields = entry[2]
  if fields then
    local p = redis.call('XPENDING', KEYS[1], ARGV[1], entry[1], entry[1], 1)
    if #p > 0 then
      table.insert(out, {entry[1], fields[2], p[1][4]})
    end
  end
end
return out
"""

# Is ARGV[3] still pending for consumer ARGV[2] with delivery count ARGV[4]? (the lease holds)
_OWNED = """
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if #p == 0 or p[1][2] ~= ARGV[2] or tonumber(p[1][4]) ~= tonumber(ARGV[4]) then return 0 end
"""

_HEARTBEAT = (
    _OWNED
    + """
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'JUSTID')
return 1
"""
)

_ACK = (
    _OWNED
    + """
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
redis.call('XDEL', KEYS[1], ARGV[3])
return 1
"""
)

_RELEASE = (
    _OWNED
    + """
local entry = redis.call('XRANGE', KEYS[1], ARGV[3], ARGV[3])
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
redis.call('XDEL', KEYS[1], ARGV[3])
if #entry == 0 then return 0 end
local data = entry[1][2][2]
if tonumber(ARGV[5]) <= 0 then
  redis.call('XADD', KEYS[1], '*', 'd', data)
else
  redis.call('ZADD', KEYS[2], ARGV[6], ARGV[7] .. ':' .. data)
end
return 1
"""
)


CREATE_GROUP = Script("queue_create_group", _CREATE_GROUP)
PROMOTE = Script("queue_promote", _PROMOTE)
CLAIM_STALLED = Script("queue_claim_stalled", _CLAIM_STALLED)
HEARTBEAT = Script("queue_heartbeat", _HEARTBEAT)
ACK = Script("queue_ack", _ACK)
RELEASE = Script("queue_release", _RELEASE)


def shared_link(url: str, store: Any, options: dict[str, Any]) -> tuple[RedisSettings, RedisLink | None]:
    """The settings for ``url`` and, when ``store`` is an open store on the same server, its link.

    The store's link is shared when the URL names the same server and database and
    either carries no options of its own or the same ones as the store.
    """
    settings = RedisSettings.parse(url, dict(options))
    backend = getattr(store, "backend", None)
    if not isinstance(backend, RedisBackend) or backend.settings.url != settings.url:
        return settings, None
    if settings == backend.settings or (not options and "?" not in url):
        return backend.settings, backend.link
    return settings, None


class _OnLink:
    """Owns a RedisLink, or borrows an open store's (and then never closes it)."""

    def _bind(self, settings: RedisSettings, link: RedisLink | None) -> None:
        self.settings = settings
        self._owns_link = link is None
        self._link = link if link is not None else RedisLink(settings)

    @property
    def link(self) -> RedisLink:
        """The pool this object's commands go through."""
        return self._link

    async def _open_link(self) -> None:
        if self._owns_link:
            self._link.open()
        else:
            self._link.pool  # noqa: B018 - raises StoreClosed when the shared store is not open

    async def _close_link(self) -> None:
        if self._owns_link:
            await self._link.close()


class RedisQueue(_OnLink, Queue):
    """A Queue on a Redis stream and consumer group (see the module docstring)."""

    engine = "redis"

    def __init__(self, name: str, settings: RedisSettings, link: RedisLink | None = None) -> None:
        super().__init__(name)
        self._bind(settings, link)
        base = f"{settings.key_prefix}:queue:{{{name}}}"
        self._stream = f"{base}:stream"
        self._delayed = f"{base}:delayed"
        self._consumer = f"{socket.gethostname()}-{os.getpid()}-{os.urandom(3).hex()}"

    def __repr__(self) -> str:
        return f"<RedisQueue {self.name!r} {mask_url(self.settings.url)} {self._state.value}>"

    @classmethod
    def from_url(cls, url: str, name: str, *, store: Any = None, **options: Any) -> RedisQueue:
        """A queue on ``redis://`` or ``rediss://`` with the Redis backend's options."""
        return cls(name, *shared_link(url, store, options))

    async def _open(self) -> None:
        await self._open_link()
        try:
            await self._link.eval(CREATE_GROUP, [self._stream], [GROUP], idempotent=True)
        except BaseException:
            await self._close_link()
            raise

    async def _close(self) -> None:
        await self._close_link()

    async def enqueue(self, data: bytes, *, delay: float = 0.0) -> str:
        delay = check_seconds(delay, "delay")
        if not isinstance(data, bytes):
            raise InvalidArgument(f"a message is bytes, got {type(data).__name__}")
        self._check_open()
        if delay > 0:
            token = os.urandom(8).hex()
            member = token.encode() + b":" + data
            await self._link.run(
                "enqueue", ("ZADD", self._delayed, repr(time.time() + delay), member), idempotent=True
            )
            return f"delayed-{token}"
        entry_id = await self._link.run("enqueue", ("XADD", self._stream, "*", "d", data), idempotent=False)
        return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)

    async def lease(self, max_messages: int, lease_seconds: float, wait: float) -> list[Lease]:
        lease_seconds = check_seconds(lease_seconds, "lease_seconds", positive=True)
        wait = check_seconds(wait, "wait")
        if isinstance(max_messages, bool) or not isinstance(max_messages, int) or max_messages < 1:
            raise InvalidArgument(f"max_messages must be an integer >= 1, got {max_messages!r}")
        self._check_open()
        keys = [self._stream, self._delayed]
        link = self._link
        # Re-running a lease is safe: an entry leased by a lost reply is claimed again once idle.
        await link.eval(PROMOTE, keys, [repr(time.time()), PROMOTE_BATCH], idempotent=True)
        stalled = await link.eval(
            CLAIM_STALLED,
            [self._stream],
            [GROUP, self._consumer, int(lease_seconds * 1000), max_messages],
            idempotent=True,
        )
        leases = [Lease(entry_id.decode(), data, int(count), int(count)) for entry_id, data, count in stalled]
        if leases:
            return leases
        block = wait
        nearest = await link.run("lease", ("ZRANGE", self._delayed, 0, 0, "WITHSCORES"), idempotent=True)
        if nearest:
            # RESP2 answers [member, score], RESP3 [[member, score]].
            score = nearest[0][1] if isinstance(nearest[0], list) else nearest[1]
            block = min(block, max(0.0, float(score) - time.time()))
        block_ms = int(block * 1000)
        args: list[Any] = ["XREADGROUP", "GROUP", GROUP, self._consumer, "COUNT", max_messages]
        if block_ms > 0:
            args += ["BLOCK", block_ms]
        reply = await link.run(
            "lease", (*args, "STREAMS", self._stream, ">"), idempotent=True, blocks_for=block_ms / 1000
        )
        streams = reply.items() if isinstance(reply, dict) else (reply or [])
        for _stream, entries in streams:
            for entry_id, fields in entries:
                leases.append(Lease(entry_id.decode(), _field(fields, b"d"), 1, 1))
        return leases

    def _args(self, lease: Lease, *extra: Any) -> list[Any]:
        return [GROUP, self._consumer, lease.message_id, lease.handle, *extra]

    async def heartbeat(self, lease: Lease, lease_seconds: float) -> bool:
        check_seconds(lease_seconds, "lease_seconds", positive=True)
        self._check_open()
        return bool(await self._link.eval(HEARTBEAT, [self._stream], self._args(lease), idempotent=True))

    async def ack(self, lease: Lease) -> None:
        self._check_open()
        await self._link.eval(ACK, [self._stream], self._args(lease), idempotent=True)

    async def release(self, lease: Lease, delay: float = 0.0) -> None:
        delay = check_seconds(delay, "delay")
        self._check_open()
        args = self._args(lease, repr(delay), repr(time.time() + delay), os.urandom(8).hex())
        # Safe to resend: once applied, the lease no longer owns the entry and a resend does nothing.
        await self._link.eval(RELEASE, [self._stream, self._delayed], args, idempotent=True)

    async def depth(self) -> int:
        self._check_open()
        ready = await self._link.run("depth", ("XLEN", self._stream), idempotent=True)
        delayed = await self._link.run("depth", ("ZCARD", self._delayed), idempotent=True)
        return int(ready) + int(delayed)


def _field(fields: Any, name: bytes) -> bytes:
    """One field of a stream entry, from the flat [name, value, ...] list of the raw reply."""
    if isinstance(fields, dict):
        value: bytes = fields[name]
        return value
    for i in range(0, len(fields) - 1, 2):
        if fields[i] == name:
            found: bytes = fields[i + 1]
            return found
    raise InvalidArgument(f"a stream entry without field {name!r}: not written by a Prism queue")


class RedisPubSub(_OnLink, PubSub):
    """Fan-out over Redis pub/sub channels ``<prefix>:ps:<topic>``.

    Publishing goes through the link like any command; listening holds one connection
    of the pool for as long as the pub/sub is open.
    """

    engine = "redis"
    max_message_bytes: ClassVar[int] = 1024 * 1024

    def __init__(self, settings: RedisSettings, link: RedisLink | None = None) -> None:
        super().__init__()
        self._bind(settings, link)
        self._channel_prefix = f"{settings.key_prefix}:ps:"
        self._reader: asyncio.Task[None] | None = None
        self._channels: RedisChannels | None = None

    def __repr__(self) -> str:
        return f"<RedisPubSub {mask_url(self.settings.url)} {self._state.value}>"

    @classmethod
    def from_url(cls, url: str, *, store: Any = None, **options: Any) -> RedisPubSub:
        """A pub/sub on ``redis://`` or ``rediss://`` with the Redis backend's options."""
        return cls(*shared_link(url, store, options))

    async def _open(self) -> None:
        await self._open_link()
        try:
            await self._link.run("pubsub connect", ("PING",), idempotent=True)
        except BaseException:
            await self._close_link()
            raise
        self._channels = RedisChannels(self._link.pool, ignore_subscribe_messages=True)

    async def _close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.wait([self._reader])
        if self._channels is not None:
            await self._channels.aclose()  # type: ignore[no-untyped-call]
        await self._close_link()

    async def _publish(self, topic: str, data: bytes) -> None:
        await self._link.run("publish", ("PUBLISH", self._channel_prefix + topic, data), idempotent=False)

    async def _listen(self, topic: str) -> None:
        assert self._channels is not None
        channel = self._channel_prefix + topic
        timeout = self.settings.network.operation_timeout
        try:
            async with asyncio.timeout(timeout):
                await self._channels.subscribe(channel)
        except (RedisError, OSError, TimeoutError) as exc:
            raise self._unavailable(f"subscribe to {topic!r}", exc) from exc
        if self._reader is None or self._reader.done():
            self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _unlisten(self, topic: str) -> None:
        assert self._channels is not None
        try:
            async with asyncio.timeout(self.settings.network.operation_timeout):
                await self._channels.unsubscribe(self._channel_prefix + topic)
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("redis unsubscribe of %s failed: %s", topic, exc)

    def _unavailable(self, what: str, exc: BaseException) -> BackendUnavailable:
        return BackendUnavailable(
            f"redis {what} at {mask_url(self.settings.url)}: {type(exc).__name__}: {exc}", cause=exc
        )

    async def _follow_cluster(self, channels: RedisChannels) -> RedisChannels:
        """On a cluster, listen on a live primary once the one listened on is gone.

        Channels reach every node of a cluster, so any primary will do; the map is read
        again and the subscriptions are made anew there. On one server, or when the
        cluster cannot be reached yet, ``channels`` stays (and reconnects by itself).
        """
        slots = self._link.slot_map
        if slots is None:
            return channels
        slots.lost()
        try:
            async with asyncio.timeout(self.settings.network.operation_timeout):
                await slots.refresh()
                pool = self._link.pool
                if pool is channels.connection_pool:
                    return channels
                moved = RedisChannels(pool, ignore_subscribe_messages=True)
                names = list(channels.channels)
                if names:
                    await moved.subscribe(*names)
        except (RedisError, OSError, TimeoutError, NoConnection) as exc:
            log.warning("redis pub/sub: no live primary to listen on yet (%s)", exc)
            return channels
        self._channels = moved
        await channels.aclose()  # type: ignore[no-untyped-call]
        log.warning("redis pub/sub: listening on another primary of the cluster")
        return moved

    async def _read(self) -> None:
        channels = self._channels
        assert channels is not None
        skip = len(self._channel_prefix)
        while True:
            try:
                message = await channels.get_message(ignore_subscribe_messages=True, timeout=1.0)
            except (RedisError, OSError) as exc:
                log.warning("redis pub/sub connection lost (%s); resubscribing", exc)
                await asyncio.sleep(RESUBSCRIBE_DELAY)
                channels = await self._follow_cluster(channels)
                continue
            if message is None:
                if not self._subscribers:
                    await asyncio.sleep(0.05)
                continue
            if message.get("type") != "message":
                continue
            channel = message["channel"]
            topic = (channel.decode() if isinstance(channel, bytes) else str(channel))[skip:]
            self._dispatch(topic, message["data"])
