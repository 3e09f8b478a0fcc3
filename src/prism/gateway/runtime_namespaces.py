"""Namespaces created at runtime: checked, placed by the planner, kept in the catalog, served.

:class:`RuntimeNamespaces` is the gateway's side of :mod:`prism.control`: it turns a
request body into a namespace definition (refusing bad input with the field named),
asks the planner for a store inside a conditional change of the catalog (so capacity
is never spent twice), and serves every catalog it follows: a runtime namespace is
added to, changed in or removed from ``Gateway.namespaces`` without a restart.
Namespaces of the config file are read-only here and win on a name clash.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
from typing import Any, Literal

import msgspec

from prism.control.catalog import CatalogEntry, CatalogState, NamespaceCatalog, stamp
from prism.control.planner import ENGINES, Plan, StoreFails, StoreOffer, engine, needs_problems, plan
from prism.errors import PrismError
from prism.gateway.config import (
    AccessConfig,
    GatewayConfig,
    NamespaceConfig,
    NeedsConfig,
    PiiConfig,
    TimeSeriesConfig,
    _validate,
    internal_namespace,
)
from prism.gateway.limits import declared_rates
from prism.gateway.problem import HTTPProblem
from prism.gateway.tenancy import physical_namespace
from prism.kv.namespace import Namespace
from prism.model import Principal

__all__ = [
    "NamespaceBody",
    "NamespaceDeleted",
    "NamespacePlacement",
    "PlacementLimits",
    "PlanRefused",
    "RuntimeNamespaces",
]

log = logging.getLogger("prism.gateway")


class NamespaceBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``PUT /v1/namespaces/{ns}``: what a runtime namespace needs and how it is served."""

    needs: NeedsConfig = NeedsConfig()
    access: AccessConfig = AccessConfig()
    tenant_scoped: bool = False
    pii: PiiConfig | None = None
    max_value_bytes: int | None = None
    default_ttl: float | None = None
    audit: bool = True
    #: The store to place it on, instead of the planner's choice (needs the store admin role).
    store: str | None = None
    #: The engine it prefers (postgres, redis, sqlite, nats, dynamodb, memory): the planner
    #: chooses among the stores of that engine meeting every need.
    backend: str | None = None
    #: The settings of a namespace whose ``needs.access_pattern`` is ``timeseries`` (served by
    #: /v1/ts as a ``kind: timeseries`` namespace); defaults when omitted.
    timeseries: TimeSeriesConfig | None = None


class PlacementLimits(msgspec.Struct):
    """The rate limits a namespace's declared rates became (``limit_headroom`` included): one for
    its reads, one for its writes (null: that side declares no rate)."""

    read_rate: float | None
    read_burst: int | None
    write_rate: float | None
    write_burst: int | None


class NamespacePlacement(msgspec.Struct):
    """Where a runtime namespace was (or, with ``dry_run``, would be) placed, and why not elsewhere."""

    namespace: str
    store: str | None
    created: bool
    dry_run: bool
    needs: NeedsConfig
    limits: PlacementLimits | None
    #: The stores passed over before the chosen one, each with the needs it fails.
    refused: list[StoreFails]


class NamespaceDeleted(msgspec.Struct):
    """A deleted runtime namespace, and how many of its records a purge deleted."""

    namespace: str
    deleted: bool
    purged_records: int


class PlanRefused(HTTPProblem):
    """422: no store can carry the namespace; the body names, for every store, the needs it fails."""

    def __init__(self, name: str, decision: Plan) -> None:
        super().__init__(
            422, "NO_STORE_FITS", f"no store meets every need of namespace {name!r}; see `stores`"
        )
        self.stores = msgspec.to_builtins(decision.refused)

    def response(self, request_id: str | None = None) -> Any:
        from starlette.responses import Response

        from prism.gateway.problem import PROBLEM_CONTENT_TYPE, problem_body

        body = msgspec.json.decode(problem_body(self.status, self.code, self.detail, request_id))
        body["stores"] = self.stores
        return Response(msgspec.json.encode(body), 422, media_type=PROBLEM_CONTENT_TYPE)


def _definition(entry: CatalogEntry | None) -> dict[str, Any] | None:
    return None if entry is None else dict(entry.config)


def _ns(entry: CatalogEntry) -> NamespaceConfig:
    """The namespace an entry of the catalog defines."""
    return msgspec.convert(entry.config, NamespaceConfig)


class RuntimeNamespaces:
    """The runtime namespaces of one gateway process (``gateway.runtime_namespaces``)."""

    def __init__(self, gateway: Any, control_store: str) -> None:
        self.gateway = gateway
        self.config: GatewayConfig = gateway.config
        self.settings = self.config.control.namespaces
        self.control_store = control_store
        self.catalog = NamespaceCatalog(
            gateway.stores[control_store],
            poll_interval=self.settings.poll_interval,
            on_change=self._serve,
            attempts=self.settings.change_attempts,
        )
        self.yaml_names = frozenset(ns.name for ns in self.config.namespaces)
        #: The runtime namespaces this process serves now: name -> definition served.
        self.served: dict[str, NamespaceConfig] = {}
        #: When each served namespace was created (a namespace deleted and created again is new).
        self._born: dict[str, float] = {}
        self._warned: set[str] = set()

    async def start(self) -> None:
        await self.catalog.start()

    async def stop(self) -> None:
        await self.catalog.stop()

    # -- serving ------------------------------------------------------------------

    def limits(self, ns: NamespaceConfig) -> PlacementLimits | None:
        """The read and write limits ``ns``'s declared rates become (None: it declares none)."""
        reads, writes = declared_rates(ns, self.settings.limit_headroom)
        if reads is None and writes is None:
            return None

        def burst(rate: float | None) -> int | None:
            return None if rate is None else max(1, math.ceil(rate))

        return PlacementLimits(reads, burst(reads), writes, burst(writes))

    def _serve(self, state: CatalogState) -> None:
        """Serve ``state``: add, change and remove runtime namespaces in ``gateway.namespaces``."""
        from prism.gateway.runtime import ServedNamespace

        gateway = self.gateway
        wanted: dict[str, NamespaceConfig] = {}
        for name, entry in state.namespaces.items():
            if entry.state != "active":
                continue
            if name in self.yaml_names:
                self._warn(name, f"runtime namespace {name!r} is also in the config file, which wins")
                continue
            try:
                ns = _ns(entry)
            except msgspec.ValidationError as exc:
                self._warn(name, f"runtime namespace {name!r} cannot be read by this process: {exc}")
                continue
            store = ns.store
            if store is None or store not in gateway.stores:
                self._warn(name, f"runtime namespace {name!r} is on store {store!r}, unknown to this process")
                continue
            wanted[name] = ns
        for name in list(self.served):
            if name not in wanted:
                del self.served[name]
                self._born.pop(name, None)
                gateway.namespaces.pop(name, None)
        for name, ns in wanted.items():
            born = state.namespaces[name].created_at
            if self.served.get(name) == ns and self._born.get(name) == born:
                continue
            assert ns.store is not None
            store = gateway.stores[ns.store]
            if ns.kind == "timeseries" and not store.capabilities.timeseries:
                self._warn(
                    name, f"runtime namespace {name!r} is on store {ns.store!r}, which has no TimeSeries"
                )
                continue
            try:
                store.namespace(ns.name, max_value_bytes=ns.max_value_bytes, default_ttl=ns.default_ttl)
                served = ServedNamespace(
                    ns, ns.store, store, self.config, gateway.keyring, gateway.shared_buckets
                )
            except (PrismError, ValueError) as exc:
                self._warn(name, f"runtime namespace {name!r} cannot be served here: {exc}")
                continue
            if ns.tenant_scoped:
                served.record_tenant = functools.partial(self._record_tenant, name)
            gateway.namespaces[name] = served
            self.served[name] = ns
            self._born[name] = born

    async def _record_tenant(self, name: str, tenant: str) -> None:
        """Record ``tenant`` as a writer of ``name`` in the control store, or refuse its write (503)."""
        server = self.config.server
        try:
            async with asyncio.timeout(server.request_timeout):
                await self.catalog.record_tenant(name, tenant)
        except (PrismError, OSError, TimeoutError) as exc:
            log.warning("cannot record a tenant of runtime namespace %r in the control store: %s", name, exc)
            raise HTTPProblem(
                503,
                "TENANT_NOT_RECORDED",
                f"namespace {name!r}: the control store cannot record this tenant's first write, "
                "so nothing was written; try again",
                headers={"Retry-After": str(server.retry_after)},
            ) from None

    def _warn(self, name: str, message: str) -> None:
        if name not in self._warned:
            self._warned.add(name)
            log.warning(message)

    # -- checking -----------------------------------------------------------------

    def may_administer(self, principal: Principal) -> bool:
        return not principal.roles.isdisjoint(self.config.auth.namespace_admin_roles)

    def check(self, name: str, body: NamespaceBody, principal: Principal) -> NamespaceConfig:
        """The namespace ``body`` defines, or a problem naming the field it breaks."""
        if not self.may_administer(principal):
            raise HTTPProblem(
                403,
                "FORBIDDEN",
                f"{principal.subject!r} may not administer namespaces (auth.namespace_admin_roles)",
            )
        if name in self.yaml_names:
            raise HTTPProblem(
                409,
                "NAMESPACE_READ_ONLY",
                f"namespace {name!r} is declared in the config file and cannot be changed at runtime",
            )
        if body.store is not None:
            if principal.roles.isdisjoint(self.config.auth.store_admin_roles):
                raise HTTPProblem(
                    403,
                    "FORBIDDEN",
                    f"{principal.subject!r} may not choose a namespace's store (auth.store_admin_roles)",
                )
            if body.store not in self.config.stores:
                raise HTTPProblem(
                    400,
                    "INVALID_ARGUMENT",
                    f"store: unknown store {body.store!r} (stores: {', '.join(self.config.stores)})",
                )
        if body.backend is not None and engine(body.backend) is None:
            raise HTTPProblem(
                400,
                "INVALID_ARGUMENT",
                f"backend: unknown engine {body.backend!r} (engines: {', '.join(ENGINES)})",
            )
        for field, rule in needs_problems(body.needs):
            raise HTTPProblem(400, "INVALID_ARGUMENT", f"needs.{field}: {rule}")
        ns = NamespaceConfig(
            name=name,
            kind="timeseries" if body.needs.access_pattern == "timeseries" else "kv",
            timeseries=body.timeseries,
            store=body.store,
            tenant_scoped=body.tenant_scoped,
            max_value_bytes=body.max_value_bytes,
            default_ttl=body.default_ttl,
            access=body.access,
            pii=body.pii,
            audit=body.audit,
            needs=body.needs,
        )
        errors: list[tuple[str, str]] = []
        _validate(msgspec.structs.replace(self.config, namespaces=[ns]), lambda at, m: errors.append((at, m)))
        for at, message in errors:
            if at.startswith("$.namespaces[0]"):
                field = at.removeprefix("$.namespaces[0]").lstrip(".") or "namespace"
                raise HTTPProblem(400, "INVALID_ARGUMENT", f"{field}: {message}")
        if name == self.config.audit.namespace or internal_namespace(name, self.config) is not None:
            raise HTTPProblem(400, "INVALID_ARGUMENT", f"name: {name!r} is reserved for Prism's own data")
        return ns

    # -- planning -----------------------------------------------------------------

    def offers(self, state: CatalogState, leave_out: str) -> list[StoreOffer]:
        """Every store as the planner sees it, with what is placed on it (``leave_out`` not counted)."""
        placed: dict[str, list[NeedsConfig]] = {name: [] for name in self.config.stores}
        for ns in self.config.namespaces:
            if ns.needs is not None:
                placed[self.config.namespace_store(ns)].append(ns.needs)
        for name, entry in state.namespaces.items():
            if name == leave_out or name in self.yaml_names:
                continue
            ns = _ns(entry)
            if ns.needs is not None and ns.store in placed:
                placed[ns.store].append(ns.needs)
        stores = self.gateway.stores
        return [
            StoreOffer(
                name,
                stores[name].backend.name,
                stores[name].capabilities,
                self.config.store_entry(name).capacity,
                tuple(placed[name]),
            )
            for name in self.config.stores
        ]

    def decide(
        self, state: CatalogState, ns: NamespaceConfig, backend: str | None = None
    ) -> tuple[Plan, NamespaceConfig]:
        """The plan for ``ns`` (on the engine ``backend``, if given) against ``state``, and ``ns``
        on its store; PlanRefused when none fits."""
        existing = state.namespaces.get(ns.name)
        if existing is not None and existing.state != "active":
            raise HTTPProblem(
                409, "NAMESPACE_DELETING", f"namespace {ns.name!r} is being deleted; try again after"
            )
        only = ns.store
        if existing is not None:
            current = _ns(existing).store
            if only is not None and only != current:
                raise HTTPProblem(
                    409,
                    "STORE_CHANGE",
                    f"namespace {ns.name!r} lives on store {current!r}; moving it is a migration "
                    f"(POST /v1/namespaces/{ns.name}/migration)",
                )
            scoped = _ns(existing).tenant_scoped
            if scoped != ns.tenant_scoped:
                raise HTTPProblem(
                    409,
                    "TENANT_SCOPE_CHANGE",
                    f"tenant_scoped: namespace {ns.name!r} holds its data "
                    f"{'per tenant' if scoped else 'unscoped'}; it cannot change",
                )
            before = _ns(existing)
            if before.kind != ns.kind:
                raise HTTPProblem(
                    409,
                    "KIND_CHANGE",
                    f"needs.access_pattern: namespace {ns.name!r} holds "
                    f"{'events' if before.kind == 'timeseries' else 'keys and records'}; "
                    "it cannot become a "
                    f"{'timeseries' if ns.kind == 'timeseries' else 'kv'} namespace",
                )
            if (before.timeseries or TimeSeriesConfig()) != (ns.timeseries or TimeSeriesConfig()):
                raise HTTPProblem(
                    409,
                    "TIMESERIES_SETTINGS_CHANGE",
                    f"timeseries: namespace {ns.name!r} keeps the settings it was created with",
                )
            only = current
        decision = plan(
            ns.needs or NeedsConfig(),
            self.offers(state, ns.name),
            only=only,
            max_value_bytes=ns.max_value_bytes,
            backend=backend,
        )
        if decision.store is None:
            raise PlanRefused(ns.name, decision)
        return decision, msgspec.structs.replace(ns, store=decision.store)

    async def put(
        self, ns: NamespaceConfig, *, dry_run: bool, backend: str | None = None
    ) -> tuple[int, NamespacePlacement, dict[str, Any] | None, dict[str, Any] | None]:
        """Create or change ``ns`` (on a store of the engine ``backend``, if given):
        (status, answer, definition before, definition after)."""
        if dry_run:
            state, _ = await self.catalog.read()
            decision, placed = self.decide(state, ns, backend)
            before = _definition(state.namespaces.get(ns.name))
            return 200, self._answer(placed, decision, dry_run=True, created=before is None), before, None

        async def edit(state: CatalogState) -> tuple[CatalogState, Any]:
            decision, placed = self.decide(state, ns, backend)
            old = state.namespaces.get(ns.name)
            now = stamp()
            entry = CatalogEntry(
                config=msgspec.to_builtins(placed),
                created_at=now if old is None else old.created_at,
                updated_at=now,
            )
            namespaces = {**state.namespaces, ns.name: entry}
            return msgspec.structs.replace(state, namespaces=namespaces), (decision, placed, old)

        decision, placed, old = await self.catalog.change(edit)
        created = old is None
        answer = self._answer(placed, decision, dry_run=False, created=created)
        return 201 if created else 200, answer, _definition(old), msgspec.to_builtins(placed)

    def _answer(
        self, ns: NamespaceConfig, decision: Plan, *, dry_run: bool, created: bool
    ) -> NamespacePlacement:
        return NamespacePlacement(
            ns.name,
            ns.store,
            created,
            dry_run,
            ns.needs or NeedsConfig(),
            self.limits(ns),
            decision.refused,
        )

    # -- deleting -----------------------------------------------------------------

    async def delete(
        self, name: str, principal: Principal, *, purge: bool
    ) -> tuple[NamespaceDeleted, dict[str, Any] | None]:
        """Stop serving ``name`` everywhere, check (or purge) its data, and remove it; (answer, before).

        The namespace is first marked ``deleting`` (no process serves it), then after
        ``delete_settle`` its data is checked: a namespace holding data is refused (and
        served again) unless ``purge``. A purge that fails leaves it ``deleting``; deleting
        it again goes on where it stopped. A tenant-scoped namespace's data is every
        recorded tenant's part; a refusal says how many tenants hold data, never which.
        """
        if not self.may_administer(principal):
            raise HTTPProblem(
                403,
                "FORBIDDEN",
                f"{principal.subject!r} may not administer namespaces (auth.namespace_admin_roles)",
            )
        if name in self.yaml_names:
            raise HTTPProblem(
                409,
                "NAMESPACE_READ_ONLY",
                f"namespace {name!r} is declared in the config file and cannot be deleted at runtime",
            )

        async def mark(state: CatalogState) -> tuple[CatalogState, CatalogEntry]:
            entry = state.namespaces.get(name)
            if entry is None:
                raise HTTPProblem(404, "NAMESPACE_NOT_FOUND", f"there is no runtime namespace {name!r}")
            if _ns(entry).kind == "timeseries":
                raise HTTPProblem(
                    409,
                    "TIMESERIES_DELETE",
                    f"namespace {name!r} is a timeseries namespace: its events cannot be checked "
                    "or purged at runtime (its series cannot be listed, and not every TimeSeries "
                    "store can drop its slices on demand), so it cannot be deleted at runtime",
                )
            marked = msgspec.structs.replace(entry, state="deleting", updated_at=stamp())
            return msgspec.structs.replace(state, namespaces={**state.namespaces, name: marked}), entry

        entry = await self.catalog.change(mark)
        if entry.state == "active":
            # Every process stops serving it within a poll; then in-flight requests finish.
            await asyncio.sleep(self.settings.delete_settle + self.settings.poll_interval)
        defined = _ns(entry)
        assert defined.store is not None
        store = self.gateway.stores[defined.store]
        scoped = defined.tenant_scoped
        if scoped:
            tenants = await self.catalog.tenants(name)
            parts = [store.namespace(physical_namespace(name, tenant)) for tenant in tenants]
        else:
            parts = [store.namespace(name)]
        purged = 0
        if purge:
            for data in parts:
                purged += await self._purge(data)
        else:
            holding = [data for data in parts if (await data.scan(limit=1)).keys]
            if holding:
                await self._set_state(name, "active")
                held = f"data of {len(holding)} tenant(s)" if scoped else "data"
                raise HTTPProblem(
                    409,
                    "NAMESPACE_NOT_EMPTY",
                    f"namespace {name!r} holds {held}; delete it with ?purge=true to delete the data too",
                )
        if scoped:
            # Every tenant's part is empty: forget them, so a namespace created again starts with none.
            await self.catalog.forget_tenants(name)

        async def remove(state: CatalogState) -> tuple[CatalogState, None]:
            namespaces = dict(state.namespaces)
            namespaces.pop(name, None)
            return msgspec.structs.replace(state, namespaces=namespaces), None

        await self.catalog.change(remove)
        return NamespaceDeleted(name, True, purged), _definition(entry)

    async def _purge(self, data: Namespace) -> int:
        """Delete every record of ``data``; how many."""
        purged = 0
        while True:
            page = await data.scan(limit=self.settings.purge_batch)
            if not page.keys:
                return purged
            for record in page.keys:
                await data.delete_items(record)
                purged += 1

    async def _set_state(self, name: str, value: Literal["active", "deleting"]) -> None:
        async def edit(state: CatalogState) -> tuple[CatalogState, None]:
            entry = state.namespaces.get(name)
            if entry is None:
                return state, None
            changed = msgspec.structs.replace(entry, state=value, updated_at=stamp())
            return msgspec.structs.replace(state, namespaces={**state.namespaces, name: changed}), None

        await self.catalog.change(edit)
