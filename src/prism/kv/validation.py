"""Input rules, checked before anything reaches a backend (so bad input writes nothing)."""

from __future__ import annotations

import math
import os
import re
import time
from datetime import timedelta
from itertools import count
from urllib.parse import unquote_to_bytes

from prism.errors import InvalidArgument, InvalidKey, ValueTooLarge
from prism.model import MAX_KEY_BYTES

__all__ = [
    "SHORT_ID",
    "check_content_type",
    "check_id",
    "check_item_key",
    "check_limit",
    "check_value",
    "expiry",
    "new_etag",
    "not_utf8",
    "ttl_seconds",
    "undecodable_escape",
]


#: An ASCII id of at most this many characters, without NUL, is within every limit.
SHORT_ID = MAX_KEY_BYTES // 4


def check_id(key: object, what: str = "key") -> str:
    """A record id or flat key: a non-empty str of at most 1024 UTF-8 bytes without NUL."""
    if type(key) is not str:
        raise InvalidKey(f"{what} must be a str, got {type(key).__name__}")
    if not key:
        raise InvalidKey(f"{what} must not be empty")
    return _check_text(key, what)


def check_item_key(key: object) -> str:
    """An item key inside a record: like an id, but "" is allowed (the flat entry)."""
    if type(key) is not str:
        raise InvalidKey(f"item key must be a str, got {type(key).__name__}")
    return _check_text(key, "item key") if key else key


def _check_text(key: str, what: str) -> str:
    if len(key) > SHORT_ID or "\x00" in key:
        # Only long keys pay for the encode; NUL is refused outright.
        if "\x00" in key:
            raise InvalidKey(f"{what} must not contain NUL: {key[:40]!r}")
        try:
            size = len(key.encode("utf-8"))
        except UnicodeEncodeError as exc:
            raise InvalidKey(f"{what} is not valid UTF-8 (lone surrogate): {key[:40]!r}") from exc
        if size > MAX_KEY_BYTES:
            raise InvalidKey(f"{what} is {size} bytes of UTF-8; the limit is {MAX_KEY_BYTES}")
    elif not key.isascii():
        try:
            key.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidKey(f"{what} is not valid UTF-8 (lone surrogate): {key[:40]!r}") from exc
    return key


def check_value(value: object, limit: int, key: str = "") -> bytes:
    """The value as bytes, refusing non-bytes and anything over ``limit`` bytes."""
    if type(value) is not bytes:
        if isinstance(value, bytearray | memoryview):
            value = bytes(value)
        else:
            raise InvalidArgument(
                f"value for {key!r} must be bytes, got {type(value).__name__} "
                "(encode it, or use store.collection() for typed values)"
            )
    if len(value) > limit:
        raise ValueTooLarge(f"value for {key!r} is {len(value)} bytes; this namespace allows {limit}")
    return value


def check_content_type(content_type: object) -> str | None:
    if content_type is None:
        return None
    if type(content_type) is not str or not content_type or len(content_type) > 255:
        raise InvalidArgument("content_type must be a non-empty str of at most 255 characters, or None")
    if not content_type.isprintable():
        raise InvalidArgument("content_type must not contain control characters")
    return content_type


#: The longest ttl accepted (100 years): beyond it expiry times stop being representable datetimes.
MAX_TTL_SECONDS = 100 * 365 * 24 * 3600


def ttl_seconds(ttl: object) -> float | None:
    """A ttl as positive finite seconds (int, float or timedelta), or None."""
    if ttl is None:
        return None
    if isinstance(ttl, timedelta):
        seconds = ttl.total_seconds()
    elif isinstance(ttl, int | float) and not isinstance(ttl, bool):
        seconds = float(ttl)
    else:
        raise InvalidArgument(f"ttl must be seconds as int, float or timedelta, got {type(ttl).__name__}")
    if not (seconds > 0 and math.isfinite(seconds)):
        raise InvalidArgument(f"ttl must be a positive, finite number of seconds, got {ttl!r}")
    if seconds > MAX_TTL_SECONDS:
        raise InvalidArgument(f"ttl must be at most {MAX_TTL_SECONDS} seconds (100 years), got {ttl!r}")
    return seconds


def expiry(ttl: object, default: float | None, now: float) -> float | None:
    """Epoch seconds at which a write made ``now`` expires."""
    seconds = ttl_seconds(ttl)
    if seconds is None:
        seconds = default
    return None if seconds is None else now + seconds


def check_limit(limit: object, maximum: int, what: str = "limit") -> int:
    if type(limit) is not int or not 1 <= limit <= maximum:
        raise InvalidArgument(f"{what} must be an int from 1 to {maximum}, got {limit!r}")
    return limit


class _EtagSource:
    """Etags are a per-process random prefix plus a counter: unique, cheap, and renewed after fork."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.prefix = os.urandom(6).hex()
        self.counter = count(int(time.time() * 1000) & 0xFFFFFFFF)


_etags = _EtagSource()
os.register_at_fork(after_in_child=_etags.reset)


def new_etag() -> str:
    return f"{_etags.prefix}{next(_etags.counter):x}"


_ESCAPES = re.compile(rb"(?:%[0-9A-Fa-f]{2})+")


def undecodable_escape(raw: bytes) -> str | None:
    """The first run of percent-escapes in a raw URL path or query that is not UTF-8 (``%FF``), or None.

    Servers decode such escapes to U+FFFD, so different keys, record ids and names would
    alias one another; every transport refuses them with this one check.
    """
    if b"%" not in raw:
        return None
    for run in _ESCAPES.finditer(raw):
        try:
            unquote_to_bytes(run.group()).decode("utf-8")
        except UnicodeDecodeError:
            return run.group().decode("ascii")
    return None


def not_utf8(data: bytes) -> str:
    """Why ``data`` is not UTF-8, naming the first invalid byte (for error messages)."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"it is not UTF-8 (byte {exc.start} is invalid)"
    return "it is not UTF-8"
