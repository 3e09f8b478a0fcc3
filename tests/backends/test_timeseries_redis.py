"""The TimeSeries suite on Redis (a server started for this module), and its key sets."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import redis.asyncio as aioredis

import prism
from prism.backends.timeseries import short_name
from prism.testing.servers.redis import RedisServer, redis_server
from prism.testing.timeseries import TimeSeriesSuite


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    with redis_server() as s:
        yield s


class TestConformance(TimeSeriesSuite):
    @pytest.fixture
    def store_url(self, server: RedisServer) -> str:
        return server.url


async def test_slices_are_key_sets_dropped_whole(server: RedisServer) -> None:
    ns = f"ts-{uuid.uuid4().hex[:10]}"
    raw = aioredis.Redis.from_url(server.url)
    try:
        async with prism.connect(server.url) as store:
            ts = store.timeseries(ns, slice_seconds=1, retention_seconds=1)
            now = datetime.now(UTC)
            await ts.write("s", [prism.Event(time=now, id=f"e{i}", value=b"v") for i in range(10)])
            events_key = f"prism:ts:{{{short_name(ns)}}}:e:{int(now.timestamp())}:s"
            assert await raw.zcard(events_key) == 10
            for _ in range(100):  # the slice leaves retention within about two seconds
                if not (await ts.read("s")).events:
                    break
                await asyncio.sleep(0.1)
            assert not (await ts.read("s")).events
            assert await ts.drop_expired() == 1
            assert await raw.exists(events_key) == 0
            assert await raw.keys(f"prism:ts:{{{short_name(ns)}}}:*") == []
    finally:
        await raw.aclose()
