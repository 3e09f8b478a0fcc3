"""PostgreSQL's change feed numbers changes without a per-table lock: readers must still never skip one.

Transactions here take their change number early (``SET CONSTRAINTS ALL IMMEDIATE``
fires the feed's deferred trigger at once) and commit later, so changes commit out of
the order of their numbers, beside ordinary library writers; watchers must deliver
every change exactly once, in number order, and a watcher resuming from any cursor it
was given must get exactly the changes after it.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Iterator

import asyncpg
import pytest

import prism
from prism.backends.postgres import PostgresBackend
from prism.backends.postgres._horizon import FeedHorizon
from prism.model import Change
from prism.testing.servers.postgres import postgres_url


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    url, server = postgres_url()
    try:
        yield url
    finally:
        if server is not None:
            server.close()


def pg(store: prism.Store) -> PostgresBackend:
    backend = store.backend
    assert isinstance(backend, PostgresBackend)
    return backend


async def hold_numbered_update(con: asyncpg.Connection, table: str, ns: str, record: str, etag: str) -> None:
    """Update ``record`` and take its change number now; the caller commits (or not) later."""
    await con.execute("BEGIN")
    await con.execute(
        f"UPDATE \"{table}\" SET etag = $1 WHERE namespace = $2 AND record = $3 AND key = ''",
        etag,
        ns,
        record,
    )
    await con.execute("SET CONSTRAINTS ALL IMMEDIATE")  # the feed's trigger runs now: the number is taken


async def test_a_change_committed_after_a_higher_numbered_one_is_not_skipped(pg_url: str) -> None:
    table = f"feed_order_{uuid.uuid4().hex[:8]}"
    async with prism.connect(pg_url, table=table, feed=True) as store:
        ns = store.namespace("order")
        await ns.put("slow", b"0")
        await ns.put("fast", b"0")
        backend = pg(store)
        _, cursor = await backend.read_changes("order", "", None, 100)
        con = await asyncpg.connect(pg_url)
        try:
            await hold_numbered_update(con, table, "order", "slow", "held")
            fast_etag = await ns.put("fast", b"1")  # numbered after "slow", committed before it
            early, cursor = await backend.read_changes("order", "", cursor, 100)
            # "fast" cannot be delivered yet: a cursor past it would pass "slow".
            assert early == []
            await con.execute("COMMIT")
        finally:
            await con.close()
        changes, cursor = await backend.read_changes("order", "", cursor, 100)
        assert [(c.key, c.etag) for c in changes] == [("slow", "held"), ("fast", fast_etag)]
        again, _ = await backend.read_changes("order", "", cursor, 100)
        assert again == []


async def test_a_new_watch_starts_after_the_changes_of_transactions_in_progress(pg_url: str) -> None:
    table = f"feed_start_{uuid.uuid4().hex[:8]}"
    async with prism.connect(pg_url, table=table, feed=True) as store:
        ns = store.namespace("start")
        await ns.put("a", b"0")
        con = await asyncpg.connect(pg_url)
        try:
            await hold_numbered_update(con, table, "start", "a", "held")

            async def commit_soon() -> None:
                await asyncio.sleep(0.2)
                await con.execute("COMMIT")

            committing = asyncio.create_task(commit_soon())
            _, start = await pg(store).read_changes("start", "", None, 100)
            # A change that commits after the watch opened is after its start: opening waited for it.
            assert committing.done()
        finally:
            await con.close()
        changes, _ = await pg(store).read_changes("start", "", start, 100)
        assert changes == []
        etag = await ns.put("a", b"1")
        changes, _ = await pg(store).read_changes("start", "", start, 100)
        assert [(c.key, c.etag) for c in changes] == [("a", etag)]


async def _read_to_end(backend: PostgresBackend, ns: str, cursor: str, settle: float = 0.0) -> list[Change]:
    out: list[Change] = []
    quiet_since: float | None = None
    loop = asyncio.get_running_loop()
    while True:
        changes, cursor = await backend.read_changes(ns, "", cursor, 37)
        out += changes
        if changes:
            quiet_since = None
            continue
        if quiet_since is None:
            quiet_since = loop.time()
        if loop.time() - quiet_since >= settle:
            return out
        await asyncio.sleep(0.01)


async def test_concurrent_out_of_order_commits_leave_no_gap_for_any_resuming_watcher(pg_url: str) -> None:
    table = f"feed_gaps_{uuid.uuid4().hex[:8]}"
    ns_name = "gaps"
    keys = [f"k{i}" for i in range(12)]
    rng = random.Random(7)
    async with (
        prism.connect(pg_url, table=table, feed=True) as store,
        prism.connect(pg_url, table=table, feed=True) as other,
    ):
        ns = store.namespace(ns_name)
        for k in keys:
            await ns.put(k, b"0")
        backend = pg(store)
        _, start = await backend.read_changes(ns_name, "", None, 100)
        stop = asyncio.Event()

        async def raw_writer(w: int) -> None:
            con = await asyncpg.connect(pg_url)
            try:
                i = 0
                while not stop.is_set():
                    await hold_numbered_update(con, table, ns_name, rng.choice(keys), f"raw-{w}-{i}")
                    await asyncio.sleep(rng.uniform(0, 0.02))  # others number and commit meanwhile
                    await con.execute("ROLLBACK" if rng.random() < 0.1 else "COMMIT")
                    i += 1
            finally:
                await con.close()

        async def library_writer() -> None:
            while not stop.is_set():
                await ns.put(rng.choice(keys), b"v")

        seen: list[Change] = []
        cursors = [start]

        async def watcher() -> None:
            cursor = start
            while not stop.is_set():
                changes, cursor = await backend.read_changes(ns_name, "", cursor, rng.randint(1, 40))
                seen.extend(changes)
                cursors.append(cursor)
                if not changes:
                    await asyncio.sleep(0.002)

        tasks = [asyncio.create_task(raw_writer(w)) for w in range(8)]
        tasks += [asyncio.create_task(library_writer()) for _ in range(3)]
        watching = asyncio.create_task(watcher())
        await asyncio.sleep(3)
        stop.set()
        await asyncio.gather(*tasks)
        await watching
        seen += await _read_to_end(backend, ns_name, cursors[-1], settle=0.2)

        con = await asyncpg.connect(pg_url)
        try:
            logged = [
                r["seq"]
                for r in await con.fetch(
                    f'SELECT seq FROM "{table}_changes" WHERE namespace = $1 AND seq > $2 ORDER BY seq',
                    ns_name,
                    int(start),
                )
            ]
        finally:
            await con.close()
        numbers = [int(c.cursor) for c in seen]
        assert len(logged) > 200, "too few changes to prove anything"
        assert numbers == logged, "a change was skipped, repeated or delivered out of order"
        # The last delivered change of each key is what the key holds.
        last: dict[str, str | None] = {}
        for c in seen:
            last[c.key] = c.etag
        for k in keys:
            item = await ns.get(k)
            assert item is not None and last.get(k) in (item.etag, None)
        # Resuming from every cursor the watcher was given (on another store) gives exactly the rest.
        other_backend = pg(other)
        for cursor in sorted(set(cursors), key=int)[:: max(1, len(set(cursors)) // 60)]:
            rest = await _read_to_end(other_backend, ns_name, cursor)
            assert [int(c.cursor) for c in rest] == [n for n in logged if n > int(cursor)], cursor


def test_the_horizon_waits_for_ids_the_snapshot_does_not_list() -> None:
    horizon = FeedHorizon()
    # Nothing listed as running, but xmax (newest completed id + 1) is below the bound:
    # ids 105-109 may be running unlisted, one of them holding a number <= 10.
    assert horizon.advance(10, 110, "100:105:") == 0
    # 110 completed; 111 still runs, which may hold a number <= 12 but not <= 10.
    assert horizon.advance(12, 112, "111:113:111") == 10
    assert horizon.advance(12, 114, "115:115:") == 12
    # Never backwards, and a reading below the horizon changes nothing.
    assert horizon.advance(11, 116, "117:117:") == 12
    assert horizon.pending == []


async def test_a_feed_sequence_that_hands_out_blocks_is_refused_by_name(pg_url: str) -> None:
    table = f"feed_cache_{uuid.uuid4().hex[:8]}"
    async with prism.connect(pg_url, table=table, feed=True):
        pass
    con = await asyncpg.connect(pg_url)
    try:
        await con.execute(f'ALTER SEQUENCE "{table}_changes_seq" CACHE 20')
    finally:
        await con.close()
    with pytest.raises(prism.BackendUnavailable, match=rf"{table}_changes_seq.*CACHE 20.*CACHE 1"):
        await prism.connect(pg_url, table=table, feed=True)
    async with prism.connect(pg_url, table=table):  # without the feed the table is served as ever
        pass
