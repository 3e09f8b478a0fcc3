"""The embedded queue (on the KeyValue store) and in-process pub/sub, on ``memory://`` and ``sqlite://``."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

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
