"""A store that answers slowly, on purpose: the stand-in for a database having a bad moment.

:class:`DelayedBackend` is the memory backend with delays injected before its reads,
for tests of what a slow store does to deadlines, hedged reads and early pages::

    backend = DelayedBackend(read_delays=[1.0])  # the first read takes a second, later ones none
    store = prism.Store(backend)

``read_delays`` are used up one per read of keys (``get``, ``get_many``), in order;
once they are used up, every read waits ``read_delay``. Listings (``scan``,
``get_range``) wait ``scan_delay`` each. ``reads`` and ``scans`` count the calls, so a
test can see how many requests reached the store. It never runs inline (it waits), so
the gateway times and measures it like any other network store. Through a config it
is ``{url: "memory://NAME?read_delay=0.2&scan_delay=0.05", backend:
"prism.testing.slow:DelayedBackend"}``.
"""

from __future__ import annotations

import asyncio
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
    ) -> None:
        super().__init__(shared_name)
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
        for name in ("read_delay", "scan_delay"):
            if name in opts:
                try:
                    kwargs[name] = float(opts.pop(name))
                except (TypeError, ValueError):
                    raise InvalidArgument(f"{name} must be a number of seconds") from None
        if opts:
            raise InvalidArgument(f"a delayed store takes read_delay and scan_delay, got {sorted(opts)}")
        return cls(base.split("://", 1)[1].strip("/"), **kwargs)

    async def _read_wait(self) -> None:
        self.reads += 1
        delay = self.read_delays.popleft() if self.read_delays else self.read_delay
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
