"""The DynamoDB queue (conditional-update leases) against a real server (moto, or PRISM_TEST_DYNAMODB_URL).

DynamoDB has no fan-out of its own: its pub/sub is the in-process one, which the
suite checks all the same. The tests below cover what the engine adds: the store's
URL options reach the queue's client, and given a store the queue uses its client.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

import prism
from prism.errors import BackendUnavailable, InvalidArgument
from prism.patterns import open_queue
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


async def test_the_operation_timeout_of_the_url_bounds_a_queue_call(
    dynamodb: DynamoDBServer | ExternalDynamoDB, silent_port: int
) -> None:
    url = (
        f"dynamodb://prism-silent?endpoint=http://127.0.0.1:{silent_port}&region=us-east-1"
        "&operation_timeout=0.5&connect_timeout=0.5&max_retries=0"
    )
    started = time.monotonic()
    with pytest.raises(BackendUnavailable):
        async with asyncio.timeout(10):
            await open_queue(url, "jobs").open()
    assert time.monotonic() - started < 3.0


async def test_the_queue_refuses_unknown_options(dynamodb: DynamoDBServer | ExternalDynamoDB) -> None:
    sep = "&" if "?" in dynamodb.url else "?"
    with pytest.raises(InvalidArgument, match="no_such_option"):
        open_queue(f"{dynamodb.url}{sep}no_such_option=1", "jobs")
    with pytest.raises(InvalidArgument, match="max_connections"):
        open_queue(dynamodb.url, "jobs", max_connections="many")


async def test_a_queue_on_a_store_uses_its_client(dynamodb: DynamoDBServer | ExternalDynamoDB) -> None:
    store = await prism.connect(dynamodb.url, create_table=True).open()
    queue = await open_queue(dynamodb.url, "onstore", store=store).open()
    try:
        await queue.enqueue(b"x")
        assert await queue.depth() >= 1
        await store.close()
        with pytest.raises(BackendUnavailable, match="not open"):
            await queue.enqueue(b"y")
    finally:
        await queue.close()
        await store.close()
