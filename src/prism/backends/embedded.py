"""The embedded engines' (``memory://``, ``sqlite://``) queue and pub/sub, for one node.

The queue keeps every message as an entry of the namespace ``prism_queue_<name>`` of
its engine's backend (so a ``sqlite://`` store keeps queued work across restarts) and
its schedule in memory, so only one process may consume it. Given an open store, it
writes through that store's backend; otherwise it opens a backend of its own from the
URL. Leases live in memory: after a restart every unacknowledged message is
deliverable again at its scheduled time. The pub/sub is in-process fan-out (also what
a ``dynamodb://`` URL gets, having no fan-out of its own).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import os
import time
from typing import Any

import msgspec

from prism.backends import open_backend
from prism.backends.base import Backend
from prism.backends.messaging import Lease, PubSub, Queue, check_seconds
from prism.errors import InvalidArgument
from prism.model import StoredWrite

__all__ = ["EmbeddedQueue", "LocalPubSub"]


#: Stored messages read per page when a queue's schedule is loaded.
LOAD_PAGE = 1000


class _Stored(msgspec.Struct, array_like=True):
    data: bytes
    visible_at: float
    deliveries: int = 0


class _Message:
    __slots__ = ("data", "deliveries", "token", "visible_at")

    def __init__(self, data: bytes, visible_at: float, deliveries: int) -> None:
        self.data = data
        self.visible_at = visible_at
        self.deliveries = deliveries
        self.token: int | None = None


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(_Stored).decode
_tokens = itertools.count(1)


class _Schedule:
    """The in-memory state of one embedded queue, shared by its handles in this process."""

    def __init__(self) -> None:
        self.messages: dict[str, _Message] = {}
        self.heap: list[tuple[float, int, str]] = []
        self.order = itertools.count()
        self.wakeup = asyncio.Event()
        self.users = 0
        self.loaded = False

    def push(self, message_id: str, msg: _Message) -> None:
        self.messages[message_id] = msg
        heapq.heappush(self.heap, (msg.visible_at, next(self.order), message_id))


_schedules: dict[tuple[str, str], _Schedule] = {}


class EmbeddedQueue(Queue):
    """A one-node queue whose messages are stored in the namespace ``prism_queue_<name>``.

    Handles opened in one process on the same named store (``memory://NAME``,
    ``sqlite:///path``) and queue name share one schedule; other processes must not
    consume the same queue.
    """

    engine = "embedded"

    def __init__(self, name: str, store: Any = None, url: str | None = None, **options: Any) -> None:
        super().__init__(name)
        if store is None and url is None:
            raise InvalidArgument("an embedded queue needs a store or a store URL")
        self._store = store
        self._owns_backend = store is None
        # The store's backend, or one of its own built (and its options checked) now.
        self._backend: Backend = store.backend if store is not None else open_backend(str(url), **options)
        named = url is not None and url.split("://", 1)[-1].strip("/") != ""
        self._key = (url if named and url is not None else f"store-{id(store)}-{os.urandom(4).hex()}", name)
        self._ns = f"prism_queue_{name}"

    @classmethod
    def from_url(cls, url: str, name: str, *, store: Any = None, **options: Any) -> EmbeddedQueue:
        """A queue on ``memory://`` or ``sqlite://`` (``options`` as for the store, when no ``store``)."""
        if store is not None and options:
            raise InvalidArgument(
                f"a queue on an open store takes no options of its own, got {sorted(options)}"
            )
        return cls(name, store=store, url=url, **options)

    async def _put(self, message_id: str, stored: _Stored) -> None:
        write = StoredWrite(message_id, "", _encode(stored), os.urandom(8).hex(), updated_at=time.time())
        (outcome,) = await self._backend.write(self._ns, (write,))
        if outcome.error is not None:
            raise outcome.error

    async def _open(self) -> None:
        if self._owns_backend:
            await self._backend.open()
        else:
            await self._store.open()
        self._s = _schedules.setdefault(self._key, _Schedule())
        self._s.users += 1
        if self._s.loaded:
            return
        self._s.loaded = True
        after: str | None = None
        while True:
            ids = await self._backend.scan(self._ns, "", after, LOAD_PAGE)
            items = await self._backend.get_many(self._ns, [(message_id, "") for message_id in ids])
            for message_id, item in zip(ids, items, strict=True):
                if item is not None:
                    stored = _decode(item.value)
                    self._s.push(message_id, _Message(stored.data, stored.visible_at, stored.deliveries))
            if len(ids) < LOAD_PAGE:
                break
            after = ids[-1]

    async def _close(self) -> None:
        self._s.wakeup.set()
        self._s.users -= 1
        if self._s.users == 0:
            _schedules.pop(self._key, None)
        if self._owns_backend:
            await self._backend.close()

    async def enqueue(self, data: bytes, *, delay: float = 0.0) -> str:
        delay = check_seconds(delay, "delay")
        if not isinstance(data, bytes):
            raise InvalidArgument(f"a message is bytes, got {type(data).__name__}")
        self._check_open()
        now = time.time()
        message_id = f"{time.time_ns():020d}-{os.urandom(4).hex()}"
        msg = _Message(data, now + delay, 0)
        await self._put(message_id, _Stored(data, msg.visible_at, 0))
        self._s.push(message_id, msg)
        self._s.wakeup.set()
        return message_id

    def _take(self, max_messages: int, lease_seconds: float) -> list[Lease]:
        now = time.time()
        s = self._s
        out: list[Lease] = []
        while s.heap and len(out) < max_messages:
            visible_at, _, message_id = s.heap[0]
            if visible_at > now:
                break
            heapq.heappop(s.heap)
            msg = s.messages.get(message_id)
            if msg is None or msg.visible_at != visible_at:
                continue  # acknowledged or rescheduled since this entry was pushed
            msg.token = next(_tokens)
            msg.deliveries += 1
            msg.visible_at = now + lease_seconds
            heapq.heappush(s.heap, (msg.visible_at, next(s.order), message_id))
            out.append(Lease(message_id, msg.data, msg.deliveries, msg.token))
        return out

    async def lease(self, max_messages: int, lease_seconds: float, wait: float) -> list[Lease]:
        lease_seconds = check_seconds(lease_seconds, "lease_seconds", positive=True)
        deadline = time.monotonic() + check_seconds(wait, "wait")
        if isinstance(max_messages, bool) or not isinstance(max_messages, int) or max_messages < 1:
            raise InvalidArgument(f"max_messages must be an integer >= 1, got {max_messages!r}")
        while True:
            self._check_open()
            leased = self._take(max_messages, lease_seconds)
            if leased:
                return leased
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            if self._s.heap:
                remaining = min(remaining, max(0.0, self._s.heap[0][0] - time.time()))
            self._s.wakeup.clear()
            try:
                await asyncio.wait_for(self._s.wakeup.wait(), timeout=remaining)
            except TimeoutError:
                pass

    def _owned(self, lease: Lease) -> _Message | None:
        msg = self._s.messages.get(lease.message_id)
        return msg if msg is not None and msg.token == lease.handle else None

    async def heartbeat(self, lease: Lease, lease_seconds: float) -> bool:
        lease_seconds = check_seconds(lease_seconds, "lease_seconds", positive=True)
        self._check_open()
        msg = self._owned(lease)
        if msg is None or msg.visible_at < time.time():
            return False
        msg.visible_at = time.time() + lease_seconds
        heapq.heappush(self._s.heap, (msg.visible_at, next(self._s.order), lease.message_id))
        return True

    async def ack(self, lease: Lease) -> None:
        self._check_open()
        if self._owned(lease) is None:
            return
        del self._s.messages[lease.message_id]
        await self._backend.write(self._ns, (StoredWrite(lease.message_id, "", None),))

    async def release(self, lease: Lease, delay: float = 0.0) -> None:
        delay = check_seconds(delay, "delay")
        self._check_open()
        msg = self._owned(lease)
        if msg is None:
            return
        msg.token = None
        msg.visible_at = time.time() + delay
        await self._put(lease.message_id, _Stored(msg.data, msg.visible_at, msg.deliveries))
        heapq.heappush(self._s.heap, (msg.visible_at, next(self._s.order), lease.message_id))
        self._s.wakeup.set()

    async def depth(self) -> int:
        self._check_open()
        return len(self._s.messages)


class _Bus:
    """The subscribers of one in-process bus, shared by the LocalPubSubs of one URL."""

    def __init__(self) -> None:
        self.members: set[LocalPubSub] = set()


_buses: dict[str, _Bus] = {}


class LocalPubSub(PubSub):
    """Fan-out inside this process.

    ``memory://NAME`` and ``sqlite://PATH`` URLs share one bus per URL in the process;
    a bare ``memory://`` is private to its instance.
    """

    engine = "local"

    def __init__(self, bus_name: str = "") -> None:
        super().__init__()
        self._bus = _buses.setdefault(bus_name, _Bus()) if bus_name else _Bus()

    @classmethod
    def from_url(cls, url: str, *, store: Any = None, **options: Any) -> LocalPubSub:
        if options:
            raise InvalidArgument(f"the local pubsub takes no options, got {sorted(options)}")
        rest = url.split("://", 1)[1].strip("/")
        return cls(url if rest else "")

    async def _open(self) -> None:
        self._bus.members.add(self)

    async def _close(self) -> None:
        self._bus.members.discard(self)

    async def _publish(self, topic: str, data: bytes) -> None:
        for member in tuple(self._bus.members):
            if topic in member._subscribers:
                member._dispatch(topic, data)

    async def _listen(self, topic: str) -> None:
        return None

    async def _unlisten(self, topic: str) -> None:
        return None
