"""Conditional writes by revision compare-and-set, pipelined across the keys of one call.

Every write publishes with ``Nats-Expected-Last-Subject-Sequence`` set to the
revision it believes is the key's last, so the server applies it only if nobody
wrote in between. The revision comes from a fresh read or, when this store wrote
or read the key recently, from ``RevisionCache`` (one round trip instead of two).
A cached revision is only a hint: a condition is never failed on a hint, and a
lost compare-and-set forgets it and reads the truth in the next round.

A call runs in rounds: each round takes the next op of every key still pending,
reads the keys whose state is unknown (pipelined), then publishes every write it
decided on (pipelined). Ops on the same key stay in call order. A value too large
for one message has its chunks published first, and its compare-and-set publishes
the manifest (``prism.backends.nats.chunks``).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Hashable, Iterable, Sequence
from typing import NamedTuple

from prism.backends.nats import chunks
from prism.backends.nats.connection import EXPECTED_LAST_SEQ, KV_OPERATION, Connection, decode_puback
from prism.backends.nats.layout import (
    CHUNKS_HEADER,
    ETAG_HEADER,
    EXPIRES_HEADER,
    Bucket,
    Envelope,
    encode_envelope,
)
from prism.backends.nats.options import MESSAGE_OVERHEAD
from prism.errors import BackendUnavailable, ValueTooLarge
from prism.model import StoredWrite, WriteOutcome, condition_failed

__all__ = [
    "ABSENT",
    "TTL_HEADER",
    "KeyQueue",
    "Known",
    "RevisionCache",
    "Transient",
    "WriteBatch",
    "api_error",
    "ttl_header",
]

#: Per-message TTL (ADR-43), in whole seconds.
TTL_HEADER = "Nats-TTL"


def ttl_header(expires_at: float, now: float, extra: int = 0) -> str:
    """The ``Nats-TTL`` of a message that must outlive ``expires_at`` (whole seconds, at least 1)."""
    return str(max(1, math.ceil(expires_at - now)) + extra)


#: JetStream's "wrong last sequence" error codes (a compare-and-set lost the race).
WRONG_LAST_SEQUENCE = frozenset({10071, 10164})
#: JetStream's "message size exceeds maximum allowed" error code.
MESSAGE_TOO_LARGE = frozenset({10054})


class Known(NamedTuple):
    """A key's last message: its revision, and the item's etag and expiry (etag None: no item).

    ``chunked`` says the message is the manifest of a chunked value.
    """

    rev: int
    etag: str | None
    expires_at: float | None
    chunked: bool = False

    def live(self, now: float) -> bool:
        return self.etag is not None and (self.expires_at is None or self.expires_at > now)


#: A key that never had a message.
ABSENT = Known(0, None, None)


class RevisionCache:
    """The last revision this store saw per key, bounded to ``size`` keys (oldest dropped first)."""

    __slots__ = ("_entries", "_size")

    def __init__(self, size: int) -> None:
        self._size = size
        self._entries: dict[str, Known] = {}

    def get(self, subject: str) -> Known | None:
        return self._entries.get(subject)

    def put(self, subject: str, known: Known) -> None:
        if not self._size:
            return
        entries = self._entries
        old = entries.pop(subject, None)
        entries[subject] = old if old is not None and old.rev > known.rev else known
        if len(entries) > self._size:
            del entries[next(iter(entries))]

    def forget(self, subject: str) -> None:
        self._entries.pop(subject, None)

    def clear(self) -> None:
        self._entries.clear()


class KeyQueue:
    """Writes of one store to the same key take turns, in the order they were called.

    Without turns, concurrent writes of one process to a hot key would race each other's
    compare-and-set and mostly lose; with them, each write finds the revision the previous
    one left in the cache and wins in one round trip. A call registers behind the calls
    already waiting on any of its keys, all at once, so two calls never wait on each other.
    """

    __slots__ = ("_tails",)

    def __init__(self) -> None:
        self._tails: dict[Hashable, asyncio.Future[None]] = {}

    def turn(self, keys: Iterable[Hashable]) -> _Turn:
        """``async with queue.turn(keys):`` waits until every earlier call on these keys is done."""
        return _Turn(self._tails, keys)


class _Turn:
    """One call's hold on its keys (an async context manager)."""

    __slots__ = ("_before", "_held", "_mine", "_tails")

    def __init__(self, tails: dict[Hashable, asyncio.Future[None]], keys: Iterable[Hashable]) -> None:
        self._tails = tails
        self._held = list(dict.fromkeys(keys))
        self._mine: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._before: list[asyncio.Future[None]] = []

    async def __aenter__(self) -> None:
        tails, mine, before = self._tails, self._mine, self._before
        for key in self._held:
            previous = tails.get(key)
            tails[key] = mine
            if previous is not None and not previous.done():
                before.append(previous)
        try:
            for previous in before:
                if not previous.done():
                    await asyncio.wait((previous,))
        except BaseException:
            self._release()
            raise

    async def __aexit__(self, *exc_info: object) -> None:
        self._release()

    def _release(self) -> None:
        waiting = [f for f in self._before if not f.done()]
        if waiting:
            # Cancelled while waiting: the calls behind this one still wait for those ahead of it.
            _release_after(waiting, self._mine)
        elif not self._mine.done():
            self._mine.set_result(None)
        tails, mine = self._tails, self._mine
        for key in self._held:
            if tails.get(key) is mine:
                del tails[key]


def _release_after(waiting: list[asyncio.Future[None]], mine: asyncio.Future[None]) -> None:
    left = len(waiting)

    def one_done(_: asyncio.Future[None]) -> None:
        nonlocal left
        left -= 1
        if left == 0 and not mine.done():
            mine.set_result(None)

    for future in waiting:
        future.add_done_callback(one_done)


class Transient(Exception):
    """A JetStream reply that says "try again" (server busy, leader moving)."""


def api_error(what: str, code: int, err_code: int, description: str) -> Exception:
    """A JetStream API error: Transient for 5xx (retried), BackendUnavailable otherwise."""
    text = f"nats {what}: JetStream error {code}/{err_code}: {description}"
    return Transient(text) if code >= 500 else BackendUnavailable(text)


def header_bytes(headers: dict[str, str]) -> int:
    """Size of a header block on the wire (the server counts it in max_payload)."""
    return 12 + sum(len(k) + len(v) + 4 for k, v in headers.items())


#: Reads the current state of keys of a bucket (pipelined), for the keys no hint covers.
ReadStates = Callable[[Bucket, list[str]], Awaitable[list[Known]]]


class Send(NamedTuple):
    """A write decided on: what to publish, and what it replaces.

    ``chunked``: the value goes to chunks first and ``payload`` is empty until they are written.
    """

    payload: bytes
    headers: dict[str, str]
    live: bool
    #: The revision the compare-and-set expects, and whether that message is a manifest.
    rev: int
    replaces_chunked: bool
    chunked: bool = False


#: ``decide``'s answer when the key's state must be read from the server first.
READ_FIRST = None


def decide(
    op: StoredWrite,
    state: Known,
    verified: bool,
    now: float,
    max_payload: int,
    before: bool | None,
    native_ttl: bool = False,
) -> WriteOutcome | Send | None:
    """What to do with ``op`` given the key's ``state``: settle it, publish it, or read first (None).

    ``verified`` says the state comes from the server just now (not a hint); ``before``
    is what an earlier attempt of this op saw, should its lost acknowledgement turn out
    to have been applied. ``native_ttl``: the bucket removes expired messages itself
    (``Nats-TTL``).
    """
    live = state.live(now)
    if op.value is not None and verified and op.etag and state.etag == op.etag:
        # Our own earlier attempt, whose acknowledgement was lost, did apply.
        return WriteOutcome(True, live if before is None else before)
    failed = (op.if_match is not None and (not live or state.etag != op.if_match)) or (op.if_absent and live)
    if failed or (op.value is None and state.etag is None):
        if not verified:
            return READ_FIRST  # a hint never fails a condition nor skips a delete
        if failed:
            return condition_failed(live)
        return WriteOutcome(True, False)
    headers = {EXPECTED_LAST_SEQ: str(state.rev)}
    if op.value is None:
        headers[KV_OPERATION] = "DEL"
        return Send(b"", headers, live, state.rev, state.chunked)
    headers[ETAG_HEADER] = op.etag
    if op.expires_at is not None:
        headers[EXPIRES_HEADER] = repr(op.expires_at)
        if native_ttl:
            headers[TTL_HEADER] = ttl_header(op.expires_at, now)
    if len(op.value) < max_payload:
        payload = encode_envelope(Envelope(op.etag, op.expires_at, op.content_type, op.updated_at, op.value))
        if len(payload) + header_bytes(headers) <= max_payload:
            return Send(payload, headers, live, state.rev, state.chunked)
    return Send(b"", headers, live, state.rev, state.chunked, chunked=True)


#: ``acknowledged``'s answer when the compare-and-set lost to another writer.
LOST_RACE = None


def acknowledged(
    op: StoredWrite, subject: str, data: bytes, live: bool, cache: RevisionCache, chunked: bool
) -> tuple[WriteOutcome, Known | None] | None:
    """The outcome a publish's reply gives ``op`` and the key's new state, or LOST_RACE (None).

    A JetStream error other than a lost race or an oversized message raises.
    """
    ack = decode_puback(data)
    if ack.error is None:
        new = Known(ack.seq, op.etag if op.value is not None else None, op.expires_at, chunked)
        cache.put(subject, new)
        return WriteOutcome(True, live), new
    err = ack.error
    if err.err_code in WRONG_LAST_SEQUENCE:
        cache.forget(subject)
        return LOST_RACE
    if err.err_code in MESSAGE_TOO_LARGE:
        return WriteOutcome(False, live, ValueTooLarge(f"value for {_where(op)}: {err.description}")), None
    raise api_error("publish", err.code, err.err_code, err.description)


def _where(op: StoredWrite) -> str:
    return repr(op.record) if not op.key else f"{op.record!r} item {op.key!r}"


def _missing(op: StoredWrite) -> WriteOutcome:
    if op.if_match is not None:
        return condition_failed(False)
    return WriteOutcome(True, False)


class ChunkSets:
    """The chunks a write call published for its large puts, from their writing until the op settles.

    A put keeps its chunks across rounds and retries while the revision it compares
    against stays below its first chunk; otherwise they are purged and written anew
    (the rule ``prism.backends.nats.chunks`` relies on). Purges owed by settled ops are
    sent by ``flush``.
    """

    __slots__ = ("_purges", "_written")

    def __init__(self) -> None:
        self._written: dict[int, tuple[Bucket, chunks.Written]] = {}
        #: (bucket, chunk root, purge below this sequence, or None: purge ``version``, version).
        self._purges: list[tuple[Bucket, str, int | None, str]] = []

    async def manifests(
        self, conn: Connection, bucket: Bucket, sends: Sequence[tuple[str, int, StoredWrite, Send]]
    ) -> dict[int, tuple[bytes, dict[str, str]]]:
        """The manifest and headers to publish for each chunked send, writing chunks where needed."""
        fresh: list[tuple[str, int, StoredWrite]] = []
        for subject, i, op, step in sends:
            held = self._written.get(i)
            if held is not None and (held[0] != bucket or held[1].first <= step.rev):
                # The key moved past these chunks: a manifest naming them now could outlive a purge.
                self._give_up(i, subject)
            if i not in self._written:
                assert op.value is not None
                fresh.append((subject, i, op))
        if fresh:
            chunk_bytes = conn.nc.max_payload - MESSAGE_OVERHEAD
            now = time.time()
            # With per-message TTL the chunks expire too, a second after their manifest.
            ttls = [
                {TTL_HEADER: ttl_header(op.expires_at, now, extra=1)}
                if bucket.ttl and op.expires_at is not None
                else None
                for _, _, op in fresh
            ]
            written = await chunks.write_chunk_sets(
                conn, [(bucket, subject, op.value or b"") for subject, _, op in fresh], chunk_bytes, ttls
            )
            for (_, i, _), w in zip(fresh, written, strict=True):
                self._written[i] = (bucket, w)
        out = {}
        for _, i, op, step in sends:
            w = self._written[i][1]
            size = len(op.value or b"")
            manifest = Envelope(
                op.etag, op.expires_at, op.content_type, op.updated_at, b"", w.version, w.count, size
            )
            out[i] = (encode_envelope(manifest), {**step.headers, CHUNKS_HEADER: str(w.count)})
        return out

    def _give_up(self, i: int, subject: str) -> None:
        held = self._written.pop(i, None)
        if held is not None:
            bucket, w = held
            self._purges.append((bucket, bucket.chunk_root(subject), None, w.version))

    def settled(
        self,
        bucket: Bucket,
        subject: str,
        i: int,
        op: StoredWrite,
        outcome: WriteOutcome,
        applied: Known | None = None,
        replaced_chunked: bool = False,
    ) -> None:
        """Op ``i`` has its outcome (``applied``: the key's state after the publish that applied it)."""
        held = self._written.get(i)
        if held is not None and outcome.ok and op.value is not None:
            del self._written[i]
            written_bucket, w = held
            # The put applied with these chunks: everything of the key below them is dead.
            self._purges.append((written_bucket, written_bucket.chunk_root(subject), w.first, ""))
        elif held is not None:
            self._give_up(i, subject)
        elif applied is not None and replaced_chunked:
            self._purges.append((bucket, bucket.chunk_root(subject), applied.rev, ""))

    @property
    def owed(self) -> bool:
        """Whether settled ops owe purges that ``flush`` has not sent yet."""
        return bool(self._purges)

    async def flush(self, conn: Connection) -> None:
        """Send the purges the settled ops owe (without waiting for their answers)."""
        purges, self._purges = self._purges, []
        for bucket, root, before, version in purges:
            if before is not None:
                await chunks.purge_before(conn, bucket, root, before)
            else:
                await chunks.purge_version(conn, bucket, root, version)


class WriteOne:
    """One op on its own (the common case, without a batch's bookkeeping); ``run`` may run again."""

    __slots__ = ("_before", "_chunks", "_must_read", "op", "outcome")

    def __init__(self, op: StoredWrite) -> None:
        self.op = op
        self.outcome: WriteOutcome | None = None
        self._before: bool | None = None
        self._must_read = False
        self._chunks = ChunkSets()

    @property
    def creates(self) -> bool:
        return self.outcome is None and self.op.value is not None

    def settle_without_bucket(self) -> None:
        if self.outcome is None:
            self.outcome = _missing(self.op)

    def finished(self) -> list[WriteOutcome]:
        assert self.outcome is not None, "a write ended without an outcome"
        return [self.outcome]

    async def run(
        self,
        bucket: Bucket,
        conn: Connection,
        cache: RevisionCache,
        read_states: ReadStates,
        backoff: Callable[[int], float],
    ) -> None:
        op, sets = self.op, self._chunks
        if sets.owed:
            await sets.flush(conn)  # owed by an earlier attempt that failed half-way
        subject = bucket.subject(op.record, op.key)
        state = None if self._must_read else cache.get(subject)
        verified = False
        if state is None and op.if_absent and not self._must_read:
            state = ABSENT  # optimistic create: the server checks there was nothing
        contention = 0
        while self.outcome is None:
            if state is None:
                (state,) = await read_states(bucket, [subject])
                verified, self._must_read = True, False
            step = decide(op, state, verified, time.time(), conn.nc.max_payload, self._before, bucket.ttl)
            if step is READ_FIRST:
                state = None
                continue
            if isinstance(step, WriteOutcome):
                self.outcome = step
                sets.settled(bucket, subject, 0, op, step)
                break
            if self._before is None:
                self._before = step.live
            payload, headers = step.payload, step.headers
            if step.chunked:
                (payload, headers), *_ = (
                    await sets.manifests(conn, bucket, [(subject, 0, op, step)])
                ).values()
            reply = await conn.request(subject, payload, headers)
            answer = acknowledged(op, subject, reply.data, step.live, cache, step.chunked)
            if answer is LOST_RACE:
                self._must_read = True
                if verified:
                    # Another writer won a compare-and-set on fresh state: back off before trying again.
                    await asyncio.sleep(backoff(contention))
                    contention += 1
                state = None
                continue
            self.outcome, applied = answer
            sets.settled(bucket, subject, 0, op, self.outcome, applied, step.replaces_chunked)
        if sets.owed:
            await sets.flush(conn)


class WriteBatch:
    """Several ops, pipelined round by round; ``run`` may be called again after a transient failure.

    ``seed`` gives states already known (from a listing), used like cached hints.
    """

    __slots__ = (
        "_before",
        "_bucket",
        "_chunks",
        "_contention",
        "_known",
        "_must_read",
        "_queues",
        "ops",
        "outcomes",
    )

    def __init__(self, ops: Sequence[StoredWrite], seed: dict[str, Known] | None = None) -> None:
        self.ops = ops
        self.outcomes: list[WriteOutcome | None] = [None] * len(ops)
        #: Per key, the indexes of its ops still to apply, in call order.
        self._queues: dict[str, deque[int]] | None = None
        #: Per key, its state and whether the server just said so (False: a hint to verify).
        self._known: dict[str, tuple[Known, bool]] = {k: (v, False) for k, v in (seed or {}).items()}
        #: Keys whose hint proved wrong: read them before deciding again.
        self._must_read: set[str] = set()
        #: Whether each published op found a live item, for an ack that was lost and is found applied.
        self._before: dict[int, bool] = {}
        self._contention = 0
        self._chunks = ChunkSets()
        self._bucket: Bucket | None = None

    @property
    def creates(self) -> bool:
        """Whether an op still to apply is a put (so the bucket must exist)."""
        return any(self.ops[i].value is not None for i, o in enumerate(self.outcomes) if o is None)

    def settle_without_bucket(self) -> None:
        """Only deletes remain and the namespace has no bucket: nothing is there to delete."""
        for i, op in enumerate(self.ops):
            if self.outcomes[i] is None:
                self.outcomes[i] = _missing(op)

    def finished(self) -> list[WriteOutcome]:
        """Every op's outcome, once the batch ran to the end."""
        out = [o for o in self.outcomes if o is not None]
        assert len(out) == len(self.outcomes), "a write batch ended with ops left"
        return out

    def _done(
        self,
        subject: str,
        outcome: WriteOutcome,
        applied: Known | None = None,
        replaced_chunked: bool = False,
    ) -> None:
        assert self._queues is not None and self._bucket is not None
        queue = self._queues[subject]
        i = queue.popleft()
        self.outcomes[i] = outcome
        self._chunks.settled(self._bucket, subject, i, self.ops[i], outcome, applied, replaced_chunked)
        if not queue:
            del self._queues[subject]

    async def run(
        self,
        bucket: Bucket,
        conn: Connection,
        cache: RevisionCache,
        read_states: ReadStates,
        backoff: Callable[[int], float],
    ) -> None:
        """Apply every op still pending, round after round."""
        if self._chunks.owed:
            await self._chunks.flush(conn)  # owed by an earlier attempt that failed half-way
        self._bucket = bucket
        if self._queues is None:
            self._queues = {}
            for i, op in enumerate(self.ops):
                self._queues.setdefault(bucket.subject(op.record, op.key), deque()).append(i)
        while self._queues:
            await self._learn(bucket, cache, read_states)
            lost_race = await self._publish(
                conn, bucket, cache, self._decide(conn.nc.max_payload, bucket.ttl)
            )
            if self._chunks.owed:
                await self._chunks.flush(conn)
            if lost_race:
                # Another writer won a compare-and-set on fresh state: back off before trying again.
                await asyncio.sleep(backoff(self._contention))
                self._contention += 1

    async def _learn(self, bucket: Bucket, cache: RevisionCache, read_states: ReadStates) -> None:
        """Give every pending key a state: a hint when one is good enough, else a read."""
        assert self._queues is not None
        known, unknown = self._known, []
        for subject, queue in self._queues.items():
            if subject in known:
                continue
            hint = None if subject in self._must_read else cache.get(subject)
            if hint is not None:
                known[subject] = (hint, False)
            elif subject not in self._must_read and self.ops[queue[0]].if_absent:
                known[subject] = (ABSENT, False)  # optimistic create: the server checks there was nothing
            else:
                unknown.append(subject)
        if unknown:
            for subject, state in zip(unknown, await read_states(bucket, unknown), strict=True):
                known[subject] = (state, True)
                self._must_read.discard(subject)

    def _decide(self, max_payload: int, native_ttl: bool) -> list[tuple[str, int, Send]]:
        """Settle the ops whose outcome is certain; return the writes to publish."""
        assert self._queues is not None
        now = time.time()
        sends = []
        for subject, queue in list(self._queues.items()):
            i = queue[0]
            state, verified = self._known[subject]
            step = decide(self.ops[i], state, verified, now, max_payload, self._before.get(i), native_ttl)
            if step is READ_FIRST:
                del self._known[subject]
                self._must_read.add(subject)
            elif isinstance(step, WriteOutcome):
                self._done(subject, step)
            else:
                self._before.setdefault(i, step.live)
                sends.append((subject, i, step))
        return sends

    async def _publish(
        self, conn: Connection, bucket: Bucket, cache: RevisionCache, sends: list[tuple[str, int, Send]]
    ) -> bool:
        """Publish the decided writes; True when a compare-and-set on fresh state lost a race."""
        if not sends:
            return False
        chunked = [(subject, i, self.ops[i], step) for subject, i, step in sends if step.chunked]
        manifests = await self._chunks.manifests(conn, bucket, chunked) if chunked else {}
        replies = await conn.request_many(
            [(subject, *manifests.get(i, (step.payload, step.headers))) for subject, i, step in sends]
        )
        failed: Exception | None = None
        lost_race = False
        for (subject, i, step), msg in zip(sends, replies, strict=True):
            try:
                answer = acknowledged(self.ops[i], subject, msg.data, step.live, cache, step.chunked)
            except Exception as exc:  # a JetStream error: report it once every reply is accounted for
                failed = failed or exc
                continue
            if answer is LOST_RACE:
                lost_race = lost_race or self._known[subject][1]
                del self._known[subject]
                self._must_read.add(subject)
                continue
            outcome, new = answer
            if new is not None:
                self._known[subject] = (new, False)  # what the next op on this key starts from
            self._done(subject, outcome, new, step.replaces_chunked)
        if failed is not None:
            raise failed
        return lost_race
