"""DynamoDB through Prism beside the raw aiobotocore client doing the same operations, in one run.

Starts its own moto server (``prism.testing.servers.dynamodb``, with fake credentials),
or uses ``PRISM_TEST_DYNAMODB_URL``. Measures get, put, get_many(100) and put_many(100)
with 100 B values at concurrency 1 and 64 on one store, and on one raw client
configured alike (same pool size and timeouts, no botocore retries). Calls go in waves
of 1 or 64 concurrent calls, and the waves alternate between Prism and raw, so the two
sides share whatever load the machine has at that moment; the table shows the median
time per call with the spread over rounds, and the median of the per-round ratios.

The raw baseline writes items of the same shape as Prism's (keys, namespace index
attributes, value, etag, update time): GetItem, PutItem, one BatchGetItem of 100
keys, and four concurrent BatchWriteItem calls of 25.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession

import prism
from bench._report import environment, spread, write_section
from prism.backends.dynamodb.layout import key_of
from prism.backends.dynamodb.options import DEFAULT_MAX_CONNECTIONS, DynamoDBOptions
from prism.testing.servers._base import ServerUnavailable, env_url
from prism.testing.servers.dynamodb import DUMMY_AWS_ENVIRONMENT, DynamoDBServer, start_dynamodb

COMMAND = "make bench ARGS=dynamodb"
ROUNDS = 3
VALUE = bytes(range(100))
BATCH = 100
KEYS = 1000
#: Calls per round and side for each (operation, concurrency): moto answers in milliseconds
#: (a BatchGetItem of 100 takes ~0.1 s), so few; at concurrency 64, whole waves of 64.
CALLS = {
    ("get", 1): 90,
    ("put", 1): 90,
    ("get_many(100)", 1): 10,
    ("put_many(100)", 1): 10,
    ("get", 64): 192,
    ("put", 64): 192,
    ("get_many(100)", 64): 64,
    ("put_many(100)", 64): 64,
}
#: Targets: Prism's time per call at most this multiple of raw's.
TARGETS = {1: 1.3, 64: 1.15}
RAW_NAMESPACE = "bench-raw"
#: Seconds one call (and one connect) may take: a wave of 64 BatchGetItem calls of 100
#: keeps moto (one request at a time) and the client busy for several seconds, past the
#: 5 s and 2 s defaults.
OPERATION_TIMEOUT = 60.0

Call = Callable[[int], Awaitable[Any]]


def _keys(i: int) -> list[str]:
    start = (i * BATCH) % KEYS
    return [f"key:{(start + j) % KEYS}" for j in range(BATCH)]


def prism_calls(ns: Any) -> dict[str, Call]:
    async def get(i: int) -> None:
        await ns.get(f"key:{i % KEYS}")

    async def put(i: int) -> None:
        await ns.put(f"key:{i % KEYS}", VALUE)

    async def get_many(i: int) -> None:
        await ns.get_many(_keys(i))

    async def put_many(i: int) -> None:
        await ns.put_many([prism.Put(k, VALUE) for k in _keys(i)])

    return {"get": get, "put": put, "get_many(100)": get_many, "put_many(100)": put_many}


def raw_calls(client: Any, table: str) -> dict[str, Call]:
    def key(name: str) -> dict[str, Any]:
        return key_of(RAW_NAMESPACE, name, "")

    def item(name: str) -> dict[str, Any]:
        return {
            **key(name),
            "ns": {"S": RAW_NAMESPACE},
            "rid": {"S": name},
            "e": {"S": "0123456789abcdef0123"},
            "u": {"N": repr(time.time())},
            "v": {"B": VALUE},
        }

    async def get(i: int) -> None:
        await client.get_item(TableName=table, Key=key(f"key:{i % KEYS}"))

    async def put(i: int) -> None:
        await client.put_item(TableName=table, Item=item(f"key:{i % KEYS}"))

    async def get_many(i: int) -> None:
        await client.batch_get_item(RequestItems={table: {"Keys": [key(k) for k in _keys(i)]}})

    async def put_many(i: int) -> None:
        requests = [{"PutRequest": {"Item": item(k)}} for k in _keys(i)]
        await asyncio.gather(
            *(
                client.batch_write_item(RequestItems={table: requests[j : j + 25]})
                for j in range(0, len(requests), 25)
            )
        )

    return {"get": get, "put": put, "get_many(100)": get_many, "put_many(100)": put_many}


async def run_calls(call: Call, calls: int, tasks: int) -> float:
    """Seconds per call: ``calls`` calls split over ``tasks`` concurrent tasks."""

    async def worker(first: int) -> None:
        for i in range(first, calls, tasks):
            await call(i)

    start = time.perf_counter()
    await asyncio.gather(*(worker(t) for t in range(tasks)))
    return (time.perf_counter() - start) / calls


async def run_interleaved(prism_call: Call, raw_call: Call, calls: int, tasks: int) -> tuple[float, float]:
    """Seconds per call of each side, in waves of ``tasks`` concurrent calls that alternate between sides.

    On a shared machine the load drifts within a round; alternating wave by wave puts
    both sides under the same drift.
    """
    spent = {"prism": 0.0, "raw": 0.0}
    sides = (("prism", prism_call), ("raw", raw_call))
    for wave, first in enumerate(range(0, calls, tasks)):
        for who, call in sides if wave % 2 == 0 else sides[::-1]:
            start = time.perf_counter()
            await asyncio.gather(*(call(i) for i in range(first, min(first + tasks, calls))))
            spent[who] += time.perf_counter() - start
    return spent["prism"] / calls, spent["raw"] / calls


async def measure(url: str) -> dict[tuple[str, int], dict[str, list[float]]]:
    timeouts: dict[str, Any] = {"operation_timeout": OPERATION_TIMEOUT, "connect_timeout": OPERATION_TIMEOUT}
    options = DynamoDBOptions.parse(url, timeouts)
    config = AioConfig(
        connect_timeout=options.network.connect_timeout,
        read_timeout=options.network.operation_timeout,
        max_pool_connections=DEFAULT_MAX_CONNECTIONS,
        retries={"total_max_attempts": 1},
    )
    results: dict[tuple[str, int], dict[str, list[float]]] = {}
    async with (
        prism.connect(url, **timeouts) as store,
        AioSession().create_client(
            "dynamodb", region_name=options.region, endpoint_url=options.endpoint, config=config
        ) as client,
    ):
        ns = store.namespace(f"bench-{os.getpid()}")
        sides = {"prism": prism_calls(ns), "raw": raw_calls(client, options.table)}
        for side in sides.values():  # fill every key and warm both clients
            for i in range(KEYS // BATCH):
                await side["put_many(100)"](i)
            for name in ("get", "put"):
                await run_calls(side[name], 64, 64)
        for (name, tasks), calls in CALLS.items():
            times: dict[str, list[float]] = {"prism": [], "raw": []}
            for _ in range(ROUNDS):
                prism_time, raw_time = await run_interleaved(
                    sides["prism"][name], sides["raw"][name], calls, tasks
                )
                times["prism"].append(prism_time)
                times["raw"].append(raw_time)
            results[name, tasks] = times
            ratio = statistics.median(p / q for p, q in zip(times["prism"], times["raw"], strict=True))
            print(f"  {name:>14} x{tasks:<3} prism/raw {ratio:.3f}", file=sys.stderr)
    return results


def report(results: dict[tuple[str, int], dict[str, list[float]]], server: str) -> str:
    lines = [
        "## DynamoDB: Prism vs raw aiobotocore",
        "",
        f"Command: `{COMMAND}` ({environment('aiobotocore', 'botocore', 'moto')}, {server}, "
        f"{os.cpu_count()} CPUs shared by client and server).",
        "",
        f"100 B values, {ROUNDS} rounds; time per call in ms, median (min-max) over rounds; the ratio is the "
        "median of the per-round Prism/raw ratios. Concurrency N = waves of N concurrent calls on one store "
        "/ one raw client, the waves alternating between the two sides within a round; each side has one "
        f"client with a pool of {DEFAULT_MAX_CONNECTIONS} connections and {OPERATION_TIMEOUT:g} s "
        "connect and operation timeouts (moto serves one request at a time, so a wave of 64 batches waits). "
        "Targets: Prism/raw <= "
        f"{TARGETS[1]} at concurrency 1 and <= {TARGETS[64]} at concurrency 64.",
        "",
        "| op | concurrency | Prism ms/call | raw aiobotocore ms/call | Prism/raw | target |",
        "|---|---|---|---|---|---|",
    ]
    for (name, tasks), times in results.items():
        cells = []
        for side in ("prism", "raw"):
            median, lo, hi = spread([t * 1e3 for t in times[side]])
            cells.append(f"{median:.2f} ({lo:.2f}-{hi:.2f})")
        ratio = statistics.median(p / q for p, q in zip(times["prism"], times["raw"], strict=True))
        target = TARGETS[tasks]
        verdict = "met" if ratio <= target else "missed"
        lines.append(f"| {name} | {tasks} | {cells[0]} | {cells[1]} | {ratio:.2f} | <= {target} {verdict} |")
    lines += [
        "",
        "The raw baseline sends GetItem, PutItem, one BatchGetItem of 100 keys and four concurrent "
        "BatchWriteItem calls of 25, on items of the same shape as Prism's. Where Prism does more, it is "
        "because the contract asks for it. Its put is a PutItem with ReturnValues=ALL_OLD, so that `existed` "
        "is exact and a replaced chunked value is cleaned up; moto answers it with an extra lookup and "
        "serializes the old item (DynamoDB charges nothing for it), which is the put gap. Its put_many(100) "
        "first reads the 100 items with one consistent BatchGetItem, because BatchWriteItem returns no old "
        "items and Prism reports `existed` per key and must find replaced chunked values: one more round "
        "trip that on moto costs about as much as the writes.",
    ]
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    """Measure Prism and raw aiobotocore side by side and write the dynamodb section of docs/benchmarks.md."""
    url = env_url("dynamodb")
    server: DynamoDBServer | None = None
    if url is None:
        try:
            server = start_dynamodb()
        except ServerUnavailable as exc:
            sys.exit(f"bench dynamodb: {exc}")
        os.environ.update(DUMMY_AWS_ENVIRONMENT)
        url = server.url
        where = "moto_server from `prism.testing.servers.dynamodb`"
    else:
        where = "the server of PRISM_TEST_DYNAMODB_URL"
    try:
        results = asyncio.run(measure(url))
    finally:
        if server is not None:
            server.close()
    write_section("dynamodb", report(results, where))
