"""A streaming handler for the console tests: ``always_fails`` fails every attempt (a dead letter)."""

from __future__ import annotations

from typing import Any

from prism.streaming.handlers import Router

router = Router()


@router.handler("always_fails", estimated_duration=0.0, retries=0)
async def always_fails(payload: Any) -> None:
    """Fail for good, so the request becomes a dead letter."""
    raise RuntimeError("this handler always fails")
