"""The cache tier of a namespace: a shared look-aside cache and an in-process near cache.

Use it as ``store.namespace("profiles", cache=Cache(redis_store), near_cache=NearCache())``;
see docs/caching.md for the guarantees.
"""

from prism.kv.cache.metrics import CacheStats, TierStats
from prism.kv.cache.settings import Cache, NearCache
from prism.kv.cache.tier import CachedBackend

__all__ = ["Cache", "CacheStats", "CachedBackend", "NearCache", "TierStats"]
