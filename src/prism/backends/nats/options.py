"""The options of a ``nats://`` store: URL query parameters or keyword arguments, checked up front."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit

from nats.js import api

from prism.backends._feed import feed_settings, retention_options
from prism.backends._retry import NetworkSettings, parse_flag, split_options
from prism.backends.urls import mask_url
from prism.errors import InvalidArgument

__all__ = [
    "DEFAULT_FEED_HISTORY",
    "DEFAULT_MAX_PAYLOAD",
    "MESSAGE_OVERHEAD",
    "STORAGE",
    "NatsOptions",
    "parse_url",
    "server_urls",
]

#: Bytes kept for headers and envelope fields beside a value in one message (and the
#: room left in each chunk message of a large value).
MESSAGE_OVERHEAD = 1024
#: Revisions of each key a bucket with a change feed keeps (NATS KV's largest history).
DEFAULT_FEED_HISTORY = 64
#: The server's default max_payload.
DEFAULT_MAX_PAYLOAD = 1024 * 1024
#: NATS advises against a max_payload above this.
LARGEST_MAX_PAYLOAD = 64 * 1024 * 1024
STORAGE = {"file": api.StorageType.FILE, "memory": api.StorageType.MEMORY}


_OPTION_KINDS: dict[str, Callable[[Any], Any]] = {
    "storage": str,
    "replicas": int,
    "reconnect_wait": float,
    "ping_interval": float,
    "revision_cache": int,
    "max_payload": int,
    "listing_cache": int,
    "listing_max_age": float,
    "feed_history": int,
    "reply_timeout": float,
    "replica_reads": bool,
}


@dataclass(frozen=True, slots=True)
class NatsOptions:
    """The NATS-specific options of a store (URL query parameters or keyword arguments)."""

    #: Storage of the buckets this store creates: "file" or "memory".
    storage: str = "file"
    #: Replicas of the buckets this store creates (1 to 5; more than 1 needs a cluster).
    replicas: int = 1
    #: Seconds between reconnect attempts after the connection drops.
    reconnect_wait: float = 1.0
    #: Seconds between client pings that detect a dead connection.
    ping_interval: float = 20.0
    #: Keys whose last revision is remembered so a write takes one round trip (0 disables).
    revision_cache: int = 50_000
    #: Bytes one message may hold, as the server's ``max_payload`` is configured; values of
    #: up to this minus 1 KiB take one message, larger ones are chunked. Checked against the
    #: server when the store opens.
    max_payload: int = DEFAULT_MAX_PAYLOAD
    #: Key listings (one per namespace and scan prefix or record) kept between pages and
    #: caught up from the stream, so a page costs what changed since the last one (0: list
    #: every page again).
    listing_cache: int = 16
    #: Seconds a kept listing is caught up before it is taken again from scratch.
    listing_max_age: float = 60.0
    #: Keep a change feed of each bucket this store uses (``prism.backends.nats.feed``).
    feed: bool = False
    #: Seconds, and number of changes, the feed streams this store creates keep (None: the defaults).
    feed_retention: float | None = None
    feed_max_changes: int | None = None
    #: Revisions of each key a bucket with a change feed keeps (2 to 1,000,000).
    feed_history: int = DEFAULT_FEED_HISTORY
    #: Seconds a request waits for its reply before it counts as unanswered (its server or
    #: the stream's leader went away) and is sent again within ``operation_timeout``.
    reply_timeout: float = 5.0
    #: Whether eventually consistent reads of a replicated bucket may be answered by any of
    #: its replicas (direct gets), which can be behind its leader by the latest writes; off:
    #: every read of a bucket with more than one replica goes to its leader.
    replica_reads: bool = False

    def __post_init__(self) -> None:
        feed_settings(self.feed, self.feed_retention, self.feed_max_changes)
        history = self.feed_history
        if isinstance(history, bool) or not isinstance(history, int) or not 2 <= history <= 1_000_000:
            raise InvalidArgument(f"feed_history must be an int from 2 to 1000000, got {history!r}")
        if history != DEFAULT_FEED_HISTORY and not self.feed:
            raise InvalidArgument("feed_history needs the change feed: start the store with feed=true")
        if self.storage not in STORAGE:
            raise InvalidArgument(f"storage must be 'file' or 'memory', got {self.storage!r}")
        replicas = self.replicas
        if isinstance(replicas, bool) or not isinstance(replicas, int) or not 1 <= replicas <= 5:
            raise InvalidArgument(f"replicas must be an int from 1 to 5, got {replicas!r}")
        for name in ("reconnect_wait", "ping_interval", "reply_timeout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise InvalidArgument(f"{name} must be a positive number of seconds, got {value!r}")
        for name in ("revision_cache", "listing_cache"):
            cache = getattr(self, name)
            if isinstance(cache, bool) or not isinstance(cache, int) or cache < 0:
                raise InvalidArgument(f"{name} must be a non-negative int, got {cache!r}")
        age = self.listing_max_age
        if isinstance(age, bool) or not isinstance(age, int | float) or not age > 0:
            raise InvalidArgument(f"listing_max_age must be a positive number of seconds, got {age!r}")
        size = self.max_payload
        if (
            isinstance(size, bool)
            or not isinstance(size, int)
            or not 2 * MESSAGE_OVERHEAD <= size <= LARGEST_MAX_PAYLOAD
        ):
            raise InvalidArgument(
                f"max_payload must be an int of bytes from {2 * MESSAGE_OVERHEAD} to {LARGEST_MAX_PAYLOAD}, "
                f"got {size!r}"
            )

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> NatsOptions:
        """Pop this class's options out of ``options``, converting strings from a URL."""
        values: dict[str, Any] = {}
        for name, kind in _OPTION_KINDS.items():
            if name in options:
                raw = options.pop(name)
                if kind is bool:
                    raw = parse_flag(name, raw)
                elif isinstance(raw, str) and kind is not str:
                    try:
                        raw = kind(raw)
                    except ValueError as exc:
                        raise InvalidArgument(f"{name} must be a number, got {raw!r}") from exc
                values[name] = raw
        values.update(retention_options(options))
        return replace(cls(), **values)


def parse_url(url: str, options: dict[str, Any]) -> tuple[str, NetworkSettings, NatsOptions]:
    """The server URL without its query, the timeouts and retries, and the NATS options.

    Keyword ``options`` win over query parameters; anything unknown is refused by name.
    """
    base, merged = split_options(url, options)
    parts = urlsplit(base)
    shown = mask_url(base)
    if parts.scheme.lower() != "nats":
        raise InvalidArgument(f"a NATS URL starts with nats://, got {shown!r}")
    for server in server_urls(base):
        try:
            one = urlsplit(server)
            one.port  # noqa: B018 - raises on a bad port
        except ValueError as exc:
            raise InvalidArgument(f"bad port in NATS URL {shown!r}") from exc
        if not one.hostname:
            raise InvalidArgument(
                f"a NATS URL needs a host (nats://127.0.0.1:4222, or nats://a:4222,b:4222 for a "
                f"cluster), got {shown!r}"
            )
    if parts.path not in ("", "/") or parts.fragment:
        raise InvalidArgument(f"a NATS URL has no path or fragment: {shown!r}")
    settings = NetworkSettings.from_options(merged)
    nats_options = NatsOptions.from_options(merged)
    if merged:
        known = ["connect_timeout", "operation_timeout", "max_retries", "retry_base", "retry_cap"]
        known += ["feed", "feed_retention", "feed_max_changes"]
        raise InvalidArgument(
            f"unknown nats:// option(s) {sorted(merged)}; known: {', '.join(known + list(_OPTION_KINDS))}"
        )
    return parts._replace(path="").geturl(), settings, nats_options


def server_urls(url: str) -> list[str]:
    """The URL of each server a ``nats://`` URL names: ``nats://a:4222,b:4222`` is a cluster's seeds.

    Each keeps the URL's credentials (``user:password@`` or a token).
    """
    parts = urlsplit(url)
    userinfo, at, hosts = parts.netloc.rpartition("@")
    return [parts._replace(netloc=f"{userinfo}{at}{host}").geturl() for host in hosts.split(",")]
