"""The KeyValue model: stores, namespaces, typed collections and the blocking API."""

from prism.kv.collection import Collection
from prism.kv.namespace import Namespace
from prism.kv.store import Store, connect
from prism.kv.sync import SyncCollection, SyncNamespace, SyncStore, connect_sync

__all__ = [
    "Collection",
    "Namespace",
    "Store",
    "SyncCollection",
    "SyncNamespace",
    "SyncStore",
    "connect",
    "connect_sync",
]
