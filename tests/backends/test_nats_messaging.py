"""The NATS queue (a JetStream work-queue stream) and pub/sub (core subjects) against a real server.

The shipped suites run unchanged; the tests below cover what the engine adds: the
store's URL options reach the queue's and pub/sub's connections, and given a store
they ride on its connection.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

import prism
from prism.errors import BackendUnavailable, InvalidArgument
from prism.patterns import open_pubsub, open_queue
from prism.testing.messaging import PubSubSuite, QueueSuite
from prism.testing.servers.nats import NatsServer, nats_server


@pytest.fixture(scope="module")
def server() -> Iterator[NatsServer]:
    with nats_server() as s:
        yield s


class TestQueue(QueueSuite):
    @pytest.fixture
    def queue_url(self, server: NatsServer) -> str:
        return server.url


class TestPubSub(PubSubSuite):
    @pytest.fixture
    def pubsub_url(self, server: NatsServer) -> str:
        return server.url


async def test_the_connect_timeout_of_the_url_bounds_opening_a_queue_and_a_pubsub(silent_port: int) -> None:
    url = f"nats://127.0.0.1:{silent_port}?connect_timeout=0.5"
    for opened in (open_queue(url, "jobs"), open_pubsub(url)):
        started = time.monotonic()
        with pytest.raises(BackendUnavailable, match=r"within 0\.5 s"):
            async with asyncio.timeout(10):
                await opened.open()
        assert time.monotonic() - started < 3.0


async def test_queue_and_pubsub_refuse_unknown_options(server: NatsServer) -> None:
    with pytest.raises(InvalidArgument, match="no_such_option"):
        open_queue(f"{server.url}?no_such_option=1", "jobs")
    with pytest.raises(InvalidArgument, match="operation_timeout"):
        open_pubsub(server.url, operation_timeout="soon")


async def test_a_queue_and_pubsub_on_a_store_ride_on_its_connection(server: NatsServer) -> None:
    store = await prism.connect(server.url).open()
    queue = await open_queue(server.url, "onstore", store=store).open()
    pubsub = await open_pubsub(server.url, store=store).open()
    got: list[bytes] = []
    try:
        await queue.enqueue(b"x")
        await pubsub.subscribe("t.shared", lambda topic, data: got.append(data))
        await pubsub.publish("t.shared", b"hello")
        for _ in range(100):
            if got:
                break
            await asyncio.sleep(0.02)
        assert got == [b"hello"]
        await store.close()
        with pytest.raises(BackendUnavailable, match="not open"):
            await queue.enqueue(b"y")
        with pytest.raises(BackendUnavailable, match="not open"):
            await pubsub.publish("t.shared", b"y")
    finally:
        await pubsub.close()
        await queue.close()
        await store.close()


async def test_a_queue_on_the_store_url_with_its_options_shares_the_store_connection(
    server: NatsServer,
) -> None:
    url = f"{server.url}?operation_timeout=4&revision_cache=10"
    store = await prism.connect(url).open()
    queue = await open_queue(url, "sameopts", store=store).open()
    try:
        await queue.enqueue(b"x")
        await store.close()
        with pytest.raises(BackendUnavailable, match="not open"):
            await queue.enqueue(b"y")
    finally:
        await queue.close()
        await store.close()
