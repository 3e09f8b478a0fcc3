"""Telling long-lived responses that their process is shutting down.

On SIGTERM (or Ctrl-C) uvicorn stops accepting connections, closes WebSockets at
once (1012, "service restart") and waits for the HTTP responses in flight. To it an
SSE stream is one more response in flight: it would run until the graceful shutdown
timeout and then be cancelled. A :class:`ShutdownNotice` hears the signal first, so
the SSE streams of ``/v1/requests/{id}/events`` end at once with an event that tells
their clients to reconnect (to another replica, or to this one once restarted).

The notice chains onto the handlers already installed for SIGTERM and SIGINT (the
server's own, which still run after it) while the streaming service runs, and puts
them back when it stops. Signals reach only the main thread: elsewhere it listens to
nothing, and :meth:`ShutdownNotice.request` is the way to trigger it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

__all__ = ["SIGNALS", "ShutdownNotice"]

log = logging.getLogger("prism.streaming")

#: The signals that mean "shut down": what uvicorn drains on.
SIGNALS: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT)


class ShutdownNotice:
    """A one-way switch, flipped by a shutdown signal or by :meth:`request`, with listeners."""

    def __init__(self) -> None:
        self._requested = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._listeners: list[Callable[[], None]] = []
        self._previous: dict[int, Any] = {}
        self._active = False
        # One bound method, so the handler installed can be recognised when it is removed.
        self._handler = self._on_signal

    @property
    def requested(self) -> bool:
        """Whether the process is shutting down."""
        return self._requested

    def subscribe(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call ``listener`` (on the event loop) when shutdown is requested, at once if it was.

        Returns the function that unsubscribes it.
        """
        if self._requested:
            listener()
            return lambda: None
        self._listeners.append(listener)

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                self._listeners.remove(listener)

        return unsubscribe

    def request(self) -> None:
        """Flip the switch and call the listeners (safe from a signal handler or another thread)."""
        if self._requested:
            return
        self._requested = True
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        # From a signal handler the loop may be mid-step: the listeners run on its next turn.
        loop.call_soon_threadsafe(self._notify)

    def _notify(self) -> None:
        listeners, self._listeners = self._listeners, []
        for listener in listeners:
            try:
                listener()
            except Exception:
                log.exception("a shutdown listener failed")

    def watch_signals(self) -> None:
        """Listen for SIGTERM and SIGINT on the running loop's process (main thread only)."""
        self._loop = asyncio.get_running_loop()
        if self._active or threading.current_thread() is not threading.main_thread():
            return
        for sig in SIGNALS:
            previous = signal.getsignal(sig)
            try:
                signal.signal(sig, self._handler)
            except (ValueError, OSError):  # pragma: no cover - a platform without this signal
                continue
            self._previous[sig] = previous
        self._active = True

    def unwatch_signals(self) -> None:
        """Put back the handlers found by :meth:`watch_signals` (unless another was installed since)."""
        if not self._active:
            return
        self._active = False
        if threading.current_thread() is not threading.main_thread():
            return
        for sig, previous in list(self._previous.items()):
            if signal.getsignal(sig) == self._handler:
                # Skip notices stopped out of order: they only pass the signal on.
                while isinstance(getattr(previous, "__self__", None), ShutdownNotice):
                    notice: ShutdownNotice = previous.__self__
                    if notice._active or sig not in notice._previous:
                        break
                    previous = notice._previous[sig]
                signal.signal(sig, previous)
                del self._previous[sig]
            # Otherwise a later handler chains onto this one, which now only passes the signal on.

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self._active:
            self.request()
        previous = self._previous.get(signum)
        if callable(previous):
            previous(signum, frame)
        elif previous == signal.SIG_DFL:
            # What the signal would have done without this notice: end the process.
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)
