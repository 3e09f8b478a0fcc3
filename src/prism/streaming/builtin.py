"""The handlers every service registers by default: ``echo``, ``delay`` and ``generate_report``."""

from __future__ import annotations

import asyncio
import hashlib
import math
from datetime import date
from typing import Annotated, Literal

import msgspec

from prism.streaming.handlers import ProgressReporter, Router

__all__ = ["DelayParams", "ReportParams", "router"]

router = Router()

#: Longest ``delay`` accepted, in seconds.
MAX_DELAY_SECONDS = 3600.0


@router.handler("echo", estimated_duration=0.0)
async def echo(payload: msgspec.Raw) -> msgspec.Raw:
    """Answer at once with the payload as ``data`` (a liveness and round-trip check)."""
    return payload


class DelayParams(msgspec.Struct, forbid_unknown_fields=True):
    seconds: Annotated[float, msgspec.Meta(ge=0, le=MAX_DELAY_SECONDS)]
    #: Seconds between two progress reports.
    step: Annotated[float, msgspec.Meta(ge=0.01, le=60)] = 1.0


@router.handler("delay", estimated_duration=math.inf)
async def delay(payload: DelayParams, progress: ProgressReporter) -> dict[str, float]:
    """Sleep ``seconds``, reporting progress every ``step`` (1 s), then answer ``{"slept": seconds}``."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    done = 0.0
    while done < payload.seconds:
        # Sleep to the next step boundary measured from the start, so reports do not drift.
        target = min(payload.seconds, done + payload.step)
        await progress.sleep(start + target - loop.time())
        done = target
        await progress.report(
            round(100 * done / payload.seconds, 2), f"slept {done:g} of {payload.seconds:g} s"
        )
    return {"slept": payload.seconds}


class ReportParams(msgspec.Struct, forbid_unknown_fields=True):
    start_date: date
    end_date: date
    format: Literal["pdf", "csv", "xlsx"] = "pdf"
    #: Seconds each of the report's steps takes (a demo knob).
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


@router.handler("generate_report", estimated_duration=120.0, retries=2)
async def generate_report(payload: ReportParams, progress: ProgressReporter) -> dict[str, object]:
    """A demo report: four steps with progress, then a download URL, the row and page counts."""
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
