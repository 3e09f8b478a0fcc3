"""The NATS backend, queue and pub/sub on a three-node JetStream cluster started for this module.

The KV conformance suite runs on ``nats://a,b,c`` with ``replicas=3`` (every bucket a
stream replicated on the three nodes), and the queue and pub/sub suites on the same
URL. The tests below cover the cluster URL, replicas, and a stream leader that stops
while a store is writing.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import nats
import pytest

import prism
from prism.backends.nats.layout import bucket_name
from prism.backends.nats.options import parse_url, server_urls
from prism.errors import BackendUnavailable, InvalidArgument, PreconditionFailed
from prism.patterns import open_queue
from prism.testing.conformance import ConformanceSuite
from prism.testing.failover import WriteLoad
from prism.testing.feed import FeedSuite
from prism.testing.messaging import PubSubSuite, QueueSuite
from prism.testing.servers.nats_cluster import NatsCluster

REPLICATED: dict[str, Any] = {"replicas": 3}


@pytest.fixture
def cluster(shared_nats_cluster: NatsCluster) -> NatsCluster:
    return shared_nats_cluster


class TestConformance(ConformanceSuite):
    @pytest.fixture
    def store_url(self, cluster: NatsCluster) -> str:
        return cluster.url

    @pytest.fixture
    def store_options(self) -> dict[str, Any]:
        return REPLICATED


class TestFeed(FeedSuite):
    """The change feed of replicated buckets (read from the bucket's stream)."""

    @pytest.fixture
    def store_url(self, cluster: NatsCluster) -> str:
        return cluster.url

    @pytest.fixture
    def store_options(self) -> dict[str, Any]:
        return {**REPLICATED, "feed": True}


class TestQueue(QueueSuite):
    @pytest.fixture
    def queue_url(self, cluster: NatsCluster) -> str:
        return cluster.url


class TestPubSub(PubSubSuite):
    @pytest.fixture
    def pubsub_url(self, cluster: NatsCluster) -> str:
        return cluster.url


def test_a_cluster_url_names_every_server_with_its_credentials() -> None:
    assert server_urls("nats://u:p@a:4222,b:4223,c") == [
        "nats://u:p@a:4222",
        "nats://u:p@b:4223",
        "nats://u:p@c",
    ]
    base, _, options = parse_url("nats://a:4222,b:4222/?replicas=3", {})
    assert options.replicas == 3 and server_urls(base) == ["nats://a:4222", "nats://b:4222"]
    for bad in ("nats://a:4222,b:x", "nats://a:4222,,b:4222"):
        with pytest.raises(InvalidArgument):
            parse_url(bad, {})
    assert not options.replica_reads and options.reply_timeout == 5.0
    _, _, chosen = parse_url("nats://a:4222,b:4222?replica_reads=true&reply_timeout=2", {})
    assert chosen.replica_reads and chosen.reply_timeout == 2.0
    for option, value in (("replica_reads", "maybe"), ("reply_timeout", "0")):
        with pytest.raises(InvalidArgument, match=option):
            parse_url(f"nats://a:4222?{option}={value}", {})


async def test_buckets_are_replicated_on_every_node(cluster: NatsCluster) -> None:
    name = f"rep-{uuid.uuid4().hex[:8]}"
    async with prism.connect(cluster.url, **REPLICATED) as store:
        await store.namespace(name).put("k", b"v")
    nc = await nats.connect(cluster.nodes[0].url)
    try:
        info = await nc.jetstream().stream_info(f"KV_{bucket_name(name)}")
    finally:
        await nc.close()
    assert info.config.num_replicas == 3
    assert info.cluster is not None and info.cluster.leader
    assert len(info.cluster.replicas or []) == 2


async def test_a_stopped_stream_leader_is_ridden_out_within_the_deadline(cluster: NatsCluster) -> None:
    if cluster.external:
        pytest.skip("stopping a node needs the local test cluster")
    name = f"lead-{uuid.uuid4().hex[:8]}"
    options = {**REPLICATED, "operation_timeout": 10.0, "reply_timeout": 2.0, "max_retries": 100}
    async with prism.connect(cluster.url, **options) as store:
        ns = store.namespace(name)
        await ns.put("first", b"1")
        leader = await cluster.stream_leader(f"KV_{bucket_name(name)}")
        conditional: dict[str, str] = {}
        stop = asyncio.Event()

        async def create_only() -> None:
            # if_absent puts of fresh keys: each succeeds, or fails as BackendUnavailable (maybe
            # applied); a failed condition would be the store tripping over its own first attempt.
            n = 0
            while not stop.is_set():
                key = f"c{n}"
                n += 1
                try:
                    await ns.put(key, b"c", if_absent=True)
                    conditional[key] = "ok"
                except BackendUnavailable:
                    conditional[key] = "unavailable"
                except PreconditionFailed:
                    conditional[key] = "precondition failed"

        creator = asyncio.create_task(create_only())
        async with WriteLoad(ns, writers=4) as load:
            await asyncio.sleep(0.5)
            stopped_at = time.monotonic()
            await asyncio.to_thread(cluster.kill, leader)
            await asyncio.sleep(3.0)
        stop.set()
        await creator
        try:
            lost = await load.lost()
            assert lost == [], f"lost {len(lost)} of {len(load.acked)} acknowledged writes"
            assert not load.errors, f"the leader change surfaced: {load.errors[:3]}"
            assert load.acked_after(stopped_at + 1.0), "writes went on under the new leader"
            failed = [k for k, outcome in conditional.items() if outcome == "precondition failed"]
            assert not failed, f"conditional writes failed by their own resend: {failed}"
            created = [k for k, outcome in conditional.items() if outcome == "ok"]
            assert all(i is not None for i in await ns.get_many(created))
            new = await cluster.stream_leader(f"KV_{bucket_name(name)}")
            assert new is not leader
            print(
                f"\nnats stream leader change: {len(load.acked)} writes acknowledged, {len(lost)} lost, "
                f"{len(load.errors)} errors, {sum(o == 'unavailable' for o in conditional.values())} "
                f"conditional writes unavailable, writes stalled for {load.longest_pause():.2f} s at most"
            )
        finally:
            await asyncio.to_thread(cluster.start_node, leader)
            await asyncio.to_thread(cluster.wait_for_jetstream)


async def test_a_queue_opened_with_replicas_is_replicated_on_every_node(cluster: NatsCluster) -> None:
    name = f"q{uuid.uuid4().hex[:8]}"
    async with open_queue(f"{cluster.url}?replicas=3", name) as queue:
        await queue.enqueue(b"job")
    stream = f"PRISM_Q_{name}"  # the queue's stream, as the NATS queue documents it
    nc = await nats.connect(cluster.nodes[0].url)
    try:
        info = await nc.jetstream().stream_info(stream)
    finally:
        await nc.close()
    assert info.config.num_replicas == 3 and info.state.messages == 1
