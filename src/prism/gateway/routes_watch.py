"""``GET /v1/kv/{ns}/_watch``: a namespace's change feed as Server-Sent Events.

The route is one more :class:`~prism.gateway.pipeline.DataRoute`: the pipeline
authenticates the caller (``?token=`` accepted, as on every event stream), resolves
the namespace, authorizes a *read* of it and audits the stream once, when it opens.
The handler opens the feed of the caller's own namespace handle (a tenant's own
physical namespace on a tenant-scoped one, so keys arrive without any tenant part)
and answers with a stream:

- ``retry:`` and ``id:`` (the starting cursor) first, so a client that reconnects
  before any change arrives resumes from where it started;
- one event per change: ``id:`` the cursor, ``event:`` the op (``put``, ``delete``,
  ``expire``), ``data:`` JSON with ``key`` (and ``item_key`` for an item of a record),
  ``op``, ``etag`` (null unless a put), ``updated_at`` and ``cursor``. Values are not
  carried: a watcher reads what it needs through GET, where PII is masked as usual;
- a comment line every ``watch.heartbeat_interval`` seconds without a change (with an
  ``id:`` when the feed moved past changes outside the prefix);
- ``event: reconnect`` (no ``id:``) when the process shuts down, or the stream reached
  ``watch.max_duration`` or ``watch.idle_timeout``: reconnect with ``Last-Event-ID``;
- ``event: problem`` with a problem+json body when the feed fails mid-stream: status
  410 (``CURSOR_EXPIRED``) when the watcher fell behind the retained window, 503 when
  the store is unavailable (reconnect with ``Last-Event-ID``).

``Last-Event-ID`` (sent by EventSource on reconnect) takes precedence over ``?after=``.
A cursor already older than the window when the stream opens is a 410 problem; a
namespace whose store keeps no feed is a 409 problem naming the ``feed=true`` option.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import datetime

import msgspec
from prometheus_client import Gauge

from prism.errors import CursorExpired, InvalidArgument, PrismError, Unsupported
from prism.gateway.config import WatchConfig
from prism.gateway.pipeline import Call, DataRoute
from prism.gateway.problem import HTTPProblem, from_prism_error, problem_body
from prism.gateway.reply import Reply
from prism.gateway.runtime import Gateway
from prism.kv.feed import ChangeFeed
from prism.model import Change
from prism.streaming.shutdown import ShutdownNotice

__all__ = ["ChangeEvent", "WatchStreams"]

log = logging.getLogger("prism.gateway")

_encode = msgspec.json.Encoder().encode

OPEN_STREAMS = Gauge(
    "prism_watch_streams_open", "Change streams (GET /v1/kv/{ns}/_watch) open in this process."
)
_HEADERS = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


class ChangeEvent(msgspec.Struct, omit_defaults=True):
    """The ``data:`` of one change event of ``GET /v1/kv/{ns}/_watch``."""

    key: str
    op: str
    etag: str | None
    updated_at: datetime | None
    cursor: str
    item_key: str = ""


class _Change:
    __slots__ = ("cursor", "frame")

    def __init__(self, cursor: str, frame: bytes) -> None:
        self.cursor = cursor
        self.frame = frame


class _End:
    __slots__ = ("frame",)

    def __init__(self, frame: bytes) -> None:
        self.frame = frame


def change_frame(change: Change) -> bytes:
    """The SSE frame of one change."""
    data = _encode(
        ChangeEvent(change.key, change.op, change.etag, change.updated_at, change.cursor, change.item_key)
    )
    return b"id: %s\nevent: %s\ndata: %s\n\n" % (change.cursor.encode(), change.op.encode(), data)


def reconnect_frame(reason: str) -> bytes:
    """The last event of a stream the server ends while the feed goes on (no ``id:``: resume as before)."""
    messages = {
        "shutdown": "the server is shutting down",
        "max_duration": "the stream reached watch.max_duration",
        "idle": "no change arrived within watch.idle_timeout",
    }
    body = {
        "type": "reconnect",
        "reason": reason,
        "message": f"{messages[reason]}; reconnect with Last-Event-ID to resume",
    }
    return b"event: reconnect\ndata: %s\n\n" % _encode(body)


def problem_frame(status: int, code: str, detail: str, request_id: str | None) -> bytes:
    """The last event of a stream whose feed failed: a problem+json body."""
    return b"event: problem\ndata: %s\n\n" % problem_body(status, code, detail, request_id)


class WatchStreams:
    """The watch streams one gateway process serves: the route, the caps, the drain on shutdown."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.settings: WatchConfig = gateway.config.watch
        self._open: dict[tuple[str | None, str], int] = {}
        self._streams: set[WatchStream] = set()
        self._notice = ShutdownNotice()
        self._stopping = False

    def routes(self) -> list[DataRoute]:
        """The watch route (declared before ``/v1/kv/{ns}/{key:path}``, whose GET it precedes)."""
        return [DataRoute("GET", "/v1/kv/{ns}/_watch", self.watch, "watch", "read", query_token=True)]

    @property
    def open_streams(self) -> int:
        """Streams open now."""
        return len(self._streams)

    async def start(self, gateway: Gateway) -> None:
        """Listen for the shutdown signals: each ends every stream with ``event: reconnect``."""
        self._stopping = False  # an app started again (a new lifespan) serves streams again
        self._notice.watch_signals()
        self._notice.subscribe(self._drain)

    async def stop(self, gateway: Gateway) -> None:
        """End every stream (``event: reconnect``) and refuse new ones."""
        self._drain()
        self._notice.unwatch_signals()

    def _drain(self) -> None:
        self._stopping = True
        for stream in list(self._streams):
            stream.end(reconnect_frame("shutdown"))

    async def watch(self, call: Call) -> Reply:
        """Open a change stream of ``call``'s namespace (see the module docs)."""
        if self._stopping:
            retry = str(self.gateway.config.server.retry_after)
            raise HTTPProblem(
                503,
                "SHUTTING_DOWN",
                "the server is shutting down; retry later",
                headers={"Retry-After": retry},
            )
        settings = self.settings
        prefix = call.query.get("prefix", "")
        last_event_id = call.header(b"last-event-id")
        field = "Last-Event-ID" if last_event_id else "after"
        after = last_event_id or call.query.get("after") or None
        principal = call.principal
        owner = (principal.tenant, principal.subject)
        held = self._open.get(owner, 0)
        if held >= settings.max_streams_per_principal:
            raise HTTPProblem(
                429,
                "TOO_MANY_STREAMS",
                f"{held} watch streams are open for this caller, the most watch.max_streams_per_principal "
                "allows; close one first",
                headers={"Retry-After": str(self.gateway.config.server.retry_after)},
            )
        try:
            feed = call.kv.watch(
                prefix, after=after, poll_interval=settings.poll_interval, batch_size=settings.batch_size
            )
        except Unsupported as exc:
            raise HTTPProblem(
                409,
                "FEED_NOT_ENABLED",
                f"namespace {call.ns.name!r} cannot be watched: {exc} "
                f"(store {call.ns.store_name!r}; a store keeps a change feed when opened with feed=true)",
            ) from None
        except InvalidArgument as exc:
            raise HTTPProblem(400, "INVALID_ARGUMENT", f"prefix: {exc}") from None
        # The slot is taken before the first await, so concurrent opens cannot pass the cap together.
        self._open[owner] = held + 1
        stream = WatchStream(self, owner, feed, settings, call.request_id)
        try:
            start = await feed.start()
        except BaseException as exc:
            await stream.aclose()
            if isinstance(exc, CursorExpired):
                raise HTTPProblem(410, exc.code, f"{field}: {exc}") from None
            if isinstance(exc, InvalidArgument):
                raise HTTPProblem(400, "INVALID_CURSOR", f"{field}: {exc}") from None
            raise
        stream.begin(start)
        self._streams.add(stream)
        OPEN_STREAMS.inc()
        return Reply(200, b"", list(_HEADERS), stream=stream)

    def _release(self, stream: WatchStream) -> None:
        if stream in self._streams:
            self._streams.discard(stream)
            OPEN_STREAMS.dec()
        owner = stream.owner
        left = self._open.get(owner, 0) - 1
        if left > 0:
            self._open[owner] = left
        else:
            self._open.pop(owner, None)


class WatchStream:
    """One open watch: a task reading the feed into a queue, and the SSE frames sent from it."""

    def __init__(
        self,
        streams: WatchStreams,
        owner: tuple[str | None, str],
        feed: ChangeFeed,
        settings: WatchConfig,
        request_id: str | None,
    ) -> None:
        self.owner = owner
        self._streams = streams
        self._feed = feed
        self._settings = settings
        self._request_id = request_id
        self._start = ""
        self._queue: asyncio.Queue[_Change | _End] = asyncio.Queue()
        self._room = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None
        self._closed = False

    def begin(self, start: str) -> None:
        """The feed started at cursor ``start``."""
        self._start = start

    def end(self, frame: bytes) -> None:
        """End the stream after what is queued, with ``frame`` as its last event."""
        self._queue.put_nowait(_End(frame))

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._frames()

    async def aclose(self) -> None:
        """Stop reading the feed and give back the caller's slot. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._streams._release(self)
        reader = self._reader
        if reader is not None and not reader.done():
            reader.cancel()
            try:
                await reader
            except asyncio.CancelledError:
                pass
        await self._feed.close()

    async def _frames(self) -> AsyncIterator[bytes]:
        settings = self._settings
        loop = asyncio.get_running_loop()
        yield b"retry: %d\nid: %s\n\n" % (round(settings.client_retry * 1000), self._start.encode())
        self._reader = loop.create_task(self._read())
        queue = self._queue
        sent = self._start
        ends_at = loop.time() + settings.max_duration
        idle_at = loop.time() + settings.idle_timeout
        while True:
            now = loop.time()
            try:
                async with asyncio.timeout(
                    max(0.0, min(settings.heartbeat_interval, ends_at - now, idle_at - now))
                ):
                    item = await queue.get()
            except TimeoutError:
                now = loop.time()
                if now >= ends_at:
                    yield reconnect_frame("max_duration")
                    return
                if now >= idle_at:
                    yield reconnect_frame("idle")
                    return
                # The queue is empty, so every change read is sent: the feed's cursor is safe to resume from.
                cursor = self._feed.cursor
                if cursor is not None and cursor != sent:
                    sent = cursor
                    yield b": keep-alive\nid: %s\n\n" % cursor.encode()
                else:
                    yield b": keep-alive\n\n"
                continue
            frames: list[bytes] = []
            while True:
                if isinstance(item, _End):
                    frames.append(item.frame)
                    yield b"".join(frames)
                    return
                frames.append(item.frame)
                sent = item.cursor
                if queue.empty():
                    break
                item = queue.get_nowait()
            self._room.set()
            idle_at = loop.time() + settings.idle_timeout
            yield b"".join(frames)

    async def _read(self) -> None:
        """Read the feed into the queue, pausing while ``watch.max_queued`` changes wait to be sent."""
        queue = self._queue
        most = self._settings.max_queued
        request_id = self._request_id
        try:
            async for change in self._feed:
                queue.put_nowait(_Change(change.cursor, change_frame(change)))
                if queue.qsize() >= most:
                    self._room.clear()
                    await self._room.wait()
        except CursorExpired as exc:
            queue.put_nowait(_End(problem_frame(410, exc.code, str(exc), request_id)))
        except PrismError as exc:
            problem = from_prism_error(exc, self._streams.gateway.config.server.retry_after)
            queue.put_nowait(_End(problem_frame(problem.status, problem.code, problem.detail, request_id)))
        except Exception as exc:
            log.error(
                "the change feed of a watch stream failed", exc_info=exc, extra={"request_id": request_id}
            )
            queue.put_nowait(
                _End(
                    problem_frame(500, "INTERNAL", "the change feed failed; reconnect to resume", request_id)
                )
            )
