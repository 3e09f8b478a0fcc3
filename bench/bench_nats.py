"""NATS JetStream KV through Prism beside the raw nats-py KeyValue API, in one run.

Starts its own ``nats-server -js`` (``prism.testing.servers.nats``), then measures
get / put / get_many(100) / put_many(100) with 100 B values at concurrency 1 and 64.
The raw side does the same work with nats-py's ``KeyValue`` on a bucket of the same
configuration: ``kv.get`` / ``kv.put``, and 100 of them under ``asyncio.gather`` for
the batches. Each task works on its own keys. Because every Prism write is a
compare-and-set on the key's revision (for etags and ``existed``), the puts are also
timed as raw compare-and-sets (``kv.update(key, value, last=revision)``), the floor
for that design. Prism and raw rounds alternate, so drift on a shared machine hits
both; each cell is the median time per key over the rounds, with the spread.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import nats
from nats.js.kv import KeyValue

import prism
from bench._report import environment, spread, write_section
from prism.kv.namespace import Namespace
from prism.model import Put
from prism.testing.servers.nats import NatsServer

ROUNDS = 7
#: Single ops per measured round (split across the tasks).
SINGLE_OPS = 1536
#: Batch calls per measured round (split across the tasks).
BATCH_CALLS = 64
BATCH = 100
TASKS = (1, 64)
#: Distinct keys: every task of the widest run has its own.
KEYS = [f"key-{i}" for i in range(max(SINGLE_OPS, max(TASKS) * BATCH))]
VALUE = bytes(range(100))
COMMAND = "make bench ARGS=nats"
#: Prism's time per key may be at most this multiple of the raw driver's.
TARGETS = {1: 1.3, 64: 1.15}

#: One call of a benchmark op by task ``task``, its ``n``-th call.
Op = Callable[[int, int], Awaitable[None]]


def _single_key(task: int, n: int, tasks: int) -> str:
    return KEYS[task * (SINGLE_OPS // tasks) + n]


def _batch_keys(task: int) -> list[str]:
    return KEYS[task * BATCH : (task + 1) * BATCH]


def prism_ops(ns: Namespace, tasks: int) -> dict[str, Op]:
    async def get(task: int, n: int) -> None:
        await ns.get(_single_key(task, n, tasks))

    async def put(task: int, n: int) -> None:
        await ns.put(_single_key(task, n, tasks), VALUE)

    async def get_many(task: int, n: int) -> None:
        await ns.get_many(_batch_keys(task))

    async def put_many(task: int, n: int) -> None:
        await ns.put_many([Put(k, VALUE) for k in _batch_keys(task)])

    return {"get": get, "put": put, "get_many(100)": get_many, "put_many(100)": put_many}


def raw_ops(kv: KeyValue, tasks: int) -> dict[str, Op]:
    async def get(task: int, n: int) -> None:
        await kv.get(_single_key(task, n, tasks))

    async def put(task: int, n: int) -> None:
        await kv.put(_single_key(task, n, tasks), VALUE)

    async def get_many(task: int, n: int) -> None:
        await asyncio.gather(*(kv.get(k) for k in _batch_keys(task)))

    async def put_many(task: int, n: int) -> None:
        await asyncio.gather(*(kv.put(k, VALUE) for k in _batch_keys(task)))

    return {"get": get, "put": put, "get_many(100)": get_many, "put_many(100)": put_many}


def cas_ops(kv: KeyValue, revisions: dict[str, int], tasks: int) -> dict[str, Op]:
    async def update(key: str) -> None:
        revisions[key] = await kv.update(key, VALUE, last=revisions[key])

    async def put(task: int, n: int) -> None:
        await update(_single_key(task, n, tasks))

    async def put_many(task: int, n: int) -> None:
        await asyncio.gather(*(update(k) for k in _batch_keys(task)))

    return {"put": put, "put_many(100)": put_many}


async def timed(call: Op, per_call: int, tasks: int) -> float:
    """Microseconds per key for one round of ``call`` run by ``tasks`` concurrent tasks."""
    each = (SINGLE_OPS if per_call == 1 else BATCH_CALLS) // tasks

    async def task(t: int) -> None:
        for n in range(each):
            await call(t, n)

    start = time.perf_counter()
    await asyncio.gather(*(task(t) for t in range(tasks)))
    return (time.perf_counter() - start) / (each * tasks * per_call) * 1e6


async def _fill_raw(kv: KeyValue) -> dict[str, int]:
    revisions: dict[str, int] = {}
    for start in range(0, len(KEYS), 500):
        chunk = KEYS[start : start + 500]
        revs = await asyncio.gather(*(kv.put(k, VALUE) for k in chunk))
        revisions.update(zip(chunk, revs, strict=True))
    return revisions


async def measure(url: str) -> dict[tuple[str, int], dict[str, list[float]]]:
    """Per (op, concurrency), the time per key of each side in every round."""
    nc = await nats.connect(url)
    js = nc.jetstream()
    raw = await js.create_key_value(bucket="raw_bench", history=1, direct=True)
    cas = await js.create_key_value(bucket="raw_cas_bench", history=1, direct=True)
    await _fill_raw(raw)
    revisions = await _fill_raw(cas)
    results: dict[tuple[str, int], dict[str, list[float]]] = {}
    async with prism.connect(url) as store:
        ns = store.namespace("bench")
        for start in range(0, len(KEYS), 1000):
            await ns.put_many(Put(k, VALUE) for k in KEYS[start : start + 1000])
        for op in ("get", "put", "get_many(100)", "put_many(100)"):
            per_call = 1 if op in ("get", "put") else BATCH
            for tasks in TASKS:
                sides = {
                    "prism": prism_ops(ns, tasks),
                    "raw nats-py": raw_ops(raw, tasks),
                    "raw compare-and-set": cas_ops(cas, revisions, tasks),
                }
                calls = {side: table[op] for side, table in sides.items() if op in table}
                cell = results[(op, tasks)] = {side: [] for side in calls}
                for call in calls.values():
                    await timed(call, per_call, tasks)  # warm-up
                for _ in range(ROUNDS):
                    for side, call in calls.items():
                        cell[side].append(await timed(call, per_call, tasks))
    await nc.close()
    return results


def fmt(values: list[float] | None) -> str:
    if not values:
        return "-"
    median, lo, hi = spread(values)
    return f"{median:.1f} ({lo:.1f}-{hi:.1f})"


def report(results: dict[tuple[str, int], dict[str, list[float]]], server_version: str) -> str:
    lines = [
        f"#### 100 B values: µs per key, median of {ROUNDS} rounds (min-max)",
        "",
        "| op | concurrency | prism | raw nats-py | prism ÷ raw | target | raw compare-and-set "
        "| prism ÷ raw CAS |",
        "|---|---|---|---|---|---|---|---|",
    ]
    missed = []
    for (op, tasks), cell in results.items():
        prism_time = spread(cell["prism"])[0]
        ratio = prism_time / spread(cell["raw nats-py"])[0]
        target = TARGETS[tasks]
        verdict = "met" if ratio <= target else "missed"
        cas = cell.get("raw compare-and-set")
        cas_ratio = f"{prism_time / spread(cas)[0]:.2f}" if cas else "-"
        lines.append(
            f"| {op} | {tasks} | {fmt(cell['prism'])} | {fmt(cell['raw nats-py'])} | {ratio:.2f} | "
            f"<= {target} ({verdict}) | {fmt(cas)} | {cas_ratio} |"
        )
        if ratio > target:
            missed.append(
                f"- {op} at concurrency {tasks}: {ratio:.2f}x, {ratio / target - 1:.0%} over the target"
            )
    return "\n\n".join(
        [
            "## NATS JetStream KV: Prism beside raw nats-py",
            f"Command: `{COMMAND}`. Measured {environment('prism', 'nats-py')}, nats-server {server_version} "
            "(local, file storage), one client connection per side, each task on its own keys.",
            "Prism does per call what the raw side does not: validation, metrics and a trace span, a "
            "deadline with retries, an envelope with etag, expiry and content type, and a "
            "compare-and-set on the key's revision, so that etags and `existed` are exact (the revision "
            "is remembered from the key's last write or read, so a put stays one round trip). The raw "
            "batches are 100 concurrent `kv.get`/`kv.put`; Prism pipelines a batch on its connection. "
            "The last columns time the raw compare-and-set, `kv.update(key, value, last=revision)`.",
            "\n".join(lines),
            "Targets: Prism at most 1.3x the raw driver's time per key at concurrency 1, at most 1.15x at "
            "concurrency 64. " + ("All met." if not missed else "Missed:\n\n" + "\n".join(missed)),
        ]
    )


async def _server_version(url: str) -> str:
    nc = await nats.connect(url)
    version = nc.connected_server_version
    await nc.close()
    return f"{version.major}.{version.minor}.{version.patch}"


def main(argv: list[str]) -> None:
    server = NatsServer.local()
    try:
        results = asyncio.run(measure(server.url))
        version = asyncio.run(_server_version(server.url))
    finally:
        server.close()
    markdown = report(results, version)
    write_section("nats", markdown)
    print(markdown)
