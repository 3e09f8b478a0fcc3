"""The TimeSeries suite on PostgreSQL (a server started for this module), and its partitions."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import asyncpg
import pytest

import prism
from prism.backends.timeseries import short_name
from prism.testing.servers.postgres import postgres_url
from prism.testing.timeseries import TimeSeriesSuite


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    url, server = postgres_url()
    try:
        yield url
    finally:
        if server is not None:
            server.close()


class TestConformance(TimeSeriesSuite):
    @pytest.fixture
    def store_url(self, pg_url: str) -> str:
        return pg_url


async def _partitions(url: str, ns: str) -> list[str]:
    con = await asyncpg.connect(url)
    try:
        rows = await con.fetch(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = $1::regclass ORDER BY 1",
            f"prism_ts_{short_name(ns)}",
        )
    finally:
        await con.close()
    return [r[0] for r in rows]


async def test_slices_are_partitions_created_ahead_and_dropped_whole(pg_url: str) -> None:
    ns = f"ts-{uuid.uuid4().hex[:10]}"
    async with prism.connect(pg_url) as store:
        ts = store.timeseries(ns, slice_seconds=1, retention_seconds=1)
        now = datetime.now(UTC)
        await ts.write("s", [prism.Event(time=now, id="e", value=b"")])
        written = int(now.timestamp())
        names = await _partitions(pg_url, ns)
        assert f"prism_ts_{short_name(ns)}_{written}" in names
        assert any(int(n.rsplit("_", 1)[1]) > written for n in names)  # created ahead
        for _ in range(100):  # the slice leaves retention within about two seconds
            if not (await ts.read("s")).events:
                break
            await asyncio.sleep(0.1)
        assert not (await ts.read("s")).events
        assert await ts.drop_expired() >= 1
        assert f"prism_ts_{short_name(ns)}_{written}" not in await _partitions(pg_url, ns)
