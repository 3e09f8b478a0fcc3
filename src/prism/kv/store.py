"""The Store: one opened backend, its namespaces and collections."""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Generator
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from prism.backends import Backend, open_backend
from prism.errors import InvalidArgument, PrismError, StoreClosed
from prism.kv.collection import Collection
from prism.kv.instrument import Instrumentation
from prism.kv.namespace import Namespace
from prism.kv.validation import check_id, ttl_seconds
from prism.model import DEFAULT_MAX_VALUE_BYTES, Capabilities

if TYPE_CHECKING:
    from prism.kv.cache import Cache, CachedBackend, NearCache
    from prism.timeseries import TimeSeries, TimeSeriesHub

__all__ = ["Store", "connect"]

T = TypeVar("T")


class StoreState(enum.Enum):
    UNOPENED = "unopened"
    OPEN = "open"
    CLOSED = "closed"


class Store:
    """A connection to one backend. Open it with ``async with`` or ``await``; closing twice is safe."""

    def __init__(self, backend: Backend, *, max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES) -> None:
        self.backend = backend
        self.instrumentation = Instrumentation(backend.name)
        self.max_value_bytes = min(max_value_bytes, backend.capabilities.max_value_bytes)
        self._state = StoreState.UNOPENED
        #: True between open() and close(); a plain attribute, read on every call.
        self.is_open = False
        self._namespaces: dict[tuple[Any, ...], Namespace] = {}
        self._tiers: list[CachedBackend] = []
        self._open_lock: asyncio.Lock | None = None
        self._timeseries: TimeSeriesHub | None = None

    def __repr__(self) -> str:
        return f"<Store {self.backend.name} {self._state.value}>"

    @property
    def state(self) -> StoreState:
        return self._state

    def state_message(self) -> str:
        if self._state is StoreState.CLOSED:
            return "the store is closed"
        return "the store is not open: use `async with prism.connect(url) as store` or `await store.open()`"

    @property
    def capabilities(self) -> Capabilities:
        """What this store's backend honours."""
        return self.backend.capabilities

    async def open(self) -> Store:
        """Connect to the backend. Opening an open store does nothing; a closed one cannot reopen."""
        if self._state is StoreState.CLOSED:
            raise StoreClosed("the store is closed and cannot be reopened; connect again")
        if self._state is StoreState.OPEN:
            return self
        if self._open_lock is None:
            self._open_lock = asyncio.Lock()
        async with self._open_lock:
            if self._state is StoreState.UNOPENED:
                await self.backend.open()
                self._state = StoreState.OPEN
                self.is_open = True
        return self

    async def close(self) -> None:
        """Release the backend; safe to call more than once."""
        if self._state is StoreState.CLOSED:
            return
        was_open = self._state is StoreState.OPEN
        if was_open and self._timeseries is not None:
            await self._timeseries.close()  # buffered events go out while the backend is open
        self._state = StoreState.CLOSED
        self.is_open = False
        for tier in self._tiers:
            await tier.close()
        if was_open:
            await self.backend.close()

    def __await__(self) -> Generator[Any, None, Store]:
        return self.open().__await__()

    async def __aenter__(self) -> Store:
        return await self.open()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def namespace(
        self,
        name: str,
        *,
        max_value_bytes: int | None = None,
        default_ttl: float | None = None,
        feed_retention: float | None = None,
        feed_max_changes: int | None = None,
        cache: Cache | None = None,
        near_cache: NearCache | None = None,
    ) -> Namespace:
        """A handle on namespace ``name`` (created on first write; cheap to call repeatedly).

        ``feed_retention`` (seconds) and ``feed_max_changes`` give the namespace's change
        feed a retention of its own on this store, kept until set again (a handle made
        without them keeps it); the other one of the two stays the store's. They need a
        store that keeps a feed (``feed=true``).

        With ``cache`` (a ``prism.Cache``) reads are served from a shared cache in another
        store, and with ``near_cache`` (a ``prism.NearCache``) from this process's memory
        first (see docs/caching.md). Every writer of a cached namespace must write through
        a handle with the same cache: writes elsewhere do not invalidate it.
        """
        check_id(name, "namespace")
        if feed_retention is not None or feed_max_changes is not None:
            self.backend.set_feed_retention(name, feed_retention, feed_max_changes)
        limit = self.max_value_bytes if max_value_bytes is None else max_value_bytes
        if type(limit) is not int or limit < 0:
            raise InvalidArgument("max_value_bytes must be a non-negative int")
        if limit > self.backend.capabilities.max_value_bytes:
            raise InvalidArgument(
                f"max_value_bytes {limit} is over the {self.backend.name} backend's limit "
                f"of {self.backend.capabilities.max_value_bytes}"
            )
        ttl = ttl_seconds(default_ttl)
        key = (name, limit, ttl, cache, near_cache)
        ns = self._namespaces.get(key)
        if ns is None:
            tier = None
            if cache is not None or near_cache is not None:
                from prism.kv.cache import Cache, CachedBackend, NearCache

                if cache is not None and not isinstance(cache, Cache):
                    raise InvalidArgument(f"cache must be a prism.Cache, got {type(cache).__name__}")
                if near_cache is not None and not isinstance(near_cache, NearCache):
                    raise InvalidArgument(
                        f"near_cache must be a prism.NearCache, got {type(near_cache).__name__}"
                    )
                if cache is not None and cache.store is self:
                    raise InvalidArgument("cache.store must be another store than the namespace's own")
                tier = CachedBackend(self.backend, name, cache, near_cache)
                self._tiers.append(tier)
            ns = self._namespaces[key] = Namespace(
                self, name, max_value_bytes=limit, default_ttl=ttl, backend=tier
            )
        return ns

    def collection(self, name: str, type_: type[T], **options: Any) -> Collection[T]:
        """A typed view of namespace ``name`` whose values encode and decode as ``type_``."""
        return Collection(self.namespace(name, **options), type_)

    def timeseries(
        self,
        name: str,
        *,
        slice_seconds: int = 3600,
        retention_seconds: int | None = None,
        accept_window_seconds: float | None = None,
        future_skew_seconds: float = 60.0,
    ) -> TimeSeries:
        """A handle on TimeSeries namespace ``name`` (see ``prism.timeseries.TimeSeriesSettings``).

        Raises Unsupported when the backend has no TimeSeries store (``capabilities.timeseries``).
        """
        if self._timeseries is None:
            from prism.timeseries import TimeSeriesHub

            self._timeseries = TimeSeriesHub(self)
        return self._timeseries.handle(
            name,
            slice_seconds=slice_seconds,
            retention_seconds=retention_seconds,
            accept_window_seconds=accept_window_seconds,
            future_skew_seconds=future_skew_seconds,
        )

    async def health(self) -> dict[str, Any]:
        """``{"status": "UP"|"DOWN", "details": {...}}``; never raises for a backend failure."""
        details: dict[str, Any] = {"backend": self.backend.name}
        if not self.is_open:
            return {"status": "DOWN", "details": {**details, "error": self.state_message()}}
        try:
            details.update(await self.backend.health())
        except PrismError as exc:
            return {"status": "DOWN", "details": {**details, "error": str(exc)}}
        return {"status": "UP", "details": details}


def connect(
    url: str, *, backend: str | None = None, max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES, **options: Any
) -> Store:
    """A Store for ``url`` (``sqlite:///path``, ``memory://``, ``redis://``, ...), not yet open.

    Use it as ``async with prism.connect(url) as store`` or ``store = await prism.connect(url)``.
    Options the URL cannot hold (timeouts, pool sizes) are keyword arguments passed to the backend.
    """
    return Store(open_backend(url, backend, **options), max_value_bytes=max_value_bytes)
