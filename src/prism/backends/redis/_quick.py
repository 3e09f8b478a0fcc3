"""Short reads under a caller's deadline, for a cache tier's hit path.

``QuickReads.read`` sends one read-only command under one ``asyncio.timeout`` on a
connection it keeps between calls, so a hit pays neither the pool's checkout and
release (a lock, a condition, a timeout and its observability hooks, each way) nor
the retry wrapper's own deadline. Anything unusual takes the ordinary path: with
no kept connection, or when the kept one fails (the server restarted, the reply is
an error), the connection goes back to the pool (whose checkout tests it before
reuse) and the read is sent again through ``RedisLink.run``, retries and error
mapping included, within what is left of the deadline. A read is safe to resend.

At most ``keep`` connections are kept (``max_connections // 64``: 2 of the default
128, none below 64), so the pool always has the rest for every other command.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from prism.backends.redis._connection import RedisLink, pack

__all__ = ["QuickReads"]

#: One kept connection per this many of ``max_connections``.
KEEP_ONE_PER = 64


class QuickReads:
    """Read-only commands of one link, each bounded by the caller's timeout."""

    def __init__(self, link: RedisLink) -> None:
        self.link = link
        self.keep = link.settings.max_connections // KEEP_ONE_PER
        self._idle: list[Any] = []

    async def read(self, describe: str, args: Sequence[Any], within: float) -> Any:
        """The raw reply of read-only command ``args``; TimeoutError past ``within`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        idle = self._idle
        if idle:
            conn = idle.pop()
            try:
                async with asyncio.timeout_at(deadline):
                    await conn.send_packed_command(pack(args), check_health=False)
                    reply = await conn.read_response()
            except Exception:
                # Whatever it was, the ordinary path sends it again and says what failed.
                await self._give_back(conn)
            except BaseException:
                await self._give_back(conn)
                raise
            else:
                idle.append(conn)
                return reply
        async with asyncio.timeout_at(deadline):
            if len(idle) >= self.keep:
                return await self.link.run(describe, args, idempotent=True)
            return await self._read_and_keep(describe, args)

    async def _read_and_keep(self, describe: str, args: Sequence[Any]) -> Any:
        """Read on a connection checked out of the pool, then keep it (the ordinary path on failure)."""
        try:
            pool = self.link.pool
            conn = await pool.get_connection()  # type: ignore[no-untyped-call]
        except Exception:
            return await self.link.run(describe, args, idempotent=True)
        try:
            await conn.send_packed_command(pack(args), check_health=False)
            reply = await conn.read_response()
        except Exception:
            await self._give_back(conn)
            return await self.link.run(describe, args, idempotent=True)
        except BaseException:
            await self._give_back(conn)
            raise
        if len(self._idle) < self.keep and self.link._pool is pool:
            self._idle.append(conn)
        else:
            await pool.release(conn)
        return reply

    async def _give_back(self, conn: Any) -> None:
        pool = self.link._pool
        if pool is not None:
            try:
                await pool.release(conn)
            except (KeyError, ValueError):
                pass  # a pool rebuilt since (closed and opened again) does not know it

    async def close(self) -> None:
        """Return every kept connection (before the pool closes)."""
        idle, self._idle = self._idle, []
        for conn in idle:
            await self._give_back(conn)
