"""Gateway throughput and latency: ``GET /v1/kv/default/k`` (1 KiB) against a floor app.

    python -m bench gateway [--duration 5] [--runs 3] [--connections 32] [--quick]

Each target runs in its own server process on the same HTTP server (the one
``prism serve`` runs: uvicorn with Prism's HTTP protocol, one worker); all are started
first, then measured round-robin so that load from elsewhere on the machine falls on
each of them alike:

* ``floor``: a minimal ASGI app returning the same 1 KiB body, on that same server;
* ``prism memory`` / ``prism sqlite``: ``prism serve`` with its defaults (access log
  on, audit trail on; streaming off), its store switched between ``memory://`` and SQLite;
* ``prism memory, lean``: the same without access log and audit, to show their cost;
* ``prism memory, API key, PII, audit``: a caller with an API key (``pii:read``)
  reading a JSON value whose ``email`` field is encrypted at rest, every access
  audited to a file.

Maximum throughput is measured closed-loop with wrk when it is installed, else
with the asyncio load generator below (keep-alive connections, in its own
process). Latency is then measured open-loop at half of each target's own maximum
rate (requests are sent on a fixed schedule and timed from their scheduled send,
so queueing is counted), which wrk cannot do.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from bench._report import environment, spread, write_section

ROOT = Path(__file__).resolve().parent.parent
PATH = "/v1/kv/default/k"
VALUE = b"x" * 1024
#: The JSON value of the PII target (1 KiB, with a PII field).
PII_VALUE = b'{"email": "ann@example.com", "note": "' + b"x" * (1024 - 41) + b'"}'
#: The API key of the PII target, and the PII key it encrypts with.
API_KEY = "bench-key"
PII_KEY = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
#: Targets: p99 latency at half of the max rate, and throughput relative to the floor.
P99_TARGET_MS = 5.0
RATIO_TARGET = 0.60
AUTH_RATIO_TARGET = 0.45
#: Seconds a server may take to start listening.
STARTUP_TIMEOUT = 60.0
#: Seconds of load before measuring, so caches and JIT-free warm paths settle.
WARMUP_SECONDS = 1.0


# -- the floor app -----------------------------------------------------------------

_FLOOR_HEADERS = [(b"content-type", b"application/octet-stream"), (b"content-length", b"1024")]


async def floor_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The least an ASGI app can do to answer with the same 1 KiB."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    await send({"type": "http.response.start", "status": 200, "headers": _FLOOR_HEADERS})
    await send({"type": "http.response.body", "body": VALUE})


def _serve_floor(port: int) -> None:
    """The floor app on the HTTP server ``prism serve`` uses, with the same settings."""
    import uvicorn

    from prism.streaming.app import UVICORN_OPTIONS

    config = uvicorn.Config(
        floor_app,
        host="127.0.0.1",
        port=port,
        loop="auto",
        access_log=False,
        log_level="warning",
        lifespan="on",
        server_header=False,
        **UVICORN_OPTIONS,
    )
    uvicorn.Server(config).run()


# -- the asyncio load generator -----------------------------------------------------


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection sending one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[int] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement the interface without subclassing asyncio.Transport.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buffer[:end]).lower()
        match = re.search(rb"content-length:\s*(\d+)", head)
        length = int(match.group(1)) if match else 0
        if len(self.buffer) < end + 4 + length:
            return
        status = int(self.buffer[9:12])
        del self.buffer[: end + 4 + length]
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(status)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("connection closed"))

    async def request(self, raw: bytes) -> int:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(raw)
        return await self.waiter


async def _connect(port: int, count: int) -> list[_Connection]:
    loop = asyncio.get_running_loop()
    conns = []
    for _ in range(count):
        _, conn = await loop.create_connection(_Connection, "127.0.0.1", port)
        conns.append(conn)
    return conns


def _raw_request(port: int, path: str, headers: dict[str, str]) -> bytes:
    head = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: prism-bench\r\n"
    return (head + _head_lines(headers) + "\r\n").encode()


def _head_lines(headers: dict[str, str]) -> str:
    return "".join(f"{name}: {value}\r\n" for name, value in headers.items())


async def _closed_loop(
    port: int, path: str, connections: int, duration: float, headers: dict[str, str]
) -> dict[str, Any]:
    conns = await _connect(port, connections)
    raw = _raw_request(port, path, headers)
    deadline = time.perf_counter() + duration
    done = errors = 0

    async def worker(conn: _Connection) -> None:
        nonlocal done, errors
        while time.perf_counter() < deadline:
            status = await conn.request(raw)
            done += 1
            errors += status != 200

    started = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in conns))
    elapsed = time.perf_counter() - started
    return {"rps": done / elapsed, "errors": errors, "requests": done}


async def _open_loop(
    port: int, path: str, connections: int, rate: float, duration: float, headers: dict[str, str]
) -> dict[str, Any]:
    """Requests on a fixed schedule (``rate`` per second); each is timed from its scheduled send.

    Every connection runs a worker taking the next scheduled time; when all are busy the
    next request waits, and that wait is part of its latency (no coordinated omission).
    """
    conns = await _connect(port, connections)
    raw = _raw_request(port, path, headers)
    total = int(rate * duration)
    latencies: list[float] = []
    errors = 0
    schedule = iter(range(total))
    start = time.perf_counter() + 0.05

    async def worker(conn: _Connection) -> None:
        nonlocal errors
        for i in schedule:
            intended = start + i / rate
            delay = intended - time.perf_counter()
            if delay > 0.0005:
                await asyncio.sleep(delay)
            try:
                status = await conn.request(raw)
            except ConnectionError:
                errors += 1
                return
            latencies.append(time.perf_counter() - intended)
            errors += status != 200

    await asyncio.gather(*(worker(c) for c in conns))
    elapsed = time.perf_counter() - start
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000

    return {
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "max_ms": latencies[-1] * 1000,
        "errors": errors,
        "requests": len(latencies),
        "achieved_rps": len(latencies) / elapsed,
    }


def _load_main(argv: list[str]) -> None:
    """Entry of the load generator process: prints one JSON result line."""
    import uvloop

    mode, port, path, connections, duration = argv[0], int(argv[1]), argv[2], int(argv[3]), float(argv[4])
    headers = json.loads(argv[-1])
    if mode == "closed":
        result = uvloop.run(_closed_loop(port, path, connections, duration, headers))
    else:
        result = uvloop.run(_open_loop(port, path, connections, float(argv[5]), duration, headers))
    print(json.dumps(result))


# -- in-process cost: the app alone, no server -----------------------------------------

#: Requests per in-process measurement (the app's own CPU per request, without HTTP).
APP_COST_REQUESTS = 20_000


async def _app_cost(
    config_path: str, headers: dict[str, str], value: bytes, requests: int
) -> dict[str, float]:
    """CPU microseconds per ``GET`` the app spends on its own (ASGI calls in-process, no server).

    Background work (the audit writer, the access log) runs in between, as it would
    between requests, and counts: this is process CPU time, not wall time.
    """
    from prism.gateway import create_app
    from prism.gateway.config import load_config

    app = create_app(load_config(config_path))
    raw_headers = [(b"host", b"bench"), *((k.lower().encode(), v.encode()) for k, v in headers.items())]
    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    def scope(method: str, extra: list[tuple[bytes, bytes]]) -> dict[str, Any]:
        return {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": PATH,
            "raw_path": PATH.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": raw_headers + extra,
            "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 2),
        }

    async def body() -> dict[str, Any]:
        return {"type": "http.request", "body": value, "more_body": False}

    async def floor_receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def measure(target: Any) -> float:
        get = scope("GET", [])
        for _ in range(1000):
            await target(dict(get), floor_receive, send)
        started = time.process_time()
        for i in range(requests):
            sent.clear()
            await target(dict(get), floor_receive, send)
            if i % 100 == 0:
                await asyncio.sleep(0)  # let the background tasks (audit, access log) run
        return (time.process_time() - started) / requests * 1e6

    async with app.router.lifespan_context(app):
        content_type = b"application/json" if value is PII_VALUE else b"application/octet-stream"
        put = scope("PUT", [(b"content-type", content_type), (b"content-length", str(len(value)).encode())])
        await app(put, body, send)
        if sent[0]["status"] not in (200, 201):
            raise RuntimeError(f"seeding in-process failed: {sent}")
        prism_us = await measure(app)
        floor_us = await measure(floor_app)
    return {"prism_us": prism_us, "floor_us": floor_us}


def _app_cost_main(argv: list[str]) -> None:
    import uvloop

    config_path, kind = argv[0], argv[1]
    headers = {"X-API-Key": API_KEY} if kind == "pii" else {}
    value = PII_VALUE if kind == "pii" else VALUE
    result = uvloop.run(_app_cost(config_path, headers, value, APP_COST_REQUESTS))
    sys.stderr.flush()
    print("RESULT " + json.dumps(result), flush=True)


# -- orchestration --------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for_port(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with code {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listened on port {port} within {STARTUP_TIMEOUT} s")


@dataclass
class Target:
    name: str
    command: list[str]
    seed: bool
    port: int
    headers: dict[str, str] = field(default_factory=dict)
    value: bytes = VALUE
    env: dict[str, str] = field(default_factory=dict)
    rps: list[float] = field(default_factory=list)
    p50: list[float] = field(default_factory=list)
    p99: list[float] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None


def _prism_config(directory: Path, name: str, store_url: str, lean: bool = False, pii: bool = False) -> Path:
    """A config like ``prism serve``'s default one, on ``store_url``.

    Streaming (whose workers would share the process) is off: this measures the KeyValue API.
    """
    import hashlib

    path = directory / f"{name}.yaml"
    namespace = "  - name: default\n"
    extra = "server: {access_log: false}\naudit: {sink: none}\n" if lean else ""
    if pii:
        digest = hashlib.sha256(API_KEY.encode()).hexdigest()
        namespace = "  - {name: default, pii: {fields: [email], encrypt: true}}\n"
        extra = (
            f'auth:\n  api_keys:\n    - {{name: bench, sha256: "{digest}", roles: [writer, "pii:read"]}}\n'
            "pii_keys: {active: k1, keys: [{id: k1, env: PRISM_BENCH_PII_KEY}]}\n"
            f'audit: {{sink: file, path: "{directory}/audit.log"}}\n'
        )
        (directory / "audit.log").touch()
    text = f'stores:\n  main: "{store_url}"\nnamespaces:\n{namespace}streaming: {{enabled: false}}\n'
    path.write_text(text + extra)
    return path


def _targets(directory: Path) -> list[Target]:
    prism = str(Path(sys.executable).with_name("prism"))

    def serve(name: str, url: str, port: int, lean: bool = False, pii: bool = False) -> list[str]:
        return [
            prism,
            "serve",
            "--config",
            str(_prism_config(directory, name, url, lean, pii)),
            "--port",
            str(port),
        ]

    ports = [_free_port() for _ in range(5)]
    floor = [sys.executable, "-m", "bench.bench_gateway", "serve-floor", str(ports[0])]
    return [
        Target("floor (raw ASGI app)", floor, False, ports[0]),
        Target("prism, memory store", serve("memory", "memory://", ports[1]), True, ports[1]),
        Target(
            "prism, sqlite store",
            serve("sqlite", f"sqlite:///{directory}/bench.db", ports[2]),
            True,
            ports[2],
        ),
        Target(
            "prism, memory store, no access log or audit",
            serve("lean", "memory://", ports[3], lean=True),
            True,
            ports[3],
        ),
        Target(
            "prism, memory store, API key, PII namespace, audit to a file",
            serve("pii", "memory://", ports[4], pii=True),
            True,
            ports[4],
            headers={"X-API-Key": API_KEY},
            value=PII_VALUE,
            env={"PRISM_BENCH_PII_KEY": PII_KEY},
        ),
    ]


def _seed(target: Target) -> None:
    port, value = target.port, target.value
    content_type = "application/json" if value is PII_VALUE else "application/octet-stream"
    request = (
        f"PUT {PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: {content_type}\r\n"
        f"{_head_lines(target.headers)}Content-Length: {len(value)}\r\nConnection: close\r\n\r\n"
    ).encode() + value
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(request)
        answer = s.recv(4096)
    if not answer.startswith((b"HTTP/1.1 201", b"HTTP/1.1 200")):
        raise RuntimeError(f"seeding the value failed: {answer[:200]!r}")


def _generator(args: list[str]) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "bench.bench_gateway", "load", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def _wrk(target: Target, connections: int, duration: float) -> float:
    headers = [f"-H{name}: {value}" for name, value in target.headers.items()]
    url = f"http://127.0.0.1:{target.port}{PATH}"
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s", *headers, url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    if "Non-2xx" in out:
        raise RuntimeError(f"wrk saw error responses:\n{out}")
    match = re.search(r"Requests/sec:\s+([0-9.]+)", out)
    if match is None:
        raise RuntimeError(f"cannot read wrk's output:\n{out}")
    return float(match.group(1))


def _max_rps(target: Target, connections: int, duration: float, use_wrk: bool) -> float:
    if use_wrk:
        return _wrk(target, connections, duration)
    args = ["closed", str(target.port), PATH, str(connections), str(duration), json.dumps(target.headers)]
    result = _generator(args)
    if result["errors"]:
        raise RuntimeError(f"{result['errors']} error responses during the throughput run")
    return float(result["rps"])


def _start(target: Target) -> None:
    target.proc = subprocess.Popen(
        target.command,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **target.env},
    )
    _wait_for_port(target.port, target.proc)
    if target.seed:
        _seed(target)


def _stop(target: Target) -> None:
    proc = target.proc
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _measure(targets: list[Target], opts: argparse.Namespace, use_wrk: bool) -> None:
    """Throughput, then latency, each run round-robin over the targets (so outside load hits them alike)."""
    for target in targets:
        _max_rps(target, opts.connections, WARMUP_SECONDS, use_wrk)
    for _ in range(opts.runs):
        for target in targets:
            target.rps.append(_max_rps(target, opts.connections, opts.duration, use_wrk))
    for _ in range(opts.runs):
        for target in targets:
            rate = statistics.median(target.rps) / 2
            args = ["open", str(target.port), PATH, str(opts.connections), str(opts.duration), str(rate)]
            args.append(json.dumps(target.headers))
            result = _generator(args)
            if result["errors"]:
                raise RuntimeError(f"{target.name}: {result['errors']} errors during the latency run")
            target.p50.append(float(result["p50_ms"]))
            target.p99.append(float(result["p99_ms"]))
    for target in targets:
        print(
            f"  {target.name}: {statistics.median(target.rps):,.0f} req/s, "
            f"p99 {statistics.median(target.p99):.2f} ms at half of it",
            file=sys.stderr,
        )


def _report(
    targets: list[Target],
    opts: argparse.Namespace,
    use_wrk: bool,
    argv: list[str],
    costs: dict[str, list[float]],
) -> str:
    floor = statistics.median(targets[0].rps)
    generator = (
        f"wrk {_wrk_version()} (`-t1 -c{opts.connections}`)"
        if use_wrk
        else f"the asyncio load generator of this module ({opts.connections} keep-alive connections)"
    )
    lines = [
        "## Gateway: `GET /v1/kv/default/k` (1 KiB value)",
        "",
        f"Command: `{' '.join(['python -m bench gateway', *(a for a in argv if a.startswith('--'))])}`"
        + "  ",
        f"Environment: {environment('uvicorn', 'starlette', 'uvloop', 'httptools', 'msgspec')}, "
        f"{os.cpu_count()} CPUs shared by the server and the load generator (load average before the "
        f"run: {opts.load:.1f}).  ",
        "Server: every target, the floor included, on the HTTP server of `prism serve` (uvicorn with "
        "Prism's HTTP protocol, one worker).  ",
        f"Throughput: {generator}, {opts.runs} runs of {opts.duration:g} s per target, interleaved "
        f"round-robin after a {WARMUP_SECONDS:g} s warm-up; median (min-max). Latency: open-loop at "
        f"half of each target's own median rate, {opts.runs} runs of {opts.duration:g} s, timed from "
        "each request's scheduled send; median of the runs' percentiles (p99 min-max).",
        "",
        "| target | req/s | vs floor | p50 at half rate | p99 at half rate |",
        "|---|---|---|---|---|",
    ]
    for t in targets:
        median, low, high = spread(t.rps)
        lines.append(
            f"| {t.name} | {median:,.0f} ({low:,.0f}-{high:,.0f}) | {median / floor:.0%} | "
            f"{statistics.median(t.p50):.2f} ms | {statistics.median(t.p99):.2f} ms "
            f"({min(t.p99):.2f}-{max(t.p99):.2f}) |"
        )
    memory, auth = targets[1], targets[4]
    memory_ratio = statistics.median(memory.rps) / floor
    auth_ratio = statistics.median(auth.rps) / floor
    p99_ok = all(statistics.median(t.p99) < P99_TARGET_MS for t in targets[1:])

    def verdict(ratio: float, target: float) -> str:
        if ratio >= target:
            return f"{ratio:.1%}: **met**"
        return f"{ratio:.1%}: **not met** (by {(target - ratio) * 100:.1f} points)"

    lines += [
        "",
        f"Targets: prism with its defaults on the memory store at least {RATIO_TARGET:.0%} of the floor's "
        f"requests/s, {verdict(memory_ratio, RATIO_TARGET)}; with an API key, a PII namespace and audit at "
        f"least {AUTH_RATIO_TARGET:.0%}, {verdict(auth_ratio, AUTH_RATIO_TARGET)}; p99 under "
        f"{P99_TARGET_MS:g} ms at half of the maximum rate: **{'met' if p99_ok else 'not met'}**.",
        "",
        "On a shared machine these ratios move with outside load (see the min-max ranges and the load "
        "average above): every target is measured in the same rounds, but the server and wrk compete with "
        "other work for the 2 CPUs. The app's own CPU per request, measured without a server below, does "
        "not depend on that load and shows how much of a request the gateway itself adds.",
        "",
        *_where_time_goes(floor, costs),
    ]
    return "\n".join(lines)


def _where_time_goes(floor_rps: float, costs: dict[str, list[float]]) -> list[str]:
    """The app's own CPU per request (measured in-process), and the ratio it allows on this server."""
    floor_us = statistics.median(costs["floor"])
    server_us = 1e6 / floor_rps  # what one request of the floor costs, server and all
    lines = [
        "Where the time goes: the app alone, called in-process without a server (CPU µs per request, "
        f"median of {len(costs['floor'])} interleaved runs of {APP_COST_REQUESTS:,} requests; audit and "
        "access log included):",
        "",
        "| app | CPU µs per request | ratio it allows (estimate) |",
        "|---|---|---|",
        f"| floor (raw ASGI app) | {floor_us:.1f} | 100% |",
    ]
    for kind, name in (("memory", "prism, memory store (defaults)"), ("pii", "prism, API key, PII, audit")):
        prism_us = statistics.median(costs[kind])
        allowed = server_us / (server_us + prism_us - floor_us)
        lines.append(f"| {name} | {prism_us:.1f} | {allowed:.0%} |")
    lines += [
        "",
        f"The estimate takes one floor request on this server ({server_us:.1f} µs at the floor's median "
        "rate, the HTTP server's parsing and writing included) and adds what the app costs beyond the "
        "floor app.",
    ]
    return lines


def _wrk_version() -> str:
    out = subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout
    match = re.search(r"wrk (\S+)", out)
    return match.group(1) if match else "(unknown version)"


def main(argv: list[str]) -> None:
    """Run the gateway benchmark and write its section of docs/benchmarks.md."""
    parser = argparse.ArgumentParser(prog="python -m bench gateway")
    parser.add_argument("names", nargs="*", help=argparse.SUPPRESS)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measurement (default 5)")
    parser.add_argument("--runs", type=int, default=3, help="throughput runs per target (default 3)")
    parser.add_argument("--connections", type=int, default=32, help="keep-alive connections (default 32)")
    parser.add_argument("--quick", action="store_true", help="1 run of 2 s per target, for a smoke check")
    parser.add_argument("--no-wrk", action="store_true", help="use the asyncio load generator even with wrk")
    opts, _ = parser.parse_known_args(argv)
    if opts.quick:
        opts.duration, opts.runs = 2.0, 1
    use_wrk = shutil.which("wrk") is not None and not opts.no_wrk
    opts.load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="prism-bench-") as tmp:
        targets = _targets(Path(tmp))
        try:
            for target in targets:
                _start(target)
            _measure(targets, opts, use_wrk)
        finally:
            for target in targets:
                _stop(target)
        costs = _costs(Path(tmp), opts.runs)
    write_section("gateway", _report(targets, opts, use_wrk, argv, costs))


def _costs(directory: Path, runs: int) -> dict[str, list[float]]:
    """In-process CPU µs per request, ``runs`` times interleaved: the floor, prism (defaults), prism (PII)."""
    costs: dict[str, list[float]] = {"floor": [], "memory": [], "pii": []}
    env = {**os.environ, "PRISM_BENCH_PII_KEY": PII_KEY}
    for _ in range(runs):
        for kind in ("memory", "pii"):
            out = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "bench.bench_gateway",
                    "app-cost",
                    str(directory / f"{kind}.yaml"),
                    kind,
                ],
                cwd=ROOT,
                capture_output=True,
                text=True,
                check=True,
                env=env,
            ).stdout
            line = next(x for x in reversed(out.splitlines()) if x.startswith("RESULT "))
            result = json.loads(line[len("RESULT ") :])
            costs[kind].append(float(result["prism_us"]))
            costs["floor"].append(float(result["floor_us"]))
    return costs


if __name__ == "__main__":
    role = sys.argv[1] if len(sys.argv) > 1 else ""
    if role == "serve-floor":
        _serve_floor(int(sys.argv[2]))
    elif role == "app-cost":
        _app_cost_main(sys.argv[2:])
    elif role == "load":
        _load_main(sys.argv[2:])
    else:
        main(sys.argv[1:])
