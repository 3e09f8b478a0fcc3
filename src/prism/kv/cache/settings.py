"""The settings of a namespace's cache tier, as typed value objects."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from prism.errors import InvalidArgument

if TYPE_CHECKING:
    from prism.kv.store import Store

__all__ = ["Cache", "NearCache"]


def _seconds(owner: str, name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise InvalidArgument(f"{owner}.{name} must be a positive number of seconds, got {value!r}")


@dataclass(frozen=True, slots=True)
class Cache:
    """A shared look-aside cache in front of a namespace, held in another store (Redis is the usual one).

    * ``store``: the Store holding the cache entries; it must have conditional writes
      and TTLs (every built-in backend but NATS without TTL support has both);
    * ``ttl`` (180 s): the longest an entry lives; never longer than the item's own TTL;
    * ``max_item_bytes`` (1 MiB): larger values are read from the store every time;
    * ``timeout`` (0.1 s): the bound of every call to the cache store; past it (or on
      an error) the call goes to the namespace's store and the error is counted;
    * ``lease_ttl`` (5 s): how long a reader that missed may take to fill the entry;
    * ``recovery_interval`` (1 s): how often a process that saw the cache fail tries
      it again (and, when it answers, moves every replica to a new cache generation);
    * ``prefix`` ("prism-cache"): the cache store's namespaces are ``PREFIX.NAMESPACE``.
    """

    store: Store
    ttl: float = 180.0
    max_item_bytes: int = 1_048_576
    timeout: float = 0.1
    lease_ttl: float = 5.0
    recovery_interval: float = 1.0
    prefix: str = "prism-cache"

    def __post_init__(self) -> None:
        from prism.kv.store import Store

        if not isinstance(self.store, Store):
            raise InvalidArgument(f"cache.store must be a prism Store, got {type(self.store).__name__}")
        for name in ("ttl", "timeout", "lease_ttl", "recovery_interval"):
            _seconds("cache", name, getattr(self, name))
        if type(self.max_item_bytes) is not int or self.max_item_bytes < 1:
            raise InvalidArgument(f"cache.max_item_bytes must be an int >= 1, got {self.max_item_bytes!r}")
        if type(self.prefix) is not str or not self.prefix or "~" in self.prefix:
            raise InvalidArgument(f"cache.prefix must be a non-empty string without '~', got {self.prefix!r}")
        caps = self.store.capabilities
        if not (caps.etag and caps.ttl):
            raise InvalidArgument(
                f"cache.store: the {self.store.backend.name} store cannot hold a cache "
                "(it needs conditional writes and TTLs)"
            )


@dataclass(frozen=True, slots=True)
class NearCache:
    """An in-process LRU of recently read entries, in front of the shared cache.

    * ``max_items`` (10,000): the least recently read entry leaves first;
    * ``ttl`` (5 s): the longest an entry is served, whatever happens elsewhere;
    * ``poll_interval`` (0.1 s): how often the change feed is read when it is quiet.

    On a store with a change feed (``capabilities.watch``), a change written by any
    process evicts the entry once the feed delivers it, so staleness is bounded by
    ``min(ttl, feed delivery)`` (entries are not served while the feed has gone
    unread for 3 poll intervals); without a feed, by ``ttl`` alone. Writes made
    through the same handle evict at once.
    """

    max_items: int = 10_000
    ttl: float = 5.0
    poll_interval: float = 0.1

    def __post_init__(self) -> None:
        if type(self.max_items) is not int or self.max_items < 1:
            raise InvalidArgument(f"near_cache.max_items must be an int >= 1, got {self.max_items!r}")
        _seconds("near_cache", "ttl", self.ttl)
        _seconds("near_cache", "poll_interval", self.poll_interval)
        if self.poll_interval > 60:
            raise InvalidArgument("near_cache.poll_interval must be at most 60 seconds")
