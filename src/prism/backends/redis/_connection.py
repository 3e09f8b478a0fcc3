"""The Redis backend's link to its server: URL options, the pool, and error mapping.

``RedisLink.run`` sends one command on a pooled connection under the operation's
deadline. Failures that prove the command never ran (no connection, LOADING, BUSY,
READONLY, TRYAGAIN) are retried with backoff for every command; a connection lost
after sending is retried only for reads, since a write may already have been applied.
What is left becomes a ``prism.errors`` type, never a driver exception.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit

from redis.asyncio.connection import BlockingConnectionPool
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.exceptions import (
    AskError,
    AuthenticationError,
    AuthorizationError,
    BusyLoadingError,
    ClusterDownError,
    MasterDownError,
    MovedError,
    NoPermissionError,
    NoScriptError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from prism.backends._retry import NetworkSettings, call_with_retry, parse_flag, split_options
from prism.backends.redis._lua import GET_MANY, GET_RANGE, SCAN, Script
from prism.backends.urls import mask_url
from prism.errors import BackendTimeout, BackendUnavailable, InvalidArgument, PrismError, StoreClosed

__all__ = ["CLUSTER_SCHEMES", "NoConnection", "RedisLink", "RedisSettings", "pack"]

#: Connections per store unless ``max_connections`` says otherwise.
DEFAULT_MAX_CONNECTIONS = 128
#: Seconds past an item's expiry before Redis may drop the record's keys by itself.
DEFAULT_EXPIRY_GRACE = 1.0
DEFAULT_KEY_PREFIX = "prism"
#: Seconds a write waits for ``wait_replicas`` replicas to confirm it (``WAIT``).
DEFAULT_WAIT_TIMEOUT = 1.0
#: Schemes of a Redis Cluster, addressed by one or more seed nodes.
CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
_SCHEMES = ("redis", "rediss", *CLUSTER_SCHEMES)

_SSL_OPTIONS = {
    "ssl_ca_certs": str,
    "ssl_certfile": str,
    "ssl_keyfile": str,
    "ssl_cert_reqs": str,
    "ssl_check_hostname": bool,
}
_CERT_REQS = ("none", "optional", "required")


@dataclass(frozen=True, slots=True)
class RedisSettings:
    """Everything a ``redis://`` (or ``redis+cluster://``) URL and its keyword options configure.

    ``seeds`` holds the nodes a cluster URL names (empty for one server); ``node_url``
    is the URL of one node with the same credentials and TLS.
    """

    url: str
    db: int
    network: NetworkSettings
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    pool_timeout: float | None = None
    key_prefix: str = DEFAULT_KEY_PREFIX
    expiry_grace: float = DEFAULT_EXPIRY_GRACE
    client_name: str | None = None
    ssl: tuple[tuple[str, Any], ...] = ()
    seeds: tuple[tuple[str, int], ...] = ()
    wait_replicas: int = 0
    wait_timeout: float = DEFAULT_WAIT_TIMEOUT
    node_template: str = ""

    @property
    def cluster(self) -> bool:
        """Whether the URL names a Redis Cluster."""
        return bool(self.seeds)

    def node_url(self, host: str, port: int) -> str:
        """The ``redis://`` URL of one cluster node, with the cluster URL's credentials and TLS."""
        shown = f"[{host}]" if ":" in host else host
        return self.node_template.format(address=f"{shown}:{port}")

    @classmethod
    def parse(cls, url: str, options: dict[str, Any]) -> RedisSettings:
        """Validate ``url`` and the options (keyword or query); unknown options are refused by name."""
        base, opts = split_options(url, options)
        parts = urlsplit(base)
        shown = mask_url(base)
        if parts.scheme not in _SCHEMES:
            raise InvalidArgument(
                f"a Redis URL starts with redis://, rediss://, redis+cluster:// or rediss+cluster://, "
                f"not {shown!r}"
            )
        cluster = parts.scheme in CLUSTER_SCHEMES
        tls = parts.scheme in ("rediss", "rediss+cluster")
        path = parts.path.strip("/")
        values: dict[str, Any] = {}
        if cluster:
            values["seeds"], userinfo = _seeds(parts.netloc, shown)
            if path not in ("", "0"):
                raise InvalidArgument(f"a Redis Cluster has only database 0, not /{path} in {shown!r}")
            scheme = "rediss" if tls else "redis"
            values["node_template"] = f"{scheme}://{userinfo}{{address}}/0"
        else:
            try:
                parts.port  # noqa: B018 - raises on a malformed port
            except ValueError as exc:
                raise InvalidArgument(f"bad port in {shown!r}: {exc}") from exc
            if path and not path.isdigit():
                raise InvalidArgument(f"the path of {shown!r} must be a database number like /0")
        network = NetworkSettings.from_options(opts)
        if "max_connections" in opts:
            values["max_connections"] = _int(opts.pop("max_connections"), "max_connections", 1)
        if "pool_timeout" in opts:
            values["pool_timeout"] = _positive(opts.pop("pool_timeout"), "pool_timeout")
        if "expiry_grace" in opts:
            raw = opts.pop("expiry_grace")
            values["expiry_grace"] = _number(raw, "expiry_grace")
            if values["expiry_grace"] < 0:
                raise InvalidArgument(f"expiry_grace must be a non-negative number of seconds, got {raw!r}")
        if "key_prefix" in opts:
            prefix = opts.pop("key_prefix")
            if type(prefix) is not str or not prefix or any(c in prefix for c in "{}\x00"):
                raise InvalidArgument(
                    f"key_prefix must be a non-empty str without braces or NUL, got {prefix!r}"
                )
            values["key_prefix"] = prefix
        if "client_name" in opts:
            name = opts.pop("client_name")
            if type(name) is not str or not name or any(c.isspace() for c in name):
                raise InvalidArgument(f"client_name must be a non-empty str without spaces, got {name!r}")
            values["client_name"] = name
        if "wait_replicas" in opts:
            values["wait_replicas"] = _int(opts.pop("wait_replicas"), "wait_replicas", 0)
        if "wait_timeout" in opts:
            values["wait_timeout"] = _positive(opts.pop("wait_timeout"), "wait_timeout")
        ssl = _ssl_options(opts, tls)
        if opts:
            known = ["connect_timeout", "operation_timeout", "max_retries", "retry_base", "retry_cap"]
            known += ["max_connections", "pool_timeout", "key_prefix", "expiry_grace", "client_name"]
            known += ["wait_replicas", "wait_timeout", *_SSL_OPTIONS]
            raise InvalidArgument(
                f"unknown option(s) for {parts.scheme}://: {', '.join(sorted(opts))}; "
                f"known: {', '.join(known)}"
            )
        return cls(base, int(path or 0), network, ssl=ssl, **values)


def _seeds(netloc: str, shown: str) -> tuple[tuple[tuple[str, int], ...], str]:
    """The ``host:port`` seed nodes of a cluster URL's authority, and its ``user:password@`` part."""
    userinfo, at, hosts = netloc.rpartition("@")
    seeds: list[tuple[str, int]] = []
    for entry in hosts.split(","):
        if entry.startswith("["):
            host, _, rest = entry[1:].partition("]")
            port_text = rest[1:] if rest.startswith(":") else rest
        else:
            host, _, port_text = entry.partition(":")
        if not host:
            raise InvalidArgument(
                f"a Redis Cluster URL names its nodes as host:port,host:port, not {shown!r}"
            )
        try:
            port = int(port_text) if port_text else 6379
        except ValueError:
            port = -1
        if not 0 < port < 65536:
            raise InvalidArgument(f"bad port {port_text!r} for node {host!r} in {shown!r}")
        seeds.append((host, port))
    return tuple(seeds), userinfo + at


def _number(raw: object, name: str) -> float:
    if isinstance(raw, bool):
        raise InvalidArgument(f"{name} must be a number, got {raw!r}")
    try:
        value = float(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(f"{name} must be a number, got {raw!r}") from exc
    if not math.isfinite(value):
        raise InvalidArgument(f"{name} must be finite, got {raw!r}")
    return value


def _positive(raw: object, name: str) -> float:
    value = _number(raw, name)
    if value <= 0:
        raise InvalidArgument(f"{name} must be a positive number of seconds, got {raw!r}")
    return value


def _int(raw: object, name: str, minimum: int) -> int:
    value = _number(raw, name)
    if value != int(value) or value < minimum:
        raise InvalidArgument(f"{name} must be an integer of at least {minimum}, got {raw!r}")
    return int(value)


def _ssl_options(opts: dict[str, Any], tls: bool) -> tuple[tuple[str, Any], ...]:
    found: list[tuple[str, Any]] = []
    for name, kind in _SSL_OPTIONS.items():
        if name not in opts:
            continue
        raw = opts.pop(name)
        if not tls:
            raise InvalidArgument(f"{name} needs a rediss:// URL")
        if kind is bool:
            found.append((name, parse_flag(name, raw)))
            continue
        if type(raw) is not str or not raw:
            raise InvalidArgument(f"{name} must be a non-empty str, got {raw!r}")
        if name == "ssl_cert_reqs" and raw not in _CERT_REQS:
            raise InvalidArgument(f"ssl_cert_reqs must be one of {', '.join(_CERT_REQS)}, got {raw!r}")
        found.append((name, raw))
    return tuple(found)


#: Arguments longer than this are sent as their own buffer rather than copied into one.
_LARGE = 16 * 1024


def pack(args: Sequence[str | bytes | int]) -> list[bytes]:
    """One command in the Redis protocol, as buffers for ``writelines``.

    Cheaper than redis-py's general encoder for the long argument lists of batch
    scripts; large values are passed through without a copy.
    """
    parts = [b"*%d\r\n" % len(args)]
    chunks: list[bytes] = []
    for arg in args:
        if isinstance(arg, str):
            data = arg.encode()
        elif isinstance(arg, int):
            data = b"%d" % arg
        else:
            data = arg
        if len(data) > _LARGE:
            parts.append(b"$%d\r\n" % len(data))
            chunks += (b"".join(parts), data)
            parts = [b"\r\n"]
        else:
            parts.append(b"$%d\r\n%b\r\n" % (len(data), data))
    chunks.append(b"".join(parts))
    return chunks


_MULTI = b"*1\r\n$5\r\nMULTI\r\n"
_EXEC = b"*1\r\n$4\r\nEXEC\r\n"


class NoConnection(Exception):
    """No connection could be had, so the command was never sent (safe to retry)."""


class Unreplicated(Exception):
    """A write was applied by the primary, but fewer replicas than ``wait_replicas`` confirmed it."""

    def __init__(self, confirmed: int, wanted: int, timeout: float) -> None:
        super().__init__(
            f"the primary applied the write but only {confirmed} of {wanted} replica(s) confirmed it "
            f"within {timeout} s (wait_replicas), so a failover may lose it"
        )


# Replies that mean the server refused to run the command at all (a redirection included:
# MOVED and ASK name the node to send it to instead).
_REFUSED = (BusyLoadingError, ReadOnlyError, TryAgainError, ClusterDownError, MasterDownError, AskError)
_DENIED = (AuthenticationError, AuthorizationError, NoPermissionError)


def _refused(exc: BaseException) -> bool:
    if isinstance(exc, _DENIED):
        return False
    if isinstance(exc, (NoConnection, *_REFUSED)):
        return True
    # A script running past lua-time-limit, or a primary short of replicas
    # (min-replicas-to-write): the server ran nothing.
    return isinstance(exc, ResponseError) and str(exc).startswith(("BUSY", "NOREPLICAS"))


def _transient_read(exc: BaseException) -> bool:
    if isinstance(exc, _DENIED):
        return False
    return _refused(exc) or isinstance(exc, RedisConnectionError | RedisTimeoutError)


#: Commands that never write: ``wait_replicas`` does not make them wait.
_READS = frozenset(
    b"GET MGET HGET HMGET HGETALL HLEN EXISTS STRLEN GETRANGE TTL PTTL TYPE SCARD SMEMBERS ZSCORE ZCARD "
    b"ZRANGE ZRANGEBYLEX ZREVRANGEBYLEX ZRANGEBYSCORE ZREVRANGEBYSCORE ZREVRANGE XLEN XRANGE XREVRANGE "
    b"XREAD XINFO XPENDING PING INFO TIME PUBLISH CLUSTER".split()
)
_READ_SCRIPTS = frozenset(script.sha for script in (GET_MANY, GET_RANGE, SCAN))
#: Commands whose keys do not start at the second argument.
_EVALS = (b"EVALSHA", b"EVAL", b"FCALL")
_NO_KEY = frozenset((b"PING", b"INFO", b"PUBLISH", b"CLUSTER", b"TIME", b"WAIT", b"ASKING"))


def _name(arg: str | bytes | int) -> bytes:
    return (arg.encode() if isinstance(arg, str) else bytes(arg) if isinstance(arg, bytes) else b"").upper()


def _key_of(args: Sequence[Any]) -> str | bytes | None:
    """The key whose slot a command goes to in a cluster; None for a command of no key."""
    command = _name(args[0])
    if command in _EVALS:
        return args[3] if int(args[2]) > 0 else None
    if command in (b"XREADGROUP", b"XREAD"):
        names = [_name(a) if isinstance(a, str | bytes) else b"" for a in args]
        return args[names.index(b"STREAMS") + 1] if b"STREAMS" in names else None
    if command in _NO_KEY or len(args) < 2:
        return None
    key: str | bytes = args[1]
    return key


def _packed_key(data: bytes) -> bytes | None:
    """The key of a command given in the Redis protocol (its second bulk string)."""
    parts = data.split(b"\r\n", 5)
    return parts[4] if len(parts) > 4 else None


def _writes(args: Sequence[Any]) -> bool:
    command = _name(args[0])
    if command in _EVALS:
        return args[1] not in _READ_SCRIPTS
    return command not in _READS


class SlotMap:
    """Which node of a Redis Cluster serves each of the 16384 slots, and one pool per node.

    Built from ``CLUSTER SLOTS`` of the first node that answers (the primaries last
    seen, then the seeds); rebuilt before the next command once a node could not be
    reached or a reply said the slots moved (MOVED, CLUSTERDOWN, TRYAGAIN).
    """

    SLOTS = 16384

    def __init__(
        self, seeds: Sequence[tuple[str, int]], make_pool: Callable[[str, int], BlockingConnectionPool]
    ) -> None:
        self._seeds = list(seeds)
        self._make_pool = make_pool
        self._pools: dict[tuple[str, int], BlockingConnectionPool] = {}
        self._slots: list[tuple[str, int] | None] = [None] * self.SLOTS
        self._primaries: list[tuple[str, int]] = []
        self._stale = True
        self._lock = asyncio.Lock()
        #: How many times the map was rebuilt (health shows it).
        self.refreshes = 0

    @property
    def primaries(self) -> list[tuple[str, int]]:
        """The primaries of the last map, in slot order."""
        return list(self._primaries)

    def pool_at(self, address: tuple[str, int]) -> BlockingConnectionPool:
        pool = self._pools.get(address)
        if pool is None:
            pool = self._pools[address] = self._make_pool(*address)
        return pool

    @property
    def any_pool(self) -> BlockingConnectionPool:
        """The pool of one primary (of a seed before the first map): for commands of no key."""
        return self.pool_at(self._primaries[0] if self._primaries else self._seeds[0])

    async def pool_for(self, key: str | bytes | None) -> BlockingConnectionPool:
        """The pool of the primary serving ``key``'s slot (any primary for None)."""
        if self._stale:
            await self.refresh()
        if key is None:
            return self.any_pool
        slot = key_slot(key.encode() if isinstance(key, str) else key)
        address = self._slots[slot]
        if address is None:
            self._stale = True
            raise NoConnection(f"no node of the cluster serves slot {slot}")
        return self.pool_at(address)

    def moved(self, exc: MovedError) -> None:
        """A node answered MOVED: send that slot to the node named, and rebuild the map."""
        self._slots[exc.slot_id] = (exc.host, int(exc.port))
        self._stale = True

    def lost(self) -> None:
        """A node could not be reached, or refused for a cluster reason: rebuild the map."""
        self._stale = True

    async def refresh(self) -> None:
        async with self._lock:
            if not self._stale:
                return
            failures: list[str] = []
            for address in dict.fromkeys([*self._primaries, *self._seeds]):
                try:
                    reply = await self._ask(address)
                except _DENIED:
                    raise
                except (RedisError, OSError) as exc:
                    failures.append(f"{address[0]}:{address[1]}: {type(exc).__name__}: {exc}")
                    continue
                self._install(reply, address)
                return
            raise NoConnection("no node of the cluster answered CLUSTER SLOTS: " + "; ".join(failures))

    async def _ask(self, address: tuple[str, int]) -> Any:
        pool = self.pool_at(address)
        conn = await pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            await conn.send_packed_command(pack(("CLUSTER", "SLOTS")), check_health=False)
            return await conn.read_response()
        finally:
            await pool.release(conn)

    def _install(self, reply: Any, asked: tuple[str, int]) -> None:
        slots: list[tuple[str, int] | None] = [None] * self.SLOTS
        primaries: dict[tuple[str, int], None] = {}
        for entry in reply or ():
            low, high, primary = int(entry[0]), int(entry[1]), entry[2]
            host = primary[0].decode() if isinstance(primary[0], bytes) else str(primary[0])
            address = (host if host and host != "?" else asked[0], int(primary[1]))
            primaries[address] = None
            slots[low : high + 1] = [address] * (high - low + 1)
        self._slots = slots
        self._primaries = sorted(primaries, key=lambda a: slots.index(a))
        self._stale = False
        self.refreshes += 1

    async def close(self) -> None:
        pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            await pool.aclose()


class RedisLink:
    """The only way commands reach Redis: one pool to one server, or one pool per cluster node."""

    def __init__(self, settings: RedisSettings) -> None:
        self.settings = settings
        self._pool: BlockingConnectionPool | None = None
        self._slots: SlotMap | None = None
        self._wait = (
            pack(("WAIT", settings.wait_replicas, round(settings.wait_timeout * 1000)))
            if settings.wait_replicas
            else []
        )

    @property
    def pool(self) -> BlockingConnectionPool:
        """The pool of the server (of one primary, on a cluster): what pub/sub listens on."""
        slots = self._slots
        if slots is not None:
            return slots.any_pool
        pool = self._pool
        if pool is None:
            raise StoreClosed("the redis backend is not open")
        return pool

    def health(self) -> dict[str, Any]:
        """What a cluster adds to the store's health: its primaries and how often the map was rebuilt."""
        slots = self._slots
        if slots is None:
            return {}
        return {
            "cluster_primaries": [f"{host}:{port}" for host, port in slots.primaries],
            "slot_map_refreshes": slots.refreshes,
        }

    @property
    def slot_map(self) -> SlotMap | None:
        """The cluster's slot map (None for one server)."""
        return self._slots

    def open(self) -> None:
        """Build the pool (connections are made on first use)."""
        s = self.settings
        if s.cluster:
            self._make_pool(s.node_url(*s.seeds[0]))  # refuses bad options before any connection
            self._slots = SlotMap(s.seeds, lambda host, port: self._make_pool(s.node_url(host, port)))
        else:
            self._pool = self._make_pool(s.url)

    def _make_pool(self, url: str) -> BlockingConnectionPool:
        s = self.settings
        kwargs: dict[str, Any] = dict(s.ssl)
        if s.client_name is not None:
            kwargs["client_name"] = s.client_name
        try:
            return BlockingConnectionPool.from_url(
                url,
                max_connections=s.max_connections,
                timeout=s.pool_timeout if s.pool_timeout is not None else s.network.operation_timeout,
                socket_connect_timeout=s.network.connect_timeout,
                # No socket timeout: redis-py would send under asyncio.wait_for, which on
                # Python < 3.12 can swallow a cancellation. Each call's deadline bounds it.
                socket_timeout=None,
                # Retries belong to call_with_retry, which knows what is safe to resend.
                retry=Retry(NoBackoff(), 0),
                health_check_interval=0,
                **kwargs,
            )
        except (ValueError, TypeError, RedisError) as exc:
            raise InvalidArgument(f"cannot use {mask_url(s.url)!r}: {exc}") from exc

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        slots, self._slots = self._slots, None
        if pool is not None:
            await pool.aclose()
        if slots is not None:
            await slots.close()

    async def run(
        self,
        describe: str,
        args: Sequence[Any],
        *,
        idempotent: bool,
        script: Script | None = None,
        blocks_for: float = 0.0,
    ) -> Any:
        """Send one command and return its raw reply, retrying what is safe to retry.

        ``blocks_for`` is how long the command may wait on the server by design (a
        blocking read); the operation deadline is extended by it.
        """
        network = self.settings.network
        if blocks_for > 0:
            network = replace(network, operation_timeout=network.operation_timeout + blocks_for)
        return await self._call(describe, network, lambda: self._once(args, script), idempotent)

    async def transaction(self, describe: str, commands: Sequence[Sequence[Any] | bytes]) -> list[Any]:
        """Run ``commands`` as one ``MULTI``/``EXEC`` transaction in one round trip; their replies.

        A command is its arguments, or bytes already in the Redis protocol.

        They run one after another with no other client's command in between; a
        command refused while queueing (out of memory, a read-only replica) aborts the
        transaction, so none runs. Retried only when nothing can have been applied.
        """
        return await self._call(  # type: ignore[no-any-return]
            describe, self.settings.network, lambda: self._once_atomic(commands), idempotent=False
        )

    async def _call(
        self, describe: str, network: NetworkSettings, once: Callable[[], Awaitable[Any]], idempotent: bool
    ) -> Any:
        try:
            return await call_with_retry(
                network,
                once,
                is_transient=_transient_read if idempotent else _refused,
                describe=f"redis {describe}",
                engine="redis",
            )
        except PrismError:
            raise
        except Unreplicated as exc:
            raise BackendUnavailable(f"redis {describe}: {exc}", cause=exc) from exc
        except _DENIED as exc:
            raise BackendUnavailable(f"redis {describe}: access denied: {exc}", cause=exc) from exc
        except OutOfMemoryError as exc:
            raise BackendUnavailable(
                f"redis {describe}: the server is out of memory: {exc}", cause=exc
            ) from exc
        except RedisTimeoutError as exc:
            raise BackendTimeout(
                f"redis {describe}: no answer after the write was sent, so it may or may not have "
                f"been applied: {type(exc).__name__}: {exc}",
                cause=exc,
            ) from exc
        except RedisConnectionError as exc:
            raise BackendUnavailable(
                f"redis {describe}: the connection failed after the write was sent, so it may or may "
                f"not have been applied: {type(exc).__name__}: {exc}",
                cause=exc,
            ) from exc
        except RedisError as exc:
            raise PrismError(f"redis {describe} failed: {type(exc).__name__}: {exc}") from exc

    async def _acquire(
        self, key: str | bytes | None, at: tuple[str, int] | None = None
    ) -> tuple[BlockingConnectionPool, Any]:
        """A pool and one of its connections: the server's, or the cluster node's for ``key`` (or ``at``)."""
        slots = self._slots
        if slots is None:
            pool = self.pool
        elif at is not None:
            pool = slots.pool_at(at)
        else:
            pool = await slots.pool_for(key)
        try:
            conn = await pool.get_connection()  # type: ignore[no-untyped-call]
        except _DENIED:
            raise
        except (RedisError, OSError) as exc:
            if slots is not None:
                slots.lost()
            raise NoConnection(str(exc)) from exc
        return pool, conn

    def _redirected(self, exc: BaseException) -> None:
        """Note on the slot map what a refusal says about the cluster."""
        slots = self._slots
        if slots is None:
            return
        if isinstance(exc, MovedError):
            slots.moved(exc)
        elif isinstance(exc, RedisConnectionError | ClusterDownError | TryAgainError | MasterDownError):
            slots.lost()

    async def _once(self, args: Sequence[Any], script: Script | None) -> Any:
        key = _key_of(args) if self._slots is not None else None
        try:
            return await self._exchange(key, None, args, script)
        except MovedError as exc:
            self._redirected(exc)
            raise
        except AskError as exc:
            # The slot is moving and this key has gone ahead: ask the target node, once.
            return await self._exchange(key, (exc.host, int(exc.port)), args, script)
        except RedisError as exc:
            self._redirected(exc)
            raise

    async def _exchange(
        self,
        key: str | bytes | None,
        asking: tuple[str, int] | None,
        args: Sequence[Any],
        script: Script | None,
    ) -> Any:
        pool, conn = await self._acquire(key, asking)
        wait = self._wait if self._wait and _writes(args) else []
        try:
            try:
                return await self._send(conn, pack(args), wait, asking is not None)
            except NoScriptError:
                if script is None:
                    raise
                return await self._send(
                    conn, pack(("EVAL", script.source, *args[2:])), wait, asking is not None
                )
        finally:
            await pool.release(conn)

    async def _send(self, conn: Any, packed: list[bytes], wait: list[bytes], asking: bool) -> Any:
        """One command (after ``ASKING``, before ``WAIT`` when asked) in one round trip; its reply."""
        if asking:
            packed = [b"*1\r\n$6\r\nASKING\r\n", *packed]
        await conn.send_packed_command(packed + wait, check_health=False)
        if asking:
            await conn.read_response()
        failed: ResponseError | None = None
        try:
            reply = await conn.read_response()
        except ResponseError as exc:
            failed = exc
        if wait:
            # Read even after an error, so the connection goes back with no reply left over.
            confirmed = int(await conn.read_response())
            if failed is None and confirmed < self.settings.wait_replicas:
                raise Unreplicated(confirmed, self.settings.wait_replicas, self.settings.wait_timeout)
        if failed is not None:
            raise failed
        return reply

    async def _once_atomic(self, commands: Sequence[Sequence[Any] | bytes]) -> list[Any]:
        key: str | bytes | None = None
        if self._slots is not None and commands:
            first = commands[0]
            key = _packed_key(first) if isinstance(first, bytes) else _key_of(first)
        pool, conn = await self._acquire(key)
        try:
            packed = [_MULTI]
            for command in commands:
                if isinstance(command, bytes):
                    packed.append(command)
                else:
                    packed += pack(command)
            packed.append(_EXEC)
            await conn.send_packed_command(packed + self._wait, check_health=False)
            # +OK for MULTI, then +QUEUED per command or the error that refused it; every
            # reply is read, so the connection goes back to the pool with none left over.
            refused: ResponseError | None = None
            for _ in range(len(commands) + 1):
                try:
                    await conn.read_response()
                except ResponseError as exc:
                    refused = refused or exc
            try:
                replies = await conn.read_response()
            except ResponseError as exc:  # EXECABORT: nothing was applied
                replies = None
                refused = refused or exc
            if self._wait:
                confirmed = int(await conn.read_response())
                if refused is None and confirmed < self.settings.wait_replicas:
                    raise Unreplicated(confirmed, self.settings.wait_replicas, self.settings.wait_timeout)
            if refused is not None or replies is None:
                self._redirected(refused or ResponseError("EXECABORT"))
                raise refused or ResponseError("EXECABORT")
            for reply in replies:
                if isinstance(reply, ResponseError):
                    raise reply
            return replies  # type: ignore[no-any-return]
        except RedisConnectionError as exc:
            self._redirected(exc)
            raise
        finally:
            await pool.release(conn)

    async def eval(
        self, script: Script, keys: Sequence[Any], args: Sequence[Any], *, idempotent: bool
    ) -> Any:
        """Run ``script`` by its SHA (loading it when the server does not know it)."""
        return await self.run(
            script.name,
            ("EVALSHA", script.sha, len(keys), *keys, *args),
            idempotent=idempotent,
            script=script,
        )
