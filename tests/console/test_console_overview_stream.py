"""The overview's event stream never holds the sampler's lock while a chunk waits to be sent."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from starlette.responses import StreamingResponse

from console.test_console_sessions import ENV, cfg
from prism.gateway.config import parse_config
from prism.gateway.console import Console
from prism.gateway.console.core import Context
from prism.gateway.runtime import Gateway
from prism.model import Principal


async def test_a_keep_alive_waiting_for_a_slow_client_does_not_stall_the_sampler(tmp_path: Path) -> None:
    config = parse_config(
        cfg(tmp_path, admin={"enabled": True, "sample_interval": 0.05}), source="t.yaml", env=ENV
    )
    console = Console(Gateway(config, env=ENV))
    sampler = console.sampler
    _, session = console.sessions.open(
        Principal("admin", roles=frozenset({"admin"}), kind="api_key"), ("X-API-Key", "k-admin")
    )
    ctx: Any = Context(None, session, None, console.gateway, {})  # type: ignore[arg-type]
    response = await console.overview_stream(ctx)
    assert isinstance(response, StreamingResponse)
    chunks: Any = response.body_iterator
    try:
        assert (await chunks.__anext__()).startswith(b"event: sample")
        # No sample comes (the sampler is not running), so the next chunk is a keep-alive; the
        # client then stops reading, leaving the stream suspended at that chunk.
        assert await chunks.__anext__() == b": keep-alive\n\n"
        assert not sampler.changed.locked()
        await asyncio.wait_for(sampler.sample(), 2)  # would wait forever behind the held lock
    finally:
        await chunks.aclose()
        console.sessions.close_all()
