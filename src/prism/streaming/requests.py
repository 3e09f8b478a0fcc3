"""Request records on the KeyValue layer, and their state machine.

A request is one record (JSON) in the ``<prefix>_requests`` namespace. Every change is
a conditional write on the etag that was read (``if_match``), so two writers can never
both win: no lost result, no double completion, no going back from a final status::

    PENDING ──> PROCESSING ──> COMPLETED
       │            │  ↑  └──> FAILED
       │            ↓  │  └──> CANCELLED
       │         RETRYING ──> FAILED | CANCELLED
       └──> CANCELLED | FAILED

The record is also the authority for the request's event numbers: ``seq`` is the last
event's number and ``tail`` its newest events (see :mod:`prism.streaming.eventlog`),
written in the same conditional write that changes the state, so no two events get
the same number.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import hashlib
import os
import re
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import msgspec

from prism.errors import InvalidArgument, PreconditionFailed, PrismError
from prism.kv.namespace import Namespace
from prism.kv.store import Store
from prism.model import Put, WriteResult
from prism.streaming.config import StreamingConfig
from prism.streaming.eventlog import EventLog
from prism.streaming.metrics import DEAD_LETTERS, count_status
from prism.streaming.protocol import ErrorBody, ProgressState

__all__ = [
    "TERMINAL",
    "UNSTORED",
    "RecordWrites",
    "RequestRecord",
    "RequestStatus",
    "RequestStore",
    "Versioned",
    "check_transition",
    "fingerprint",
    "is_request_id",
    "new_request_id",
]


#: The ``owner`` of the record that settles a submission never stored: it never runs, and a
#: repeat of its client id submits it afresh.
UNSTORED = "unstored"


class RequestStatus(enum.StrEnum):
    PENDING = "PENDING"
    PROCESSING = "PROCESSING"
    RETRYING = "RETRYING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


TERMINAL = frozenset({RequestStatus.COMPLETED, RequestStatus.FAILED, RequestStatus.CANCELLED})

_ALLOWED: dict[str, frozenset[str]] = {
    RequestStatus.PENDING: frozenset({"PROCESSING", "CANCELLED", "FAILED"}),
    RequestStatus.PROCESSING: frozenset({"PROCESSING", "RETRYING", "COMPLETED", "FAILED", "CANCELLED"}),
    RequestStatus.RETRYING: frozenset({"PROCESSING", "CANCELLED", "FAILED"}),
}


class InvalidTransition(PreconditionFailed):
    """A write would move a request to a status it may not reach from its current one."""


def check_transition(old: str, new: str) -> None:
    """Raise InvalidTransition unless ``old`` -> ``new`` is an edge of the state machine."""
    if new not in _ALLOWED.get(old, frozenset()):
        raise InvalidTransition(f"a request cannot go from {old} to {new}")


class RequestRecord(msgspec.Struct, kw_only=True):
    """Everything stored about one request."""

    request_id: str
    action: str
    payload: msgspec.Raw
    #: The owner of the request: the caller's ``owner`` (credential kind, issuer and subject).
    user: str
    tenant: str
    client_id: str | None = None
    fingerprint: str = ""
    status: str = RequestStatus.PENDING
    attempts: int = 0
    max_attempts: int = 1
    progress: ProgressState = msgspec.field(default_factory=ProgressState)
    result: Any = None
    error: ErrorBody | None = None
    metadata: dict[str, Any] | None = None
    created_at: float = 0.0
    updated_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    #: Number of the last event, and the JSON of the newest events, oldest first (tail[-1] is ``seq``).
    seq: int = 0
    tail: list[str] = msgspec.field(default_factory=list)
    #: Who runs it ("worker:<node>:<n>" or "inline:<node>") and until when that claim holds.
    owner: str | None = None
    lease_until: float = 0.0
    next_attempt_at: float = 0.0
    #: Whether a queue message exists for it (inline runs have none until promoted).
    queued: bool = False
    cancelled_by: str | None = None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL


@dataclass(frozen=True, slots=True)
class Versioned:
    """A record as read, with the etag that a conditional write must match."""

    record: RequestRecord
    etag: str


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(RequestRecord).decode


def new_request_id(tenant: str, user: str, client_id: str | None) -> str:
    """A server-made id: derived from (tenant, user, client id) so a repeat finds the same record,
    or random when the client gave no id."""
    if client_id is None:
        return "r" + os.urandom(16).hex()
    return "r" + hashlib.sha256(f"{tenant}\x00{user}\x00{client_id}".encode()).hexdigest()[:32]


_REQUEST_ID = re.compile(r"r[0-9a-f]{32}")


def is_request_id(text: str) -> bool:
    """Whether ``text`` has the shape of a server-made request id (other keys share the namespace)."""
    return _REQUEST_ID.fullmatch(text) is not None


def fingerprint(action: str, payload: bytes) -> str:
    """What makes two submissions "the same request": the action and the canonical payload."""
    canonical = msgspec.json.encode(msgspec.json.decode(payload), order="sorted")
    return hashlib.sha256(action.encode() + b"\x00" + canonical).hexdigest()[:32]


def _owner_key(tenant: str, user: str) -> str:
    return f"{quote(tenant, safe='')}/{quote(user, safe='')}"


_MAX_MS = 10**13


def _index_key(record: RequestRecord) -> str:
    inverted = _MAX_MS - int(record.created_at * 1000)
    return f"u/{_owner_key(record.tenant, record.user)}/{inverted:013d}/{record.request_id}"


def _dead_key(record: RequestRecord) -> str:
    return f"dead/{quote(record.tenant, safe='')}/{record.request_id}"


def _dead(record: RequestRecord) -> bool:
    """Whether ``record`` failed for good (a dead letter): FAILED, and not by a cancel."""
    error = record.error
    return record.status == RequestStatus.FAILED and error is not None and error.code != "CANCELLED"


class RecordWrites:
    """Conditional writes of request records, combined into as few store calls as the load allows.

    A write that finds no call under way goes out at once, on its own. Writes that
    come while one is under way wait and then go together, up to ``batch`` per call,
    in one ``put_many``: on Redis one round trip instead of one each. Each keeps its
    own condition and gets its own outcome (a failed condition fails only its record).
    So a lone write costs what it did, and many jobs reporting progress at once share
    the calls instead of queueing for the connection pool.
    """

    def __init__(self, records: Namespace, batch: int) -> None:
        self._records = records
        self._batch = batch
        self._waiting: list[tuple[Put, asyncio.Future[WriteResult]]] = []
        self._busy = False
        self._drainer: asyncio.Task[None] | None = None

    async def put(self, put: Put) -> str:
        """Write ``put``; its new etag, or its error raised (PreconditionFailed when its condition failed)."""
        if self._busy:
            done: asyncio.Future[WriteResult] = asyncio.get_running_loop().create_future()
            self._waiting.append((put, done))
            result = await done
        else:
            self._busy = True
            try:
                result = await self._records.put_result(put)
            finally:
                if self._waiting:
                    self._drainer = asyncio.get_running_loop().create_task(self._drain())
                else:
                    self._busy = False
        if result.error is not None:
            raise result.error
        assert result.etag is not None
        return result.etag

    async def _drain(self) -> None:
        """Write what waits, a batch per call, until nothing does."""
        try:
            while self._waiting:
                batch, self._waiting = self._waiting[: self._batch], self._waiting[self._batch :]
                try:
                    results = await self._records.put_many([put for put, _ in batch])
                except BaseException as exc:
                    for _, done in batch:
                        if not done.done():
                            done.set_exception(exc)
                    if not isinstance(exc, Exception):
                        raise
                    continue
                for (_, done), result in zip(batch, results, strict=True):
                    if not done.done():
                        done.set_result(result)
        finally:
            self._busy = False
            for _, done in self._waiting:
                if not done.done():
                    done.cancel()
            self._waiting = []


class RequestStore:
    """Reads and conditional writes of request records, and the per-user and dead-letter indexes."""

    def __init__(self, store: Store, config: StreamingConfig) -> None:
        self.config = config
        self.records = store.namespace(config.namespace("requests"), default_ttl=config.request_ttl)
        self._writes = RecordWrites(self.records, config.record_batch)
        self.index = store.namespace(config.namespace("request_index"), default_ttl=config.request_ttl)
        self.log = EventLog(store, config)

    async def get(self, request_id: str) -> Versioned | None:
        """The record of ``request_id`` and its etag; None when there is none (log entries are no records)."""
        if not request_id or "/" in request_id:
            return None
        item = await self.records.get(request_id, consistency="strong")
        return None if item is None else Versioned(_decode(item.value), item.etag)

    async def create(self, record: RequestRecord) -> Versioned:
        """Store a new record; PreconditionFailed when one with its id exists.

        The index entry is written first, so a stored request is always listed: a crash
        between the two writes leaves only an entry without a record, or one that does not
        match the record's ``created_at`` (a lost race for the same id), which listing skips.
        """
        now = time.time()
        record.created_at = record.created_at or now
        record.updated_at = now
        index_key = _index_key(record)
        await self.index.put(index_key, b"")
        try:
            etag = await self.records.put(record.request_id, _encode(record), if_absent=True)
        except PreconditionFailed:
            with contextlib.suppress(PrismError):
                await self.index.delete(index_key)
            raise
        count_status(record.action, record.status)
        return Versioned(record, etag)

    async def forget_unstored(self, current: Versioned) -> None:
        """Delete the record of a submission that was never stored (owner ``UNSTORED``), if unchanged."""
        if current.record.owner != UNSTORED:
            raise InvalidArgument(f"request {current.record.request_id} was stored; it is not forgotten")
        with contextlib.suppress(PreconditionFailed):
            await self.records.delete(current.record.request_id, if_match=current.etag)

    async def replace(self, current: Versioned, new: RequestRecord) -> Versioned:
        """Write ``new`` over ``current`` only if the stored etag is still ``current.etag``.

        Raises InvalidTransition for a move the state machine forbids and
        PreconditionFailed (nothing written) when the record changed since it was read.
        """
        old = current.record
        if new.request_id != old.request_id:
            raise InvalidArgument("a record replacement must keep its request_id")
        if old.status in TERMINAL:
            raise InvalidTransition(f"request {old.request_id} is {old.status} and cannot change")
        if new.status != old.status or new.status == RequestStatus.PROCESSING:
            check_transition(old.status, new.status)
        if new.seq < old.seq:
            raise InvalidArgument("a request's event number never goes back")
        new.updated_at = time.time()
        if _dead(new):
            # Indexed first, so a dead letter is always listed; listing skips a record not FAILED.
            await self.index.put(_dead_key(new), b"")
        etag = await self._writes.put(Put(new.request_id, _encode(new), if_match=current.etag))
        if new.status != old.status or new.attempts != old.attempts:
            count_status(new.action, new.status)
            if _dead(new):
                DEAD_LETTERS.inc()
        return Versioned(new, etag)

    async def list_for(
        self,
        tenant: str,
        user: str,
        *,
        status: str | None,
        limit: int,
        page_token: str | None,
        action: str | None = None,
    ) -> tuple[list[RequestRecord], str | None]:
        """The user's requests, newest first, optionally only those in ``status`` and of ``action``."""
        prefix = f"u/{_owner_key(tenant, user)}/"
        found: list[RequestRecord] = []
        token = page_token
        while len(found) < limit:
            page = await self.index.scan(prefix, limit=limit - len(found), page_token=token)
            ids = [key.rsplit("/", 1)[1] for key in page.keys]
            for key, item in zip(page.keys, await self.records.get_many(ids) if ids else [], strict=True):
                if item is None:
                    continue
                record = _decode(item.value)
                if _index_key(record) != key:
                    continue  # left by a submission that lost the race for this id
                if (status is None or record.status == status) and (
                    action is None or record.action == action
                ):
                    found.append(record)
            token = page.next_page_token
            if token is None:
                break
        return found, token

    async def is_dead_letter(self, record: RequestRecord) -> bool:
        """Whether ``record`` is a dead letter still listed (not retried or discarded yet)."""
        return _dead(record) and await self.index.get(_dead_key(record)) is not None

    async def discard_dead_letter(self, record: RequestRecord) -> bool:
        """Take ``record`` off the dead letters (the record itself stays until it expires)."""
        return await self.index.delete(_dead_key(record))

    async def dead_letters(
        self, tenant: str, *, limit: int, page_token: str | None
    ) -> tuple[list[RequestRecord], str | None]:
        """Requests of ``tenant`` that failed for good (after their last attempt)."""
        page = await self.index.scan(f"dead/{quote(tenant, safe='')}/", limit=limit, page_token=page_token)
        ids = [key.rsplit("/", 1)[1] for key in page.keys]
        items = await self.records.get_many(ids) if ids else []
        records = [_decode(i.value) for i in items if i is not None]
        return [r for r in records if _dead(r)], page.next_page_token
