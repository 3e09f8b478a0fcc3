"""The change feed of a migrating namespace: the primary store's, never a silent gap across a cutover."""

from __future__ import annotations

from pathlib import Path

import pytest

import prism
from prism.migration import MigrationSettings
from prism.testing.feed import take

SETTINGS = MigrationSettings(poll_interval=0.1, page_size=40)
POLL = 0.05


async def test_the_feed_follows_the_primary_and_cursors_of_the_old_store_expire(
    tmp_path: Path, redis: str, namespace: str
) -> None:
    source = f"sqlite:///{tmp_path / 'fed.db'}?feed=true"
    target = f"{redis}{'&' if '?' in redis else '?'}feed=true"
    async with prism.migrate(source, target, namespace, settings=SETTINGS) as m:
        ns = m.namespace_handle()
        feed = ns.watch(poll_interval=POLL)
        await feed.start()
        etag = await ns.put("a", b"1")
        (before,) = await take(feed, 1)
        assert (before.key, before.op, before.etag) == ("a", "put", etag)

        await m.start()
        shadowed = await ns.put("b", b"2")
        (during,) = await take(feed, 1)
        assert (during.key, during.etag) == ("b", shadowed)

        await m.backfill()
        await m.verify()
        await m.cutover()
        # The source's cursors mean nothing to the target: resuming from one is refused, never a gap.
        with pytest.raises(prism.CursorExpired, match="watch again from a fresh cursor"):
            await take(ns.watch(after=during.cursor, poll_interval=POLL), 1)
        fresh = ns.watch(poll_interval=POLL)
        await fresh.start()
        after = await ns.put("c", b"3")
        (change,) = await take(fresh, 1)
        assert (change.key, change.etag) == ("c", after)
