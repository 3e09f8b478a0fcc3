"""StreamingService: the wiring of streaming, built complete from its parts.

    service = StreamingService(store, config, store_url="redis://...", authenticator=auth)
    async with service:
        app.mount(...)   # see prism.streaming.routes

The constructor builds every part from the store and the config: the request store
and event log, the queue and the pub/sub (on the store's connection when they share
its URL), the hub that feeds followers, the job runtime and, when ``run_workers`` is
set, the worker pool. ``start()`` opens them and starts the background loops;
``stop()`` stops them. What the transports (WebSocket, HTTP, SSE) ask goes to
:attr:`~StreamingService.commands` (submit, run inline, cancel) and
:attr:`~StreamingService.queries` (look up, list), which check identity and
permissions for every call.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
import time
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, Self

from prism.errors import PrismError
from prism.kv.store import Store
from prism.patterns import open_pubsub, open_queue
from prism.patterns.base import PubSub, Queue, Subscription
from prism.streaming.access import Access
from prism.streaming.auth import AccessAudit, Authenticator
from prism.streaming.builtin import builtin_router
from prism.streaming.commands import Commands, Submission
from prism.streaming.config import StreamingConfig
from prism.streaming.connections import ConnectionRegistry
from prism.streaming.events import Emitter, cancel_topic
from prism.streaming.handlers import Router, load_router
from prism.streaming.hub import Hub
from prism.streaming.jobs import Runtime
from prism.streaming.metrics import QUEUE_DEPTH
from prism.streaming.queries import Queries
from prism.streaming.requests import RequestStore
from prism.streaming.shutdown import ShutdownNotice
from prism.streaming.workers import WorkerPool

__all__ = ["StreamingService", "Submission"]

#: Jitter from a generator of our own, leaving the global ``random`` state to the application.
_random = random.Random()

log = logging.getLogger("prism.streaming")

#: Longest pause between two checks for idle connections.
IDLE_CHECK_MAX_SECONDS = 5.0


def _node_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{os.urandom(2).hex()}"


def _router(config: StreamingConfig, extra: Router | None) -> Router:
    """The built-in handlers, those the config names, then ``extra``."""
    router = Router()
    router.include(builtin_router(config))
    for target in config.handlers:
        router.include(load_router(target))
    if extra is not None:
        router.include(extra)
    return router


class StreamingService:
    """The streaming system of one process (see the module docstring)."""

    def __init__(
        self,
        store: Store,
        config: StreamingConfig | None = None,
        *,
        store_url: str,
        router: Router | None = None,
        authenticator: Authenticator | None = None,
        audit: AccessAudit | None = None,
        queue: Queue | None = None,
        pubsub: PubSub | None = None,
        owns_store: bool = False,
    ) -> None:
        """Build every part on ``store`` (not opened yet: ``start()`` opens them).

        The queue and the pub/sub default to the engines at ``config.queue_url`` and
        ``config.pubsub_url``, or else at ``store_url`` (the store's own URL), where
        they ride on the store's connection. ``owns_store``: ``stop()`` closes the store.
        """
        config = config or StreamingConfig()
        self.config = config
        self.store = store
        self.store_url = store_url
        self.authenticator = authenticator
        #: Where requests of the streaming routes are audited; None: not audited.
        self.audit = audit
        self.node = _node_id()
        self.router = _router(config, router)
        self.queue: Queue = queue or open_queue(config.queue_url or store_url, config.queue_name, store=store)
        self.pubsub: PubSub = pubsub or open_pubsub(config.pubsub_url or store_url, store=store)
        self.requests = RequestStore(store, config)
        self.log = self.requests.log
        self.connections = ConnectionRegistry(store, config)
        self.emitter = Emitter(config, self.requests, self.log, self.pubsub)
        self.rt = Runtime(
            config, self.router, self.requests, self.log, self.emitter, self.queue, self.pubsub, self.node
        )
        self.hub = Hub(self.pubsub)
        self.pool: WorkerPool | None = WorkerPool(self.rt) if config.run_workers else None
        self.access = Access(config, self.router)
        self.queries = Queries(config, self.access, self.requests)
        self.commands = Commands(self.rt, self.access, self.queries, self._spawn)
        #: Open WebSocket sessions of this process (they expire through ``_expire_idle``).
        self.sessions: set[Any] = set()
        #: Flipped by SIGTERM/SIGINT while the service runs: SSE streams end at once on it.
        self.shutdown = ShutdownNotice()
        self._owns_store = owns_store
        self._started = False
        self._closed = False
        self._background: set[asyncio.Task[Any]] = set()
        self._cancel_sub: Subscription | None = None

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> Self:
        """Open the store, queue and pubsub, and start the workers (when configured)."""
        if self._closed:
            raise PrismError("the streaming service is stopped and cannot restart")
        if self._started:
            return self
        await self.store.open()
        await self.queue.open()
        await self.pubsub.open()
        self._cancel_sub = await self.pubsub.subscribe(cancel_topic(self.config), self._on_cancel_notice)
        if self.pool is not None:
            self.pool.start()
        self._spawn(self._sweep_connections())
        self._spawn(self._expire_idle())
        self._spawn(self._check_quiet())
        self._spawn(self._sample_queue_depth())
        self.shutdown.watch_signals()
        self._started = True
        log.info(
            "streaming service %s started (queue %s, pubsub %s)",
            self.node,
            self.queue.engine,
            self.pubsub.engine,
        )
        return self

    async def stop(self) -> None:
        """Stop workers and inline jobs (their requests are freed for other nodes), then disconnect."""
        if self._closed:
            return
        self._closed = True
        if not self._started:
            return
        self.shutdown.unwatch_signals()
        if self.pool is not None:
            await self.pool.stop()
        for task in list(self._background):
            task.cancel()
        if self._background:
            await asyncio.wait(list(self._background))
        await self.hub.close()
        if self._cancel_sub is not None:
            await self._cancel_sub.close()
        await self.queue.close()
        await self.pubsub.close()
        if self._owns_store:
            await self.store.close()

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def _expire_idle(self) -> None:
        """Close WebSockets idle for longer than ``idle_timeout`` (one timer for all of them)."""
        interval = max(0.05, min(self.config.idle_timeout / 4, IDLE_CHECK_MAX_SECONDS))
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            expired = sum(1 for session in list(self.sessions) if session.expire_if_idle(now))
            if expired:
                log.info("closed %d idle connections", expired)

    async def _sample_queue_depth(self) -> None:
        """Keep ``prism_streaming_queue_depth`` current; a failed sample is logged and tried again."""
        while True:
            try:
                QUEUE_DEPTH.set(await self.queue.depth())
            except PrismError as exc:
                log.warning("could not read the depth of the work queue: %s", exc)
            await asyncio.sleep(self.config.metrics_interval)

    async def _check_quiet(self) -> None:
        """Catch up followed requests that went quiet, in case a publish was lost (pubsub is at most once)."""
        quiet = self.config.resync_interval
        while True:
            await asyncio.sleep(quiet / 2)
            now = time.monotonic()
            for follower in self.hub.followers_set():
                follower.check_quiet(now, quiet)

    async def _sweep_connections(self) -> None:
        interval = self.config.connection_stale_after / 3
        while True:
            await asyncio.sleep(interval * _random.uniform(0.5, 1.5))
            try:
                removed = await self.connections.sweep()
                if removed:
                    log.info("swept %d stale connection keys", removed)
            except PrismError as exc:
                log.warning("connection sweep failed: %s", exc)

    def _on_cancel_notice(self, topic: str, data: bytes) -> None:
        job = self.rt.running.get(data.decode(errors="replace"))
        if job is not None:
            job.reporter.cancel()
