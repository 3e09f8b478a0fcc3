"""The TimeSeries suite on DynamoDB (moto's server, started for this module)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from prism.testing.servers.dynamodb import (
    DUMMY_AWS_ENVIRONMENT,
    DynamoDBServer,
    ExternalDynamoDB,
    dynamodb_or_skip,
)
from prism.testing.timeseries import TimeSeriesSuite


@pytest.fixture(scope="module")
def dynamodb() -> Iterator[DynamoDBServer | ExternalDynamoDB]:
    server = dynamodb_or_skip()
    with pytest.MonkeyPatch.context() as env:
        if isinstance(server, DynamoDBServer):
            for name, value in DUMMY_AWS_ENVIRONMENT.items():
                env.setenv(name, value)
        yield server
    server.close()


class TestConformance(TimeSeriesSuite):
    # Every call to the emulator costs milliseconds: fewer random programs, same rules.
    stateful_examples = 10

    @pytest.fixture
    def store_url(self, dynamodb: DynamoDBServer | ExternalDynamoDB) -> str:
        return dynamodb.url
