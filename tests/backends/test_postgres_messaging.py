"""The PostgreSQL queue (``FOR UPDATE SKIP LOCKED``) and pub/sub (LISTEN/NOTIFY) against a real server.

The shipped suites run unchanged; the tests below cover what the engine adds: the
store's URL options reach the queue's and pub/sub's connections, and given a store
they run on its pool.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import pytest

import prism
from prism.errors import BackendUnavailable, InvalidArgument
from prism.patterns import open_pubsub, open_queue
from prism.testing.messaging import PubSubSuite, QueueSuite
from prism.testing.servers.postgres import postgres_url


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    url, server = postgres_url()
    try:
        yield url
    finally:
        if server is not None:
            server.close()


class TestQueue(QueueSuite):
    @pytest.fixture
    def queue_url(self, pg_url: str) -> str:
        return pg_url


class TestPubSub(PubSubSuite):
    @pytest.fixture
    def pubsub_url(self, pg_url: str) -> str:
        return pg_url


@pytest.fixture
async def raw(pg_url: str) -> AsyncIterator[Any]:
    con = await asyncpg.connect(pg_url)
    yield con
    await con.close()


async def test_queue_and_pubsub_connections_carry_the_store_settings(pg_url: str, raw: Any) -> None:
    sql = "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'prism' AND pid <> pg_backend_pid()"
    before = await raw.fetchval(sql)
    async with open_queue(pg_url, "settings") as queue, open_pubsub(pg_url) as pubsub:
        await queue.enqueue(b"x")
        await pubsub.publish("t", b"x")
        assert await raw.fetchval(sql) >= before + 2, "the queue's and pub/sub's connections are Prism's"
        leases = await queue.lease(1, 5.0, 1.0)
        await queue.ack(leases[0])


async def test_the_connect_timeout_of_the_url_bounds_opening_a_queue(silent_port: int) -> None:
    url = f"postgresql://prism@127.0.0.1:{silent_port}/prism?connect_timeout=0.3&max_retries=0&operation_timeout=1"
    started = time.monotonic()
    with pytest.raises(BackendUnavailable):
        async with asyncio.timeout(10):
            await open_queue(url, "jobs").open()
    assert time.monotonic() - started < 3.0


async def test_tls_options_of_the_url_reach_the_pubsub_connection(pg_url: str) -> None:
    sep = "&" if "?" in pg_url else "?"
    with pytest.raises(BackendUnavailable, match=r"(?i)ssl"):
        await open_pubsub(f"{pg_url}{sep}sslmode=require&max_retries=0").open()


async def test_queue_and_pubsub_refuse_unknown_options(pg_url: str) -> None:
    sep = "&" if "?" in pg_url else "?"
    with pytest.raises(InvalidArgument, match="no_such_option"):
        open_queue(f"{pg_url}{sep}no_such_option=1", "jobs")
    with pytest.raises(InvalidArgument, match="pool_max_size"):
        open_pubsub(pg_url, pool_max_size="many")


async def test_a_queue_and_pubsub_on_a_store_run_on_its_pool(pg_url: str) -> None:
    store = await prism.connect(pg_url).open()
    queue = await open_queue(pg_url, "onstore", store=store).open()
    pubsub = await open_pubsub(pg_url, store=store).open()
    try:
        await queue.enqueue(b"x")
        await pubsub.publish("t", b"x")
        await store.close()
        with pytest.raises(BackendUnavailable, match="not open"):
            await queue.enqueue(b"y")
        with pytest.raises(BackendUnavailable, match="not open"):
            await pubsub.publish("t", b"y")
    finally:
        await pubsub.close()
        await queue.close()
        await store.close()


async def test_a_queue_on_the_store_url_with_its_options_shares_the_store_pool(pg_url: str) -> None:
    sep = "&" if "?" in pg_url else "?"
    url = f"{pg_url}{sep}pool_max_size=3&operation_timeout=4"
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
