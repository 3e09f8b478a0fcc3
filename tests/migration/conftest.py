"""Servers for the migration tests: each pair of stores a test moves a namespace between."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from prism.testing.servers.dynamodb import (
    DUMMY_AWS_ENVIRONMENT,
    DynamoDBServer,
    ExternalDynamoDB,
    dynamodb_or_skip,
)
from prism.testing.servers.postgres import postgres_url
from prism.testing.servers.redis import RedisServer, redis_server


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with redis_server() as server:
        yield server.url


@pytest.fixture(scope="module")
def redis(redis_url: str) -> str:
    return redis_url


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    url, server = postgres_url()
    try:
        yield url
    finally:
        if server is not None:
            server.close()


@pytest.fixture(scope="module")
def dynamodb() -> Iterator[str]:
    server: DynamoDBServer | ExternalDynamoDB = dynamodb_or_skip()
    with pytest.MonkeyPatch.context() as env:
        if isinstance(server, DynamoDBServer):
            for name, value in DUMMY_AWS_ENVIRONMENT.items():
                env.setenv(name, value)
        yield server.url
    server.close()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'source.db'}"


#: The store pairs every guarantee is tested on: (source fixture, target fixture).
PAIRS = [("sqlite_url", "redis"), ("redis", "postgres"), ("postgres", "dynamodb")]


@pytest.fixture(params=PAIRS, ids=lambda p: f"{p[0].removesuffix('_url')}-to-{p[1]}")
def pair(request: pytest.FixtureRequest) -> tuple[str, str]:
    source, target = request.param
    return request.getfixturevalue(source), request.getfixturevalue(target)


@pytest.fixture
def namespace() -> str:
    return f"mig-{uuid.uuid4().hex[:10]}"


__all__ = ["PAIRS", "RedisServer"]
