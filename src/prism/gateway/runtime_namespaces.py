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
import uuid
from typing import Any

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


class EntryUnreadable(HTTPProblem):
    """503: an entry of the catalog that this process cannot read (written by a newer version)."""

    def __init__(self, name: str, error: Exception) -> None:
        super().__init__(
            503,
            "CATALOG_ENTRY_UNREADABLE",
            f"the catalog entry of runtime namespace {name!r} cannot be read by this process: {error}",
        )


def _known(value: Any, info: msgspec.inspect.Type) -> Any:
    """``value`` without the fields ``info`` (and the structs inside it) does not know."""
    if isinstance(info, msgspec.inspect.StructType) and isinstance(value, dict):
        fields = {f.encode_name: f.type for f in info.fields}
        return {k: _known(v, fields[k]) for k, v in value.items() if k in fields}
    if isinstance(info, msgspec.inspect.UnionType):
        structs = [t for t in info.types if isinstance(t, msgspec.inspect.StructType)]
        return _known(value, structs[0]) if len(structs) == 1 else value
    if isinstance(info, msgspec.inspect.ListType | msgspec.inspect.TupleType) and isinstance(value, list):
        return [_known(v, info.item_type) for v in value] if hasattr(info, "item_type") else value
    if isinstance(info, msgspec.inspect.DictType) and isinstance(value, dict):
        return {k: _known(v, info.value_type) for k, v in value.items()}
    return value


_NAMESPACE_TYPE = msgspec.inspect.type_info(NamespaceConfig)


def _ns(entry: CatalogEntry, name: str) -> NamespaceConfig:
    """The namespace an entry of the catalog defines, fields unknown to this version left out;
    EntryUnreadable when it still cannot be read."""
    try:
        return msgspec.convert(_known(entry.config, _NAMESPACE_TYPE), NamespaceConfig)
    except msgspec.ValidationError as exc:
        raise EntryUnreadable(name, exc) from None


def _stored(value: Any) -> Any:
    """``value`` (a struct) as the catalog keeps it: fields at their defaults left out, so an
    older version reading it meets no field it does not know unless it was set."""
    if isinstance(value, msgspec.Struct):
        out: dict[str, Any] = {}
        for field in msgspec.structs.fields(value):
            item = getattr(value, field.name)
            if field.default is not msgspec.NODEFAULT and item == field.default:
                continue
            if field.default_factory is not msgspec.NODEFAULT and item == field.default_factory():
                continue
            out[field.encode_name] = _stored(item)
        return out
    if isinstance(value, list | tuple):
        return [_stored(v) for v in value]
    if isinstance(value, dict):
        return {k: _stored(v) for k, v in value.items()}
    return msgspec.to_builtins(value)


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
                ns = _ns(entry, name)
            except EntryUnreadable as exc:
                self._warn(name, exc.detail)
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
            ns = _ns(entry, name)
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
            current = _ns(existing, ns.name).store
            if only is not None and only != current:
                raise HTTPProblem(
                    409,
                    "STORE_CHANGE",
                    f"namespace {ns.name!r} lives on store {current!r}; moving it is a migration "
                    f"(POST /v1/namespaces/{ns.name}/migration)",
                )
            scoped = _ns(existing, ns.name).tenant_scoped
            if scoped != ns.tenant_scoped:
                raise HTTPProblem(
                    409,
                    "TENANT_SCOPE_CHANGE",
                    f"tenant_scoped: namespace {ns.name!r} holds its data "
                    f"{'per tenant' if scoped else 'unscoped'}; it cannot change",
                )
            before = _ns(existing, ns.name)
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
        (status, answer, definition before, definition after); TimeoutError past
        ``server.request_timeout``."""
        async with asyncio.timeout(self.config.server.request_timeout):
            return await self._put(ns, dry_run=dry_run, backend=backend)

    async def _put(
        self, ns: NamespaceConfig, *, dry_run: bool, backend: str | None
    ) -> tuple[int, NamespacePlacement, dict[str, Any] | None, dict[str, Any] | None]:
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
                config=_stored(placed),
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

        token = uuid.uuid4().hex
        # A deletion holds its token for at most this long: past it, another may resume it.
        wait = self.settle_wait()
        held = self.delete_timeout()

        async def mark(state: CatalogState) -> tuple[CatalogState, tuple[CatalogEntry, float]]:
            entry = state.namespaces.get(name)
            if entry is None:
                raise HTTPProblem(404, "NAMESPACE_NOT_FOUND", f"there is no runtime namespace {name!r}")
            if _ns(entry, name).kind == "timeseries":
                raise HTTPProblem(
                    409,
                    "TIMESERIES_DELETE",
                    f"namespace {name!r} is a timeseries namespace: its events cannot be checked "
                    "or purged at runtime (its series cannot be listed, and not every TimeSeries "
                    "store can drop its slices on demand), so it cannot be deleted at runtime",
                )
            now = stamp()
            if entry.state == "deleting":
                if entry.deletion is not None and now - entry.updated_at < held:
                    raise HTTPProblem(
                        409,
                        "NAMESPACE_DELETING",
                        f"namespace {name!r} is being deleted by another request; try again after",
                    )
                # A deletion that stopped (failed, timed out or its process died): resume it,
                # once no process has served the namespace for ``wait`` seconds.
                remaining = max(0.0, wait - (now - entry.updated_at))
                marked = msgspec.structs.replace(entry, deletion=token)
            else:
                remaining = wait
                marked = msgspec.structs.replace(entry, state="deleting", updated_at=now, deletion=token)
            return msgspec.structs.replace(state, namespaces={**state.namespaces, name: marked}), (
                entry,
                remaining,
            )

        async with asyncio.timeout(self.config.server.request_timeout):
            entry, remaining = await self.catalog.change(mark)
        # Every process stops serving it within a poll; then requests in flight finish (each
        # within server.request_timeout).
        await asyncio.sleep(remaining)
        defined = _ns(entry, name)
        assert defined.store is not None
        store = self.gateway.stores[defined.store]
        scoped = defined.tenant_scoped
        purged = 0
        try:
            if scoped:
                async with asyncio.timeout(self.config.server.request_timeout):
                    tenants = await self.catalog.tenants(name)
                parts = [store.namespace(physical_namespace(name, tenant)) for tenant in tenants]
            else:
                parts = [store.namespace(name)]
            if purge:
                async with asyncio.timeout(self.settings.purge_timeout):
                    for data in parts:
                        purged += await self._purge(data)
            else:
                async with asyncio.timeout(self.config.server.request_timeout):
                    holding = [data for data in parts if (await data.scan(limit=1)).keys]
                if holding:
                    await self._finish(name, token, reactivate=True)
                    what = f"data of {len(holding)} tenant(s)" if scoped else "data"
                    raise HTTPProblem(
                        409,
                        "NAMESPACE_NOT_EMPTY",
                        f"namespace {name!r} holds {what}; delete it with ?purge=true to delete the data too",
                    )
            if scoped:
                # Every tenant's part is empty: forget them, so a namespace created again starts with none.
                async with asyncio.timeout(self.config.server.request_timeout):
                    await self.catalog.forget_tenants(name)
        except TimeoutError:
            await self._finish(name, token, reactivate=False)
            limit = "control.namespaces.purge_timeout" if purge else "server.request_timeout"
            raise HTTPProblem(
                503,
                "DELETE_TIMEOUT",
                f"deleting namespace {name!r} ran past {limit} after {purged} records; it stays "
                "deleting, and deleting it again goes on where it stopped",
                headers={"Retry-After": str(self.config.server.retry_after)},
            ) from None
        except (PrismError, OSError):
            await self._finish(name, token, reactivate=False)
            raise
        if not await self._finish(name, token, remove=True):
            raise HTTPProblem(
                409,
                "NAMESPACE_DELETING",
                f"namespace {name!r} was taken over by another deletion; try again after",
            )
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

    def settle_wait(self) -> float:
        """How long a delete waits once it marked a namespace ``deleting``: every process stops
        serving it within a poll, and a request in flight ends within ``server.request_timeout``."""
        settle: float = max(self.settings.delete_settle, self.config.server.request_timeout)
        return settle + float(self.settings.poll_interval)

    def delete_timeout(self) -> float:
        """The longest one delete runs: the wait, the purge, and its steps on the catalog."""
        purge: float = self.settings.purge_timeout
        return self.settle_wait() + purge + 2 * self.config.server.request_timeout

    async def _finish(self, name: str, token: str, *, reactivate: bool = False, remove: bool = False) -> bool:
        """End the deletion ``token`` of ``name``: serve it again, remove it, or (neither) leave it
        ``deleting`` for another to resume; False, changing nothing, if that deletion no longer
        holds it."""

        async def edit(state: CatalogState) -> tuple[CatalogState, bool]:
            entry = state.namespaces.get(name)
            if entry is None or entry.state != "deleting" or entry.deletion != token:
                return state, False
            namespaces = dict(state.namespaces)
            if remove:
                del namespaces[name]
            elif reactivate:
                namespaces[name] = msgspec.structs.replace(
                    entry, state="active", deletion=None, updated_at=stamp()
                )
            else:
                namespaces[name] = msgspec.structs.replace(entry, deletion=None)
            return msgspec.structs.replace(state, namespaces=namespaces), True

        async with asyncio.timeout(self.config.server.request_timeout):
            return await self.catalog.change(edit)
