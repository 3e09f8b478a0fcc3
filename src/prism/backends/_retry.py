"""Timeouts and retries shared by the network backends.

Every network call runs under ``Deadline`` (default 5 s per operation); transient
failures are retried with capped exponential backoff and full jitter while the
deadline allows, then surface as BackendUnavailable, or BackendTimeout (a
``prism.Timeout``) when the deadline passes without an answer. The settings are
``connect_timeout``, ``operation_timeout``, ``max_retries``, ``retry_base`` and
``retry_cap``, accepted as keyword options and URL query parameters by each backend.
Each retry is counted in ``prism_backend_retries_total{engine}``.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, fields, replace
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlsplit

from prometheus_client import Counter

from prism.errors import BackendTimeout, BackendUnavailable, InvalidArgument, PrismError

__all__ = ["FALSE_WORDS", "TRUE_WORDS", "NetworkSettings", "call_with_retry", "parse_flag", "split_options"]

#: Jitter from a generator of our own, leaving the global ``random`` state to the application.
_random = random.Random()

R = TypeVar("R")

RETRIES = Counter(
    "prism_backend_retries_total", "Backend calls retried after a transient failure, by engine.", ["engine"]
)


@dataclass(frozen=True, slots=True)
class NetworkSettings:
    """Timeouts and retry policy of one network backend (seconds)."""

    connect_timeout: float = 2.0
    operation_timeout: float = 5.0
    max_retries: int = 5
    retry_base: float = 0.02
    retry_cap: float = 0.5

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise InvalidArgument(f"{f.name} must be a non-negative number, got {value!r}")
        if self.connect_timeout <= 0 or self.operation_timeout <= 0:
            raise InvalidArgument("connect_timeout and operation_timeout must be positive")

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> NetworkSettings:
        """Pop this class's settings out of ``options`` (strings from a URL are converted)."""
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name in options:
                raw = options.pop(f.name)
                try:
                    values[f.name] = (int if f.name == "max_retries" else float)(raw)
                except (TypeError, ValueError) as exc:
                    raise InvalidArgument(f"{f.name} must be a number, got {raw!r}") from exc
        return replace(cls(), **values)

    def backoff(self, attempt: int) -> float:
        """Full-jitter exponential backoff for retry ``attempt`` (0-based)."""
        return _random.uniform(0, min(self.retry_cap, self.retry_base * (2**attempt)))


#: The words a boolean store option takes in a URL (any case), beside a real bool.
TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off"})


def parse_flag(name: str, raw: object) -> bool:
    """The boolean store option ``name``: a bool, or one of TRUE_WORDS / FALSE_WORDS."""
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in TRUE_WORDS:
        return True
    if text in FALSE_WORDS:
        return False
    raise InvalidArgument(f"{name} must be true or false, got {raw!r}")


def split_options(url: str, options: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """The URL without its query, and the query parameters merged under explicit ``options``."""
    parts = urlsplit(url)
    merged: dict[str, Any] = dict(parse_qsl(parts.query, keep_blank_values=True))
    merged.update(options)
    return parts._replace(query="").geturl(), merged


async def call_with_retry(
    settings: NetworkSettings,
    op: Callable[[], Awaitable[R]],
    *,
    is_transient: Callable[[BaseException], bool],
    describe: str,
    engine: str,
) -> R:
    """Run ``op`` under the operation deadline, retrying transient failures with backoff.

    PrismErrors raised by ``op`` pass through untouched; a transient driver failure
    that outlives the retries becomes BackendUnavailable chained to the last cause;
    a deadline that passes becomes BackendTimeout (a Timeout that is also BackendUnavailable).
    """
    deadline = time.monotonic() + settings.operation_timeout
    attempt = 0
    while True:
        remaining = deadline - time.monotonic()
        try:
            async with asyncio.timeout(max(remaining, 0.001)):
                return await op()
        except PrismError:
            raise
        except TimeoutError as exc:
            raise BackendTimeout(
                f"{describe}: no answer within {settings.operation_timeout} s", cause=exc
            ) from exc
        except Exception as exc:
            if not is_transient(exc):
                raise
            pause = settings.backoff(attempt)
            attempt += 1
            if attempt > settings.max_retries or time.monotonic() + pause >= deadline:
                raise BackendUnavailable(f"{describe}: {type(exc).__name__}: {exc}", cause=exc) from exc
            RETRIES.labels(engine).inc()
            await asyncio.sleep(pause)
