"""The embedded queue (on the KeyValue store) and in-process pub/sub, on ``memory://`` and ``sqlite://``."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

import prism
from prism.errors import InvalidArgument
from prism.patterns import open_queue
from prism.testing.messaging import PubSubSuite, QueueSuite


class TestMemoryQueue(QueueSuite):
    @pytest.fixture
    def queue_url(self) -> str:
        return f"memory://q-{uuid.uuid4().hex[:10]}"


class TestMemoryPubSub(PubSubSuite):
    @pytest.fixture
    def pubsub_url(self) -> str:
        return f"memory://bus-{uuid.uuid4().hex[:10]}"


class TestSQLiteQueue(QueueSuite):
    @pytest.fixture
    def queue_url(self, tmp_path: Path) -> str:
        return f"sqlite:///{tmp_path}/queue.db"


class TestSQLitePubSub(PubSubSuite):
    @pytest.fixture
    def pubsub_url(self, tmp_path: Path) -> str:
        return f"sqlite:///{tmp_path}/bus.db"


def test_an_unknown_scheme_suggests_the_closest_one() -> None:
    with pytest.raises(InvalidArgument, match="Did you mean 'redis'"):
        open_queue("rediz://x", "q")
    with pytest.raises(InvalidArgument, match="queue URL looks like"):
        open_queue("localhost:6379", "q")


async def test_a_sqlite_queue_keeps_its_messages_across_a_restart(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/durable.db"
    async with open_queue(url, "durable") as queue:
        await queue.enqueue(b"kept")
        await queue.enqueue(b"acked")
        leases = await queue.lease(2, 5.0, 1.0)
        await queue.ack(next(lease for lease in leases if lease.data == b"acked"))
    async with open_queue(url, "durable") as queue:
        assert await queue.depth() == 1
        assert [lease.data for lease in await queue.lease(5, 5.0, 1.0)] == [b"kept"]


async def test_an_embedded_queue_checks_its_store_options(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="no_such_option"):
        open_queue(f"sqlite:///{tmp_path}/q.db?no_such_option=1", "jobs")
    async with prism.connect("memory://") as store:
        with pytest.raises(InvalidArgument, match="takes no options"):
            open_queue("memory://", "jobs", store=store, busy_timeout=1)
