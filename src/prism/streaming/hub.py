"""Live delivery: followers (a WebSocket or an SSE stream) and the hub that feeds them from pubsub.

Each follower has one bounded outbound queue and one sender task, and keeps, per
request it follows, the next ``seq`` it owes the client. An event below that number
is a duplicate and dropped; one above it means events were missed (a pubsub blip, a
replay racing live delivery) and the gap is filled from the event log first. So a
client sees every event of a request once, in order, however events reach the node.

Events are published on their owner's topic. The hub subscribes once per topic that
has a local follower and routes each event by its request: a follower gets the
events of the requests it follows (a WebSocket: those it submitted or subscribed to;
an SSE stream: its one request), and only a follower that asked for its user's
whole feed gets every event of that topic.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import msgspec

from prism.patterns.base import PubSub, Subscription
from prism.streaming.eventlog import EventLog
from prism.streaming.metrics import DELIVERY_SECONDS, EVENTS_DELIVERED
from prism.streaming.protocol import TERMINAL_TYPES, EventHeader, decode_event_header
from prism.streaming.requests import RequestRecord

__all__ = ["Follower", "Hub"]

log = logging.getLogger("prism.streaming")

#: Finished requests a follower remembers, so late duplicates of their events are dropped.
FINISHED_MEMORY = 256

_DIRECT, _EVENT, _ACK, _SUBSCRIBE, _FORGET, _CHECK, _STOP = range(7)


class Follower:
    """One client that receives events: a WebSocket connection or an SSE stream.

    Per request it keeps the next ``seq`` it owes the client. A follower of a user's
    whole feed also follows, from the first event it sees, every request of that user
    it was not told about (``auto_follow``); a ``subscribe`` later sends every event
    after its ``after_seq`` again, in order (a client that kept them drops the numbers
    it has).
    """

    def __init__(
        self,
        log: EventLog,
        send: Callable[[bytes], Awaitable[None]],
        *,
        queue_size: int,
        auto_follow: bool = False,
        on_overflow: Callable[[], None] | None = None,
        on_terminal: Callable[[str], None] | None = None,
        on_forget: Callable[[str], None] | None = None,
    ) -> None:
        self._log = log
        self._send = send
        self._queue: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue(queue_size)
        self._auto = auto_follow
        self._on_overflow = on_overflow
        self._on_terminal = on_terminal
        self._on_forget = on_forget
        self._cursors: dict[str, int] = {}
        #: When each followed request last moved (monotonic), to notice one that went quiet.
        self._moved: dict[str, float] = {}
        self._held: dict[str, list[tuple[str, int, str, bytes | None]]] = {}
        self._finished: OrderedDict[str, int] = OrderedDict()
        self._auto_start: OrderedDict[str, int] = OrderedDict()
        self._task: asyncio.Task[None] | None = None
        self._sending = False
        self.overflowed = False
        self.topics: set[str] = set()
        self.watched: set[str] = set()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stop sending (what is queued is dropped)."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
            await asyncio.wait([self._task])

    def _put(self, item: tuple[Any, ...]) -> None:
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            if not self.overflowed:
                self.overflowed = True
                if self._on_overflow is not None:
                    self._on_overflow()

    # -- what the session and the hub call (never block) ----------------------------

    def direct(self, data: bytes) -> None:
        """Send a message that is not a request event (a response, a pong, an error)."""
        self._put((_DIRECT, data))

    async def send_now(self, data: bytes) -> None:
        """Like :meth:`direct`, but sent from the caller's task when nothing is queued (one hop less).

        Only for messages whose order against other requests' events does not matter.
        """
        if self._sending or not self._queue.empty() or self._task is None or self._task.done():
            self._put((_DIRECT, data))
            return
        self._sending = True
        try:
            await self._send(data)
        except Exception as exc:
            log.debug("direct send failed: %r", exc)
        finally:
            self._sending = False

    def hold(self, request_id: str) -> None:
        """Keep live events of ``request_id`` back until an ack, a subscribe or a forget releases them."""
        self._held.setdefault(request_id, [])

    def expect(self, request_id: str) -> None:
        """A request is being submitted here: follow it from its first event, after its ack."""
        self.hold(request_id)
        self._cursors.setdefault(request_id, 1)

    def acknowledge(self, request_id: str, ack: bytes, *, replay_from: RequestRecord | None = None) -> None:
        """Send the ack of an expected request, then its events (replaying the log first for a repeat)."""
        self._put((_ACK, request_id, ack, replay_from))

    def forget(self, request_id: str, reply: bytes | None = None) -> None:
        """A submission or subscribe failed: send ``reply`` and release what was held."""
        self._put((_FORGET, request_id, reply))

    def subscribe(
        self, request_id: str, after_seq: int, record: RequestRecord, reply: bytes | None = None
    ) -> None:
        """Send ``reply``, then the request's events after ``after_seq`` from the log, then live ones."""
        self._put((_SUBSCRIBE, request_id, after_seq, record, reply))

    def offer(self, header: EventHeader, data: bytes | None) -> None:
        """A live event (``data`` None: too large for pubsub, read it from the log)."""
        self._put((_EVENT, header.request_id, header.seq, header.type, data))

    def follow_all(self) -> None:
        """Also follow, from the first event seen, every request routed here unasked (a user's feed)."""
        self._auto = True

    @property
    def follows_all(self) -> bool:
        return self._auto

    def following(self, request_id: str) -> bool:
        return request_id in self._cursors

    def check_quiet(self, now: float, quiet: float) -> int:
        """Re-read requests with no event for ``quiet`` seconds, in case a publish was lost; how many."""
        stale = [rid for rid in self._cursors if now - self._moved.get(rid, now) >= quiet]
        for rid in stale:
            self._moved[rid] = now
            self._put((_CHECK, rid))
        return len(stale)

    # -- the sender task --------------------------------------------------------------

    async def _run(self) -> None:
        try:
            while True:
                self._sending = False
                item = await self._queue.get()
                self._sending = True
                kind = item[0]
                if kind == _DIRECT:
                    await self._send(item[1])
                elif kind == _EVENT:
                    rid, seq, type_, data = item[1:]
                    held = self._held.get(rid)
                    if held is not None:
                        held.append((rid, seq, type_, data))
                    else:
                        await self._deliver(rid, seq, type_, data)
                        if data is not None:
                            _observe_delivery(data)
                elif kind == _ACK:
                    rid, ack, replay_from = item[1:]
                    await self._send(ack)
                    if replay_from is not None:
                        await self._catch_up(rid, 0, replay_from)
                    await self._release(rid)
                elif kind == _SUBSCRIBE:
                    rid, after_seq, record, reply = item[1:]
                    if reply is not None:
                        await self._send(reply)
                    await self._catch_up(rid, after_seq, record)
                    await self._release(rid)
                elif kind == _CHECK:
                    await self._check(item[1])
                elif kind == _FORGET:
                    rid, reply = item[1:]
                    if reply is not None:
                        await self._send(reply)
                    if self._cursors.get(rid) == 1 and rid not in self._auto_start:
                        del self._cursors[rid]
                        if self._on_forget is not None:
                            self._on_forget(rid)
                    await self._release(rid)
                else:
                    return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # The client went away mid-send; the session notices and cleans up.
            log.debug("follower stopped: %r", exc)

    async def _check(self, rid: str) -> None:
        expected = self._cursors.get(rid)
        if expected is None or rid in self._held:
            return
        latest = await self._log.latest(rid)
        if latest is None or latest[0] < expected:
            return
        for seq, data in await self._log.read(rid, expected - 1, latest[0], tail=latest):
            await self._deliver(rid, seq, decode_event_header(data).type, data)

    async def _release(self, rid: str) -> None:
        for event in self._held.pop(rid, ()):
            await self._deliver(*event)

    async def _catch_up(self, rid: str, after_seq: int, record: RequestRecord) -> None:
        # The client asks for every event after ``after_seq``, in order: also those this connection
        # already sent while following the request unasked (``auto_follow``). A client keeps the
        # events of the requests it follows only, so it may have dropped them; it drops a number
        # it has.
        self._auto_start.pop(rid, None)
        self._finished.pop(rid, None)
        start = after_seq + 1
        self._cursors[rid] = start
        self._moved[rid] = time.monotonic()
        events = await self._log.read(rid, start - 1, record.seq, tail=(record.seq, record.tail))
        for seq, data in events:
            await self._deliver(rid, seq, decode_event_header(data).type, data)

    async def _deliver(self, rid: str, seq: int, type_: str, data: bytes | None) -> None:
        if rid in self._finished:
            return
        expected = self._cursors.get(rid)
        if expected is None:
            if not self._auto:
                return
            expected = self._cursors[rid] = seq
            self._moved[rid] = time.monotonic()
            self._auto_start[rid] = seq
            if len(self._auto_start) > FINISHED_MEMORY:
                self._auto_start.popitem(last=False)
        if seq < expected:
            return
        if seq > expected:
            for missed_seq, missed in await self._log.read(rid, expected - 1, seq - 1):
                await self._send_event(rid, missed_seq, decode_event_header(missed).type, missed)
                if rid in self._finished:
                    return
        if data is None:
            found = await self._log.read(rid, seq - 1, seq)
            if not found:
                return
            data = found[0][1]
            type_ = decode_event_header(data).type
        await self._send_event(rid, seq, type_, data)

    async def _send_event(self, rid: str, seq: int, type_: str, data: bytes) -> None:
        await self._send(data)
        EVENTS_DELIVERED.inc()
        if type_ in TERMINAL_TYPES:
            self._cursors.pop(rid, None)
            self._moved.pop(rid, None)
            self._finished[rid] = seq
            if len(self._finished) > FINISHED_MEMORY:
                self._finished.popitem(last=False)
            if self._on_terminal is not None:
                self._on_terminal(rid)
        else:
            self._cursors[rid] = seq + 1
            self._moved[rid] = time.monotonic()


class Hub:
    """Routes published events to the local followers of their request, and to the feeds of their topic.

    Events are published on their owner's topic; the hub subscribes to a topic once,
    while a local follower needs it, and hands each event only to the followers of its
    request (and to the followers that asked for the owner's whole feed). So the work
    per event is proportional to who follows that request, not to how many connections
    its owner has.
    """

    def __init__(self, pubsub: PubSub) -> None:
        self._pubsub = pubsub
        #: The followers that asked for every event of a topic (a user's feed).
        self._by_topic: dict[str, set[Follower]] = {}
        #: The followers of each request.
        self._watchers: dict[str, set[Follower]] = {}
        self._subs: dict[str, Subscription] = {}
        self._refs: dict[str, int] = {}
        self._lock = asyncio.Lock()

    @property
    def followers(self) -> int:
        return len(self.followers_set())

    async def _ref(self, topic: str) -> None:
        async with self._lock:
            self._refs[topic] = self._refs.get(topic, 0) + 1
            if topic not in self._subs:
                self._subs[topic] = await self._pubsub.subscribe(topic, self._on_message)

    async def _unref(self, topic: str) -> None:
        async with self._lock:
            left = self._refs.get(topic, 0) - 1
            if left > 0:
                self._refs[topic] = left
                return
            self._refs.pop(topic, None)
            sub = self._subs.pop(topic, None)
        if sub is not None:
            await sub.close()

    async def listen(self, follower: Follower, topic: str) -> None:
        """Keep ``topic`` subscribed while ``follower`` is here, so :meth:`route` needs no round trip."""
        if topic not in follower.topics:
            follower.topics.add(topic)
            await self._ref(topic)

    async def add(self, follower: Follower, topic: str) -> None:
        """``follower`` gets every event published on ``topic`` (a user's feed)."""
        await self.listen(follower, topic)
        self._by_topic.setdefault(topic, set()).add(follower)

    def feeds(self, topic: str) -> int:
        """How many local followers get the whole feed of ``topic``."""
        return len(self._by_topic.get(topic, ()))

    def route(self, follower: Follower, request_id: str) -> None:
        """``follower`` gets the events of ``request_id`` (its topic already listened to)."""
        self._watchers.setdefault(request_id, set()).add(follower)
        follower.watched.add(request_id)

    def unroute(self, follower: Follower, request_id: str) -> None:
        """``follower`` no longer gets the events of ``request_id`` (unless it takes the whole feed)."""
        follower.watched.discard(request_id)
        watchers = self._watchers.get(request_id)
        if watchers is not None:
            watchers.discard(follower)
            if not watchers:
                del self._watchers[request_id]

    async def watch(self, follower: Follower, topic: str, request_id: str) -> None:
        """``follower`` gets the events of one request, published on its owner's ``topic``."""
        self.route(follower, request_id)
        await self.listen(follower, topic)

    async def remove(self, follower: Follower) -> None:
        """Stop routing to ``follower``."""
        for rid in list(follower.watched):
            self.unroute(follower, rid)
        for topic in follower.topics:
            followers = self._by_topic.get(topic)
            if followers is not None:
                followers.discard(follower)
                if not followers:
                    del self._by_topic[topic]
            await self._unref(topic)
        follower.topics.clear()

    def followers_set(self) -> set[Follower]:
        """Every follower routed by this hub."""
        found: set[Follower] = set()
        for followers in self._by_topic.values():
            found.update(followers)
        for followers in self._watchers.values():
            found.update(followers)
        return found

    async def close(self) -> None:
        async with self._lock:
            subs, self._subs = list(self._subs.values()), {}
            self._refs.clear()
        for sub in subs:
            await sub.close()

    def _on_message(self, topic: str, data: bytes) -> None:
        try:
            header = decode_event_header(data)
        except msgspec.DecodeError:
            log.warning("dropped an undecodable event on %s", topic)
            return
        payload: bytes | None = data
        if header.type == "ref":
            payload = None
            header = EventHeader("ref", header.request_id, header.seq)
        watchers = self._watchers.get(header.request_id, ())
        for follower in watchers:
            follower.offer(header, payload)
        for follower in self._by_topic.get(topic, ()):
            if follower not in watchers:
                follower.offer(header, payload)


class _Stamp(msgspec.Struct):
    timestamp: str | None = None


_decode_stamp = msgspec.json.Decoder(_Stamp).decode


def _observe_delivery(data: bytes) -> None:
    """Record how long a live event took from its timestamp to its sending (millisecond stamps)."""
    try:
        stamp = _decode_stamp(data).timestamp
    except msgspec.DecodeError:
        return
    if stamp:
        sent = datetime.fromisoformat(stamp).timestamp()
        DELIVERY_SECONDS.observe(max(0.0, time.time() - sent))
