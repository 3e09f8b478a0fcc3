"""The backend a migrating namespace is served through: one primary, writes shadowed to the other store.

Reads go to the primary. A write goes to the primary and, once acknowledged there,
the same result (value, etag, times; or the delete) is written to the shadow store
before the call returns. A shadow write that fails goes to the durable repair log
in the control store and is retried; it never fails the caller's write.

Every process follows the shared :class:`~prism.migration.state.MigrationState` by
polling the control store, and heartbeats the state version it has applied. While
a cutover or rollback fence is up, new writes wait (bounded) and the process
heartbeats only once its writes in flight are done, which is how the process
running the cutover knows that no write is left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
from prometheus_client import Counter, Gauge

from prism.backends.base import Backend
from prism.errors import BackendUnavailable, CursorExpired, InvalidArgument, PrismError
from prism.migration.state import (
    ControlRecords,
    MigrationState,
    Phase,
    RepairEntry,
    decode_repair,
    new_replica_id,
)
from prism.migration.sync import drain_repairs, same
from prism.model import Capabilities, Change, Item, StoredWrite, WriteOutcome

__all__ = ["BACKFILL_COPIED", "BACKFILL_RUNNING", "MigratingBackend", "MigrationSettings", "ShadowCounters"]

#: Read sampling from a generator of our own, leaving the global ``random`` state to the application.
_random = random.Random()

log = logging.getLogger("prism.migration")

SHADOW_WRITES = Counter(
    "prism_migration_shadow_writes",
    "Writes of a migrating namespace also applied to the other store, by outcome (ok, failed).",
    ["namespace", "outcome"],
)
SHADOW_READ_MISMATCHES = Counter(
    "prism_migration_shadow_read_mismatches",
    "Sampled live reads whose answer differed in the other store of a migrating namespace.",
    ["namespace"],
)
BACKFILL_COPIED = Counter(
    "prism_migration_backfill_items",
    "Items a backfill copied into the target store of a migrating namespace.",
    ["namespace"],
)
BACKFILL_RUNNING = Gauge(
    "prism_migration_backfill_running",
    "1 while this process runs the backfill of a migrating namespace.",
    ["namespace"],
)

#: Stripes of the per-key locks that keep one process's shadow writes of a key in order.
_STRIPES = 256


@dataclass(frozen=True, slots=True)
class MigrationSettings:
    """Timings and limits of a migration; every one a documented setting.

    * ``poll_interval`` (0.5 s): how often each process reads the migration state;
      a phase change is followed within about this long (well under 2 s);
    * ``heartbeat_ttl`` (5 s): how long a silent process still counts as a replica;
    * ``fence_timeout`` (2 s): how long a cutover or rollback may hold writes back;
      past it the switch is refused and writes go on to the old primary;
    * ``repair_interval`` (1 s): how often logged shadow failures are retried;
    * ``parallelism`` (16) and ``rps`` (None: unthrottled): the backfill's concurrent
      record reads and its items copied per second;
    * ``page_size`` (200): records the backfill reads per page (one checkpoint each);
    * ``max_sync_rounds`` (10): attempts to bring one address in step while it keeps changing;
    * ``verify_recheck_delay`` (0.2 s): wait before a difference found by verify is read again.
    """

    poll_interval: float = 0.5
    heartbeat_ttl: float = 5.0
    fence_timeout: float = 2.0
    repair_interval: float = 1.0
    parallelism: int = 16
    rps: float | None = None
    page_size: int = 200
    max_sync_rounds: int = 10
    verify_recheck_delay: float = 0.2

    def __post_init__(self) -> None:
        for name in ("poll_interval", "heartbeat_ttl", "fence_timeout", "repair_interval"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or isinstance(value, bool) or not value > 0:
                raise InvalidArgument(f"{name} must be a positive number of seconds, got {value!r}")
        if self.heartbeat_ttl <= self.poll_interval:
            raise InvalidArgument("heartbeat_ttl must be longer than poll_interval")
        for name in ("parallelism", "page_size", "max_sync_rounds"):
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise InvalidArgument(f"{name} must be an int >= 1, got {value!r}")
        if self.rps is not None and (isinstance(self.rps, bool) or not self.rps > 0):
            raise InvalidArgument(f"rps must be a positive number or None, got {self.rps!r}")
        if self.verify_recheck_delay < 0:
            raise InvalidArgument("verify_recheck_delay must be >= 0")


@dataclass
class ShadowCounters:
    """What this process saw: shadow writes made and failed, live reads compared."""

    writes: int = 0
    failed: int = 0
    compared: int = 0
    mismatches: int = 0


@dataclass(frozen=True, slots=True)
class _Route:
    primary: Backend
    shadow: Backend | None
    fenced: bool
    version: int


class MigratingBackend(Backend):
    """``source`` and ``target`` serving one migrating ``namespace``; other namespaces stay on ``source``."""

    name = "migrating"

    def __init__(
        self,
        source: Backend,
        target: Backend,
        control: Backend,
        namespace: str,
        settings: MigrationSettings | None = None,
        *,
        targets: Mapping[str, Backend] | None = None,
    ) -> None:
        self.source = source
        self.target = target
        #: Stores a migration may name as its target (a gateway's stores); None: ``target`` only.
        self.targets = targets
        self.control = control
        self.namespace = namespace
        self.settings = settings or MigrationSettings()
        self.records = ControlRecords(control, namespace)
        self.replica = new_replica_id()
        self.counters = ShadowCounters()
        self.capabilities = Capabilities(
            ttl=source.capabilities.ttl and target.capabilities.ttl,
            etag=source.capabilities.etag and target.capabilities.etag,
            transactions=source.capabilities.transactions and target.capabilities.transactions,
            range_reads=source.capabilities.range_reads and target.capabilities.range_reads,
            prefix_scan=source.capabilities.prefix_scan and target.capabilities.prefix_scan,
            consistent_reads=source.capabilities.consistent_reads and target.capabilities.consistent_reads,
            max_value_bytes=min(source.capabilities.max_value_bytes, target.capabilities.max_value_bytes),
            multi_process=source.capabilities.multi_process and target.capabilities.multi_process,
            token_buckets=source.capabilities.token_buckets,
            restore=False,
            # The feed is the primary's: a namespace keeps one only if both stores do.
            watch=source.capabilities.watch and target.capabilities.watch,
            watch_expiry=source.capabilities.watch_expiry and target.capabilities.watch_expiry,
        )
        self.state: MigrationState | None = None
        self.state_etag: str | None = None
        self.last_error: str | None = None
        self._route = _Route(source, None, False, 0)
        self._changed = asyncio.Event()
        self._inflight = 0
        self._drained = asyncio.Event()
        self._drained.set()
        self._locks = [asyncio.Lock() for _ in range(_STRIPES)]
        self._follower: asyncio.Task[None] | None = None
        self._refresh_lock = asyncio.Lock()
        self._next_repair = 0.0
        self._unlogged: set[RepairEntry] = set()
        self._background: set[asyncio.Task[Any]] = set()
        self._applied: tuple[str, int] | None = None
        self._next_heartbeat = 0.0

    @classmethod
    def from_url(cls, url: str, **options: Any) -> Backend:
        raise InvalidArgument("a migrating backend is built by prism.migrate, not from a URL")

    # -- lifecycle -----------------------------------------------------------------

    async def open(self) -> None:
        # Registered before the first look at the state: a process that may write without
        # shadowing is always known, and counts as behind until it has applied the state.
        await self.records.heartbeat(self.replica, "", 0, self.settings.heartbeat_ttl)
        await self.refresh()
        self._follower = asyncio.create_task(self._follow(), name=f"prism-migration-{self.namespace}")

    async def close(self) -> None:
        task, self._follower = self._follower, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            with contextlib.suppress(PrismError):
                await self.records.leave(self.replica)
        for t in list(self._background):
            t.cancel()

    async def health(self) -> dict[str, Any]:
        return await self._route.primary.health()

    # -- following the shared state -------------------------------------------------

    @property
    def primary(self) -> Backend:
        return self._route.primary

    async def _follow(self) -> None:
        while True:
            await asyncio.sleep(self.settings.poll_interval)
            try:
                await self.refresh()
                if time.monotonic() >= self._next_repair:
                    self._next_repair = time.monotonic() + self.settings.repair_interval
                    await self.repair()
            except PrismError as exc:
                self.last_error = str(exc)
                log.warning("migration of %s: %s", self.namespace, exc)

    async def refresh(self) -> None:
        """Read the shared state, apply it, and heartbeat the version applied."""
        async with self._refresh_lock:
            found = await self.records.read_state()
            state, etag = found if found is not None else (None, None)
            self.state, self.state_etag = state, etag
            if (
                state is not None
                and state.fence is not None
                and time.time() > state.fence.deadline + (self.settings.poll_interval * 2)
            ):
                await self._lift_stale_fence(state, etag)
                return
            self._apply(state)
            if state is None:
                await self._heartbeat("", 0)
                return
            if self._route.fenced:
                # The process running the switch waits for this heartbeat: only once no write is in flight.
                remaining = state.fence.deadline - time.time() if state.fence else 0.0
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._drained.wait(), max(remaining, 0.0))
                if not self._drained.is_set():
                    return
            await self._heartbeat(state.id, state.version)

    async def _heartbeat(self, migration: str, version: int) -> None:
        # At once when a new state was applied, else often enough to stay within the ttl.
        now = time.monotonic()
        if self._applied == (migration, version) and now < self._next_heartbeat:
            return
        await self.records.heartbeat(self.replica, migration, version, self.settings.heartbeat_ttl)
        self._applied = (migration, version)
        self._next_heartbeat = now + self.settings.heartbeat_ttl / 3

    async def _lift_stale_fence(self, state: MigrationState, etag: str | None) -> None:
        # The process that raised the fence is gone (or too slow): writes go on to the old primary.
        assert state.fence is not None and etag is not None
        state.phase = state.fence.resume
        state.error = "the switch did not finish before its fence deadline; nothing was switched"
        state.fence = None
        await self.records.replace_state(state, etag)
        found = await self.records.read_state()
        self.state, self.state_etag = found if found is not None else (None, None)
        self._apply(self.state)

    def _apply(self, state: MigrationState | None) -> None:
        if state is not None and self.targets is not None:
            target = self.targets.get(state.target)
            if target is None:
                self.last_error = f"the migration's target store {state.target!r} is not configured here"
                state = None
            else:
                self.target = target
        if state is None or state.phase == Phase.ABORTED:
            route = _Route(self.source, None, False, 0)
        elif state.phase == Phase.COMPLETE:
            route = _Route(self.target, None, False, state.version)
        else:
            primary, shadow = (
                (self.target, self.source) if state.target_primary else (self.source, self.target)
            )
            route = _Route(primary, shadow, state.fence is not None, state.version)
        if route != self._route:
            self._route = route
            self._changed.set()
            self._changed = asyncio.Event()

    # -- the write gate ----------------------------------------------------------------

    async def _enter(self) -> _Route:
        route = self._route
        if route.fenced:
            limit = time.monotonic() + self.settings.fence_timeout + self.settings.poll_interval * 4
            while self._route.fenced:
                left = limit - time.monotonic()
                if left <= 0:
                    raise BackendUnavailable(
                        f"namespace {self.namespace!r} is fenced for a migration switch that did not finish"
                    )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), min(left, self.settings.poll_interval))
                if self._route.fenced:
                    await self.refresh()
            route = self._route
        self._inflight += 1
        self._drained.clear()
        return route

    def _leave(self) -> None:
        self._inflight -= 1
        if self._inflight == 0:
            self._drained.set()

    def _stripes(self, ns: str, addresses: Sequence[tuple[str, str]]) -> list[asyncio.Lock]:
        return [self._locks[i] for i in sorted({hash((ns, r, k)) % _STRIPES for r, k in addresses})]

    async def _shadowed(self, ns: str, ops: Sequence[StoredWrite], atomic: bool) -> list[WriteOutcome]:
        route = await self._enter()
        try:
            if route.shadow is None:
                return await (route.primary.transact(ns, ops) if atomic else route.primary.write(ns, ops))
            locks = self._stripes(ns, [(op.record, op.key) for op in ops])
            for lock in locks:
                await lock.acquire()
            try:
                outcomes = await (route.primary.transact(ns, ops) if atomic else route.primary.write(ns, ops))
                applied = [op for op, o in zip(ops, outcomes, strict=True) if o.ok]
                if applied:
                    await self._shadow(route.shadow, ns, applied)
                return outcomes
            finally:
                for lock in locks:
                    lock.release()
        finally:
            self._leave()

    async def _shadow(self, shadow: Backend, ns: str, ops: Sequence[StoredWrite]) -> None:
        copies = [
            StoredWrite(op.record, op.key, None)
            if op.value is None
            else StoredWrite(
                op.record, op.key, op.value, op.etag, op.expires_at, op.content_type, op.updated_at
            )
            for op in ops
        ]
        self.counters.writes += len(copies)
        try:
            outcomes = await shadow.write(ns, copies)
            failed = [RepairEntry(c.record, c.key) for c, o in zip(copies, outcomes, strict=True) if not o.ok]
            error: str | None = next((str(o.error) for o in outcomes if o.error is not None), None)
        except PrismError as exc:
            failed = [RepairEntry(c.record, c.key) for c in copies]
            error = str(exc)
        if len(failed) < len(copies):
            SHADOW_WRITES.labels(ns, "ok").inc(len(copies) - len(failed))
        if failed:
            await self._log_repairs(failed, error)

    async def _log_repairs(self, entries: Sequence[RepairEntry], error: str | None) -> None:
        self.counters.failed += len(entries)
        SHADOW_WRITES.labels(self.namespace, "failed").inc(len(entries))
        self.last_error = f"shadow write failed: {error}"
        try:
            await self.records.add_repairs(entries)
        except PrismError as exc:
            # The control store is down too: keep them here and log them when it is back.
            self._unlogged.update(entries)
            self.last_error = f"shadow write failed and the repair log is unreachable: {exc}"

    async def repair(self) -> int:
        """Retry logged shadow failures now; the number still pending."""
        if self._unlogged:
            entries = list(self._unlogged)
            await self.records.add_repairs(entries)
            self._unlogged.difference_update(entries)
        route = self._route
        items = await self.records.repair_items()
        if route.shadow is None or route.fenced:
            return len(items)
        done: list[tuple[str, str]] = []
        for item in items:
            entry = decode_repair(item.value)
            try:
                unresolved = await drain_repairs(
                    route.primary,
                    route.shadow,
                    self.namespace,
                    [entry],
                    max_rounds=self.settings.max_sync_rounds,
                )
            except PrismError as exc:
                self.last_error = f"repair failed: {exc}"
                break
            if not unresolved:
                done.append((item.key, item.etag))
        await self.records.remove_repairs(done)
        return len(items) - len(done)

    # -- the Backend contract --------------------------------------------------------------

    def _for(self, ns: str) -> Backend:
        return self._route.primary if ns == self.namespace else self.source

    async def get(self, ns: str, record: str, key: str, *, consistent: bool = False) -> Item | None:
        primary = self._for(ns)
        item = await primary.get(ns, record, key, consistent=consistent)
        state = self.state
        if ns == self.namespace and state is not None and state.shadow_read_sample > 0:
            shadow = self._route.shadow
            if shadow is not None and _random.random() < state.shadow_read_sample:
                task = asyncio.create_task(self._compare(shadow, ns, record, key, item))
                self._background.add(task)
                task.add_done_callback(self._background.discard)
        return item

    async def _compare(self, shadow: Backend, ns: str, record: str, key: str, seen: Item | None) -> None:
        with contextlib.suppress(PrismError):
            other = await shadow.get(ns, record, key)
            self.counters.compared += 1
            if not same(seen, other):
                self.counters.mismatches += 1
                SHADOW_READ_MISMATCHES.labels(ns).inc()

    async def get_many(
        self, ns: str, addresses: Sequence[tuple[str, str]], *, consistent: bool = False
    ) -> list[Item | None]:
        return await self._for(ns).get_many(ns, addresses, consistent=consistent)

    async def write(self, ns: str, ops: Sequence[StoredWrite]) -> list[WriteOutcome]:
        if ns != self.namespace:
            return await self.source.write(ns, ops)
        return await self._shadowed(ns, ops, atomic=False)

    async def transact(self, ns: str, ops: Sequence[StoredWrite]) -> list[WriteOutcome]:
        if ns != self.namespace:
            return await self.source.transact(ns, ops)
        return await self._shadowed(ns, ops, atomic=True)

    async def take_token(self, bucket: str, rate: float, burst: float) -> float:
        return await self.source.take_token(bucket, rate, burst)

    async def scan(self, ns: str, prefix: str, after: str | None, limit: int) -> list[str]:
        return await self._for(ns).scan(ns, prefix, after, limit)

    # -- the change feed: the primary store's, its cursors naming that store ----------------

    def _feed_tag(self, backend: Backend) -> str:
        """The name of ``backend`` in cursors (a store name cannot hold ``|``)."""
        for name, candidate in (self.targets or {}).items():
            if candidate is backend:
                return name
        return "source" if backend is self.source else "target"

    def _inner_cursor(self, backend: Backend, after: str | None) -> str | None:
        """The cursor of ``backend`` in ``after``; CursorExpired when it is another store's."""
        if after is None:
            return None
        tag, sep, inner = after.partition("|")
        if not sep:
            raise InvalidArgument(f"not a change-feed cursor: {after!r}")
        if tag != self._feed_tag(backend):
            raise CursorExpired(
                f"the cursor is of store {tag!r}, and namespace {self.namespace!r} is now served by "
                f"{self._feed_tag(backend)!r}: watch again from a fresh cursor"
            )
        return inner

    async def read_changes(
        self, ns: str, prefix: str, after: str | None, limit: int
    ) -> tuple[list[Change], str]:
        primary = self._for(ns)
        tag = self._feed_tag(primary)
        changes, cursor = await primary.read_changes(ns, prefix, self._inner_cursor(primary, after), limit)
        tagged = [msgspec.structs.replace(c, cursor=f"{tag}|{c.cursor}") for c in changes]
        return tagged, f"{tag}|{cursor}"

    async def wait_for_changes(self, ns: str, seconds: float, after: str | None = None) -> None:
        primary = self._for(ns)
        await primary.wait_for_changes(ns, seconds, self._inner_cursor(primary, after))

    def set_feed_retention(self, ns: str, retention: float | None, max_changes: int | None) -> None:
        primary = self._for(ns)
        primary.set_feed_retention(ns, retention, max_changes)
        for other in (self.source, self.target):
            if other is not primary and other.capabilities.watch:
                other.set_feed_retention(ns, retention, max_changes)

    def feed_limits(self, ns: str) -> tuple[float, int]:
        return self._for(ns).feed_limits(ns)

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
        return await self._for(ns).get_range(ns, record, start, end, after, limit, consistent=consistent)

    async def delete_range(self, ns: str, record: str, start: str | None, end: str | None) -> int:
        if ns != self.namespace:
            return await self.source.delete_range(ns, record, start, end)
        route = await self._enter()
        try:
            if route.shadow is None:
                return await route.primary.delete_range(ns, record, start, end)
            lock = self._locks[hash((ns, record, "")) % _STRIPES]
            async with lock:
                count = await route.primary.delete_range(ns, record, start, end)
                self.counters.writes += 1
                try:
                    await route.shadow.delete_range(ns, record, start, end)
                except PrismError as exc:
                    await self._log_repairs([RepairEntry(record, None)], str(exc))
                return count
        finally:
            self._leave()
