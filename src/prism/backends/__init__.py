"""Backends by URL scheme, imported only when used.

``SCHEMES`` maps a URL scheme to ``"module:Class"``; a third-party backend is opened
with its dotted path as the scheme's value via ``register`` or by passing
``backend="package.module:Class"`` to ``prism.connect``.
"""

from __future__ import annotations

import difflib
import importlib
from typing import Any

from prism.backends.base import Backend
from prism.errors import InvalidArgument

__all__ = ["EXTRAS", "SCHEMES", "Backend", "open_backend", "register", "resolve"]

SCHEMES: dict[str, str] = {
    "memory": "prism.backends.memory:MemoryBackend",
    "sqlite": "prism.backends.sqlite:SQLiteBackend",
    "redis": "prism.backends.redis:RedisBackend",
    "rediss": "prism.backends.redis:RedisBackend",
    "postgresql": "prism.backends.postgres:PostgresBackend",
    "postgres": "prism.backends.postgres:PostgresBackend",
    "nats": "prism.backends.nats:NatsBackend",
    "dynamodb": "prism.backends.dynamodb:DynamoDBBackend",
    "prism+http": "prism.backends.gateway_http:GatewayHTTPBackend",
    "prism+https": "prism.backends.gateway_http:GatewayHTTPBackend",
}

#: The extra that installs each scheme's driver.
EXTRAS: dict[str, str] = {
    "redis": "redis",
    "rediss": "redis",
    "postgresql": "postgres",
    "postgres": "postgres",
    "nats": "nats",
    "dynamodb": "dynamodb",
}


def register(scheme: str, target: str) -> None:
    """Make ``scheme://`` URLs open the backend at ``target`` ("package.module:Class")."""
    SCHEMES[scheme] = target


def resolve(target: str, scheme: str = "") -> type[Backend]:
    """Import a backend class from ``"module:Class"``, explaining a missing extra."""
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        extra = EXTRAS.get(scheme)
        if extra and exc.name and not exc.name.startswith("prism"):
            raise InvalidArgument(
                f"the {scheme}:// backend needs the {exc.name!r} package: pip install 'prism[{extra}]'"
            ) from exc
        raise InvalidArgument(f"cannot import backend {target!r}: {exc}") from exc
    cls = getattr(module, attr, None)
    if not (isinstance(cls, type) and issubclass(cls, Backend)):
        raise InvalidArgument(f"{target!r} is not a prism Backend class")
    return cls


def open_backend(url: str, backend: str | None = None, **options: Any) -> Backend:
    """Build (not yet open) the backend that serves ``url``."""
    if not isinstance(url, str) or "://" not in url:
        raise InvalidArgument(f"a store URL looks like 'sqlite:///path/to/db' or 'memory://', not {url!r}")
    scheme = url.split("://", 1)[0].lower()
    target = backend or SCHEMES.get(scheme)
    if target is None:
        known = sorted(SCHEMES)
        close = difflib.get_close_matches(scheme, known, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise InvalidArgument(f"unknown store scheme {scheme!r}.{hint} Known schemes: {', '.join(known)}")
    return resolve(target, scheme).from_url(url, **options)
