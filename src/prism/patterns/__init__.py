"""Queue and PubSub by URL scheme, imported only when used.

The same URL that opens a store picks the engine: ``redis://`` gives Redis Streams and
Redis pub/sub, ``postgresql://`` a ``FOR UPDATE SKIP LOCKED`` table and LISTEN/NOTIFY,
``nats://`` a JetStream work-queue stream and core subjects, ``dynamodb://`` a table of
conditional-update leases, and ``memory://``/``sqlite://`` the embedded engines (one
node: a queue on the KeyValue store, pub/sub inside the process).
"""

from __future__ import annotations

import difflib
import importlib
from typing import Any

from prism.errors import InvalidArgument
from prism.patterns.base import Lease, PubSub, Queue, Subscription

__all__ = ["PUBSUBS", "QUEUES", "Lease", "PubSub", "Queue", "Subscription", "open_pubsub", "open_queue"]

QUEUES: dict[str, str] = {
    "memory": "prism.patterns.memory:EmbeddedQueue",
    "sqlite": "prism.patterns.memory:EmbeddedQueue",
    "redis": "prism.patterns.redis:RedisQueue",
    "rediss": "prism.patterns.redis:RedisQueue",
    "postgresql": "prism.patterns.postgres:PostgresQueue",
    "postgres": "prism.patterns.postgres:PostgresQueue",
    "nats": "prism.patterns.nats:NatsQueue",
    "dynamodb": "prism.patterns.dynamodb:DynamoDBQueue",
}

PUBSUBS: dict[str, str] = {
    "memory": "prism.patterns.memory:LocalPubSub",
    "sqlite": "prism.patterns.memory:LocalPubSub",
    "redis": "prism.patterns.redis:RedisPubSub",
    "rediss": "prism.patterns.redis:RedisPubSub",
    "postgresql": "prism.patterns.postgres:PostgresPubSub",
    "postgres": "prism.patterns.postgres:PostgresPubSub",
    "nats": "prism.patterns.nats:NatsPubSub",
    # DynamoDB has no fan-out: one node publishes in-process unless a pubsub URL is configured.
    "dynamodb": "prism.patterns.memory:LocalPubSub",
}

_EXTRAS = {
    "redis": "redis",
    "rediss": "redis",
    "postgresql": "postgres",
    "postgres": "postgres",
    "nats": "nats",
    "dynamodb": "dynamodb",
}


def _scheme(url: object) -> str:
    if not isinstance(url, str) or "://" not in url:
        raise InvalidArgument(f"a queue or pubsub URL looks like 'redis://host:6379/0', not {url!r}")
    return url.split("://", 1)[0].lower()


def _resolve(table: dict[str, str], scheme: str, what: str) -> type[Any]:
    target = table.get(scheme)
    if target is None:
        close = difflib.get_close_matches(scheme, sorted(table), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise InvalidArgument(
            f"no {what} engine for scheme {scheme!r}.{hint} Known: {', '.join(sorted(table))}"
        )
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        extra = _EXTRAS.get(scheme)
        if extra and exc.name and not exc.name.startswith("prism"):
            raise InvalidArgument(
                f"the {scheme}:// {what} needs the {exc.name!r} package: pip install 'prism[{extra}]'"
            ) from exc
        raise
    cls: type[Any] = getattr(module, attr)
    return cls


def open_queue(url: str, name: str = "requests", *, store: Any = None, **options: Any) -> Queue:
    """An unopened Queue named ``name`` on the engine of ``url``.

    ``store`` (an open Store on the same URL) is used by the engines that keep their
    messages on the KeyValue layer (the embedded one) and ignored by the others.
    """
    cls = _resolve(QUEUES, _scheme(url), "queue")
    if getattr(cls, "uses_store", False):
        options["store"] = store
    queue: Queue = cls.from_url(url, name, **options)
    return queue


def open_pubsub(url: str, **options: Any) -> PubSub:
    """An unopened PubSub on the engine of ``url``."""
    cls = _resolve(PUBSUBS, _scheme(url), "pubsub")
    pubsub: PubSub = cls.from_url(url, **options)
    return pubsub
