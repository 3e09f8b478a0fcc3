"""Counters of the cache tiers, kept as plain ints and turned into Prometheus families when scraped.

``prism_cache_requests_total{namespace,tier,result=hit|miss|error}``,
``prism_cache_fills_total{namespace,tier,result=ok|refused}`` and
``prism_cache_invalidations_total{namespace,tier,result=ok|error}``; ``tier`` is
``near`` or ``shared``.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from typing import Any

from prometheus_client import REGISTRY
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

__all__ = ["CacheStats", "TierStats"]


class TierStats:
    """What one tier of one namespace saw in this process."""

    __slots__ = ("errors", "fills", "fills_refused", "hits", "invalidation_errors", "invalidations", "misses")

    def __init__(self) -> None:
        self.hits = 0
        self.misses = 0
        self.errors = 0
        self.fills = 0
        self.fills_refused = 0
        self.invalidations = 0
        self.invalidation_errors = 0

    @property
    def hit_ratio(self) -> float | None:
        """Hits over reads answered by the tier or past it (None before the first read)."""
        total = self.hits + self.misses + self.errors
        return None if total == 0 else self.hits / total

    def as_dict(self) -> dict[str, Any]:
        return {
            "hits": self.hits,
            "misses": self.misses,
            "errors": self.errors,
            "fills": self.fills,
            "fills_refused": self.fills_refused,
            "invalidations": self.invalidations,
            "invalidation_errors": self.invalidation_errors,
            "hit_ratio": self.hit_ratio,
        }

    def add(self, other: TierStats) -> None:
        for name in self.__slots__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


class CacheStats:
    """The counters of a namespace's cache tiers (``near`` is None without a near cache)."""

    __slots__ = ("__weakref__", "namespace", "near", "shared")

    def __init__(self, namespace: str, *, near: bool, shared: bool) -> None:
        self.namespace = namespace
        self.near = TierStats() if near else None
        self.shared = TierStats() if shared else None
        _LIVE.add(self)

    def tiers(self) -> Iterator[tuple[str, TierStats]]:
        if self.near is not None:
            yield "near", self.near
        if self.shared is not None:
            yield "shared", self.shared


_LIVE: weakref.WeakSet[CacheStats] = weakref.WeakSet()


class _CacheCollector(Collector):
    def collect(self) -> Iterator[CounterMetricFamily]:
        requests = CounterMetricFamily(
            "prism_cache_requests",
            "Reads of a cache tier, by result (hit, miss, error).",
            labels=["namespace", "tier", "result"],
        )
        fills = CounterMetricFamily(
            "prism_cache_fills",
            "Entries put into a cache tier (ok), or refused because an invalidation came first.",
            labels=["namespace", "tier", "result"],
        )
        invalidations = CounterMetricFamily(
            "prism_cache_invalidations",
            "Entries of a cache tier invalidated after a write, by result (ok, error).",
            labels=["namespace", "tier", "result"],
        )
        totals: dict[tuple[str, str], TierStats] = {}
        for stats in list(_LIVE):
            for tier, counts in stats.tiers():
                totals.setdefault((stats.namespace, tier), TierStats()).add(counts)
        for (ns, tier), c in sorted(totals.items()):
            requests.add_metric([ns, tier, "hit"], c.hits)
            requests.add_metric([ns, tier, "miss"], c.misses)
            requests.add_metric([ns, tier, "error"], c.errors)
            fills.add_metric([ns, tier, "ok"], c.fills)
            fills.add_metric([ns, tier, "refused"], c.fills_refused)
            invalidations.add_metric([ns, tier, "ok"], c.invalidations)
            invalidations.add_metric([ns, tier, "error"], c.invalidation_errors)
        yield requests
        yield fills
        yield invalidations


CACHE_METRICS = _CacheCollector()
REGISTRY.register(CACHE_METRICS)
