"""The Queue and PubSub contracts, run on every engine against a real server."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from prism.errors import InvalidArgument, StoreClosed
from prism.kv.store import Store, connect
from prism.patterns import open_pubsub, open_queue
from prism.patterns.base import PubSub, Queue

PUBSUB_ENGINES = ["embedded", "redis", "postgres", "nats"]
QUEUE_ENGINES = [*PUBSUB_ENGINES, "dynamodb"]


def engine_url(request: pytest.FixtureRequest, engine: str) -> str:
    if engine == "embedded":
        return "memory://"
    url: str = request.getfixturevalue(f"{engine}_url")
    return url


@pytest.fixture(params=QUEUE_ENGINES)
async def queue_factory(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    url = engine_url(request, request.param)
    name = f"t{os.urandom(4).hex()}"
    opened: list[Queue] = []
    store: Store | None = None
    if request.param == "embedded":
        url = f"memory://{name}"
        store = await connect(url)

    async def make() -> Queue:
        queue = await open_queue(url, name, store=store).open()
        opened.append(queue)
        return queue

    yield make
    for queue in opened:
        await queue.close()
    if store is not None:
        await store.close()


@pytest.fixture(params=PUBSUB_ENGINES)
async def pubsub_factory(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    url = engine_url(request, request.param)
    if request.param == "embedded":
        url = f"memory://bus-{os.urandom(4).hex()}"
    opened: list[PubSub] = []

    async def make() -> PubSub:
        pubsub = await open_pubsub(url).open()
        opened.append(pubsub)
        return pubsub

    yield make
    for pubsub in opened:
        await pubsub.close()


async def test_enqueue_lease_ack(queue_factory: Any) -> None:
    queue = await queue_factory()
    await queue.enqueue(b"one")
    await queue.enqueue(b"two")
    leases = await queue.lease(10, 5.0, 1.0)
    while len(leases) < 2:
        leases += await queue.lease(10, 5.0, 1.0)
    assert sorted(lease.data for lease in leases) == [b"one", b"two"]
    assert all(lease.deliveries in (0, 1) for lease in leases)
    for lease in leases:
        await queue.ack(lease)
    assert await queue.lease(10, 5.0, 0.2) == []
    assert await queue.depth() == 0


async def test_an_empty_lease_waits_then_returns_nothing(queue_factory: Any) -> None:
    queue = await queue_factory()
    start = time.monotonic()
    assert await queue.lease(1, 5.0, 0.3) == []
    assert 0.2 <= time.monotonic() - start < 3.0


async def test_a_waiting_lease_gets_a_new_message_promptly(queue_factory: Any) -> None:
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
    queue_factory: Any,
) -> None:
    queue = await queue_factory()
    other = await queue_factory()
    await queue.enqueue(b"job")
    (first,) = await queue.lease(1, 1.0, 2.0)
    assert await other.lease(1, 1.0, 0.2) == []
    await asyncio.sleep(1.3)
    second: list[Any] = []
    deadline = time.monotonic() + 5
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


async def test_heartbeats_keep_a_lease(queue_factory: Any) -> None:
    queue = await queue_factory()
    other = await queue_factory()
    await queue.enqueue(b"long job")
    (lease,) = await queue.lease(1, 1.0, 2.0)
    for _ in range(4):
        await asyncio.sleep(0.4)
        assert await queue.heartbeat(lease, 1.0) is True
    assert await other.lease(1, 1.0, 0.3) == []
    await queue.ack(lease)
    assert await queue.depth() == 0


async def test_release_with_delay_and_delayed_enqueue(queue_factory: Any) -> None:
    queue = await queue_factory()
    await queue.enqueue(b"later", delay=0.8)
    await queue.enqueue(b"now")
    (now,) = await queue.lease(5, 5.0, 1.0)
    assert now.data == b"now"
    await queue.release(now, delay=0.8)
    start = time.monotonic()
    assert await queue.lease(5, 5.0, 0.3) == []
    got: list[bytes] = []
    deadline = start + 6
    while len(got) < 2 and time.monotonic() < deadline:
        for lease in await queue.lease(5, 5.0, 0.5):
            got.append(lease.data)
            await queue.ack(lease)
    assert sorted(got) == [b"later", b"now"]
    assert time.monotonic() - start >= 0.45


async def test_concurrent_consumers_each_message_once(queue_factory: Any) -> None:
    queues = [await queue_factory() for _ in range(3)]
    sent = {f"m{i}".encode() for i in range(60)}
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


async def test_queue_input_and_lifecycle_errors(queue_factory: Any) -> None:
    queue = await queue_factory()
    with pytest.raises(InvalidArgument):
        await queue.enqueue("text")
    with pytest.raises(InvalidArgument):
        await queue.enqueue(b"x", delay=-1)
    with pytest.raises(InvalidArgument):
        await queue.lease(0, 1.0, 0.0)
    await queue.close()
    await queue.close()
    with pytest.raises(StoreClosed):
        await queue.enqueue(b"x")
    with pytest.raises(InvalidArgument):
        open_queue("memory://", "bad name!")
    with pytest.raises(InvalidArgument, match="Did you mean"):
        open_queue("rediz://x", "q")


async def eventually(condition: Callable[[], bool], within: float = 5.0) -> None:
    for _ in range(int(within / 0.05)):
        if condition():
            return
        await asyncio.sleep(0.05)


async def test_pubsub_fans_out_to_every_subscriber_of_a_topic(pubsub_factory: Any) -> None:
    one, two, publisher = [await pubsub_factory() for _ in range(3)]
    got: dict[str, list[bytes]] = {"a1": [], "a2": [], "b": []}
    sub1 = await one.subscribe("t.a", lambda topic, data: got["a1"].append(data))
    await two.subscribe("t.a", lambda topic, data: got["a2"].append(data))
    await two.subscribe("t.b", lambda topic, data: got["b"].append(data))
    await asyncio.sleep(0.2)
    for i in range(5):
        await publisher.publish("t.a", b"a%d" % i)
    await publisher.publish("t.b", b"b")
    await eventually(lambda: len(got["a1"]) == 5 and len(got["a2"]) == 5 and bool(got["b"]))
    assert got["a1"] == got["a2"] == [b"a%d" % i for i in range(5)]
    assert got["b"] == [b"b"]
    await sub1.close()
    await sub1.close()
    await asyncio.sleep(0.2)
    await publisher.publish("t.a", b"after")
    await eventually(lambda: len(got["a2"]) == 6)
    assert got["a2"][-1] == b"after"
    assert got["a1"] == [b"a%d" % i for i in range(5)]


async def test_pubsub_input_errors(pubsub_factory: Any) -> None:
    pubsub = await pubsub_factory()
    with pytest.raises(InvalidArgument):
        await pubsub.publish("bad topic", b"x")
    with pytest.raises(InvalidArgument):
        await pubsub.publish("t", b"x" * (pubsub.max_message_bytes + 1))


async def test_redis_pubsub_resubscribes_after_its_connection_is_killed(
    request: pytest.FixtureRequest,
) -> None:
    import redis.asyncio as aioredis

    url = engine_url(request, "redis")
    got: list[bytes] = []
    async with open_pubsub(url) as listener, open_pubsub(url) as publisher:
        await listener.subscribe("t.kill", lambda topic, data: got.append(data))
        admin: Any = aioredis.from_url(url)
        try:
            await admin.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
            for i in range(50):
                await publisher.publish("t.kill", b"after-%d" % i)
                if got:
                    break
                await asyncio.sleep(0.1)
        finally:
            await admin.aclose()
    assert got and got[0].startswith(b"after-")
