"""Signals on the client side: the gateway's advice per namespace, kept fresh, and hedged reads.

The ``prism://`` and ``prism+http://`` backends ask the gateway, when they open, for
the namespaces the caller may see (one list call) and the signals of up to
``signals_prefetch`` (100) of them (``GET /v1/namespaces/{ns}/signals`` or
``prism.v1.Signals/GetSignals``), all within ``connect_timeout``; a namespace whose
signals did not come then is asked for the first time it is used. Every namespace's
signals are asked for again in the background once ``refresh_after_s`` has passed.
A failure while opening never fails the connect: it is logged, and the signals are
asked for on first use. While they hold signals for a namespace:

* a read's deadline (retries included) is ``latency_max_ms`` (never more than the
  backend's own ``operation_timeout``), and reads are tried ``retry.max_attempts``
  times in all, ``retry.backoff_ms`` apart (jittered); a setting the user gave
  (``operation_timeout``, ``max_retries``, ``retry_base`` in the URL or as keywords)
  is never overridden;
* a read with no answer after ``hedge_after_ms`` is sent once more, and the first
  answer wins; a call sends at most one hedge (``prism_client_hedged_reads_total``
  counts those sent and those that won);
* values above ``compress_above_bytes`` are sent compressed when the gateway lists a
  coding both sides know in ``compression``.

A gateway that answers no signals (an older one, or a caller who may not read them)
leaves the backend on its own settings; it asks again after ``signals_retry`` seconds
(counted in ``prism_client_signals_fetches_total{outcome="failed"}``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import msgspec
from prometheus_client import Counter

from prism.backends._retry import NetworkSettings

__all__ = [
    "ADVISED",
    "COMPRESSED",
    "DEFAULT_SIGNALS_PREFETCH",
    "DEFAULT_SIGNALS_RETRY",
    "HEDGES",
    "SIGNAL_FETCHES",
    "ClientSignals",
    "NamespaceSignals",
    "hedged",
]

R = TypeVar("R")

log = logging.getLogger("prism.backends")

#: The network settings signals advise (a user's own value for one of them wins).
ADVISED = ("operation_timeout", "max_retries", "retry_base")
#: How long a backend waits before asking again when the gateway answered no signals (seconds).
DEFAULT_SIGNALS_RETRY = 30.0
#: How many namespaces' signals a backend asks for when it opens, at most.
DEFAULT_SIGNALS_PREFETCH = 100
#: How many of those questions are in flight at once.
PREFETCH_CONCURRENCY = 8
#: Content codings this client can send.
CLIENT_CODINGS = ("gzip",)

HEDGES = Counter(
    "prism_client_hedged_reads_total",
    "Reads sent once more because the first had no answer after hedge_after_ms (outcome=sent), "
    "and those where the second answered first (outcome=won), by backend.",
    ["backend", "outcome"],
)
COMPRESSED = Counter(
    "prism_client_compressed_writes_total",
    "Writes whose values were sent compressed (gzip) as the gateway's signals offered, by backend.",
    ["backend"],
)
SIGNAL_FETCHES = Counter(
    "prism_client_signals_fetches_total",
    "Signals asked of the gateway, by backend and outcome (ok, failed).",
    ["backend", "outcome"],
)


class RetryAdvice(msgspec.Struct, frozen=True):
    max_attempts: int = 1
    backoff_ms: float = 0.0


class ClientSignals(msgspec.Struct, frozen=True):
    """The signals of one namespace, as the gateway answered them."""

    latency_target_ms: float
    latency_max_ms: float
    hedge_after_ms: float
    refresh_after_s: float
    retry: RetryAdvice = RetryAdvice()
    page_size_bytes: int = 0
    max_value_bytes: int = 0
    compression: list[str] = []
    compress_above_bytes: int = 0

    def network(self, base: NetworkSettings, own: frozenset[str] = frozenset()) -> NetworkSettings:
        """``base`` with the deadline and retries these signals ask for, but for the settings in
        ``own`` (those the user set: never overridden); never a longer deadline than ``base``'s."""
        advised: dict[str, Any] = {
            "operation_timeout": min(base.operation_timeout, self.latency_max_ms / 1000),
            "max_retries": max(self.retry.max_attempts - 1, 0),
            "retry_base": self.retry.backoff_ms / 1000,
        }
        return replace(base, **{k: v for k, v in advised.items() if k not in own})

    @property
    def coding(self) -> str | None:
        """The content coding to compress large values with, when both sides know one."""
        for name in self.compression:
            if name in CLIENT_CODINGS:
                return name
        return None


@dataclass
class _Entry:
    signals: ClientSignals | None
    expires: float
    refreshing: asyncio.Task[None] | None = None


class NamespaceSignals:
    """The signals of every namespace a backend has used, fetched once and refreshed in the background.

    ``fetch`` asks the gateway for one namespace's signals and answers None when it
    gives none (failures included: signals are advice, never a reason to fail a call).
    """

    def __init__(
        self,
        fetch: Callable[[str], Awaitable[ClientSignals | None]],
        backend: str,
        *,
        retry_after: float = DEFAULT_SIGNALS_RETRY,
    ) -> None:
        self._fetch = fetch
        self._backend = backend
        self.retry_after = retry_after
        self._entries: dict[str, _Entry] = {}
        self._first: dict[str, asyncio.Future[ClientSignals | None]] = {}
        self._keeper: asyncio.Task[None] | None = None
        self._changed: asyncio.Event | None = None

    async def prefetch(self, names: Callable[[], Awaitable[list[str]]], limit: int, within: float) -> int:
        """Ask for the signals of the first ``limit`` namespaces ``names()`` lists, within ``within`` seconds.

        Answers how many came. Nothing here raises: a list that fails, a namespace whose
        signals do not come and the time running out are logged, and those namespaces are
        asked for on first use. Then keeps every namespace's signals fresh in the background.
        """
        fetched = 0
        wanted: list[str] = []
        try:
            async with asyncio.timeout(within):
                wanted = (await names())[:limit] if limit > 0 else []
                gate = asyncio.Semaphore(PREFETCH_CONCURRENCY)

                async def one(ns: str) -> None:
                    nonlocal fetched
                    async with gate:
                        if ns in self._entries:
                            return
                        signals = await self._ask(ns)
                    if signals is not None:
                        self._store(ns, signals)
                        fetched += 1

                await asyncio.gather(*(one(ns) for ns in wanted))
        except TimeoutError:
            log.warning(
                "%s: signals of %d of %d namespaces came within %g s of connecting; "
                "the others are asked for on first use",
                self._backend,
                fetched,
                len(wanted),
                within,
            )
        except Exception as exc:
            log.warning(
                "%s: could not ask for signals when connecting (%s: %s); they are asked for on first use",
                self._backend,
                type(exc).__name__,
                exc,
            )
        else:
            if fetched < len(wanted):
                log.warning(
                    "%s: the gateway answered no signals for %d of %d namespaces when connecting; "
                    "they are asked for on first use",
                    self._backend,
                    len(wanted) - fetched,
                    len(wanted),
                )
        self.keep_fresh()
        return fetched

    def keep_fresh(self) -> None:
        """Refresh every namespace's signals in the background once its ``refresh_after_s`` has passed."""
        if self._keeper is None or self._keeper.done():
            self._changed = asyncio.Event()
            self._keeper = asyncio.get_running_loop().create_task(self._keep())

    async def _keep(self) -> None:
        assert self._changed is not None
        while True:
            now = time.monotonic()
            for ns, entry in list(self._entries.items()):
                if entry.expires <= now and entry.refreshing is None:
                    entry.refreshing = asyncio.get_running_loop().create_task(self._refresh(ns, entry))
            pending = [e.expires for e in self._entries.values() if e.refreshing is None]
            wait = max(min(pending, default=now + self.retry_after) - now, 0.001)
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout=wait)

    async def get(self, ns: str) -> ClientSignals | None:
        """The signals of ``ns`` (asked for on first use; refreshed in the background when stale)."""
        entry = self._entries.get(ns)
        if entry is None:
            pending = self._first.get(ns)
            if pending is not None:
                return await asyncio.shield(pending)
            future: asyncio.Future[ClientSignals | None] = asyncio.get_running_loop().create_future()
            self._first[ns] = future
            try:
                signals = await self._ask(ns)
                self._store(ns, signals)
                future.set_result(signals)
                return signals
            except BaseException as exc:
                future.set_exception(exc)
                future.exception()  # retrieved here: the waiters get it through the shield
                raise
            finally:
                del self._first[ns]
        if entry.expires <= time.monotonic() and entry.refreshing is None:
            entry.refreshing = asyncio.get_running_loop().create_task(self._refresh(ns, entry))
        return entry.signals

    def peek(self, ns: str) -> ClientSignals | None:
        """The signals held for ``ns`` now, without asking."""
        entry = self._entries.get(ns)
        return None if entry is None else entry.signals

    async def _ask(self, ns: str) -> ClientSignals | None:
        signals = await self._fetch(ns)
        SIGNAL_FETCHES.labels(self._backend, "ok" if signals is not None else "failed").inc()
        return signals

    def _store(self, ns: str, signals: ClientSignals | None) -> None:
        wait = signals.refresh_after_s if signals is not None else self.retry_after
        self._entries[ns] = _Entry(signals, time.monotonic() + wait)
        if self._changed is not None:
            self._changed.set()

    async def _refresh(self, ns: str, stale: _Entry) -> None:
        try:
            signals = await self._ask(ns)
        except Exception:
            signals = None
            SIGNAL_FETCHES.labels(self._backend, "failed").inc()
        if signals is None:
            # The last answer stays until the next try, ``retry_after`` from now.
            self._entries[ns] = _Entry(stale.signals, time.monotonic() + self.retry_after)
            if self._changed is not None:
                self._changed.set()
        else:
            self._store(ns, signals)

    async def close(self) -> None:
        """Stop the refreshes under way."""
        keeper, self._keeper = self._keeper, None
        tasks = [e.refreshing for e in self._entries.values() if e.refreshing is not None]
        if keeper is not None:
            tasks.append(keeper)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._entries.clear()


async def hedged(attempt: Callable[[], Awaitable[R]], after: float, backend: str) -> R:
    """``attempt()``, sent once more if it has not answered within ``after`` seconds; the first answer wins.

    When one of the two fails, the other's answer is awaited; when both fail, the first
    one's error is raised. The loser is cancelled.
    """
    first = asyncio.ensure_future(attempt())
    try:
        done, _ = await asyncio.wait({first}, timeout=after)
    except BaseException:
        await _cancel(first)
        raise
    if done:
        return first.result()
    HEDGES.labels(backend, "sent").inc()
    second = asyncio.ensure_future(attempt())
    try:
        pending = {first, second}
        while True:
            finished, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in (first, second):
                if task in finished and not task.cancelled() and task.exception() is None:
                    if task is second:
                        HEDGES.labels(backend, "won").inc()
                    return task.result()
            if not pending:
                return first.result()  # both failed: raises the first one's error
    finally:
        await _cancel(first, second)


async def _cancel(*tasks: asyncio.Future[R]) -> None:
    for task in tasks:
        if not task.done():
            task.cancel()
    for task in tasks:
        with contextlib.suppress(BaseException):
            await task
