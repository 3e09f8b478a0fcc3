"""Streaming replicas of a PostgreSQL store: which may take an eventually consistent read now.

Each replica named in ``replica_urls`` gets a pool of its own (opened lazily, so a
replica that is down does not stop the store from opening) and is checked every
``replica_check_interval`` seconds: how far its replay is behind what it has
received from the primary, in seconds of commit time. A replica answers reads while
its last check is recent and its lag is at most ``replica_max_lag``; one that fails a
read or a check, lags more, or has not been checked lately is skipped until a later
check finds it well again. Reads then go to the primary, so a replica outage costs
latency, never an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from prism.backends.postgres._pool import ConnectionPool

__all__ = ["LAG_SQL", "Replica", "ReplicaSet"]

#: Seconds of replay lag: 0 when everything received is replayed (or the server is a primary).
LAG_SQL = """
SELECT CASE
    WHEN NOT pg_is_in_recovery() THEN 0.0
    WHEN pg_last_wal_receive_lsn() IS NOT DISTINCT FROM pg_last_wal_replay_lsn() THEN 0.0
    ELSE COALESCE(EXTRACT(EPOCH FROM clock_timestamp() - pg_last_xact_replay_timestamp()), 1e9)::float8
END
"""


@dataclass
class Replica:
    """One replica: its pool and what its last check found."""

    target: str
    pool: ConnectionPool
    #: Seconds behind at the last check; None when it could not be checked (or failed a read).
    lag: float | None = None
    checked_at: float = 0.0
    error: str | None = None
    reads: int = 0
    failures: int = field(default=0)


class ReplicaSet:
    """The replicas of one store, a background check of their lag, and the choice of one for a read."""

    def __init__(
        self,
        targets: Sequence[tuple[str, Callable[[], Awaitable[Any]]]],
        *,
        max_lag: float,
        check_interval: float,
        check_timeout: float,
        pool_max_size: int,
        pool_idle_timeout: float,
    ) -> None:
        self.max_lag = max_lag
        self.check_interval = check_interval
        self.check_timeout = check_timeout
        self.replicas = [
            Replica(
                target,
                ConnectionPool(connect, min_size=0, max_size=pool_max_size, idle_timeout=pool_idle_timeout),
            )
            for target, connect in targets
        ]
        self._turn = itertools.count()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Check every replica once, then keep checking in the background."""
        for replica in self.replicas:
            await replica.pool.start()
        await self.check_all()
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="prism-pg-replicas")

    def pick(self) -> Replica | None:
        """A replica fit for an eventually consistent read now (in turn), or None: use the primary."""
        now = time.monotonic()
        fresh = 3 * self.check_interval + self.check_timeout
        fit = [
            r
            for r in self.replicas
            if r.lag is not None and r.lag <= self.max_lag and now - r.checked_at <= fresh
        ]
        if not fit:
            return None
        return fit[next(self._turn) % len(fit)]

    def failed(self, replica: Replica, exc: BaseException) -> None:
        """A read on ``replica`` failed: skip it until a check finds it well."""
        replica.lag = None
        replica.failures += 1
        replica.error = f"{type(exc).__name__}: {exc}"

    async def check(self, replica: Replica) -> None:
        try:
            async with asyncio.timeout(self.check_timeout):
                con = await replica.pool.acquire()
                try:
                    lag = float(await con.fetchval(LAG_SQL))
                finally:
                    replica.pool.release(con)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            replica.lag, replica.error = None, f"{type(exc).__name__}: {exc}"
        else:
            replica.lag, replica.error = lag, None
        replica.checked_at = time.monotonic()

    async def check_all(self) -> None:
        await asyncio.gather(*(self.check(r) for r in self.replicas))

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.check_interval)
            await self.check_all()

    async def close(self, grace: float) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for replica in self.replicas:
            await replica.pool.close(grace=grace)

    def health(self) -> list[dict[str, Any]]:
        """Each replica's target, last lag, whether it takes reads, and its counters."""
        chosen = {id(r) for r in self.replicas if r.lag is not None and r.lag <= self.max_lag}
        return [
            {
                "target": r.target,
                "lag_s": None if r.lag is None else round(r.lag, 3),
                "reads": r.reads,
                "failures": r.failures,
                "in_use": id(r) in chosen,
                **({"error": r.error} if r.error else {}),
            }
            for r in self.replicas
        ]
