"""A bounded write load that logs every acknowledged write, for failover tests and benchmarks.

``WriteLoad`` runs ``writers`` tasks that each put fresh keys into one namespace until
stopped (or ``max_writes`` each), recording every write the store acknowledged and
every error with when it happened. ``lost`` reads the log back: the acknowledged
writes that are missing or changed. Only BackendUnavailable (and its Timeout) is an
expected failure during a switch; anything else stops the load and is raised.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field
from typing import Any

from prism.errors import BackendUnavailable

__all__ = ["WriteLoad"]

#: Seconds a writer pauses after a failed write before the next one.
ERROR_PAUSE = 0.01
#: Keys per get_many when the log is read back.
READ_BATCH = 200


@dataclass
class WriteLoad:
    """Writers putting ``w<writer>-<n>`` keys into ``ns``; the log of what was acknowledged."""

    ns: Any
    writers: int = 8
    max_writes: int = 5000
    acked: dict[str, bytes] = field(default_factory=dict)
    acked_at: list[float] = field(default_factory=list)
    errors: list[tuple[float, BackendUnavailable]] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._write(i)) for i in range(self.writers)]

    async def stop(self) -> None:
        """Stop the writers and wait for them (re-raising an unexpected error of one)."""
        self._stop.set()
        await asyncio.gather(*self._tasks)

    async def __aenter__(self) -> WriteLoad:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _write(self, writer: int) -> None:
        for n in range(self.max_writes):
            if self._stop.is_set():
                return
            key, value = f"w{writer}-{n}", f"{writer}:{n}".encode()
            try:
                await self.ns.put(key, value)
            except BackendUnavailable as exc:
                self.errors.append((time.monotonic(), exc))
                await asyncio.sleep(ERROR_PAUSE)
                continue
            self.acked[key] = value
            self.acked_at.append(time.monotonic())

    def acked_after(self, moment: float) -> int:
        """How many writes were acknowledged after ``moment`` (``time.monotonic()``)."""
        return sum(1 for t in self.acked_at if t > moment)

    def longest_pause(self) -> float:
        """The longest time without an acknowledged write, in seconds (how long the switch stalled writes)."""
        times = sorted(self.acked_at)
        return max((b - a for a, b in itertools.pairwise(times)), default=0.0)

    async def lost(self, ns: Any = None) -> list[str]:
        """The acknowledged keys that read back missing or changed (through ``ns``, or the load's)."""
        reader = self.ns if ns is None else ns
        keys = sorted(self.acked)
        missing: list[str] = []
        for start in range(0, len(keys), READ_BATCH):
            chunk = keys[start : start + READ_BATCH]
            for key, item in zip(chunk, await reader.get_many(chunk), strict=True):
                if item is None or item.value != self.acked[key]:
                    missing.append(key)
        return missing
