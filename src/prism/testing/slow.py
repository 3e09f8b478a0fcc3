"""A store that answers slowly, on purpose: the stand-in for a database having a bad moment.

:class:`DelayedBackend` is the memory backend with delays injected before its reads,
for tests of what a slow store does to deadlines, hedged reads and early pages::

    backend = DelayedBackend(read_delays=[1.0])  # the first read takes a second, later ones none
    store = prism.Store(backend)

``read_delays`` are used up one per read of keys (``get``, ``get_many``), in order;
once they are used up, every read waits ``read_delay``, and a share ``tail_share`` of
them (drawn at random, ``seed`` for a repeatable draw) waits ``tail_delay`` instead: a
store with a latency tail. Listings (``scan``,
``get_range``) wait ``scan_delay`` each. ``reads`` and ``scans`` count the calls, so a
test can see how many requests reached the store. It never runs inline (it waits), so
the gateway times and measures it like any other network store. Through a config it
is ``{url: "memory://NAME?tail_share=0.02&tail_delay=0.1", backend:
"prism.testing.slow:DelayedBackend"}``.
"""

from __future__ import annotations

import asyncio
import random
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

from prism.backends._retry import split_options
from prism.backends.memory import MemoryBackend
from prism.errors import InvalidArgument
from prism.model import Item

__all__ = ["DelayedBackend"]


class DelayedBackend(MemoryBackend):
    """The memory backend, waiting before each read as told (seconds)."""

    name = "delayed"
    runs_inline: ClassVar[bool] = False

    def __init__(
        self,
        shared_name: str = "",
        *,
        read_delay: float = 0.0,
        read_delays: Iterable[float] = (),
        scan_delay: float = 0.0,
        tail_share: float = 0.0,
        tail_delay: float = 0.0,
        seed: int | None = None,
    ) -> None:
        super().__init__(shared_name)
        if not 0 <= tail_share <= 1:
            raise InvalidArgument(f"tail_share must be from 0 to 1, got {tail_share!r}")
        if tail_delay < 0:
            raise InvalidArgument(f"tail_delay must not be negative, got {tail_delay!r}")
        self.tail_share = tail_share
        self.tail_delay = tail_delay
        self._random = random.Random(seed)
        for name, value in (
            ("read_delay", read_delay),
            ("scan_delay", scan_delay),
            *(("read_delays", d) for d in read_delays),
        ):
            if value < 0:
                raise InvalidArgument(f"{name} must not be negative, got {value!r}")
        self.read_delay = read_delay
        #: The delays of the next reads, one used up per read.
        self.read_delays: deque[float] = deque(read_delays)
        self.scan_delay = scan_delay
        #: Reads of keys and listings that reached the store.
        self.reads = 0
        self.scans = 0

    @classmethod
    def from_url(cls, url: str, **options: Any) -> DelayedBackend:
        base, opts = split_options(url, options)
        kwargs: dict[str, Any] = {}
        for name in ("read_delay", "scan_delay", "tail_share", "tail_delay"):
            if name in opts:
                try:
                    kwargs[name] = float(opts.pop(name))
                except (TypeError, ValueError):
                    raise InvalidArgument(f"{name} must be a number of seconds") from None
        if opts:
            raise InvalidArgument(
                f"a delayed store takes read_delay, scan_delay, tail_share and tail_delay, got {sorted(opts)}"
            )
        return cls(base.split("://", 1)[1].strip("/"), **kwargs)

    async def _read_wait(self) -> None:
        self.reads += 1
        if self.read_delays:
            delay = self.read_delays.popleft()
        elif self.tail_share and self._random.random() < self.tail_share:
            delay = self.tail_delay
        else:
            delay = self.read_delay
        if delay:
            await asyncio.sleep(delay)

    async def _scan_wait(self) -> None:
        self.scans += 1
        if self.scan_delay:
            await asyncio.sleep(self.scan_delay)

    async def get(self, ns: str, record: str, key: str, *, consistent: bool = False) -> Item | None:
        await self._read_wait()
        return await super().get(ns, record, key, consistent=consistent)

    async def get_many(
        self, ns: str, addresses: Sequence[tuple[str, str]], *, consistent: bool = False
    ) -> list[Item | None]:
        await self._read_wait()
        return await super().get_many(ns, addresses, consistent=consistent)

    async def scan(self, ns: str, prefix: str, after: str | None, limit: int) -> list[str]:
        await self._scan_wait()
        return await super().scan(ns, prefix, after, limit)

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
        await self._scan_wait()
        return await super().get_range(ns, record, start, end, after, limit, consistent=consistent)
