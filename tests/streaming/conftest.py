"""Fixtures of the streaming tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from streaming_helpers import Server, ServerFactory, make_service, running

from prism.streaming.handlers import Router


@pytest.fixture
async def server_factory() -> AsyncIterator[ServerFactory]:
    """``await start(**settings)`` -> a running Server; all are stopped at the end of the test."""
    stack: list[Any] = []

    async def start(store_url: str = "memory://", router: Router | None = None, **settings: Any) -> Server:
        cm = running(make_service(store_url, router, **settings))
        server = await cm.__aenter__()
        stack.append(cm)
        return server

    yield start
    for cm in reversed(stack):
        await cm.__aexit__(None, None, None)


@pytest.fixture
async def server(server_factory: ServerFactory) -> Server:
    result: Server = await server_factory()
    return result


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A Redis server for the whole streaming test run."""
    from prism.testing.servers.redis import redis_server

    with redis_server() as server:
        yield server.url


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A PostgreSQL server for the whole streaming test run."""
    from prism.testing.servers.postgres import postgres_url as launch

    url, server = launch()
    try:
        yield url
    finally:
        if server is not None:
            server.close()


@pytest.fixture(scope="session")
def nats_url() -> Iterator[str]:
    """A NATS server (with JetStream) for the whole streaming test run."""
    from prism.testing.servers.nats import nats_server

    with nats_server() as server:
        yield server.url


@pytest.fixture(scope="session")
def dynamodb_url() -> Iterator[str]:
    """A DynamoDB (moto) server for the whole streaming test run, with fake credentials."""
    from prism.testing.servers.dynamodb import DUMMY_AWS_ENVIRONMENT, DynamoDBServer, dynamodb_or_skip

    server = dynamodb_or_skip()
    with pytest.MonkeyPatch.context() as env:
        if isinstance(server, DynamoDBServer):
            for name, value in DUMMY_AWS_ENVIRONMENT.items():
                env.setenv(name, value)
        yield server.url
    server.close()
