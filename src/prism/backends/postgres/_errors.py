"""How asyncpg's exceptions become Prism's: which are retried, and what the rest are mapped to."""

from __future__ import annotations

import asyncpg

from prism.backends.postgres._pool import PoolClosed
from prism.errors import BackendUnavailable, InvalidArgument, PrismError, StoreClosed

__all__ = ["AmbiguousWrite", "ConnectTimedOut", "is_transient", "lost_connection", "map_error"]

# SQLSTATEs after which the statement surely did not commit and may be run again:
# serialization failure, deadlock, too many connections, admin/crash shutdown, starting up.
_RETRY_SQLSTATES = frozenset({"40001", "40P01", "53300", "57P01", "57P02", "57P03"})


class AmbiguousWrite(Exception):
    """The connection dropped during a conditional write: it may or may not have been applied."""


class ConnectTimedOut(Exception):
    """Opening a connection took longer than connect_timeout."""


def is_transient(exc: BaseException) -> bool:
    """Whether running the operation again may succeed and cannot apply it twice (see lost_connection)."""
    if isinstance(exc, OSError | ConnectTimedOut | asyncpg.PostgresConnectionError):
        return True
    if isinstance(exc, asyncpg.TargetServerAttributeNotMatched):
        # No host is the primary yet (target_session_attrs=read-write during a failover).
        return True
    return isinstance(exc, asyncpg.PostgresError) and exc.sqlstate in _RETRY_SQLSTATES


def lost_connection(exc: BaseException) -> bool:
    """Whether the connection failed, so that a statement in flight may or may not have committed."""
    return isinstance(exc, OSError | asyncpg.PostgresConnectionError)


def map_error(exc: BaseException, describe: str, table: str) -> PrismError:
    """The Prism error for a driver exception that outlived the retries."""
    if isinstance(exc, PoolClosed):
        return StoreClosed(f"{describe}: the store is closed")
    if isinstance(exc, AmbiguousWrite):
        message = (
            f"{describe}: the connection dropped during a conditional write, which may have been applied"
        )
    elif isinstance(exc, asyncpg.InterfaceError) and isinstance(exc, ValueError):
        return InvalidArgument(f"{describe}: {exc}")
    elif isinstance(exc, asyncpg.UndefinedTableError):
        message = f"{describe}: table {table} does not exist (create it with prism.backends.postgres.ddl())"
    elif isinstance(exc, asyncpg.PostgresError):
        message = f"{describe}: {type(exc).__name__} ({exc.sqlstate}): {exc}"
    else:
        message = f"{describe}: {type(exc).__name__}: {exc}"
    return BackendUnavailable(message, cause=exc)
