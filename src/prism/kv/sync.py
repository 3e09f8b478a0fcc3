"""The blocking API: the async implementation, driven from ordinary code.

There is one implementation of every operation (the coroutines in ``namespace``
and ``collection``). ``Portal.call`` runs a coroutine to completion:

* for backends that never suspend on I/O (memory, sqlite), it steps the coroutine
  directly in the calling thread, so a blocking ``get`` costs no thread hop; if the
  coroutine does suspend (sqlite waiting out another process's lock), the rest runs
  on a private event loop of the calling thread;
* for network backends, it submits the coroutine to an event loop in a background
  thread that owns the connections.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterable, Mapping, Sequence
from datetime import timedelta
from types import TracebackType
from typing import Any, Generic, TypeVar

from prism.errors import StoreClosed
from prism.kv.collection import Collection
from prism.kv.namespace import Consistency, Namespace
from prism.kv.store import Store, connect
from prism.model import DEFAULT_MAX_VALUE_BYTES, Capabilities, Delete, Item, Page, Put, WriteResult

__all__ = ["SyncCollection", "SyncNamespace", "SyncStore", "connect_sync"]

T = TypeVar("T")
R = TypeVar("R")

_get_running_loop = asyncio.events._get_running_loop
_set_running_loop = asyncio.events._set_running_loop


class Portal:
    """Runs coroutines to completion for blocking callers."""

    def __init__(self, inline: bool) -> None:
        self.inline = inline
        self.closed = False
        self._local = threading.local()
        self._loops: list[asyncio.AbstractEventLoop] = []
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        if not inline:
            loop = asyncio.new_event_loop()
            self._loop = loop
            self._thread = threading.Thread(target=loop.run_forever, name="prism-sync", daemon=True)
            self._thread.start()

    def call(self, coro: Coroutine[Any, Any, R]) -> R:
        if self.closed:
            coro.close()
            raise StoreClosed("the store is closed")
        if self._loop is not None:
            return asyncio.run_coroutine_threadsafe(coro, self._loop).result()
        loop: asyncio.AbstractEventLoop | None = getattr(self._local, "loop", None)
        if loop is None:
            loop = self._local.loop = asyncio.new_event_loop()
            with self._lock:
                self._loops.append(loop)
        outer = _get_running_loop()  # a notebook's loop, say: restored afterwards
        # The common case: the coroutine finishes without suspending.
        _set_running_loop(loop)
        try:
            awaited = coro.send(None)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        finally:
            _set_running_loop(outer)
        return self._resume(coro, loop, outer, awaited)

    def _resume(
        self, coro: Coroutine[Any, Any, R], loop: asyncio.AbstractEventLoop, outer: Any, awaited: Any
    ) -> R:
        """Finish a coroutine that suspended, running the thread's private loop while it waits."""
        while True:
            value: Any = None
            error: BaseException | None = None
            if awaited is None:  # a bare yield (asyncio.sleep(0)): let the loop turn once
                awaited = asyncio.sleep(0)
            else:
                awaited._asyncio_future_blocking = False
            _set_running_loop(None)
            try:
                value = loop.run_until_complete(_settle(awaited))
            except BaseException as exc:  # delivered into the coroutine, as `await` would
                error = exc
            finally:
                _set_running_loop(outer)
            _set_running_loop(loop)
            try:
                awaited = coro.throw(error) if error is not None else coro.send(value)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]
            finally:
                _set_running_loop(outer)

    def close(self) -> None:
        self.closed = True
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
            self._loop.close()
            self._loop = None
        with self._lock:
            for loop in self._loops:
                if not loop.is_running():
                    loop.close()
            self._loops.clear()


async def _settle(awaitable: Any) -> Any:
    return await awaitable


class SyncNamespace:
    """The blocking twin of :class:`Namespace`; every method runs the async one."""

    def __init__(self, ns: Namespace, portal: Portal) -> None:
        self._ns = ns
        self._portal = portal
        self.name = ns.name

    def __repr__(self) -> str:
        return f"<SyncNamespace {self.name!r}>"

    def get(self, key: str, *, consistency: Consistency = "eventual") -> Item | None:
        return self._portal.call(self._ns.get(key, consistency=consistency))

    def exists(self, key: str) -> bool:
        return self._portal.call(self._ns.exists(key))

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

    def delete(self, key: str, *, if_match: str | None = None) -> bool:
        return self._portal.call(self._ns.delete(key, if_match=if_match))

    def get_many(self, keys: Sequence[str], *, consistency: Consistency = "eventual") -> list[Item | None]:
        return self._portal.call(self._ns.get_many(keys, consistency=consistency))

    def put_many(self, puts: Iterable[Put]) -> list[WriteResult]:
        return self._portal.call(self._ns.put_many(puts))

    def delete_many(self, deletes: Iterable[str | Delete]) -> list[WriteResult]:
        return self._portal.call(self._ns.delete_many(deletes))

    def transact(self, ops: Iterable[Put | Delete]) -> list[WriteResult]:
        return self._portal.call(self._ns.transact(ops))

    def scan(self, prefix: str = "", *, limit: int = 100, page_token: str | None = None) -> Page[str]:
        return self._portal.call(self._ns.scan(prefix, limit=limit, page_token=page_token))

    def put_items(self, record: str, items: Iterable[Put]) -> list[WriteResult]:
        return self._portal.call(self._ns.put_items(record, items))

    def get_items(self, record: str, **options: Any) -> Page[Item]:
        return self._portal.call(self._ns.get_items(record, **options))

    def delete_items(self, record: str, **options: Any) -> int:
        return self._portal.call(self._ns.delete_items(record, **options))


class SyncCollection(Generic[T]):
    """The blocking twin of :class:`Collection`."""

    def __init__(self, collection: Collection[T], portal: Portal) -> None:
        self._c = collection
        self._portal = portal
        self.name = collection.name

    def get(self, key: str) -> T | None:
        return self._portal.call(self._c.get(key))

    def get_many(self, keys: Sequence[str]) -> dict[str, T]:
        return self._portal.call(self._c.get_many(keys))

    def put(self, key: str, obj: T, **options: Any) -> str:
        return self._portal.call(self._c.put(key, obj, **options))

    def put_many(self, objs: Mapping[str, T] | Iterable[tuple[str, T]], **options: Any) -> list[WriteResult]:
        return self._portal.call(self._c.put_many(objs, **options))

    def delete(self, key: str, *, if_match: str | None = None) -> bool:
        return self._portal.call(self._c.delete(key, if_match=if_match))

    def exists(self, key: str) -> bool:
        return self._portal.call(self._c.exists(key))


class SyncStore:
    """A blocking Store: ``with prism.connect_sync(url) as store: store.namespace("x").get("k")``."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._portal = Portal(inline=store.backend.runs_inline)
        try:
            self._portal.call(store.open())
        except BaseException:
            self._portal.close()
            raise

    @property
    def capabilities(self) -> Capabilities:
        return self._store.capabilities

    @property
    def store(self) -> Store:
        """The async Store underneath (same connections)."""
        return self._store

    def namespace(self, name: str, **options: Any) -> SyncNamespace:
        return SyncNamespace(self._store.namespace(name, **options), self._portal)

    def collection(self, name: str, type_: type[T], **options: Any) -> SyncCollection[T]:
        return SyncCollection(self._store.collection(name, type_, **options), self._portal)

    def health(self) -> dict[str, Any]:
        return self._portal.call(self._store.health())

    def close(self) -> None:
        """Close the store; safe to call twice."""
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
