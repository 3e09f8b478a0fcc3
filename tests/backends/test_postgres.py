"""The PostgreSQL backend against a real server: the conformance suite, then the engine's specifics."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest

import prism
from prism.backends.postgres import PostgresBackend, ddl
from prism.backends.postgres._pool import ConnectionPool
from prism.errors import BackendUnavailable, InvalidArgument, PreconditionFailed
from prism.model import Put
from prism.testing.conformance import ConformanceSuite
from prism.testing.servers._base import free_port
from prism.testing.servers.postgres import PostgresServer, postgres_url

#: Short timeouts for the failure tests, so that they prove "fails fast" quickly.
FAST: dict[str, Any] = {"connect_timeout": 0.5, "operation_timeout": 1.0, "max_retries": 2}
#: How much longer than operation_timeout a failing call may take (scheduling slack).
SLACK = 1.0


@dataclass
class Postgres:
    url: str
    server: PostgresServer | None


@pytest.fixture(scope="module")
def pg() -> Iterator[Postgres]:
    url, server = postgres_url()
    try:
        yield Postgres(url, server)
    finally:
        if server is not None:
            server.close()


@pytest.fixture
async def raw(pg: Postgres) -> AsyncIterator[Any]:
    """A plain asyncpg connection, to look at what the backend stored."""
    con = await asyncpg.connect(pg.url)
    try:
        yield con
    finally:
        await con.close()


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


class TestConformance(ConformanceSuite):
    @pytest.fixture
    def store_url(self, pg: Postgres) -> str:
        return pg.url


# -- failures and recovery ---------------------------------------------------------------


async def test_outage_fails_fast_and_the_same_store_recovers(pg: Postgres) -> None:
    if pg.server is None:
        pytest.skip("PRISM_TEST_POSTGRES_URL points at a server these tests cannot stop")
    async with prism.connect(pg.url, **FAST) as store:
        ns = store.namespace(unique("outage"))
        await ns.put("k", b"before")
        pg.server.stop()
        try:
            for call in (lambda: ns.get("k"), lambda: ns.put("k", b"during"), lambda: ns.get_many(["k"])):
                start = time.monotonic()
                with pytest.raises(BackendUnavailable):
                    await call()
                assert time.monotonic() - start < FAST["operation_timeout"] + SLACK
            health = await store.health()
            assert health["status"] == "DOWN" and "postgres" in health["details"]["error"]
        finally:
            pg.server.start()
        assert (item := await ns.get("k")) is not None and item.value == b"before"
        await ns.put("k", b"after")
        assert (item := await ns.get("k")) is not None and item.value == b"after"
        assert (await store.health())["status"] == "UP"


async def test_unreachable_server_fails_open_within_the_timeouts() -> None:
    store = prism.connect(f"postgresql://prism:s3cret-pw@127.0.0.1:{free_port()}/postgres", **FAST)
    start = time.monotonic()
    with pytest.raises(BackendUnavailable) as caught:
        await store.open()
    assert time.monotonic() - start < FAST["operation_timeout"] + SLACK
    assert "s3cret-pw" not in str(caught.value) and "127.0.0.1" in str(caught.value)
    await store.close()


async def test_a_stuck_statement_times_out_and_the_connection_is_replaced(pg: Postgres, raw: Any) -> None:
    async with prism.connect(pg.url, **FAST, pool_max_size=2) as store:
        ns = store.namespace(unique("stuck"))
        await ns.put("k", b"v")
        # Another session holds the row's lock, so the put waits on the server.
        async with raw.transaction():
            await raw.execute(
                "SELECT 1 FROM prism_kv WHERE namespace = $1 AND record = 'k' FOR UPDATE", ns.name
            )
            start = time.monotonic()
            with pytest.raises(BackendUnavailable):
                await ns.put("k", b"blocked")
            assert time.monotonic() - start < FAST["operation_timeout"] + SLACK
        await ns.put("k", b"free")
        assert (item := await ns.get("k")) is not None and item.value == b"free"


async def _kill_session_blocked_on(raw: Any, ns_name: str, write: Any) -> Any:
    """Run ``write`` while another session locks the row, kill its server session, then free the row."""
    async with raw.transaction():
        await raw.execute("SELECT 1 FROM prism_kv WHERE namespace = $1 AND record = 'k' FOR UPDATE", ns_name)
        task = asyncio.create_task(write)
        blocked = (
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'prism' "
            "AND wait_event_type = 'Lock' AND datname = current_database()"
        )
        deadline = time.monotonic() + 5
        while (pid := await raw.fetchval(blocked)) is None:
            assert time.monotonic() < deadline, "the write never reached the server"
            await asyncio.sleep(0.02)
        assert await raw.fetchval("SELECT pg_terminate_backend($1)", pid)
        await asyncio.sleep(0.2)
    return await asyncio.gather(task, return_exceptions=True)


async def test_writes_whose_server_session_is_killed(pg: Postgres, raw: Any) -> None:
    async with prism.connect(pg.url) as store:
        ns = store.namespace(unique("killed"))
        await ns.put("k", b"old")
        # A plain put is sent again on a new connection: applying it twice is the same as once.
        (new_etag,) = await _kill_session_blocked_on(raw, ns.name, ns.put("k", b"new"))
        assert (item := await ns.get("k")) is not None and (item.value, item.etag) == (b"new", new_etag)
        # A conditional put that may or may not have been applied is not retried blindly.
        (error,) = await _kill_session_blocked_on(raw, ns.name, ns.put("k", b"newer", if_match=new_etag))
        assert isinstance(error, BackendUnavailable) and "may have been applied" in str(error)
        assert (item := await ns.get("k")) is not None and item.value == b"new"


async def test_256_concurrent_tasks_share_one_store(pg: Postgres) -> None:
    async with prism.connect(pg.url, pool_max_size=10) as store:
        ns = store.namespace(unique("crowd"))

        async def task(i: int) -> bytes | None:
            await ns.put(f"k{i}", str(i).encode())
            await ns.put_many([Put(f"k{i}-{j}", b"x") for j in range(5)])
            item = await ns.get(f"k{i}")
            return None if item is None else item.value

        values = await asyncio.gather(*(task(i) for i in range(256)))
        assert values == [str(i).encode() for i in range(256)]
        assert (await store.health())["details"]["pool_size"] <= 10


async def test_callers_that_give_up_waiting_for_a_connection_leave_the_pool_whole(
    pg: Postgres, raw: Any
) -> None:
    async with prism.connect(pg.url, **FAST, pool_min_size=1, pool_max_size=1) as store:
        ns = store.namespace(unique("queue"))
        await ns.put("k", b"v")
        async with raw.transaction():
            await raw.execute(
                "SELECT 1 FROM prism_kv WHERE namespace = $1 AND record = 'k' FOR UPDATE", ns.name
            )
            # One put holds the only connection (blocked on the lock); the others queue for it,
            # and whichever gets it before its deadline blocks on the lock too.
            results = await asyncio.gather(
                *(ns.put("k", b"blocked") for _ in range(6)), return_exceptions=True
            )
        assert all(isinstance(r, BackendUnavailable) for r in results), results
        values = await asyncio.gather(*(ns.get("k") for _ in range(20)))
        assert all(item is not None and item.value == b"v" for item in values)
        assert (await store.health())["details"]["pool_size"] == 1


async def test_a_slot_handed_to_a_cancelled_waiter_passes_to_the_next(pg: Postgres) -> None:
    pool = ConnectionPool(lambda: asyncpg.connect(pg.url), min_size=0, max_size=1, idle_timeout=0)
    held = await pool.acquire()
    first = asyncio.create_task(pool.acquire())
    second = asyncio.create_task(pool.acquire())
    await asyncio.sleep(0.05)  # both wait for the only connection
    held.terminate()
    pool.release(held)  # a dead connection frees its slot: the first waiter may open a new one
    first.cancel()  # ... but gives up before it runs
    con = await asyncio.wait_for(second, 5)
    assert not con.is_closed() and pool.size == 1
    pool.release(con)
    await pool.close(grace=1)
    assert first.cancelled()


async def test_idle_connections_beyond_the_minimum_are_closed(pg: Postgres) -> None:
    async with prism.connect(pg.url, pool_min_size=1, pool_max_size=8, pool_idle_timeout=0.2) as store:
        ns = store.namespace(unique("idle"))
        await asyncio.gather(*(ns.put(f"k{i}", b"v") for i in range(40)))
        assert (await store.health())["details"]["pool_size"] > 1
        deadline = time.monotonic() + 5
        while (await store.health())["details"]["pool_size"] > 1:
            assert time.monotonic() < deadline, "idle connections were not closed"
            await asyncio.sleep(0.1)


# -- concurrency ---------------------------------------------------------------------------


async def test_concurrent_if_absent_puts_from_two_stores_have_one_winner(pg: Postgres) -> None:
    name = unique("race")
    async with prism.connect(pg.url) as one, prism.connect(pg.url) as two:
        a, b = one.namespace(name), two.namespace(name)
        for round_ in range(20):
            key = f"k{round_}"
            results = await asyncio.gather(
                *(
                    ns.put(key, tag, if_absent=True)
                    for ns, tag in ((a, b"a"), (b, b"b"), (a, b"c"), (b, b"d"))
                ),
                return_exceptions=True,
            )
            winners = [r for r in results if isinstance(r, str)]
            assert len(winners) == 1, results
            assert all(isinstance(r, PreconditionFailed) for r in results if not isinstance(r, str))
            assert (item := await a.get(key)) is not None and item.etag == winners[0]


async def test_transactions_in_opposite_orders_never_deadlock(pg: Postgres, raw: Any) -> None:
    deadlocks = "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()"
    before = await raw.fetchval(deadlocks)
    async with prism.connect(pg.url) as store:
        ns = store.namespace(unique("locks"))
        keys = [f"k{i}" for i in range(8)]

        async def writer(order: list[str], tag: bytes) -> None:
            for _ in range(15):
                await ns.transact([Put(k, tag) for k in order])
                await ns.put_many([Put(k, tag) for k in order])

        await asyncio.gather(*(writer(keys if i % 2 else keys[::-1], b"%d" % i) for i in range(6)))
    assert await raw.fetchval(deadlocks) == before


# -- layout, expiry and plans --------------------------------------------------------------


async def test_items_are_rows_keyed_by_namespace_record_and_item_key(pg: Postgres, raw: Any) -> None:
    async with prism.connect(pg.url) as store:
        ns = store.namespace(unique("layout"))
        etag = await ns.put("flat", b"v", content_type="text/plain", ttl=60)
        await ns.put_items("rec", [Put("b", b"2"), Put("a", b"1")])
    rows = await raw.fetch(
        "SELECT record, key, value, etag, content_type, expires_at > now() AS live FROM prism_kv "
        "WHERE namespace = $1 ORDER BY record, key",
        ns.name,
    )
    assert [tuple(r) for r in rows] == [
        ("flat", "", b"v", etag, "text/plain", True),
        ("rec", "a", b"1", rows[1]["etag"], None, None),
        ("rec", "b", b"2", rows[2]["etag"], None, None),
    ]
    columns = await raw.fetch(
        "SELECT a.attname, c.collname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
        "AND a.attnum = ANY(i.indkey) LEFT JOIN pg_collation c ON c.oid = a.attcollation "
        "WHERE i.indrelid = 'prism_kv'::regclass AND i.indisprimary ORDER BY a.attnum"
    )
    assert [(r["attname"], r["collname"]) for r in columns] == [
        ("namespace", "C"),
        ("record", "C"),
        ("key", "C"),
    ]


async def test_expired_rows_stay_invisible_until_the_background_purge_deletes_them(
    pg: Postgres, raw: Any
) -> None:
    count = "SELECT count(*) FROM prism_kv WHERE namespace = $1"
    async with prism.connect(pg.url, purge_interval=0) as store:
        ns = store.namespace(unique("ttl"))
        await ns.put("gone", b"v", ttl=0.2)
        await ns.put_items("rec", [Put("gone", b"v", ttl=0.2), Put("kept", b"v")])
        await asyncio.sleep(0.4)
        assert await raw.fetchval(count, ns.name) == 3, "without a purge the rows are still stored"
        assert await ns.get("gone") is None and await ns.get_many(["gone"]) == [None]
        assert [i.key for i in (await ns.get_items("rec")).items] == ["kept"]
        assert (await ns.scan()).keys == ["rec"]
        # Writing over an expired item creates it: nothing live existed.
        assert (await ns.put_result(Put("gone", b"new"))).existed is False
        results = await ns.put_items("rec", [Put("gone", b"new"), Put("kept", b"new")])
        assert [r.existed for r in results] == [False, True]
        await ns.put("later", b"v", ttl=0.2)
    async with prism.connect(pg.url, purge_interval=0.1) as store:
        deadline = time.monotonic() + 5
        while await raw.fetchval(count, ns.name) != 3:
            assert time.monotonic() < deadline, "the background purge did not delete the expired row"
            await asyncio.sleep(0.05)


async def test_prefix_scans_and_range_reads_are_index_range_scans(pg: Postgres, raw: Any) -> None:
    async with prism.connect(pg.url) as store:
        backend = store.backend
        assert isinstance(backend, PostgresBackend)
        statements = backend.statements
    await raw.execute("SET enable_seqscan = off")
    try:
        scan = await raw.fetchval(
            "EXPLAIN (FORMAT JSON) " + statements.scan[False, True], "ns", "user:", 100, "user;"
        )
        items = await raw.fetchval(
            "EXPLAIN (FORMAT JSON) " + statements.range[True, True], "ns", "rec", "a", 100, "m"
        )
    finally:
        await raw.execute("RESET enable_seqscan")
    for plan, column in ((scan, "record"), (items, "key")):
        assert "prism_kv_pkey" in plan and "LIKE" not in plan and "~~" not in plan
        assert f"({column} >= " in plan or f"({column} > " in plan, plan
        assert f"({column} < " in plan, plan


# -- the table -----------------------------------------------------------------------------


async def test_concurrent_first_use_creates_the_table_once(pg: Postgres, raw: Any) -> None:
    table = unique("first_use")
    stores = [prism.connect(pg.url, table=table) for _ in range(6)]
    try:
        await asyncio.gather(*(s.open() for s in stores))
        await stores[0].namespace("n").put("k", b"v")
        assert (item := await stores[5].namespace("n").get("k")) is not None and item.value == b"v"
    finally:
        await asyncio.gather(*(s.close() for s in stores))
        await raw.execute(f'DROP TABLE IF EXISTS "{table}"')


async def test_without_create_table_the_operator_runs_the_ddl(pg: Postgres, raw: Any) -> None:
    table = unique("by_hand")
    store = prism.connect(f"{pg.url}?table={table}&create_table=false")
    with pytest.raises(BackendUnavailable, match="ddl"):
        await store.open()
    await store.close()
    await raw.execute(ddl(table))
    try:
        async with prism.connect(pg.url, table=table, create_table=False) as store:
            await store.namespace("n").put("k", b"v")
        assert await raw.fetchval(f'SELECT value FROM "{table}"') == b"v"
    finally:
        await raw.execute(f'DROP TABLE IF EXISTS "{table}"')


# -- options -------------------------------------------------------------------------------


def test_options_come_from_keywords_and_the_url_query() -> None:
    backend = PostgresBackend.from_url(
        "postgresql://u:pw@db.example:6543/app?pool_max_size=7&operation_timeout=1.5&create_table=off",
        purge_interval=0,
    )
    assert (backend.pool_max_size, backend.settings.operation_timeout) == (7, 1.5)
    assert backend.create_table is False and backend.purge_interval == 0
    assert backend.target == "db.example:6543/app" and "pw" not in backend.target


@pytest.mark.parametrize(
    ("url", "options", "message"),
    [
        ("postgresql://h/db", {"pool_size": 3}, "pool_size"),
        ("postgresql://h/db?colour=red", {}, "colour"),
        ("postgresql://h/db?pool_max_size=many", {}, "pool_max_size"),
        ("postgresql://h/db", {"pool_min_size": 5, "pool_max_size": 2}, "pool_min_size"),
        ("postgresql://h/db", {"table": "bad-name"}, "table"),
        ("postgresql://h/db", {"create_table": "maybe"}, "create_table"),
        ("postgresql://h/db", {"sslmode": "sometimes"}, "sslmode"),
        ("postgresql://h/db", {"operation_timeout": 0}, "operation_timeout"),
        ("postgresql://h:notaport/db", {}, "port"),
        ("postgresql://u:pw@[::1/db", {}, "malformed"),
    ],
)
def test_bad_options_are_refused_by_name(url: str, options: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        prism.connect(url, **options)


async def test_health_reports_the_server_and_the_pool(pg: Postgres) -> None:
    async with prism.connect(pg.url) as store:
        health = await store.health()
    details = health["details"]
    assert health["status"] == "UP" and details["server_version"].split(".")[0].isdigit()
    assert details["latency_ms"] >= 0 and details["pool_size"] >= 1
    assert details["target"] == urlsplit(pg.url).netloc.rsplit("@", 1)[-1] + urlsplit(pg.url).path
