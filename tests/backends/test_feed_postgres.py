"""The change-feed conformance suite on PostgreSQL (a server of its own), and its trigger-made log."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest

import prism
from prism.backends.postgres import PostgresBackend, feed_drop_ddl
from prism.testing.feed import FeedSuite, take
from prism.testing.servers.postgres import postgres_url


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    url, server = postgres_url()
    try:
        yield url
    finally:
        if server is not None:
            server.close()


class TestPostgresFeed(FeedSuite):
    @pytest.fixture
    def store_url(self, pg_url: str) -> str:
        return pg_url

    @pytest.fixture
    def store_options(self) -> dict[str, Any]:
        # A table of its own (the feed's length is the table's), purged and trimmed often.
        return {"table": "prism_feed_suite", "purge_interval": 0.05, "feed": True}


async def test_a_watcher_sees_the_writes_of_another_store(pg_url: str) -> None:
    table = "prism_feed_two"
    async with (
        prism.connect(pg_url, table=table, feed=True) as watcher,
        prism.connect(pg_url, table=table, feed=True) as writer,
    ):
        feed = watcher.namespace("shared").watch(poll_interval=0.01)
        await feed.start()
        etag = await writer.namespace("shared").put("k", b"v")
        await writer.namespace("shared").put_many([prism.Put("a", b"1"), prism.Put("b", b"2")])
        changes = await take(feed, 3)
        assert [(c.key, c.op) for c in changes] == [("k", "put"), ("a", "put"), ("b", "put")]
        assert changes[0].etag == etag


async def test_a_notification_wakes_a_waiting_watcher_before_its_poll_interval(pg_url: str) -> None:
    table = "prism_feed_wake"
    async with (
        prism.connect(pg_url, table=table, feed=True) as watcher,
        prism.connect(pg_url, table=table, feed=True) as writer,
    ):
        feed = watcher.namespace("woken").watch(poll_interval=60)
        await feed.start()

        async def write_soon() -> None:
            await asyncio.sleep(0.3)  # the watcher is waiting by then
            await writer.namespace("woken").put("k", b"v")

        task = asyncio.get_running_loop().create_task(write_soon())
        # Without the wake-up the change would wait out the 60 s poll interval.
        (change,) = await take(feed, 1, deadline=20)
        await task
        assert (change.key, change.op) == ("k", "put")


async def test_without_create_table_a_missing_feed_is_declared_unsupported(pg_url: str) -> None:
    async with prism.connect(pg_url, table="prism_feed_absent", feed=True) as store:
        await store.namespace("x").put("k", b"v")
    con = await asyncpg.connect(pg_url)
    try:
        await con.execute('DROP TABLE "prism_feed_absent_changes"')
    finally:
        await con.close()
    async with prism.connect(pg_url, table="prism_feed_absent", create_table=False, feed=True) as store:
        assert not store.capabilities.watch
        with pytest.raises(prism.Unsupported, match="no change feed"):
            store.namespace("x").watch()


def test_feed_options_come_from_the_url() -> None:
    backend = PostgresBackend.from_url("postgresql://h/db?feed=true&feed_retention=60&feed_max_changes=9")
    assert (backend.feed_retention, backend.feed_max_changes) == (60.0, 9)
    with pytest.raises(prism.InvalidArgument, match="feed_max_changes"):
        PostgresBackend.from_url("postgresql://h/db?feed=true&feed_max_changes=0")
    with pytest.raises(prism.InvalidArgument, match="start the store with feed=true"):
        PostgresBackend.from_url("postgresql://h/db?feed_max_changes=9")
    assert not PostgresBackend.from_url("postgresql://h/db").capabilities.watch


async def _feed_objects(pg_url: str, table: str) -> tuple[int, bool]:
    """The feed triggers on ``table`` and whether its change log exists."""
    con = await asyncpg.connect(pg_url)
    try:
        triggers = await con.fetchval(
            "SELECT count(*) FROM pg_trigger WHERE tgrelid = to_regclass($1) AND tgname = $2",
            table,
            f"{table}_feed",
        )
        log = await con.fetchval("SELECT to_regclass($1) IS NOT NULL", f"{table}_changes")
    finally:
        await con.close()
    return int(triggers), bool(log)


async def test_without_the_feed_option_no_trigger_is_created_and_watch_names_it(pg_url: str) -> None:
    table = "prism_feed_off"
    async with prism.connect(pg_url, table=table) as store:
        assert not store.capabilities.watch and not store.capabilities.watch_expiry
        await store.namespace("x").put("k", b"v")
        with pytest.raises(prism.Unsupported, match="start the store with feed=true"):
            store.namespace("x").watch()
    assert await _feed_objects(pg_url, table) == (0, False)


async def test_a_feed_trigger_stays_until_its_drop_sql_is_run(pg_url: str) -> None:
    table = "prism_feed_left"
    async with prism.connect(pg_url, table=table, feed=True) as store:
        await store.namespace("x").put("k", b"v")
    async with prism.connect(pg_url, table=table) as store:
        assert not store.capabilities.watch
        await store.namespace("x").put("k", b"w")
    assert await _feed_objects(pg_url, table) == (1, True)
    con = await asyncpg.connect(pg_url)
    try:
        assert await con.fetchval(f'SELECT count(*) FROM "{table}_changes"') == 2  # still logging
        await con.execute(feed_drop_ddl(table))
    finally:
        await con.close()
    assert await _feed_objects(pg_url, table) == (0, False)
    async with prism.connect(pg_url, table=table) as store:
        await store.namespace("x").put("k", b"after")  # the table works without its feed


async def _expired(ns: Any, cursor: str) -> bool:
    try:
        await take(ns.watch(after=cursor, poll_interval=0.01), 1, deadline=5)
    except prism.CursorExpired:
        return True
    return False


async def test_a_namespace_keeps_the_feed_retention_it_was_given(pg_url: str) -> None:
    """The store keeps 5 changes, one namespace 100 and another 3: each is trimmed to its own."""
    table = "prism_feed_per_ns"
    async with prism.connect(pg_url, table=table, feed=True, feed_max_changes=5) as store:
        backend = store.backend
        assert isinstance(backend, PostgresBackend)
        long = store.namespace("long", feed_max_changes=100)
        short = store.namespace("short", feed_max_changes=3)
        plain = store.namespace("plain")
        starts = {ns.name: await ns.watch().start() for ns in (long, short, plain)}
        for ns in (long, short, plain):
            for i in range(20):
                await ns.put(f"k{i}", b"x")
        await backend.trim_feed()
        assert await _expired(plain, starts["plain"]) and await _expired(short, starts["short"])
        assert not await _expired(long, starts["long"])
        changes = await take(long.watch(after=starts["long"], poll_interval=0.01), 20)
        assert [c.key for c in changes] == [f"k{i}" for i in range(20)]
    con = await asyncpg.connect(pg_url)
    try:
        rows = await con.fetch(f'SELECT namespace, count(*) FROM "{table}_changes" GROUP BY namespace')
    finally:
        await con.close()
    counts = {r[0]: r[1] for r in rows}
    assert counts["short"] == 3 and counts["long"] == 20


async def test_a_store_without_the_namespace_setting_trims_it_without_a_gap(pg_url: str) -> None:
    table = "prism_feed_per_ns_two"
    async with prism.connect(pg_url, table=table, feed=True, feed_max_changes=1000) as first:
        assert isinstance(first.backend, PostgresBackend)
        ns = first.namespace("own", feed_max_changes=50)
        start = await ns.watch().start()
        for i in range(10):
            await ns.put(f"k{i}", b"x")
        await first.backend.trim_feed()
    async with prism.connect(pg_url, table=table, feed=True, feed_max_changes=4) as second:
        assert isinstance(second.backend, PostgresBackend)
        ns = second.namespace("own")
        assert not await _expired(ns, start)
        (first_change,) = await take(ns.watch(after=start, poll_interval=0.01), 1)
        await second.backend.trim_feed()
        assert await _expired(ns, start) and await _expired(ns, first_change.cursor)


async def test_a_feed_made_before_namespace_floors_gets_them(pg_url: str) -> None:
    table = "prism_feed_upgraded"
    async with prism.connect(pg_url, table=table, feed=True) as store:
        await store.namespace("x").put("k", b"v")
    con = await asyncpg.connect(pg_url)
    try:
        await con.execute(f'DROP TABLE "{table}_changes_ns_floor"')
    finally:
        await con.close()
    with pytest.raises(prism.BackendUnavailable, match="feed_ns_floor_ddl"):
        async with prism.connect(pg_url, table=table, feed=True, create_table=False):
            pass
    async with prism.connect(pg_url, table=table, feed=True) as store:
        ns = store.namespace("x", feed_max_changes=2)
        start = await ns.watch().start()
        await ns.put("k", b"w")
        assert [c.key for c in await take(ns.watch(after=start, poll_interval=0.01), 1)] == ["k"]
