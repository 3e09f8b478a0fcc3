"""The blocking bridge's engine: run a coroutine to completion for a blocking caller.

``Portal.call`` drives the one async implementation of every operation:

* for backends that never suspend on I/O (memory, sqlite), it steps the coroutine
  directly in the calling thread, so a blocking ``get`` costs no thread hop; if the
  coroutine does suspend (sqlite waiting out another process's lock), the rest runs
  on a private event loop of the calling thread;
* for network backends, it submits the coroutine to an event loop in a background
  thread that owns the connections.

Stepping a coroutine outside a Task needs three of asyncio's private internals
(``asyncio.events._get_running_loop``/``_set_running_loop`` so the coroutine sees
its loop, and ``Future._asyncio_future_blocking``, the flag a Task clears before it
waits on a future). This module is the only place in the blocking bridge that
touches them. They are checked once, at import: on a Python outside
``INLINE_PYTHONS`` or whose asyncio lacks them, ``INLINE_UNAVAILABLE`` says why and
every portal falls back to the background event loop, which uses public asyncio
only (slower per call, same results).
"""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from prism.errors import StoreClosed

__all__ = ["INLINE_PYTHONS", "INLINE_UNAVAILABLE", "THREAD_JOIN_TIMEOUT", "Portal", "inline_unavailable"]

R = TypeVar("R")

#: The Python versions (oldest, newest; inclusive) whose asyncio internals the inline
#: runner was written against; newer ones use the background event loop until checked.
INLINE_PYTHONS: tuple[tuple[int, int], tuple[int, int]] = ((3, 11), (3, 14))
#: Seconds ``Portal.close`` waits for the background event loop's thread to finish.
THREAD_JOIN_TIMEOUT = 5.0

_PRIVATE_EVENTS = ("_get_running_loop", "_set_running_loop")
_FUTURE_FLAG = "_asyncio_future_blocking"


def inline_unavailable(
    version: tuple[int, int] = sys.version_info[:2],
    events: object = asyncio.events,
    future: type = asyncio.Future,
) -> str | None:
    """Why this Python cannot step coroutines inline (None when it can)."""
    oldest, newest = INLINE_PYTHONS
    if not oldest <= version <= newest:
        return (
            f"Python {version[0]}.{version[1]} is outside "
            f"{oldest[0]}.{oldest[1]}-{newest[0]}.{newest[1]}, the versions whose asyncio "
            "internals the inline runner is checked against"
        )
    for name in _PRIVATE_EVENTS:
        if not callable(getattr(events, name, None)):
            return f"asyncio.events.{name} is missing"
    if not hasattr(future, _FUTURE_FLAG):
        return f"asyncio.Future.{_FUTURE_FLAG} is missing"
    return None


#: None when blocking calls on memory and sqlite stores run inline; otherwise the reason
#: they run on a background event loop instead.
INLINE_UNAVAILABLE = inline_unavailable()

if INLINE_UNAVAILABLE is None:
    _get_running_loop = asyncio.events._get_running_loop
    _set_running_loop = asyncio.events._set_running_loop


class Portal:
    """Runs coroutines to completion for blocking callers.

    ``inline=True`` asks for stepping in the calling thread (granted only when
    ``INLINE_UNAVAILABLE`` is None); otherwise a background thread runs an event loop.
    """

    def __init__(self, inline: bool) -> None:
        self.inline = inline and INLINE_UNAVAILABLE is None
        self.closed = False
        self._local = threading.local()
        self._loops: list[asyncio.AbstractEventLoop] = []
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        if not self.inline:
            loop = asyncio.new_event_loop()
            self._loop = loop
            self._thread = threading.Thread(target=loop.run_forever, name="prism-sync", daemon=True)
            self._thread.start()

    def call(self, coro: Coroutine[Any, Any, R]) -> R:
        """Run ``coro`` to completion and return its result (or raise its error)."""
        if self.closed:
            coro.close()
            raise StoreClosed("the store is closed")
        if self._loop is not None:
            return asyncio.run_coroutine_threadsafe(coro, self._loop).result()
        loop: asyncio.AbstractEventLoop | None = getattr(self._local, "loop", None)
        if loop is None:
            loop = self._local.loop = asyncio.new_event_loop()
            with self._lock:
                self._loops.append(loop)
        outer = _get_running_loop()  # a notebook's loop, say: restored afterwards
        # The common case: the coroutine finishes without suspending.
        _set_running_loop(loop)
        try:
            awaited = coro.send(None)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        finally:
            _set_running_loop(outer)
        return self._resume(coro, loop, outer, awaited)

    def _resume(
        self, coro: Coroutine[Any, Any, R], loop: asyncio.AbstractEventLoop, outer: Any, awaited: Any
    ) -> R:
        """Finish a coroutine that suspended, running the thread's private loop while it waits."""
        while True:
            value: Any = None
            error: BaseException | None = None
            if awaited is None:  # a bare yield (asyncio.sleep(0)): let the loop turn once
                awaited = asyncio.sleep(0)
            else:
                setattr(awaited, _FUTURE_FLAG, False)  # as a Task does before it waits
            _set_running_loop(None)
            try:
                value = loop.run_until_complete(_settle(awaited))
            except BaseException as exc:  # delivered into the coroutine, as `await` would
                error = exc
            finally:
                _set_running_loop(outer)
            _set_running_loop(loop)
            try:
                awaited = coro.throw(error) if error is not None else coro.send(value)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]
            finally:
                _set_running_loop(outer)

    def close(self) -> None:
        """Stop the background loop (if any) and close the private loops; safe to call twice."""
        self.closed = True
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=THREAD_JOIN_TIMEOUT)
            self._loop.close()
            self._loop = None
        with self._lock:
            for loop in self._loops:
                if not loop.is_running():
                    loop.close()
            self._loops.clear()


async def _settle(awaitable: Any) -> Any:
    return await awaitable
