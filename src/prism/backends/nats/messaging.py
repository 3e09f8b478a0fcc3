"""NATS engines: a Queue on a JetStream work-queue stream with ack wait, and PubSub on core subjects.

Both read the same URL and options as the NATS store (``connect_timeout``,
``operation_timeout``, retries, ``reconnect_wait``, ``ping_interval``...) and run every
call on a ``NatsBackend``'s connection with its deadlines, retries and error mapping:
given an open store on the same URL (and no options of their own) that store's
connection, otherwise one of their own. Queue ``q`` is the stream ``PRISM_Q_<q>`` on subject
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
import functools
import logging
import os
import time
from typing import Any, ClassVar
from urllib.parse import urlsplit

from nats.errors import Error as NatsError
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import ConsumerConfig, RetentionPolicy, StreamConfig
from nats.js.errors import NotFoundError

from prism.backends.messaging import Lease, PubSub, Queue, check_seconds
from prism.backends.nats.backend import NatsBackend
from prism.backends.urls import mask_url
from prism.errors import InvalidArgument

__all__ = ["NatsPubSub", "NatsQueue", "shared_backend"]

log = logging.getLogger("prism.patterns")

NOT_BEFORE = "Prism-Not-Before"
#: Most unacknowledged deliveries of one queue at a time.
MAX_ACK_PENDING = 10_000
#: Shortest wait of one fetch (JetStream needs a positive expiry).
MIN_FETCH_SECONDS = 0.05
#: JetStream drops a second publish with the same id within its duplicate window.
MSG_ID = "Nats-Msg-Id"
#: Seconds between looks at a new replicated stream until it has a leader.
LEADER_POLL_SECONDS = 0.05


def shared_backend(url: str, store: Any, options: dict[str, Any]) -> tuple[NatsBackend, bool]:
    """The NATS backend to run on, and whether this object owns it.

    ``store``'s backend is shared when it points at the same server and the URL
    carries no options of its own or the same as the store's; otherwise a backend is
    built from ``url`` and ``options`` (validated like a store's) and opened by its user.
    """
    own = NatsBackend.from_url(url, **options)
    backend = getattr(store, "backend", None)
    if not isinstance(backend, NatsBackend) or backend.url != own.url:
        return own, True
    plain = not options and not urlsplit(url).query
    if plain or (own.settings, own.options) == (backend.settings, backend.options):
        return backend, False
    return own, True


class _OnBackend:
    """Runs calls on a NatsBackend's connection; owns it or borrows an open store's."""

    _backend: NatsBackend
    _owns: bool

    def _bind(self, backend: NatsBackend, owns: bool) -> None:
        self._backend = backend
        self._owns = owns

    async def _open_backend(self) -> None:
        if self._owns:
            await self._backend.open()
        else:
            await self._backend.call(_nothing, "connect")  # refused unless the shared store is open

    async def _close_backend(self) -> None:
        if self._owns:
            await self._backend.close()


async def _nothing() -> None:
    return None


class _Delivery:
    __slots__ = ("deadline", "msg")

    def __init__(self, msg: Any, deadline: float) -> None:
        self.msg = msg
        self.deadline = deadline


class NatsQueue(_OnBackend, Queue):
    """A Queue on a JetStream work-queue stream (see the module docstring)."""

    engine = "nats"

    def __init__(self, name: str, backend: NatsBackend, owns: bool = True) -> None:
        super().__init__(name)
        self._bind(backend, owns)
        self._stream = f"PRISM_Q_{name}"
        self._subject = f"prism.q.{name}"
        self._durable = f"prism_q_{name}"
        self._sub: Any = None
        self._ack_wait: float | None = None

    @classmethod
    def from_url(cls, url: str, name: str, *, store: Any = None, **options: Any) -> NatsQueue:
        """A queue on ``nats://`` with the NATS store's options."""
        return cls(name, *shared_backend(url, store, options))

    def __repr__(self) -> str:
        return f"<NatsQueue {self.name!r} {mask_url(self._backend.url)} {self._state.value}>"

    @property
    def _js(self) -> Any:
        return self._backend.connection.js

    async def _open(self) -> None:
        await self._open_backend()
        try:
            await self._backend.call(self._ensure_stream, "queue setup")
        except BaseException:
            await self._close_backend()
            raise

    async def _ensure_stream(self) -> None:
        try:
            await self._js.stream_info(self._stream)
        except NotFoundError:
            config = StreamConfig(
                name=self._stream,
                subjects=[self._subject],
                retention=RetentionPolicy.WORK_QUEUE,
                # As many copies as the store's buckets have (``replicas``; more than 1 needs a cluster).
                num_replicas=self._backend.options.replicas,
            )
            info = await self._js.add_stream(config)
            # A replicated stream takes publishes once its replicas have elected a leader
            # (bounded by the call's operation deadline).
            while (config.num_replicas or 1) > 1 and (info.cluster is None or not info.cluster.leader):
                await asyncio.sleep(LEADER_POLL_SECONDS)
                info = await self._js.stream_info(self._stream)

    async def _close(self) -> None:
        sub, self._sub = self._sub, None
        if sub is not None:
            try:
                await sub.unsubscribe()
            except (NatsError, OSError):
                pass
        await self._close_backend()

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
        # The message id makes a resend after a lost reply a duplicate JetStream drops.
        headers = {MSG_ID: os.urandom(12).hex()}
        if delay > 0:
            headers[NOT_BEFORE] = f"{time.time() + delay:.6f}"
        ack = await self._backend.call(
            lambda: self._js.publish(self._subject, data, headers=headers), "enqueue"
        )
        return str(ack.seq)

    async def lease(self, max_messages: int, lease_seconds: float, wait: float) -> list[Lease]:
        lease_seconds = check_seconds(lease_seconds, "lease_seconds", positive=True)
        wait = check_seconds(wait, "wait")
        if isinstance(max_messages, bool) or not isinstance(max_messages, int) or max_messages < 1:
            raise InvalidArgument(f"max_messages must be an integer >= 1, got {max_messages!r}")
        self._check_open()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while True:
            fetch_for = max(MIN_FETCH_SECONDS, deadline - loop.time())

            async def fetch(fetch_for: float = fetch_for) -> list[Any]:
                sub = await self._subscription(lease_seconds)
                try:
                    msgs: list[Any] = await sub.fetch(max_messages, timeout=fetch_for)
                except (TimeoutError, NatsTimeout):
                    # The fetch's own wait ended with nothing (the call's deadline cancels, not this).
                    return []
                return msgs

            msgs = await self._backend.call(fetch, "lease", blocks_for=fetch_for)
            if not msgs:
                return []
            ack_wait = self._ack_wait or lease_seconds
            leases: list[Lease] = []
            now = time.time()
            for msg in msgs:
                not_before = float((msg.headers or {}).get(NOT_BEFORE, 0) or 0)
                if not_before > now:
                    await self._backend.call(functools.partial(msg.nak, delay=not_before - now), "lease")
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
        await self._backend.call(delivery.msg.in_progress, "heartbeat")
        delivery.deadline = time.monotonic() + (self._ack_wait or lease_seconds)
        return True

    async def ack(self, lease: Lease) -> None:
        self._check_open()
        delivery = self._live(lease)
        if delivery is None:
            return
        await self._backend.call(delivery.msg.ack_sync, "ack")

    async def release(self, lease: Lease, delay: float = 0.0) -> None:
        delay = check_seconds(delay, "delay")
        self._check_open()
        delivery = self._live(lease)
        if delivery is None:
            return
        await self._backend.call(lambda: delivery.msg.nak(delay=delay if delay > 0 else None), "release")

    async def depth(self) -> int:
        self._check_open()
        info = await self._backend.call(lambda: self._js.stream_info(self._stream), "depth")
        return int(info.state.messages)


class NatsPubSub(_OnBackend, PubSub):
    """Fan-out over core NATS subjects ``prism.ps.<topic>``."""

    engine = "nats"
    max_message_bytes: ClassVar[int] = 1024 * 1024

    def __init__(self, backend: NatsBackend, owns: bool = True) -> None:
        super().__init__()
        self._bind(backend, owns)
        self._subs: dict[str, Any] = {}

    @classmethod
    def from_url(cls, url: str, *, store: Any = None, **options: Any) -> NatsPubSub:
        """A pub/sub on ``nats://`` with the NATS store's options."""
        return cls(*shared_backend(url, store, options))

    def __repr__(self) -> str:
        return f"<NatsPubSub {mask_url(self._backend.url)} {self._state.value}>"

    @property
    def _nc(self) -> Any:
        return self._backend.connection.nc

    @staticmethod
    def _subject(topic: str) -> str:
        if ".." in topic or topic.startswith(".") or topic.endswith("."):
            raise InvalidArgument(f"a NATS topic has no empty tokens between dots: {topic!r}")
        return f"prism.ps.{topic}"

    async def _open(self) -> None:
        await self._open_backend()

    async def _close(self) -> None:
        subs, self._subs = self._subs, {}
        if not self._owns:
            for sub in subs.values():
                try:
                    await sub.unsubscribe()
                except (NatsError, OSError) as exc:
                    log.debug("nats unsubscribe failed: %s", exc)
        await self._close_backend()

    async def _publish(self, topic: str, data: bytes) -> None:
        subject = self._subject(topic)

        async def publish() -> None:
            nc = self._nc
            if len(data) > nc.max_payload:
                raise InvalidArgument(f"this NATS server carries at most {nc.max_payload} bytes per message")
            await nc.publish(subject, data)

        await self._backend.call(publish, "publish")

    async def _listen(self, topic: str) -> None:
        async def deliver(msg: Any) -> None:
            self._dispatch(topic, msg.data)

        subject = self._subject(topic)

        async def subscribe() -> None:
            self._subs[topic] = await self._nc.subscribe(subject, cb=deliver)
            await self._nc.flush()

        await self._backend.call(subscribe, "subscribe")

    async def _unlisten(self, topic: str) -> None:
        sub = self._subs.pop(topic, None)
        if sub is not None:
            try:
                await sub.unsubscribe()
            except (NatsError, OSError) as exc:
                log.warning("nats unsubscribe of %s failed: %s", topic, exc)
