"""DynamoDB through Prism beside the raw aiobotocore client doing the same operations, in one run.

Starts its own moto server (``prism.testing.servers.dynamodb``, with fake credentials),
or uses ``PRISM_TEST_DYNAMODB_URL``. The raw client is configured as Prism's (same
pool size and timeouts, no botocore retries). moto answers in milliseconds and
serves one request at a time, so the rounds are few and the calls go in waves that
alternate between the sides (the method is bench._network's).

The raw baseline writes items of the same shape as Prism's (keys, namespace index
attributes, value, etag, update time): GetItem, PutItem, one BatchGetItem of 100
keys, and four concurrent BatchWriteItem calls of 25.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession

import prism
from bench._network import (
    MILLIS,
    TARGETS,
    VALUE,
    Baseline,
    Calls,
    Keys,
    NetworkBench,
    ratio,
    run_waves,
    table,
)
from prism.backends.dynamodb.layout import key_of
from prism.backends.dynamodb.options import DEFAULT_MAX_CONNECTIONS, DynamoDBOptions
from prism.testing.servers.dynamodb import DUMMY_AWS_ENVIRONMENT, DynamoDBServer, start_dynamodb

RAW_NAMESPACE = "bench-raw"
#: Seconds one call (and one connect) may take: a wave of 64 BatchGetItem calls of 100
#: keeps moto (one request at a time) and the client busy for several seconds, past the
#: 5 s and 2 s defaults.
OPERATION_TIMEOUT = 60.0
TIMEOUTS = {"operation_timeout": OPERATION_TIMEOUT, "connect_timeout": OPERATION_TIMEOUT}
#: Items per BatchWriteItem call, DynamoDB's limit.
WRITE_BATCH = 25


def raw_calls(client: Any, table_name: str, keys: Keys) -> Calls:
    """GetItem, PutItem, BatchGetItem and BatchWriteItem on items shaped as Prism's."""

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

    def put_many(i: int) -> Any:
        requests = [{"PutRequest": {"Item": item(k)}} for k in keys.batch(i)]
        return asyncio.gather(
            *(
                client.batch_write_item(RequestItems={table_name: requests[j : j + WRITE_BATCH]})
                for j in range(0, len(requests), WRITE_BATCH)
            )
        )

    return table(
        get=lambda i: client.get_item(TableName=table_name, Key=key(keys.one(i))),
        put=lambda i: client.put_item(TableName=table_name, Item=item(keys.one(i))),
        get_many=lambda i: client.batch_get_item(
            RequestItems={table_name: {"Keys": [key(k) for k in keys.batch(i)]}}
        ),
        put_many=put_many,
    )


class DynamoDBBench(NetworkBench):
    name = "dynamodb"
    title = "DynamoDB: Prism vs raw aiobotocore"
    packages = ("aiobotocore", "botocore", "moto")
    server = "moto_server from `prism.testing.servers.dynamodb`"
    baselines = (Baseline("raw aiobotocore", "raw"),)
    #: moto answers in milliseconds (a BatchGetItem of 100 takes ~0.1 s), so few calls;
    #: at concurrency 64, whole waves of 64.
    calls = {
        ("get", 1): 90,
        ("put", 1): 90,
        ("get_many(100)", 1): 10,
        ("put_many(100)", 1): 10,
        ("get", 64): 192,
        ("put", 64): 192,
        ("get_many(100)", 64): 64,
        ("put_many(100)", 64): 64,
    }
    rounds = 3
    unit = MILLIS
    waves = True
    options = TIMEOUTS
    clients = (
        f"Each side has one client with a pool of {DEFAULT_MAX_CONNECTIONS} connections and "
        f"{OPERATION_TIMEOUT:g} s connect and operation timeouts (moto serves one request at a time, so a "
        "wave of 64 batches waits)."
    )
    notes = (
        "The raw baseline sends GetItem, PutItem, one BatchGetItem of 100 keys and four concurrent "
        "BatchWriteItem calls of 25, on items of the same shape as Prism's. Where Prism does more, it is "
        "because the contract asks for it. Its put is a PutItem with ReturnValues=ALL_OLD, so that `existed` "
        "is exact and a replaced chunked value is cleaned up; moto answers it with an extra lookup and "
        "serializes the old item (DynamoDB charges nothing for it), which is the put gap. Its put_many(100) "
        "first reads the 100 items with one consistent BatchGetItem, because BatchWriteItem returns no old "
        "items and Prism reports `existed` per key and must find replaced chunked values: one more round "
        "trip that on moto costs about as much as the writes. The store option `blind_batch_puts=true` "
        "makes that read optional (below).",
    )
    _url = ""

    def start_server(self) -> DynamoDBServer:
        server = start_dynamodb()
        os.environ.update(DUMMY_AWS_ENVIRONMENT)
        return server

    async def extra(self, store: prism.Store, namespace: str, sides: dict[str, Calls]) -> str:
        """put_many(100) on a store with ``blind_batch_puts=true``, beside the same raw calls."""
        raw = sides[self.baselines[0].label]["put_many(100)"]
        rows = []
        async with prism.connect(self._url, blind_batch_puts=True, **TIMEOUTS) as blind:
            ns = blind.namespace(namespace)

            def put_many(i: int) -> Any:
                return ns.put_many([prism.Put(k, VALUE) for k in self.keys.batch(i)])

            for tasks, count in ((1, self.calls["put_many(100)", 1]), (64, self.calls["put_many(100)", 64])):
                await run_waves({"prism": put_many}, tasks, tasks)  # warm-up
                times: dict[str, list[float]] = {"prism": [], "raw": []}
                for _ in range(self.rounds):
                    spent = await run_waves({"prism": put_many, "raw": raw}, count, tasks)
                    for who, seconds in spent.items():
                        times[who].append(seconds)
                main, target = ratio(times, "raw"), TARGETS[tasks]
                ours, theirs = (MILLIS.cell("put_many(100)", times[who]) for who in ("prism", "raw"))
                rows.append(
                    f"| put_many(100), blind_batch_puts | {tasks} | {ours} | {theirs} | {main:.2f} | "
                    f"<= {target} {'met' if main <= target else 'missed'} |"
                )
        return "\n".join(
            [
                "With `blind_batch_puts=true` (`dynamodb://TABLE?blind_batch_puts=true`), put_many's "
                "unconditional puts skip that read and report `existed=False` (the store then refuses values "
                "that would be chunked); the same rounds and waves, against the same raw calls:",
                "",
                "| op | concurrency | Prism ms/call | raw aiobotocore ms/call | Prism/raw | target |",
                "|---|---|---|---|---|---|",
                *rows,
            ]
        )

    @asynccontextmanager
    async def raw(self, url: str) -> AsyncIterator[list[Calls]]:
        self._url = url
        options = DynamoDBOptions.parse(url, TIMEOUTS)
        config = AioConfig(
            connect_timeout=options.network.connect_timeout,
            read_timeout=options.network.operation_timeout,
            max_pool_connections=DEFAULT_MAX_CONNECTIONS,
            retries={"total_max_attempts": 1},
        )
        async with AioSession().create_client(
            "dynamodb", region_name=options.region, endpoint_url=options.endpoint, config=config
        ) as client:
            yield [raw_calls(client, options.table, self.keys)]


def main(argv: list[str]) -> None:
    """Measure Prism and raw aiobotocore side by side and write the dynamodb section of docs/benchmarks.md."""
    DynamoDBBench().run()
