"""eager.start: a coroutine that never waits finishes in the caller; one that waits goes on in a task."""

from __future__ import annotations

import asyncio
import contextvars

import pytest

from prism.streaming import eager


async def test_a_coroutine_that_never_waits_finishes_at_once() -> None:
    async def quick() -> int:
        return 7

    fut = eager.start(quick())
    assert fut.done() and fut.result() == 7


async def test_an_immediate_exception_is_in_the_future() -> None:
    async def boom() -> None:
        raise KeyError("x")

    fut = eager.start(boom())
    assert fut.done()
    with pytest.raises(KeyError):
        fut.result()


async def test_a_coroutine_that_waits_continues_in_a_task_with_values_and_errors() -> None:
    order: list[str] = []
    gate: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def slow() -> int:
        order.append("start")
        value = await gate
        order.append("got")
        await asyncio.sleep(0)
        await asyncio.sleep(0.01)
        try:
            await _fail()
        except ValueError:
            order.append("caught")
        return value * 2

    fut = eager.start(slow())
    assert order == ["start"] and not fut.done()
    gate.set_result(21)
    assert await fut == 42
    assert order == ["start", "got", "caught"]


async def _fail() -> None:
    await asyncio.sleep(0)
    raise ValueError("inner")


async def test_cancelling_the_task_reaches_the_coroutine() -> None:
    cleaned: list[str] = []

    async def waits() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cleaned.append("cancelled")
            raise

    fut = eager.start(waits())
    await asyncio.sleep(0.01)
    fut.cancel()
    with pytest.raises(asyncio.CancelledError):
        await fut
    assert cleaned == ["cancelled"]


_var: contextvars.ContextVar[str] = contextvars.ContextVar("_var", default="outer")


async def test_the_coroutine_has_its_own_context_across_the_suspension() -> None:
    """A context variable set, then reset after a wait, works as in a Task; the caller is untouched."""

    async def sets_and_resets() -> str:
        token = _var.set("inner")
        await asyncio.sleep(0.01)
        seen = _var.get()
        _var.reset(token)
        return seen

    fut = eager.start(sets_and_resets())
    assert _var.get() == "outer"
    assert await fut == "inner"
    assert _var.get() == "outer"


def test_the_way_to_start_depends_on_the_python() -> None:
    """3.12+ uses asyncio's public eager start; 3.11 steps by hand only while asyncio has the flag."""

    class WithoutFlag:
        pass

    assert eager.how_to_start((3, 12)) == "asyncio"
    assert eager.how_to_start((3, 14)) == "asyncio"
    assert eager.how_to_start((3, 11)) == "stepped"
    assert eager.how_to_start((3, 11), WithoutFlag) == "task"
    assert eager.how_to_start((3, 10)) == "task"


async def test_without_eager_start_a_plain_task_runs_the_coroutine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(eager, "HOW", "task")

    async def waits() -> int:
        await asyncio.sleep(0.01)
        return 3

    assert await eager.start(waits()) == 3
