"""One service end to end on the stores the other tests do not run it on: SQLite and DynamoDB."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from streaming_helpers import ServerFactory

from prism.streaming.client import StreamClient


async def follow_a_job(server: Any) -> list[int]:
    async with StreamClient(server.http, token="alice-token") as client:
        assert await client.request("echo", {"n": 1}, id="store-echo") == {"n": 1}
        handle = await client.submit("delay", {"seconds": 0.3, "step": 0.1})
        assert await handle.result(timeout=30) == {"slept": 0.3}
        cancel_me = await client.submit("delay", {"seconds": 30, "step": 0.1})
        await cancel_me.acknowledged.wait()
        assert cancel_me.request_id is not None
        assert (await client.cancel(cancel_me.request_id))["status"] == "CANCELLED"
    return handle.seqs


async def test_sqlite_store(server_factory: ServerFactory, tmp_path: Path) -> None:
    server = await server_factory(f"sqlite:///{tmp_path}/streaming.db")
    assert server.service.queue.engine == "embedded"
    assert await follow_a_job(server) == [1, 2, 3, 4]


async def test_dynamodb_store(server_factory: ServerFactory, dynamodb_url: str) -> None:
    server = await server_factory(dynamodb_url)
    assert server.service.queue.engine == "dynamodb"
    assert await follow_a_job(server) == [1, 2, 3, 4]
