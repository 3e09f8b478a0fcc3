"""Redis Cluster: how namespaces spread over the shards, one namespace vs many, and failover.

Starts the six-node test cluster (``prism.testing.servers.redis_cluster``: three
primaries, one replica each, ``cluster-node-timeout`` 1000 ms, on one machine).

* **Spread**: the shard of each of N namespaces named ``ns-0``... (its hash tag's
  slot), from the cluster's own slot map: the share of the busiest and the idlest shard.
* **Throughput**: puts at concurrency 64 into one namespace (one shard does all the
  work) and spread over 64 namespaces (every shard works), median of the rounds.
* **Failover**: a write load of 8 writers; the primary of the namespace's slot is
  killed with SIGKILL; the replica takes over; every acknowledged write is read back.
  Without and with ``wait_replicas=1``; the killed node is restarted between rounds.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import Counter
from typing import Any

from redis.crc import key_slot

import prism
from bench._report import environment, spread, write_section
from prism.testing.failover import WriteLoad
from prism.testing.servers.redis_cluster import RedisCluster

ROUNDS = 3
PUTS = 4000
CONCURRENCY = 64
SPREAD_COUNTS = (30, 100, 1000, 10000)


def _spread(cluster: RedisCluster) -> list[str]:
    slot_owner = dict.fromkeys(range(16384), 0)
    # The slot ranges of each primary, from CLUSTER NODES of one node.
    node = next(n for n in cluster.nodes if n.alive)
    text = cluster.command(node, "CLUSTER", "NODES").decode()
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 9 or "master" not in fields[2]:
            continue
        port = int(fields[1].split("@")[0].rsplit(":", 1)[1])
        for span in fields[8:]:
            low, _, high = span.partition("-")
            for slot in range(int(low), int(high or low) + 1):
                slot_owner[slot] = port
    rows = []
    for count in SPREAD_COUNTS:
        per = Counter(slot_owner[key_slot(f"prism:{{ns-{i}}}:ids".encode())] for i in range(count))
        shares = sorted(per.values())
        fair = count / 3
        rows.append(
            f"| {count} | {' / '.join(str(s) for s in shares)} | "
            f"{shares[0] / fair:.2f} | {shares[-1] / fair:.2f} |"
        )
    return rows


async def _puts(url: str, names: list[str]) -> float:
    async with prism.connect(url) as store:
        spaces = [store.namespace(n) for n in names]

        async def run(count: int) -> None:
            queue = list(range(count))

            async def worker() -> None:
                while queue:
                    i = queue.pop()
                    await spaces[i % len(spaces)].put(f"k{i}", b"x" * 100)

            await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))

        await run(PUTS // 4)  # opens the connections to every node first: not part of the rate
        started = time.perf_counter()
        await run(PUTS)
        return PUTS / (time.perf_counter() - started)


async def _failover(cluster: RedisCluster, options: dict[str, Any]) -> tuple[int, int, int, float]:
    while True:
        name = f"busy-{uuid.uuid4().hex[:8]}"
        owner = cluster.owner(f"prism:{{{name}}}:ids")
        if cluster.replicas_of(owner):
            break
    async with prism.connect(cluster.url, **options) as store:
        ns = store.namespace(name)
        async with WriteLoad(ns) as load:
            await asyncio.sleep(1.0)
            killed = time.monotonic()
            await asyncio.to_thread(cluster.kill, owner)
            await asyncio.to_thread(cluster.wait_for_new_owner, f"prism:{{{name}}}:ids", owner)
            took = time.monotonic() - killed
            await asyncio.sleep(0.5)
        lost = await load.lost()
    cluster.start_node(owner)
    cluster.wait_until_ok()
    return len(load.acked), len(lost), len(load.errors), took


async def _run(cluster: RedisCluster) -> str:
    one, many = [], []
    names = [f"t-{uuid.uuid4().hex[:6]}-{i}" for i in range(64)]
    for _ in range(ROUNDS):
        one.append(await _puts(cluster.url, names[:1]))
        many.append(await _puts(cluster.url, names))
    failovers: list[tuple[dict[str, Any], tuple[int, int, int, float]]] = []
    for options in ({}, {"wait_replicas": 1}):
        failovers += [(options, await _failover(cluster, options)) for _ in range(ROUNDS)]
    lines = [
        "## Redis Cluster",
        "",
        "Command: `python -m bench redis_cluster`",
        f"({environment('redis')}; six local nodes, three primaries with one replica each, "
        "cluster-node-timeout 1000 ms, all on one 2-core machine)",
        "",
        "Namespaces over the three shards (each namespace is one slot):",
        "",
        "| namespaces | per shard | idlest / fair share | busiest / fair share |",
        "|---|---|---|---|",
        *_spread(cluster),
        "",
        f"Puts of 100 bytes, concurrency {CONCURRENCY}, {PUTS} per round after a warm-up, "
        f"median (min-max) of {ROUNDS}; the six servers and the client share the machine's two "
        "cores, so this shows the cost of routing, not how shards add capacity:",
        "",
        "| namespaces | puts/s |",
        "|---|---|",
    ]
    for label, values in (("1 (one shard)", one), ("64 (all shards)", many)):
        med, low, high = spread(values)
        lines.append(f"| {label} | {med:,.0f} ({low:,.0f}-{high:,.0f}) |")
    lines += [
        "",
        "Failover: 8 writers on one namespace, SIGKILL of its primary after 1 s, every",
        "acknowledged write read back after the replica took over:",
        "",
        "| option | acknowledged | lost | BackendUnavailable during the switch | takeover (s) |",
        "|---|---|---|---|---|",
    ]
    for options, (acked, lost, errors, took) in failovers:
        label = "wait_replicas=1" if options else "none"
        lines.append(f"| {label} | {acked} | {lost} | {errors} | {took:.2f} |")
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    """Start the test cluster, measure, and write the redis_cluster section of docs/benchmarks.md."""
    # The failovers make calls fail on purpose; their log lines would drown the report.
    logging.getLogger("prism.kv").setLevel(logging.CRITICAL)
    cluster = RedisCluster.local()
    try:
        section = asyncio.run(_run(cluster))
    finally:
        cluster.close()
    print(section)
    write_section("redis_cluster", section)
