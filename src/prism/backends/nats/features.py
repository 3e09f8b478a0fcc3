"""What the connected nats-server can do, from its version (the store's capabilities follow it).

| server | what Prism uses |
|---|---|
| 2.9, 2.10 | compare-and-set, direct gets, TTL kept by Prism (expired items become tombstones when met) |
| 2.11 | per-message TTL (``Nats-TTL``: the server removes expired items), batched direct gets |
| 2.12 and newer | atomic batch publish (``Nats-Batch-*``): ``transact`` is declared |
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MAX_BATCH_MESSAGES", "ServerFeatures"]

#: Most messages of one atomic batch the server accepts by default (ADR-50), so the most ops per transaction.
MAX_BATCH_MESSAGES = 1000


@dataclass(frozen=True, slots=True)
class ServerFeatures:
    """The features of one server version that change how the store works."""

    version: tuple[int, int, int]
    #: Per-message TTL (``Nats-TTL`` header, stream ``allow_msg_ttl``): 2.11.
    message_ttl: bool
    #: Direct gets of the last message of many subjects in one request (``multi_last``): 2.11.
    batch_get: bool
    #: Atomic batch publish (``Nats-Batch-Id``, stream ``allow_atomic``): 2.12.
    atomic_batch: bool

    @classmethod
    def of(cls, major: int, minor: int, patch: int) -> ServerFeatures:
        version = (major, minor, patch)
        return cls(version, version >= (2, 11, 0), version >= (2, 11, 0), version >= (2, 12, 0))

    @property
    def label(self) -> str:
        return ".".join(map(str, self.version))


#: What the store assumes until it has connected: the oldest supported server.
OLDEST = ServerFeatures.of(2, 9, 0)
