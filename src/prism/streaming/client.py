"""``prism.StreamClient``: the Python SDK for /v1/stream, with automatic reconnect and resume.

    async with StreamClient("ws://localhost:8080", token=TOKEN) as client:
        result = await client.request("generate_report", {...}, on_progress=print)

Every request is sent with an id, so after a dropped connection the client sends it
again without running it twice (the server answers a repeat with the first request),
and resubscribes to the requests it follows from the last event it saw. Each event
reaches ``on_progress`` once.

Every failure is a :class:`~prism.errors.PrismError`: a server that cannot be reached
raises :class:`~prism.errors.BackendUnavailable`, and a refused or failed request
:class:`RequestError` (with the protocol's ``code``). No call waits forever: each wait
for the server's answer (an acknowledgment, a status, a subscription, a pong) gives
up after ``reply_timeout`` seconds with ``RequestError("TIMEOUT")``.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import logging
import os
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit, urlunsplit

import msgspec

from prism.errors import BackendTimeout, BackendUnavailable, InvalidArgument, Timeout
from prism.streaming.errors import HTTP_STATUS, StreamError

__all__ = ["ProgressUpdate", "RequestError", "RequestHandle", "RequestTimeout", "StreamClient"]

log = logging.getLogger("prism.streaming.client")

CLOSE_POLICY_VIOLATION = 1008

ProgressCallback = Callable[["ProgressUpdate"], Awaitable[None] | None]


class RequestError(StreamError):
    """A request failed or was refused: ``code`` is the protocol error code, ``details`` its details
    (for ``INVALID_ACTION``, ``details["actions"]`` lists the actions the server knows)."""

    def __init__(self, code: str, message: str, *, request_id: str | None = None, **kwargs: Any) -> None:
        if code not in HTTP_STATUS:
            code = "INTERNAL_ERROR"
        super().__init__(code, message, **kwargs)
        self.request_id = request_id


class RequestTimeout(RequestError, Timeout):
    """No answer within the client's deadline (``result(timeout)``, ``reply_timeout``): code ``TIMEOUT``.

    Both a :class:`RequestError` and a :class:`prism.Timeout`; the request itself may go on.
    """


@dataclass(frozen=True, slots=True)
class ProgressUpdate:
    request_id: str
    seq: int
    percentage: float
    message: str
    timestamp: str
    metadata: dict[str, Any] | None = None


@dataclass(eq=False)
class RequestHandle:
    """A request this client sent or follows: await ``result()`` for its outcome.

    ``request_id`` is the server's id of the request: set when ``submit()`` or ``follow()``
    returns, so it can be passed to ``follow()``, ``status()`` or ``cancel()`` at once.
    """

    client_id: str
    action: str | None
    payload: dict[str, Any] | None
    metadata: dict[str, Any] | None
    on_progress: ProgressCallback | None
    future: asyncio.Future[Any]
    request_id: str | None = None
    acknowledged: asyncio.Event = field(default_factory=asyncio.Event)
    #: Every event number received, in arrival order (each once).
    seqs: list[int] = field(default_factory=list)
    _seen: set[int] = field(default_factory=set)

    @property
    def last_seq(self) -> int:
        """The highest event number received with none missing before it."""
        n = 0
        while n + 1 in self._seen:
            n += 1
        return n

    async def result(self, timeout: float | None = None) -> Any:  # noqa: ASYNC109 - part of the SDK's API
        """The request's outcome (its result, or RequestError), waiting at most ``timeout`` seconds.

        Past ``timeout`` it raises RequestError("TIMEOUT"); the request itself goes on (await
        ``result()`` again, or follow it by ``request_id``).
        """
        try:
            return await asyncio.wait_for(asyncio.shield(self.future), timeout)
        except TimeoutError:
            raise RequestTimeout(
                "TIMEOUT",
                f"no outcome of request {self.request_id or self.client_id!r} within {timeout:g} s; "
                "it keeps running",
                request_id=self.request_id,
                retryable=True,
            ) from None


def _error_from(body: dict[str, Any], request_id: str | None) -> RequestError:
    return RequestError(
        str(body.get("code", "INTERNAL_ERROR")),
        str(body.get("message", "request failed")),
        request_id=request_id,
        details=body.get("details"),
        retryable=bool(body.get("retryable", False)),
        retry_after=body.get("retry_after"),
    )


def stream_url(url: str) -> str:
    """``http(s)://host[:port]`` or ``ws(s)://...`` -> the ws(s) URL of /v1/stream."""
    parts = urlsplit(url)
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme)
    if scheme is None or not parts.netloc:
        raise InvalidArgument(f"a stream URL looks like 'ws://host:8080' or 'https://host', not {url!r}")
    path = parts.path if parts.path not in ("", "/") else "/v1/stream"
    return urlunsplit((scheme, parts.netloc, path, parts.query, ""))


class StreamClient:
    """A WebSocket client of the streaming API (see the module docstring).

    ``reconnect_delay`` is the first wait before reconnecting (doubling up to
    ``max_reconnect_delay``); ``ping_interval`` sends an application ping so the
    server's idle timeout never closes a quiet connection; ``connect_timeout`` bounds
    each connection attempt, and ``max_reconnect_attempts`` (None: forever) how many
    are made after a drop before pending requests fail. ``reply_timeout`` bounds every
    wait for an answer of the server (``submit()`` waiting for the acknowledgment,
    ``status()``, ``cancel()``, ``follow()``, ``ping()``), reconnecting included.
    """

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        reconnect: bool = True,
        reconnect_delay: float = 0.1,
        max_reconnect_delay: float = 5.0,
        max_reconnect_attempts: int | None = None,
        connect_timeout: float = 10.0,
        reply_timeout: float = 30.0,
        ping_interval: float = 60.0,
        max_message_bytes: int = 16 * 1024 * 1024,
    ) -> None:
        for name, value in (
            ("reconnect_delay", reconnect_delay),
            ("max_reconnect_delay", max_reconnect_delay),
            ("connect_timeout", connect_timeout),
            ("reply_timeout", reply_timeout),
            ("ping_interval", ping_interval),
        ):
            if not value > 0:
                raise InvalidArgument(f"StreamClient: {name} must be > 0 seconds, not {value!r}")
        self.url = stream_url(url)
        self._token = token
        self.reconnect = reconnect
        self.reconnect_delay = reconnect_delay
        self.max_reconnect_delay = max_reconnect_delay
        self.max_reconnect_attempts = max_reconnect_attempts
        self.connect_timeout = connect_timeout
        self.reply_timeout = reply_timeout
        self.ping_interval = ping_interval
        self.max_message_bytes = max_message_bytes
        self._ws: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._pinger: asyncio.Task[None] | None = None
        self._by_id: dict[str, RequestHandle] = {}
        self._by_rid: dict[str, RequestHandle] = {}
        self._control: dict[tuple[str, str], list[asyncio.Future[Any]]] = {}
        self._pongs: list[asyncio.Future[float]] = []
        self._connected = asyncio.Event()
        self._closed = False
        #: Why the server refused this client for good (bad credentials): no reconnect helps.
        self._fatal: RequestError | None = None
        #: Why the connection is gone for good (no reconnect, or reconnecting gave up).
        self._broken: RequestError | None = None
        self._last_error: RequestError | None = None
        self._ids = itertools.count(1)
        self._prefix = os.urandom(6).hex()
        self.reconnects = 0

    def __repr__(self) -> str:
        return f"<StreamClient {self.url} {'closed' if self._closed else 'open'}>"

    # -- connection ----------------------------------------------------------------------

    @property
    def _shown_url(self) -> str:
        """The URL without its query (which may carry ``?token=``), for messages."""
        parts = urlsplit(self.url)
        return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))

    async def _connect(self) -> None:
        import websockets

        headers = {"Authorization": f"Bearer {self._token}"} if self._token else {}
        try:
            self._ws = await websockets.connect(
                self.url,
                additional_headers=headers,
                open_timeout=self.connect_timeout,
                max_size=self.max_message_bytes,
                compression=None,
            )
        except websockets.InvalidStatus as exc:
            status = exc.response.status_code
            raise BackendUnavailable(
                f"{self._shown_url} refused the WebSocket handshake with HTTP {status}"
                + (" (is streaming enabled on that server?)" if status == 404 else ""),
                cause=exc,
            ) from exc
        except TimeoutError as exc:
            raise BackendTimeout(
                f"cannot reach {self._shown_url}: no answer within connect_timeout "
                f"({self.connect_timeout:g} s)",
                cause=exc,
            ) from exc
        except (OSError, websockets.InvalidHandshake, websockets.InvalidURI) as exc:
            reason = os.strerror(exc.errno) if isinstance(exc, OSError) and exc.errno else str(exc)
            raise BackendUnavailable(f"cannot reach {self._shown_url}: {reason}", cause=exc) from exc
        self._connected.set()

    async def connect(self) -> Self:
        """Open the connection (``async with`` does this)."""
        if self._closed:
            raise RuntimeError("the client is closed")
        if self._reader is None:
            await self._connect()
            self._reader = asyncio.get_running_loop().create_task(self._read_forever())
            self._pinger = asyncio.get_running_loop().create_task(self._ping_forever())
        return self

    async def close(self) -> None:
        """Close the connection; pending requests fail. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        for task in (self._pinger, self._reader):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await self._ws.close()
        self._fail_all(RequestError("INTERNAL_ERROR", "the client was closed"))

    async def __aenter__(self) -> Self:
        return await self.connect()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def drop_connection(self) -> None:
        """Close the socket under the client, as a network failure would (it reconnects and resumes)."""
        if self._ws is not None:
            await self._ws.close()

    def _fail_all(self, exc: RequestError) -> None:
        for handle in {*self._by_id.values(), *self._by_rid.values()}:
            if not handle.future.done():
                handle.future.set_exception(exc)
        self._by_id.clear()
        self._by_rid.clear()
        self._fail_control(exc)

    def _fail_control(self, exc: BaseException) -> None:
        for waiters in self._control.values():
            for fut in waiters:
                if not fut.done():
                    fut.set_exception(exc)
        self._control.clear()
        for pong in self._pongs:
            if not pong.done():
                pong.set_exception(exc)
        self._pongs.clear()

    def _future(self) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        # An outcome nobody awaits (a fire-and-forget submit) is not an "unretrieved" error.
        fut.add_done_callback(lambda f: f.cancelled() or f.exception())
        return fut

    async def _send(self, message: dict[str, Any]) -> None:
        import websockets

        if self._fatal is not None:
            raise self._fatal
        if not self._connected.is_set():
            await self._wait_connected()
        try:
            await self._ws.send(msgspec.json.encode(message).decode())
        except websockets.ConnectionClosed:
            if self._fatal is not None:
                raise self._fatal from None
            raise RequestError("INTERNAL_ERROR", "the connection was lost", retryable=True) from None

    async def _wait_connected(self) -> None:
        """Wait while reconnecting; raise at once when the connection is gone for good."""
        if self._reader is None:
            raise RuntimeError("the client is not connected: use `async with StreamClient(...)` or connect()")
        if not self._reader.done():
            connected = asyncio.ensure_future(self._connected.wait())
            try:
                await asyncio.wait({connected, self._reader}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                connected.cancel()
        if not self._connected.is_set():
            raise self._fatal or self._broken or RequestError("INTERNAL_ERROR", "the client was closed")

    async def _read_forever(self) -> None:
        import websockets

        while True:
            refused = False
            try:
                async for frame in self._ws:
                    await self._on_frame(frame)
            except websockets.ConnectionClosed as exc:
                refused = exc.rcvd is not None and exc.rcvd.code == CLOSE_POLICY_VIOLATION
            if self._closed:
                return
            self._connected.clear()
            last = self._last_error
            if refused and last is not None and last.code in ("UNAUTHORIZED", "FORBIDDEN"):
                self._fatal = last
                self._fail_all(last)
                return
            self._fail_control(RequestError("INTERNAL_ERROR", "the connection was lost", retryable=True))
            if not self.reconnect:
                self._broken = RequestError("INTERNAL_ERROR", "the connection was lost", retryable=True)
                self._fail_all(self._broken)
                return
            if not await self._reconnect():
                return

    async def _reconnect(self) -> bool:
        delay = self.reconnect_delay
        attempt = 0
        while not self._closed:
            attempt += 1
            try:
                await self._connect()
            except Exception as exc:
                if self.max_reconnect_attempts is not None and attempt >= self.max_reconnect_attempts:
                    self._broken = RequestError(
                        "INTERNAL_ERROR",
                        f"the connection was lost and {attempt} reconnect attempts failed: {exc}",
                        retryable=True,
                    )
                    self._fail_all(self._broken)
                    return False
                await asyncio.sleep(delay * random.uniform(0.5, 1.5))
                delay = min(delay * 2, self.max_reconnect_delay)
                continue
            self.reconnects += 1
            await self._resume()
            return True
        return False

    async def _resume(self) -> None:
        """Send unacknowledged requests again (same ids) and resubscribe the followed ones."""
        for handle in {*self._by_id.values(), *self._by_rid.values()}:
            if handle.future.done():
                continue
            if handle.request_id is not None:
                await self._send(
                    {"type": "subscribe", "request_id": handle.request_id, "after_seq": handle.last_seq}
                )
            elif handle.action is not None:
                await self._send(self._request_message(handle))

    async def _ping_forever(self) -> None:
        while True:
            await asyncio.sleep(self.ping_interval)
            if self._connected.is_set():
                with contextlib.suppress(Exception):
                    await self._send({"type": "ping"})

    # -- incoming ------------------------------------------------------------------------

    async def _on_frame(self, frame: str | bytes) -> None:
        try:
            msg = msgspec.json.decode(frame)
        except msgspec.DecodeError:
            log.warning("ignored a frame that is not JSON")
            return
        if not isinstance(msg, dict):
            return
        kind = msg.get("type")
        rid = msg.get("request_id")
        client_id = msg.get("id")
        if kind == "acknowledgment":
            handle = self._by_id.get(client_id) if client_id else None
            if handle is not None and rid:
                handle.request_id = rid
                self._by_rid[rid] = handle
                handle.acknowledged.set()
        elif kind == "response":
            handle = self._by_id.pop(client_id, None) if client_id else None
            if handle is not None and not handle.future.done():
                handle.request_id = rid
                if msg.get("success"):
                    handle.future.set_result(msg.get("data"))
                else:
                    handle.future.set_exception(_error_from(msg.get("error") or {}, rid))
        elif kind in ("progress", "complete") or (kind == "error" and msg.get("seq") is not None):
            await self._on_event(msg)
        elif kind == "error":
            self._on_error(msg)
        elif kind in ("status", "subscribed"):
            self._resolve_control(kind, rid, msg)
        elif kind == "pong" and self._pongs:
            fut = self._pongs.pop(0)
            if not fut.done():
                fut.set_result(time.monotonic())

    async def _on_event(self, msg: dict[str, Any]) -> None:
        rid = msg.get("request_id")
        if not isinstance(rid, str):
            return
        handle = self._by_rid.get(rid)
        if handle is None:
            return
        seq = msg.get("seq")
        kind = msg["type"]
        if not isinstance(seq, int) or (seq in handle._seen and (kind == "progress" or seq in handle.seqs)):
            # A repeat. The final event is taken even when numbered within follow()'s after_seq:
            # an after_seq past the last event must not hide the outcome.
            return
        handle._seen.add(seq)
        handle.seqs.append(seq)
        if kind == "progress":
            if handle.on_progress is not None:
                update = ProgressUpdate(
                    rid,
                    seq,
                    msg.get("percentage", 0.0),
                    msg.get("message", ""),
                    msg.get("timestamp", ""),
                    msg.get("metadata"),
                )
                try:
                    outcome = handle.on_progress(update)
                    if inspect.isawaitable(outcome):
                        await outcome
                except Exception:
                    log.exception("on_progress callback failed")
            return
        self._by_rid.pop(rid, None)
        self._by_id.pop(handle.client_id, None)
        if handle.future.done():
            return
        if kind == "complete":
            handle.future.set_result(msg.get("result"))
        else:
            handle.future.set_exception(_error_from(msg.get("error") or {}, rid))

    def _on_error(self, msg: dict[str, Any]) -> None:
        rid = msg.get("request_id")
        client_id = msg.get("id")
        error = _error_from(msg.get("error") or {}, rid)
        if client_id and client_id in self._by_id:
            handle = self._by_id.pop(client_id)
            if handle.request_id:
                self._by_rid.pop(handle.request_id, None)
            if not handle.future.done():
                handle.future.set_exception(error)
            return
        if rid:
            for kind in ("status", "subscribed"):
                waiters = self._control.get((kind, rid))
                if waiters:
                    fut = waiters.pop(0)
                    if not fut.done():
                        fut.set_exception(error)
                    return
        self._last_error = error
        log.warning("server error: %s %s", error.code, error.message)

    def _resolve_control(self, kind: str, rid: str | None, msg: dict[str, Any]) -> None:
        waiters = self._control.get((kind, rid or ""))
        if waiters:
            fut = waiters.pop(0)
            if not fut.done():
                fut.set_result(msg)

    # -- requests ------------------------------------------------------------------------

    def _request_message(self, handle: RequestHandle) -> dict[str, Any]:
        message: dict[str, Any] = {"action": handle.action, "id": handle.client_id}
        if handle.payload is not None:
            message["payload"] = handle.payload
        if handle.metadata is not None:
            message["metadata"] = handle.metadata
        return message

    async def submit(
        self,
        action: str,
        payload: dict[str, Any] | None = None,
        *,
        id: str | None = None,
        metadata: dict[str, Any] | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> RequestHandle:
        """Send a request and return its handle once the server took it (``await handle.result()``
        for the outcome).

        It returns when the server acknowledged the request (or, for a quick one, answered
        it), so ``handle.request_id`` is set. A request the server refuses (unknown action,
        invalid payload, missing permission) raises RequestError here; no acknowledgment
        within ``reply_timeout`` raises RequestError("TIMEOUT") (the request may still run:
        submit it again with the same ``id`` to find it).
        """
        if self._closed:
            raise RuntimeError("the client is closed")
        client_id = id or f"{self._prefix}-{next(self._ids)}"
        if client_id in self._by_id:
            raise InvalidArgument(f"request id {client_id!r} is already in flight on this client")
        handle = RequestHandle(client_id, action, payload, metadata, on_progress, self._future())
        self._by_id[client_id] = handle
        acked = asyncio.ensure_future(handle.acknowledged.wait())
        try:
            async with asyncio.timeout(self.reply_timeout):
                try:
                    await self._send(self._request_message(handle))
                except RequestError:
                    # A dropped connection sends it again on reconnect; a refused client fails now.
                    if self._fatal is not None or self._broken is not None or not self.reconnect:
                        raise
                await asyncio.wait({acked, handle.future}, return_when=asyncio.FIRST_COMPLETED)
        except TimeoutError:
            self._forget(handle)
            raise RequestTimeout(
                "TIMEOUT",
                f"the server did not acknowledge request {client_id!r} within reply_timeout "
                f"({self.reply_timeout:g} s); it may still run: submit it again with id={client_id!r} "
                "to find it",
                retryable=True,
            ) from None
        except BaseException:
            self._forget(handle)
            raise
        finally:
            acked.cancel()
        if handle.request_id is None:
            # Refused before it was stored: there is no request to return.
            self._forget(handle)
            handle.future.result()
            raise RequestError("INTERNAL_ERROR", "the server answered without a request id")
        return handle

    def _forget(self, handle: RequestHandle) -> None:
        if self._by_id.get(handle.client_id) is handle:
            del self._by_id[handle.client_id]
        if handle.request_id is not None and self._by_rid.get(handle.request_id) is handle:
            del self._by_rid[handle.request_id]

    async def request(
        self,
        action: str,
        payload: dict[str, Any] | None = None,
        *,
        id: str | None = None,
        metadata: dict[str, Any] | None = None,
        on_progress: ProgressCallback | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - part of the SDK's API
    ) -> Any:
        """Send a request and wait for its outcome: the ``data`` of a sync answer or the ``result``
        of an async one. Raises RequestError with the server's code when it fails."""
        handle = await self.submit(action, payload, id=id, metadata=metadata, on_progress=on_progress)
        return await handle.result(timeout)

    async def follow(
        self, request_id: str, *, after_seq: int = 0, on_progress: ProgressCallback | None = None
    ) -> RequestHandle:
        """Follow a request (sent earlier, maybe by another client) from event ``after_seq`` on.

        Returns once the server confirmed the subscription (NOT_FOUND for an unknown
        request or another user's); ``await handle.result()`` waits for the outcome.
        """
        _check_request_id("follow", request_id)
        if isinstance(after_seq, bool) or not isinstance(after_seq, int) or after_seq < 0:
            raise InvalidArgument(f"follow(): after_seq must be an int >= 0, not {after_seq!r}")
        handle = self._by_rid.get(request_id)
        created = handle is None
        if handle is None:
            handle = RequestHandle(
                f"{self._prefix}-{next(self._ids)}",
                None,
                None,
                None,
                on_progress,
                self._future(),
                request_id=request_id,
            )
            handle._seen.update(range(1, after_seq + 1))
            self._by_rid[request_id] = handle
        try:
            reply = await self._control_call(
                "subscribed",
                request_id,
                {"type": "subscribe", "request_id": request_id, "after_seq": after_seq},
            )
        except BaseException:
            if created:
                self._forget(handle)
            raise
        if (
            reply.get("status") in ("COMPLETED", "FAILED", "CANCELLED")
            and reply.get("last_seq", 0) <= after_seq
        ):
            status = await self.status(request_id)
            if not handle.future.done():
                if status.get("status") == "COMPLETED":
                    handle.future.set_result(status.get("result"))
                else:
                    handle.future.set_exception(_error_from(status.get("error") or {}, request_id))
            self._by_rid.pop(request_id, None)
        return handle

    async def _control_call(self, kind: str, request_id: str, message: dict[str, Any]) -> dict[str, Any]:
        if self._closed:
            raise RuntimeError("the client is closed")
        fut: asyncio.Future[dict[str, Any]] = self._future()
        waiters = self._control.setdefault((kind, request_id), [])
        waiters.append(fut)
        try:
            async with asyncio.timeout(self.reply_timeout):
                await self._send(message)
                return await fut
        except TimeoutError:
            raise RequestTimeout(
                "TIMEOUT",
                f"no answer to {message['type']!r} of {request_id!r} within reply_timeout "
                f"({self.reply_timeout:g} s)",
                request_id=request_id,
                retryable=True,
            ) from None
        finally:
            if fut in waiters:
                waiters.remove(fut)
            if not waiters and self._control.get((kind, request_id)) is waiters:
                del self._control[(kind, request_id)]

    async def status(self, request_id: str) -> dict[str, Any]:
        """The request as stored: status, progress, result or error."""
        _check_request_id("status", request_id)
        return await self._control_call("status", request_id, {"type": "status", "request_id": request_id})

    async def cancel(self, request_id: str) -> dict[str, Any]:
        """Cancel a request; the answer is its status afterwards."""
        _check_request_id("cancel", request_id)
        return await self._control_call("status", request_id, {"type": "cancel", "request_id": request_id})

    async def ping(self) -> float:
        """Round-trip time of an application ping, in seconds."""
        if self._closed:
            raise RuntimeError("the client is closed")
        fut: asyncio.Future[float] = self._future()
        self._pongs.append(fut)
        start = time.monotonic()
        try:
            async with asyncio.timeout(self.reply_timeout):
                await self._send({"type": "ping"})
                return await fut - start
        except TimeoutError:
            raise RequestTimeout(
                "TIMEOUT", f"no pong within reply_timeout ({self.reply_timeout:g} s)", retryable=True
            ) from None
        finally:
            if fut in self._pongs:
                self._pongs.remove(fut)


def _check_request_id(method: str, request_id: object) -> None:
    if not isinstance(request_id, str) or not request_id:
        raise InvalidArgument(
            f"{method}() needs a request id (a non-empty str, e.g. the request_id of the handle "
            f"submit() returned), not {request_id!r}"
        )
