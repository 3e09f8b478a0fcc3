"""The Redis backend's link to its server: URL options, the pool, and error mapping.

``RedisLink.run`` sends one command on a pooled connection under the operation's
deadline. Failures that prove the command never ran (no connection, LOADING, BUSY,
READONLY, TRYAGAIN) are retried with backoff for every command; a connection lost
after sending is retried only for reads, since a write may already have been applied.
What is left becomes a ``prism.errors`` type, never a driver exception.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit

from redis.asyncio.connection import BlockingConnectionPool
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import (
    AuthenticationError,
    AuthorizationError,
    BusyLoadingError,
    ClusterDownError,
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

from prism.backends._retry import NetworkSettings, call_with_retry, split_options
from prism.backends.redis._lua import Script
from prism.backends.urls import mask_url
from prism.errors import BackendTimeout, BackendUnavailable, InvalidArgument, PrismError, StoreClosed

__all__ = ["NoConnection", "RedisLink", "RedisSettings", "pack"]

#: Connections per store unless ``max_connections`` says otherwise.
DEFAULT_MAX_CONNECTIONS = 128
#: Seconds past an item's expiry before Redis may drop the record's keys by itself.
DEFAULT_EXPIRY_GRACE = 1.0
DEFAULT_KEY_PREFIX = "prism"

_SSL_OPTIONS = {
    "ssl_ca_certs": str,
    "ssl_certfile": str,
    "ssl_keyfile": str,
    "ssl_cert_reqs": str,
    "ssl_check_hostname": bool,
}
_CERT_REQS = ("none", "optional", "required")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


@dataclass(frozen=True, slots=True)
class RedisSettings:
    """Everything a ``redis://`` URL and its keyword options configure."""

    url: str
    db: int
    network: NetworkSettings
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    pool_timeout: float | None = None
    key_prefix: str = DEFAULT_KEY_PREFIX
    expiry_grace: float = DEFAULT_EXPIRY_GRACE
    client_name: str | None = None
    ssl: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def parse(cls, url: str, options: dict[str, Any]) -> RedisSettings:
        """Validate ``url`` and the options (keyword or query); unknown options are refused by name."""
        base, opts = split_options(url, options)
        parts = urlsplit(base)
        shown = mask_url(base)
        if parts.scheme not in ("redis", "rediss"):
            raise InvalidArgument(f"a Redis URL starts with redis:// or rediss://, not {shown!r}")
        try:
            parts.port  # noqa: B018 - raises on a malformed port
        except ValueError as exc:
            raise InvalidArgument(f"bad port in {shown!r}: {exc}") from exc
        path = parts.path.strip("/")
        if path and not path.isdigit():
            raise InvalidArgument(f"the path of {shown!r} must be a database number like /0")
        network = NetworkSettings.from_options(opts)
        values: dict[str, Any] = {}
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
        ssl = _ssl_options(opts, parts.scheme == "rediss")
        if opts:
            known = ["connect_timeout", "operation_timeout", "max_retries", "retry_base", "retry_cap"]
            known += ["max_connections", "pool_timeout", "key_prefix", "expiry_grace", "client_name"]
            known += list(_SSL_OPTIONS)
            raise InvalidArgument(
                f"unknown option(s) for redis://: {', '.join(sorted(opts))}; known: {', '.join(known)}"
            )
        return cls(base, int(path or 0), network, ssl=ssl, **values)


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
            text = str(raw).lower()
            if isinstance(raw, bool) or text in _TRUE + _FALSE:
                found.append((name, raw if isinstance(raw, bool) else text in _TRUE))
                continue
            raise InvalidArgument(f"{name} must be true or false, got {raw!r}")
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


# Replies that mean the server refused to run the command at all.
_REFUSED = (BusyLoadingError, ReadOnlyError, TryAgainError, ClusterDownError)
_DENIED = (AuthenticationError, AuthorizationError, NoPermissionError)


def _refused(exc: BaseException) -> bool:
    if isinstance(exc, _DENIED):
        return False
    if isinstance(exc, (NoConnection, *_REFUSED)):
        return True
    # A script running past lua-time-limit: the server queued nothing.
    return isinstance(exc, ResponseError) and str(exc).startswith("BUSY")


def _transient_read(exc: BaseException) -> bool:
    if isinstance(exc, _DENIED):
        return False
    return _refused(exc) or isinstance(exc, RedisConnectionError | RedisTimeoutError)


class RedisLink:
    """One pool of connections to one server, and the only way commands reach it."""

    def __init__(self, settings: RedisSettings) -> None:
        self.settings = settings
        self._pool: BlockingConnectionPool | None = None

    @property
    def pool(self) -> BlockingConnectionPool:
        pool = self._pool
        if pool is None:
            raise StoreClosed("the redis backend is not open")
        return pool

    def open(self) -> None:
        """Build the pool (connections are made on first use)."""
        s = self.settings
        kwargs: dict[str, Any] = dict(s.ssl)
        if s.client_name is not None:
            kwargs["client_name"] = s.client_name
        try:
            self._pool = BlockingConnectionPool.from_url(
                s.url,
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
        if pool is not None:
            await pool.aclose()

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

    async def _once(self, args: Sequence[Any], script: Script | None) -> Any:
        pool = self.pool
        try:
            conn = await pool.get_connection()  # type: ignore[no-untyped-call]
        except _DENIED:
            raise
        except (RedisError, OSError) as exc:
            raise NoConnection(str(exc)) from exc
        try:
            await conn.send_packed_command(pack(args), check_health=False)
            try:
                return await conn.read_response()
            except NoScriptError:
                if script is None:
                    raise
                await conn.send_packed_command(pack(("EVAL", script.source, *args[2:])), check_health=False)
                return await conn.read_response()
        finally:
            await pool.release(conn)

    async def _once_atomic(self, commands: Sequence[Sequence[Any] | bytes]) -> list[Any]:
        pool = self.pool
        try:
            conn = await pool.get_connection()  # type: ignore[no-untyped-call]
        except _DENIED:
            raise
        except (RedisError, OSError) as exc:
            raise NoConnection(str(exc)) from exc
        try:
            packed = [_MULTI]
            for command in commands:
                if isinstance(command, bytes):
                    packed.append(command)
                else:
                    packed += pack(command)
            packed.append(_EXEC)
            await conn.send_packed_command(packed, check_health=False)
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
                raise refused or exc from None
            for reply in replies:
                if isinstance(reply, ResponseError):
                    raise reply
            return replies  # type: ignore[no-any-return]
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
