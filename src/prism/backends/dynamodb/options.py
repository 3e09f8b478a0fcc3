"""The settings of a ``dynamodb://`` store, parsed from its URL and keyword options."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

from prism.backends._feed import feed_settings, retention_options
from prism.backends._retry import NetworkSettings, parse_flag, split_options
from prism.backends.dynamodb.feed import DEFAULT_FEED_POLL_INTERVAL, STREAM_RETENTION
from prism.backends.urls import mask_url
from prism.errors import InvalidArgument

__all__ = ["DEFAULT_MAX_CONNECTIONS", "DEFAULT_TABLE_READY_TIMEOUT", "DynamoDBOptions"]

#: HTTP connections the store's client keeps at most (one per request in flight).
DEFAULT_MAX_CONNECTIONS = 128
#: Seconds ``open()`` waits for a table it created to become ACTIVE.
DEFAULT_TABLE_READY_TIMEOUT = 60.0

_TABLE_NAME = re.compile(r"[A-Za-z0-9_.\-]{3,255}")
_OWN_OPTIONS = (
    "region",
    "endpoint",
    "profile",
    "create_table",
    "max_connections",
    "table_ready_timeout",
    "blind_batch_puts",
    "scan_index",
    "feed",
    "feed_retention",
    "feed_poll_interval",
)


def _text(name: str, raw: object) -> str:
    if not isinstance(raw, str) or not raw:
        raise InvalidArgument(f"{name} must be a non-empty string, got {raw!r}")
    return raw


@dataclass(frozen=True, slots=True)
class DynamoDBOptions:
    """Where the table lives and how the store talks to it.

    Credentials are never options: they come from the standard AWS chain
    (environment, shared config and credentials files, instance or task roles).
    """

    table: str
    region: str | None = None
    endpoint: str | None = None
    profile: str | None = None
    create_table: bool = False
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    table_ready_timeout: float = DEFAULT_TABLE_READY_TIMEOUT
    network: NetworkSettings = field(default_factory=NetworkSettings)
    #: put_many writes its unconditional puts without first reading the items they replace
    #: (one round trip less; see ``DynamoDBBackend``).
    blind_batch_puts: bool = False
    #: Keep a change feed (``Namespace.watch``) on the table's DynamoDB Stream.
    feed: bool = False
    #: Seconds a change stays watchable (at most the stream's fixed 24 hours).
    feed_retention: float = STREAM_RETENTION
    #: Seconds between two reads of the stream by an idle watch, at least.
    feed_poll_interval: float = DEFAULT_FEED_POLL_INTERVAL
    #: Items carry the keys of the ``prism_records`` index, which serves ``scan``. False
    #: leaves them out: a new key costs one write unit (no index write) and ``scan``
    #: raises Unsupported.
    scan_index: bool = True

    @classmethod
    def parse(cls, url: str, options: dict[str, Any]) -> DynamoDBOptions:
        """Options from ``dynamodb://TABLE?opt=value`` merged under keyword ``options``.

        Raises InvalidArgument naming any unknown option or bad value.
        """
        base, merged = split_options(url, options)
        parts = urlsplit(base)
        if parts.scheme.lower() != "dynamodb":
            raise InvalidArgument(f"a DynamoDB store URL starts with dynamodb://, not {parts.scheme}://")
        if "@" in parts.netloc:
            raise InvalidArgument(
                "dynamodb:// URLs hold no credentials: they come from the AWS environment "
                "(AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, ~/.aws, or an instance role)"
            )
        if parts.path not in ("", "/"):
            raise InvalidArgument(
                "a DynamoDB store URL is dynamodb://TABLE?options, with no path after the table"
            )
        table = unquote(parts.netloc)
        if not _TABLE_NAME.fullmatch(table):
            raise InvalidArgument(
                f"DynamoDB table names are 3-255 characters of A-Z a-z 0-9 _ . -, got {table!r}"
            )
        network = NetworkSettings.from_options(merged)
        if "feed_max_changes" in merged:
            raise InvalidArgument(
                "feed_max_changes is not supported on dynamodb://: DynamoDB Streams keep changes for "
                "24 hours, not a number of them (feed_retention can shorten that window)"
            )
        fed = retention_options(merged)
        feed = fed.get("feed", False)
        retention, _ = feed_settings(feed, fed.get("feed_retention"), None)
        if retention > STREAM_RETENTION:
            raise InvalidArgument(
                f"feed_retention must be at most {STREAM_RETENTION:g} s on dynamodb://: DynamoDB Streams "
                f"keep changes for 24 hours and cannot keep them longer, got {retention!r}"
            )
        if "feed_poll_interval" in merged and not feed:
            raise InvalidArgument("feed_poll_interval needs the change feed: start the store with feed=true")
        poll = _positive_float(
            "feed_poll_interval", merged.pop("feed_poll_interval", DEFAULT_FEED_POLL_INTERVAL)
        )
        unknown = sorted(set(merged) - set(_OWN_OPTIONS))
        if unknown:
            known = sorted([*_OWN_OPTIONS, *NetworkSettings.__dataclass_fields__])
            raise InvalidArgument(
                f"unknown dynamodb:// option(s) {unknown}; known options: {', '.join(known)}"
            )
        region = _text("region", merged["region"]) if "region" in merged else None
        endpoint = _text("endpoint", merged["endpoint"]) if "endpoint" in merged else None
        if endpoint is not None and urlsplit(endpoint).scheme not in ("http", "https"):
            raise InvalidArgument(f"endpoint must be an http:// or https:// URL, got {mask_url(endpoint)!r}")
        profile = _text("profile", merged["profile"]) if "profile" in merged else None
        create = parse_flag("create_table", merged.get("create_table", False))
        connections = _positive_int("max_connections", merged.get("max_connections", DEFAULT_MAX_CONNECTIONS))
        ready = _positive_float(
            "table_ready_timeout", merged.get("table_ready_timeout", DEFAULT_TABLE_READY_TIMEOUT)
        )
        blind = parse_flag("blind_batch_puts", merged.get("blind_batch_puts", False))
        return cls(
            table,
            region,
            endpoint,
            profile,
            create,
            connections,
            ready,
            network,
            blind,
            feed=feed,
            feed_retention=retention,
            feed_poll_interval=poll,
            scan_index=parse_flag("scan_index", merged.get("scan_index", True)),
        )


def _positive_int(name: str, raw: object) -> int:
    try:
        value = int(raw) if isinstance(raw, str | int) and not isinstance(raw, bool) else None
    except ValueError:
        value = None
    if value is None or value < 1:
        raise InvalidArgument(f"{name} must be a positive integer, got {raw!r}")
    return value


def _positive_float(name: str, raw: object) -> float:
    try:
        value = float(raw) if isinstance(raw, str | int | float) and not isinstance(raw, bool) else None
    except ValueError:
        value = None
    if value is None or not value > 0 or value == float("inf"):
        raise InvalidArgument(f"{name} must be a positive number of seconds, got {raw!r}")
    return value
