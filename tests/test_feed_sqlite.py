"""The change-feed conformance suite on SQLite (a file and ``:memory:``), and a feed shared by two stores."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

import prism
from prism.testing.feed import FeedSuite

#: Purge (and trim the feed) often, so expiry and trimming show within a test.
FAST_PURGE = {"feed": True, "purge_interval": 0.05}


class TestSQLiteFileFeed(FeedSuite):
    @pytest.fixture
    def store_url(self, tmp_path: Path) -> str:
        return f"sqlite:///{tmp_path / 'prism.db'}"

    @pytest.fixture
    def store_options(self) -> dict[str, Any]:
        return FAST_PURGE


class TestSQLiteInMemoryFeed(FeedSuite):
    @pytest.fixture
    def store_url(self) -> str:
        return "sqlite:///:memory:"

    @pytest.fixture
    def store_options(self) -> dict[str, Any]:
        return FAST_PURGE


def test_a_watcher_sees_the_writes_of_another_store_on_the_same_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}?feed=true"
    with prism.connect_sync(url) as watcher, prism.connect_sync(url) as writer:
        feed = watcher.namespace("shared").watch(poll_interval=0.01)
        feed.start()
        etag = writer.namespace("shared").put("k", b"v")
        change = next(feed)
        assert (change.key, change.op, change.etag) == ("k", "put", etag)


def test_sqlite_feed_options_come_from_the_url(tmp_path: Path) -> None:
    with prism.connect_sync(
        f"sqlite:///{tmp_path / 'o.db'}?feed=1&feed_max_changes=7&feed_retention=60"
    ) as store:
        assert (store.backend.feed_max_changes, store.backend.feed_retention) == (7, 60.0)
    with pytest.raises(prism.InvalidArgument, match="feed_retention"):
        prism.connect_sync(f"sqlite:///{tmp_path / 'o.db'}?feed=true&feed_retention=0")
    with pytest.raises(prism.InvalidArgument, match="start the store with feed=true"):
        prism.connect_sync(f"sqlite:///{tmp_path / 'o.db'}?feed_retention=60")


def test_changes_older_than_the_retention_leave_the_feed(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'aging.db'}?feed=true&feed_retention=0.05&purge_interval=0.01"
    with prism.connect_sync(url) as store:
        ns = store.namespace("aging")
        start = ns.watch().start()
        ns.put("old", b"x")
        deadline = time.monotonic() + 20
        while True:
            ns.put("nudge", b"x")
            try:
                next(ns.watch(after=start, poll_interval=0.01))
            except prism.CursorExpired:
                break
            assert time.monotonic() < deadline, "a change never aged out of the feed"
            time.sleep(0.05)


def test_without_the_feed_option_no_change_is_logged_and_watch_names_the_option(tmp_path: Path) -> None:
    path = tmp_path / "plain.db"
    with prism.connect_sync(f"sqlite:///{path}", purge_interval=0.01) as store:
        assert not store.capabilities.watch and not store.capabilities.watch_expiry
        ns = store.namespace("n")
        ns.put("k", b"v")
        ns.put("brief", b"v", ttl=0.01)
        ns.delete("k")
        time.sleep(0.05)
        ns.put("purge", b"v")  # a write after the purge interval purges the expired item
        with pytest.raises(prism.Unsupported, match="start the store with feed=true"):
            ns.watch()
    con = sqlite3.connect(path)
    try:
        tables = {row[0] for row in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    finally:
        con.close()
    assert "prism_items" in tables and "prism_changes" not in tables


def test_a_feed_store_does_not_see_the_writes_of_a_store_without_it(tmp_path: Path) -> None:
    path = tmp_path / "mixed.db"
    with (
        prism.connect_sync(f"sqlite:///{path}?feed=true") as fed,
        prism.connect_sync(f"sqlite:///{path}") as plain,
    ):
        feed = fed.namespace("n").watch(poll_interval=0.01)
        start = feed.start()
        plain.namespace("n").put("unlogged", b"v")
        etag = fed.namespace("n").put("logged", b"v")
        change = next(feed)
        assert (change.key, change.etag) == ("logged", etag)
        assert start != change.cursor


#: The fast purge as keyword options.
_FAST: dict[str, Any] = dict(FAST_PURGE)


def _purged_writes(ns: Any, count: int, prefix: str = "k") -> None:
    """``count`` puts, the last after the purge interval, so the store trims its feed."""
    for i in range(count - 1):
        ns.put(f"{prefix}{i}", b"x")
    time.sleep(0.06)
    ns.put(f"{prefix}{count - 1}", b"x")


def _expired(ns: Any, cursor: str) -> bool:
    try:
        next(ns.watch(after=cursor, poll_interval=0.01))
    except prism.CursorExpired:
        return True
    return False


def test_a_namespace_keeps_the_feed_retention_it_was_given(tmp_path: Path) -> None:
    """The store keeps 5 changes, one namespace 100 and another 3: each is trimmed to its own."""
    with prism.connect_sync(f"sqlite:///{tmp_path / 'n.db'}", feed_max_changes=5, **_FAST) as store:
        long = store.namespace("long", feed_max_changes=100)
        short = store.namespace("short", feed_max_changes=3)
        plain = store.namespace("plain")
        starts = {ns.name: ns.watch().start() for ns in (long, short, plain)}
        for ns in (long, short, plain):
            _purged_writes(ns, 20)
        _purged_writes(plain, 2, "again")
        assert _expired(plain, starts["plain"]) and _expired(short, starts["short"])
        assert not _expired(long, starts["long"])
        feed = long.watch(after=starts["long"], poll_interval=0.01)
        assert [next(feed).key for _ in range(20)] == [f"k{i}" for i in range(20)]
        # The short one keeps its 3 newest changes.
        db = sqlite3.connect(tmp_path / "n.db")
        counts = dict(db.execute("SELECT ns, count(*) FROM prism_changes GROUP BY ns").fetchall())
        db.close()
        assert counts["short"] == 3 and counts["long"] == 20


def test_a_store_without_the_namespace_setting_trims_it_without_a_gap(tmp_path: Path) -> None:
    """Another store on the file trims a listed namespace by its own retention; a cursor of a
    trimmed change then expires, it never skips."""
    url = f"sqlite:///{tmp_path / 'g.db'}"
    with prism.connect_sync(url, feed_max_changes=1000, **_FAST) as first:
        ns = first.namespace("own", feed_max_changes=50)
        start = ns.watch().start()
        _purged_writes(ns, 10)
    with prism.connect_sync(url, feed_max_changes=4, **_FAST) as second:
        ns = second.namespace("own")
        assert not _expired(ns, start)
        cursor = next(ns.watch(after=start)).cursor
        _purged_writes(ns, 10, "b")
        assert _expired(ns, start) and _expired(ns, cursor)


def test_a_namespace_feed_retention_by_age(tmp_path: Path) -> None:
    with prism.connect_sync(f"sqlite:///{tmp_path / 'a.db'}", **_FAST) as store:
        aging = store.namespace("aging", feed_retention=0.05)
        kept = store.namespace("kept")
        starts = (aging.watch().start(), kept.watch().start())
        aging.put("old", b"x")
        kept.put("old", b"x")
        time.sleep(0.1)
        _purged_writes(aging, 2)
        assert _expired(aging, starts[0])
        assert next(kept.watch(after=starts[1])).key == "old"
