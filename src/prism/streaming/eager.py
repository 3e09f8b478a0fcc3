"""Run a coroutine eagerly: up to its first real suspension in the caller, without a Task.

A quick handler (``echo``) usually finishes without ever waiting; running it as a
Task costs a task object and a trip around the event loop for nothing. ``start``
steps the coroutine at once and returns a finished Future when it completed; only a
coroutine that does suspend continues in a Task, which drives it exactly as asyncio
would (Python 3.12's eager task factory does the same).
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["start"]

T = TypeVar("T")


def start(coro: Coroutine[Any, Any, T]) -> asyncio.Future[T]:
    """Run ``coro`` until it first suspends; a done Future if it finished, else a Task that continues it."""
    loop = asyncio.get_running_loop()
    # Like a Task, the coroutine runs in its own copy of the context, from its first step on.
    context = contextvars.copy_context()
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
    loop = asyncio.get_running_loop()
    while True:
        try:
            if yielded is None:
                await asyncio.sleep(0)
            else:
                # What a Task does with an awaited future: wait for it, let the coroutine read its outcome.
                yielded._asyncio_future_blocking = False
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
