"""Signals: the read latency tail with hedging against a store that has one, and what hedging costs.

``python -m bench signals [--calls N] [--rounds R] [--tail-share S] [--tail-ms T]``

One ``prism serve`` whose store is the delayed memory store of prism.testing: a share
``S`` (2%) of its reads take ``T`` ms (100), the others none. The namespace declares
``latency_p99_ms: 20``. For each client (``prism+http://`` and ``prism://``), ``N``
sequential ``get`` calls with signals (deadline, one hedge) and ``N`` with
``signals=false``, in interleaved rounds. Reported: p50, p99 and p99.9 of each, and the
extra requests hedging sent per 100 reads.

Target: with signals, the p99 of a store with a 2% tail of 100 ms at most a third of the
p99 without, for at most 5 extra requests per 100 reads.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from prometheus_client import REGISTRY

import prism
from bench._report import environment, spread, write_section
from prism.testing.servers._base import free_port

PRISM = str(Path(sys.executable).with_name("prism"))
NAMESPACE = "bench"
SCHEMES = ("prism+http", "prism")
HEADER = (
    "| client | p50 | p99, median of rounds (min-max) | p99.9 | p99 ratio (median of rounds) "
    "| extra requests per 100 reads | timeouts |\n|---|---|---|---|---|---|---|"
)


def _start(directory: Path, tail_share: float, tail_ms: float) -> tuple[subprocess.Popen[bytes], int, int]:
    config = directory / "prism.yaml"
    config.write_text(
        "stores:\n"
        f"  slow: {{url: 'memory://bench?tail_share={tail_share}&tail_delay={tail_ms / 1000}',"
        " backend: 'prism.testing.slow:DelayedBackend'}\n"
        f"namespaces: [{{name: {NAMESPACE}, needs: {{latency_p99_ms: 20}}}}]\n"
        "audit: {sink: none}\nserver: {access_log: false, log_level: warning}\n"
    )
    port, grpc_port = free_port(), free_port()
    log = directory / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [PRISM, "serve", "--config", str(config), "--port", str(port), "--grpc-port", str(grpc_port)],
            cwd=directory,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 30
    while b"Prism gRPC listening" not in log.read_bytes():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise SystemExit(f"prism serve did not start: {log.read_text()}")
        time.sleep(0.1)
    httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).raise_for_status()
    return proc, port, grpc_port


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _hedges(scheme: str) -> float:
    return (
        REGISTRY.get_sample_value("prism_client_hedged_reads_total", {"backend": scheme, "outcome": "sent"})
        or 0.0
    )


async def _measure(url: str, scheme: str, calls: int, rounds: int) -> dict[str, object]:
    """Per-call seconds with and without signals, interleaved, and the hedges sent per read."""
    times: dict[str, list[float]] = {"on": [], "off": []}
    p99s: dict[str, list[float]] = {"on": [], "off": []}
    hedges = 0.0
    timeouts = 0
    async with (
        prism.connect(url) as with_signals,
        prism.connect(url, signals=False) as without,
    ):
        stores = {"on": with_signals, "off": without}
        await with_signals.namespace(NAMESPACE).put("key", b"v" * 100)
        for store in stores.values():
            for _ in range(100):  # warm up (and let the gateway measure the store)
                try:
                    await store.namespace(NAMESPACE).get("key")
                except prism.Timeout:
                    pass
        for _ in range(rounds):
            for mode, store in stores.items():
                ns = store.namespace(NAMESPACE)
                before = _hedges(scheme)
                this_round: list[float] = []
                for _ in range(calls):
                    started = time.perf_counter()
                    try:
                        await ns.get("key")
                    except prism.Timeout:
                        timeouts += 1
                    this_round.append(time.perf_counter() - started)
                if mode == "on":
                    hedges += _hedges(scheme) - before
                times[mode] += this_round
                p99s[mode].append(_quantile(this_round, 0.99))
        advice = with_signals.backend.signals.peek(NAMESPACE)
    return {
        "times": times,
        "p99s": p99s,
        "hedges_per_100": 100 * hedges / (calls * rounds),
        "timeouts": timeouts,
        "hedge_after_ms": advice.hedge_after_ms if advice else None,
        "latency_max_ms": advice.latency_max_ms if advice else None,
    }


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _ms(value: float) -> str:
    return f"{value * 1000:.1f} ms"


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench signals", description=__doc__)
    parser.add_argument("--calls", type=int, default=1000, help="gets per client per round (default 1000)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    parser.add_argument("--tail-share", type=float, default=0.02, help="share of slow reads (default 0.02)")
    parser.add_argument("--tail-ms", type=float, default=100.0, help="how slow they are (default 100)")
    args = parser.parse_args([a for a in argv if a != "signals"])
    command = (
        f"python -m bench signals --calls={args.calls} --rounds={args.rounds} "
        f"--tail-share={args.tail_share} --tail-ms={args.tail_ms:g}"
    )
    load_before = os.getloadavg()
    results: dict[str, dict[str, object]] = {}
    with tempfile.TemporaryDirectory() as raw:
        proc, port, grpc_port = _start(Path(raw), args.tail_share, args.tail_ms)
        try:
            urls = {"prism+http": f"prism+http://127.0.0.1:{port}", "prism": f"prism://127.0.0.1:{grpc_port}"}
            for scheme in SCHEMES:
                results[scheme] = asyncio.run(_measure(urls[scheme], scheme, args.calls, args.rounds))
        finally:
            _stop(proc)
    load_after = os.getloadavg()
    rows = []
    verdicts = []
    for scheme in SCHEMES:
        r = results[scheme]
        times = r["times"]
        p99s = r["p99s"]
        assert isinstance(times, dict) and isinstance(p99s, dict)
        on, off = times["on"], times["off"]
        ratio = statistics.median(a / b for a, b in zip(p99s["on"], p99s["off"], strict=True))
        mid_on, low_on, high_on = spread(p99s["on"])
        mid_off, low_off, high_off = spread(p99s["off"])
        rows.append(
            f"| `{scheme}://` | {_ms(_quantile(on, 0.5))} / {_ms(_quantile(off, 0.5))} "
            f"| {mid_on * 1000:.1f} ms ({low_on * 1000:.1f}-{high_on * 1000:.1f}) "
            f"/ {mid_off * 1000:.1f} ms ({low_off * 1000:.1f}-{high_off * 1000:.1f}) "
            f"| {_ms(_quantile(on, 0.999))} / {_ms(_quantile(off, 0.999))} "
            f"| {ratio:.2f}x | {r['hedges_per_100']:.1f} | {r['timeouts']} |"
        )
        met = ratio <= 1 / 3 and float(str(r["hedges_per_100"])) <= 5
        verdicts.append(
            f"`{scheme}://`: p99 ratio {ratio:.2f}x (target <= 0.33x), {r['hedges_per_100']:.1f} extra "
            f"requests per 100 reads (target <= 5): {'met' if met else 'missed'}; signals held: "
            f"hedge after {r['hedge_after_ms']} ms, deadline {r['latency_max_ms']} ms."
        )
    section = f"""## Signals: hedged reads against a store with a latency tail

`{command}` ({environment("httpx", "grpcio", "uvloop")}; load average
{load_before[0]:.2f} before, {load_after[0]:.2f} after, on a 2-core machine shared with other work).
One `prism serve` on the delayed memory store of `prism.testing.slow` ({args.tail_share:.0%} of reads
take {args.tail_ms:g} ms, the others none), a namespace declaring `latency_p99_ms: 20`; per client,
{args.calls} sequential `get` calls with signals and {args.calls} with `signals=false` in each of
{args.rounds} interleaved rounds. Each cell: with signals / without.

{HEADER}
{chr(10).join(rows)}

{chr(10).join("- " + v for v in verdicts)}

Timeouts are reads with signals that passed the deadline (both the read and its hedge were
slow, or the machine was): the price of a declared 20 ms need on a store that sometimes takes
100 ms. Without signals the backend's own 10 s deadline applies and no read times out.
"""
    write_section("signals", section)
