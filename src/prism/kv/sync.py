"""The blocking API: every class here is the blocking twin of an async one.

There is one implementation of every operation (the coroutines in ``namespace``,
``collection`` and ``store``); each blocking method hands the coroutine of its
async twin to a :class:`~prism.kv.portal.Portal`, which runs it to completion.
Each method keeps its twin's name, parameters, defaults and docstring (copied
from the async method), and tests/test_sync_parity.py fails on any difference.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from prism.backends import Backend
from prism.backends.base import NOT_NOW
from prism.errors import Unsupported
from prism.kv.codecs import Codec
from prism.kv.collection import Collection
from prism.kv.feed import DEFAULT_POLL_INTERVAL, DEFAULT_WATCH_BATCH, ChangeFeed
from prism.kv.instrument import Instrumentation
from prism.kv.namespace import Consistency, Namespace
from prism.kv.portal import Portal
from prism.kv.store import Store, StoreState, connect
from prism.model import DEFAULT_MAX_VALUE_BYTES, Capabilities, Change, Delete, Item, Page, Put, WriteResult

if TYPE_CHECKING:
    from prism.kv.cache import Cache, NearCache
    from prism.timeseries.sync import SyncTimeSeries

__all__ = ["SyncChangeFeed", "SyncCollection", "SyncNamespace", "SyncStore", "connect_sync"]

T = TypeVar("T")
C = TypeVar("C", bound=type)


def _twin_of(async_cls: type) -> Callable[[C], C]:
    """Give each method and property of the decorated class its async twin's docstring."""

    def copy_docs(cls: C) -> C:
        for name, attr in list(vars(cls).items()):
            source = getattr(async_cls, name, None)
            if name.startswith("_") or source is None or getattr(attr, "__doc__", None):
                continue
            doc = getattr(source, "__doc__", None)
            if isinstance(attr, property):
                setattr(cls, name, property(attr.fget, attr.fset, attr.fdel, doc))
            elif callable(attr):
                attr.__doc__ = doc
        return cls

    return copy_docs


@_twin_of(Namespace)
class SyncNamespace:
    """The blocking twin of :class:`Namespace`; every method runs the async one."""

    def __init__(self, ns: Namespace, portal: Portal) -> None:
        self._ns = ns
        self._portal = portal
        #: Reads may be answered in the calling thread (the portal steps coroutines there too).
        self._inline = portal.inline

    def __repr__(self) -> str:
        return f"<SyncNamespace {self.name!r}>"

    @property
    def name(self) -> str:
        return self._ns.name

    @property
    def max_value_bytes(self) -> int:
        """Largest value a put in this namespace accepts."""
        return self._ns.max_value_bytes

    @property
    def default_ttl(self) -> float | None:
        """Seconds a put without ``ttl`` lives (None: forever)."""
        return self._ns.default_ttl

    def get(self, key: str, *, consistency: Consistency = "eventual") -> Item | None:
        if self._inline:
            # The async get's first step, run here: on an engine that answers in this thread
            # the read needs no coroutine and no event loop.
            item = self._ns._get_now(key, consistency)
            if item is not NOT_NOW:
                return item
        return self._portal.call(self._ns.get(key, consistency=consistency))

    def exists(self, key: str, *, consistency: Consistency = "eventual") -> bool:
        if self._inline:
            item = self._ns._get_now(key, consistency)
            if item is not NOT_NOW:
                return item is not None
        return self._portal.call(self._ns.exists(key, consistency=consistency))

    def put(
        self,
        key: str,
        value: bytes,
        *,
        ttl: float | timedelta | None = None,
        content_type: str | None = None,
        if_match: str | None = None,
        if_absent: bool = False,
    ) -> str:
        return self._portal.call(
            self._ns.put(
                key, value, ttl=ttl, content_type=content_type, if_match=if_match, if_absent=if_absent
            )
        )

    def put_result(self, put: Put, record: str | None = None) -> WriteResult:
        return self._portal.call(self._ns.put_result(put, record))

    def delete(self, key: str, *, if_match: str | None = None) -> bool:
        return self._portal.call(self._ns.delete(key, if_match=if_match))

    def delete_result(self, delete: Delete) -> WriteResult:
        return self._portal.call(self._ns.delete_result(delete))

    def get_many(self, keys: Sequence[str], *, consistency: Consistency = "eventual") -> list[Item | None]:
        return self._portal.call(self._ns.get_many(keys, consistency=consistency))

    def put_many(self, puts: Iterable[Put], *, existed: bool = True) -> list[WriteResult]:
        return self._portal.call(self._ns.put_many(puts, existed=existed))

    def delete_many(self, deletes: Iterable[str | Delete]) -> list[WriteResult]:
        return self._portal.call(self._ns.delete_many(deletes))

    def transact(self, ops: Iterable[Put | Delete]) -> list[WriteResult]:
        return self._portal.call(self._ns.transact(ops))

    def scan(self, prefix: str = "", *, limit: int = 100, page_token: str | None = None) -> Page[str]:
        return self._portal.call(self._ns.scan(prefix, limit=limit, page_token=page_token))

    def put_items(self, record: str, items: Iterable[Put]) -> list[WriteResult]:
        return self._portal.call(self._ns.put_items(record, items))

    def get_items(
        self,
        record: str,
        *,
        start: str | None = None,
        end: str | None = None,
        keys: Sequence[str] | None = None,
        limit: int = 100,
        page_size_bytes: int | None = None,
        page_token: str | None = None,
        consistency: Consistency = "eventual",
    ) -> Page[Item]:
        return self._portal.call(
            self._ns.get_items(
                record,
                start=start,
                end=end,
                keys=keys,
                limit=limit,
                page_size_bytes=page_size_bytes,
                page_token=page_token,
                consistency=consistency,
            )
        )

    def delete_items(
        self,
        record: str,
        *,
        start: str | None = None,
        end: str | None = None,
        keys: Sequence[str] | None = None,
    ) -> int:
        return self._portal.call(self._ns.delete_items(record, start=start, end=end, keys=keys))

    def watch(
        self,
        prefix: str = "",
        *,
        after: str | None = None,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        batch_size: int = DEFAULT_WATCH_BATCH,
    ) -> SyncChangeFeed:
        feed = self._ns.watch(prefix, after=after, poll_interval=poll_interval, batch_size=batch_size)
        return SyncChangeFeed(feed, self._portal)


@_twin_of(ChangeFeed)
class SyncChangeFeed:
    """The blocking twin of :class:`ChangeFeed`: ``for change in ns.watch(...):``."""

    def __init__(self, feed: ChangeFeed, portal: Portal) -> None:
        self._feed = feed
        self._portal = portal

    def __repr__(self) -> str:
        return "<Sync" + repr(self._feed)[1:]

    @property
    def cursor(self) -> str | None:
        return self._feed.cursor

    @property
    def closed(self) -> bool:
        return self._feed.closed

    def start(self) -> str:
        return self._portal.call(self._feed.start())

    def close(self) -> None:
        self._portal.call(self._feed.close())

    def __iter__(self) -> Iterator[Change]:
        return self

    def __next__(self) -> Change:
        try:
            return self._portal.call(self._feed.__anext__())
        except StopAsyncIteration:
            raise StopIteration from None

    def __enter__(self) -> SyncChangeFeed:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


@_twin_of(Collection)
class SyncCollection(Generic[T]):
    """The blocking twin of :class:`Collection`."""

    def __init__(self, collection: Collection[T], portal: Portal) -> None:
        self._c = collection
        self._portal = portal
        #: The blocking namespace holding the encoded values.
        self.namespace = SyncNamespace(collection.namespace, portal)

    def __repr__(self) -> str:
        return "<Sync" + repr(self._c)[1:]

    @property
    def name(self) -> str:
        return self._c.name

    @property
    def type(self) -> type[T]:
        """The type values decode to."""
        return self._c.type

    @property
    def codec(self) -> Codec[T]:
        """How values of ``type`` are encoded and decoded."""
        return self._c.codec

    def get(self, key: str, *, consistency: Consistency = "eventual") -> T | None:
        return self._portal.call(self._c.get(key, consistency=consistency))

    def get_with_etag(self, key: str, *, consistency: Consistency = "eventual") -> tuple[T, str] | None:
        return self._portal.call(self._c.get_with_etag(key, consistency=consistency))

    def get_many(self, keys: Sequence[str], *, consistency: Consistency = "eventual") -> dict[str, T]:
        return self._portal.call(self._c.get_many(keys, consistency=consistency))

    def put(
        self,
        key: str,
        obj: T,
        *,
        ttl: float | timedelta | None = None,
        if_match: str | None = None,
        if_absent: bool = False,
    ) -> str:
        return self._portal.call(self._c.put(key, obj, ttl=ttl, if_match=if_match, if_absent=if_absent))

    def put_many(
        self,
        objs: Mapping[str, T] | Iterable[tuple[str, T]],
        *,
        ttl: float | timedelta | None = None,
        existed: bool = True,
    ) -> list[WriteResult]:
        return self._portal.call(self._c.put_many(objs, ttl=ttl, existed=existed))

    def delete(self, key: str, *, if_match: str | None = None) -> bool:
        return self._portal.call(self._c.delete(key, if_match=if_match))

    def exists(self, key: str, *, consistency: Consistency = "eventual") -> bool:
        return self._portal.call(self._c.exists(key, consistency=consistency))

    def scan(self, prefix: str = "", *, limit: int = 100, page_token: str | None = None) -> Page[str]:
        return self._portal.call(self._c.scan(prefix, limit=limit, page_token=page_token))


@_twin_of(Store)
class SyncStore:
    """A blocking Store: ``with prism.connect_sync(url) as store: store.namespace("x").get("k")``.

    It is open once built; closing it twice is safe.
    """

    def __init__(self, store: Store) -> None:
        self._store = store
        self._portal = Portal(inline=store.backend.runs_inline)
        try:
            self._portal.call(store.open())
        except BaseException:
            self._portal.close()
            raise

    def __repr__(self) -> str:
        return "<Sync" + repr(self._store)[1:]

    @property
    def store(self) -> Store:
        """The async Store underneath (same connections)."""
        return self._store

    @property
    def backend(self) -> Backend:
        """The backend this store talks to."""
        return self._store.backend

    @property
    def instrumentation(self) -> Instrumentation:
        """The metrics and traces of this store's operations."""
        return self._store.instrumentation

    @property
    def max_value_bytes(self) -> int:
        """Largest value a namespace of this store accepts by default."""
        return self._store.max_value_bytes

    @property
    def is_open(self) -> bool:
        """True between open and close."""
        return self._store.is_open

    @property
    def state(self) -> StoreState:
        return self._store.state

    @property
    def capabilities(self) -> Capabilities:
        return self._store.capabilities

    def state_message(self) -> str:
        """Why the store cannot be used now (it is closed, or not open yet)."""
        return self._store.state_message()

    def open(self) -> SyncStore:
        self._portal.call(self._store.open())
        return self

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
    ) -> SyncNamespace:
        from prism.kv.cache import Cache as SharedCacheSettings

        if isinstance(cache, SharedCacheSettings):
            # The cache store's connections belong to another event loop than this store's.
            raise Unsupported("the blocking API takes a near_cache only; a shared cache needs prism.connect")
        ns = self._store.namespace(
            name,
            max_value_bytes=max_value_bytes,
            default_ttl=default_ttl,
            feed_retention=feed_retention,
            feed_max_changes=feed_max_changes,
            cache=cache,
            near_cache=near_cache,
        )
        return SyncNamespace(ns, self._portal)

    def collection(self, name: str, type_: type[T], **options: Any) -> SyncCollection[T]:
        return SyncCollection(self._store.collection(name, type_, **options), self._portal)

    def timeseries(
        self,
        name: str,
        *,
        slice_seconds: int = 3600,
        retention_seconds: int | None = None,
        accept_window_seconds: float | None = None,
        future_skew_seconds: float = 60.0,
    ) -> SyncTimeSeries:
        from prism.timeseries.sync import SyncTimeSeries

        ts = self._store.timeseries(
            name,
            slice_seconds=slice_seconds,
            retention_seconds=retention_seconds,
            accept_window_seconds=accept_window_seconds,
            future_skew_seconds=future_skew_seconds,
        )
        return SyncTimeSeries(ts, self._portal)

    def health(self) -> dict[str, Any]:
        return self._portal.call(self._store.health())

    def close(self) -> None:
        if self._store.is_open:
            self._portal.call(self._store.close())
        self._portal.close()

    def __enter__(self) -> SyncStore:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def connect_sync(
    url: str, *, backend: str | None = None, max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES, **options: Any
) -> SyncStore:
    """An open blocking store for ``url``; close it with ``close()`` or a ``with`` block."""
    return SyncStore(connect(url, backend=backend, max_value_bytes=max_value_bytes, **options))
