"""A lean pool of asyncpg connections: one per store, handed out and taken back without a loop turn.

asyncpg's own ``Pool`` shields every release in a new task and re-arms timers on each
acquire and release, which costs about as much as the query itself on a fast
network. Prism never changes session state, so a connection needs no reset between
callers: this pool keeps idle connections in a LIFO list, hands a released one
straight to the oldest waiter, opens connections lazily up to ``max_size``, drops
any that closed or were left inside a transaction, and closes those idle for longer
than ``idle_timeout`` down to ``min_size``.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["ConnectionPool", "PoolClosed"]


class PoolClosed(Exception):
    """The pool was closed while a caller waited for a connection."""


class ConnectionPool:
    """At most ``max_size`` connections made by ``connect``; callers beyond it wait in order."""

    def __init__(
        self,
        connect: Callable[[], Awaitable[Any]],
        *,
        min_size: int,
        max_size: int,
        idle_timeout: float,
    ) -> None:
        self._connect = connect
        self.min_size = min_size
        self.max_size = max_size
        self.idle_timeout = idle_timeout
        self._idle: list[tuple[Any, float]] = []  # (connection, released at), most recent last
        self._waiters: deque[asyncio.Future[Any]] = deque()
        self._size = 0  # open connections, idle or lent, plus those being opened
        self._closed = False
        self._sweeper: asyncio.Task[None] | None = None

    @property
    def size(self) -> int:
        return self._size

    @property
    def idle(self) -> int:
        return len(self._idle)

    async def start(self) -> None:
        """Open ``min_size`` connections (failing if the first cannot be opened) and start the idle sweep."""
        connections: list[Any] = []
        try:
            while len(connections) < self.min_size:
                connections.append(await self.acquire())
        finally:
            for con in connections:
                self.release(con)
        if self.idle_timeout > 0:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep_loop(), name="prism-pg-pool")

    async def acquire(self) -> Any:
        """An open connection: an idle one, a new one while under ``max_size``, or the next one released."""
        while True:
            if self._closed:
                raise PoolClosed("the connection pool is closed")
            while self._idle:
                con, _ = self._idle.pop()
                if not con.is_closed():
                    return con
                self._size -= 1
            if self._size < self.max_size:
                self._size += 1
                try:
                    return await self._connect()
                except BaseException:
                    self._size -= 1
                    self._hand_over(None)
                    raise
            waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                con = await waiter
            except asyncio.CancelledError:
                # Whatever was handed over meanwhile goes to the next waiter, not astray.
                if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                    handed = waiter.result()
                    if handed is None:
                        self._hand_over(None)
                    else:
                        self.release(handed)
                raise
            if con is not None and not con.is_closed():
                return con
            if con is not None:
                self._size -= 1
            # None (or a dead connection): a slot was freed; go round and open one.

    def release(self, con: Any) -> None:
        """Take a connection back: to the next waiter, to the idle list, or closed when unusable."""
        if self._closed or con.is_closed() or con.is_in_transaction():
            if not con.is_closed():
                con.terminate()
            self._size -= 1
            self._hand_over(None)
            return
        if not self._hand_over(con):
            self._idle.append((con, time.monotonic()))

    def _hand_over(self, con: Any) -> bool:
        """Give ``con`` (None: the right to open one) to the oldest live waiter; False when none waits."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(con)
                return True
        return False

    def sweep(self, now: float | None = None) -> int:
        """Close connections idle for longer than ``idle_timeout``, keeping ``min_size``; how many closed."""
        now = time.monotonic() if now is None else now
        closed = 0
        # The oldest releases sit at the front of the list.
        while self._idle and self._size > self.min_size and now - self._idle[0][1] > self.idle_timeout:
            con, _ = self._idle.pop(0)
            con.terminate()
            self._size -= 1
            closed += 1
        return closed

    async def _sweep_loop(self) -> None:
        interval = min(max(self.idle_timeout / 4, 0.05), 60.0)
        while True:
            await asyncio.sleep(interval)
            self.sweep()

    async def close(self, *, grace: float) -> None:
        """Close idle connections gracefully within ``grace`` s; lent ones close when released."""
        self._closed = True
        sweeper, self._sweeper = self._sweeper, None
        if sweeper is not None:
            sweeper.cancel()
            await asyncio.gather(sweeper, return_exceptions=True)
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(PoolClosed("the connection pool is closed"))
        idle, self._idle = self._idle, []
        self._size -= len(idle)
        if not idle:
            return
        try:
            async with asyncio.timeout(grace):
                await asyncio.gather(*(con.close() for con, _ in idle), return_exceptions=True)
        except TimeoutError:
            for con, _ in idle:
                con.terminate()
