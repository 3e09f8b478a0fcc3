"""Prism: one KeyValue model over SQLite, DynamoDB, Redis, PostgreSQL and NATS, and TimeSeries.

Open a store with ``prism.connect(url)`` (async) or ``prism.connect_sync(url)``
(blocking), take a namespace with ``store.namespace(name)``, and read and write
keys, records and typed collections; see docs/library.md. Event streams go to
``store.timeseries(name)``; see docs/timeseries.md.
"""

from typing import TYPE_CHECKING

from prism.errors import (
    AuthError,
    BackendTimeout,
    BackendUnavailable,
    ConfigError,
    CursorExpired,
    DecodeError,
    InvalidArgument,
    InvalidKey,
    PreconditionFailed,
    PrismError,
    StoreClosed,
    Timeout,
    Unsupported,
    ValueTooLarge,
)
from prism.kv import (
    ChangeFeed,
    Collection,
    Namespace,
    Store,
    SyncChangeFeed,
    SyncCollection,
    SyncNamespace,
    SyncStore,
    connect,
    connect_sync,
)
from prism.kv.cache import Cache, NearCache
from prism.model import (
    Capabilities,
    Change,
    Delete,
    Event,
    EventPage,
    EventResult,
    Item,
    Page,
    Put,
    WriteResult,
)
from prism.timeseries import SyncTimeSeries, TimeSeries

if TYPE_CHECKING:
    from prism.migration import migrate
    from prism.streaming.client import StreamClient

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    # The streaming client pulls in websockets: imported only when asked for.
    if name == "StreamClient":
        from prism.streaming.client import StreamClient

        return StreamClient
    if name == "migrate":
        from prism.migration import migrate

        return migrate
    raise AttributeError(f"module 'prism' has no attribute {name!r}")


__all__ = [
    "AuthError",
    "BackendTimeout",
    "BackendUnavailable",
    "Cache",
    "Capabilities",
    "Change",
    "ChangeFeed",
    "Collection",
    "ConfigError",
    "CursorExpired",
    "DecodeError",
    "Delete",
    "Event",
    "EventPage",
    "EventResult",
    "InvalidArgument",
    "InvalidKey",
    "Item",
    "Namespace",
    "NearCache",
    "Page",
    "PreconditionFailed",
    "PrismError",
    "Put",
    "Store",
    "StoreClosed",
    "StreamClient",
    "SyncChangeFeed",
    "SyncCollection",
    "SyncNamespace",
    "SyncStore",
    "SyncTimeSeries",
    "TimeSeries",
    "Timeout",
    "Unsupported",
    "ValueTooLarge",
    "WriteResult",
    "connect",
    "connect_sync",
    "migrate",
]
