"""Run a coroutine eagerly: up to its first real suspension in the caller, then in a Task.

A quick handler (``echo``) usually finishes without ever waiting; scheduling it as a
Task first costs a trip around the event loop for nothing. ``start`` runs the
coroutine at once and returns a finished Future when it completed; a coroutine that
does suspend continues in a Task.

How, depends on the Python (``HOW`` says which):

* ``"asyncio"``, Python 3.12 and later: asyncio's own public eager start
  (``asyncio.Task(..., eager_start=True)``);
* ``"stepped"``, Python 3.11: no public way exists, so ``start`` steps the coroutine
  itself and, at its first suspension, hands it to a Task that waits on what it
  yielded. That needs one private asyncio name, ``Future._asyncio_future_blocking``
  (the flag a Task clears before it waits on a future; left set, the next ``await``
  of that future fails). This module is the only one in streaming that touches it,
  and only after checking, at import, that the Python is one it was written against
  (``STEPPED_PYTHONS``) and that asyncio still has the flag;
* ``"task"``, anything else: a plain Task (public asyncio, one loop trip slower).
"""

from __future__ import annotations

import asyncio
import contextvars
import sys
from collections.abc import Coroutine
from typing import Any, Literal, TypeVar

__all__ = ["HOW", "STEPPED_PYTHONS", "how_to_start", "start"]

T = TypeVar("T")

#: The Python versions (oldest, newest; inclusive) whose asyncio the hand-stepping was written against.
STEPPED_PYTHONS: tuple[tuple[int, int], tuple[int, int]] = ((3, 11), (3, 11))
_FUTURE_FLAG = "_asyncio_future_blocking"


def how_to_start(
    version: tuple[int, int] = sys.version_info[:2], future: type = asyncio.Future
) -> Literal["asyncio", "stepped", "task"]:
    """How ``start`` runs coroutines on this Python (see the module docstring)."""
    if version >= (3, 12):
        return "asyncio"
    oldest, newest = STEPPED_PYTHONS
    if oldest <= version <= newest and hasattr(future, _FUTURE_FLAG):
        return "stepped"
    return "task"


#: How ``start`` runs coroutines here: "asyncio", "stepped" or "task".
HOW = how_to_start()


def start(coro: Coroutine[Any, Any, T]) -> asyncio.Future[T]:
    """Run ``coro`` until it first suspends; a done Future if it finished, else a Task that continues it."""
    loop = asyncio.get_running_loop()
    # Like a Task, the coroutine runs in its own copy of the context, from its first step on.
    context = contextvars.copy_context()
    if HOW == "asyncio":
        task: asyncio.Future[T] = asyncio.Task(  # type: ignore[call-arg,unused-ignore]
            coro, loop=loop, context=context, eager_start=True
        )
        return task
    if HOW == "task":
        return loop.create_task(coro, context=context)
    try:
        yielded = context.run(coro.send, None)
    except StopIteration as stop:
        done: asyncio.Future[T] = loop.create_future()
        done.set_result(stop.value)
        return done
    except BaseException as exc:
        failed: asyncio.Future[T] = loop.create_future()
        failed.set_exception(exc)
        return failed
    return loop.create_task(_resume(coro, yielded), context=context)


async def _resume(coro: Coroutine[Any, Any, T], yielded: Any) -> T:
    """Go on stepping ``coro`` from a Task, waiting on each future it yields as a Task would."""
    loop = asyncio.get_running_loop()
    while True:
        try:
            if yielded is None:
                await asyncio.sleep(0)
            else:
                setattr(yielded, _FUTURE_FLAG, False)
                waiter: asyncio.Future[None] = loop.create_future()

                def wake(_: Any, waiter: asyncio.Future[None] = waiter) -> None:
                    if not waiter.done():
                        waiter.set_result(None)

                yielded.add_done_callback(wake)
                try:
                    await waiter
                finally:
                    yielded.remove_done_callback(wake)
        except asyncio.CancelledError as exc:
            # This Task was cancelled while the coroutine waited: cancel what it waited on and tell it.
            if yielded is not None and not yielded.done():
                yielded.cancel()
            try:
                yielded = coro.throw(exc)
            except StopIteration as stop:
                value: T = stop.value
                return value
            continue
        try:
            yielded = coro.send(None)
        except StopIteration as stop:
            result: T = stop.value
            return result
