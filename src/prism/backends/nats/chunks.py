"""Values larger than one NATS message, stored as chunk messages behind a manifest.

A put of a large value first publishes the value's chunks under a fresh version
(``<root>.<version>.<n>``, see ``prism.backends.nats.layout``), then publishes the
item's message, a manifest naming that version, by compare-and-set on the key's
revision, exactly as a small value is written. Chunks are never changed once
written, so a reader that finds a manifest and then all its chunks has exactly one
written value; a reader that finds a chunk missing (purged by a concurrent write)
reads the manifest again from the stream leader and follows the new one.

Why the clean-up is safe: a put compares against a revision ``r`` it read before
writing its chunks, so its first chunk's sequence ``s`` is above ``r``, and its
manifest can only win while the key's last sequence is still ``r``. A put that
reuses its chunks after losing a race does so only while the revision it now
compares against is below ``s``. Hence once any write of the key has been applied
at sequence ``m``, no chunk below ``m`` can ever become part of a value again,
except the chunks of the value written at ``m`` itself, which all lie above the
revision that write compared against. So after a write is applied, every chunk of
the key below the write's own first chunk (or below ``m`` for a small value or a
delete) is purged with one stream purge (``filter`` and ``seq``): the replaced
value's chunks, and the chunks any write that stopped half-way left behind. A put
whose condition failed, or that gave up its chunks, purges its own version.

Purges are sent without waiting for their answer: a lost purge leaves chunks that
nothing references and that the next purge of the key removes.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass

import msgspec

from prism.backends.nats.connection import Connection, decode_puback
from prism.backends.nats.layout import Bucket, Envelope
from prism.errors import BackendUnavailable, DecodeError, ValueTooLarge

__all__ = ["Written", "assemble", "chunk_subjects", "purge_before", "purge_version", "write_chunk_sets"]

#: JetStream's "message size exceeds maximum allowed" error code.
_MESSAGE_TOO_LARGE = 10054
_json = msgspec.json.Encoder()


@dataclass(frozen=True, slots=True)
class Written:
    """A chunk set written for one put: its version, its count, and its first chunk's sequence."""

    version: str
    count: int
    first: int


def chunk_subjects(root: str, version: str, count: int) -> list[str]:
    """The subjects of the ``count`` chunks of ``version`` under a key's chunk ``root``."""
    return [f"{root}.{version}.{n}" for n in range(count)]


async def write_chunk_sets(
    conn: Connection,
    sets: Sequence[tuple[Bucket, str, bytes]],
    chunk_bytes: int,
    headers: Sequence[dict[str, str] | None] | None = None,
) -> list[Written]:
    """Publish the chunks of each ``(bucket, item subject, value)``, all pipelined at once.

    ``headers`` (one per set) go on every chunk of a set: a per-message TTL that makes
    the chunks outlive their manifest. Every chunk is acknowledged or the call raises
    (and purges what it wrote).
    """
    requests: list[tuple[str, bytes, dict[str, str] | None]] = []
    planned: list[tuple[Bucket, str, str, int]] = []
    for index, (bucket, subject, value) in enumerate(sets):
        root, version = bucket.chunk_root(subject), secrets.token_urlsafe(12)
        count = max(1, -(-len(value) // chunk_bytes))
        extra = None if headers is None else headers[index]
        for n, chunk_subject in enumerate(chunk_subjects(root, version, count)):
            requests.append((chunk_subject, value[n * chunk_bytes : (n + 1) * chunk_bytes], extra))
        planned.append((bucket, root, version, count))
    try:
        replies = await conn.request_many(requests)
    except Exception:
        for bucket, root, version, _ in planned:
            await purge_version(conn, bucket, root, version)
        raise
    acks = [decode_puback(msg.data) for msg in replies]
    failed = next((ack.error for ack in acks if ack.error is not None), None)
    if failed is not None:
        for bucket, root, version, _ in planned:
            await purge_version(conn, bucket, root, version)
        text = f"nats chunk publish: JetStream error {failed.code}/{failed.err_code}: {failed.description}"
        if failed.err_code == _MESSAGE_TOO_LARGE:
            raise ValueTooLarge(text)
        raise BackendUnavailable(text)
    out, offset = [], 0
    for _, _, version, count in planned:
        out.append(Written(version, count, min(ack.seq for ack in acks[offset : offset + count])))
        offset += count
    return out


def assemble(envelope: Envelope, parts: Sequence[bytes | None], what: str) -> bytes | None:
    """The value of manifest ``envelope`` from its chunks, or None when one is missing."""
    if any(p is None for p in parts):
        return None
    value = b"".join(p for p in parts if p is not None)
    if len(value) != envelope.size:
        raise DecodeError(
            f"{what}: the chunks of version {envelope.version} hold {len(value)} bytes, "
            f"the item says {envelope.size}",
            key=what,
        )
    return value


async def purge_before(conn: Connection, bucket: Bucket, root: str, seq: int) -> None:
    """Purge every chunk of the key (chunk ``root``) stored below stream sequence ``seq``."""
    if seq <= 1:
        return  # nothing is below 1, and the server reads a purge up to 0 or 1 as "purge all"
    request = _json.encode({"filter": f"{root}.>", "seq": seq})
    await conn.request_unawaited(f"$JS.API.STREAM.PURGE.{bucket.stream}", request)


async def purge_version(conn: Connection, bucket: Bucket, root: str, version: str) -> None:
    """Purge the chunks of one version of the key (chunk ``root``)."""
    request = _json.encode({"filter": f"{root}.{version}.*"})
    await conn.request_unawaited(f"$JS.API.STREAM.PURGE.{bucket.stream}", request)
