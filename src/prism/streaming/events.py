"""The one path by which an event is numbered, stored and published.

An event is emitted in two steps:

1. the conditional write of the request record that takes the next ``seq`` (and, for
   a final event, the final status) and keeps the event in the record's tail, from
   which it is later copied to the log (:mod:`prism.streaming.eventlog`) — the commit
   point: once written, the event is stored;
2. the publish to the owner's topic, which every replica with a follower listens to.

So every number is used once, a replay finds every event up to the record's ``seq``
(in the log or the tail), and a follower that missed a publish fills the gap from them.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from collections.abc import Callable

import msgspec

from prism.errors import PrismError
from prism.patterns.base import PubSub
from prism.streaming.config import StreamingConfig
from prism.streaming.eventlog import TAIL_EVENTS, EventLog, tail_events
from prism.streaming.requests import RequestRecord, RequestStore, Versioned

__all__ = ["Emitter", "EventLog", "Ref", "topic_for_user"]

log = logging.getLogger("prism.streaming")


class Ref(msgspec.Struct, tag_field="type", tag="ref"):
    """Published instead of an event too large for the pubsub engine: followers read it from the log."""

    request_id: str
    seq: int


def topic_for_user(config: StreamingConfig, tenant: str, user: str) -> str:
    """The pubsub topic that carries every event of one user's requests."""
    return _user_topic(config.namespace_prefix, tenant, user)


@functools.lru_cache(maxsize=65536)
def _user_topic(prefix: str, tenant: str, user: str) -> str:
    digest = hashlib.sha256(f"{tenant}\x00{user}".encode()).hexdigest()[:32]
    return f"prism.{prefix}.u.{digest}"


def cancel_topic(config: StreamingConfig) -> str:
    """The topic on which cancellations reach the worker running the request."""
    return f"prism.{config.namespace_prefix}.cancel"


class Emitter:
    """Numbers, stores and publishes events (see the module docstring)."""

    def __init__(
        self, config: StreamingConfig, requests: RequestStore, log: EventLog, pubsub: PubSub
    ) -> None:
        self.config = config
        self.requests = requests
        self.log = log
        self.pubsub = pubsub

    async def emit(
        self,
        current: Versioned,
        make_event: Callable[[int], bytes],
        update: Callable[[RequestRecord], RequestRecord],
    ) -> Versioned:
        """Write ``update(record)`` with the next event number and ``make_event(seq)``, then publish it.

        Raises PreconditionFailed (nothing emitted) when the record changed since ``current``.
        """
        old = current.record
        seq = old.seq + 1
        event = make_event(seq)
        tail = old.tail
        if len(tail) >= TAIL_EVENTS:
            # Copy the full tail to the log first: if this write then fails, they are merely in both.
            await self.log.copy(old.request_id, tail_events(old.seq, tail))
            tail = []
        new = update(msgspec.structs.replace(old))
        new.seq = seq
        new.tail = [*tail, event.decode()]
        written = await self.requests.replace(current, new)
        await self.publish(new, seq, event)
        return written

    async def publish(self, record: RequestRecord, seq: int, event: bytes) -> None:
        """Send an event to the followers of its request; a failure is logged, the log still has it."""
        topic = topic_for_user(self.config, record.tenant, record.user)
        data = event
        if len(data) > self.pubsub.max_message_bytes:
            data = msgspec.json.encode(Ref(record.request_id, seq))
        try:
            await self.pubsub.publish(topic, data)
        except PrismError as exc:
            log.warning("could not publish event %d of %s: %s", seq, record.request_id, exc)
