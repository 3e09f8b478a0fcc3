"""``transact`` as one atomic batch publish (nats-server 2.12+, stream ``allow_atomic``).

The keys' states are read from the stream leader, the ops are checked in order
against them (a later op on a key sees what the earlier ones left), and when every
condition holds each key's final state is published as one message of a batch
(``Nats-Batch-Id``, ``Nats-Batch-Sequence``, ``Nats-Batch-Commit``) with
``Nats-Expected-Last-Subject-Sequence`` set to the revision that was read. The
server stores the whole batch or none of it: when another writer moved one of the
keys in between, the commit is refused and the call reads and decides again, so a
condition is only ever failed on fresh state. Large values have their chunks written
first, as for single writes (``prism.backends.nats.chunks``), and the batch holds
their manifests.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence

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
from prism.backends.nats.writes import (
    TTL_HEADER,
    WRONG_LAST_SEQUENCE,
    Known,
    RevisionCache,
    api_error,
    header_bytes,
    ttl_header,
)
from prism.errors import BackendUnavailable
from prism.model import StoredWrite, WriteOutcome, transaction_refused

__all__ = ["run_transaction"]

BATCH_ID = "Nats-Batch-Id"
BATCH_SEQUENCE = "Nats-Batch-Sequence"
BATCH_COMMIT = "Nats-Batch-Commit"
#: Most times a transaction reads and publishes again after other writers moved its keys.
MAX_ATTEMPTS = 32

ReadStrong = Callable[[Bucket, list[str]], Awaitable[list[Known]]]


def _decide(
    ops: Sequence[StoredWrite], subjects: list[str], states: dict[str, Known], now: float
) -> list[WriteOutcome] | tuple[list[WriteOutcome], dict[str, StoredWrite]]:
    """Refused outcomes, or (outcomes, each key's final op) when every condition holds in order."""
    current = dict(states)
    outcomes = []
    final: dict[str, StoredWrite] = {}
    for i, (op, subject) in enumerate(zip(ops, subjects, strict=True)):
        state = current[subject]
        live = state.live(now)
        if (op.if_match is not None and (not live or state.etag != op.if_match)) or (op.if_absent and live):
            return transaction_refused(len(ops), i, live)
        outcomes.append(WriteOutcome(True, live))
        current[subject] = Known(state.rev, op.etag if op.value is not None else None, op.expires_at)
        final[subject] = op
    return outcomes, final


async def run_transaction(
    conn: Connection,
    bucket: Bucket,
    ops: Sequence[StoredWrite],
    cache: RevisionCache,
    read_strong: ReadStrong,
    backoff: Callable[[int], float],
) -> list[WriteOutcome]:
    """Apply ``ops`` all or none; refused outcomes when a condition fails (nothing written then)."""
    subjects = [bucket.subject(op.record, op.key) for op in ops]
    unique = list(dict.fromkeys(subjects))
    max_payload = conn.nc.max_payload
    for attempt in range(MAX_ATTEMPTS):
        states = dict(zip(unique, await read_strong(bucket, unique), strict=True))
        now = time.time()
        decided = _decide(ops, subjects, states, now)
        if isinstance(decided, list):
            return decided
        outcomes, final = decided
        messages: list[tuple[str, bytes, dict[str, str]]] = []
        large: list[tuple[int, str, StoredWrite, dict[str, str]]] = []
        for subject, op in final.items():
            headers = {EXPECTED_LAST_SEQ: str(states[subject].rev)}
            if op.value is None:
                headers[KV_OPERATION] = "DEL"
                messages.append((subject, b"", headers))
                continue
            headers[ETAG_HEADER] = op.etag
            if op.expires_at is not None:
                headers[EXPIRES_HEADER] = repr(op.expires_at)
                if bucket.ttl:
                    headers[TTL_HEADER] = ttl_header(op.expires_at, now)
            envelope = Envelope(op.etag, op.expires_at, op.content_type, op.updated_at, op.value)
            payload = encode_envelope(envelope) if len(op.value) < max_payload else b""
            if payload and len(payload) + header_bytes(headers) + 120 <= max_payload:
                messages.append((subject, payload, headers))
            else:
                large.append((len(messages), subject, op, headers))
                messages.append((subject, b"", headers))
        written: list[chunks.Written] = []
        if large:
            chunk_ttls = [
                None
                if not (bucket.ttl and op.expires_at is not None)
                else {TTL_HEADER: ttl_header(op.expires_at, now, extra=1)}
                for _, _, op, _ in large
            ]
            written = await chunks.write_chunk_sets(
                conn,
                [(bucket, subject, op.value or b"") for _, subject, op, _ in large],
                max_payload - MESSAGE_OVERHEAD,
                chunk_ttls,
            )
            for (index, subject, op, headers), w in zip(large, written, strict=True):
                manifest = Envelope(
                    op.etag, op.expires_at, op.content_type, op.updated_at, b"", w.version, w.count,
                    len(op.value or b""),
                )  # fmt: skip
                messages[index] = (
                    subject,
                    encode_envelope(manifest),
                    {**headers, CHUNKS_HEADER: str(w.count)},
                )
        ack = decode_puback((await conn.publish_batch(messages, secrets.token_urlsafe(16))).data)
        if ack.error is None:
            first_seq = ack.seq - len(messages) + 1
            for n, (subject, _, _) in enumerate(messages):
                op = final[subject]
                cache.put(
                    subject, Known(first_seq + n, op.etag if op.value is not None else None, op.expires_at)
                )
            for (_, subject, _, _), w in zip(large, written, strict=True):
                await chunks.purge_before(conn, bucket, bucket.chunk_root(subject), w.first)
            chunked = {subject for _, subject, _, _ in large}
            for n, (subject, _, _) in enumerate(messages):
                if states[subject].chunked and subject not in chunked:
                    await chunks.purge_before(conn, bucket, bucket.chunk_root(subject), first_seq + n)
            return outcomes
        for (_, subject, _, _), w in zip(large, written, strict=True):
            await chunks.purge_version(conn, bucket, bucket.chunk_root(subject), w.version)
        err = ack.error
        if err.err_code not in WRONG_LAST_SEQUENCE:
            raise api_error("atomic batch publish", err.code, err.err_code, err.description)
        for subject in unique:
            cache.forget(subject)
        # Another writer moved a key between the read and the commit: read again.
        await asyncio.sleep(backoff(attempt))
    raise BackendUnavailable(
        f"nats transaction of {len(ops)} ops: other writers moved its keys {MAX_ATTEMPTS} times in a row"
    )
