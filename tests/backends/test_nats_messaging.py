"""The NATS queue (a JetStream work-queue stream) and pub/sub (core subjects) against a real server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

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
