"""The Queue and PubSub contracts every engine implements.

A :class:`Queue` delivers each message at least once to one consumer at a time: a
consumer *leases* messages for a while, renews the lease with ``heartbeat`` while it
works, and then ``ack``s (done) or ``release``s (try again later, optionally after a
delay). A lease that is neither renewed nor settled expires and the message is
delivered again, to this or another consumer.

A :class:`PubSub` fans each published message out to every live subscription of its
topic, in every process connected to the same engine. Delivery is at most once: a
subscriber that is not listening when a message is published does not get it, so
anything that must not be lost is also stored elsewhere (the streaming event log).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import re
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, ClassVar, Self

from prism.errors import InvalidArgument, StoreClosed

__all__ = ["Lease", "PubSub", "Queue", "Subscription", "check_queue_name", "check_topic"]

log = logging.getLogger("prism.patterns")

_QUEUE_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_TOPIC = re.compile(r"[A-Za-z0-9_.-]{1,200}")

#: A subscriber callback: called with (topic, data) for every message; it must not block.
MessageHandler = Callable[[str, bytes], None]


def check_queue_name(name: object) -> str:
    """A queue name: 1-64 letters, digits, '_' or '-' (it becomes a key, table row or stream name)."""
    if not isinstance(name, str) or not _QUEUE_NAME.fullmatch(name):
        raise InvalidArgument(f"a queue name is 1-64 letters, digits, '_' or '-', not {name!r}")
    return name


def check_topic(topic: object) -> str:
    """A topic: 1-200 letters, digits, '_', '-' or '.'."""
    if not isinstance(topic, str) or not _TOPIC.fullmatch(topic):
        raise InvalidArgument(f"a topic is 1-200 letters, digits, '_', '-' or '.', not {topic!r}")
    return topic


def check_seconds(value: float, what: str, *, positive: bool = False) -> float:
    if not isinstance(value, int | float) or value < 0 or (positive and value == 0):
        rule = "> 0" if positive else ">= 0"
        raise InvalidArgument(f"{what} must be a number of seconds {rule}, got {value!r}")
    return float(value)


@dataclass(slots=True)
class Lease:
    """One leased message. ``deliveries`` counts deliveries including this one (0 when unknown)."""

    message_id: str
    data: bytes
    deliveries: int = 0
    #: Engine-specific handle (a lease token, a JetStream message, ...).
    handle: Any = None


class _State(enum.Enum):
    UNOPENED = "unopened"
    OPEN = "open"
    CLOSED = "closed"


class _Lifecycle:
    """Open once, close twice safely, and say exactly what went wrong on misuse."""

    kind: ClassVar[str] = "object"
    _state: _State = _State.UNOPENED

    async def _open(self) -> None:
        """Connect (engine hook)."""

    async def _close(self) -> None:
        """Release resources (engine hook)."""

    async def open(self) -> Self:
        """Connect. Opening an open object does nothing; a closed one cannot reopen."""
        if self._state is _State.CLOSED:
            raise StoreClosed(f"the {self.kind} is closed and cannot be reopened")
        if self._state is _State.UNOPENED:
            await self._open()
            self._state = _State.OPEN
        return self

    async def close(self) -> None:
        """Release every resource; safe to call more than once."""
        if self._state is _State.OPEN:
            self._state = _State.CLOSED
            await self._close()
        self._state = _State.CLOSED

    def _check_open(self) -> None:
        if self._state is not _State.OPEN:
            state = (
                "closed" if self._state is _State.CLOSED else "not open: use `async with` or `await .open()`"
            )
            raise StoreClosed(f"the {self.kind} is {state}")

    async def __aenter__(self) -> Self:
        return await self.open()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


class Queue(_Lifecycle, ABC):
    """An at-least-once work queue with leases (see the module docstring)."""

    kind = "queue"
    #: Engine name for logs and metrics.
    engine: ClassVar[str] = "queue"

    def __init__(self, name: str) -> None:
        self.name = check_queue_name(name)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} {self._state.value}>"

    @classmethod
    @abstractmethod
    def from_url(cls, url: str, name: str, *, store: Any = None, **options: Any) -> Queue:
        """Build an unopened queue named ``name`` on the engine at ``url``.

        ``store`` is an open Store or None: an engine uses the connection of a store on
        the same URL rather than opening its own.
        """

    @abstractmethod
    async def enqueue(self, data: bytes, *, delay: float = 0.0) -> str:
        """Add a message, deliverable after ``delay`` seconds; its id."""

    @abstractmethod
    async def lease(self, max_messages: int, lease_seconds: float, wait: float) -> list[Lease]:
        """Up to ``max_messages`` deliverable messages, each invisible to others for ``lease_seconds``.

        Waits up to ``wait`` seconds for a first message; an empty list when none came.
        """

    @abstractmethod
    async def heartbeat(self, lease: Lease, lease_seconds: float) -> bool:
        """Extend the lease to ``lease_seconds`` from now; False when it was already lost."""

    @abstractmethod
    async def ack(self, lease: Lease) -> None:
        """The message is done: remove it (a lost lease acknowledges nothing)."""

    @abstractmethod
    async def release(self, lease: Lease, delay: float = 0.0) -> None:
        """Give the message back, deliverable again after ``delay`` seconds."""

    @abstractmethod
    async def depth(self) -> int:
        """Messages not yet acknowledged (ready, delayed or leased)."""


class Subscription:
    """One live subscription; ``close()`` stops it (twice is safe)."""

    __slots__ = ("_closed", "_pubsub", "handler", "topic")

    def __init__(self, pubsub: PubSub, topic: str, handler: MessageHandler) -> None:
        self._pubsub = pubsub
        self.topic = topic
        self.handler = handler
        self._closed = False

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            await self._pubsub._remove(self)


class PubSub(_Lifecycle, ABC):
    """At-most-once fan-out of messages by topic (see the module docstring).

    Engines implement ``_listen``/``_unlisten`` (one engine subscription per topic,
    however many local subscribers) and call ``_dispatch`` for every message received.
    """

    kind = "pubsub"
    engine: ClassVar[str] = "pubsub"
    #: Largest message the engine carries; larger publishes raise InvalidArgument.
    max_message_bytes: ClassVar[int] = 1024 * 1024

    def __init__(self) -> None:
        self._subscribers: dict[str, list[Subscription]] = {}
        self._topic_lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._state.value}>"

    @classmethod
    @abstractmethod
    def from_url(cls, url: str, *, store: Any = None, **options: Any) -> PubSub:
        """Build an unopened pubsub on the engine at ``url`` (``store`` as for ``Queue.from_url``)."""

    @abstractmethod
    async def _publish(self, topic: str, data: bytes) -> None: ...

    @abstractmethod
    async def _listen(self, topic: str) -> None: ...

    @abstractmethod
    async def _unlisten(self, topic: str) -> None: ...

    async def publish(self, topic: str, data: bytes) -> None:
        """Send ``data`` to every current subscriber of ``topic``, in every process."""
        check_topic(topic)
        if len(data) > self.max_message_bytes:
            raise InvalidArgument(
                f"a {self.engine} message holds at most {self.max_message_bytes} bytes, got {len(data)}"
            )
        self._check_open()
        await self._publish(topic, data)

    async def subscribe(self, topic: str, handler: MessageHandler) -> Subscription:
        """Call ``handler(topic, data)`` for every message on ``topic`` until the subscription closes.

        The handler runs on the event loop and must not block; it is subscribed once
        ``subscribe`` returns.
        """
        check_topic(topic)
        self._check_open()
        sub = Subscription(self, topic, handler)
        async with self._topic_lock:
            subs = self._subscribers.get(topic)
            if subs is None:
                await self._listen(topic)
                self._subscribers[topic] = [sub]
            else:
                subs.append(sub)
        return sub

    async def _remove(self, sub: Subscription) -> None:
        async with self._topic_lock:
            subs = self._subscribers.get(sub.topic)
            if subs is None or sub not in subs:
                return
            subs.remove(sub)
            if not subs:
                del self._subscribers[sub.topic]
                if self._state is _State.OPEN:
                    await self._unlisten(sub.topic)

    @property
    def topics(self) -> list[str]:
        """Topics with at least one local subscriber."""
        return list(self._subscribers)

    def _dispatch(self, topic: str, data: bytes) -> None:
        for sub in tuple(self._subscribers.get(topic, ())):
            try:
                sub.handler(topic, data)
            except Exception:
                log.exception("pubsub subscriber of %r failed", topic)
