"""How Prism names buckets and keys in NATS JetStream KV, and what a stored message holds.

* A namespace is a KV bucket (stream ``KV_<bucket>``, subjects ``$KV.<bucket>.>``).
  Names of at most 64 characters from ``[A-Za-z0-9_-]`` become ``prism_<name>``;
  other names of at most 40 UTF-8 bytes become ``prism-x<base32hex of the bytes>``;
  longer ones ``prism-h<sha256 hex>``. The three forms never collide.
* An item is the key ``<record tokens>.<item token>``. The record id's UTF-8 bytes are
  cut into 6-byte chunks, each written as one unpadded URL-safe base64 token (8
  characters for a full chunk), so a prefix scan can ask the server for ``<full chunks
  of the prefix>.>`` and only the tail of the prefix is matched in Prism. The item
  token is the unpadded URL-safe base64 of the item key, or ``=`` for the flat entry's
  key "". The last token is always the item token, so the split is unambiguous, and
  the longest ids and keys (1024 bytes each) still fit NATS's 4 KiB protocol line.
* A message's payload is a msgpack array ``[etag, expires_at, content_type,
  updated_at, value]``; the expiry is repeated in the ``Prism-Expires`` header so a
  headers-only listing can tell live items from expired ones without the values.
* A value too large for one message is stored in chunk messages, and the item's
  message is a manifest ``[etag, expires_at, content_type, updated_at, b"", version,
  chunks, size]`` (marked by the ``Prism-Chunks`` header, the chunk count). The chunks
  of item key ``K`` (``<record tokens>.<item token>``) are the raw bytes of the value
  under ``~c.K.~.<version>.<n>``, ``n`` from 0, a fresh random ``version`` per write.
  The ``~`` tokens never occur in an item key, so the chunks of one key are exactly
  ``~c.K.~.>`` and never appear in a record's or a prefix's listing
  (``prism.backends.nats.chunks`` explains how they are written and read atomically).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass

import msgspec

from prism.errors import DecodeError

__all__ = [
    "CHUNKS_HEADER",
    "ETAG_HEADER",
    "EXPIRED_HEADER",
    "EXPIRES_HEADER",
    "Bucket",
    "Envelope",
    "bucket_name",
    "chunk_root",
    "decode_envelope",
    "encode_envelope",
    "is_chunk_key",
    "item_token",
    "record_tokens",
    "scan_tokens",
    "split_key",
]

#: Header that repeats an item's expiry (epoch seconds) for headers-only listings.
EXPIRES_HEADER = "Prism-Expires"
#: Header of a manifest: the number of chunk messages holding its value.
CHUNKS_HEADER = "Prism-Chunks"
#: Header that repeats a put's etag, so a change feed of headers alone can tell it.
ETAG_HEADER = "Prism-Etag"
#: Header of the tombstone Prism writes in place of an expired item (the feed's ``expire``).
EXPIRED_HEADER = "Prism-Expired"
#: First token of every chunk message's key, and the token that ends the item key in it.
CHUNK_KEY = "~c"
_CHUNK_END = "~"
#: Bytes of a record id per subject token: 6 bytes are exactly 8 base64 characters.
CHUNK_BYTES = 6
_CHUNK_CHARS = 8
_SAFE_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_MAX_ENCODED_NAME_BYTES = 40
_EMPTY_ITEM = "="


def bucket_name(namespace: str) -> str:
    """The KV bucket of ``namespace``: readable when the name allows it, collision-free always."""
    if _SAFE_NAME.fullmatch(namespace):
        return "prism_" + namespace
    raw = namespace.encode("utf-8")
    if len(raw) <= _MAX_ENCODED_NAME_BYTES:
        return "prism-x" + _b32(raw)
    return "prism-h" + hashlib.sha256(raw).hexdigest()


def _b32(raw: bytes) -> str:
    return base64.b32hexencode(raw).decode("ascii").rstrip("=")


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(token: str) -> bytes:
    if "=" in token or "+" in token or "/" in token:
        raise ValueError(f"not a token Prism writes: {token[:40]!r}")
    try:
        return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except binascii.Error as exc:
        raise ValueError(f"not a token Prism writes: {token[:40]!r}") from exc


def record_tokens(record: str) -> str:
    """The dot-separated tokens of a (non-empty) record id."""
    raw = record.encode("utf-8")
    if len(raw) <= CHUNK_BYTES:
        return _b64(raw)
    if len(raw) % CHUNK_BYTES == 0:
        encoded = _b64(raw)  # whole chunks encode independently: cut the one encoding
        return ".".join(encoded[i : i + _CHUNK_CHARS] for i in range(0, len(encoded), _CHUNK_CHARS))
    return ".".join(_b64(raw[i : i + CHUNK_BYTES]) for i in range(0, len(raw), CHUNK_BYTES))


def item_token(key: str) -> str:
    """The single token of an item key ("" included)."""
    return _b64(key.encode("utf-8")) if key else _EMPTY_ITEM


def scan_tokens(prefix: str) -> str:
    """The whole-chunk tokens every record starting with ``prefix`` shares ("" when none)."""
    raw = prefix.encode("utf-8")
    whole = len(raw) - len(raw) % CHUNK_BYTES
    return ".".join(_b64(raw[i : i + CHUNK_BYTES]) for i in range(0, whole, CHUNK_BYTES))


@dataclass(frozen=True, slots=True)
class Bucket:
    """One namespace's bucket: its stream, its subject prefix, and what its stream allows.

    ``direct``: direct gets; ``ttl``: per-message TTL (``allow_msg_ttl``, so the server
    removes expired items); ``atomic``: atomic batch publish (``allow_atomic``); ``feed``:
    a history of each key, read as the change feed (``prism.backends.nats.feed``).
    """

    stream: str
    prefix: str
    direct: bool
    ttl: bool = False
    atomic: bool = False

    #: Whether the bucket keeps a history of each key: its stream is a change feed.
    feed: bool = False

    @classmethod
    def named(
        cls, name: str, direct: bool, ttl: bool = False, atomic: bool = False, feed: bool = False
    ) -> Bucket:
        return cls(f"KV_{name}", f"$KV.{name}.", direct, ttl, atomic, feed)

    def subject(self, record: str, key: str) -> str:
        return f"{self.prefix}{record_tokens(record)}.{item_token(key)}"

    def chunk_root(self, subject: str) -> str:
        """The subject prefix of the chunks of the item at ``subject`` (``<root>.<version>.<n>``)."""
        return chunk_root(self.prefix, subject)


def chunk_root(prefix: str, subject: str) -> str:
    """``<prefix>~c.<item key>.~``: the chunks of the item at ``subject`` all start so."""
    return f"{prefix}{CHUNK_KEY}.{subject[len(prefix) :]}.{_CHUNK_END}"


def is_chunk_key(key: str) -> bool:
    """Whether a KV key (the subject after the bucket's prefix) is a chunk message's."""
    return key.startswith(CHUNK_KEY + ".")


def split_key(key: str) -> tuple[str, str]:
    """``(record tokens, item token)`` of a KV key (the part of the subject after the bucket)."""
    head, _, last = key.rpartition(".")
    return head, last


def decode_record(tokens: str) -> str:
    """The record id written by ``record_tokens``; ValueError when it is not one."""
    if not tokens:
        raise ValueError("empty record")
    parts = tokens.split(".")
    if any(len(p) != _CHUNK_CHARS for p in parts[:-1]):
        raise ValueError(f"not a record key: {tokens[:40]!r}")
    try:
        return b"".join(_unb64(p) for p in parts).decode("utf-8")
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"not a record key: {tokens[:40]!r}") from exc


def decode_item(token: str) -> str:
    """The item key written by ``item_token``; ValueError when it is not one."""
    if token == _EMPTY_ITEM:
        return ""
    try:
        return _unb64(token).decode("utf-8")
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"not an item key: {token[:40]!r}") from exc


class Envelope(msgspec.Struct, array_like=True, frozen=True):
    """One stored item: the value and the metadata Prism keeps beside it.

    A manifest of a chunked value has an empty ``value`` and names the ``version``,
    the number of ``chunks`` and the ``size`` of the value they hold.
    """

    etag: str
    expires_at: float | None
    content_type: str | None
    updated_at: float
    value: bytes
    version: str = ""
    chunks: int = 0
    size: int = 0

    def live(self, now: float) -> bool:
        return self.expires_at is None or self.expires_at > now

    @property
    def chunked(self) -> bool:
        return self.chunks > 0


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Envelope)


def encode_envelope(envelope: Envelope) -> bytes:
    """The payload of an item's message (an inline value keeps the five-field form)."""
    if envelope.chunked:
        return _encoder.encode(envelope)
    e = envelope
    return _encoder.encode((e.etag, e.expires_at, e.content_type, e.updated_at, e.value))


def decode_envelope(data: bytes, what: str) -> Envelope:
    """The envelope in a message payload; DecodeError naming ``what`` when it is not Prism's."""
    try:
        return _decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise DecodeError(f"{what}: the stored message is not a Prism item ({exc})", key=what) from exc
