"""What the change feeds of the engines share: cursors, retention settings and their errors.

A feed that keeps its changes in a log numbers them with one increasing sequence;
the cursor is that number as text. It is opaque to users: only its backend reads it.
"""

from __future__ import annotations

from typing import Any

from prism.errors import CursorExpired, InvalidArgument

__all__ = [
    "DEFAULT_FEED_MAX_CHANGES",
    "DEFAULT_FEED_RETENTION",
    "check_retention",
    "cursor_ahead",
    "cursor_expired",
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


def retention_options(opts: dict[str, Any]) -> dict[str, Any]:
    """Pop ``feed_retention`` (float seconds) and ``feed_max_changes`` (int) from parsed options."""
    out: dict[str, Any] = {}
    try:
        if "feed_retention" in opts:
            out["feed_retention"] = float(opts.pop("feed_retention"))
        if "feed_max_changes" in opts:
            out["feed_max_changes"] = int(opts.pop("feed_max_changes"))
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(f"bad change-feed option: {exc}") from exc
    return out
