"""The Redis queue and pub/sub against a real ``redis-server``.

The shipped queue and pub/sub suites run unchanged; the tests below cover what the
engine adds: URL options reach the queue's and pub/sub's connections, a store's own
options and pool are used by the queue and pub/sub opened on it, and a killed pub/sub
connection resubscribes.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

import prism
from prism.errors import BackendUnavailable, InvalidArgument, StoreClosed
from prism.patterns import open_pubsub, open_queue
from prism.testing.messaging import PubSubSuite, QueueSuite
from prism.testing.servers.redis import RedisServer, redis_server


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    with redis_server() as s:
        yield s


@pytest.fixture
async def raw(server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(server.url)
    yield client
    await client.aclose()


class TestQueue(QueueSuite):
    @pytest.fixture
    def queue_url(self, server: RedisServer) -> str:
        return server.url


class TestPubSub(PubSubSuite):
    @pytest.fixture
    def pubsub_url(self, server: RedisServer) -> str:
        return server.url


def _name() -> str:
    return f"m{uuid.uuid4().hex[:10]}"


async def _client_names(raw: aioredis.Redis) -> list[str]:
    return [str(c.get("name", "")) for c in await raw.client_list()]


async def test_url_options_reach_the_queue_connection(server: RedisServer, raw: aioredis.Redis) -> None:
    name, prefix = _name(), _name()
    async with open_queue(f"{server.url}?client_name={name}&key_prefix={prefix}", "jobs") as queue:
        await queue.enqueue(b"x")
        assert name in await _client_names(raw)
        assert await raw.exists(f"{prefix}:queue:{{jobs}}:stream") == 1


async def test_url_options_reach_the_pubsub_connection(server: RedisServer, raw: aioredis.Redis) -> None:
    name, prefix = _name(), _name()
    got: list[bytes] = []
    async with open_pubsub(f"{server.url}?client_name={name}&key_prefix={prefix}") as pubsub:
        await pubsub.subscribe("t", lambda topic, data: got.append(data))
        listeners = [c for c in await raw.client_list() if c.get("name") == name and c.get("sub") == "1"]
        assert listeners, "the subscribed connection carries the URL's client_name"
        assert await raw.publish(f"{prefix}:ps:t", b"hello") == 1
        for _ in range(100):
            if got:
                break
            await asyncio.sleep(0.02)
    assert got == [b"hello"]


async def test_the_operation_timeout_of_the_url_bounds_a_queue_call(silent_port: int) -> None:
    url = f"redis://127.0.0.1:{silent_port}/0?operation_timeout=0.3&max_retries=0"
    queue = open_queue(url, "jobs")
    started = time.monotonic()
    with pytest.raises(BackendUnavailable, match=r"within 0\.3 s"):
        async with asyncio.timeout(5):
            await queue.open()
    assert time.monotonic() - started < 2.0


async def test_tls_options_of_the_url_reach_the_queue_connection(silent_port: int, tmp_path: Path) -> None:
    missing = tmp_path / "missing-ca.pem"
    url = f"rediss://127.0.0.1:{silent_port}/0?ssl_ca_certs={missing}&operation_timeout=1&max_retries=0"
    with pytest.raises(BackendUnavailable, match="No such file"):
        async with asyncio.timeout(5):
            await open_queue(url, "jobs").open()


async def test_queue_and_pubsub_refuse_unknown_or_misplaced_options(server: RedisServer) -> None:
    with pytest.raises(InvalidArgument, match=r"unknown option.*no_such_option"):
        open_queue(f"{server.url}?no_such_option=1", "jobs")
    with pytest.raises(InvalidArgument, match="ssl_ca_certs needs a rediss:// URL"):
        open_pubsub(f"{server.url}?ssl_ca_certs=/ca.pem")
    with pytest.raises(InvalidArgument, match="operation_timeout"):
        open_queue(server.url, "jobs", operation_timeout="soon")


async def test_a_queue_on_a_store_uses_the_store_options_and_pool(
    server: RedisServer, raw: aioredis.Redis
) -> None:
    name, prefix = _name(), _name()
    store = await prism.connect(server.url, client_name=name, key_prefix=prefix).open()
    queue = await open_queue(server.url, "jobs", store=store).open()
    pubsub = await open_pubsub(server.url, store=store).open()
    try:
        await queue.enqueue(b"x")
        await pubsub.subscribe("t", lambda topic, data: None)
        assert await raw.exists(f"{prefix}:queue:{{jobs}}:stream") == 1
        named = [c for c in await raw.client_list() if c.get("name") == name]
        assert any(c.get("sub") == "1" for c in named), "the pub/sub listens on a connection of the store"
        await store.close()
        with pytest.raises(StoreClosed):
            await queue.enqueue(b"y")
    finally:
        await pubsub.close()
        await queue.close()
        await store.close()


async def test_a_queue_with_its_own_options_does_not_borrow_the_store(
    server: RedisServer, raw: aioredis.Redis
) -> None:
    store_prefix, own_prefix = _name(), _name()
    async with prism.connect(server.url, key_prefix=store_prefix) as store:
        async with open_queue(f"{server.url}?key_prefix={own_prefix}", "jobs", store=store) as queue:
            await queue.enqueue(b"x")
        await store.namespace("still").put("open", b"1")
    assert await raw.exists(f"{own_prefix}:queue:{{jobs}}:stream") == 1
    assert await raw.exists(f"{store_prefix}:queue:{{jobs}}:stream") == 0


async def test_the_queue_repr_shows_no_password(server: RedisServer) -> None:
    url = server.url.replace("redis://", "redis://:s3cret@", 1)
    queue = open_queue(url, "jobs")
    assert "s3cret" not in repr(queue) and "***" in repr(queue)


async def test_the_pubsub_resubscribes_after_its_connection_is_killed(
    server: RedisServer, raw: aioredis.Redis
) -> None:
    got: list[bytes] = []
    async with open_pubsub(server.url) as listener, open_pubsub(server.url) as publisher:
        await listener.subscribe("t.kill", lambda topic, data: got.append(data))
        await raw.execute_command("CLIENT", "KILL", "TYPE", "pubsub")  # type: ignore[no-untyped-call]
        for i in range(50):
            await publisher.publish("t.kill", b"after-%d" % i)
            if got:
                break
            await asyncio.sleep(0.1)
    assert got and got[0].startswith(b"after-")
