"""Several processes serving one migrating namespace, and a target that fails."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest

import prism
from prism.migration import MigrationRefused, MigrationSettings
from prism.testing.servers.redis import RedisServer, redis_server

SETTINGS = MigrationSettings(poll_interval=0.1, page_size=50)
#: The documented bound on how long a process may take to follow a phase change.
FOLLOW_WITHIN = 2.0
#: Short timeouts, so that calls to a stopped Redis fail fast.
FAST: dict[str, Any] = {"connect_timeout": 0.5, "operation_timeout": 1.0, "max_retries": 1, "retry_cap": 0.1}


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    with redis_server() as server:
        if server.external:
            pytest.skip("stopping the target needs a local redis-server, not PRISM_TEST_REDIS_URL")
        yield server


async def test_every_process_follows_the_phases_and_shadows_its_writes(
    redis: str, postgres: str, namespace: str
) -> None:
    acknowledged: dict[str, str] = {}
    async with (
        prism.migrate(redis, postgres, namespace, settings=SETTINGS) as a,
        prism.migrate(redis, postgres, namespace, settings=SETTINGS) as b,
    ):
        await a.start()
        stop = asyncio.Event()

        async def write_through_b() -> None:
            handle = b.namespace_handle()
            i = 0
            while not stop.is_set():
                key = f"b-{i:05d}"
                acknowledged[key] = await handle.put(key, key.encode(), ttl=600)
                i += 1
                await asyncio.sleep(0.002)

        writer = asyncio.create_task(write_through_b())
        try:
            await a.backfill()
            status = await a.verify()
            assert status["phase"] == "verified", (status["verify"], status["error"])
            await a.cutover()
            switched = time.monotonic()
            while b.router.primary is not b.router.target:
                assert time.monotonic() - switched < FOLLOW_WITHIN, "process b did not follow the cutover"
                await asyncio.sleep(0.02)
            assert (await b.status())["phase"] == "cut_over"
            await asyncio.sleep(0.3)
        finally:
            stop.set()
            await writer
        await a.complete()
        assert len(acknowledged) > 20
    async with prism.connect(postgres) as store:
        handle = store.namespace(namespace)
        for key, etag in acknowledged.items():
            item = await handle.get(key)
            assert item is not None and item.etag == etag, f"{key}: a write made on process b is lost"


async def test_failed_shadow_writes_are_logged_and_repaired(
    sqlite_url: str, own_redis: RedisServer, namespace: str
) -> None:
    async with prism.migrate(
        sqlite_url, own_redis.url, namespace, settings=SETTINGS, target_options=FAST
    ) as m:
        await m.start()
        handle = m.namespace_handle()
        await handle.put("a", b"1")
        own_redis.stop()
        # The primary acknowledged these: they succeed although their shadow writes fail.
        etag = await handle.put("b", b"2", content_type="text/plain")
        assert await handle.delete("a")
        status = await m.status()
        assert status["shadow"]["failed"] == 2 and status["shadow"]["pending"] == 2, status
        assert "shadow write failed" in status["error"]
        # The backfill stops at the first target error, and says so.
        with pytest.raises(MigrationRefused, match="backfill stopped"):
            await m.backfill()
        assert "backfill stopped" in (await m.status())["error"]
        own_redis.start()
        assert await m.router.repair() == 0
        assert (await m.status())["shadow"]["pending"] == 0
        await m.backfill()
        assert (await m.verify())["phase"] == "verified"
    async with prism.connect(own_redis.url) as store:
        assert await store.namespace(namespace).get("a") is None
        item = await store.namespace(namespace).get("b")
        assert item is not None and (item.value, item.etag, item.content_type) == (b"2", etag, "text/plain")
