"""Live migration in the gateway: every served namespace follows its migration state.

With a control store configured (``control: {store: NAME}``), each namespace that is
not tenant-scoped is served through a :class:`~prism.migration.MigratingBackend`
over its configured store, which follows the migration state kept in the control
store: once a migration starts (``POST /v1/namespaces/{ns}/migration``), writes on
every gateway process are shadowed to the target store, and a cutover switches them
all. Backfill and verify run as background tasks of the process that was asked.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from prism.errors import PrismError
from prism.gateway.config import GatewayConfig
from prism.kv.store import Store
from prism.migration import MigratingBackend, Migration, MigrationSettings

__all__ = ["GatewayMigrations"]

log = logging.getLogger("prism.gateway")


class GatewayMigrations:
    """The migration routers of a gateway's namespaces, and their background tasks."""

    def __init__(self, config: GatewayConfig, stores: dict[str, Store], settings: MigrationSettings) -> None:
        self.config = config
        self.settings = settings
        self.stores = stores
        self.control = None if config.control.store is None else stores[config.control.store]
        #: Namespace name -> (its configured store's name, the Store serving it through a router).
        self.served: dict[str, tuple[str, Store]] = {}
        self.tasks: dict[str, asyncio.Task[Any]] = {}

    @property
    def enabled(self) -> bool:
        return self.control is not None

    def wrap(self, name: str, store_name: str, store: Store, *, tenant_scoped: bool) -> Store:
        """The Store ``name`` is served through: a router when migrations are possible, else ``store``."""
        if self.control is None or tenant_scoped:
            return store
        targets = {n: s.backend for n, s in self.stores.items()}
        router = MigratingBackend(
            store.backend, store.backend, self.control.backend, name, self.settings, targets=targets
        )
        served = Store(router, max_value_bytes=store.max_value_bytes)
        self.served[name] = (store_name, served)
        return served

    def migration(self, name: str, target: str) -> Migration | None:
        """A handle on ``name``'s migration to ``target`` (None: the namespace cannot migrate)."""
        found = self.served.get(name)
        if found is None:
            return None
        store_name, store = found
        assert isinstance(store.backend, MigratingBackend)
        return Migration.attached(store.backend, store, store_name, target)

    def run(self, name: str, work: Any) -> bool:
        """Run ``work`` (a coroutine) in the background for ``name``; False if one already runs."""
        running = self.tasks.get(name)
        if running is not None and not running.done():
            work.close()
            return False

        async def guarded() -> None:
            try:
                await work
            except PrismError as exc:
                # The migration state holds the error for every process to see.
                log.warning("migration of %s stopped: %s", name, exc)

        self.tasks[name] = asyncio.create_task(guarded(), name=f"prism-migration-{name}")
        return True

    async def start(self) -> None:
        """Open the routers (after the stores they ride on)."""
        opened: list[Store] = []
        try:
            for _, store in self.served.values():
                await store.open()
                opened.append(store)
        except BaseException:
            for store in opened:
                with contextlib.suppress(PrismError):
                    await store.close()
            raise

    async def stop(self) -> None:
        for task in self.tasks.values():
            task.cancel()
        for task in self.tasks.values():
            with contextlib.suppress(asyncio.CancelledError, PrismError):
                await task
        self.tasks.clear()
        for _, store in self.served.values():
            with contextlib.suppress(PrismError):
                await store.close()
