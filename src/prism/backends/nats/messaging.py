"""NATS engines: a Queue on a JetStream work-queue stream with ack wait, and PubSub on core subjects.

Both open their own connection from the store URL (``nats://host:4222``; Prism's
query options are dropped). Queue ``q`` is the stream ``PRISM_Q_<q>`` on subject
``prism.q.<q>`` with work-queue retention, consumed by the durable pull consumer
``prism_q_<q>`` whose ack wait is the lease: a message not acknowledged (or marked
in progress by a heartbeat) within it is delivered again. A delayed enqueue carries a
``Prism-Not-Before`` header and is handed back (``nak`` with that delay) if leased early.

JetStream does not tell a consumer that its delivery expired, so each lease keeps its
own deadline: past it, heartbeat reports the lease lost and ack/release do nothing
(the message may already be with another consumer). Topics are the subjects
``prism.ps.<topic>``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, ClassVar
from urllib.parse import urlsplit, urlunsplit

import nats
from nats.errors import Error as NatsError
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import ConsumerConfig, RetentionPolicy, StreamConfig
from nats.js.errors import NotFoundError

from prism.backends.messaging import Lease, PubSub, Queue, check_seconds
from prism.backends.urls import mask_url
from prism.errors import BackendUnavailable, InvalidArgument

__all__ = ["NatsPubSub", "NatsQueue"]

log = logging.getLogger("prism.patterns")

NOT_BEFORE = "Prism-Not-Before"
#: Most unacknowledged deliveries of one queue at a time.
MAX_ACK_PENDING = 10_000
#: Shortest wait of one fetch (JetStream needs a positive expiry).
MIN_FETCH_SECONDS = 0.05
#: Seconds one connection attempt may take.
CONNECT_TIMEOUT = 5.0


def _server(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "", "", ""))


def _unavailable(what: str, url: str, exc: BaseException) -> BackendUnavailable:
    return BackendUnavailable(
        f"nats {what} failed at {mask_url(url)}: {type(exc).__name__}: {exc}", cause=exc
    )


_ERRORS = (NatsError, OSError, asyncio.TimeoutError)


async def _connect(url: str) -> Any:
    return await nats.connect(
        _server(url), connect_timeout=CONNECT_TIMEOUT, allow_reconnect=True, max_reconnect_attempts=-1
    )


class _Delivery:
    __slots__ = ("deadline", "msg")

    def __init__(self, msg: Any, deadline: float) -> None:
        self.msg = msg
        self.deadline = deadline


class NatsQueue(Queue):
    """A Queue on a JetStream work-queue stream (see the module docstring)."""

    engine = "nats"

    def __init__(self, name: str, url: str) -> None:
        super().__init__(name)
        self._url = url
        self._stream = f"PRISM_Q_{name}"
        self._subject = f"prism.q.{name}"
        self._durable = f"prism_q_{name}"
        self._sub: Any = None
        self._ack_wait: float | None = None

    @classmethod
    def from_url(cls, url: str, name: str, *, store: Any = None, **options: Any) -> NatsQueue:
        if options:
            raise InvalidArgument(f"the nats queue takes no options, got {sorted(options)}")
        return cls(name, url)

    async def _open(self) -> None:
        try:
            self._nc: Any = await _connect(self._url)
            self._js = self._nc.jetstream()
            try:
                await self._js.stream_info(self._stream)
            except NotFoundError:
                await self._js.add_stream(
                    StreamConfig(
                        name=self._stream, subjects=[self._subject], retention=RetentionPolicy.WORK_QUEUE
                    )
                )
        except _ERRORS as exc:
            raise _unavailable("queue setup", self._url, exc) from exc

    async def _close(self) -> None:
        if self._sub is not None:
            try:
                await self._sub.unsubscribe()
            except _ERRORS:
                pass
        await self._nc.close()

    async def _subscription(self, lease_seconds: float) -> Any:
        if self._sub is None:
            self._ack_wait = lease_seconds
            config = ConsumerConfig(ack_wait=lease_seconds, max_deliver=-1, max_ack_pending=MAX_ACK_PENDING)
            self._sub = await self._js.pull_subscribe(
                self._subject, durable=self._durable, stream=self._stream, config=config
            )
        return self._sub

    async def enqueue(self, data: bytes, *, delay: float = 0.0) -> str:
        delay = check_seconds(delay, "delay")
        if not isinstance(data, bytes):
            raise InvalidArgument(f"a message is bytes, got {type(data).__name__}")
        self._check_open()
        headers = {NOT_BEFORE: f"{time.time() + delay:.6f}"} if delay > 0 else None
        try:
            ack = await self._js.publish(self._subject, data, headers=headers)
        except _ERRORS as exc:
            raise _unavailable("enqueue", self._url, exc) from exc
        return str(ack.seq)

    async def lease(self, max_messages: int, lease_seconds: float, wait: float) -> list[Lease]:
        lease_seconds = check_seconds(lease_seconds, "lease_seconds", positive=True)
        wait = check_seconds(wait, "wait")
        if max_messages < 1:
            raise InvalidArgument("max_messages must be >= 1")
        self._check_open()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while True:
            try:
                sub = await self._subscription(lease_seconds)
                msgs = await sub.fetch(max_messages, timeout=max(MIN_FETCH_SECONDS, deadline - loop.time()))
            except (TimeoutError, NatsTimeout):
                return []
            except _ERRORS as exc:
                raise _unavailable("lease", self._url, exc) from exc
            ack_wait = self._ack_wait or lease_seconds
            leases: list[Lease] = []
            now = time.time()
            for msg in msgs:
                not_before = float((msg.headers or {}).get(NOT_BEFORE, 0) or 0)
                if not_before > now:
                    await msg.nak(delay=not_before - now)
                    continue
                meta = msg.metadata
                leases.append(
                    Lease(
                        str(meta.sequence.stream),
                        msg.data,
                        meta.num_delivered,
                        _Delivery(msg, time.monotonic() + ack_wait),
                    )
                )
            if leases or loop.time() >= deadline:
                return leases

    def _live(self, lease: Lease) -> _Delivery | None:
        delivery: _Delivery = lease.handle
        return delivery if time.monotonic() < delivery.deadline else None

    async def heartbeat(self, lease: Lease, lease_seconds: float) -> bool:
        check_seconds(lease_seconds, "lease_seconds", positive=True)
        self._check_open()
        delivery = self._live(lease)
        if delivery is None:
            return False
        try:
            await delivery.msg.in_progress()
        except _ERRORS as exc:
            raise _unavailable("heartbeat", self._url, exc) from exc
        delivery.deadline = time.monotonic() + (self._ack_wait or lease_seconds)
        return True

    async def ack(self, lease: Lease) -> None:
        self._check_open()
        delivery = self._live(lease)
        if delivery is None:
            return
        try:
            await delivery.msg.ack_sync()
        except _ERRORS as exc:
            raise _unavailable("ack", self._url, exc) from exc

    async def release(self, lease: Lease, delay: float = 0.0) -> None:
        delay = check_seconds(delay, "delay")
        self._check_open()
        delivery = self._live(lease)
        if delivery is None:
            return
        try:
            await delivery.msg.nak(delay=delay if delay > 0 else None)
        except _ERRORS as exc:
            raise _unavailable("release", self._url, exc) from exc

    async def depth(self) -> int:
        self._check_open()
        try:
            info = await self._js.stream_info(self._stream)
        except _ERRORS as exc:
            raise _unavailable("depth", self._url, exc) from exc
        return int(info.state.messages)


class NatsPubSub(PubSub):
    """Fan-out over core NATS subjects ``prism.ps.<topic>``."""

    engine = "nats"
    max_message_bytes: ClassVar[int] = 1024 * 1024

    def __init__(self, url: str) -> None:
        super().__init__()
        self._url = url
        self._subs: dict[str, Any] = {}

    @classmethod
    def from_url(cls, url: str, *, store: Any = None, **options: Any) -> NatsPubSub:
        if options:
            raise InvalidArgument(f"the nats pubsub takes no options, got {sorted(options)}")
        return cls(url)

    @staticmethod
    def _subject(topic: str) -> str:
        if ".." in topic or topic.startswith(".") or topic.endswith("."):
            raise InvalidArgument(f"a NATS topic has no empty tokens between dots: {topic!r}")
        return f"prism.ps.{topic}"

    async def _open(self) -> None:
        try:
            self._nc: Any = await _connect(self._url)
        except _ERRORS as exc:
            raise _unavailable("pubsub connect", self._url, exc) from exc

    async def _close(self) -> None:
        await self._nc.close()

    async def _publish(self, topic: str, data: bytes) -> None:
        if len(data) > self._nc.max_payload:
            raise InvalidArgument(
                f"this NATS server carries at most {self._nc.max_payload} bytes per message"
            )
        try:
            await self._nc.publish(self._subject(topic), data)
        except _ERRORS as exc:
            raise _unavailable("publish", self._url, exc) from exc

    async def _listen(self, topic: str) -> None:
        async def deliver(msg: Any) -> None:
            self._dispatch(topic, msg.data)

        try:
            self._subs[topic] = await self._nc.subscribe(self._subject(topic), cb=deliver)
            await self._nc.flush()
        except _ERRORS as exc:
            raise _unavailable("subscribe", self._url, exc) from exc

    async def _unlisten(self, topic: str) -> None:
        sub = self._subs.pop(topic, None)
        if sub is not None:
            try:
                await sub.unsubscribe()
            except _ERRORS as exc:
                log.warning("nats unsubscribe of %s failed: %s", topic, exc)
