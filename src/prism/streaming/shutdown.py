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

A :class:`ProcessStop` is how a long-running command (``prism serve``, ``prism
worker``, ``python -m prism.streaming``) stops within a bound. Installed before any
work starts, it turns the first SIGTERM or SIGINT into a stop request (honoured
even while the command is still starting) and arms a watchdog: if the process has
not exited ``timeout`` seconds later (a store that never answers, a thread that never
returns), it exits with :data:`EXIT_FORCED`, saying so. A second signal exits at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

__all__ = ["EXIT_ABANDONED", "EXIT_FORCED", "SIGNALS", "ProcessStop", "ShutdownNotice", "StopReport"]

log = logging.getLogger("prism.streaming")

#: The signals that mean "shut down": what uvicorn drains on.
SIGNALS: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT)
#: Exit status of a process that stopped but left work it could not hand back (abandoned jobs).
EXIT_ABANDONED = 3
#: Exit status of a process that did not drain: a second signal, or ``shutdown_timeout`` ran out.
EXIT_FORCED = 4
#: A second signal this soon after the first is the same stop delivered twice (to a process
#: group and forwarded by a parent such as ``make``), not a request to exit at once.
REPEAT_WINDOW_SECONDS = 0.5
#: Part of the shutdown budget kept back for closing connections after the drain.
CLOSE_SHARE = 0.1
#: Most time kept back for closing connections, in seconds.
CLOSE_RESERVE_MAX = 1.0


@dataclasses.dataclass(slots=True)
class StopReport:
    """What became of the jobs a worker pool was running when it stopped."""

    #: Jobs whose attempt ended (result, failure or retry written) while stopping.
    finished: int = 0
    #: Jobs interrupted and handed back: another worker runs them at once.
    released: int = 0
    #: Jobs that could not be handed back: another worker takes them over once their lease
    #: (``lease_seconds``) expires.
    abandoned: int = 0

    def __str__(self) -> str:
        return f"{self.finished} job(s) finished, {self.released} released, {self.abandoned} abandoned"

    @property
    def exit_code(self) -> int:
        """0 when nothing was abandoned, else :data:`EXIT_ABANDONED`."""
        return EXIT_ABANDONED if self.abandoned else 0


def drain_budget(timeout: float) -> float:
    """The part of a shutdown budget of ``timeout`` seconds that draining may use (the rest closes)."""
    return timeout - min(CLOSE_RESERVE_MAX, timeout * CLOSE_SHARE)


def _say(line: str) -> None:
    """Write one line to stderr from a signal handler or the watchdog (no locks, no logging)."""
    with contextlib.suppress(OSError):
        os.write(sys.stderr.fileno(), (line + "\n").encode(errors="replace"))


class ProcessStop:
    """The stop signals of one long-running process: a bounded shutdown on the first, exit on the second.

    ``prog`` names the process in what it writes; ``timeout`` is its ``shutdown_timeout``.
    Listeners added with :meth:`on_stop` run inside the signal handler (on the main
    thread, between two bytecodes): they should only flip a flag or hand the stop to an
    event loop with ``call_soon_threadsafe``.
    """

    def __init__(self, prog: str, timeout: float) -> None:
        if not timeout > 0:
            raise ValueError(f"shutdown_timeout must be > 0, not {timeout!r}")
        self.prog = prog
        self.timeout = timeout
        #: The first stop signal received (None: none yet).
        self.signal: signal.Signals | None = None
        self._listeners: list[Callable[[signal.Signals], None]] = []
        self._watchdog: threading.Timer | None = None
        self._since = 0.0

    @property
    def requested(self) -> bool:
        return self.signal is not None

    def install(self) -> ProcessStop:
        """Handle SIGTERM and SIGINT from now on (main thread only; elsewhere a no-op)."""
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                signal.signal(sig, self._on_signal)
        return self

    def remaining(self) -> float:
        """Seconds left of ``timeout`` since the stop signal (all of it before one came)."""
        if self.signal is None:
            return self.timeout
        return max(0.0, self.timeout - (time.monotonic() - self._since))

    def on_stop(self, listener: Callable[[signal.Signals], None]) -> None:
        """Call ``listener(signal)`` on the first stop signal (at once if it already came)."""
        if self.signal is not None:
            listener(self.signal)
        else:
            self._listeners.append(listener)

    def request(self, sig: signal.Signals = signal.SIGTERM) -> None:
        """Act as if ``sig`` was received (the first time: a bounded stop; again: exit at once)."""
        self._on_signal(sig, None)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        sig = signal.Signals(signum)
        if self.signal is not None:
            if time.monotonic() - self._since < REPEAT_WINDOW_SECONDS:
                return
            _say(f"{self.prog}: second {sig.name} received, exiting at once without finishing the drain")
            os._exit(EXIT_FORCED)
        self.signal = sig
        self._since = time.monotonic()
        watchdog = threading.Timer(self.timeout, self._expired)
        watchdog.daemon = True
        watchdog.name = "prism-shutdown-watchdog"
        watchdog.start()
        self._watchdog = watchdog
        listeners, self._listeners = self._listeners, []
        for listener in listeners:
            try:
                listener(sig)
            except Exception:  # pragma: no cover - a listener only flips flags
                log.exception("a stop listener failed")

    def _expired(self) -> None:
        _say(
            f"{self.prog}: did not stop within shutdown_timeout={self.timeout:g} s of {self.signal_name}; "
            "exiting now, work still in progress is abandoned"
        )
        os._exit(EXIT_FORCED)

    @property
    def signal_name(self) -> str:
        return self.signal.name if self.signal is not None else "a stop request"

    def finish(self) -> None:
        """The process is done and about to exit: ignore later stop signals (the watchdog stays armed).

        Without this, a signal during interpreter shutdown (when Python has put the default
        handlers back) would end the process with that signal instead of its exit status.
        """
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                signal.signal(sig, signal.SIG_IGN)

    def disarm(self) -> None:
        """Cancel the watchdog (the process is about to exit on its own)."""
        if self._watchdog is not None:
            self._watchdog.cancel()


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
