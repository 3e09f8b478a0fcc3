"""Failover on a Redis Cluster: ``kill -9`` of the primary serving a busy namespace's slot.

Each test runs a bounded write load that logs every acknowledged write, kills the
primary, lets its replica take over, and then reads every acknowledged write back.
Redis replicates asynchronously, so without ``wait_replicas`` a write acknowledged
just before the kill can be lost; the first test measures how many (printed, and
recorded in docs/operations.md), the second shows that ``wait_replicas=1`` loses none.
Calls during the switch fail only with BackendUnavailable, and the same store carries
on afterwards without a restart; through the gateway they are 503 with Retry-After.
Each test leaves the session's cluster whole again (the killed node back as a replica).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

import prism
from prism.errors import BackendUnavailable
from prism.gateway import create_app, parse_config
from prism.kv.namespace import Namespace
from prism.patterns import open_pubsub
from prism.testing.failover import WriteLoad
from prism.testing.servers.redis_cluster import ClusterNode, RedisCluster

#: Concurrent writers of the load, and the most writes each makes.
WRITERS = 8
MAX_WRITES = 5000


@pytest.fixture
def cluster(shared_redis_cluster: RedisCluster) -> Iterator[RedisCluster]:
    if shared_redis_cluster.external:
        pytest.skip("the failover tests kill nodes: they need the local test cluster")
    shared_redis_cluster.heal()
    yield shared_redis_cluster
    shared_redis_cluster.heal()


def _busy_namespace(cluster: RedisCluster) -> tuple[str, ClusterNode]:
    """A fresh namespace whose slot's primary has a live replica, and that primary."""
    while True:
        name = f"busy-{uuid.uuid4().hex[:8]}"
        owner = cluster.owner(f"prism:{{{name}}}:ids")
        if cluster.replicas_of(owner):
            return name, owner


async def _kill_under_load(
    cluster: RedisCluster, ns: Namespace, owner: ClusterNode, after: float = 1.5
) -> tuple[WriteLoad, float, float]:
    """Run the load, kill ``owner`` mid-way, wait for the takeover and ``after`` more seconds.

    Returns the load, when the kill happened and how long the replica took to take over.
    """
    async with WriteLoad(ns, WRITERS, MAX_WRITES) as load:
        await asyncio.sleep(0.5)
        killed_at = time.monotonic()
        await asyncio.to_thread(cluster.kill, owner)
        await asyncio.to_thread(cluster.wait_for_new_owner, f"prism:{{{ns.name}}}:ids", owner)
        took = time.monotonic() - killed_at
        await asyncio.sleep(after)
    return load, killed_at, took


async def test_killing_a_primary_loses_at_most_the_unreplicated_tail_and_the_store_recovers(
    cluster: RedisCluster,
) -> None:
    name, owner = _busy_namespace(cluster)
    async with prism.connect(cluster.url) as store:
        ns = store.namespace(name)
        load, killed_at, took = await _kill_under_load(cluster, ns, owner)
        lost = await load.lost()
        assert all(isinstance(exc, BackendUnavailable) and exc.retryable for _, exc in load.errors)
        assert load.errors, "calls to the dead primary failed until its replica took over"
        assert load.acked_after(killed_at + took), "the same store wrote to the new primary without a restart"
        # Asynchronous replication: only writes acknowledged just before the kill can be lost.
        assert len(lost) <= WRITERS * 50, f"lost {len(lost)} of {len(load.acked)}"
        print(
            f"\nredis cluster failover (no wait_replicas): {len(load.acked)} writes acknowledged, "
            f"{len(lost)} lost, {len(load.errors)} BackendUnavailable, takeover {took:.2f} s"
        )
    cluster.start_node(owner)
    cluster.wait_until_ok()


async def test_with_wait_replicas_no_acknowledged_write_is_lost(cluster: RedisCluster) -> None:
    name, owner = _busy_namespace(cluster)
    options: dict[str, Any] = {"wait_replicas": 1, "wait_timeout": 0.5}
    async with prism.connect(cluster.url, **options) as store:
        ns = store.namespace(name)
        load, _, took = await _kill_under_load(cluster, ns, owner, after=0.5)
        lost = await load.lost()
        assert lost == [], f"lost {len(lost)} of {len(load.acked)} acknowledged writes"
        assert all(isinstance(exc, BackendUnavailable) for _, exc in load.errors)
        # The new primary has no replica until the killed node comes back (as its replica).
        with pytest.raises(BackendUnavailable, match="wait_replicas"):
            await ns.put("alone", b"1")
        await asyncio.to_thread(cluster.start_node, owner)
        await asyncio.to_thread(cluster.wait_until_ok)
        for _ in range(100):
            try:
                await ns.put("again", b"2")
                break
            except BackendUnavailable:
                await asyncio.sleep(0.1)
        item = await ns.get("again")
        assert item is not None and item.value == b"2", "writes are confirmed again once a replica is back"
        print(
            f"\nredis cluster failover (wait_replicas=1): {len(load.acked)} writes acknowledged, "
            f"{len(lost)} lost, {len(load.errors)} BackendUnavailable, takeover {took:.2f} s"
        )


async def test_the_gateway_answers_503_with_retry_after_during_the_switch_and_recovers(
    cluster: RedisCluster,
) -> None:
    name, owner = _busy_namespace(cluster)
    config = parse_config(
        {
            "stores": {"main": {"url": cluster.url, "options": {"operation_timeout": 1.0}}},
            "namespaces": [{"name": name}],
            "audit": {"sink": "none"},
        },
        source="cluster.yaml",
        env={},
    )
    app = create_app(config, env={})
    statuses: dict[int, int] = {}
    acked: dict[str, bytes] = {}
    stop = asyncio.Event()

    async def writer(client: httpx.AsyncClient, w: int) -> None:
        n = 0
        while not stop.is_set():
            key, value = f"g{w}-{n}", f"{w}:{n}".encode()
            n += 1
            r = await client.put(f"/v1/kv/{name}/{key}", content=value)
            statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
            if r.status_code == 503:
                assert int(r.headers["retry-after"]) >= 1, r.headers
                await asyncio.sleep(0.01)
            else:
                assert r.status_code in (200, 201, 204), (r.status_code, r.text)
                acked[key] = value

    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway", timeout=30) as client:
            tasks = [asyncio.create_task(writer(client, w)) for w in range(4)]
            try:
                await asyncio.sleep(0.5)
                await asyncio.to_thread(cluster.kill, owner)
                await asyncio.to_thread(cluster.wait_for_new_owner, f"prism:{{{name}}}:ids", owner)
                before = len(acked)
                await asyncio.sleep(1.0)
            finally:
                stop.set()
                await asyncio.gather(*tasks)
            assert len(acked) > before, "the gateway wrote to the new primary without a restart"
            assert statuses.get(503), f"calls failed as 503 during the switch: {statuses}"
            for key in sorted(acked):
                r = await client.get(f"/v1/kv/{name}/{key}")
                assert r.status_code == 200 and r.content == acked[key], (key, r.status_code)
    cluster.start_node(owner)
    cluster.wait_until_ok()


async def _listening_node(cluster: RedisCluster, client_name: str) -> ClusterNode:
    """The node where a connection named ``client_name`` is subscribed."""
    for node in cluster.nodes:
        if node.alive:
            listed = cluster.command(node, "CLIENT", "LIST").decode(errors="replace")
            if any(f"name={client_name} " in line and " sub=1 " in line for line in listed.splitlines()):
                return node
    raise AssertionError(f"no node has a subscribed connection named {client_name}")


async def test_a_subscriber_whose_node_dies_hears_again_from_another_primary(cluster: RedisCluster) -> None:
    name = f"listener-{uuid.uuid4().hex[:6]}"
    got: list[bytes] = []
    async with (
        open_pubsub(f"{cluster.url}?client_name={name}") as listener,
        open_pubsub(cluster.url, operation_timeout=2.0) as talker,
    ):
        await listener.subscribe("news", lambda topic, data: got.append(data))
        node = await _listening_node(cluster, name)
        assert node.port in cluster.primaries()
        await asyncio.to_thread(cluster.kill, node)
        try:
            deadline = time.monotonic() + 30
            n = 0
            while not got and time.monotonic() < deadline:
                n += 1
                with contextlib.suppress(BackendUnavailable):
                    await talker.publish("news", f"after-{n}".encode())
                await asyncio.sleep(0.2)
            assert got, "the subscriber heard nothing after its node died"
            assert (await _listening_node(cluster, name)) is not node
        finally:
            await asyncio.to_thread(cluster.start_node, node)
            await asyncio.to_thread(cluster.wait_until_ok)
