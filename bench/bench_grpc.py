"""gRPC: ``prism://`` against a raw stub call, and the gateway's Get throughput against a floor server.

``python -m bench grpc [--calls N] [--rounds R] [--concurrency C]``

1. Latency: one ``get`` at a time through ``prism.connect("prism://...")`` (the whole
   library: validation, instrumentation, the backend's retry loop) against a raw unary
   ``prism.v1.KeyValue/Get`` call with the generated stub, to the same ``prism serve``.
   Target: ``prism://`` <= 1.3x the raw call.
2. Throughput: Get calls kept ``C`` at a time in flight against ``prism serve``'s gRPC
   port, and against a minimal ``grpc.aio`` server that answers every call with the same
   response bytes (no pipeline, no store): calls per second, and calls per CPU-second
   each server used. Target: >= 0.6x the floor.

Both are measured in interleaved rounds (A, B, A, B...) so load on the shared machine
hits both sides alike; the section reports medians with their spread.
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
from typing import Any

import httpx
from grpc import aio

import prism
from bench._report import environment, spread, write_section
from prism.grpc._gen.prism.v1 import keyvalue_pb2 as pb
from prism.grpc._gen.prism.v1 import keyvalue_pb2_grpc as stubs
from prism.testing.servers._base import free_port

PRISM = str(Path(sys.executable).with_name("prism"))
VALUE = b"v" * 100
NAMESPACE = "bench"

#: A grpc.aio server answering every /prism.v1.KeyValue/Get with the bytes given in hex.
FLOOR_SERVER = """
import asyncio, sys
import grpc
from grpc import aio
try:
    import uvloop
    uvloop.install()
except ImportError:
    pass
port, answer = int(sys.argv[1]), bytes.fromhex(sys.argv[2])

async def get(request, context):
    return answer

async def main():
    server = aio.server()
    handler = grpc.unary_unary_rpc_method_handler(get)
    service = grpc.method_handlers_generic_handler("prism.v1.KeyValue", {"Get": handler})
    server.add_generic_rpc_handlers((service,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print("ready", flush=True)
    await server.wait_for_termination()

asyncio.run(main())
"""


def _start_prism(directory: Path) -> tuple[subprocess.Popen[bytes], int, int]:
    config = directory / "prism.yaml"
    config.write_text(
        f"stores: {{main: 'memory://'}}\nnamespaces: [{{name: {NAMESPACE}}}]\n"
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


def _start_floor(answer: bytes) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", FLOOR_SERVER, str(port), answer.hex()], stdout=subprocess.PIPE
    )
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != b"ready":
        raise SystemExit("the floor server did not start")
    return proc, port


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


async def _latency(grpc_port: int, calls: int, rounds: int) -> dict[str, list[float]]:
    """Seconds per call, one round each of prism:// and the raw stub, interleaved."""
    out: dict[str, list[float]] = {"prism": [], "raw": []}
    async with prism.connect(f"prism://127.0.0.1:{grpc_port}") as store:
        ns = store.namespace(NAMESPACE)
        await ns.put("key", VALUE)
        async with aio.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            stub = stubs.KeyValueStub(channel)
            request = pb.GetRequest(namespace=NAMESPACE, key="key")
            for _ in range(calls // 10):  # warm both paths
                await ns.get("key")
                await stub.Get(request)
            for _ in range(rounds):
                start = time.perf_counter()
                for _ in range(calls):
                    await ns.get("key")
                out["prism"].append((time.perf_counter() - start) / calls)
                start = time.perf_counter()
                for _ in range(calls):
                    await stub.Get(request)
                out["raw"].append((time.perf_counter() - start) / calls)
    return out


def _cpu_seconds(pid: int) -> float:
    """User and system CPU time the process ``pid`` has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _round(port: int, pid: int, calls: int, concurrency: int) -> tuple[float, float]:
    """(calls per second, server CPU seconds per call) of one throughput round."""
    before = _cpu_seconds(pid)
    rate = asyncio.run(_throughput(port, calls, concurrency))
    # The warm-up round is counted too: both rounds ran the same calls.
    return rate, (_cpu_seconds(pid) - before) / (2 * calls)


async def _throughput(port: int, calls: int, concurrency: int) -> float:
    """Get calls per second against ``port``, ``concurrency`` in flight."""
    async with aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = stubs.KeyValueStub(channel)
        request = pb.GetRequest(namespace=NAMESPACE, key="key")
        left = calls

        async def worker() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                await stub.Get(request)

        await asyncio.gather(*(worker() for _ in range(concurrency)))  # warm-up round
        left = calls
        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return calls / (time.perf_counter() - start)


def fmt_us(values: list[float]) -> str:
    mid, low, high = spread([v * 1e6 for v in values])
    return f"{mid:.0f} µs ({low:.0f}-{high:.0f})"


def fmt_rate(values: list[float]) -> str:
    mid, low, high = spread(values)
    return f"{mid:,.0f}/s ({low:,.0f}-{high:,.0f})"


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench grpc", description=__doc__)
    parser.add_argument("--calls", type=int, default=2000, help="calls per latency round (default 2000)")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds (default 7)")
    parser.add_argument("--concurrency", type=int, default=32, help="calls in flight (default 32)")
    parser.add_argument("--throughput-calls", type=int, default=5000, help="calls per throughput round")
    args = parser.parse_args([a for a in argv if a != "grpc"])
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as raw:
        proc, _, grpc_port = _start_prism(Path(raw))
        try:
            latency = asyncio.run(_latency(grpc_port, args.calls, args.rounds))
            answer = asyncio.run(_raw_answer(grpc_port))
            floor, floor_port = _start_floor(answer)
            try:
                rates: dict[str, list[float]] = {"prism": [], "floor": []}
                cpu: dict[str, list[float]] = {"prism": [], "floor": []}
                for _ in range(args.rounds):
                    for side, port, pid in (("prism", grpc_port, proc.pid), ("floor", floor_port, floor.pid)):
                        rate, per_call = _round(port, pid, args.throughput_calls, args.concurrency)
                        rates[side].append(rate)
                        cpu[side].append(per_call)
            finally:
                _stop(floor)
        finally:
            _stop(proc)
    load_after = os.getloadavg()
    latency_ratios = [p / r for p, r in zip(latency["prism"], latency["raw"], strict=True)]
    rate_ratios = [p / f for p, f in zip(rates["prism"], rates["floor"], strict=True)]
    latency_ratio = statistics.median(latency_ratios)
    rate_ratio = statistics.median(rate_ratios)
    # Calls per CPU-second of the server: what its throughput is once the client is not the limit.
    capacity_ratios = [f / p for p, f in zip(cpu["prism"], cpu["floor"], strict=True)]
    capacity_ratio = statistics.median(capacity_ratios)
    command = "python -m bench grpc " + " ".join(
        f"--{k.replace('_', '-')}={v}" for k, v in sorted(vars(args).items())
    )
    lat_row = (
        f"| `get` latency: `prism://` vs raw stub `Get` | {fmt_us(latency['prism'])} | "
        f"{fmt_us(latency['raw'])} | {latency_ratio:.2f}x | <= 1.3x |"
    )
    rate_row = (
        f"| Get throughput, {args.concurrency} in flight: gateway vs floor server | "
        f"{fmt_rate(rates['prism'])} | {fmt_rate(rates['floor'])} | {rate_ratio:.2f}x | >= 0.6x |"
    )
    cpu_row = (
        f"| Get calls per server CPU-second: gateway vs floor server | "
        f"{fmt_rate([1 / c for c in cpu['prism']])} | {fmt_rate([1 / c for c in cpu['floor']])} | "
        f"{capacity_ratio:.2f}x | >= 0.6x |"
    )
    markdown = f"""
## gRPC: `prism://` and the gateway's Get

`{command}` ({environment("grpcio", "protobuf", "uvloop")}; load average
{load_before[0]:.2f} before, {load_after[0]:.2f} after, on a 2-core machine shared with other work).
One `prism serve` (memory store, no auth, audit off) and, for throughput, a minimal `grpc.aio`
server answering every Get with the same bytes; {args.rounds} interleaved rounds, medians (min-max).

| measure | Prism | baseline | ratio (median of rounds) | target |
|---|---|---|---|---|
{lat_row}
{rate_row}
{cpu_row}

Ratios by round: latency {", ".join(f"{r:.2f}" for r in latency_ratios)};
throughput {", ".join(f"{r:.2f}" for r in rate_ratios)};
calls per server CPU-second {", ".join(f"{r:.2f}" for r in capacity_ratios)}.

The client (one Python process, {args.concurrency} calls in flight) shares the two cores with the
server it measures, so the wall-clock throughput is bounded by the client as much as by the
server; the calls each server answers per CPU-second it used (from `/proc/PID/stat`) compare
the two servers' own cost and are the figure the target is read against.
"""
    print(markdown)
    write_section("grpc", markdown)


async def _raw_answer(grpc_port: int) -> bytes:
    """The bytes prism serve answers to the benchmark's Get (what the floor server sends back)."""
    async with aio.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        call = channel.unary_unary("/prism.v1.KeyValue/Get")
        answer: Any = await call(pb.GetRequest(namespace=NAMESPACE, key="key").SerializeToString())
        return bytes(answer)


if __name__ == "__main__":
    main(sys.argv[1:])
