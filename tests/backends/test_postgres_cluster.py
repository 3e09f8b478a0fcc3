"""PostgreSQL with a streaming replica (``pg_basebackup -R``), both started for this module.

The KV conformance suite runs with the replica in ``replica_urls`` (the primary
commits with ``synchronous_commit = remote_apply``, so a replica read after a write
sees it). The tests below cover the routing: eventually consistent reads on the
replica and strong reads on the primary, a lagging or stopped replica skipped, and
the options. The promotion test lives in ``test_postgres_cluster_failover.py``.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import pytest

import prism
from prism.backends.postgres import PostgresBackend
from prism.errors import InvalidArgument
from prism.testing.conformance import ConformanceSuite
from prism.testing.feed import FeedSuite
from prism.testing.servers._base import ServerUnavailable, require_or_skip
from prism.testing.servers.postgres import PostgresServer

#: The primary waits for the replica to apply each commit; the replica waits for nobody.
PRIMARY = {"synchronous_commit": "remote_apply", "synchronous_standby_names": "'*'"}
REPLICA = {"synchronous_standby_names": "''"}


@pytest.fixture(scope="module")
def pair() -> Iterator[tuple[PostgresServer, PostgresServer]]:
    try:
        primary = PostgresServer.launch(settings=PRIMARY)
    except ServerUnavailable as exc:
        require_or_skip("postgres", str(exc))
    try:
        replica = PostgresServer.replica_of(primary, REPLICA)
    except BaseException:
        primary.close()
        raise
    try:
        yield primary, replica
    finally:
        replica.close()
        primary.close()


def _name() -> str:
    return f"pgr-{uuid.uuid4().hex[:12]}"


class TestConformance(ConformanceSuite):
    @pytest.fixture
    def store_url(self, pair: tuple[PostgresServer, PostgresServer]) -> str:
        return pair[0].url

    @pytest.fixture
    def store_options(self, pair: tuple[PostgresServer, PostgresServer]) -> dict[str, Any]:
        return {"replica_urls": [pair[1].url], "replica_check_interval": 0.2}


class TestFeed(FeedSuite):
    @pytest.fixture
    def store_url(self, pair: tuple[PostgresServer, PostgresServer]) -> str:
        return pair[0].url

    @pytest.fixture
    def store_options(self, pair: tuple[PostgresServer, PostgresServer]) -> dict[str, Any]:
        return {
            "table": "prism_feed_cluster",
            "purge_interval": 0.05,
            "feed": True,
            "replica_urls": [pair[1].url],
            "replica_check_interval": 0.2,
        }


@asynccontextmanager
async def _replay_paused(primary: PostgresServer, replica: PostgresServer) -> AsyncIterator[None]:
    """The replica stops applying what it receives; the primary stops waiting for it to."""
    p = await asyncpg.connect(primary.url)
    r = await asyncpg.connect(replica.url)
    try:
        await p.execute("ALTER SYSTEM SET synchronous_commit = 'local'")
        await p.execute("SELECT pg_reload_conf()")
        await _until_reloaded(primary, "local")
        await r.execute("SELECT pg_wal_replay_pause()")
        yield
    finally:
        await r.execute("SELECT pg_wal_replay_resume()")
        await p.execute("ALTER SYSTEM RESET synchronous_commit")
        await p.execute("SELECT pg_reload_conf()")
        await _until_reloaded(primary, "remote_apply")
        await p.close()
        await r.close()


async def _until_reloaded(server: PostgresServer, value: str) -> None:
    """Wait until new sessions see ``synchronous_commit = value``, then give the pooled ones
    (which reread the configuration at their next command, once the postmaster passed the
    reload on) a moment: otherwise a commit may still wait for the paused replica."""
    for _ in range(100):
        con = await asyncpg.connect(server.url)
        try:
            if await con.fetchval("SHOW synchronous_commit") == value:
                break
        finally:
            await con.close()
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)


async def _replica_reads(store: Any) -> int:
    health = await store.backend.health()
    return sum(r["reads"] for r in health["replicas"])


async def test_eventual_reads_go_to_the_replica_and_strong_reads_to_the_primary(
    pair: tuple[PostgresServer, PostgresServer],
) -> None:
    primary, replica = pair
    options: dict[str, Any] = {
        "replica_urls": [replica.url],
        "replica_max_lag": 3600,
        "replica_check_interval": 0.1,
    }
    async with prism.connect(primary.url, **options) as store:
        ns = store.namespace(_name())
        await ns.put("k", b"old")
        async with _replay_paused(primary, replica):
            await ns.put("k", b"new")
            before = await _replica_reads(store)
            eventual = await ns.get("k")
            assert eventual is not None and eventual.value == b"old", "read on the paused replica"
            assert [i.value if i else None for i in await ns.get_many(["k"])] == [b"old"]
            assert await _replica_reads(store) == before + 2
            strong = await ns.get("k", consistency="strong")
            assert strong is not None and strong.value == b"new"
            many = await ns.get_many(["k"], consistency="strong")
            assert [i.value if i else None for i in many] == [b"new"]
            assert await _replica_reads(store) == before + 2, "strong reads never touch the replica"
        for _ in range(100):
            got = await ns.get("k")
            if got is not None and got.value == b"new":
                break
            await asyncio.sleep(0.05)
        else:
            pytest.fail("the replica never caught up after replay resumed")


async def test_a_replica_lagging_past_the_setting_is_skipped(
    pair: tuple[PostgresServer, PostgresServer],
) -> None:
    primary, replica = pair
    options: dict[str, Any] = {
        "replica_urls": [replica.url],
        "replica_max_lag": 0.3,
        "replica_check_interval": 0.1,
    }
    async with prism.connect(primary.url, **options) as store:
        ns = store.namespace(_name())
        await ns.put("k", b"old")
        async with _replay_paused(primary, replica):
            await ns.put("k", b"new")
            await asyncio.sleep(0.8)
            health = await store.backend.health()
            (state,) = health["replicas"]
            assert state["lag_s"] > 0.3 and not state["in_use"], state
            before = await _replica_reads(store)
            got = await ns.get("k")
            assert got is not None and got.value == b"new", "the lagging replica was skipped"
            assert await _replica_reads(store) == before
        for _ in range(100):
            (state,) = (await store.backend.health())["replicas"]
            if state["in_use"]:
                break
            await asyncio.sleep(0.05)
        before = await _replica_reads(store)
        got = await ns.get("k")
        assert got is not None and got.value == b"new"
        assert await _replica_reads(store) == before + 1, "a replica that caught up takes reads again"


async def test_a_stopped_replica_costs_no_error(pair: tuple[PostgresServer, PostgresServer]) -> None:
    primary, replica = pair
    options: dict[str, Any] = {
        "replica_urls": [replica.url],
        "replica_check_interval": 0.1,
        "operation_timeout": 2.0,
    }
    async with prism.connect(primary.url, **options) as store:
        ns = store.namespace(_name())
        await ns.put("k", b"v")
        await asyncio.to_thread(replica.stop)
        try:
            for _ in range(20):
                got = await ns.get("k")
                assert got is not None and got.value == b"v"
            (state,) = (await store.backend.health())["replicas"]
            assert not state["in_use"] and "error" in state
        finally:
            await asyncio.to_thread(replica.start)


@pytest.mark.parametrize(
    ("options", "names"),
    [
        ({"target_session_attrs": "writable"}, "target_session_attrs"),
        ({"replica_urls": ["not a url"]}, "replica_urls"),
        ({"replica_urls": 5}, "replica_urls"),
        ({"replica_max_lag": -1}, "replica_max_lag"),
        ({"replica_check_interval": 0}, "replica_check_interval"),
    ],
)
def test_bad_replica_options_are_refused_by_name(options: dict[str, Any], names: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        PostgresBackend.from_url("postgresql://u@h/db", **options)
    assert names in str(info.value)


def test_a_multi_host_url_shows_every_host_and_no_password() -> None:
    backend = PostgresBackend.from_url(
        "postgresql://u:s3cret@pg-1:5433,pg-2/db?target_session_attrs=read-write",
        replica_urls="postgresql://u:s3cret@pg-2/db",
    )
    assert backend.target == "pg-1:5433,pg-2:5432/db"
    assert backend.target_session_attrs == "read-write"
    assert backend.replica_urls == ("postgresql://u:s3cret@pg-2/db",)
    assert "s3cret" not in repr(backend) and "s3cret" not in backend.target
