"""The DynamoDB queue (conditional-update leases) against a real server (moto, or PRISM_TEST_DYNAMODB_URL).

DynamoDB has no fan-out of its own: its pub/sub is the in-process one, which the
suite checks all the same.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from prism.testing.messaging import PubSubSuite, QueueSuite
from prism.testing.servers.dynamodb import (
    DUMMY_AWS_ENVIRONMENT,
    DynamoDBServer,
    ExternalDynamoDB,
    dynamodb_or_skip,
)


@pytest.fixture(scope="module")
def dynamodb() -> Iterator[DynamoDBServer | ExternalDynamoDB]:
    """PRISM_TEST_DYNAMODB_URL's server, or a local moto with fake credentials (never real ones)."""
    server = dynamodb_or_skip()
    with pytest.MonkeyPatch.context() as env:
        if isinstance(server, DynamoDBServer):
            for name, value in DUMMY_AWS_ENVIRONMENT.items():
                env.setenv(name, value)
        yield server
    server.close()


class TestQueue(QueueSuite):
    @pytest.fixture
    def queue_url(self, dynamodb: DynamoDBServer | ExternalDynamoDB) -> str:
        return dynamodb.url


class TestPubSub(PubSubSuite):
    @pytest.fixture
    def pubsub_url(self, dynamodb: DynamoDBServer | ExternalDynamoDB) -> str:
        return dynamodb.url
