"""The KeyValue model: stores, namespaces, typed collections and the blocking API."""

from prism.kv.collection import Collection
from prism.kv.feed import ChangeFeed
from prism.kv.namespace import Namespace
from prism.kv.store import Store, connect
from prism.kv.sync import SyncChangeFeed, SyncCollection, SyncNamespace, SyncStore, connect_sync

__all__ = [
    "ChangeFeed",
    "Collection",
    "Namespace",
    "Store",
    "SyncChangeFeed",
    "SyncCollection",
    "SyncNamespace",
    "SyncStore",
    "connect",
    "connect_sync",
]
