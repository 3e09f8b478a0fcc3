"""What every process of a migration agrees on, kept in the control store.

One namespace of the control backend (:data:`CONTROL_NAMESPACE`) holds, per migrating
namespace ``NS``:

* record ``state:NS`` -- the :class:`MigrationState` document, changed only by a
  conditional write on its etag, so two processes racing on a phase change cannot
  both win (a cutover and the fence deadline's undo, say);
* record ``checkpoint:NS`` -- the backfill's progress: the last record id copied;
* record ``repair:NS`` -- the repair log: one item per address whose shadow write
  failed, removed once the address is brought in step;
* record ``replica:NS`` -- one item per process serving the namespace, with the state
  version it has applied, written with a short ttl so a dead process drops out.
"""

from __future__ import annotations

import enum
import hashlib
import time
import uuid
from collections.abc import Sequence
from typing import Any

import msgspec

from prism.backends.base import Backend
from prism.kv.validation import new_etag
from prism.model import Item, StoredWrite

__all__ = [
    "CONTROL_NAMESPACE",
    "BackfillProgress",
    "ControlRecords",
    "Fence",
    "MigrationState",
    "Phase",
    "RepairEntry",
    "VerifyReport",
]

#: The control backend's namespace for migration state.
CONTROL_NAMESPACE = "prism.migration"
#: Most items one control read pages through.
_PAGE = 1000


class Phase(enum.StrEnum):
    """Where a migration stands; see docs/migration.md for the transitions."""

    SHADOWING = "shadowing"
    BACKFILLING = "backfilling"
    BACKFILLED = "backfilled"
    VERIFYING = "verifying"
    VERIFIED = "verified"
    CUTTING_OVER = "cutting_over"
    CUT_OVER = "cut_over"
    COMPLETE = "complete"
    ABORTED = "aborted"


#: Phases in which the migration is over: a new one may start.
FINISHED = frozenset({Phase.COMPLETE, Phase.ABORTED})


class Fence(msgspec.Struct, frozen=True):
    """Writes of every process wait while a fence is up; ``deadline`` is epoch seconds."""

    deadline: float
    #: True when the fence switches to the target (cutover), False back to the source (rollback).
    to_target: bool
    #: The phase to return to when the fence is lifted without switching.
    resume: str


class VerifyReport(msgspec.Struct):
    checked: int = 0
    missing: int = 0
    extra: int = 0
    different: int = 0
    done: bool = False
    #: A few of the keys that differ, as "record/key", for the operator.
    samples: list[str] = msgspec.field(default_factory=list)


class MigrationState(msgspec.Struct):
    """The migration of ``namespace`` from store ``source`` to store ``target``."""

    namespace: str
    source: str
    target: str
    #: Unique per migration: heartbeats of an earlier migration of the namespace never count.
    id: str = ""
    phase: str = Phase.SHADOWING
    #: True once the target serves reads and writes (after cutover).
    target_primary: bool = False
    version: int = 1
    backfill_done: bool = False
    verify: VerifyReport = msgspec.field(default_factory=VerifyReport)
    fence: Fence | None = None
    error: str | None = None
    shadow_read_sample: float = 0.0
    started_at: float = 0.0
    updated_at: float = 0.0

    @property
    def shadowing(self) -> bool:
        """True while writes also go to the other store."""
        return self.phase not in FINISHED


class BackfillProgress(msgspec.Struct):
    cursor: str | None = None
    copied: int = 0
    skipped: int = 0
    done: bool = False


class RepairEntry(msgspec.Struct, frozen=True):
    """An address whose copy in the shadow store may be stale; ``key`` None means the whole record."""

    record: str
    key: str | None


_state_codec = msgspec.json.Decoder(MigrationState)
_progress_codec = msgspec.json.Decoder(BackfillProgress)
_repair_codec = msgspec.json.Decoder(RepairEntry)
_encode = msgspec.json.Encoder().encode


def _entry_key(entry: RepairEntry) -> str:
    raw = msgspec.json.encode((entry.record, entry.key))
    return hashlib.sha256(raw).hexdigest()


class ControlRecords:
    """Reads and conditional writes of one namespace's migration records in the control backend."""

    def __init__(self, backend: Backend, namespace: str) -> None:
        self.backend = backend
        self.namespace = namespace
        self._state_id = f"state:{namespace}"
        self._checkpoint_id = f"checkpoint:{namespace}"
        self._repair_id = f"repair:{namespace}"
        self._replica_id = f"replica:{namespace}"

    async def _put(
        self,
        record: str,
        value: bytes,
        *,
        if_match: str | None = None,
        if_absent: bool = False,
        ttl: float | None = None,
    ) -> str | None:
        now = time.time()
        etag = new_etag()
        op = StoredWrite(
            record,
            "",
            value,
            etag,
            None if ttl is None else now + ttl,
            "application/json",
            now,
            if_match,
            if_absent,
        )
        (outcome,) = await self.backend.write(CONTROL_NAMESPACE, [op])
        if outcome.error is not None:
            raise outcome.error
        return etag if outcome.ok else None

    # -- the state document ----------------------------------------------------------

    async def read_state(self) -> tuple[MigrationState, str] | None:
        """The state and its etag, or None when no migration was ever started."""
        item = await self.backend.get(CONTROL_NAMESPACE, self._state_id, "", consistent=self._consistent)
        if item is None:
            return None
        return _state_codec.decode(item.value), item.etag

    @property
    def _consistent(self) -> bool:
        return self.backend.capabilities.consistent_reads

    async def create_state(self, state: MigrationState, replaces: str | None) -> str | None:
        """Write a new state; ``replaces`` is the etag of a finished one (None: there must be none)."""
        return await self._put(self._state_id, _encode(state), if_match=replaces, if_absent=replaces is None)

    async def replace_state(self, state: MigrationState, etag: str) -> str | None:
        """Write ``state`` if the stored one still has ``etag``; its new etag, or None when it changed."""
        state.version += 1
        state.updated_at = time.time()
        return await self._put(self._state_id, _encode(state), if_match=etag)

    # -- backfill checkpoint ----------------------------------------------------------

    async def read_progress(self) -> BackfillProgress:
        item = await self.backend.get(CONTROL_NAMESPACE, self._checkpoint_id, "", consistent=self._consistent)
        return BackfillProgress() if item is None else _progress_codec.decode(item.value)

    async def save_progress(self, progress: BackfillProgress) -> None:
        await self._put(self._checkpoint_id, _encode(progress))

    async def clear_progress(self) -> None:
        await self.backend.write(CONTROL_NAMESPACE, [StoredWrite(self._checkpoint_id, "", None)])

    # -- repair log ---------------------------------------------------------------------

    async def add_repairs(self, entries: Sequence[RepairEntry]) -> None:
        """Log addresses to bring in step later; durable before this returns."""
        now = time.time()
        ops = [
            StoredWrite(self._repair_id, _entry_key(e), _encode(e), new_etag(), None, "application/json", now)
            for e in entries
        ]
        for outcome in await self.backend.write(CONTROL_NAMESPACE, ops):
            if outcome.error is not None:
                raise outcome.error

    async def repairs(self, limit: int = _PAGE) -> list[tuple[RepairEntry, str]]:
        """Pending repair entries with their item keys (to remove them once repaired)."""
        items = await self.backend.get_range(CONTROL_NAMESPACE, self._repair_id, None, None, None, limit)
        return [(_repair_codec.decode(i.value), i.key) for i in items]

    async def remove_repairs(self, items: Sequence[tuple[str, str]]) -> None:
        """Remove repaired entries, each only if unchanged since it was read (key, etag)."""
        ops = [StoredWrite(self._repair_id, key, None, if_match=etag) for key, etag in items]
        if ops:
            await self.backend.write(CONTROL_NAMESPACE, ops)

    async def repair_items(self, limit: int = _PAGE) -> list[Item]:
        return await self.backend.get_range(CONTROL_NAMESPACE, self._repair_id, None, None, None, limit)

    async def count_repairs(self) -> int:
        count, after = 0, None
        while True:
            page = await self.backend.get_range(CONTROL_NAMESPACE, self._repair_id, None, None, after, _PAGE)
            count += len(page)
            if len(page) < _PAGE:
                return count
            after = page[-1].key

    async def clear_repairs(self) -> None:
        await self.backend.delete_range(CONTROL_NAMESPACE, self._repair_id, None, None)

    # -- replicas -------------------------------------------------------------------------

    async def heartbeat(self, replica: str, migration: str, version: int, ttl: float) -> None:
        """Say that ``replica`` is alive and has applied ``version`` of the state of ``migration``."""
        now = time.time()
        value = _encode({"id": migration, "version": version})
        op = StoredWrite(self._replica_id, replica, value, new_etag(), now + ttl, "application/json", now)
        await self.backend.write(CONTROL_NAMESPACE, [op])

    async def leave(self, replica: str) -> None:
        await self.backend.write(CONTROL_NAMESPACE, [StoredWrite(self._replica_id, replica, None)])

    async def replicas(self) -> dict[str, tuple[str, int]]:
        """Live replicas and the (migration id, state version) each has applied."""
        out: dict[str, tuple[str, int]] = {}
        after = None
        while True:
            page = await self.backend.get_range(
                CONTROL_NAMESPACE, self._replica_id, None, None, after, _PAGE, consistent=self._consistent
            )
            for item in page:
                data: dict[str, Any] = msgspec.json.decode(item.value)
                out[item.key] = (str(data.get("id", "")), int(data.get("version", 0)))
            if len(page) < _PAGE:
                return out
            after = page[-1].key


def decode_repair(raw: bytes) -> RepairEntry:
    return _repair_codec.decode(raw)


def new_replica_id() -> str:
    return uuid.uuid4().hex[:16]
