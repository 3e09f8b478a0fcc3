"""The queue and pub/sub contracts as suites every engine runs against its real server.

Run them on an engine by subclassing and providing the URL fixtures (and, optionally,
the options ones)::

    from prism.testing.messaging import PubSubSuite, QueueSuite

    class TestMyQueue(QueueSuite):
        @pytest.fixture
        def queue_url(self, my_server) -> str:
            return my_server.url

    class TestMyPubSub(PubSubSuite):
        @pytest.fixture
        def pubsub_url(self, my_server) -> str:
            return my_server.url

The suites open queues and pub/subs through ``prism.patterns.open_queue`` and
``open_pubsub``, so a third-party engine plugged in with ``prism.backends.register``
runs exactly what Prism's own engines run. Each queue test uses a fresh, uniquely
named queue, so the suites never wipe data and can share one server. Handles of one
URL must see the same messages (on ``memory://`` give each test a named URL).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

import prism
from prism.backends.messaging import Lease, PubSub, Queue
from prism.errors import InvalidArgument, StoreClosed
from prism.patterns import open_pubsub, open_queue
from prism.testing.plugin import async_fixture

__all__ = ["PubSubSuite", "QueueSuite"]

#: Longest the suites wait for something that should happen (a delivery, a redelivery).
PATIENCE = 5.0
#: Pause between two looks while waiting.
POLL_INTERVAL = 0.05
#: Lease of the tests that wait one out: short, so the suite stays fast.
SHORT_LEASE = 1.0
#: Messages shared out by the concurrent-consumer test, and its consumers.
CONCURRENT_MESSAGES = 60
CONSUMERS = 3
#: Time given to an engine to start delivering to a new subscription.
SUBSCRIBE_SETTLE = 0.2

QueueFactory = Callable[[], Awaitable[Queue]]
PubSubFactory = Callable[[], Awaitable[PubSub]]


async def _eventually(condition: Callable[[], bool], within: float = PATIENCE) -> None:
    for _ in range(int(within / POLL_INTERVAL)):
        if condition():
            return
        await asyncio.sleep(POLL_INTERVAL)


class QueueSuite:
    """The at-least-once leased queue contract (``prism.backends.messaging.Queue``)."""

    @pytest.fixture
    def queue_url(self) -> str:
        raise NotImplementedError("a QueueSuite subclass provides the queue_url fixture")

    @pytest.fixture
    def queue_options(self) -> dict[str, Any]:
        return {}

    @async_fixture
    async def queue_factory(
        self, queue_url: str, queue_options: dict[str, Any]
    ) -> AsyncIterator[QueueFactory]:
        """``await make()`` -> an open handle on one fresh queue; every handle sees the same messages."""
        name = f"t{uuid.uuid4().hex[:12]}"
        opened: list[Queue] = []

        async def make() -> Queue:
            queue = await open_queue(queue_url, name, **queue_options).open()
            opened.append(queue)
            return queue

        yield make
        for queue in opened:
            await queue.close()

    async def test_enqueue_lease_ack(self, queue_factory: QueueFactory) -> None:
        queue = await queue_factory()
        await queue.enqueue(b"one")
        await queue.enqueue(b"two")
        leases = await queue.lease(10, 5.0, 1.0)
        while len(leases) < 2:
            more = await queue.lease(10, 5.0, 1.0)
            assert more, "an enqueued message was never delivered"
            leases += more
        assert sorted(lease.data for lease in leases) == [b"one", b"two"]
        assert all(lease.deliveries in (0, 1) for lease in leases)
        for lease in leases:
            await queue.ack(lease)
        assert await queue.lease(10, 5.0, 0.2) == []
        assert await queue.depth() == 0

    async def test_an_empty_lease_waits_then_returns_nothing(self, queue_factory: QueueFactory) -> None:
        queue = await queue_factory()
        start = time.monotonic()
        assert await queue.lease(1, 5.0, 0.3) == []
        assert 0.2 <= time.monotonic() - start < 3.0

    async def test_a_waiting_lease_gets_a_new_message_promptly(self, queue_factory: QueueFactory) -> None:
        queue = await queue_factory()
        other = await queue_factory()
        waiting = asyncio.create_task(queue.lease(1, 5.0, 3.0))
        await asyncio.sleep(0.2)
        start = time.monotonic()
        await other.enqueue(b"wake")
        leases = await waiting
        if not leases:  # an engine that polls may need one more round
            leases = await queue.lease(1, 5.0, 3.0)
        assert [lease.data for lease in leases] == [b"wake"]
        assert time.monotonic() - start < 2.5

    async def test_an_expired_lease_is_delivered_again_and_the_stale_one_settles_nothing(
        self, queue_factory: QueueFactory
    ) -> None:
        queue = await queue_factory()
        other = await queue_factory()
        await queue.enqueue(b"job")
        (first,) = await queue.lease(1, SHORT_LEASE, 2.0)
        assert await other.lease(1, SHORT_LEASE, 0.2) == []
        await asyncio.sleep(SHORT_LEASE + 0.3)
        second: list[Lease] = []
        deadline = time.monotonic() + PATIENCE
        while not second and time.monotonic() < deadline:
            second = await other.lease(1, 5.0, 0.5)
        assert [lease.data for lease in second] == [b"job"]
        if second[0].deliveries:
            assert second[0].deliveries == 2
        await queue.ack(first)  # stale: must not remove the redelivered message
        assert await queue.heartbeat(first, 5.0) is False
        assert await queue.depth() == 1
        await other.ack(second[0])
        assert await queue.depth() == 0

    async def test_heartbeats_keep_a_lease(self, queue_factory: QueueFactory) -> None:
        queue = await queue_factory()
        other = await queue_factory()
        await queue.enqueue(b"long job")
        (lease,) = await queue.lease(1, SHORT_LEASE, 2.0)
        for _ in range(4):
            await asyncio.sleep(0.4 * SHORT_LEASE)
            assert await queue.heartbeat(lease, SHORT_LEASE) is True
        assert await other.lease(1, SHORT_LEASE, 0.3) == []
        await queue.ack(lease)
        assert await queue.depth() == 0

    async def test_release_with_delay_and_delayed_enqueue(self, queue_factory: QueueFactory) -> None:
        queue = await queue_factory()
        await queue.enqueue(b"later", delay=0.8)
        await queue.enqueue(b"now")
        (now,) = await queue.lease(5, 5.0, 1.0)
        assert now.data == b"now"
        await queue.release(now, delay=0.8)
        start = time.monotonic()
        assert await queue.lease(5, 5.0, 0.3) == []
        got: list[bytes] = []
        deadline = start + PATIENCE + 1
        while len(got) < 2 and time.monotonic() < deadline:
            for lease in await queue.lease(5, 5.0, 0.5):
                got.append(lease.data)
                await queue.ack(lease)
        assert sorted(got) == [b"later", b"now"]
        assert time.monotonic() - start >= 0.45

    async def test_concurrent_consumers_each_message_once(self, queue_factory: QueueFactory) -> None:
        queues = [await queue_factory() for _ in range(CONSUMERS)]
        sent = {f"m{i}".encode() for i in range(CONCURRENT_MESSAGES)}
        for data in sent:
            await queues[0].enqueue(data)
        received: list[bytes] = []

        async def consume(queue: Queue) -> None:
            idle = 0
            while idle < 3:
                leases = await queue.lease(4, 10.0, 0.3)
                idle = 0 if leases else idle + 1
                for lease in leases:
                    received.append(lease.data)
                    await queue.ack(lease)

        await asyncio.gather(*(consume(q) for q in queues))
        assert sorted(received) == sorted(sent)

    async def test_a_queue_on_an_open_store_shares_its_messages(
        self, queue_url: str, queue_options: dict[str, Any], queue_factory: QueueFactory
    ) -> None:
        standalone = await queue_factory()
        async with (
            prism.connect(queue_url, **queue_options) as store,
            open_queue(queue_url, standalone.name, store=store) as on_store,
        ):
            await on_store.enqueue(b"from the store's queue")
            leases: list[Lease] = []
            deadline = time.monotonic() + PATIENCE
            while not leases and time.monotonic() < deadline:
                leases = await standalone.lease(1, 5.0, 0.5)
            assert [lease.data for lease in leases] == [b"from the store's queue"]
            await standalone.ack(leases[0])
            assert await on_store.depth() == 0

    async def test_queue_input_and_lifecycle_errors(
        self, queue_url: str, queue_factory: QueueFactory
    ) -> None:
        queue = await queue_factory()
        with pytest.raises(InvalidArgument):
            await queue.enqueue("text")  # type: ignore[arg-type]
        with pytest.raises(InvalidArgument):
            await queue.enqueue(b"x", delay=-1)
        with pytest.raises(InvalidArgument):
            await queue.lease(0, 1.0, 0.0)
        with pytest.raises(InvalidArgument):
            await queue.lease(1, 0.0, 0.0)
        await queue.close()
        await queue.close()
        with pytest.raises(StoreClosed):
            await queue.enqueue(b"x")
        with pytest.raises(StoreClosed):
            await queue.open()
        with pytest.raises(InvalidArgument):
            open_queue(queue_url, "bad name!")


class PubSubSuite:
    """The at-most-once topic fan-out contract (``prism.backends.messaging.PubSub``)."""

    @pytest.fixture
    def pubsub_url(self) -> str:
        raise NotImplementedError("a PubSubSuite subclass provides the pubsub_url fixture")

    @pytest.fixture
    def pubsub_options(self) -> dict[str, Any]:
        return {}

    @async_fixture
    async def pubsub_factory(
        self, pubsub_url: str, pubsub_options: dict[str, Any]
    ) -> AsyncIterator[PubSubFactory]:
        """``await make()`` -> an open pub/sub on the engine; all of them reach each other."""
        opened: list[PubSub] = []

        async def make() -> PubSub:
            pubsub = await open_pubsub(pubsub_url, **pubsub_options).open()
            opened.append(pubsub)
            return pubsub

        yield make
        for pubsub in opened:
            await pubsub.close()

    @staticmethod
    def topic(name: str) -> str:
        """A topic private to this test run."""
        return f"t{uuid.uuid4().hex[:10]}.{name}"

    async def test_pubsub_fans_out_to_every_subscriber_of_a_topic(
        self, pubsub_factory: PubSubFactory
    ) -> None:
        one, two, publisher = [await pubsub_factory() for _ in range(3)]
        a, b = self.topic("a"), self.topic("b")
        got: dict[str, list[bytes]] = {"a1": [], "a2": [], "b": []}
        sub1 = await one.subscribe(a, lambda topic, data: got["a1"].append(data))
        await two.subscribe(a, lambda topic, data: got["a2"].append(data))
        await two.subscribe(b, lambda topic, data: got["b"].append(data))
        await asyncio.sleep(SUBSCRIBE_SETTLE)
        for i in range(5):
            await publisher.publish(a, b"a%d" % i)
        await publisher.publish(b, b"b")
        await _eventually(lambda: len(got["a1"]) == 5 and len(got["a2"]) == 5 and bool(got["b"]))
        assert got["a1"] == got["a2"] == [b"a%d" % i for i in range(5)]
        assert got["b"] == [b"b"]
        await sub1.close()
        await sub1.close()
        await asyncio.sleep(SUBSCRIBE_SETTLE)
        await publisher.publish(a, b"after")
        await _eventually(lambda: len(got["a2"]) == 6)
        assert got["a2"][-1] == b"after"
        assert got["a1"] == [b"a%d" % i for i in range(5)]

    async def test_a_failing_subscriber_does_not_stop_the_others(self, pubsub_factory: PubSubFactory) -> None:
        pubsub = await pubsub_factory()
        topic = self.topic("fail")
        got: list[bytes] = []

        def broken(topic: str, data: bytes) -> None:
            raise RuntimeError("subscriber bug")

        await pubsub.subscribe(topic, broken)
        await pubsub.subscribe(topic, lambda topic, data: got.append(data))
        await asyncio.sleep(SUBSCRIBE_SETTLE)
        await pubsub.publish(topic, b"x")
        await _eventually(lambda: bool(got))
        assert got == [b"x"]

    async def test_pubsub_input_and_lifecycle_errors(self, pubsub_factory: PubSubFactory) -> None:
        pubsub = await pubsub_factory()
        with pytest.raises(InvalidArgument):
            await pubsub.publish("bad topic", b"x")
        with pytest.raises(InvalidArgument):
            await pubsub.publish(self.topic("big"), b"x" * (pubsub.max_message_bytes + 1))
        with pytest.raises(InvalidArgument):
            await pubsub.subscribe("", lambda topic, data: None)
        await pubsub.close()
        await pubsub.close()
        with pytest.raises(StoreClosed):
            await pubsub.publish(self.topic("closed"), b"x")
