"""The change-feed conformance suite on SQLite (a file and ``:memory:``), and a feed shared by two stores."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

import prism
from prism.testing.feed import FeedSuite

#: Purge (and trim the feed) often, so expiry and trimming show within a test.
FAST_PURGE = {"purge_interval": 0.05}


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
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    with prism.connect_sync(url) as watcher, prism.connect_sync(url) as writer:
        feed = watcher.namespace("shared").watch(poll_interval=0.01)
        feed.start()
        etag = writer.namespace("shared").put("k", b"v")
        change = next(feed)
        assert (change.key, change.op, change.etag) == ("k", "put", etag)


def test_sqlite_feed_options_come_from_the_url(tmp_path: Path) -> None:
    with prism.connect_sync(f"sqlite:///{tmp_path / 'o.db'}?feed_max_changes=7&feed_retention=60") as store:
        assert (store.backend.feed_max_changes, store.backend.feed_retention) == (7, 60.0)  # type: ignore[attr-defined]
    with pytest.raises(prism.InvalidArgument, match="feed_retention"):
        prism.connect_sync(f"sqlite:///{tmp_path / 'o.db'}?feed_retention=0")


def test_changes_older_than_the_retention_leave_the_feed(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'aging.db'}?feed_retention=0.05&purge_interval=0.01"
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
