"""The seed's load test: 100 clients x 10 requests, zero errors (plus a short async variant)."""

from __future__ import annotations

import asyncio

from streaming_helpers import Server

from prism.streaming.client import StreamClient

CLIENTS = 100
REQUESTS_PER_CLIENT = 10


async def test_100_clients_x_10_echo_requests_without_errors(server: Server) -> None:
    errors: list[BaseException] = []

    async def one_client(i: int) -> int:
        done = 0
        async with StreamClient(server.http, token=f"load-{i}") as client:
            for j in range(REQUESTS_PER_CLIENT):
                try:
                    data = await client.request("echo", {"message": f"msg-{i}-{j}"}, timeout=30)
                except Exception as exc:
                    errors.append(exc)
                    continue
                assert data == {"message": f"msg-{i}-{j}"}
                done += 1
        return done

    counts = await asyncio.gather(*(one_client(i) for i in range(CLIENTS)))
    assert errors == []
    assert sum(counts) == CLIENTS * REQUESTS_PER_CLIENT


async def test_100_clients_with_async_requests_all_complete(server: Server) -> None:
    async def one_client(i: int) -> list[object]:
        async with StreamClient(server.http, token=f"load-{i}") as client:
            handles = [await client.submit("delay", {"seconds": 0.05, "step": 0.05}) for _ in range(2)]
            return list(await asyncio.gather(*(h.result(timeout=60) for h in handles)))

    results = await asyncio.gather(*(one_client(i) for i in range(CLIENTS)))
    assert results == [[{"slept": 0.05}] * 2] * CLIENTS
