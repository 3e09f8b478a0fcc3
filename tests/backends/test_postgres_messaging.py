"""The PostgreSQL queue (``FOR UPDATE SKIP LOCKED``) and pub/sub (LISTEN/NOTIFY) against a real server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

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
