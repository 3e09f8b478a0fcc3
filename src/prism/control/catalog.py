"""The runtime namespaces, kept in the control store where every gateway process reads them.

One entry (:data:`CATALOG_KEY` in the namespace :data:`CONTROL_NAMESPACE`) holds the
whole catalog: a version counter and each runtime namespace's definition. It changes
only by a conditional write on its etag, so a change is applied whole or not at all,
and two processes placing namespaces at the same time cannot both spend the same
capacity: the loser reads the new catalog and plans again. Every process reads the
entry each ``poll_interval`` seconds and applies a catalog whose version moved on, or
whose ``catalog_id`` changed (the entry was lost and made again).

The tenants of a tenant-scoped runtime namespace are kept beside it, one item per
tenant of the record ``tenants~NAME``, each written (if absent) before that tenant's
first write is applied, so that deleting the namespace can find every tenant's data.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Literal, TypeVar

import msgspec

from prism.errors import BackendUnavailable, PreconditionFailed, PrismError
from prism.kv.store import Store
from prism.model import Put

__all__ = [
    "CATALOG_KEY",
    "CONTROL_NAMESPACE",
    "TENANTS_PREFIX",
    "CatalogEntry",
    "CatalogState",
    "NamespaceCatalog",
]

log = logging.getLogger("prism.control")

#: The control store's namespace for the runtime namespaces (reserved: never served as data).
CONTROL_NAMESPACE = "prism.control"
#: The entry holding the catalog.
CATALOG_KEY = "namespaces"
#: The record of a namespace's tenants is this prefix and the namespace's name (no name holds ``~``).
TENANTS_PREFIX = "tenants~"

T = TypeVar("T")


class CatalogEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One runtime namespace: its definition (with the store it was placed on) and its state.

    ``config`` is the namespace as the config file would declare it (``NamespaceConfig``
    of the gateway, which reads it). ``deleting`` namespaces are served by no process
    while their data is checked or purged.
    """

    config: dict[str, Any]
    state: Literal["active", "deleting"] = "active"
    created_at: float = 0.0
    updated_at: float = 0.0
    #: While ``deleting``: the token of the deletion that marked it; only that deletion may
    #: serve it again or remove it (None: no deletion runs, another may resume it).
    deletion: str | None = None


class CatalogState(msgspec.Struct, frozen=True, kw_only=True):
    """The whole catalog: ``version`` grows by one on every change.

    ``catalog_id`` is made when the entry is created: a catalog with another id (the control
    store lost the entry, or was restored from a backup) is applied whatever its version.
    """

    version: int = 0
    catalog_id: str = ""
    namespaces: dict[str, CatalogEntry] = {}


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(CatalogState).decode


class NamespaceCatalog:
    """The catalog in ``store``: read, change (conditionally), and follow it with ``on_change``."""

    def __init__(
        self,
        store: Store,
        *,
        poll_interval: float,
        on_change: Callable[[CatalogState], None],
        attempts: int = 50,
    ) -> None:
        self.store = store
        self.poll_interval = poll_interval
        self.attempts = attempts
        self._on_change = on_change
        self._ns = store.namespace(CONTROL_NAMESPACE)
        #: The catalog last applied in this process.
        self.current = CatalogState()
        self._task: asyncio.Task[None] | None = None
        self._failing = False

    async def read(self) -> tuple[CatalogState, str | None]:
        """The catalog as stored now (strongly read when the store can) and its etag (None: none yet)."""
        consistency: Literal["strong", "eventual"] = (
            "strong" if self.store.capabilities.consistent_reads else "eventual"
        )
        item = await self._ns.get(CATALOG_KEY, consistency=consistency)
        if item is None:
            return CatalogState(), None
        return _decode(item.value), item.etag

    async def change(self, edit: Callable[[CatalogState], Awaitable[tuple[CatalogState, T]]]) -> T:
        """Apply ``edit`` to the stored catalog, conditionally on nothing else changing it meanwhile.

        ``edit`` gets the current catalog and returns the new one (its version is set
        here) and a result; it may raise to change nothing, or return ``state`` itself to
        write nothing. On a lost race it runs again on the newer catalog, up to ``attempts`` times.
        """
        for _ in range(self.attempts):
            state, etag = await self.read()
            new, result = await edit(state)
            if new is state:
                self._apply(state)
                return result
            catalog_id = state.catalog_id if etag is not None else uuid.uuid4().hex
            new = msgspec.structs.replace(new, version=state.version + 1, catalog_id=catalog_id)
            try:
                if etag is None:
                    await self._ns.put(CATALOG_KEY, _encode(new), if_absent=True)
                else:
                    await self._ns.put(CATALOG_KEY, _encode(new), if_match=etag)
            except PreconditionFailed:
                continue
            self._apply(new)
            return result
        raise BackendUnavailable(
            f"the namespace catalog changed {self.attempts} times while this change was made; try again"
        )

    async def record_tenant(self, name: str, tenant: str) -> None:
        """Record that ``tenant`` writes to the namespace ``name`` (written only when absent)."""
        put = Put(tenant, _encode(stamp()), if_absent=True)
        (result,) = await self._ns.put_items(TENANTS_PREFIX + name, [put])
        if not result.ok and not isinstance(result.error, PreconditionFailed):
            raise result.error or BackendUnavailable(f"cannot record tenant {tenant!r} of {name!r}")

    async def tenants(self, name: str, *, page: int = 500) -> list[str]:
        """Every tenant recorded for the namespace ``name``, in order."""
        consistency: Literal["strong", "eventual"] = (
            "strong" if self.store.capabilities.consistent_reads else "eventual"
        )
        found: list[str] = []
        token: str | None = None
        while True:
            items = await self._ns.get_items(
                TENANTS_PREFIX + name, limit=page, page_token=token, consistency=consistency
            )
            found.extend(item.key for item in items.items)
            token = items.next_page_token
            if token is None:
                return found

    async def forget_tenants(self, name: str) -> None:
        """Drop the record of the namespace ``name``'s tenants."""
        await self._ns.delete_items(TENANTS_PREFIX + name)

    def _apply(self, state: CatalogState) -> None:
        if state.catalog_id == self.current.catalog_id:
            if state.version == self.current.version and state.version != 0:
                return
            if state.version < self.current.version:
                return
        self.current = state
        self._on_change(state)

    async def refresh(self) -> None:
        """Read the catalog and apply it when it moved on."""
        state, _ = await self.read()
        self._apply(state)

    async def start(self) -> None:
        """Load the catalog and follow it; a store that cannot be read now is read again each poll."""
        try:
            await self.refresh()
        except (PrismError, OSError, msgspec.DecodeError) as exc:
            log.warning("cannot read the namespace catalog (%s); serving none until it can be read", exc)
            self._failing = True
        self._task = asyncio.create_task(self._follow(), name="prism-namespace-catalog")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _follow(self) -> None:
        while True:
            await asyncio.sleep(self.poll_interval)
            try:
                await self.refresh()
            except (PrismError, OSError, msgspec.DecodeError) as exc:
                if not self._failing:
                    log.warning("cannot read the namespace catalog (%s); serving the last one read", exc)
                self._failing = True
                continue
            if self._failing:
                log.warning("the namespace catalog can be read again")
                self._failing = False


def stamp() -> float:
    """Now, in epoch seconds, for ``created_at`` and ``updated_at``."""
    return round(time.time(), 3)
