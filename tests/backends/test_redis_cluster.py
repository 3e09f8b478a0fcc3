"""The Redis backend, queue and pub/sub on a six-node Redis Cluster started for this module.

The KV conformance suite, the change-feed suite and the queue and pub/sub suites run unchanged on
``redis+cluster://``; the tests below cover what a cluster adds: the URL, namespaces
kept in one slot each and spread over the shards, and MOVED after a slot migrates.
The failover tests live in ``test_redis_cluster_failover.py``; both use the session's cluster.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
import redis.asyncio as aioredis
from redis.crc import key_slot

import prism
from prism.backends.redis import RedisBackend
from prism.backends.redis._connection import RedisSettings
from prism.errors import BackendUnavailable, InvalidArgument
from prism.model import Put
from prism.patterns import open_pubsub, open_queue
from prism.testing.conformance import ConformanceSuite
from prism.testing.feed import FeedSuite
from prism.testing.messaging import PubSubSuite, QueueSuite
from prism.testing.servers.redis_cluster import RedisCluster


@pytest.fixture
def cluster(shared_redis_cluster: RedisCluster) -> RedisCluster:
    return shared_redis_cluster


def _name() -> str:
    return f"rc-{uuid.uuid4().hex[:12]}"


class TestConformance(ConformanceSuite):
    @pytest.fixture
    def store_url(self, cluster: RedisCluster) -> str:
        return cluster.url


class TestQueue(QueueSuite):
    @pytest.fixture
    def queue_url(self, cluster: RedisCluster) -> str:
        return cluster.url


class TestFeed(FeedSuite):
    """The change feed's stream lives in its namespace's slot, beside the entries it logs."""

    @pytest.fixture
    def store_url(self, cluster: RedisCluster) -> str:
        return cluster.url

    @pytest.fixture
    def store_options(self) -> dict[str, object]:
        return {"feed": True}


class TestPubSub(PubSubSuite):
    @pytest.fixture
    def pubsub_url(self, cluster: RedisCluster) -> str:
        return cluster.url


# -- the URL ------------------------------------------------------------------------


def test_cluster_url_names_its_seeds_and_keeps_the_redis_options() -> None:
    settings = RedisSettings.parse(
        "rediss+cluster://u:s3cret@a.example:7000,b.example,[::1]:7002/?key_prefix=p",
        {"wait_replicas": 1, "ssl_cert_reqs": "none"},
    )
    assert settings.cluster and settings.seeds == (("a.example", 7000), ("b.example", 6379), ("::1", 7002))
    assert settings.key_prefix == "p" and settings.wait_replicas == 1 and settings.db == 0
    assert settings.node_url("c", 7003) == "rediss://u:s3cret@c:7003/0"
    assert settings.node_url("::1", 7003) == "rediss://u:s3cret@[::1]:7003/0"
    assert not RedisSettings.parse("redis://h:1/0", {}).cluster


@pytest.mark.parametrize(
    ("url", "options", "names"),
    [
        ("redis+cluster://a:1,b:2/1", {}, "database 0"),
        ("redis+cluster://a:1,b:x/", {}, "'x'"),
        ("redis+cluster://a:1,,b:2/", {}, "host:port,host:port"),
        ("redis+cluster://a:99999/", {}, "99999"),
        ("redis+cluster://a:1/", {"wait_replicas": -1}, "wait_replicas"),
        ("redis+cluster://a:1/", {"wait_timeout": 0}, "wait_timeout"),
        ("redis+cluster://a:1/", {"ssl_certfile": "c.pem"}, "rediss://"),
        ("redis+cluster://a:1/", {"shards": 3}, "redis+cluster://: shards"),
    ],
)
def test_bad_cluster_urls_are_refused_by_name(url: str, options: dict[str, object], names: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        RedisSettings.parse(url, dict(options))
    assert names in str(info.value)


async def test_the_password_of_a_cluster_url_never_shows() -> None:
    url = "redis+cluster://user:hunter2@127.0.0.1:1,127.0.0.1:2/"
    with pytest.raises(Exception) as info:
        await prism.connect(url, connect_timeout=0.2, operation_timeout=0.5).__aenter__()
    assert "hunter2" not in str(info.value) and "hunter2" not in repr(RedisBackend.from_url(url))


async def test_no_reachable_seed_is_backend_unavailable_naming_the_nodes() -> None:

    with pytest.raises(BackendUnavailable) as info:
        await prism.connect(
            "redis+cluster://127.0.0.1:1,127.0.0.1:2/", connect_timeout=0.2, operation_timeout=1.0
        ).__aenter__()
    assert "127.0.0.1:1" in str(info.value) and "127.0.0.1:2" in str(info.value)


async def test_health_names_the_primaries_of_the_cluster(cluster: RedisCluster) -> None:
    async with prism.connect(cluster.url) as store:
        health = await store.health()
    details = health["details"]
    assert health["status"] == "UP" and details["mode"] == "cluster", health
    assert sorted(details["cluster_primaries"]) == sorted(f"127.0.0.1:{p}" for p in cluster.primaries())
    assert details["slot_map_refreshes"] >= 1


# -- the layout on the shards ---------------------------------------------------------


async def _keys_by_node(cluster: RedisCluster, pattern: str) -> dict[int, list[bytes]]:
    found: dict[int, list[bytes]] = {}
    for port in cluster.primaries():
        client = aioredis.Redis(port=port)
        try:
            found[port] = [key async for key in client.scan_iter(match=pattern, count=1000)]
        finally:
            await client.aclose()
    return found


async def test_a_namespace_lives_in_one_slot_and_namespaces_spread_over_every_shard(
    cluster: RedisCluster,
) -> None:
    prefix = _name().replace("-", "")
    names = [f"ns{i}" for i in range(48)]
    async with prism.connect(cluster.url, key_prefix=prefix) as store:
        for name in names:
            ns = store.namespace(name)
            await ns.put_many([Put(f"r{i}", b"v") for i in range(5)])
            await ns.transact([Put("t1", b"1"), Put("t2", b"2")])
            await ns.put("ttl", b"x", ttl=60)
    by_node = await _keys_by_node(cluster, f"{prefix}:*")
    home: dict[str, set[int]] = {}
    slots: dict[str, set[int]] = {}
    for port, keys in by_node.items():
        for key in keys:
            tag = key.split(b"{", 1)[1].split(b"}", 1)[0].decode()
            home.setdefault(tag, set()).add(port)
            slots.setdefault(tag, set()).add(key_slot(key))
    assert set(home) == set(names)
    assert all(len(ports) == 1 for ports in home.values()), home
    assert all(len(s) == 1 for s in slots.values()), slots
    per_node = {port: sum(1 for ports in home.values() if port in ports) for port in by_node}
    assert all(count > 0 for count in per_node.values()), f"every shard holds namespaces: {per_node}"


# -- redirections ---------------------------------------------------------------------


def _slot_of(ns: str, prefix: str = "prism") -> str:
    """A key of namespace ``ns`` (any key of it names the same slot)."""
    return f"{prefix}:{{{ns}}}:ids"


async def test_a_slot_migrating_to_another_shard_is_followed_through_ask_then_moved(
    cluster: RedisCluster,
) -> None:
    name = _name()
    async with prism.connect(cluster.url, operation_timeout=3.0) as store:
        ns = store.namespace(name)
        await ns.put("a", b"1")
        await ns.put("b", b"2")
        source = cluster.owner(_slot_of(name))
        target = next(n for n in cluster.primaries().values() if n is not source)
        slot = str(key_slot(_slot_of(name).encode()))
        source_id, target_id = cluster.node_id(source), cluster.node_id(target)
        assert cluster.command(target, "CLUSTER", "SETSLOT", slot, "IMPORTING", source_id).startswith(b"+OK")
        assert cluster.command(source, "CLUSTER", "SETSLOT", slot, "MIGRATING", target_id).startswith(b"+OK")
        keys = await _keys_by_node(cluster, f"prism:{{{name}}}:*")
        moving = [k.decode() for k in keys[source.port]]
        assert moving, "the namespace's keys are on the source shard"
        migrate = ["MIGRATE", "127.0.0.1", str(target.port), "", "0", "5000", "KEYS", *moving]
        assert cluster.command(source, *migrate).startswith(b"+OK")
        # The keys now answer ASK from the source: the store follows it to the target.
        got = await ns.get("a")
        assert got is not None and got.value == b"1"
        assert [i.value if i else None for i in await ns.get_many(["a", "b"])] == [b"1", b"2"]
        for node in cluster.nodes:
            if node.alive:
                cluster.command(node, "CLUSTER", "SETSLOT", slot, "NODE", target_id)
        # Now the source answers MOVED: the store follows and keeps writing.
        await ns.put("c", b"3")
        assert [i.value if i else None for i in await ns.get_many(["a", "b", "c"])] == [b"1", b"2", b"3"]
        assert cluster.owner(_slot_of(name)) is target
    keys = await _keys_by_node(cluster, f"prism:{{{name}}}:*")
    assert not keys[source.port] and keys[target.port]


async def test_a_manual_failover_is_followed_without_an_error(cluster: RedisCluster) -> None:
    name = _name()
    async with prism.connect(cluster.url) as store:
        ns = store.namespace(name)
        await ns.put("before", b"1")
        old = cluster.owner(_slot_of(name))
        replica = cluster.replicas_of(old)[0]
        assert cluster.command(replica, "CLUSTER", "FAILOVER").startswith(b"+OK")
        new = cluster.wait_for_new_owner(_slot_of(name), old)
        assert new is replica
        await ns.put("after", b"2")
        assert [i.value if i else None for i in await ns.get_many(["before", "after"])] == [b"1", b"2"]


# -- waiting for replicas -----------------------------------------------------------------


async def test_wait_replicas_confirms_writes_and_refuses_an_unreplicated_one(cluster: RedisCluster) -> None:
    name = _name()
    async with prism.connect(cluster.url, wait_replicas=1) as store:
        ns = store.namespace(name)
        await ns.put("a", b"1")
        await ns.transact([Put("t", b"1")])
        await ns.put_many([Put("m1", b"1"), Put("m2", b"2")])
    async with open_queue(f"{cluster.url}?wait_replicas=1", name) as queue:
        await queue.enqueue(b"job")
        assert await queue.depth() == 1
    async with prism.connect(cluster.url, wait_replicas=2, wait_timeout=0.2) as store:
        ns = store.namespace(name)
        with pytest.raises(BackendUnavailable) as info:
            await ns.put("b", b"2")
        assert "wait_replicas" in str(info.value) and "1 of 2" in str(info.value)
        with pytest.raises(BackendUnavailable):
            await ns.put_many([Put("m3", b"3"), Put("m4", b"4")])
        # Reads do not wait, and the primary did apply the write it could not confirm.
        got = await ns.get("b")
        assert got is not None and got.value == b"2"
        assert (await ns.get("a")) is not None


async def test_pubsub_on_the_cluster_reaches_a_subscriber_of_another_store(cluster: RedisCluster) -> None:
    got: list[bytes] = []
    async with open_pubsub(cluster.url) as listener, open_pubsub(cluster.url) as talker:
        await listener.subscribe("news", lambda topic, data: got.append(data))
        await talker.publish("news", b"hello")
        for _ in range(100):
            if got:
                break
            await asyncio.sleep(0.02)
    assert got == [b"hello"]


async def test_a_primary_short_of_replicas_refuses_writes_as_backend_unavailable(
    cluster: RedisCluster,
) -> None:
    name = _name()
    async with prism.connect(cluster.url, operation_timeout=1.0) as store:
        ns = store.namespace(name)
        await ns.put("a", b"1")
        owner = cluster.owner(_slot_of(name))
        cluster.command(owner, "CONFIG", "SET", "min-replicas-to-write", "2")
        try:
            with pytest.raises(BackendUnavailable) as info:
                await ns.put("b", b"2")
            assert "NOREPLICAS" in str(info.value)
            assert (await ns.get("b")) is None, "the refused write was not applied"
        finally:
            cluster.command(owner, "CONFIG", "SET", "min-replicas-to-write", "0")
        await ns.put("b", b"2")


async def test_a_cluster_user_and_password_reach_every_node(cluster: RedisCluster) -> None:
    user, password = f"app{uuid.uuid4().hex[:6]}", uuid.uuid4().hex
    for node in cluster.nodes:
        if node.alive:
            reply = cluster.command(node, "ACL", "SETUSER", user, "on", f">{password}", "~*", "&*", "+@all")
            assert reply.startswith(b"+OK")
    hosts = ",".join(f"127.0.0.1:{n.port}" for n in cluster.nodes if n.alive)
    try:
        async with prism.connect(f"redis+cluster://{user}:{password}@{hosts}/") as store:
            names = [_name() for _ in range(12)]
            for name in names:
                await store.namespace(name).put("k", name.encode())
            for name in names:
                item = await store.namespace(name).get("k")
                assert item is not None and item.value == name.encode()
        with pytest.raises(BackendUnavailable) as info:
            await prism.connect(
                f"redis+cluster://{user}:wrong-{password}@{hosts}/", operation_timeout=1.0
            ).__aenter__()
        assert "wrong-" not in str(info.value) and password not in str(info.value)
    finally:
        for node in cluster.nodes:
            if node.alive:
                cluster.command(node, "ACL", "DELUSER", user)
