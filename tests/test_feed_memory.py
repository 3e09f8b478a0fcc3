"""The change-feed conformance suite on ``memory://``, and the blocking watch."""

from __future__ import annotations

import time

import pytest

import prism
from prism.testing.feed import FeedSuite


class TestMemoryFeed(FeedSuite):
    @pytest.fixture
    def store_url(self) -> str:
        return "memory://?feed=true"


def test_blocking_watch_resumes_after_a_cursor() -> None:
    with prism.connect_sync("memory://", feed=True) as store:
        ns = store.namespace("feed")
        with ns.watch("u", poll_interval=0.01) as feed:
            start = feed.start()
            etag = ns.put("u1", b"1")
            ns.put("other", b"1")
            ns.delete("u1")
            first, second = next(feed), next(feed)
        assert feed.closed and list(feed) == []
        assert (first.key, first.op, first.etag) == ("u1", "put", etag)
        assert (second.key, second.op, second.etag) == ("u1", "delete", None)
        resumed = ns.watch("u", after=start)
        assert next(resumed) == first
        assert resumed.cursor == first.cursor


def test_memory_feed_options_come_from_the_url_or_keywords() -> None:
    with prism.connect_sync("memory://opts?feed=true&feed_max_changes=3&feed_retention=60") as store:
        ns = store.namespace("n")
        start = ns.watch().start()
        for i in range(5):
            ns.put(f"k{i}", b"x")
        with pytest.raises(prism.CursorExpired):
            next(ns.watch(after=start))
    with prism.connect_sync("memory://opts") as store:
        assert store.namespace("n").get("k4") is not None  # the same shared store as above


def test_memory_feed_retention_options_are_checked() -> None:
    with pytest.raises(prism.InvalidArgument, match="feed_max_changes"):
        prism.connect_sync("memory://", feed=True, feed_max_changes=0)
    with pytest.raises(prism.InvalidArgument, match="feed must be true or false"):
        prism.connect_sync("memory://?feed=maybe")
    with pytest.raises(
        prism.InvalidArgument, match="no options other than feed, feed_retention and feed_max_changes"
    ):
        prism.connect_sync("memory://", feed_size=3)


def test_a_backend_without_a_feed_says_so() -> None:
    with (
        prism.connect_sync(
            "memory://", backend="tests.test_conformance_memory:FewerCapabilitiesBackend"
        ) as store,
        pytest.raises(prism.Unsupported, match="no change feed"),
    ):
        store.namespace("x").watch()


def test_changes_older_than_the_retention_leave_the_feed() -> None:
    with prism.connect_sync("memory://", feed=True, feed_retention=0.05) as store:
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


def test_without_the_feed_option_nothing_is_logged_and_watch_names_the_option() -> None:
    with prism.connect_sync("memory://unfed") as plain:
        assert not plain.capabilities.watch and not plain.capabilities.watch_expiry
        plain.namespace("n").put("before", b"x")
        with pytest.raises(prism.Unsupported, match="start the store with feed=true"):
            plain.namespace("n").watch()
    # A feed=true store on the same shared data finds no change of the plain store's write.
    with prism.connect_sync("memory://unfed?feed=true") as fed:
        ns = fed.namespace("n")
        assert fed.capabilities.watch
        assert ns.watch().start() == "0"


def test_the_feed_retention_options_need_the_feed() -> None:
    with pytest.raises(prism.InvalidArgument, match="start the store with feed=true"):
        prism.connect_sync("memory://", feed_retention=60)
    with pytest.raises(prism.InvalidArgument, match="start the store with feed=true"):
        prism.connect_sync("memory://?feed_max_changes=5")


def test_a_namespace_keeps_the_feed_retention_it_was_given() -> None:
    with prism.connect_sync("memory://", feed=True, feed_max_changes=1000) as store:
        short = store.namespace("short", feed_max_changes=5)
        other = store.namespace("other")
        starts = (short.watch().start(), other.watch().start())
        for i in range(12):
            short.put(f"k{i}", b"x")
            other.put(f"k{i}", b"x")
        with pytest.raises(prism.CursorExpired, match="older than the retained window"):
            next(short.watch(after=starts[0]))
        # The other namespace keeps all twelve (the store's retention).
        feed = other.watch(after=starts[1])
        assert [next(feed).key for _ in range(12)] == [f"k{i}" for i in range(12)]
        # A handle made without the option keeps the namespace's retention.
        store.namespace("short").put("more", b"x")
        with pytest.raises(prism.CursorExpired):
            next(store.namespace("short").watch(after=starts[0]))


def test_a_namespace_feed_retention_by_age() -> None:
    with prism.connect_sync("memory://", feed=True) as store:
        ns = store.namespace("aging", feed_retention=0.05)
        kept = store.namespace("kept")
        starts = (ns.watch().start(), kept.watch().start())
        ns.put("old", b"x")
        kept.put("old", b"x")
        time.sleep(0.1)
        ns.put("new", b"x")
        kept.put("new", b"x")
        with pytest.raises(prism.CursorExpired):
            next(ns.watch(after=starts[0]))
        assert next(kept.watch(after=starts[1])).key == "old"


def test_a_namespace_feed_retention_is_checked() -> None:
    with prism.connect_sync("memory://", feed=True) as store:
        with pytest.raises(prism.InvalidArgument, match="feed_max_changes"):
            store.namespace("n", feed_max_changes=0)
        with pytest.raises(prism.InvalidArgument, match="feed_retention"):
            store.namespace("n", feed_retention=-1)
        with pytest.raises(prism.InvalidArgument, match="feed_retention"):
            store.namespace("n", feed_retention=True)
    with (
        prism.connect_sync("memory://") as plain,
        pytest.raises(prism.Unsupported, match="feed=true"),
    ):
        plain.namespace("n", feed_max_changes=5)
