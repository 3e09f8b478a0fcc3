"""The Redis engine's TimeSeries store: a sorted set per series and slice, dropped whole.

Every key of namespace ``ns`` carries the hash tag ``{<hash of ns>}`` (one cluster
slot per namespace, so one script may touch them together):

* ``<prefix>:ts:{h}:e:<slice>:<series>``: the events of one series in one slice, a
  sorted set whose members all score 0 and sort by their bytes: 8 bytes of the time
  (big-endian, offset by 2^63), the event id, NUL, the item key, NUL, then the value
  and content type (msgpack). Byte order is identity order, so a time range and a
  page cursor are one ``ZRANGEBYLEX``;
* ``<prefix>:ts:{h}:s:<series>``: the slices holding events of the series;
* ``<prefix>:ts:{h}:n:<slice>``: the series with events in the slice;
* ``<prefix>:ts:{h}:slices``: the namespace's slices.

A write is one script per slice touched: for each event a ``ZRANGEBYLEX`` finds a
stored event of the same identity, and a ``ZADD`` adds it when there is none.
Retention is one script that ``UNLINK``s each old slice's sorted sets whole (the
server frees them in the background), never event by event. Commands go through the backend's ``RedisLink``.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from prism.backends.base import Backend
from prism.backends.redis import RedisBackend
from prism.backends.redis._lua import Script
from prism.backends.timeseries import (
    EventWrite,
    Identity,
    SeriesSpec,
    StoredEvent,
    TimeSeriesDriver,
    short_name,
)

__all__ = ["RedisTimeSeries"]

_OFFSET = 1 << 63
_OUTCOMES = (EventWrite.CREATED, EventWrite.EXISTED, EventWrite.CONFLICT)
_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(tuple[bytes, str | None]).decode

# KEYS: events, series slices, slice's series, namespace slices. ARGV: slice, series,
# then (identity prefix, member) pairs. Returns 0 created, 1 existed, 2 conflict per pair.
_WRITE = Script(
    "ts_write",
    """
local call = redis.call
call('ZADD', KEYS[2], ARGV[1], ARGV[1])
call('SADD', KEYS[3], ARGV[2])
call('ZADD', KEYS[4], ARGV[1], ARGV[1])
local out = {}
for i = 3, #ARGV, 2 do
  local prefix = ARGV[i]
  local member = ARGV[i + 1]
  local past = '(' .. string.sub(prefix, 1, -2) .. '\\1'
  local found = call('ZRANGEBYLEX', KEYS[1], '[' .. prefix, past, 'LIMIT', 0, 1)
  if #found == 0 then
    call('ZADD', KEYS[1], 0, member)
    out[#out + 1] = 0
  elseif found[1] == member then
    out[#out + 1] = 1
  else
    out[#out + 1] = 2
  end
end
return out
""",
)

# KEYS: namespace slices. ARGV: the namespace's key base, the first slice kept. Unlinks each
# older slice's sorted sets whole (keys of one hash tag: one slot) and forgets the slices.
_DROP = Script(
    "ts_drop",
    """
local call = redis.call
local base = ARGV[1]
local slices = call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[2])
for _, s in ipairs(slices) do
  local members = base .. ':n:' .. s
  for _, name in ipairs(call('SMEMBERS', members)) do
    call('UNLINK', base .. ':e:' .. s .. ':' .. name)
    call('ZREM', base .. ':s:' .. name, s)
  end
  call('UNLINK', members)
end
call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[2])
return #slices
""",
)


def _time_bytes(micros: int) -> bytes:
    return (micros + _OFFSET).to_bytes(8, "big")


def _prefix(identity: Identity) -> bytes:
    """The bytes every member of one identity starts with (ending in NUL)."""
    micros, event_id, key = identity
    return _time_bytes(micros) + event_id.encode() + b"\0" + key.encode() + b"\0"


def _member(event: StoredEvent) -> tuple[bytes, bytes]:
    prefix = _prefix(event.identity)
    return prefix, prefix + _encode((event.value, event.content_type))


def _event(member: bytes) -> StoredEvent:
    micros = int.from_bytes(member[:8], "big") - _OFFSET
    event_id, key, blob = member[8:].split(b"\0", 2)
    value, content_type = _decode(blob)
    return StoredEvent(micros, event_id.decode(), key.decode(), value, content_type)


class RedisTimeSeries(TimeSeriesDriver):
    """Events in per-series, per-slice sorted sets on the backend's link."""

    def __init__(self, backend: Backend) -> None:
        super().__init__(backend)
        assert isinstance(backend, RedisBackend)
        self._link = backend.link
        self._prefix = backend.settings.key_prefix

    def _base(self, spec: SeriesSpec) -> str:
        return f"{self._prefix}:ts:{{{short_name(spec.ns)}}}"

    def _events_key(self, spec: SeriesSpec, slice_no: int, series: str) -> str:
        return f"{self._base(spec)}:e:{slice_no}:{series}"

    async def write(self, spec: SeriesSpec, series: str, events: Sequence[StoredEvent]) -> list[EventWrite]:
        base = self._base(spec)
        by_slice: dict[int, list[int]] = {}
        for i, event in enumerate(events):
            by_slice.setdefault(spec.slice_of(event.time), []).append(i)
        outcomes: list[EventWrite] = [EventWrite.CREATED] * len(events)
        for slice_no, indexes in by_slice.items():
            args: list[str | bytes | int] = [slice_no, series]
            for i in indexes:
                args.extend(_member(events[i]))
            keys = [
                self._events_key(spec, slice_no, series),
                f"{base}:s:{series}",
                f"{base}:n:{slice_no}",
                f"{base}:slices",
            ]
            # Safe to resend: a second run finds the events the first one added.
            got = await self._link.eval(_WRITE, keys, args, idempotent=True)
            for i, code in zip(indexes, got, strict=True):
                outcomes[i] = _OUTCOMES[int(code)]
        return outcomes

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
        order = ("ZREVRANGEBYSCORE", last, first) if newest_first else ("ZRANGEBYSCORE", first, last)
        slices = await self._link.run(
            "ts_slices", (order[0], f"{self._base(spec)}:s:{series}", order[1], order[2]), idempotent=True
        )
        low = b"[" + _time_bytes(start_us)
        high = b"(" + _time_bytes(end_us)
        if after is not None:
            cursor = _prefix(after)
            if newest_first:
                high = min(high, b"(" + cursor, key=lambda bound: bound[1:])
            else:
                low = max(low, b"[" + cursor[:-1] + b"\1", key=lambda bound: bound[1:])
        out: list[StoredEvent] = []
        for raw in slices:
            key = self._events_key(spec, int(raw), series)
            remaining = limit - len(out)
            if newest_first:
                command = ("ZREVRANGEBYLEX", key, high, low, "LIMIT", 0, remaining)
            else:
                command = ("ZRANGEBYLEX", key, low, high, "LIMIT", 0, remaining)
            members = await self._link.run("ts_read", command, idempotent=True)
            out.extend(_event(m) for m in members)
            if len(out) >= limit:
                break
        return out

    async def delete_series(self, spec: SeriesSpec, series: str) -> None:
        base = self._base(spec)
        slices_key = f"{base}:s:{series}"
        slices = await self._link.run("ts_slices", ("ZRANGE", slices_key, 0, -1), idempotent=True)
        if slices:
            doomed = [self._events_key(spec, int(raw), series) for raw in slices]
            await self._link.run("ts_delete_series", ("UNLINK", *doomed, slices_key), idempotent=True)
            for raw in slices:
                await self._link.run(
                    "ts_delete_series", ("SREM", f"{base}:n:{int(raw)}", series), idempotent=True
                )

    async def drop_slices(self, spec: SeriesSpec, before: int) -> int:
        base = self._base(spec)
        dropped = await self._link.eval(_DROP, [f"{base}:slices"], [base, before], idempotent=True)
        return int(dropped)
