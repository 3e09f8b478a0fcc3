"""The change-feed conformance suite: every backend declaring ``watch`` runs it.

Subclass it with a ``store_url`` fixture (and, optionally, ``store_options``)::

    from prism.testing.feed import FeedSuite

    class TestMyBackendFeed(FeedSuite):
        @pytest.fixture
        def store_url(self, my_server) -> str:
            return my_server.url

A backend whose feed is opt-in (memory, SQLite, PostgreSQL, Redis) must be opened with
``feed=true`` (in the URL or ``store_options``): the suite fails a store that could
keep a feed but was opened without one rather than skip it.
The store is opened with ``feed_max_changes`` set to :attr:`FeedSuite.feed_max_changes`
so that a cursor can be made to expire (a backend whose feed has only a time window,
``Backend.feed_count_window`` false, is opened without it and skips that case; test
its window with a short ``feed_retention`` of its own); a backend that trims its feed only now and
then (SQLite trims when it purges) should pass a short purge interval in
``store_options``. Each test works in a fresh namespace and waits for a change at
most :data:`DELIVERY_DEADLINE` seconds (a failure deadline, not a speed target).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

import prism
from prism.backends import open_backend
from prism.errors import CursorExpired, InvalidArgument, PreconditionFailed
from prism.kv.feed import ChangeFeed
from prism.kv.namespace import Namespace
from prism.kv.store import Store
from prism.model import Change, Delete, Put
from prism.testing.plugin import async_fixture

__all__ = ["DELIVERY_DEADLINE", "FeedSuite"]

#: Seconds a test waits for the changes it expects before failing.
DELIVERY_DEADLINE = 20.0
#: Seconds between the feeds' asks in these tests.
POLL = 0.01


async def take(feed: ChangeFeed, count: int, deadline: float = DELIVERY_DEADLINE) -> list[Change]:
    """The next ``count`` changes of ``feed``; fails the test when they are not there in time."""
    out: list[Change] = []

    async def collect() -> None:
        async for change in feed:
            out.append(change)
            if len(out) == count:
                return

    try:
        await asyncio.wait_for(collect(), deadline)
    except TimeoutError:
        pytest.fail(f"only {len(out)} of {count} changes arrived within {deadline} s: {out}")
    return out


async def nothing_more(ns: Namespace, cursor: str, prefix: str = "") -> None:
    """No change of ``prefix`` follows ``cursor``: a marker write is the next change seen."""
    marker = f"{prefix}zz-marker-{uuid.uuid4().hex[:6]}"
    await ns.put(marker, b"m")
    (change,) = await take(ns.watch(prefix, after=cursor, poll_interval=POLL), 1)
    assert (change.key, change.op) == (marker, "put")


def _summary(changes: list[Change]) -> list[tuple[str, str, str, str | None]]:
    return [(c.key, c.item_key, c.op, c.etag) for c in changes]


def _per_key(
    summary: list[tuple[str, str, str, str | None]],
) -> dict[tuple[str, str], list[tuple[str, str | None]]]:
    """Each key's changes in order: what the feed promises (one batch's keys may come in any order)."""
    out: dict[tuple[str, str], list[tuple[str, str | None]]] = {}
    for key, item_key, op, etag in summary:
        out.setdefault((key, item_key), []).append((op, etag))
    return out


class FeedSuite:
    """Subclass with a ``store_url`` fixture to run the change-feed contract on a backend."""

    #: The feed length the store is opened with (the expired-cursor test writes past it).
    feed_max_changes = 20

    @pytest.fixture
    def store_options(self) -> dict[str, Any]:
        return {}

    @async_fixture
    async def store(self, store_url: str, store_options: dict[str, Any]) -> AsyncIterator[Store]:
        options = dict(store_options)
        if open_backend(store_url, **options).feed_count_window:
            options.setdefault("feed_max_changes", self.feed_max_changes)
        async with prism.connect(store_url, **options) as store:
            if not store.capabilities.watch:
                if type(store.backend).feed_opt_in:
                    pytest.fail(f"open the {store.backend.name} store with feed=true to run the feed suite")
                pytest.skip(f"the {store.backend.name} backend declares no change feed (watch)")
            yield store

    @pytest.fixture
    def ns(self, store: Store) -> Namespace:
        return store.namespace(f"feed-{uuid.uuid4().hex[:12]}")

    async def test_changes_arrive_in_commit_order_per_key(self, ns: Namespace) -> None:
        feed = ns.watch(poll_interval=POLL)
        start = await feed.start()
        e1 = await ns.put("a", b"1")
        e2 = await ns.put("b", b"1")
        e3 = await ns.put("a", b"2")
        assert await ns.delete("a")
        changes = await take(feed, 4)
        assert _summary(changes) == [
            ("a", "", "put", e1),
            ("b", "", "put", e2),
            ("a", "", "put", e3),
            ("a", "", "delete", None),
        ]
        cursors = [c.cursor for c in changes]
        assert len(set(cursors)) == 4 and start not in cursors
        assert feed.cursor == cursors[-1]
        for change in changes:
            assert change.updated_at is not None and change.updated_at.tzinfo is not None
            assert abs(change.updated_at.timestamp() - time.time()) < 300

    async def test_a_feed_starts_after_the_newest_change(self, ns: Namespace) -> None:
        await ns.put("before", b"x")
        feed = ns.watch(poll_interval=POLL)
        await feed.start()
        await ns.put("after", b"x")
        assert [c.key for c in await take(feed, 1)] == ["after"]

    async def test_prefix_selects_keys(self, ns: Namespace) -> None:
        feed = ns.watch("user:", poll_interval=POLL)
        await feed.start()
        await ns.put("order:1", b"x")
        await ns.put("user:1", b"x")
        await ns.put("userx", b"x")
        await ns.delete("user:1")
        assert _summary(await take(feed, 2))[1:] == [("user:1", "", "delete", None)]

    async def test_resume_after_a_cursor_delivers_every_later_change(self, ns: Namespace) -> None:
        feed = ns.watch(poll_interval=POLL)
        start = await feed.start()
        for i in range(6):
            await ns.put(f"k{i % 2}", str(i).encode())
        first = await take(feed, 6)
        await feed.close()
        again = await take(ns.watch(after=first[2].cursor, poll_interval=POLL), 3)
        assert again == first[3:]
        # At least once: resuming from the start again gives all of them again.
        assert await take(ns.watch(after=start, poll_interval=POLL), 6) == first
        await nothing_more(ns, first[-1].cursor)

    async def test_writes_of_every_kind_are_changes(self, store: Store, ns: Namespace) -> None:
        feed = ns.watch(poll_interval=POLL)
        await feed.start()
        results = await ns.put_many([Put("m1", b"1"), Put("m2", b"2")])
        await ns.delete_many(["m1", "missing"])
        items = await ns.put_items("rec", [Put("i1", b"1"), Put("i2", b"2")])
        assert await ns.delete_items("rec") == 2
        expected = [
            ("m1", "", "put", results[0].etag),
            ("m2", "", "put", results[1].etag),
            ("m1", "", "delete", None),
            ("rec", "i1", "put", items[0].etag),
            ("rec", "i2", "put", items[1].etag),
            ("rec", "i1", "delete", None),
            ("rec", "i2", "delete", None),
        ]
        if store.capabilities.transactions:
            done = await ns.transact([Put("t1", b"1"), Delete("m2")])
            with pytest.raises(PreconditionFailed):
                await ns.transact([Put("t2", b"1"), Put("t1", b"x", if_absent=True)])
            expected += [("t1", "", "put", done[0].etag), ("m2", "", "delete", None)]
        changes = await take(feed, len(expected))
        assert _per_key(_summary(changes)) == _per_key(expected)
        # The refused transaction and the delete of a missing key left no change.
        await nothing_more(ns, changes[-1].cursor)

    async def test_a_failed_condition_is_no_change(self, ns: Namespace) -> None:
        feed = ns.watch(poll_interval=POLL)
        start = await feed.start()
        etag = await ns.put("c", b"1")
        with pytest.raises(PreconditionFailed):
            await ns.put("c", b"2", if_match=etag + "x")
        with pytest.raises(PreconditionFailed):
            await ns.put("c", b"2", if_absent=True)
        assert _summary(await take(feed, 1)) == [("c", "", "put", etag)]
        assert len(await take(ns.watch(after=start, poll_interval=POLL), 1)) == 1
        await nothing_more(ns, feed.cursor or start)

    async def test_namespaces_have_their_own_feeds(self, store: Store, ns: Namespace) -> None:
        other = store.namespace(ns.name + "-other")
        feed = ns.watch(poll_interval=POLL)
        await feed.start()
        await other.put("k", b"elsewhere")
        await ns.put("k", b"here")
        assert [c.key for c in await take(feed, 1)] == ["k"]

    async def test_an_expired_cursor_raises_never_a_gap(self, store: Store, ns: Namespace) -> None:
        if not type(store.backend).feed_count_window:
            pytest.skip(f"the {store.backend.name} feed has only a time window (feed_retention)")
        feed = ns.watch(poll_interval=POLL)
        start = await feed.start()
        for i in range(self.feed_max_changes + 5):
            await ns.put(f"k{i}", b"x")
        deadline = time.monotonic() + DELIVERY_DEADLINE
        while True:
            try:
                await take(ns.watch(after=start, poll_interval=POLL), 1)
            except CursorExpired as exc:
                assert exc.cursor == start and "older than the retained window" in str(exc)
                break
            # A feed trimmed only now and then: one more write gives it the chance.
            if time.monotonic() > deadline:
                pytest.fail(f"a cursor {self.feed_max_changes + 5} changes old never expired")
            await asyncio.sleep(POLL * 10)
            await ns.put("nudge", b"x")

    async def test_a_namespace_keeps_the_retention_it_was_given(self, store: Store, ns: Namespace) -> None:
        if not type(store.backend).namespace_feed_retention:
            pytest.skip(f"the {store.backend.name} backend keeps one feed retention for all its namespaces")
        writes = self.feed_max_changes + 5
        longer = store.namespace(ns.name, feed_max_changes=self.feed_max_changes * 50)
        shorter = store.namespace(ns.name + "-short", feed_max_changes=2)
        plain = store.namespace(ns.name + "-plain")
        starts = [await n.watch(poll_interval=POLL).start() for n in (longer, shorter)]
        for i in range(writes):
            await longer.put(f"k{i}", b"x")
            await shorter.put(f"k{i}", b"x")
        deadline = time.monotonic() + DELIVERY_DEADLINE
        while True:
            try:
                await take(shorter.watch(after=starts[1], poll_interval=POLL), 1)
            except CursorExpired:
                break
            if time.monotonic() > deadline:
                pytest.fail(f"a cursor {writes} changes old never expired in a namespace keeping 2")
            # Writes of every namespace give a feed trimmed only now and then the chance.
            await asyncio.sleep(POLL * 10)
            await shorter.put("nudge", b"x")
            await plain.put("nudge", b"x")
        # The store keeps feed_max_changes; this namespace keeps all of its changes.
        changes = await take(longer.watch(after=starts[0], poll_interval=POLL), writes)
        assert [c.key for c in changes] == [f"k{i}" for i in range(writes)]
        with pytest.raises(InvalidArgument, match="feed_max_changes"):
            store.namespace(ns.name, feed_max_changes=0)

    async def test_a_cursor_ahead_of_the_feed_raises(self, ns: Namespace) -> None:
        start = await ns.watch(poll_interval=POLL).start()
        ahead = str(int(start) + 1000) if start.isdigit() else start + "0"
        with pytest.raises(CursorExpired, match="ahead of the feed"):
            await take(ns.watch(after=ahead, poll_interval=POLL), 1)

    async def test_expired_items_are_reported_where_the_backend_observes_it(
        self, store: Store, ns: Namespace
    ) -> None:
        if not store.capabilities.watch_expiry:
            pytest.skip(f"the {store.backend.name} backend does not report expiry (watch_expiry)")
        feed = ns.watch(poll_interval=POLL)
        await feed.start()
        etag = await ns.put("short", b"x", ttl=0.2)
        await ns.put("long", b"x")

        async def expired() -> Change:
            async for change in feed:
                if change.op == "expire":
                    return change
            raise AssertionError("the feed ended")

        async def nudge() -> None:  # a backend that purges expired items as it writes needs writes
            while True:
                await asyncio.sleep(0.1)
                await ns.put("nudge", b"x")

        nudger = asyncio.get_running_loop().create_task(nudge())
        try:
            change = await asyncio.wait_for(expired(), DELIVERY_DEADLINE)
        finally:
            nudger.cancel()
        assert (change.key, change.item_key, change.op) == ("short", "", "expire")
        assert change.etag in (None, etag)
        assert await ns.get("short") is None

    async def test_concurrent_writers_every_change_in_order_per_key(self, ns: Namespace) -> None:
        """Writers racing on the same keys: every change arrives, each key's in commit order."""
        writers, keys = 3, 3
        rounds = max(1, min(12, (self.feed_max_changes - 2) // writers))  # within the feed's window
        feed = ns.watch(poll_interval=POLL)
        await feed.start()
        written: dict[int, list[tuple[str, str]]] = {}

        async def write(w: int) -> None:
            mine = written.setdefault(w, [])
            for i in range(rounds):
                key = f"k{i % keys}"
                mine.append((key, await ns.put(key, f"{w}:{i}".encode())))

        await asyncio.gather(*(write(w) for w in range(writers)))
        changes = await take(feed, writers * rounds)
        seen = [(c.key, c.etag) for c in changes]
        assert sorted(seen, key=str) == sorted((p for w in written.values() for p in w), key=str)
        order = {etag: n for n, (_, etag) in enumerate(seen)}
        for mine in written.values():  # one writer's writes of one key are in its order
            for key in {k for k, _ in mine}:
                positions = [order[etag] for k, etag in mine if k == key]
                assert positions == sorted(positions)
        for key in {k for k, _ in seen}:  # and the last change of a key is what the key holds
            item = await ns.get(key)
            assert item is not None and [e for k, e in seen if k == key][-1] == item.etag

    async def test_bad_input_is_refused(self, ns: Namespace) -> None:
        with pytest.raises(InvalidArgument, match="cursor"):
            await take(ns.watch(after="not a cursor", poll_interval=POLL), 1)
        with pytest.raises(InvalidArgument, match="poll_interval"):
            ns.watch(poll_interval=0)
        with pytest.raises(InvalidArgument, match="batch_size"):
            ns.watch(batch_size=0)
        with pytest.raises(InvalidArgument, match="prefix"):
            ns.watch(123)  # type: ignore[arg-type]

    async def test_a_closed_feed_ends(self, ns: Namespace) -> None:
        async with ns.watch(poll_interval=POLL) as feed:
            await feed.start()
        assert feed.closed
        assert [c async for c in feed] == []
