"""Redis engines: a Queue on Redis Streams (consumer group, claim of stalled entries) and Redis pub/sub.

Both open their own connections from the store URL (``redis://host:port/db`` or
``rediss://``); the store's ``key_prefix`` query option, when given, prefixes their
keys too. Keys of queue ``q`` share one hash tag, so a cluster keeps them together:

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
from urllib.parse import parse_qs, urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from prism.backends.urls import mask_url
from prism.errors import BackendUnavailable, InvalidArgument
from prism.patterns.base import Lease, PubSub, Queue, check_seconds

__all__ = ["RedisPubSub", "RedisQueue"]

log = logging.getLogger("prism.patterns")

GROUP = "prism"
#: Most delayed messages moved to the stream per poll.
PROMOTE_BATCH = 100
#: Seconds between attempts to re-establish a lost pub/sub connection.
RESUBSCRIBE_DELAY = 0.5

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


def _split(url: str) -> tuple[str, str]:
    """The connection URL without Prism's query options, and the key prefix."""
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    prefix = query.get("key_prefix", ["prism"])[0]
    if not prefix or any(c in prefix for c in "{}\x00"):
        raise InvalidArgument("key_prefix must be a non-empty str without braces or NUL")
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", "")), prefix


def _unavailable(what: str, url: str, exc: BaseException) -> BackendUnavailable:
    return BackendUnavailable(
        f"redis {what} failed at {mask_url(url)}: {type(exc).__name__}: {exc}", cause=exc
    )


class RedisQueue(Queue):
    """A Queue on a Redis stream and consumer group (see the module docstring)."""

    engine = "redis"

    def __init__(self, name: str, url: str) -> None:
        super().__init__(name)
        self._url, prefix = _split(url)
        base = f"{prefix}:queue:{{{name}}}"
        self._stream = f"{base}:stream"
        self._delayed = f"{base}:delayed"
        self._consumer = f"{socket.gethostname()}-{os.getpid()}-{os.urandom(3).hex()}"

    @classmethod
    def from_url(cls, url: str, name: str, **options: Any) -> RedisQueue:
        if options:
            raise InvalidArgument(f"the redis queue takes no options, got {sorted(options)}")
        return cls(name, url)

    async def _open(self) -> None:
        self._client: Any = aioredis.from_url(self._url, decode_responses=False)
        self._promote = self._client.register_script(_PROMOTE)
        self._claim_stalled = self._client.register_script(_CLAIM_STALLED)
        self._heartbeat = self._client.register_script(_HEARTBEAT)
        self._ack = self._client.register_script(_ACK)
        self._release = self._client.register_script(_RELEASE)
        try:
            await self._client.xgroup_create(self._stream, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                await self._client.aclose()
                raise _unavailable("queue setup", self._url, exc) from exc
        except RedisError as exc:
            await self._client.aclose()
            raise _unavailable("queue setup", self._url, exc) from exc

    async def _close(self) -> None:
        await self._client.aclose()

    async def enqueue(self, data: bytes, *, delay: float = 0.0) -> str:
        delay = check_seconds(delay, "delay")
        if not isinstance(data, bytes):
            raise InvalidArgument(f"a message is bytes, got {type(data).__name__}")
        self._check_open()
        try:
            if delay > 0:
                token = os.urandom(8).hex()
                await self._client.zadd(self._delayed, {token.encode() + b":" + data: time.time() + delay})
                return f"delayed-{token}"
            entry_id = await self._client.xadd(self._stream, {"d": data})
        except RedisError as exc:
            raise _unavailable("enqueue", self._url, exc) from exc
        return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)

    async def lease(self, max_messages: int, lease_seconds: float, wait: float) -> list[Lease]:
        lease_seconds = check_seconds(lease_seconds, "lease_seconds", positive=True)
        wait = check_seconds(wait, "wait")
        if max_messages < 1:
            raise InvalidArgument("max_messages must be >= 1")
        self._check_open()
        keys = [self._stream, self._delayed]
        try:
            await self._promote(keys=keys, args=[time.time(), PROMOTE_BATCH])
            leases: list[Lease] = []
            stalled = await self._claim_stalled(
                keys=[self._stream], args=[GROUP, self._consumer, int(lease_seconds * 1000), max_messages]
            )
            for entry_id, data, count in stalled:
                leases.append(Lease(entry_id.decode(), data, int(count), int(count)))
            if leases:
                return leases
            block = wait
            nearest = await self._client.zrange(self._delayed, 0, 0, withscores=True)
            if nearest:
                block = min(block, max(0.0, nearest[0][1] - time.time()))
            block_ms = int(block * 1000)
            reply = await self._client.xreadgroup(
                GROUP,
                self._consumer,
                {self._stream: ">"},
                count=max_messages,
                block=block_ms if block_ms > 0 else None,
            )
        except RedisError as exc:
            raise _unavailable("lease", self._url, exc) from exc
        for _stream, entries in reply or []:
            for entry_id, fields in entries:
                leases.append(Lease(entry_id.decode(), fields[b"d"], 1, 1))
        return leases

    def _args(self, lease: Lease, *extra: Any) -> list[Any]:
        return [GROUP, self._consumer, lease.message_id, lease.handle, *extra]

    async def heartbeat(self, lease: Lease, lease_seconds: float) -> bool:
        check_seconds(lease_seconds, "lease_seconds", positive=True)
        self._check_open()
        try:
            return bool(await self._heartbeat(keys=[self._stream], args=self._args(lease)))
        except RedisError as exc:
            raise _unavailable("heartbeat", self._url, exc) from exc

    async def ack(self, lease: Lease) -> None:
        self._check_open()
        try:
            await self._ack(keys=[self._stream], args=self._args(lease))
        except RedisError as exc:
            raise _unavailable("ack", self._url, exc) from exc

    async def release(self, lease: Lease, delay: float = 0.0) -> None:
        delay = check_seconds(delay, "delay")
        self._check_open()
        args = self._args(lease, delay, time.time() + delay, os.urandom(8).hex())
        try:
            await self._release(keys=[self._stream, self._delayed], args=args)
        except RedisError as exc:
            raise _unavailable("release", self._url, exc) from exc

    async def depth(self) -> int:
        self._check_open()
        try:
            return int(await self._client.xlen(self._stream)) + int(await self._client.zcard(self._delayed))
        except RedisError as exc:
            raise _unavailable("depth", self._url, exc) from exc


class RedisPubSub(PubSub):
    """Fan-out over Redis pub/sub channels ``<prefix>:ps:<topic>``, one connection per instance."""

    engine = "redis"
    max_message_bytes: ClassVar[int] = 1024 * 1024

    def __init__(self, url: str) -> None:
        super().__init__()
        self._url, prefix = _split(url)
        self._channel_prefix = f"{prefix}:ps:"
        self._reader: asyncio.Task[None] | None = None

    @classmethod
    def from_url(cls, url: str, **options: Any) -> RedisPubSub:
        if options:
            raise InvalidArgument(f"the redis pubsub takes no options, got {sorted(options)}")
        return cls(url)

    async def _open(self) -> None:
        self._client: Any = aioredis.from_url(self._url, decode_responses=False)
        self._pubsub: Any = self._client.pubsub(ignore_subscribe_messages=True)
        try:
            await self._client.ping()
        except RedisError as exc:
            await self._client.aclose()
            raise _unavailable("pubsub connect", self._url, exc) from exc

    async def _close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.wait([self._reader])
        await self._pubsub.aclose()
        await self._client.aclose()

    async def _publish(self, topic: str, data: bytes) -> None:
        try:
            await self._client.publish(self._channel_prefix + topic, data)
        except RedisError as exc:
            raise _unavailable("publish", self._url, exc) from exc

    async def _listen(self, topic: str) -> None:
        try:
            await self._pubsub.subscribe(self._channel_prefix + topic)
        except RedisError as exc:
            raise _unavailable("subscribe", self._url, exc) from exc
        if self._reader is None or self._reader.done():
            self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _unlisten(self, topic: str) -> None:
        try:
            await self._pubsub.unsubscribe(self._channel_prefix + topic)
        except RedisError as exc:
            log.warning("redis unsubscribe of %s failed: %s", topic, exc)

    async def _read(self) -> None:
        skip = len(self._channel_prefix)
        while True:
            try:
                message = await self._pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            except RedisError as exc:
                log.warning("redis pub/sub connection lost (%s); resubscribing", exc)
                await asyncio.sleep(RESUBSCRIBE_DELAY)
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
