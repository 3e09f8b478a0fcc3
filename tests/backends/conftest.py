"""Fixtures shared by the backend tests."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from prism.testing.servers.nats_cluster import NatsCluster, nats_cluster
from prism.testing.servers.redis_cluster import RedisCluster, redis_cluster


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A local port that accepts connections and never answers (to prove a timeout bounds a call)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()


@pytest.fixture(scope="session")
def shared_redis_cluster() -> Iterator[RedisCluster]:
    """One six-node Redis Cluster per test process, for every module that uses it.

    A test that kills or fails over a node leaves the cluster whole again (three
    primaries, each with a live replica) before it ends.
    """
    with redis_cluster() as cluster:
        yield cluster


@pytest.fixture(scope="session")
def shared_nats_cluster() -> Iterator[NatsCluster]:
    """One three-node NATS cluster per test process; a test that stops a node starts it again."""
    with nats_cluster() as cluster:
        yield cluster
