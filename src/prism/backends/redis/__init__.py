"""`redis://host:port/db` and `rediss://` (TLS): Prism on a Redis server, via redis-py asyncio and hiredis.

**URL and options.** `redis://[user:password@]host[:port][/db]`, or
`redis+cluster://[user:password@]host1:port1,host2:port2/` (`rediss+cluster://` with
TLS) for a Redis Cluster named by one or more seed nodes; every option below may be a
query parameter or a keyword argument of `prism.connect`:

| option | default | meaning |
|---|---|---|
| `connect_timeout` | 2 | seconds to open a connection |
| `operation_timeout` | 5 | seconds for one operation, retries included |
| `max_retries`, `retry_base`, `retry_cap` | 5, 0.02, 0.5 | capped exponential backoff with full jitter |
| `max_connections` | 128 | pooled connections; callers beyond wait (cache hits keep 1/64 of them) |
| `pool_timeout` | `operation_timeout` | seconds a caller waits for a free connection |
| `key_prefix` | `prism` | first part of every key, to share a database with other data |
| `expiry_grace` | 1 | seconds past the last expiry before Redis drops a record's keys itself |
| `client_name` | none | the name shown by `CLIENT LIST` |
| `wait_replicas` | 0 | replicas that must confirm each write (`WAIT`) before it is acknowledged |
| `wait_timeout` | 1 | seconds a write waits for those replicas, then fails with `BackendUnavailable` |
| `ssl_ca_certs`, `ssl_certfile`, `ssl_keyfile` | none | TLS files (`rediss://` only) |
| `ssl_cert_reqs`, `ssl_check_hostname` | `required`, true | TLS verification (`rediss://` only) |
| `feed` | false | keep a change feed (`Namespace.watch`) in a stream per namespace |
| `feed_retention`, `feed_max_changes` | 86400, 1000000 | seconds and changes a feed keeps |
| `feed_block` | 1 | seconds a watch's `XREAD BLOCK` waits at most before it reads again |

**Layout.** All keys of namespace `ns` share the hash tag `{ns}` (with `%` and `}`
escaped), so a namespace lives in one slot. A record `r` is up to four keys:
`prism:{ns}:e:r`, a string holding its flat entry (the item with the empty key) as
metadata, a newline and the value, so that `get` is one `GET` and `get_many` one
`MGET`; `prism:{ns}:h:r`, a hash holding each other item's value (`v<key>`) and
metadata (`m<key>`); `prism:{ns}:z:r`, the sorted set of those item keys for range
reads by `ZRANGEBYLEX`; and `prism:{ns}:x:r`, those that expire, scored by expiry.
Metadata is the expiry, the etag, the update time and the content type.
`prism:{ns}:ids` is the sorted set of the namespace's record ids that scans page
through with `ZRANGEBYLEX` and an exclusive cursor; `prism:{ns}:exp` schedules the
records whose items all expire, by when to look at them again.

**Atomicity.** Every write is one Lua script (`EVALSHA`, loaded on `NOSCRIPT`): the
etag compare-and-set, the value, the metadata, the indexes and the expiry of a record
change together. `transact` is a single script that checks every condition, in order
and seeing the effect of the earlier ops, before it applies any op: all or nothing,
across any records of one namespace.

**Change feed** (only with `feed=true`, Redis 7.0 or later; the other `feed_`
options need it). Each namespace has a stream, `prism:{ns}:feed`, in the namespace's
slot. Every write appends its changes to it inside the same script (or, for a
put_many of plain puts, the same `MULTI`/`EXEC`) that applies it, so a change is in
the feed if and only if it was committed, in commit order; a refused condition or
transaction appends nothing. An entry holds the record id, the item key, the op, the
etag and the update time; the cursor is its stream id with its number in the stream.
The same call trims the stream to the namespace's retention (the store's
`feed_retention` and `feed_max_changes`, or the namespace's own from
`store.namespace(name, feed_retention=, feed_max_changes=)`, which every process
writing the namespace should give alike): `XTRIM MAXLEN ~` and `MINID ~` of the
server's clock less the retention, whole stream nodes at a time, so a feed may keep a
little more than asked (up to `stream-node-max-entries`, 100 by default) and an idle
namespace keeps its changes until its next write. A cursor whose next change was
trimmed raises `CursorExpired`: entries are numbered as they are added and only
trimming removes them, so the stream's length and `entries-added` tell whether one is
missing; a cursor whose entry should still be there but is not (the namespace's keys
were deleted, or a restart lost them) raises it too. A watch waits in `XREAD BLOCK`
on one pooled connection for at most `poll_interval` or `feed_block`, whichever is
shorter, and wakes as soon as a change is appended; while it waits it holds that
connection, so size `max_connections` for the watches as well as the calls (a closed
feed ends within that wait). Expiry is not reported (`watch_expiry` is false): Redis
drops expired keys by itself, outside any script of the store. Without `feed=true`
nothing is appended and the scripts take the paths they took before.

**Expiry.** Each item carries its own expiry, judged by the client's clock on every
read, scan and condition, so an expired item is absent at once. Redis then reclaims
the space by itself: a flat entry's key gets `PXAT` at its expiry plus
`expiry_grace`, and a record's hash and sorted sets get `PEXPIREAT` at the latest
expiry of their items when all of them expire. Writes that set a TTL or delete also
sweep a few records that are due (removing their ids from the index once nothing
live is left) and drop the expired items of the record they touch; scans drop the
records they find with nothing live left. Keep `expiry_grace` above the clock
difference between clients and server.

**Token buckets.** `take_token` (the gateway's rate limits shared across processes,
`control.store`) keeps each bucket in one hash, `prism:bucket:NAME`, refilled and
taken from by one Lua script timed by the server's `TIME`, so every client shares one
rate whatever its own clock says. A bucket expires once it would be full again.

**Failures.** A call that cannot get a connection, or that the server refuses to
run (`LOADING`, `BUSY`, `READONLY`, `TRYAGAIN`), is retried with backoff within
`operation_timeout`. A connection lost after a write was sent is not resent, since
the write may have been applied: the call raises `BackendUnavailable` at once. Reads
are retried in both cases. A cancelled call drops its connection rather than
returning it with an unread reply.

**Redis Cluster.** With `redis+cluster://` each command goes to the primary serving
its key's slot, from a slot map read with `CLUSTER SLOTS` from the first node that
answers (the primaries last seen, then the seeds), one pool per node. Every script,
multi-record transactions included, touches one namespace and so one slot; namespaces
spread over the shards by the hash of their name, and one namespace is bounded by one
shard. MOVED, ASK, CLUSTERDOWN, TRYAGAIN and a node that cannot be reached are
retried within `operation_timeout` after the map is rebuilt, so a slot migration or a
primary failing over to its replica costs `BackendUnavailable` only for the seconds
the cluster needs to elect the replica. Replication is asynchronous: a write
acknowledged by a primary that dies before its replica received it is lost;
`wait_replicas=1` closes that gap (a write is acknowledged once a replica has it),
at the price of a round trip to the replica and of refusing writes while the shard
has no live replica. The queue and the pub/sub work on the cluster too; a pub/sub
listens on one primary (channels reach every node) and moves to another when that
one goes away. `health()` names the primaries and counts the slot map's rebuilds.

**Reads** always go to the primary, so `consistency="strong"` costs nothing extra.
Values are capped at 256 MiB, half of the server's default `proto-max-bulk-len`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any, ClassVar

from prism.backends._feed import (
    cursor_ahead,
    cursor_expired,
    feed_capabilities,
    feed_settings,
    retention_options,
)
from prism.backends._retry import split_options
from prism.backends.base import Backend
from prism.backends.redis._connection import RedisLink, RedisSettings
from prism.backends.redis._lua import (
    DELETE_RANGE,
    GET_MANY,
    GET_RANGE,
    LOG_PUTS,
    PUT,
    PUT_LOGGED,
    READ_CHANGES,
    SCAN,
    TAKE_TOKEN,
    WRITE,
)
from prism.backends.redis._quick import QuickReads
from prism.backends.urls import mask_url
from prism.errors import BackendUnavailable, DecodeError, InvalidArgument
from prism.model import (
    Capabilities,
    Change,
    ChangeOp,
    Item,
    StoredWrite,
    WriteOutcome,
    condition_failed,
    epoch_to_datetime,
    transaction_refused,
)

__all__ = ["RedisBackend"]

#: Expired items one write drops from its record, at most.
PURGE_LIMIT = 64
#: Records scheduled to have expired that one write call looks at, at most.
SWEEP_LIMIT = 16
#: Index entries or item keys one scan or range script examines before it yields.
EXAMINE_LIMIT = 1000
#: Items one delete_range script deletes before it yields.
DELETE_BATCH = 500
#: Largest value of a put_many without conditions or expiry that goes through plain
#: commands (``_put_plain``, which reads back the entries it replaces); one with larger
#: values goes through the write script, which inspects them on the server.
PLAIN_VALUE_BYTES = 64 * 1024
#: Largest value: half of Redis's default proto-max-bulk-len (512 MiB), leaving room for
#: the metadata stored with it and for the script arguments that carry it.
MAX_VALUE_BYTES = 256 * 1024 * 1024
#: Longest a watch's XREAD BLOCK waits for a change before it reads again (seconds).
DEFAULT_FEED_BLOCK = 1.0
#: Changes one read of a feed examines at most (those of other prefixes included).
FEED_EXAMINE_LIMIT = 1000
#: A cursor is a stream entry id ``ms-seq`` and the entry's number in the stream (1 for the
#: first entry ever added), as the one number ``((ms * 2**64) + seq) * 2**64 + number``.
_SPAN = 1 << 64
_OPS: dict[bytes, ChangeOp] = {b"p": "put", b"d": "delete"}


def _item(key: str, meta: bytes, value: bytes, now: float) -> Item | None:
    """The item stored as ``meta`` and ``value``, or None when it has expired."""
    try:
        expires, etag, updated, content_type = meta.split(b"\n", 3)
        expires_at = float(expires) if expires else None
        if expires_at is not None and expires_at <= now:
            return None
        return Item(
            key,
            value,
            etag.decode(),
            expires_at,
            content_type.decode() if content_type else None,
            float(updated),
        )
    except ValueError as exc:
        raise DecodeError(f"item {key!r} holds metadata Prism did not write", key=key) from exc


def _flat(key: str, stored: bytes, now: float) -> Item | None:
    """The flat entry stored as metadata, newline, value; None when it has expired."""
    try:
        expires, etag, updated, content_type, value = stored.split(b"\n", 4)
        expires_at = float(expires) if expires else None
        if expires_at is not None and expires_at <= now:
            return None
        return Item(
            key,
            value,
            etag.decode(),
            expires_at,
            content_type.decode() if content_type else None,
            float(updated),
        )
    except ValueError as exc:
        raise DecodeError(f"entry {key!r} holds data Prism did not write", key=key) from exc


def _live_head(record: str, head: bytes, now: float) -> bool:
    """Whether the flat entry stored as ``head`` (or starting so; b"" for none) is live."""
    if not head:
        return False
    expires, newline, _ = head.partition(b"\n")
    try:
        if not newline:
            raise ValueError("no expiry field")
        return not expires or float(expires) > now
    except ValueError as exc:
        raise DecodeError(f"entry {record!r} holds data Prism did not write", key=record) from exc


class _Stamp:
    """Builds the stored form of puts: metadata (expiry, etag, update time, content type), newline, value.

    The update time of one call's puts is one value, so its text is made once.
    """

    __slots__ = ("_updated", "_updated_text")

    def __init__(self) -> None:
        self._updated: float | None = None
        self._updated_text = ""

    def stored(self, op: StoredWrite) -> bytes:
        assert op.value is not None
        if op.updated_at != self._updated:
            self._updated = op.updated_at
            self._updated_text = repr(float(op.updated_at))
        expires = "" if op.expires_at is None else repr(float(op.expires_at))
        meta = f"{expires}\n{op.etag}\n{self._updated_text}\n{op.content_type or ''}\n"
        return meta.encode() + op.value


def _cursor(entry_id: bytes, number: int) -> str:
    """The opaque cursor of a stream entry id and its number."""
    ms, _, seq = entry_id.partition(b"-")
    return str(((int(ms) * _SPAN) + int(seq or 0)) * _SPAN + int(number))


def _entry(cursor: str) -> tuple[str, int]:
    """The stream entry id and number a cursor stands for; InvalidArgument for anything else."""
    if type(cursor) is not str or not cursor.isascii() or not cursor.isdigit() or len(cursor) > 60:
        raise InvalidArgument(f"{cursor!r} is not a change-feed cursor of this store")
    rest, number = divmod(int(cursor), _SPAN)
    ms, seq = divmod(rest, _SPAN)
    return f"{ms}-{seq}", number


def _change(entry_id: bytes, number: int, fields: list[bytes]) -> Change:
    values = dict(zip(fields[::2], fields[1::2], strict=True))
    try:
        op = _OPS[values[b"o"]]
        etag = values[b"t"].decode() if op == "put" else None
        return Change(
            key=values[b"r"].decode(),
            op=op,
            cursor=_cursor(entry_id, number),
            item_key=values[b"k"].decode(),
            etag=etag or None,
            updated_at=epoch_to_datetime(float(values[b"u"])),
        )
    except (KeyError, ValueError) as exc:
        raise DecodeError(f"change-feed entry {entry_id!r} holds data Prism did not write") from exc


def _condition(op: StoredWrite) -> str:
    """An op's condition as the write script reads it: '' (none), 'A' (absent) or 'M' + etag."""
    if op.if_absent:
        return "A"
    return "" if op.if_match is None else "M" + op.if_match


class RedisBackend(Backend):
    """Records as Redis strings, hashes and sorted sets, written by Lua scripts."""

    name: ClassVar[str] = "redis"
    capabilities = Capabilities(
        max_value_bytes=MAX_VALUE_BYTES, token_buckets=True, timeseries=True, watch=True
    )
    timeseries_driver: ClassVar[str | None] = "prism.backends.redis.timeseries:RedisTimeSeries"
    feed_opt_in: ClassVar[bool] = True
    namespace_feed_retention: ClassVar[bool] = True

    def __init__(
        self,
        settings: RedisSettings,
        *,
        feed: bool = False,
        feed_retention: float | None = None,
        feed_max_changes: int | None = None,
        feed_block: float = DEFAULT_FEED_BLOCK,
    ) -> None:
        self.feed_retention, self.feed_max_changes = feed_settings(feed, feed_retention, feed_max_changes)
        if type(feed_block) not in (int, float) or not 0 < feed_block <= 60:
            raise InvalidArgument(f"feed_block must be > 0 and <= 60 seconds, got {feed_block!r}")
        #: Whether every write also appends its changes to the namespace's stream (``feed=true``).
        self.feed = feed
        self.feed_block = float(feed_block)
        self.capabilities = feed_capabilities(type(self).capabilities, feed)
        self.settings = settings
        self._link = RedisLink(settings)
        self._quick = QuickReads(self._link)
        self._bases: dict[str, str] = {}
        self._grace_ms = round(settings.expiry_grace * 1000)

    @classmethod
    def from_url(cls, url: str, **options: Any) -> RedisBackend:
        """A backend for ``redis://host:port/db`` (options as query parameters or keywords)."""
        base, opts = split_options(url, options)
        kwargs: dict[str, Any] = retention_options(opts)
        if "feed_block" in opts:
            raw = opts.pop("feed_block")
            try:
                kwargs["feed_block"] = float(raw)
            except (TypeError, ValueError) as exc:
                raise InvalidArgument(f"feed_block must be a number of seconds, got {raw!r}") from exc
            if not kwargs.get("feed"):
                raise InvalidArgument("feed_block needs the change feed: start the store with feed=true")
        return cls(RedisSettings.parse(base, opts), **kwargs)

    def __repr__(self) -> str:
        return f"<RedisBackend {mask_url(self.settings.url)}>"

    @property
    def link(self) -> RedisLink:
        """The connection pool every command of this store goes through (its queue and pub/sub too)."""
        return self._link

    async def open(self) -> None:
        """Build the pool and check that the server answers."""
        self._link.open()
        try:
            await self._link.run("ping", ("PING",), idempotent=True)
            if self.feed:
                await self._check_feed_support()
        except BaseException:
            await self._link.close()
            raise

    async def close(self) -> None:
        await self._quick.close()
        await self._link.close()

    async def _check_feed_support(self) -> None:
        """Refuse ``feed=true`` on a server whose streams do not tell what they trimmed (before 7.0)."""
        info = await self._link.run("info", ("INFO", "server"), idempotent=True)
        for line in bytes(info).decode(errors="replace").splitlines():
            if line.startswith("redis_version:"):
                version = line.split(":", 1)[1].strip()
                try:
                    major = int(version.split(".", 1)[0])
                except ValueError:
                    major = 0
                if major < 7:
                    raise BackendUnavailable(
                        f"the change feed (feed=true) needs Redis 7.0 or later, the server runs {version}"
                    )
                return

    async def health(self) -> dict[str, Any]:
        """Server version, mode and round-trip latency; BackendUnavailable when it does not answer."""
        started = time.perf_counter()
        await self._link.run("ping", ("PING",), idempotent=True)
        latency = time.perf_counter() - started
        info = await self._link.run("info", ("INFO", "server"), idempotent=True)
        fields = dict(
            line.split(":", 1) for line in bytes(info).decode(errors="replace").splitlines() if ":" in line
        )
        return {
            "server_version": fields.get("redis_version", "unknown"),
            "mode": fields.get("redis_mode", "unknown"),
            "latency_ms": round(latency * 1000, 3),
            "db": self.settings.db,
            "max_connections": self.settings.max_connections,
            **self._link.health(),
        }

    def _base(self, ns: str) -> str:
        """The prefix of every key of namespace ``ns``: its hash tag, with ``%`` and ``}`` escaped."""
        base = self._bases.get(ns)
        if base is None:
            tag = ns.replace("%", "%25").replace("}", "%7D")
            base = self._bases[ns] = f"{self.settings.key_prefix}:{{{tag}}}:"
        return base

    def _feed_args(self, ns: str) -> tuple[int, int]:
        """The namespace feed's most changes and its retention in milliseconds."""
        retention, max_changes = self.feed_limits(ns)
        return max_changes, max(1, math.ceil(retention * 1000))

    # -- shared token buckets -----------------------------------------------------------

    async def take_token(self, bucket: str, rate: float, burst: float) -> float:
        """One token from ``bucket`` (``prefix:bucket:NAME``, a hash), by one script on the server's clock."""
        if not (rate > 0 and burst >= 1):
            raise InvalidArgument(f"a token bucket needs rate > 0 and burst >= 1, got {rate!r} and {burst!r}")
        ttl_ms = min(10**12, max(1000, math.ceil(burst / rate * 1000) + 1000))
        wait = await self._link.eval(
            TAKE_TOKEN,
            (f"{self.settings.key_prefix}:bucket:{bucket}",),
            (repr(float(rate)), repr(float(burst)), str(ttl_ms)),
            idempotent=False,
        )
        return float(wait)

    # -- reads ------------------------------------------------------------------------

    async def get(self, ns: str, record: str, key: str, *, consistent: bool = False) -> Item | None:
        base = self._base(ns)
        if not key:
            stored = await self._link.run("get", ("GET", f"{base}e:{record}"), idempotent=True)
            return None if stored is None else _flat(record, stored, time.time())
        meta, value = await self._link.run(
            "get", ("HMGET", f"{base}h:{record}", "m" + key, "v" + key), idempotent=True
        )
        return None if meta is None or value is None else _item(key, meta, value, time.time())

    async def get_many(
        self, ns: str, addresses: Sequence[tuple[str, str]], *, consistent: bool = False
    ) -> list[Item | None]:
        if not addresses:
            return []
        base = self._base(ns)
        first = addresses[0][0]
        if all(not key for _, key in addresses):
            found = await self._link.run(
                "get_many", ("MGET", *(f"{base}e:{record}" for record, _ in addresses)), idempotent=True
            )
            now = time.time()
            return [
                None if s is None else _flat(r, s, now) for (r, _), s in zip(addresses, found, strict=True)
            ]
        if all(key and record == first for record, key in addresses):
            fields: list[str] = []
            for _, key in addresses:
                fields += ("m" + key, "v" + key)
            reply = await self._link.run("get_many", ("HMGET", f"{base}h:{first}", *fields), idempotent=True)
        else:
            args = [base, *(f"{record}\0{key}" for record, key in addresses)]
            reply = await self._link.eval(GET_MANY, (f"{base}ids",), args, idempotent=True)
        now = time.time()
        out: list[Item | None] = []
        for i, (record, key) in enumerate(addresses):
            first_part, second = reply[2 * i], reply[2 * i + 1]
            if first_part is None or second is None:
                out.append(None)
            elif not key:
                out.append(_flat(record, first_part, now))
            else:
                out.append(_item(key, first_part, second, now))
        return out

    async def get_flat_within(self, ns: str, records: Sequence[str], within: float) -> list[Item | None]:
        if not records:
            return []
        base = self._base(ns)
        found = await self._quick.read(
            "get_many", ("MGET", *(f"{base}e:{record}" for record in records)), within
        )
        now = time.time()
        return [None if s is None else _flat(r, s, now) for r, s in zip(records, found, strict=True)]

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
        base = self._base(ns)
        keys = (f"{base}e:{record}", f"{base}h:{record}", f"{base}z:{record}")
        lo: str | bytes
        if after is not None and (start is None or after >= start):
            lo = "(" + after
        else:
            lo = "[" + start if start else "-"
        hi = "+" if end is None else "(" + end
        with_flat = start in (None, "") and after is None and end != ""
        out: list[Item] = []
        while True:
            now = time.time()
            args = (repr(now), lo, hi, limit - len(out), EXAMINE_LIMIT, "1" if with_flat else "")
            reply = await self._link.eval(GET_RANGE, keys, args, idempotent=True)
            for i in range(2, len(reply), 3):
                key = reply[i].decode()
                item = (
                    _flat(key, reply[i + 1], now) if not key else _item(key, reply[i + 1], reply[i + 2], now)
                )
                if item is not None:
                    out.append(item)
            if reply[0] or len(out) >= limit:
                return out
            lo, with_flat = b"(" + reply[1], False

    async def scan(self, ns: str, prefix: str, after: str | None, limit: int) -> list[str]:
        base = self._base(ns)
        lo: str | bytes = "[" + prefix if prefix else "-"
        if after is not None and after >= prefix:
            lo = "(" + after
        # No UTF-8 string holds the byte 0xFF, so it bounds every id that starts with the prefix.
        hi = b"(" + prefix.encode() + b"\xff" if prefix else "+"
        out: list[str] = []
        while True:
            args = (repr(time.time()), lo, hi, limit - len(out), EXAMINE_LIMIT, base)
            reply = await self._link.eval(SCAN, (f"{base}ids",), args, idempotent=True)
            out.extend(rid.decode() for rid in reply[2:])
            if reply[0] or len(out) >= limit:
                return out
            lo = b"(" + reply[1]

    # -- writes -----------------------------------------------------------------------

    def _write_args(
        self, ns: str, ops: Sequence[StoredWrite], atomic: bool
    ) -> tuple[tuple[str, ...], list[Any]]:
        base = self._base(ns)
        plain = not atomic and all(
            op.value is not None and not op.key and op.if_match is None and not op.if_absent for op in ops
        )
        mode = "p" if plain else ("1" if atomic else "0")
        max_changes, age_ms = self._feed_args(ns) if self.feed else (0, 0)
        args: list[Any] = [
            repr(time.time()),
            mode,
            self._grace_ms,
            PURGE_LIMIT,
            0,
            base,
            max_changes,
            age_ms,
        ]
        expiring = False
        stamp = _Stamp()
        for op in ops:
            head = op.record if plain else f"{op.record}\0{op.key}\0{_condition(op)}"
            if op.value is None:
                expiring = True
                args += (head, b"")
            else:
                expiring = expiring or op.expires_at is not None
                args += (head, stamp.stored(op))
        if expiring:
            # Calls that schedule or may end expiries sweep the records due, so their
            # ids leave the index; plain puts skip it.
            args[4] = SWEEP_LIMIT
        if self.feed:
            return (f"{base}ids", f"{base}exp", f"{base}feed"), args
        return (f"{base}ids", f"{base}exp"), args

    async def write(self, ns: str, ops: Sequence[StoredWrite]) -> list[WriteOutcome]:
        if not ops:
            return []
        if all(
            op.value is not None
            and not op.key
            and op.expires_at is None
            and op.if_match is None
            and not op.if_absent
            and (len(op.value) <= PLAIN_VALUE_BYTES or len(ops) == 1)
            for op in ops
        ):
            return await self._put_plain(ns, ops)
        keys, args = self._write_args(ns, ops, atomic=False)
        codes = await self._link.eval(WRITE, keys, args, idempotent=False)
        return [
            WriteOutcome(True, bool(code & 1)) if code >= 2 else condition_failed(bool(code & 1))
            for code in codes
        ]

    async def _put_plain(self, ns: str, ops: Sequence[StoredWrite]) -> list[WriteOutcome]:
        """Unconditional puts of flat entries without expiry, with the least work on the server.

        One put is the small PUT script: the entry's ``SET ... GET``, and the record's
        ZADD to the namespace index when it had no entry. Several are plain commands in
        one MULTI/EXEC, each once for all of them: ZADD every record to the index (a
        no-op for one listed already), MGET the entries they replace (to tell whether
        each was live) and MSET the new ones. Nothing else runs in between, so the index
        never misses a record; a script would cost the server several times more per key.
        """
        base = self._base(ns)
        index = f"{base}ids"
        now = time.time()
        stamp = _Stamp()
        if len(ops) == 1:
            op = ops[0]
            if self.feed:
                live = await self._link.eval(
                    PUT_LOGGED,
                    (index, f"{base}e:{op.record}", f"{base}feed"),
                    (repr(now), op.record, stamp.stored(op), *self._feed_args(ns)),
                    idempotent=False,
                )
                return [WriteOutcome(True, bool(live))]
            keys = (index, f"{base}e:{op.record}")
            live = await self._link.eval(
                PUT, keys, (repr(now), op.record, stamp.stored(op)), idempotent=False
            )
            return [WriteOutcome(True, bool(live))]
        # The three commands written out in the Redis protocol at once: each entry's key is
        # encoded once for MGET and MSET.
        count = len(ops)
        index_bytes = index.encode()
        zadd = [b"*%d\r\n$4\r\nZADD\r\n$%d\r\n%b\r\n" % (2 + 2 * count, len(index_bytes), index_bytes)]
        mget = [b"*%d\r\n$4\r\nMGET\r\n" % (1 + count)]
        mset = [b"*%d\r\n$4\r\nMSET\r\n" % (1 + 2 * count)]
        prefix = f"{base}e:".encode()
        for op in ops:
            record = op.record.encode()
            entry = b"$%d\r\n%b%b\r\n" % (len(prefix) + len(record), prefix, record)
            zadd.append(b"$1\r\n0\r\n$%d\r\n%b\r\n" % (len(record), record))
            mget.append(entry)
            stored = stamp.stored(op)
            mset += (entry, b"$%d\r\n" % len(stored), stored, b"\r\n")
        commands: tuple[bytes | tuple[Any, ...], ...] = (b"".join(zadd), b"".join(mget), b"".join(mset))
        if self.feed:
            commands += (self._logged_puts(ns, base, ops),)
        replies = await self._link.transaction("put_many", commands)
        replaced = replies[1]
        outcomes = []
        written: set[str] = set()
        for op, old in zip(ops, replaced, strict=True):
            # A record put earlier in the same call holds the live entry that put left.
            existed = op.record in written or (
                old is not None and (old[:1] == b"\n" or _live_head(op.record, old, now))
            )
            outcomes.append(WriteOutcome(True, existed))
            written.add(op.record)
        return outcomes

    def _logged_puts(self, ns: str, base: str, ops: Sequence[StoredWrite]) -> bytes:
        """The script that logs a plain put_many in its MULTI, after the puts, and trims the feed.

        Written out in the Redis protocol at once, as the puts are.
        """
        max_changes, age_ms = self._feed_args(ns)
        head = (LOG_PUTS.source.encode(), b"1", f"{base}feed".encode(), b"%d" % max_changes, b"%d" % age_ms)
        parts = [b"*%d\r\n$4\r\nEVAL\r\n" % (1 + len(head) + 3 * len(ops))]
        parts += (b"$%d\r\n%b\r\n" % (len(arg), arg) for arg in head)
        updated_at: float | None = None
        updated = b""
        for op in ops:
            if op.updated_at != updated_at:
                updated_at = op.updated_at
                updated = repr(float(updated_at)).encode()
            record = op.record.encode()
            etag = op.etag.encode()
            parts.append(
                b"$%d\r\n%b\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n"
                % (len(record), record, len(etag), etag, len(updated), updated)
            )
        return b"".join(parts)

    async def transact(self, ns: str, ops: Sequence[StoredWrite]) -> list[WriteOutcome]:
        if not ops:
            return []
        keys, args = self._write_args(ns, ops, atomic=True)
        reply = await self._link.eval(WRITE, keys, args, idempotent=False)
        if reply[0] == 0:
            return transaction_refused(len(ops), reply[1] - 1, bool(reply[2]))
        return [WriteOutcome(True, bool(code & 1)) for code in reply[1:]]

    async def delete_range(self, ns: str, record: str, start: str | None, end: str | None) -> int:
        base = self._base(ns)
        keys = tuple(f"{base}{kind}{record}" for kind in ("e:", "h:", "z:", "x:"))
        lo = "[" + start if start else "-"
        hi = "+" if end is None else "(" + end
        with_flat = start in (None, "") and end != ""
        deleted = 0
        while True:
            args: tuple[Any, ...] = (
                repr(time.time()),
                lo,
                hi,
                "1" if with_flat else "",
                DELETE_BATCH,
                record,
                self._grace_ms,
                base,
            )
            if self.feed:
                script_keys: tuple[str, ...] = (f"{base}ids", f"{base}exp", *keys, f"{base}feed")
                args += self._feed_args(ns)
            else:
                script_keys = (f"{base}ids", f"{base}exp", *keys)
            live, more = await self._link.eval(DELETE_RANGE, script_keys, args, idempotent=False)
            deleted += int(live)
            if not more:
                return deleted
            with_flat = False

    # -- change feed ------------------------------------------------------------------

    async def read_changes(
        self, ns: str, prefix: str, after: str | None, limit: int
    ) -> tuple[list[Change], str]:
        start, number = ("", 0) if after is None else _entry(after)
        reply = await self._link.eval(
            READ_CHANGES,
            (f"{self._base(ns)}feed",),
            (start, number, limit, max(limit, FEED_EXAMINE_LIMIT), prefix),
            idempotent=True,
        )
        if reply[0] == 1:
            raise cursor_expired(str(after))
        if reply[0] == 2:
            raise cursor_ahead(str(after))
        changes = [_change(reply[i], reply[i + 1], reply[i + 2]) for i in range(3, len(reply), 3)]
        return changes, _cursor(reply[1], reply[2])

    async def wait_for_changes(self, ns: str, seconds: float, after: str | None = None) -> None:
        """Block on the namespace's stream (XREAD BLOCK) until a change after ``after`` or the time is up.

        It waits ``seconds``, at most ``feed_block``, on one pooled connection.
        """
        block = min(seconds, self.feed_block)
        block_ms = max(1, round(block * 1000))
        start = "$" if after is None else _entry(after)[0]
        await self._link.run(
            "watch",
            ("XREAD", "COUNT", 1, "BLOCK", block_ms, "STREAMS", f"{self._base(ns)}feed", start),
            idempotent=True,
            blocks_for=block_ms / 1000,
        )
