"""What the change feeds of the engines share: cursors, retention settings and their errors.

A feed that keeps its changes in a log numbers them with one increasing sequence;
the cursor is that number as text. It is opaque to users: only its backend reads it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from prism.backends._retry import parse_flag
from prism.errors import CursorExpired, InvalidArgument
from prism.model import Capabilities

__all__ = [
    "DEFAULT_FEED_MAX_CHANGES",
    "DEFAULT_FEED_RETENTION",
    "check_retention",
    "cursor_ahead",
    "cursor_expired",
    "feed_capabilities",
    "feed_settings",
    "parse_cursor",
    "retention_options",
]

#: Seconds a change stays in a feed (24 hours).
DEFAULT_FEED_RETENTION = 86400.0
#: Most changes a feed keeps (the oldest go first).
DEFAULT_FEED_MAX_CHANGES = 1_000_000


def parse_cursor(cursor: str) -> int:
    """The sequence number a log feed's cursor stands for; InvalidArgument for anything else."""
    if type(cursor) is not str or not cursor.isascii() or not cursor.isdigit() or len(cursor) > 20:
        raise InvalidArgument(f"{cursor!r} is not a change-feed cursor of this store")
    return int(cursor)


def cursor_expired(cursor: str) -> CursorExpired:
    """The one CursorExpired every log feed raises for a cursor older than its window."""
    return CursorExpired(
        f"change-feed cursor {cursor!r} is older than the retained window: changes after it were "
        "discarded (feed_retention / feed_max_changes); watch again from a new cursor",
        cursor=cursor,
    )


def cursor_ahead(cursor: str) -> CursorExpired:
    """What a cursor past the newest change raises: it comes from another store, or one that was reset."""
    return CursorExpired(
        f"change-feed cursor {cursor!r} is ahead of the feed's newest change: it comes from another "
        "store or from one that was emptied or reset; watch again from a new cursor",
        cursor=cursor,
    )


def check_retention(feed_retention: float, feed_max_changes: int) -> None:
    if not feed_retention > 0 or feed_max_changes < 1:
        raise InvalidArgument(
            f"feed_retention must be > 0 seconds and feed_max_changes >= 1, "
            f"got {feed_retention!r} and {feed_max_changes!r}"
        )


def feed_settings(
    feed: bool, feed_retention: float | None, feed_max_changes: int | None
) -> tuple[float, int]:
    """Check the ``feed`` option and its retention; the retention with its defaults filled in.

    The retention options only mean something with the feed on: given without it, they
    are refused rather than silently ignored.
    """
    if type(feed) is not bool:
        raise InvalidArgument(f"feed must be true or false, got {feed!r}")
    if not feed and (feed_retention is not None or feed_max_changes is not None):
        raise InvalidArgument(
            "feed_retention and feed_max_changes need the change feed: start the store with feed=true"
        )
    retention = DEFAULT_FEED_RETENTION if feed_retention is None else feed_retention
    max_changes = DEFAULT_FEED_MAX_CHANGES if feed_max_changes is None else feed_max_changes
    check_retention(retention, max_changes)
    return retention, max_changes


def feed_capabilities(capabilities: Capabilities, feed: bool) -> Capabilities:
    """A store's capabilities: those of its class, without ``watch`` when its feed is off."""
    if feed or not (capabilities.watch or capabilities.watch_expiry):
        return capabilities
    return dataclasses.replace(capabilities, watch=False, watch_expiry=False)


def retention_options(opts: dict[str, Any]) -> dict[str, Any]:
    """Pop ``feed`` (bool), ``feed_retention`` (float s) and ``feed_max_changes`` (int) from options."""
    out: dict[str, Any] = {}
    if "feed" in opts:
        out["feed"] = parse_flag("feed", opts.pop("feed"))
    try:
        if "feed_retention" in opts:
            out["feed_retention"] = float(opts.pop("feed_retention"))
        if "feed_max_changes" in opts:
            out["feed_max_changes"] = int(opts.pop("feed_max_changes"))
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(f"bad change-feed option: {exc}") from exc
    return out
