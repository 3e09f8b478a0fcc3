"""Streaming: 1,000 WebSocket clients following live jobs, idle-connection memory, and sync echo vs a floor.

    python -m bench streaming [--clients 1000] [--worker-processes 1] [--job-seconds 5] [--runs 3] [--quick]

A local ``redis-server`` (from ``prism.testing.servers``) holds the requests, the
queue and the pub/sub; one ``prism serve`` process serves the WebSockets (one API
key per client, so each follows only its own job; ``streaming.run_workers: false``)
and ``--worker-processes`` ``prism worker`` processes run the jobs; beside them, a
minimal ``websockets`` echo server (the floor). All on uvloop. The load generator
runs in this process (uvloop) and measures, one after the other:

* memory per idle connection: the server's RSS with ``--clients`` idle WebSockets
  open, minus its RSS before, divided by the count;
* delivery latency: every client sends a ``delay`` job that reports progress ten
  times a second; each progress event's latency is its arrival time minus the
  ``timestamp`` the handler reported it at (so the worker's store write, the pub/sub
  hop through Redis, the gateway's fan-out and the send are in it). Measured at each
  count of ``--sweep``;
* sync echo: ``--echo-connections`` connections each send ``echo`` requests one
  after the other for ``--echo-seconds``; the floor gets the same frames. Rounds
  alternate Prism and floor; the ratio is the median of per-round ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from bench._report import environment, spread, write_section

COMMAND = "make bench ARGS=streaming"
#: Targets from the streaming issue.
P99_TARGET_MS = 50.0
ECHO_TARGET_RATIO = 0.5
IDLE_TARGET_KIB = 64.0
#: Seconds between a job's progress reports (ten a second).
STEP_SECONDS = 0.1
#: Seconds to let the server settle before reading its memory.
SETTLE_SECONDS = 2.0
#: Clients opened per burst when connecting many.
CONNECT_BURST = 100
ECHO_FRAME = '{"action":"echo","payload":{"message":"ping","n":1}}'


def _free_port() -> int:
    from prism.testing.servers import free_port

    return free_port()


def _redis_version() -> str:
    try:
        out = subprocess.run(["redis-server", "--version"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return next((w[2:] for w in out.split() if w.startswith("v=")), "unknown")


def _print_pids(gateway: subprocess.Popen[bytes], workers: list[subprocess.Popen[bytes]]) -> None:
    """Where to point a profiler (``py-spy record --pid``) while the run goes on."""
    pids = ", ".join(str(w.pid) for w in workers)
    print(f"prism serve pid {gateway.pid}; prism worker pid(s) {pids}", file=sys.stderr, flush=True)


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-2000:]


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# -- the floor -------------------------------------------------------------------------


def _serve_floor(port: int) -> None:
    """The least a WebSocket server can do: send every frame back."""
    import uvloop
    import websockets

    async def echo(ws: Any) -> None:
        async for message in ws:
            await ws.send(message)

    async def serve() -> None:
        async with websockets.serve(echo, "127.0.0.1", port, compression=None, max_size=None):
            await asyncio.Future()

    uvloop.run(serve())


# -- servers -----------------------------------------------------------------------------


def _prism_config(tmp: Path, clients: int, store_url: str, worker_processes: int) -> Path:
    from prism.gateway.auth import hash_api_key

    config = {
        "stores": {"main": store_url},
        "namespaces": [{"name": "default", "store": "main"}],
        "auth": {
            "api_keys": [
                {"name": f"user-{i}", "sha256": hash_api_key(f"key-{i}"), "tenant": "bench"}
                for i in range(clients)
            ]
        },
        "server": {"log_level": "warning", "access_log": False},
        "audit": {"sink": "none"},
        "streaming": {
            # The benchmark drives the demo handler ``delay``.
            "demo_handlers": True,
            # Jobs run in the `prism worker` processes only; each takes its share of the clients' jobs.
            "run_workers": False,
            "workers": clients // max(1, worker_processes) + 16,
            "sync_threshold": 1.0,
            "rate_limit": 10_000,
            "rate_burst": 10_000,
        },
    }
    path = tmp / "prism.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _start(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=out, cwd=Path(__file__).resolve().parent.parent
        )


async def _wait_ws(url: str, headers: dict[str, str], process: subprocess.Popen[bytes], log: Path) -> None:
    import websockets

    deadline = time.monotonic() + 60
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"server exited: {_tail(log)}")
        try:
            async with websockets.connect(url, additional_headers=headers, compression=None):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


# -- measurements ------------------------------------------------------------------------


async def _open_many(url: str, count: int) -> list[Any]:
    import websockets

    sockets: list[Any] = []
    for start in range(0, count, CONNECT_BURST):
        batch = await asyncio.gather(
            *(
                websockets.connect(
                    url, additional_headers={"X-API-Key": f"key-{i}"}, compression=None, max_size=None
                )
                for i in range(start, min(count, start + CONNECT_BURST))
            )
        )
        sockets.extend(batch)
    return sockets


async def _close_all(sockets: list[Any]) -> None:
    await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)


async def measure_idle_memory(url: str, pid: int, clients: int) -> dict[str, float]:
    warm = await _open_many(url, min(clients, 50))
    for ws in warm:
        await ws.send(ECHO_FRAME)
        await ws.recv()
    await _close_all(warm)
    await asyncio.sleep(SETTLE_SECONDS)
    before = _rss_kib(pid)
    sockets = await _open_many(url, clients)
    await asyncio.sleep(SETTLE_SECONDS)
    after = _rss_kib(pid)
    await _close_all(sockets)
    return {"before_kib": before, "after_kib": after, "per_connection_kib": (after - before) / clients}


WHERE = (
    "Where the time goes (py-spy on the processes of a run: `py-spy record --pid PID -d 10 -f raw`; "
    "the benchmark prints the PIDs): the worker is the bottleneck. A third of its samples go to the "
    "publish of each event (one PUBLISH through redis-py), a quarter to socket writes, the rest to the "
    "record writes, the job and the progress reporter; the gateway spends its time mostly in the "
    "WebSocket send. With one EVAL per event, the record write was 46% of the worker's samples; "
    "written together across jobs (`record_batch`) it is about 12%, and the event log, kept in one "
    "entry per 16 events instead of one per event, went from 17% to a few percent. What remains is "
    "bounded below by the raw floor above. On a machine where other work holds the CPUs, the worker "
    "gets only the share shown and the latency is the queue that builds behind it."
)


_CAS = """
if ARGV[1] ~= '' and redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2])
return 1
"""


async def measure_floor(redis_url: str, clients: int, events: int) -> dict[str, float]:
    """The least a worker does per progress event, on raw redis-py: a conditional write, a publish.

    ``clients`` tasks each send ``events`` pairs of EVALSHA (a compare-and-set of a
    2 KiB value) and PUBLISH (a 200-byte event on its own channel), as fast as they
    can. The CPU this process spends per pair is the floor of a worker's cost per event.
    """
    import redis.asyncio as aioredis

    pool = aioredis.BlockingConnectionPool.from_url(redis_url, max_connections=64)
    client = aioredis.Redis(connection_pool=pool)
    sha = await client.script_load(_CAS)
    value = os.urandom(1024).hex().encode()
    event = os.urandom(100).hex().encode()

    async def one(i: int) -> None:
        for _ in range(events):
            await client.evalsha(sha, 1, f"floor:{i}", "", value)
            await client.publish(f"floor.{i}", event)

    cpu, started = time.process_time(), time.monotonic()
    await asyncio.gather(*(one(i) for i in range(clients)))
    elapsed, cpu = time.monotonic() - started, time.process_time() - cpu
    await client.aclose()
    total = clients * events
    return {"events": total, "rate": total / elapsed, "cpu_us_per_event": 1e6 * cpu / total}


def _epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp()


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds ``pid`` has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def measure_latency(
    url: str, clients: int, job_seconds: float, pids: dict[str, list[int]]
) -> dict[str, Any]:
    sockets = await _open_many(url, clients)
    cpu_before = {name: sum(_cpu_seconds(p) for p in group) for name, group in pids.items()}
    run = os.urandom(4).hex()
    latencies: list[float] = []
    errors: list[str] = []
    counts: list[int] = []

    async def follow(i: int, ws: Any) -> None:
        await asyncio.sleep(i * STEP_SECONDS / clients)  # spread the ticks of the jobs over one step
        frame = {
            "action": "delay",
            "id": f"bench-{run}-{i}",
            "payload": {"seconds": job_seconds, "step": STEP_SECONDS},
        }
        await ws.send(json.dumps(frame))
        seen = 0
        while True:
            msg = json.loads(await ws.recv())
            kind = msg["type"]
            if kind == "progress":
                latencies.append(time.time() - _epoch(msg["timestamp"]))
                seen += 1
            elif kind == "complete":
                counts.append(seen)
                return
            elif kind == "error":
                errors.append(msg["error"]["code"])
                return

    started = time.monotonic()
    await asyncio.gather(*(follow(i, ws) for i, ws in enumerate(sockets)))
    elapsed = time.monotonic() - started
    cpu = {name: sum(_cpu_seconds(p) for p in group) - cpu_before[name] for name, group in pids.items()}
    await _close_all(sockets)
    ordered = sorted(latencies)

    def pct(p: float) -> float:
        return 1000 * ordered[min(len(ordered) - 1, int(p * len(ordered)))]

    return {
        "events": len(latencies),
        "rate": len(latencies) / elapsed,
        "p50_ms": pct(0.50),
        "p90_ms": pct(0.90),
        "p99_ms": pct(0.99),
        "max_ms": 1000 * ordered[-1],
        "errors": errors,
        "per_job": statistics.median(counts) if counts else 0,
        # CPU microseconds each process spent per delivered event (all of its work, not only events).
        "cpu_us_per_event": {name: 1e6 * used / max(1, len(latencies)) for name, used in cpu.items()},
        "cpu_share": {name: used / elapsed for name, used in cpu.items()},
    }


async def _echo_rate(url: str, headers: dict[str, str], connections: int, seconds: float) -> float:
    import websockets

    sockets = [
        await websockets.connect(url, additional_headers=headers, compression=None, max_size=None)
        for _ in range(connections)
    ]
    done = 0
    deadline = time.monotonic() + seconds

    async def loop(ws: Any) -> None:
        nonlocal done
        while time.monotonic() < deadline:
            await ws.send(ECHO_FRAME)
            await ws.recv()
            done += 1

    start = time.monotonic()
    await asyncio.gather(*(loop(ws) for ws in sockets))
    elapsed = time.monotonic() - start
    await _close_all(sockets)
    return done / elapsed


async def measure_echo(prism_url: str, floor_url: str, opts: argparse.Namespace) -> dict[str, Any]:
    headers = {"X-API-Key": "key-0"}
    prism_rates: list[float] = []
    floor_rates: list[float] = []
    ratios: list[float] = []
    await _echo_rate(prism_url, headers, opts.echo_connections, 0.5)
    await _echo_rate(floor_url, {}, opts.echo_connections, 0.5)
    for run in range(opts.runs):
        order = [("prism", prism_url, headers), ("floor", floor_url, {})]
        if run % 2:
            order.reverse()
        rates = {}
        for name, url, hdrs in order:
            rates[name] = await _echo_rate(url, hdrs, opts.echo_connections, opts.echo_seconds)
        prism_rates.append(rates["prism"])
        floor_rates.append(rates["floor"])
        ratios.append(rates["prism"] / rates["floor"])
    return {"prism": prism_rates, "floor": floor_rates, "ratio": statistics.median(ratios), "ratios": ratios}


# -- report ------------------------------------------------------------------------------


def _report(
    opts: argparse.Namespace,
    memory: dict[str, float],
    sweep: dict[int, dict[str, Any]],
    echo: dict[str, Any],
    argv: list[str],
) -> str:
    latency = sweep[opts.clients]
    floor = opts.floor

    def verdict(ok: bool) -> str:
        return "met" if ok else "**missed**"

    flags = [a for a in argv if a.startswith("-")]
    pm, plo, phi = spread(echo["prism"])
    fm, flo, fhi = spread(echo["floor"])
    lines = [
        "## Streaming",
        "",
        f"`{COMMAND}`" + (f" (`{' '.join(flags)}`)" if flags else ""),
        "",
        environment("msgspec", "starlette", "uvicorn", "websockets", "uvloop", "redis"),
        "",
        f"A local `redis-server` {opts.redis_version} (requests, queue and pub/sub); one `prism serve` "
        f"process serving {opts.clients} WebSocket clients, one API key each, with no workers inside; "
        f"{opts.worker_processes} `prism worker` process(es) running every job; a minimal `websockets` "
        f"echo server beside them; the load generator in one more process. {os.cpu_count()} CPUs shared "
        f"by all of them (and by whatever else ran: load average {opts.load_before:.1f} when the run "
        f"began).",
        "",
        "| measure | result | target | |",
        "|---|---|---|---|",
        f"| progress delivery latency, p50 | {latency['p50_ms']:.1f} ms | | |",
        f"| progress delivery latency, p90 | {latency['p90_ms']:.1f} ms | | |",
        f"| progress delivery latency, p99 | {latency['p99_ms']:.1f} ms | < {P99_TARGET_MS:g} ms | "
        f"{verdict(latency['p99_ms'] < P99_TARGET_MS)} |",
        f"| progress delivery latency, max | {latency['max_ms']:.1f} ms | | |",
        f"| progress events delivered | {latency['events']} ({latency['rate']:.0f}/s, "
        f"{latency['per_job']:g} per job), errors: {len(latency['errors'])} | | |",
        f"| memory per idle connection | {memory['per_connection_kib']:.1f} KiB "
        f"(RSS {memory['before_kib'] / 1024:.0f} -> {memory['after_kib'] / 1024:.0f} MiB) "
        f"| < {IDLE_TARGET_KIB:g} KiB "
        f"| {verdict(memory['per_connection_kib'] < IDLE_TARGET_KIB)} |",
        f"| sync `echo` round trips/s, Prism | {pm:,.0f} ({plo:,.0f}-{phi:,.0f}) | | |",
        f"| echo round trips/s, `websockets` floor | {fm:,.0f} ({flo:,.0f}-{fhi:,.0f}) | | |",
        f"| Prism / floor (median of {opts.runs} rounds) | {echo['ratio']:.0%} "
        f"| >= {ECHO_TARGET_RATIO:.0%} | "
        f"{verdict(echo['ratio'] >= ECHO_TARGET_RATIO)} |",
        "",
        f"Jobs: `delay` of {opts.job_seconds:g} s reporting every {STEP_SECONDS} s; echo: "
        f"{opts.echo_connections} connections x {opts.echo_seconds:g} s per round, {opts.runs} rounds.",
        "",
        "Delivery latency by number of clients (each follows one job), and the CPU each process spent "
        "per delivered event while the jobs ran (share: of one core):",
        "",
        "| clients | events/s delivered (asked) | p50 | p90 | p99 | max | errors | worker CPU/event (share) "
        "| serve CPU/event (share) |",
        "|---|---|---|---|---|---|---|---|---|",
        *(
            f"| {count} | {r['rate']:,.0f} ({count / STEP_SECONDS:,.0f}) | {r['p50_ms']:.1f} ms "
            f"| {r['p90_ms']:.1f} ms "
            f"| {r['p99_ms']:.1f} ms | {r['max_ms']:.1f} ms | {len(r['errors'])} "
            f"| {r['cpu_us_per_event']['prism worker']:.0f} us ({r['cpu_share']['prism worker']:.0%}) "
            f"| {r['cpu_us_per_event']['prism serve']:.0f} us ({r['cpu_share']['prism serve']:.0%}) |"
            for count, r in sorted(sweep.items())
        ),
        "",
        f"The floor of a worker's work per event, measured in the same run on raw redis-py (one "
        f"EVALSHA compare-and-set of a 2 KiB value and one PUBLISH of 200 bytes, {opts.clients} tasks "
        f"at once, uvloop): {floor['cpu_us_per_event']:.0f} us of CPU per event "
        f"({floor['rate']:,.0f} pairs/s). "
        f"{opts.clients} jobs reporting {1 / STEP_SECONDS:g} times a second are "
        f"{opts.clients / STEP_SECONDS:,.0f} events/s: "
        f"{opts.clients / STEP_SECONDS * floor['cpu_us_per_event'] / 1e6:.2f} cores for that floor alone, "
        f"{opts.clients / STEP_SECONDS * latency['cpu_us_per_event']['prism worker'] / 1e6:.2f} cores at "
        f"the worker's measured cost, before the gateway, Redis and the clients take theirs. "
        f"Load average when the run ended: {os.getloadavg()[0]:.1f}.",
        "",
        WHERE,
    ]
    return "\n".join(lines)


async def _run(
    opts: argparse.Namespace, prism_url: str, floor_url: str, pids: dict[str, list[int]]
) -> tuple[Any, Any, Any]:
    floor = await measure_floor(opts.redis_url, opts.clients, 10)
    print(f"raw redis-py floor: {floor}", file=sys.stderr)
    opts.floor = floor
    memory = await measure_idle_memory(prism_url, pids["prism serve"][0], opts.clients)
    print(f"memory: {memory}", file=sys.stderr)
    latency: dict[int, dict[str, Any]] = {}
    for count in sorted({*opts.sweep, opts.clients}):
        await asyncio.sleep(SETTLE_SECONDS)
        latency[count] = result = await measure_latency(prism_url, count, opts.job_seconds, pids)
        shown = {k: round(v, 1) if isinstance(v, float) else v for k, v in result.items() if k != "errors"}
        print(f"latency with {count} clients: {shown} errors={len(result['errors'])}", file=sys.stderr)
    echo = await measure_echo(prism_url, floor_url, opts)
    print(f"echo: {echo}", file=sys.stderr)
    return memory, latency, echo


def main(argv: list[str]) -> None:
    """Run the streaming benchmark and write its section of docs/benchmarks.md."""
    import uvloop

    parser = argparse.ArgumentParser(prog="python -m bench streaming")
    parser.add_argument("names", nargs="*", help=argparse.SUPPRESS)
    parser.add_argument("--clients", type=int, default=1000, help="WebSocket clients (default 1000)")
    parser.add_argument(
        "--worker-processes",
        type=int,
        default=1,
        help="`prism worker` processes running the jobs (default 1)",
    )
    parser.add_argument(
        "--job-seconds", type=float, default=5.0, help="length of each followed job (default 5)"
    )
    parser.add_argument("--echo-seconds", type=float, default=3.0, help="seconds per echo round (default 3)")
    parser.add_argument("--echo-connections", type=int, default=4, help="echo connections (default 4)")
    parser.add_argument("--runs", type=int, default=3, help="echo rounds (default 3)")
    parser.add_argument(
        "--sweep",
        default="100,250,500,750",
        help="also measure latency at these client counts (default 100,250,500,750)",
    )
    parser.add_argument("--quick", action="store_true", help="200 clients, 2 s jobs, 1 echo round of 1 s")
    opts, _ = parser.parse_known_args(argv)
    opts.sweep = [int(n) for n in opts.sweep.split(",") if n.strip()] if opts.sweep else []
    if opts.quick:
        opts.clients, opts.job_seconds, opts.echo_seconds, opts.runs, opts.sweep = 200, 2.0, 1.0, 1, [50]
    opts.sweep = [n for n in opts.sweep if 0 < n <= opts.clients]
    _raise_fd_limit()
    opts.load_before = os.getloadavg()[0]
    from prism.testing.servers.redis import RedisServer

    redis = RedisServer.local()
    opts.redis_url = redis.url
    opts.redis_version = _redis_version()
    processes: list[subprocess.Popen[bytes]] = []
    try:
        with tempfile.TemporaryDirectory(prefix="prism-bench-streaming-") as tmp_name:
            tmp = Path(tmp_name)
            config = _prism_config(tmp, opts.clients, redis.url, opts.worker_processes)
            prism_port, floor_port = _free_port(), _free_port()
            prism_log, floor_log = tmp / "prism.log", tmp / "floor.log"
            prism_bin = str(Path(sys.executable).parent / "prism")
            serve = [prism_bin, "serve", "--config", str(config), "--port", str(prism_port)]
            prism = _start(serve, prism_log)
            processes.append(prism)
            worker_logs = [tmp / f"worker-{n}.log" for n in range(opts.worker_processes)]
            worker = [prism_bin, "worker", "--config", str(config), "--log-level", "warning"]
            processes.extend(_start(worker, log) for log in worker_logs)
            floor = _start(
                [sys.executable, "-m", "bench.bench_streaming", "serve-floor", str(floor_port)], floor_log
            )
            processes.append(floor)
            prism_url = f"ws://127.0.0.1:{prism_port}/v1/stream"
            floor_url = f"ws://127.0.0.1:{floor_port}/"

            async def run() -> tuple[Any, Any, Any]:
                await _wait_ws(prism_url, {"X-API-Key": "key-0"}, prism, prism_log)
                await _wait_ws(floor_url, {}, floor, floor_log)
                _print_pids(prism, processes[1:-1])
                pids = {
                    "prism serve": [prism.pid],
                    "prism worker": [p.pid for p in processes[1:-1]],
                    "load generator": [os.getpid()],
                }
                return await _run(opts, prism_url, floor_url, pids)

            try:
                memory, latency, echo = uvloop.run(run())
            except BaseException:
                for log in worker_logs:
                    print(f"{log.name}: {_tail(log)}", file=sys.stderr)
                raise
            finally:
                for process in processes:
                    process.terminate()
                for process in processes:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        process.wait(20)
                    if process.poll() is None:
                        process.kill()
    finally:
        redis.close()
    write_section("streaming", _report(opts, memory, latency, echo, argv))


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "serve-floor":
        _serve_floor(int(sys.argv[2]))
    else:
        main(sys.argv[1:])
