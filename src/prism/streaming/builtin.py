"""Handlers that ship with Prism: ``echo``, and the demo handlers ``delay`` and ``generate_report``.

``echo`` answers at once with its payload (bounded by the frame and body limits), so it
is registered by default (``builtin_handlers``) as a liveness and round-trip check.
``delay`` and ``generate_report`` exist for the zero-config demo (``prism serve``
without ``--config``, ``make run``) and for tests: ``generate_report`` returns a
made-up URL, and ``delay`` holds a worker for as long as its caller asks (both at most
``max_delay_seconds``). With a config file they are registered only when
``streaming.demo_handlers`` is true.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
from datetime import date
from typing import Annotated, Any, Literal

import msgspec

from prism.streaming.config import StreamingConfig
from prism.streaming.handlers import ProgressReporter, Router

__all__ = ["ReportParams", "builtin_router", "demo_router", "router"]

#: The handlers registered by default: ``echo`` only.
router = Router()


@router.handler("echo", estimated_duration=0.0)
async def echo(payload: msgspec.Raw) -> msgspec.Raw:
    """Answer at once with the payload as ``data`` (a liveness and round-trip check)."""
    return payload


class ReportParams(msgspec.Struct, forbid_unknown_fields=True):
    start_date: date
    end_date: date
    format: Literal["pdf", "csv", "xlsx"] = "pdf"
    #: Seconds each of the report's four steps takes (a demo knob; all four together at most
    #: ``max_delay_seconds``).
    step_seconds: Annotated[float, msgspec.Meta(ge=0, le=60)] = 1.0

    def __post_init__(self) -> None:
        if self.end_date < self.start_date:
            raise ValueError("end_date is before start_date")


_STEPS = (
    (10, "Validating parameters..."),
    (30, "Querying data..."),
    (60, "Generating report..."),
    (90, "Uploading..."),
)


async def generate_report(payload: ReportParams, progress: ProgressReporter) -> dict[str, object]:
    """A demo report: four steps with progress, then a made-up download URL, the row and page counts."""
    for percentage, message in _STEPS:
        await progress.report(percentage, message)
        await progress.sleep(payload.step_seconds)
    days = (payload.end_date - payload.start_date).days + 1
    digest = hashlib.sha256(f"{payload.start_date}{payload.end_date}{payload.format}".encode()).hexdigest()
    await progress.report(100, "Complete!")
    return {
        "url": f"https://reports.example.invalid/{digest[:16]}.{payload.format}",
        "rows": days * 24,
        "pages": max(1, days // 7),
    }


def demo_router(max_delay_seconds: float) -> Router:
    """The demo handlers; ``delay`` refuses (VALIDATION_ERROR) more than ``max_delay_seconds``."""
    demo = Router()
    # The payload type carries the cap, so a longer delay is refused when it is submitted.
    delay_params: Any = msgspec.defstruct(
        "DelayParams",
        [
            ("seconds", Annotated[float, msgspec.Meta(ge=0, le=max_delay_seconds)]),
            # Seconds between two progress reports.
            ("step", Annotated[float, msgspec.Meta(ge=0.01, le=60)], 1.0),
        ],
        forbid_unknown_fields=True,
    )

    async def delay(payload: Any, progress: ProgressReporter) -> dict[str, float]:
        """Sleep ``seconds``, reporting progress every ``step`` (1 s), then answer ``{"slept": seconds}``."""
        seconds: float = payload.seconds
        loop = asyncio.get_running_loop()
        start = loop.time()
        done = 0.0
        while done < seconds:
            # Sleep to the next step boundary measured from the start, so reports do not drift.
            target = min(seconds, done + payload.step)
            await progress.sleep(start + target - loop.time())
            done = target
            await progress.report(round(100 * done / seconds, 2), f"slept {done:g} of {seconds:g} s")
        return {"slept": seconds}

    delay.__annotations__ = {
        "payload": delay_params,
        "progress": ProgressReporter,
        "return": dict[str, float],
    }
    demo.handler("delay", estimated_duration=math.inf)(delay)

    # The report's steps together hold a worker no longer than a delay may.
    report_params: Any = msgspec.defstruct(
        "ReportParams",
        [("step_seconds", Annotated[float, msgspec.Meta(ge=0, le=max_delay_seconds / len(_STEPS))], 1.0)],
        bases=(ReportParams,),
    )

    async def report(payload: Any, progress: ProgressReporter) -> dict[str, object]:
        return await generate_report(payload, progress)

    report.__doc__ = generate_report.__doc__
    report.__annotations__ = {
        "payload": report_params,
        "progress": ProgressReporter,
        "return": dict[str, object],
    }
    demo.handler("generate_report", estimated_duration=120.0, retries=2)(report)
    return demo


def builtin_router(config: StreamingConfig) -> Router:
    """The handlers ``config`` asks for: ``echo`` (builtin_handlers) and the demo ones (demo_handlers)."""
    selected = Router()
    if config.builtin_handlers:
        selected.include(router)
    if config.demo_handlers:
        selected.include(demo_router(config.max_delay_seconds))
    return selected
