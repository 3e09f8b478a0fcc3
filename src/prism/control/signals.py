"""Signals: the service levels a namespace's clients set their deadlines, hedging and retries from.

A client asks ``GET /v1/namespaces/{ns}/signals`` (or the ``prism.v1.Signals`` rpc) on
connect and again after ``refresh_after_s``, and gets :class:`Signals`, derived from
the namespace's declared needs and its store's measured latency:

* ``latency_target_ms``: the declared ``needs.latency_p99_ms``; without one, the store's
  measured p99; without enough samples, ``signals.latency_target_ms``.
* ``latency_max_ms``: ``latency_target_ms * signals.max_over_target``, at least
  ``signals.min_latency_max_ms`` and at most the gateway's request timeout. It is the
  deadline of one call; a page of keys or items spends at most ``signals.page_budget``
  (half) of it reading the store and returns early rather than pass that.
* ``hedge_after_ms``: the declared ``needs.latency_p99_ms`` (a read still unanswered by
  then is already late); without one, the store's measured p95 (so about 5% of reads
  are hedged), at least ``signals.min_hedge_after_ms`` and at most half of
  ``latency_max_ms``.
* With neither a latency need nor enough samples there is nothing to advise: the
  deadline is the gateway's request timeout and the hedge comes at half of it.
* ``page_size_bytes``, ``retry``, ``refresh_after_s``, ``compression`` and
  ``compress_above_bytes`` come from the ``signals:`` settings; ``max_value_bytes`` is
  the namespace's.

:class:`StoreLatencies` keeps the measured latency: a rolling window of the pipeline's
handler timings per store (the last ``window_samples`` within ``window_seconds``).
:func:`scan_within` and :func:`items_within` read a page in chunks and stop, with what
they have and a page token, when the next chunk would pass the deadline (the early
partial response): a slow store gives shorter pages, never an error.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from typing import TYPE_CHECKING, Annotated

import msgspec

from prism.model import Item, Page

if TYPE_CHECKING:
    from prism.kv.namespace import Namespace

__all__ = [
    "COMPRESSION",
    "RetrySignal",
    "SignalBook",
    "Signals",
    "SignalsConfig",
    "StoreLatencies",
    "derive_signals",
    "items_within",
    "scan_within",
]

#: The content codings the gateway accepts for values.
COMPRESSION = ("gzip",)

_Positive = Annotated[float, msgspec.Meta(gt=0)]
_PositiveInt = Annotated[int, msgspec.Meta(ge=1)]


class SignalsConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """The ``signals:`` settings of the gateway (docs/control-plane.md, "Signals")."""

    #: The target when a namespace declares no latency need and its store has too few samples.
    latency_target_ms: _Positive = 100.0
    #: ``latency_max_ms`` is the target times this.
    max_over_target: Annotated[float, msgspec.Meta(ge=1)] = 4.0
    #: The smallest ``latency_max_ms`` handed out (a deadline tighter than this fails on jitter alone).
    min_latency_max_ms: _Positive = 100.0
    #: The earliest a hedge is sent.
    min_hedge_after_ms: _Positive = 5.0
    #: About how many bytes of values one page should carry.
    page_size_bytes: _PositiveInt = 2 * 1024 * 1024
    #: Attempts of one read in all, and the base pause between them.
    retry_attempts: _PositiveInt = 2
    retry_backoff_ms: Annotated[float, msgspec.Meta(ge=0)] = 20.0
    #: Clients ask for signals again after this long.
    refresh_after_s: _Positive = 30.0
    #: Offer compression of values (gzip) to clients.
    compression: bool = True
    #: Values larger than this are worth compressing.
    compress_above_bytes: _PositiveInt = 4096
    #: The measured latency: the last this many handler timings per store...
    window_samples: _PositiveInt = 512
    #: ...no older than this...
    window_seconds: _Positive = 60.0
    #: ...and only once there are at least this many.
    min_samples: _PositiveInt = 20
    #: Pages of keys and items are read from the store this many at a time, so that one
    #: that would pass ``latency_max_ms`` can return early with what it has.
    page_chunk: _PositiveInt = 100
    #: The share of ``latency_max_ms`` a page may spend reading the store; the rest is
    #: left for the answer to reach the client within its deadline.
    page_budget: Annotated[float, msgspec.Meta(gt=0, le=1)] = 0.5


class RetrySignal(msgspec.Struct, frozen=True):
    max_attempts: int
    backoff_ms: float


class Signals(msgspec.Struct, frozen=True):
    """What a client of a namespace should set its deadlines, hedging, retries and compression to."""

    latency_target_ms: float
    latency_max_ms: float
    page_size_bytes: int
    max_value_bytes: int
    compression: list[str]
    hedge_after_ms: float
    retry: RetrySignal
    refresh_after_s: float
    compress_above_bytes: int


class _Window:
    __slots__ = ("samples",)

    def __init__(self, size: int) -> None:
        #: (monotonic time, seconds)
        self.samples: deque[tuple[float, float]] = deque(maxlen=size)


class StoreLatencies:
    """A rolling latency estimate per store, fed with the pipeline's timings."""

    def __init__(self, config: SignalsConfig | None = None) -> None:
        self.config = config or SignalsConfig()
        self._windows: dict[str, _Window] = {}

    def observe(self, store: str, seconds: float) -> None:
        """Record that a request on ``store`` took ``seconds``."""
        window = self._windows.get(store)
        if window is None:
            window = self._windows[store] = _Window(self.config.window_samples)
        window.samples.append((time.monotonic(), seconds))

    def percentiles_ms(self, store: str, *quantiles: float) -> list[float] | None:
        """Those percentiles of ``store``'s recent timings (ms); None with too few samples."""
        window = self._windows.get(store)
        if window is None:
            return None
        since = time.monotonic() - self.config.window_seconds
        recent = sorted(s for t, s in window.samples if t >= since)
        if len(recent) < self.config.min_samples:
            return None
        return [
            recent[min(len(recent) - 1, max(math.ceil(q * len(recent)) - 1, 0))] * 1000 for q in quantiles
        ]

    def p99_ms(self, store: str) -> float | None:
        """The 99th percentile of ``store``'s recent timings (ms); None with too few samples."""
        found = self.percentiles_ms(store, 0.99)
        return None if found is None else found[0]


def derive_signals(
    config: SignalsConfig,
    *,
    latency_need_ms: float | None,
    measured_p99_ms: float | None,
    measured_p95_ms: float | None = None,
    max_value_bytes: int,
    request_timeout_s: float,
) -> Signals:
    """The signals of a namespace (the rules are in the module docstring)."""
    ceiling = request_timeout_s * 1000
    known = latency_need_ms if latency_need_ms is not None else measured_p99_ms
    if known is None:
        # Nothing declared, nothing measured: no advice tighter than the gateway's own deadline.
        target = config.latency_target_ms
        latency_max = ceiling
        hedge = latency_max / 2
    else:
        target = known
        latency_max = min(ceiling, max(config.min_latency_max_ms, target * config.max_over_target))
        # The need is the time past which a read is late; without one, the 5% slowest reads are.
        if latency_need_ms is not None:
            hedge = latency_need_ms
        else:
            hedge = measured_p95_ms if measured_p95_ms is not None else target
        hedge = min(max(hedge, config.min_hedge_after_ms), latency_max / 2)
    return Signals(
        latency_target_ms=round(target, 3),
        latency_max_ms=round(latency_max, 3),
        page_size_bytes=config.page_size_bytes,
        max_value_bytes=max_value_bytes,
        compression=list(COMPRESSION) if config.compression else [],
        hedge_after_ms=round(hedge, 3),
        retry=RetrySignal(config.retry_attempts, config.retry_backoff_ms),
        refresh_after_s=config.refresh_after_s,
        compress_above_bytes=config.compress_above_bytes,
    )


class SignalBook:
    """The signals of every namespace of a gateway, derived at most once per ``cache_s``."""

    def __init__(
        self, config: SignalsConfig, latencies: StoreLatencies, request_timeout_s: float, cache_s: float = 1.0
    ) -> None:
        self.config = config
        self.latencies = latencies
        self.request_timeout_s = request_timeout_s
        self.cache_s = cache_s
        self._cached: dict[str, tuple[float, Signals]] = {}

    def for_namespace(
        self, name: str, *, store: str, latency_need_ms: float | None, max_value_bytes: int
    ) -> Signals:
        """The signals of namespace ``name``, which lives in ``store``."""
        now = time.monotonic()
        hit = self._cached.get(name)
        if hit is not None and hit[0] > now:
            return hit[1]
        measured = self.latencies.percentiles_ms(store, 0.99, 0.95)
        signals = derive_signals(
            self.config,
            latency_need_ms=latency_need_ms,
            measured_p99_ms=None if measured is None else measured[0],
            measured_p95_ms=None if measured is None else measured[1],
            max_value_bytes=max_value_bytes,
            request_timeout_s=self.request_timeout_s,
        )
        self._cached[name] = (now + self.cache_s, signals)
        return signals


async def scan_within(
    ns: Namespace,
    prefix: str,
    *,
    limit: int,
    page_token: str | None,
    chunk: int,
    budget_s: float,
) -> tuple[Page[str], bool]:
    """A page of keys read ``chunk`` at a time; (page, cut short) when the budget ran out first.

    The first chunk is always read (a page makes progress); a later one only when what is
    left of ``budget_s`` is more than the slowest chunk so far took, and it is cancelled
    when it would pass the budget all the same.
    """
    deadline = time.monotonic() + budget_s
    keys: list[str] = []
    token = page_token
    slowest = 0.0
    while True:
        size = min(chunk, limit - len(keys))
        started = time.monotonic()
        if keys:
            remaining = deadline - started
            if remaining <= slowest:
                return Page(keys, token), True  # the next read would likely pass the deadline
            try:
                async with asyncio.timeout(remaining):
                    page = await ns.scan(prefix, limit=size, page_token=token)
            except TimeoutError:
                return Page(keys, token), True
        else:
            page = await ns.scan(prefix, limit=size, page_token=token)
        slowest = max(slowest, time.monotonic() - started)
        keys += page.keys
        token = page.next_page_token
        if token is None or len(keys) >= limit:
            return Page(keys, token), False


async def items_within(
    ns: Namespace,
    record: str,
    *,
    start: str | None,
    end: str | None,
    limit: int,
    page_size_bytes: int | None,
    page_token: str | None,
    chunk: int,
    budget_s: float,
) -> tuple[Page[Item], bool]:
    """A page of a record's items read ``chunk`` at a time, as :func:`scan_within` does for keys.

    ``page_size_bytes`` holds for the whole page as for one read: values stop before
    they would pass it (with at least one item).
    """
    deadline = time.monotonic() + budget_s
    items: list[Item] = []
    size_so_far = 0
    token = page_token
    slowest = 0.0
    while True:
        size = min(chunk, limit - len(items))
        room = None if page_size_bytes is None else page_size_bytes - size_so_far
        started = time.monotonic()
        if items:
            remaining = deadline - started
            if remaining <= slowest:
                return Page(items, token), True
            if room is not None and room <= 0:
                return Page(items, token), False
            try:
                async with asyncio.timeout(remaining):
                    page = await ns.get_items(
                        record, start=start, end=end, limit=size, page_size_bytes=room, page_token=token
                    )
            except TimeoutError:
                return Page(items, token), True
            if room is not None and sum(len(i.value) for i in page.items) > room:
                # Only the one item a read always returns can pass the room: it starts the next page.
                return Page(items, token), False
        else:
            page = await ns.get_items(
                record, start=start, end=end, limit=size, page_size_bytes=room, page_token=token
            )
        slowest = max(slowest, time.monotonic() - started)
        items += page.items
        size_so_far += sum(len(i.value) for i in page.items)
        token = page.next_page_token
        if token is None or len(items) >= limit:
            return Page(items, token), False
