"""Engines by URL scheme, imported only when used: the one registry of Prism.

A URL's scheme names an engine, and the engine's package provides everything that
talks to it: the KeyValue backend (``SCHEMES``), the queue (``QUEUES``) and the
pub/sub (``PUBSUBS``), each a ``"module:Class"`` string. The queue and pub/sub of an
engine read the same URL options as its backend, and given an open store on the same
URL they ride on that store's connection instead of opening a second one.

A third-party engine is plugged in with ``register`` (or, for one store,
``backend="package.module:Class"`` on ``prism.connect``); ``prism.testing`` ships the
suites it must pass.
"""

from __future__ import annotations

import difflib
import importlib
from typing import Any

from prism.backends.base import Backend
from prism.backends.messaging import PubSub, Queue
from prism.errors import InvalidArgument

__all__ = [
    "EXTRAS",
    "PUBSUBS",
    "QUEUES",
    "SCHEMES",
    "Backend",
    "open_backend",
    "open_pubsub",
    "open_queue",
    "register",
    "resolve",
]

SCHEMES: dict[str, str] = {
    "memory": "prism.backends.memory:MemoryBackend",
    "sqlite": "prism.backends.sqlite:SQLiteBackend",
    "redis": "prism.backends.redis:RedisBackend",
    "rediss": "prism.backends.redis:RedisBackend",
    "redis+cluster": "prism.backends.redis:RedisBackend",
    "rediss+cluster": "prism.backends.redis:RedisBackend",
    "postgresql": "prism.backends.postgres:PostgresBackend",
    "postgres": "prism.backends.postgres:PostgresBackend",
    "nats": "prism.backends.nats:NatsBackend",
    "dynamodb": "prism.backends.dynamodb:DynamoDBBackend",
    "prism+http": "prism.backends.gateway_http:GatewayHTTPBackend",
    "prism+https": "prism.backends.gateway_http:GatewayHTTPBackend",
    "prism": "prism.backends.grpc_client:GatewayGrpcBackend",
}

#: The queue of each engine.
QUEUES: dict[str, str] = {
    "memory": "prism.backends.embedded:EmbeddedQueue",
    "sqlite": "prism.backends.embedded:EmbeddedQueue",
    "redis": "prism.backends.redis.messaging:RedisQueue",
    "rediss": "prism.backends.redis.messaging:RedisQueue",
    "redis+cluster": "prism.backends.redis.messaging:RedisQueue",
    "rediss+cluster": "prism.backends.redis.messaging:RedisQueue",
    "postgresql": "prism.backends.postgres.messaging:PostgresQueue",
    "postgres": "prism.backends.postgres.messaging:PostgresQueue",
    "nats": "prism.backends.nats.messaging:NatsQueue",
    "dynamodb": "prism.backends.dynamodb.queue:DynamoDBQueue",
}

#: The pub/sub of each engine.
PUBSUBS: dict[str, str] = {
    "memory": "prism.backends.embedded:LocalPubSub",
    "sqlite": "prism.backends.embedded:LocalPubSub",
    "redis": "prism.backends.redis.messaging:RedisPubSub",
    "rediss": "prism.backends.redis.messaging:RedisPubSub",
    "redis+cluster": "prism.backends.redis.messaging:RedisPubSub",
    "rediss+cluster": "prism.backends.redis.messaging:RedisPubSub",
    "postgresql": "prism.backends.postgres.messaging:PostgresPubSub",
    "postgres": "prism.backends.postgres.messaging:PostgresPubSub",
    "nats": "prism.backends.nats.messaging:NatsPubSub",
    # DynamoDB has no fan-out: one node publishes in-process unless a pubsub URL is configured.
    "dynamodb": "prism.backends.embedded:LocalPubSub",
}

#: The extra that installs each scheme's driver.
EXTRAS: dict[str, str] = {
    "redis": "redis",
    "rediss": "redis",
    "redis+cluster": "redis",
    "rediss+cluster": "redis",
    "postgresql": "postgres",
    "postgres": "postgres",
    "nats": "nats",
    "dynamodb": "dynamodb",
    "prism": "grpc",
}


def register(scheme: str, target: str, *, queue: str | None = None, pubsub: str | None = None) -> None:
    """Make ``scheme://`` URLs open the backend at ``target`` ("package.module:Class").

    ``queue`` and ``pubsub`` name the engine's Queue and PubSub classes the same way.
    """
    SCHEMES[scheme] = target
    if queue is not None:
        QUEUES[scheme] = queue
    if pubsub is not None:
        PUBSUBS[scheme] = pubsub


def _import(target: str, scheme: str, what: str) -> object:
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        extra = EXTRAS.get(scheme)
        if extra and exc.name and not exc.name.startswith("prism"):
            raise InvalidArgument(
                f"the {scheme}:// {what} needs the {exc.name!r} package: pip install 'prism[{extra}]'"
            ) from exc
        raise InvalidArgument(f"cannot import {what} {target!r}: {exc}") from exc
    return getattr(module, attr, None)


def resolve(target: str, scheme: str = "") -> type[Backend]:
    """Import a backend class from ``"module:Class"``, explaining a missing extra."""
    cls = _import(target, scheme, "backend")
    if not (isinstance(cls, type) and issubclass(cls, Backend)):
        raise InvalidArgument(f"{target!r} is not a prism Backend class")
    return cls


def _scheme(url: object, example: str) -> str:
    if not isinstance(url, str) or "://" not in url:
        raise InvalidArgument(f"a {example}, not {url!r}")
    return url.split("://", 1)[0].lower()


def _target(table: dict[str, str], scheme: str, what: str) -> str:
    target = table.get(scheme)
    if target is None:
        known = sorted(table)
        close = difflib.get_close_matches(scheme, known, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise InvalidArgument(f"no {what} for scheme {scheme!r}.{hint} Known schemes: {', '.join(known)}")
    return target


def open_backend(url: str, backend: str | None = None, **options: Any) -> Backend:
    """Build (not yet open) the backend that serves ``url``."""
    scheme = _scheme(url, "store URL looks like 'sqlite:///path/to/db' or 'memory://'")
    target = backend or _target(SCHEMES, scheme, "store engine")
    return resolve(target, scheme).from_url(url, **options)


def open_queue(url: str, name: str = "requests", *, store: Any = None, **options: Any) -> Queue:
    """An unopened Queue named ``name`` on the engine of ``url``.

    ``options`` are the engine's URL options (timeouts, TLS, key prefix...), as query
    parameters of ``url`` or keywords. Given ``store``, an open Store on the same URL,
    the queue uses that store's connection and options rather than opening its own.
    """
    scheme = _scheme(url, "queue URL looks like 'redis://host:6379/0'")
    target = _target(QUEUES, scheme, "queue engine")
    cls = _import(target, scheme, "queue")
    if not (isinstance(cls, type) and issubclass(cls, Queue)):
        raise InvalidArgument(f"{target!r} is not a prism Queue class")
    return cls.from_url(url, name, store=store, **options)


def open_pubsub(url: str, *, store: Any = None, **options: Any) -> PubSub:
    """An unopened PubSub on the engine of ``url`` (``store`` and ``options`` as for ``open_queue``)."""
    scheme = _scheme(url, "pubsub URL looks like 'redis://host:6379/0'")
    target = _target(PUBSUBS, scheme, "pubsub engine")
    cls = _import(target, scheme, "pubsub")
    if not (isinstance(cls, type) and issubclass(cls, PubSub)):
        raise InvalidArgument(f"{target!r} is not a prism PubSub class")
    return cls.from_url(url, store=store, **options)
