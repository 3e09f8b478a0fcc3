"""Handlers: the Router that registers them, payload decoding, and the progress reporter.

    router = Router()

    @router.handler("generate_report", estimated_duration=120, permission="reports", retries=2)
    async def generate_report(payload: ReportParams, progress: ProgressReporter) -> dict:
        await progress.report(10, "Querying data...")
        ...
        return {"url": url}

The payload parameter's annotation (a msgspec Struct, a pydantic model, a dataclass,
a TypedDict or ``dict``) decides how the JSON payload is decoded; a payload that does
not fit is refused with VALIDATION_ERROR naming the field. A second parameter, when
present, receives the :class:`ProgressReporter`.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import math
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, get_type_hints

import msgspec

from prism.errors import InvalidArgument
from prism.streaming.errors import Cancelled, StreamError

__all__ = ["HandlerSpec", "ProgressReporter", "Router", "load_router"]

_ACTION = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
_PATH = re.compile(r"at `\$\.?([^`]*)`")

#: Receives one coalesced progress value: (percentage, message, metadata, reported_at).
ProgressSink = Callable[[float, str, dict[str, Any] | None, float], Awaitable[None]]


def _seconds(value: float | timedelta | None, what: str, *, allow_inf: bool = False) -> float | None:
    if value is None:
        return None
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
        raise InvalidArgument(f"{what} must be a number of seconds >= 0, got {value!r}")
    if math.isinf(value) and not allow_inf:
        raise InvalidArgument(f"{what} must be finite")
    return float(value)


@dataclass(frozen=True, slots=True)
class HandlerSpec:
    """One registered handler and its settings."""

    action: str
    func: Callable[..., Awaitable[Any]]
    payload_type: Any
    takes_progress: bool
    estimated_duration: float
    permission: str | None
    retries: int | None
    timeout: float | None
    description: str

    def decode_payload(self, payload: bytes) -> Any:
        """The payload as the handler's annotated type; StreamError(VALIDATION_ERROR) naming the field."""
        return decode_payload(self.payload_type, payload)

    def max_attempts(self, default: int) -> int:
        return default if self.retries is None else self.retries + 1


def _is_pydantic(tp: Any) -> bool:
    return isinstance(tp, type) and hasattr(tp, "model_validate_json") and hasattr(tp, "model_fields")


def decode_payload(tp: Any, payload: bytes) -> Any:
    """Decode JSON ``payload`` as ``tp``, mapping every failure to VALIDATION_ERROR."""
    if _is_pydantic(tp):
        try:
            return tp.model_validate_json(payload)
        except Exception as exc:
            errors = getattr(exc, "errors", None)
            if not callable(errors):
                raise
            first = errors()[0]
            field = ".".join(str(p) for p in first.get("loc", ()))
            raise StreamError(
                "VALIDATION_ERROR",
                f"invalid payload: {first.get('msg', 'invalid value')}" + (f" at {field!r}" if field else ""),
                details={"field": field or None, "errors": len(errors())},
            ) from None
    try:
        return msgspec.json.decode(payload, type=tp)
    except msgspec.ValidationError as exc:
        text = str(exc)
        match = _PATH.search(text)
        path = match.group(1) if match else ""
        missing = re.search(r"missing required field `([^`]+)`", text)
        if missing:
            path = f"{path}.{missing.group(1)}" if path else missing.group(1)
        raise StreamError(
            "VALIDATION_ERROR", f"invalid payload: {text}", details={"field": path or None}
        ) from None
    except msgspec.DecodeError as exc:
        raise StreamError("VALIDATION_ERROR", f"invalid payload: {exc}", details={"field": None}) from None


class Router:
    """A table of handlers by action name. Routers combine with ``include``."""

    def __init__(self) -> None:
        self.handlers: dict[str, HandlerSpec] = {}

    def __contains__(self, action: object) -> bool:
        return action in self.handlers

    def __len__(self) -> int:
        return len(self.handlers)

    def get(self, action: str) -> HandlerSpec | None:
        return self.handlers.get(action)

    def handler(
        self,
        action: str,
        *,
        estimated_duration: float | timedelta = 0.0,
        permission: str | None = None,
        retries: int | None = None,
        timeout: float | timedelta | None = None,
    ) -> Callable[[Callable[..., Awaitable[Any]]], Callable[..., Awaitable[Any]]]:
        """Register an async function as the handler of ``action``.

        ``estimated_duration`` under the service's sync threshold runs the handler inline
        (``math.inf`` always queues it); ``permission`` is a role the caller must hold;
        ``retries`` is how many more attempts a retryable failure gets; ``timeout`` bounds
        one attempt.
        """
        if not isinstance(action, str) or not _ACTION.fullmatch(action):
            raise InvalidArgument(f"an action name is 1-128 letters, digits or '_.:-', not {action!r}")
        duration = _seconds(estimated_duration, "estimated_duration", allow_inf=True)
        limit = _seconds(timeout, "timeout")
        if retries is not None and (not isinstance(retries, int) or isinstance(retries, bool) or retries < 0):
            raise InvalidArgument(f"retries must be an int >= 0, got {retries!r}")
        if permission is not None and (not isinstance(permission, str) or not permission):
            raise InvalidArgument("permission must be a non-empty role name")

        def register(func: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
            if not inspect.iscoroutinefunction(func):
                raise InvalidArgument(f"the handler of {action!r} must be an async function")
            if action in self.handlers:
                raise InvalidArgument(f"action {action!r} already has a handler")
            params = list(inspect.signature(func).parameters.values())
            if not 1 <= len(params) <= 2:
                raise InvalidArgument(f"the handler of {action!r} takes (payload) or (payload, progress)")
            hints = get_type_hints(func)
            payload_type = hints.get(params[0].name, dict[str, Any])
            if not _is_pydantic(payload_type):
                try:
                    msgspec.json.Decoder(payload_type)
                except TypeError as exc:
                    raise InvalidArgument(f"the payload type of {action!r} cannot be decoded: {exc}") from exc
            self.handlers[action] = HandlerSpec(
                action=action,
                func=func,
                payload_type=payload_type,
                takes_progress=len(params) == 2,
                estimated_duration=duration or 0.0,
                permission=permission,
                retries=retries,
                timeout=limit,
                description=inspect.getdoc(func) or "",
            )
            return func

        return register

    def include(self, other: Router) -> None:
        """Add every handler of ``other`` (an action registered twice is an error)."""
        for action, spec in other.handlers.items():
            if action in self.handlers and self.handlers[action] is not spec:
                raise InvalidArgument(f"action {action!r} already has a handler")
            self.handlers[action] = spec


def load_router(target: str) -> Router:
    """Import ``"package.module:router"`` and check it is a Router."""
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise InvalidArgument(f"a handler router is 'package.module:router', not {target!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise InvalidArgument(f"cannot import handler module {module_name!r}: {exc}") from exc
    router = getattr(module, attr, None)
    if not isinstance(router, Router):
        raise InvalidArgument(f"{target!r} is not a prism.streaming Router")
    return router


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class ProgressReporter:
    """What a handler uses to report progress and notice cancellation.

    Reports are coalesced to at most ``rate`` in any second: a report beyond that
    replaces the pending one, which is sent as soon as the rate allows, so the latest
    value is never lost. The percentage never goes backwards (a lower value is raised to the
    highest reported so far). After a cancel, ``report`` raises :class:`Cancelled` and
    ``cancelled`` is True; a handler that keeps running is interrupted after the
    service's cancel grace period.
    """

    def __init__(
        self,
        request_id: str,
        *,
        rate: float,
        attempt: int = 1,
        start_percentage: float = 0.0,
        sink: ProgressSink | None = None,
    ) -> None:
        self.request_id = request_id
        self.attempt = attempt
        # At most ``burst`` sends in any ``window`` seconds: 10/s means at most 10 in any second,
        # so reports that arrive on a steady beat with some jitter are not held back.
        self._burst = max(1, round(rate))
        self._window = self._burst / rate
        self._sent: deque[float] = deque(maxlen=self._burst)
        self._sink = sink
        self._highest = start_percentage
        self._pending: tuple[float, str, dict[str, Any] | None, float] | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._cancelled = asyncio.Event()
        self._sleepers: set[asyncio.Future[None]] = set()
        self._failure: BaseException | None = None

    @property
    def cancelled(self) -> bool:
        """True once the request was cancelled (or this attempt lost its claim)."""
        return self._cancelled.is_set()

    @property
    def percentage(self) -> float:
        return self._highest

    def check_cancelled(self) -> None:
        """Raise Cancelled when the request was cancelled: call it between steps."""
        if self._failure is not None:
            raise self._failure
        if self._cancelled.is_set():
            raise Cancelled(f"request {self.request_id} was cancelled")

    async def wait_cancelled(self) -> None:
        """Return once the request is cancelled (to race against long awaits)."""
        await self._cancelled.wait()

    async def sleep(self, seconds: float) -> None:
        """Sleep like ``asyncio.sleep``, but wake and raise Cancelled as soon as the request is cancelled."""
        self.check_cancelled()
        loop = asyncio.get_running_loop()
        wake: asyncio.Future[None] = loop.create_future()
        timer = loop.call_later(max(0.0, seconds), _resolve, wake)
        self._sleepers.add(wake)
        try:
            await wake
        finally:
            timer.cancel()
            self._sleepers.discard(wake)
        self.check_cancelled()

    async def report(self, percentage: float, message: str = "", **metadata: Any) -> None:
        """Report ``percentage`` (0-100) done and a human message; extra keywords go in ``metadata``."""
        self.check_cancelled()
        if (
            not isinstance(percentage, int | float)
            or isinstance(percentage, bool)
            or not 0 <= percentage <= 100
        ):
            raise ValueError(f"percentage must be a number from 0 to 100, got {percentage!r}")
        if not isinstance(message, str):
            raise ValueError("message must be a str")
        self._highest = max(self._highest, float(percentage))
        self._pending = (self._highest, message, metadata or None, time.time())
        if self._sink is None:
            return
        if self._lock.locked() or self._wait() > 0:
            if self._flusher is None or self._flusher.done():
                self._flusher = asyncio.get_running_loop().create_task(self._flush_later())
            return
        await self._send_pending()

    def _wait(self) -> float:
        """Seconds until one more send keeps the rate (0: now)."""
        if len(self._sent) < self._burst:
            return 0.0
        return max(0.0, self._sent[0] + self._window - time.monotonic())

    async def _send_pending(self) -> None:
        async with self._lock:
            pending, self._pending = self._pending, None
            if pending is None or self._sink is None:
                return
            self._sent.append(time.monotonic())
            try:
                await self._sink(*pending)
            except (Cancelled, asyncio.CancelledError):
                raise
            except BaseException as exc:
                self.fail(exc)
                raise

    async def _flush_later(self) -> None:
        while self._pending is not None and self._sink is not None and not self._cancelled.is_set():
            delay = self._wait()
            if delay > 0:
                await asyncio.sleep(delay)
            try:
                await self._send_pending()
            except BaseException:
                return

    async def flush(self) -> None:
        """Send the pending report, if any, respecting the rate (before a final event)."""
        if self._flusher is not None and not self._flusher.done():
            await asyncio.wait([self._flusher])
        if self._pending is not None and self._sink is not None and not self._cancelled.is_set():
            delay = self._wait()
            if delay > 0:
                await asyncio.sleep(delay)
            await self._send_pending()

    def attach(self, sink: ProgressSink) -> None:
        """Start sending reports to ``sink`` (a request promoted from inline to async)."""
        self._sink = sink
        if self._pending is not None and (self._flusher is None or self._flusher.done()):
            self._flusher = asyncio.get_running_loop().create_task(self._flush_later())

    def cancel(self) -> None:
        """Mark the request cancelled; the handler sees it at its next report, check or sleep."""
        self._cancelled.set()
        for wake in self._sleepers:
            _resolve(wake)

    def fail(self, exc: BaseException) -> None:
        """Stop the handler with ``exc`` at its next report (its attempt lost its claim)."""
        self._failure = exc
        self.cancel()

    async def close(self) -> None:
        if self._flusher is not None and not self._flusher.done():
            self._flusher.cancel()
            await asyncio.wait([self._flusher])
