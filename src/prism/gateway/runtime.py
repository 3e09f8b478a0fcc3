"""The running gateway: opened stores, served namespaces, and the services requests use.

:class:`Gateway` is built from a :class:`GatewayConfig` (reading keys and secrets,
which may fail with ConfigError before anything opens), then ``start()`` opens the
stores and background tasks and ``stop()`` releases them in reverse order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

import prism
from prism.backends.urls import mask_url
from prism.control.signals import SignalBook, Signals, StoreLatencies
from prism.errors import PrismError
from prism.gateway.audit import AuditLog, AuditSink, FileSink, NamespaceSink, NullSink, StdoutSink
from prism.gateway.auth import Authenticator
from prism.gateway.config import (
    ConfigError,
    GatewayConfig,
    LimitsConfig,
    NamespaceConfig,
    TimeSeriesConfig,
    internal_namespace,
)
from prism.gateway.idempotency import IDEMPOTENCY_NAMESPACE, IdempotencyCache
from prism.gateway.limits import NamespaceLimiter, SharedBuckets, declared_rates
from prism.gateway.logs import AccessLog
from prism.gateway.migrations import GatewayMigrations
from prism.gateway.pii import FieldProtector, Keyring
from prism.gateway.tenancy import physical_namespace
from prism.kv.cache import Cache, CachedBackend, NearCache, TierStats
from prism.kv.namespace import Namespace
from prism.kv.store import Store
from prism.migration import MigrationSettings
from prism.timeseries import TimeSeries

if TYPE_CHECKING:
    from prism.gateway.runtime_namespaces import RuntimeNamespaces

__all__ = ["Gateway", "ServedNamespace"]

log = logging.getLogger("prism.gateway")


def _merged_limits(default: LimitsConfig, own: LimitsConfig | None) -> LimitsConfig:
    if own is None:
        return default
    return LimitsConfig(
        rate=own.rate if own.rate is not None else default.rate,
        burst=own.burst if own.burst is not None else default.burst,
        concurrency=own.concurrency if own.concurrency is not None else default.concurrency,
    )


class ServedNamespace:
    """A configured namespace: its store, limits, PII rules, and per-tenant handles."""

    def __init__(
        self,
        config: NamespaceConfig,
        store_name: str,
        store: Store,
        gateway_config: GatewayConfig,
        keyring: Keyring | None,
        shared: SharedBuckets | None = None,
        cache_store: Store | None = None,
    ) -> None:
        self.config = config
        self.name = config.name
        self.store_name = store_name
        self.store = store
        self.tenant_scoped = config.tenant_scoped
        #: True when the backend never waits on I/O (so a request on it cannot hang).
        self.inline = store.backend.runs_inline
        limits = _merged_limits(gateway_config.limits, config.limits)
        # Declared rates are enforced, one rate for reads and one for writes, instead of one for all.
        reads, writes = declared_rates(config, gateway_config.control.namespaces.limit_headroom)
        if reads is not None or writes is not None:
            limits = LimitsConfig(concurrency=limits.concurrency)
        self.limiter = NamespaceLimiter(config.name, limits, shared, reads=reads, writes=writes)
        self.pii = (
            FieldProtector(config.pii, keyring) if config.pii is not None and config.pii.fields else None
        )
        self._handles: dict[str | None, Namespace] = {}
        #: Awaited before a tenant's first write in this process is applied (set for tenant-scoped
        #: runtime namespaces, whose tenants are recorded so that a delete can find their data).
        self.record_tenant: Callable[[str], Awaitable[None]] | None = None
        #: The tenants ``record_tenant`` recorded in this process.
        self.recorded_tenants: set[str] = set()
        #: ``kv`` or ``timeseries``: which routes serve this namespace.
        self.kind = config.kind
        self._series: dict[str | None, TimeSeries] = {}
        self.cache = self.near_cache = None
        if config.cache is not None and cache_store is not None:
            c = config.cache
            self.cache = Cache(
                cache_store,
                ttl=c.ttl,
                max_item_bytes=c.max_item_bytes,
                timeout=c.timeout,
                lease_ttl=c.lease_ttl,
                recovery_interval=c.recovery_interval,
                prefix=f"prism-cache.{store_name}",
            )
        if config.near_cache is not None:
            n = config.near_cache
            self.near_cache = NearCache(max_items=n.max_items, ttl=n.ttl, poll_interval=n.poll_interval)

    def cache_stats(self) -> dict[str, Any] | None:
        """This process's cache settings and counters of the namespace, every tenant's together.

        None when the namespace is not cached.
        """
        if self.cache is None and self.near_cache is None:
            return None
        tiers = [ns._backend for ns in self._handles.values() if isinstance(ns._backend, CachedBackend)]
        out: dict[str, dict[str, Any]] = {}
        if self.cache is not None and self.config.cache is not None:
            out["shared"] = {
                "store": self.config.cache.store,
                "ttl": self.cache.ttl,
                "degraded": any(t.shared is not None and t.shared.degraded for t in tiers),
            }
        if self.near_cache is not None:
            out["near"] = {
                "max_items": self.near_cache.max_items,
                "ttl": self.near_cache.ttl,
                # ``feed``: evicted by the change feed too; ``ttl``: bounded by the ttl alone.
                "bound": "feed" if self.store.capabilities.watch else "ttl",
            }
        for name, detail in out.items():
            total = TierStats()
            for t in tiers:
                for tier, stats in t.stats.tiers():
                    if tier == name:
                        total.add(stats)
            detail.update(total.as_dict())
        return out

    @property
    def max_value_bytes(self) -> int:
        """Largest value accepted in this namespace."""
        return (
            self.config.max_value_bytes
            if self.config.max_value_bytes is not None
            else self.store.max_value_bytes
        )

    def signals(self, book: SignalBook) -> Signals:
        """This namespace's signals, from its needs and its store's measured latency."""
        needs = self.config.needs
        return book.for_namespace(
            self.name,
            store=self.store_name,
            latency_need_ms=None if needs is None else needs.latency_p99_ms,
            max_value_bytes=self.max_value_bytes,
        )

    def handle(self, tenant: str | None) -> Namespace:
        """The KeyValue namespace holding this caller's keys (the tenant's own when scoped)."""
        key = tenant if self.tenant_scoped else None
        if self.tenant_scoped and key is None:
            raise ValueError(f"namespace {self.name!r} is tenant-scoped: a tenant is required")
        ns = self._handles.get(key)
        if ns is None:
            feed = self.config.feed if self.tenant_scoped else None
            ns = self.store.namespace(
                physical_namespace(self.name, key),
                max_value_bytes=self.config.max_value_bytes,
                default_ttl=self.config.default_ttl,
                # A tenant's namespace gets the feed retention when it is first served.
                feed_retention=None if feed is None else feed.retention_seconds,
                feed_max_changes=None if feed is None else feed.max_changes,
                cache=self.cache,
                near_cache=self.near_cache,
            )
            self._handles[key] = ns
        return ns

    def timeseries(self, tenant: str | None) -> TimeSeries:
        """The TimeSeries namespace holding this caller's series (the tenant's own when scoped)."""
        key = tenant if self.tenant_scoped else None
        if self.tenant_scoped and key is None:
            raise ValueError(f"namespace {self.name!r} is tenant-scoped: a tenant is required")
        ts = self._series.get(key)
        if ts is None:
            settings = self.config.timeseries or TimeSeriesConfig()
            ts = self.store.timeseries(
                physical_namespace(self.name, key),
                slice_seconds=settings.slice_seconds,
                retention_seconds=settings.retention_seconds,
                accept_window_seconds=settings.accept_window_seconds,
                future_skew_seconds=settings.future_skew_seconds,
            )
            self._series[key] = ts
        return ts


class Gateway:
    """Everything a request needs, with one lifecycle: ``await start()``, then ``await stop()``."""

    def __init__(
        self,
        config: GatewayConfig,
        *,
        env: Mapping[str, str] | None = None,
        stores: Mapping[str, Store] | None = None,
    ) -> None:
        """Build (not yet open) from ``config``; ``stores`` may supply already-built stores by name."""
        self.config = config
        self.authenticator = Authenticator.from_config(config, env)
        self.keyring = Keyring.from_config(config, env)
        self._given = dict(stores or {})
        self.stores: dict[str, Store] = {}
        self.namespaces: dict[str, ServedNamespace] = {}
        self.idempotency: IdempotencyCache | None = None
        self.access_log = AccessLog() if config.server.access_log else None
        #: The measured latency of each store (the pipeline's handler timings) and the signals from it.
        self.latencies = StoreLatencies(config.signals)
        self.signals = SignalBook(config.signals, self.latencies, config.server.request_timeout)
        self._wire()
        self.started = False
        self._used = False
        #: Why start() failed, in one line (for ``prism serve`` to report without a traceback).
        self.startup_error: str | None = None

    def _wire(self) -> None:
        """(Re)build the stores and everything bound to them; a stopped gateway starts again this way."""
        config = self.config
        stores: dict[str, Store] = {}
        for name in config.stores:
            if name in self._given:
                stores[name] = self._given[name]
                continue
            entry = config.store_entry(name)
            try:
                stores[name] = prism.connect(entry.url, backend=entry.backend, **entry.options)
            except PrismError as exc:
                raise ConfigError(
                    config.source, f"$.stores.{name}", str(exc).replace(entry.url, mask_url(entry.url))
                ) from None
        control = config.control
        shared = (
            SharedBuckets(
                stores[control.store],
                control.store,
                timeout=control.timeout,
                on_failure=control.on_failure,
                retry_after=config.server.retry_after,
            )
            if control.store is not None
            else None
        )
        namespaces: dict[str, ServedNamespace] = {}
        timings = config.control.migration
        settings = MigrationSettings(
            poll_interval=timings.poll_interval,
            heartbeat_ttl=timings.heartbeat_ttl,
            fence_timeout=timings.fence_timeout,
            repair_interval=timings.repair_interval,
        )
        migrations = self.migrations = GatewayMigrations(config, stores, settings)
        for i, ns in enumerate(config.namespaces):
            reserved = internal_namespace(ns.name, config)
            if reserved is not None:
                # Also for configs built in code, which parse_config never checked.
                raise ConfigError(
                    config.source, f"$.namespaces[{i}].name", f"{ns.name!r} cannot be served: {reserved}"
                )
            store_name = config.namespace_store(ns)
            store = stores[store_name]
            if ns.kind == "kv":
                # Only KeyValue namespaces migrate (see prism.migration).
                store = migrations.wrap(ns.name, store_name, store, tenant_scoped=ns.tenant_scoped)
            cache_store = None
            if ns.cache is not None:
                cache_store = stores[ns.cache.store]
                caps = cache_store.capabilities
                if not (caps.etag and caps.ttl):
                    raise ConfigError(
                        config.source,
                        f"$.namespaces[{i}].cache.store",
                        f"store {ns.cache.store!r} ({cache_store.backend.name}) cannot hold a cache: "
                        "it needs conditional writes and TTLs",
                    )
            try:
                served = ServedNamespace(ns, store_name, store, config, self.keyring, shared, cache_store)
                store.namespace(ns.name, max_value_bytes=ns.max_value_bytes, default_ttl=ns.default_ttl)
                if ns.feed is not None:
                    self._set_feed_retention(stores[store_name], ns, i, store_name)
                if ns.kind == "timeseries" and not store.capabilities.timeseries:
                    backend = type(store.backend)
                    reason = backend.timeseries_unsupported or "it declares no TimeSeries store"
                    raise ConfigError(
                        config.source,
                        f"$.namespaces[{i}].kind",
                        f"store {store_name!r} ({backend.name}) has no TimeSeries: {reason}",
                    )
            except ConfigError:
                raise
            except (PrismError, ValueError) as exc:
                raise ConfigError(config.source, f"$.namespaces[{i}]", str(exc)) from None
            namespaces[ns.name] = served
        self.stores = stores
        self.namespaces = namespaces
        self.shared_buckets = shared
        self.runtime_namespaces: RuntimeNamespaces | None = None
        if control.namespaces.enabled:
            from prism.gateway.runtime_namespaces import RuntimeNamespaces

            # Kept in the control store; without one, in the first store (the embedded one by default).
            self.runtime_namespaces = RuntimeNamespaces(self, control.store or next(iter(config.stores)))
        self.audit = AuditLog(self._audit_sink(), config.audit)
        idem = config.idempotency
        self.idempotency = None
        if idem.enabled:
            store = stores[idem.store or next(iter(config.stores))]
            self.idempotency = IdempotencyCache(
                store.namespace(IDEMPOTENCY_NAMESPACE), idem, config.server.retry_after
            )

    def _set_feed_retention(self, store: Store, ns: NamespaceConfig, i: int, store_name: str) -> None:
        """Give namespace ``ns`` its feed retention on ``store`` (the store that writes it, whatever
        serves it); a tenant-scoped one gets it per tenant as each is served."""
        assert ns.feed is not None
        try:
            if ns.tenant_scoped:
                if not (store.capabilities.watch and type(store.backend).namespace_feed_retention):
                    store.backend.set_feed_retention(ns.name, None, None)  # raises what is missing
            else:
                store.namespace(
                    ns.name, feed_retention=ns.feed.retention_seconds, feed_max_changes=ns.feed.max_changes
                )
        except PrismError as exc:
            raise ConfigError(
                self.config.source, f"$.namespaces[{i}].feed", f"store {store_name!r}: {exc}"
            ) from None

    def _audit_sink(self) -> AuditSink:
        cfg = self.config.audit
        if cfg.sink == "none":
            return NullSink()
        if cfg.sink == "stdout":
            return StdoutSink()
        if cfg.sink == "file":
            assert cfg.path is not None
            path = self.config.resolve_path(cfg.path)
            try:
                return FileSink(path)
            except OSError as exc:
                raise ConfigError(
                    self.config.source, "$.audit.path", f"cannot open {path}: {exc.strerror}"
                ) from None
        store = self.stores[cfg.store or next(iter(self.config.stores))]
        return NamespaceSink(store.namespace(cfg.namespace))

    async def start(self) -> None:
        """Open every store and start the background tasks (audit writer, JWKS refresh).

        A gateway that was stopped can start again (as test clients do with an app's
        lifespan): the stores it built itself are built anew.
        """
        opened: list[Store] = []
        try:
            if self._used:
                self._wire()
            self._used = True
            for name, store in self.stores.items():
                try:
                    await store.open()
                except PrismError as exc:
                    raise RuntimeError(
                        f"store {name!r} ({mask_url(self.config.store_url(name))}) did not open: {exc}"
                    ) from exc
                opened.append(store)
            await self.migrations.start()
            if self.runtime_namespaces is not None:
                await self.runtime_namespaces.start()
            await self.audit.start()
            await self.authenticator.start(self.config.server.jwks_startup_timeout)
        except BaseException as exc:
            self.startup_error = str(exc) or type(exc).__name__
            for store in opened:
                with contextlib.suppress(PrismError):
                    await store.close()
            raise
        self.started = True

    async def stop(self) -> None:
        """Flush the audit trail and the access log, stop background tasks, and close the stores."""
        if self.access_log is not None:
            self.access_log.flush()
        if not self.started:
            return
        self.started = False
        await self.authenticator.stop()
        if self.runtime_namespaces is not None:
            await self.runtime_namespaces.stop()
        await self.audit.stop(self.config.server.shutdown_timeout)
        await self.migrations.stop()
        for store in self.stores.values():
            try:
                await store.close()
            except PrismError as exc:
                log.warning("closing a store failed", extra={"error": str(exc)})

    async def readiness(self) -> tuple[bool, dict[str, Any]]:
        """(ready, details): every store healthy, and the audit sink healthy when failing closed."""
        timeout = self.config.server.request_timeout

        async def probe(store: Store) -> dict[str, Any]:
            try:
                async with asyncio.timeout(timeout):
                    return await store.health()
            except TimeoutError:
                return {"status": "DOWN", "details": {"error": "the health check timed out"}}

        names = list(self.stores)
        results = await asyncio.gather(*(probe(self.stores[n]) for n in names))
        stores = dict(zip(names, results, strict=True))
        ready = all(r.get("status") == "UP" for r in results)
        audit = {
            "sink": self.config.audit.sink,
            "healthy": self.audit.healthy,
            "on_failure": self.config.audit.on_failure,
        }
        if self.audit.fail_closed and not self.audit.healthy:
            ready = False
        return ready, {"stores": stores, "audit": audit}
