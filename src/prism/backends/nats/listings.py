"""Key listings kept between pages and caught up from the stream, so paging is linear.

NATS lists a bucket's keys in stream order, not key order, and cannot start a listing
"after" a key, so every page of a scan or a record range read used to list the whole
namespace again (quadratic in its size). Instead a store keeps, per namespace and
filter subject (a scan prefix's whole tokens, or one record), the listing it took,
sorted by record id (scans) or item key (range reads), with the stream sequence it
is current to. A later page first catches it up: an ordered consumer from that
sequence + 1, filtered to the same subjects, delivers (headers only) every message
stored since, puts and tombstones alike, which are applied in order. So a page
costs one consumer request plus what changed, and is exact: keys inserted or
deleted between pages are seen like on any other backend. Expired items stay in the
listing with their expiry and are filtered by time when a page is read.

The cache is only an accelerator: a listing is taken from scratch when none is kept
(another replica of the gateway served the previous page, say), when it is older
than ``listing_max_age`` (messages removed without a new message, such as an
operator's purge, are only noticed then), or when the bucket's stream was created
anew (its creation time is asked for on every page).
"""

from __future__ import annotations

import asyncio
import bisect
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator

from prism.backends.nats.connection import Listed

__all__ = ["Listing", "ListingCache"]

#: Above this many new names in one catch-up, the order is rebuilt by one sort instead of insertions.
_RESORT = 64


class Listing:
    """The keys under one filter subject, grouped by a sort name (record id or item key).

    ``name_of`` maps a KV key to its group's name, or None for a key that is not listed
    (a chunk, a key Prism did not write, a record outside the prefix).
    """

    __slots__ = ("_name_of", "born", "groups", "lock", "names", "seq", "taken")

    def __init__(self, name_of: Callable[[str], str | None], born: str) -> None:
        self._name_of = name_of
        self.born = born
        #: The stream sequence this listing is current to.
        self.seq = 0
        #: monotonic time of the listing from scratch.
        self.taken = time.monotonic()
        self.groups: dict[str, dict[str, Listed]] = {}
        self.names: list[str] = []
        self.lock = asyncio.Lock()

    def apply(self, listed: Iterable[Listed]) -> None:
        """Apply messages in stream order: a put adds or replaces its key, a tombstone removes it."""
        groups, fresh = self.groups, list[str]()
        for entry in listed:
            if entry.seq > self.seq:
                self.seq = entry.seq
            name = self._name_of(entry.key)
            if name is None:
                continue
            members = groups.get(name)
            if entry.deleted:
                if members is not None and members.pop(entry.key, None) is not None and not members:
                    del groups[name]
                    if name in fresh:
                        fresh.remove(name)
                    else:
                        del self.names[bisect.bisect_left(self.names, name)]
                continue
            if members is None:
                members = groups[name] = {}
                fresh.append(name)
            members[entry.key] = entry
        if len(fresh) > _RESORT:
            self.names.extend(fresh)
            self.names.sort()
        else:
            for name in fresh:
                bisect.insort(self.names, name)

    def after(self, after: str | None, start: str | None = None) -> Iterator[tuple[str, dict[str, Listed]]]:
        """The groups sorting after ``after`` (and at or after ``start``), in order."""
        names = self.names
        i = 0
        if start is not None:
            i = bisect.bisect_left(names, start)
        if after is not None:
            i = max(i, bisect.bisect_right(names, after))
        groups = self.groups
        while i < len(names):
            name = names[i]
            yield name, groups[name]
            i += 1


class ListingCache:
    """The listings a store keeps, most recently used last, at most ``size`` of them."""

    __slots__ = ("_entries", "max_age", "size")

    def __init__(self, size: int, max_age: float) -> None:
        self.size = size
        self.max_age = max_age
        self._entries: OrderedDict[tuple[str, str], Listing] = OrderedDict()

    def get(self, stream: str, filter_subject: str, born: str) -> Listing | None:
        key = (stream, filter_subject)
        listing = self._entries.get(key)
        if listing is None:
            return None
        if listing.born != born or time.monotonic() - listing.taken > self.max_age:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return listing

    def put(self, stream: str, filter_subject: str, listing: Listing) -> None:
        if not self.size:
            return
        self._entries[(stream, filter_subject)] = listing
        self._entries.move_to_end((stream, filter_subject))
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def forget(self, stream: str) -> None:
        for key in [k for k in self._entries if k[0] == stream]:
            del self._entries[key]
