"""4 MiB values through Prism on NATS beside Redis, in one run (``make bench ARGS=large_values``).

Starts its own servers: a ``nats-server -js`` with NATS's default 1 MiB max_payload,
where a 4 MiB value goes to five chunk messages behind a manifest; a second one with
an 8 MiB max_payload, where the same value is one message; and a ``redis-server``.
Each side is one Prism store. In a round every side puts ``CALLS`` values of 4 MiB
one after the other (each an overwrite of one of ``KEYS`` keys, so replaced chunks
are purged as in real use), then gets them back; the side going first rotates from
round to round, so the ratios compare runs made moments apart.
"""

from __future__ import annotations

import os
import random
import statistics
import time
from collections.abc import Callable
from typing import Any

import prism
from bench._network import _event_loop
from bench._report import environment, spread, write_section
from prism.kv.namespace import Namespace
from prism.testing.servers.nats import NatsServer
from prism.testing.servers.redis import RedisServer

MiB = 1024 * 1024
#: Bytes per value.
SIZE = 4 * MiB
#: Puts (and then gets) per side and round.
CALLS = 16
#: Keys the puts cycle through.
KEYS = 4
ROUNDS = 7
#: The NATS server with room for a 4 MiB value in one message.
LARGE_MAX_PAYLOAD = 8 * MiB
SIDES = ("nats (chunks)", "nats (one message)", "redis")


async def _time(ns: Namespace, values: list[bytes]) -> tuple[float, float]:
    """Seconds per put and per get of ``CALLS`` calls on ``ns``."""
    start = time.perf_counter()
    for i in range(CALLS):
        await ns.put(f"k{i % KEYS}", values[i % len(values)])
    put = (time.perf_counter() - start) / CALLS
    start = time.perf_counter()
    for i in range(CALLS):
        item = await ns.get(f"k{i % KEYS}")
        assert item is not None and len(item.value) == SIZE
    return put, (time.perf_counter() - start) / CALLS


async def _measure(urls: dict[str, tuple[str, dict[str, Any]]]) -> dict[str, dict[str, list[float]]]:
    values = [random.Random(seed).randbytes(SIZE) for seed in range(3)]
    times: dict[str, dict[str, list[float]]] = {side: {"put": [], "get": []} for side in SIDES}
    stores = {side: prism.connect(url, **options) for side, (url, options) in urls.items()}
    try:
        for store in stores.values():
            await store.open()
        spaces = {side: store.namespace("large-values-bench") for side, store in stores.items()}
        for ns in spaces.values():
            await _time(ns, values)  # warm-up: buckets, connections, first writes
        for round_ in range(ROUNDS):
            order = SIDES[round_ % len(SIDES) :] + SIDES[: round_ % len(SIDES)]
            for side in order:
                put, get = await _time(spaces[side], values)
                times[side]["put"].append(put)
                times[side]["get"].append(get)
    finally:
        for store in stores.values():
            await store.close()
    return times


def _ratio(times: dict[str, dict[str, list[float]]], op: str, side: str) -> float:
    pairs = zip(times[side][op], times["redis"][op], strict=True)
    return statistics.median(p / q for p, q in pairs)


def _render(times: dict[str, dict[str, list[float]]], loop_name: str, nats_version: str) -> str:
    rows = ["| op | side | ms per call | / redis |", "|---|---|---|---|"]
    for op in ("put", "get"):
        for side in SIDES:
            median, low, high = (t * 1000 for t in spread(times[side][op]))
            ratio = "1" if side == "redis" else f"{_ratio(times, op, side):.2f}"
            rows.append(f"| {op} | {side} | {median:.1f} ({low:.1f}-{high:.1f}) | {ratio} |")
    packages = environment("prism", "nats-py", "redis", "msgspec", "uvloop")
    return "\n\n".join(
        [
            "## 4 MiB values: NATS in chunks beside one message and Redis",
            f"Command: `make bench ARGS=large_values` ({packages}, event loop {loop_name}, local "
            f"`nats-server -js` {nats_version} (file storage) and `redis-server` from "
            f"`prism.testing.servers`, {os.cpu_count()} CPUs shared by the client, the servers and "
            "whatever else ran).",
            f"4 MiB random values, {CALLS} sequential puts then {CALLS} gets per side and round, "
            f"{ROUNDS} rounds; time per call in ms, median (min-max) over rounds; a ratio is the median "
            "of the per-round ratios to Redis. *nats (chunks)*: NATS's default 1 MiB max_payload, so "
            "each put publishes five chunks and then the manifest by compare-and-set, and purges the "
            "replaced value's chunks; each get reads the manifest, then the five chunks in one "
            "pipelined round trip. *nats (one message)*: a server with an 8 MiB max_payload.",
            "\n".join(rows),
        ]
    )


def main(argv: list[str]) -> None:
    loop_name, run = _event_loop()
    servers: list[Callable[[], None]] = []
    try:
        chunked = NatsServer.local()
        servers.append(chunked.close)
        single = NatsServer.local(max_payload=LARGE_MAX_PAYLOAD)
        servers.append(single.close)
        redis = RedisServer.local()
        servers.append(redis.close)
        urls: dict[str, tuple[str, dict[str, Any]]] = {
            "nats (chunks)": (chunked.url, {}),
            "nats (one message)": (single.url, {"max_payload": LARGE_MAX_PAYLOAD}),
            "redis": (redis.url, {}),
        }
        times = run(_measure(urls))

        async def version() -> str:
            async with prism.connect(chunked.url) as store:
                return str((await store.health())["details"]["server_version"])

        nats_version = run(version())
    finally:
        for close in reversed(servers):
            close()
    markdown = _render(times, loop_name, nats_version)
    print(markdown)
    write_section("large_values", markdown)
