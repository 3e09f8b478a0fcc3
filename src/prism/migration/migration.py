"""One namespace's migration from a source store to a target store, phase by phase.

:class:`Migration` drives the phases (start, backfill, verify, cutover, rollback,
complete, abort) and serves the namespace through a :class:`MigratingBackend`, so
writes made through :attr:`Migration.store` are shadowed. Several processes may
open the same migration (same stores, same control store): each follows the shared
state, and any one of them may run a phase.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from types import TracebackType
from typing import Any

from prism.backends import Backend, open_backend
from prism.backends.urls import mask_url
from prism.errors import PrismError
from prism.kv.namespace import Namespace
from prism.kv.store import Store
from prism.kv.validation import check_id
from prism.migration.router import BACKFILL_COPIED, BACKFILL_RUNNING, MigratingBackend, MigrationSettings
from prism.migration.state import (
    FINISHED,
    BackfillProgress,
    Fence,
    MigrationState,
    Phase,
    RepairEntry,
    VerifyReport,
)
from prism.migration.sync import Pacer, copy_items, drain_repairs, record_items, verify_namespace

__all__ = ["Migration", "MigrationRefused", "allowed_actions", "migrate"]


class MigrationRefused(PrismError):
    """The migration's phase does not allow the action, or a switch could not prove the stores in step.

    The message says why; nothing was switched.
    """

    code = "MIGRATION_REFUSED"


#: Phases from which each action may run.
_ALLOWED = {
    "backfill": {Phase.SHADOWING, Phase.BACKFILLING, Phase.BACKFILLED, Phase.VERIFIED},
    "verify": {Phase.BACKFILLED, Phase.VERIFYING, Phase.VERIFIED, Phase.CUT_OVER},
    "cutover": {Phase.VERIFIED},
    "cutover_forced": {Phase.SHADOWING, Phase.BACKFILLING, Phase.BACKFILLED, Phase.VERIFYING, Phase.VERIFIED},
    "rollback": {Phase.CUT_OVER},
    "complete": {Phase.CUT_OVER},
    "abort": {Phase.SHADOWING, Phase.BACKFILLING, Phase.BACKFILLED, Phase.VERIFYING, Phase.VERIFIED},
}

ProgressCallback = Callable[[BackfillProgress], None]


class Migration:
    """The migration of ``namespace`` from ``source`` to ``target``; open it with ``async with``."""

    def __init__(
        self,
        source: Backend,
        target: Backend,
        namespace: str,
        *,
        control: Backend | None = None,
        source_name: str = "source",
        target_name: str = "target",
        settings: MigrationSettings | None = None,
    ) -> None:
        check_id(namespace, "namespace")
        self.namespace = namespace
        self.source_name = source_name
        self.target_name = target_name
        self.settings = settings or MigrationSettings()
        self._own = [b for b in (source, target, control) if b is not None]
        self.router = MigratingBackend(source, target, control or source, namespace, self.settings)
        self.records = self.router.records
        self.store = Store(self.router)
        self._opened: list[Backend] = []

    @classmethod
    def attached(
        cls, router: MigratingBackend, store: Store, source_name: str, target_name: str
    ) -> Migration:
        """A migration driven through a router (and its open Store) owned by someone else: the gateway."""
        migration = cls.__new__(cls)
        migration.namespace = router.namespace
        migration.source_name = source_name
        migration.target_name = target_name
        migration.settings = router.settings
        migration._own = []
        migration.router = router
        migration.records = router.records
        migration.store = store
        migration._opened = []
        return migration

    # -- lifecycle ----------------------------------------------------------------

    async def open(self) -> Migration:
        try:
            for backend in self._own:
                await backend.open()
                self._opened.append(backend)
            await self.store.open()
        except BaseException:
            await self.close()
            raise
        return self

    async def close(self) -> None:
        """Stop following the state and close the stores; safe to call twice."""
        await self.store.close()
        while self._opened:
            await self._opened.pop().close()

    async def __aenter__(self) -> Migration:
        return await self.open()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def namespace_handle(self) -> Namespace:
        """The migrating namespace, through which writes are shadowed."""
        return self.store.namespace(self.namespace)

    # -- state helpers --------------------------------------------------------------

    async def _current(self) -> tuple[MigrationState, str]:
        found = await self.records.read_state()
        if found is None:
            raise MigrationRefused(f"no migration of namespace {self.namespace!r} was started")
        return found

    async def _transition(
        self, action: str, change: Callable[[MigrationState], None], *, allowed: set[Phase] | None = None
    ) -> MigrationState:
        """Apply ``change`` to the state if its phase allows ``action`` (retrying a concurrent change)."""
        while True:
            state, etag = await self._current()
            phases = _ALLOWED[action] if allowed is None else allowed
            if state.phase not in phases:
                raise MigrationRefused(_refusal(action, state))
            change(state)
            if await self.records.replace_state(state, etag) is not None:
                await self.router.refresh()
                return state

    async def _await_replicas(
        self, state: MigrationState, deadline: float, *, version: int | None = None
    ) -> list[str]:
        """Wait until every live process has applied ``version`` of ``state`` (default: its current one).

        The ones that have not, at the deadline. A process that applied any version of
        this migration shadows writes; a switch needs the fenced version itself.
        """
        want = state.version if version is None else version
        while True:
            replicas = await self.records.replicas()
            behind = sorted(r for r, (mid, v) in replicas.items() if mid != state.id or v < want)
            if not behind or time.time() >= deadline:
                return behind
            await asyncio.sleep(min(0.05, self.settings.poll_interval / 4))

    # -- actions ----------------------------------------------------------------------------

    async def start(self, *, shadow_read_sample: float = 0.0) -> dict[str, Any]:
        """Begin shadowing: from now on every acknowledged write also reaches the target."""
        if not 0.0 <= shadow_read_sample <= 1.0:
            from prism.errors import InvalidArgument

            raise InvalidArgument(f"shadow_read_sample must be between 0 and 1, got {shadow_read_sample!r}")
        found = await self.records.read_state()
        if found is not None and found[0].phase not in FINISHED:
            raise MigrationRefused(
                f"a migration of namespace {self.namespace!r} is already running (phase {found[0].phase})"
            )
        now = time.time()
        state = MigrationState(
            self.namespace,
            self.source_name,
            self.target_name,
            id=uuid.uuid4().hex,
            shadow_read_sample=shadow_read_sample,
            started_at=now,
            updated_at=now,
        )
        await self.records.clear_progress()
        await self.records.clear_repairs()
        if await self.records.create_state(state, None if found is None else found[1]) is None:
            raise MigrationRefused(f"another migration of namespace {self.namespace!r} started meanwhile")
        await self.router.refresh()
        return await self.status()

    async def backfill(
        self,
        *,
        rps: float | None = None,
        parallelism: int | None = None,
        progress: ProgressCallback | None = None,
    ) -> dict[str, Any]:
        """Copy every record of the source into the target, resuming from the last checkpoint.

        Waits until every live process shadows writes (else refuses), copies pages of
        records at most ``rps`` items a second with ``parallelism`` concurrent record
        reads, and checkpoints after each page. A target error stops it: the error is
        in the status and raised; running it again resumes.
        """
        settings = self.settings
        rate = settings.rps if rps is None else rps
        workers = settings.parallelism if parallelism is None else parallelism
        MigrationSettings(rps=rate, parallelism=workers)  # validates both

        state = await self._transition("backfill", _begin_backfill)
        behind = await self._await_replicas(
            state, time.time() + settings.fence_timeout + settings.poll_interval * 2, version=1
        )
        if behind:
            await self._fail_backfill(
                f"processes {', '.join(behind)} do not shadow writes yet; run backfill again"
            )
        checkpoint = await self.records.read_progress()
        if checkpoint.done:
            # The last backfill finished: this one starts over (and skips what is already there).
            checkpoint = BackfillProgress()
        pacer = Pacer(rate)
        semaphore = asyncio.Semaphore(workers)
        src, dst, ns = self.router.source, self.router.target, self.namespace

        async def read(record: str) -> list[tuple[str, Any]]:
            async with semaphore:
                return [(record, item) for item in await record_items(src, ns, record)]

        running = BACKFILL_RUNNING.labels(ns)
        running.set(1)
        try:
            while True:
                ids = await src.scan(ns, "", checkpoint.cursor, settings.page_size)
                if not ids:
                    break
                if src.runs_inline:
                    # Its calls never wait on I/O: running them one after another is fastest.
                    batches = [[(r, i) for i in await record_items(src, ns, r)] for r in ids]
                else:
                    batches = await asyncio.gather(*(read(r) for r in ids))
                items = [pair for batch in batches for pair in batch]
                await pacer.take(len(items))
                if items:
                    copied, skipped, unresolved = await copy_items(
                        src, dst, ns, items, max_rounds=settings.max_sync_rounds
                    )
                    if unresolved:
                        # Still changing after every round: logged, so the repair loop settles them.
                        await self.records.add_repairs([RepairEntry(r, k) for r, k in unresolved])
                    checkpoint.copied += copied
                    BACKFILL_COPIED.labels(ns).inc(copied)
                    checkpoint.skipped += skipped
                checkpoint.cursor = ids[-1]
                await self.records.save_progress(checkpoint)
                if progress is not None:
                    progress(checkpoint)
                if len(ids) < settings.page_size:
                    break
        except PrismError as exc:
            await self._fail_backfill(f"backfill stopped: {exc}", exc)
        finally:
            running.set(0)
        checkpoint.done = True
        await self.records.save_progress(checkpoint)

        def finish(state: MigrationState) -> None:
            state.phase = Phase.BACKFILLED
            state.backfill_done = True
            state.error = None

        await self._transition("backfill", finish, allowed={Phase.BACKFILLING})
        return await self.status()

    async def begin(self, action: str) -> dict[str, Any]:
        """Enter the running phase of ``backfill`` or ``verify`` now, before the work itself.

        The gateway answers with this status and then runs the work in the background,
        so a client following the status never sees the phase from before.
        """
        if action not in ("backfill", "verify"):
            raise MigrationRefused(f"{action} has no running phase to begin")
        await self._transition(action, _begin_backfill if action == "backfill" else _begin_verify)
        return await self.status()

    async def _fail_backfill(self, reason: str, cause: PrismError | None = None) -> None:
        def record(state: MigrationState) -> None:
            state.error = reason

        await self._transition("backfill", record, allowed={Phase.BACKFILLING})
        raise MigrationRefused(reason) from cause

    async def verify(self) -> dict[str, Any]:
        """Compare every item in both stores; ``verified`` when nothing is missing, extra or different."""

        await self._transition("verify", _begin_verify)
        report = await verify_namespace(
            self.router.source,
            self.router.target,
            self.namespace,
            page=self.settings.page_size,
            recheck_delay=self.settings.verify_recheck_delay,
        )
        clean = report.missing == report.extra == report.different == 0

        def finish(state: MigrationState) -> None:
            state.verify = report
            if state.phase == Phase.VERIFYING:
                state.phase = Phase.VERIFIED if clean else Phase.BACKFILLED
            state.error = (
                None
                if clean
                else f"verify found {report.missing} missing, {report.extra} extra and {report.different} "
                "different items; run backfill again"
            )

        await self._transition("verify", finish, allowed={Phase.VERIFYING, Phase.CUT_OVER})
        return await self.status()

    async def cutover(self, *, force: bool = False) -> dict[str, Any]:
        """Make the target the primary, after bringing it in step behind a bounded write fence."""
        return await self._switch(to_target=True, action="cutover_forced" if force else "cutover")

    async def rollback(self) -> dict[str, Any]:
        """Make the source the primary again (before ``complete``); the target keeps getting shadow writes."""
        return await self._switch(to_target=False, action="rollback")

    async def _switch(self, *, to_target: bool, action: str) -> dict[str, Any]:
        settings = self.settings

        def fence(state: MigrationState) -> None:
            if to_target and not state.backfill_done:
                raise MigrationRefused(
                    "cutover needs a finished backfill: the target does not hold every record"
                )
            state.fence = Fence(time.time() + settings.fence_timeout, to_target, state.phase)
            state.phase = Phase.CUTTING_OVER
            state.error = None

        state = await self._transition(action, fence)
        assert state.fence is not None
        deadline = state.fence.deadline
        behind = await self._await_replicas(state, deadline)
        if behind:
            return await self._undo(
                f"processes {', '.join(behind)} did not pause their writes within {settings.fence_timeout:g}s"
            )
        # No write is in flight anywhere: bring the new primary in step with the old one.
        old, new = (
            (self.router.source, self.router.target)
            if to_target
            else (self.router.target, self.router.source)
        )
        try:
            pending = await self.records.repairs()
            unresolved = await drain_repairs(
                old, new, self.namespace, [e for e, _ in pending], max_rounds=settings.max_sync_rounds
            )
        except PrismError as exc:
            return await self._undo(f"the shadow store could not be brought in step: {exc}")
        if unresolved:
            return await self._undo(f"{len(unresolved)} logged shadow writes could not be repaired")
        if time.time() >= deadline:
            return await self._undo(
                f"bringing the stores in step took longer than {settings.fence_timeout:g}s"
            )
        await self.records.clear_repairs()
        current = await self.records.read_state()
        if current is None or current[0].phase != Phase.CUTTING_OVER or current[0].id != state.id:
            raise MigrationRefused("the fence was lifted before the switch finished; nothing was switched")
        switched, etag = current
        switched.fence = None
        switched.target_primary = to_target
        switched.phase = Phase.CUT_OVER if to_target else Phase.VERIFIED
        if await self.records.replace_state(switched, etag) is None:
            raise MigrationRefused(
                "the fence deadline passed before the switch finished; nothing was switched"
            )
        await self.router.refresh()
        return await self.status()

    async def _undo(self, reason: str) -> dict[str, Any]:
        found = await self.records.read_state()
        if found is not None and found[0].phase == Phase.CUTTING_OVER and found[0].fence is not None:
            state, etag = found
            assert state.fence is not None
            state.phase = state.fence.resume
            state.fence = None
            state.error = reason
            await self.records.replace_state(state, etag)
        await self.router.refresh()
        raise MigrationRefused(reason)

    async def complete(self) -> dict[str, Any]:
        """End the migration after cutover: the source leaves the namespace (its data stays)."""

        def finish(state: MigrationState) -> None:
            state.phase = Phase.COMPLETE
            state.error = None

        await self._transition("complete", finish)
        await self.records.clear_repairs()
        return await self.status()

    async def abort(self) -> dict[str, Any]:
        """End the migration before cutover; the source stays primary and the target keeps what it got."""

        def finish(state: MigrationState) -> None:
            state.phase = Phase.ABORTED
            state.error = None

        await self._transition("abort", finish)
        await self.records.clear_repairs()
        return await self.status()

    async def status(self) -> dict[str, Any]:
        """Phase, counts and last error, in the gateway API's shape."""
        state, _ = await self._current()
        progress = await self.records.read_progress()
        counters = self.router.counters
        return {
            "namespace": state.namespace,
            "from": state.source,
            "to": state.target,
            "phase": str(state.phase),
            "primary": state.target
            if state.target_primary or state.phase == Phase.COMPLETE
            else state.source,
            "backfill": {"copied": progress.copied, "skipped": progress.skipped, "done": state.backfill_done},
            "verify": {
                "checked": state.verify.checked,
                "missing": state.verify.missing,
                "extra": state.verify.extra,
                "different": state.verify.different,
                "done": state.verify.done,
                "samples": list(state.verify.samples),
            },
            "shadow": {
                "writes": counters.writes,
                "failed": counters.failed,
                "pending": await self.records.count_repairs(),
            },
            "shadow_reads": {"compared": counters.compared, "mismatches": counters.mismatches},
            "error": state.error or self.router.last_error,
        }


def _begin_backfill(state: MigrationState) -> None:
    state.phase = Phase.BACKFILLING
    state.backfill_done = False
    state.error = None


def _begin_verify(state: MigrationState) -> None:
    if not state.backfill_done:
        raise MigrationRefused("verify needs a finished backfill first")
    if state.phase != Phase.CUT_OVER:
        state.phase = Phase.VERIFYING
    state.verify = VerifyReport()
    state.error = None


def allowed_actions(phase: str, *, backfill_done: bool = True) -> list[str]:
    """The actions a migration in ``phase`` accepts (a forced cutover as ``cutover_forced``)."""
    found = [action for action, phases in _ALLOWED.items() if phase in phases]
    if not backfill_done and "verify" in found:
        found.remove("verify")
    return found


def _refusal(action: str, state: MigrationState) -> str:
    name = action.removesuffix("_forced")
    if name == "cutover" and state.phase in _ALLOWED["cutover_forced"]:
        return f"cutover needs a clean verify first (phase is {state.phase}); force it to cut over anyway"
    if name == "abort" and state.phase == Phase.CUT_OVER:
        return "the migration is cut over: roll back first, or complete it"
    return f"{name} is not allowed in phase {state.phase}"


def migrate(
    source_url: str,
    target_url: str,
    namespace: str,
    *,
    control_url: str | None = None,
    settings: MigrationSettings | None = None,
    source_options: dict[str, Any] | None = None,
    target_options: dict[str, Any] | None = None,
) -> Migration:
    """A migration of ``namespace`` from the store at ``source_url`` to the one at ``target_url``.

    Not yet open: ``async with prism.migrate(src, dst, "users") as m``. Its state lives
    in the store at ``control_url`` (default: the source), which every process taking
    part must share. Write through ``m.namespace_handle()`` (or ``m.store``) so writes
    are shadowed while the migration runs.
    """
    source = open_backend(source_url, **(source_options or {}))
    target = open_backend(target_url, **(target_options or {}))
    control = None if control_url is None else open_backend(control_url)
    for backend, url in ((target, target_url),):
        if not backend.capabilities.restore:
            raise MigrationRefused(
                f"the store at {url} cannot keep etags of copied items (capability restore)"
            )
    return Migration(
        source,
        target,
        namespace,
        control=control,
        settings=settings,
        source_name=mask_url(source_url),
        target_name=mask_url(target_url),
    )
