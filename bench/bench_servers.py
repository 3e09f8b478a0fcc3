"""HTTP servers side by side: ``GET /v1/kv/default/k`` (1 KiB) on uvicorn and on Granian.

    python -m bench servers [--duration=5] [--runs=3] [--connections=32] [--quick] [--no-granian]

(Options take their values after `=`: `python -m bench` reads every word without a leading
dash as a benchmark name.)

All targets are started first, then measured with wrk round-robin (so load from
elsewhere on the machine falls on each alike):

* the raw ASGI app of ``bench/bench_gateway.py`` (``floor_app``) on uvicorn with
  httptools, plain and with Prism's guarded protocol (``prism.gateway.server.HttpProtocol``);
* the same app on Granian (ASGI), and its RSGI twin on Granian (Granian's own interface);
* Prism's app (``prism serve``'s defaults on a memory store, no auth) on uvicorn, as
  ``prism serve`` runs it, and on Granian (ASGI);
* ``prism serve --workers 1`` and ``--workers 2`` on a SQLite store (a memory store
  cannot be shared by two processes).

Every server is one process with one event loop (uvloop) unless it says otherwise.
Granian is not a dependency of Prism: without it (``uv pip install granian``) its
targets are left out and the report says so.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from bench._report import environment, spread, write_section
from bench.bench_gateway import (
    VALUE,
    _free_port,
    _seed,
    _wait_for_port,
    _wrk,
    _wrk_version,
    floor_app,
)

ROOT = Path(__file__).resolve().parent.parent
#: Seconds of load on each target before measuring.
WARMUP_SECONDS = 2.0
#: Target: Prism on its default server against the raw ASGI app on plain uvicorn.
DEFAULT_SERVER_TARGET = 0.80
#: Target: Prism against the raw ASGI app on the same server.
SAME_SERVER_TARGET = 0.60

_RSGI_HEADERS = [("content-type", "application/octet-stream")]


async def floor_rsgi(scope: Any, protocol: Any) -> None:
    """The RSGI twin of ``floor_app``: the least a Granian RSGI app can do to answer the same 1 KiB."""
    protocol.response_bytes(200, _RSGI_HEADERS, VALUE)


def _serve_uvicorn_floor(port: int, protocol: str) -> None:
    import uvicorn

    http: Any = "httptools"
    if protocol == "prism":
        from prism.gateway.server import HttpProtocol

        http = HttpProtocol
    config = uvicorn.Config(
        floor_app,
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http=http,
        access_log=False,
        log_level="warning",
        lifespan="on",
    )
    uvicorn.Server(config).run()


@dataclass
class Target:
    name: str
    command: list[str]
    port: int
    seed: bool = False
    env: dict[str, str] = field(default_factory=dict)
    rps: list[float] = field(default_factory=list)
    #: Server CPU time (all its processes and threads) per request, and wrk's CPU share of the run.
    cpu_us: list[float] = field(default_factory=list)
    wrk_cpu: list[float] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None


def _granian(port: int, target: str, interface: str, *extra: str) -> list[str]:
    return [
        str(Path(sys.executable).with_name("granian")),
        "--interface",
        interface,
        "--http",
        "1",
        "--loop",
        "uvloop",
        "--workers",
        "1",
        "--log-level",
        "warning",
        "--no-access-log",
        "--working-dir",
        str(ROOT),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        *extra,
        target,
    ]


def _config(directory: Path, name: str, store_url: str) -> Path:
    """``prism serve``'s defaults (access log and audit on) with one ``default`` namespace, streaming off."""
    path = directory / f"{name}.yaml"
    path.write_text(
        f'stores:\n  main: "{store_url}"\nnamespaces:\n  - name: default\nstreaming: {{enabled: false}}\n'
    )
    return path


def _targets(directory: Path, with_granian: bool) -> list[Target]:
    prism = str(Path(sys.executable).with_name("prism"))
    me = [sys.executable, "-m", "bench.bench_servers"]
    memory = _config(directory, "memory", "memory://")
    sqlite = _config(directory, "sqlite", f"sqlite:///{directory}/bench.db")

    def serve(config: Path, port: int, *extra: str) -> list[str]:
        return [prism, "serve", "--config", str(config), "--port", str(port), *extra]

    targets: list[Target] = []

    def add(name: str, make: Any, **kw: Any) -> None:
        port = _free_port()
        targets.append(Target(name, make(port), port, **kw))

    add("raw ASGI, uvicorn (httptools)", lambda p: [*me, "serve-uvicorn", str(p), "plain"])
    add("raw ASGI, uvicorn (Prism's HttpProtocol)", lambda p: [*me, "serve-uvicorn", str(p), "prism"])
    if with_granian:
        add("raw ASGI, Granian ASGI", lambda p: _granian(p, "bench.bench_gateway:floor_app", "asgi"))
        add("raw RSGI, Granian RSGI", lambda p: _granian(p, "bench.bench_servers:floor_rsgi", "rsgi"))
    add("prism, uvicorn (prism serve)", lambda p: serve(memory, p), seed=True)
    if with_granian:
        add(
            "prism, Granian ASGI",
            lambda p: _granian(p, "prism.cli.serve:worker_app", "asgi", "--factory"),
            seed=True,
            env={"PRISM_SERVE_CONFIG": str(memory), "PRISM_SERVE_URL": "granian"},
        )
    add("prism, sqlite, --workers 1", lambda p: serve(sqlite, p, "--workers", "1"), seed=True)
    add("prism, sqlite, --workers 2", lambda p: serve(sqlite, p, "--workers", "2"), seed=True)
    return targets


def _start(target: Target) -> None:
    target.proc = subprocess.Popen(
        target.command,
        cwd=ROOT,
        env={**os.environ, **target.env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    _wait_for_port(target.port, target.proc)
    if target.seed:
        _seed(target.port)


def _stop(target: Target) -> None:
    proc = target.proc
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


_TICKS = os.sysconf("SC_CLK_TCK")


def _process_tree(pid: int) -> list[int]:
    pids = [pid]
    try:
        for thread in os.listdir(f"/proc/{pid}/task"):
            children = Path(f"/proc/{pid}/task/{thread}/children").read_text().split()
            for child in children:
                pids += _process_tree(int(child))
    except OSError:
        pass
    return pids


def _cpu_seconds(pid: int) -> float:
    """User and system CPU time of ``pid`` and its descendants (Linux /proc), in seconds."""
    ticks = 0
    for each in _process_tree(pid):
        try:
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])
    return ticks / _TICKS


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _run_once(target: Target, opts: argparse.Namespace) -> None:
    assert target.proc is not None
    seconds = max(1, round(opts.duration))
    server_before, wrk_before = _cpu_seconds(target.proc.pid), _children_cpu()
    rps = _wrk(target.port, opts.connections, opts.duration)
    server_after, wrk_after = _cpu_seconds(target.proc.pid), _children_cpu()
    target.rps.append(rps)
    target.cpu_us.append((server_after - server_before) / (rps * seconds) * 1e6)
    target.wrk_cpu.append((wrk_after - wrk_before) / seconds)


def _measure(targets: list[Target], opts: argparse.Namespace) -> None:
    for target in targets:
        _wrk(target.port, opts.connections, WARMUP_SECONDS)
    for run in range(opts.runs):
        for target in targets:
            _run_once(target, opts)
        print(f"  run {run + 1}/{opts.runs} done", file=sys.stderr)
    for target in targets:
        print(
            f"  {target.name}: {statistics.median(target.rps):,.0f} req/s, "
            f"{statistics.median(target.cpu_us):.1f} us server CPU per request",
            file=sys.stderr,
        )


def _median(targets: list[Target], name: str) -> float | None:
    for target in targets:
        if target.name == name:
            return statistics.median(target.rps)
    return None


def _report(targets: list[Target], opts: argparse.Namespace, argv: list[str], load: str) -> str:
    floor = statistics.median(targets[0].rps)
    uvicorn_guarded = _median(targets, "raw ASGI, uvicorn (Prism's HttpProtocol)")
    lines = [
        "## HTTP servers: `GET /v1/kv/default/k` (1 KiB value) on uvicorn and Granian",
        "",
        f"Command: `{' '.join(['python -m bench servers', *(a for a in argv if a.startswith('--'))])}`  ",
        f"Environment: {environment('uvicorn', 'granian', 'uvloop', 'httptools', 'starlette')}, "
        f"{os.cpu_count()} CPUs shared by the servers and wrk {_wrk_version()} (`-t1 -c{opts.connections}`); "
        f"load average before the run: {load}.  ",
        f"Each server is one process on uvloop unless the row says otherwise; {opts.runs} wrk runs of "
        f"{opts.duration:g} s per target, interleaved round-robin after a {WARMUP_SECONDS:g} s warm-up; "
        "median (min-max). Prism runs `prism serve`'s defaults (access log and audit on, no auth, "
        "streaming off).",
        "",
        "| target | req/s | vs raw ASGI on uvicorn | server CPU per request | CPUs busy: server + wrk |",
        "|---|---|---|---|---|",
    ]
    for t in targets:
        median, low, high = spread(t.rps)
        used, used_low, used_high = spread(t.cpu_us)
        busy = statistics.median(t.rps) * used / 1e6
        lines.append(
            f"| {t.name} | {median:,.0f} ({low:,.0f}-{high:,.0f}) | {median / floor:.0%} | "
            f"{used:.1f} µs ({used_low:.1f}-{used_high:.1f}) | "
            f"{busy:.2f} + {statistics.median(t.wrk_cpu):.2f} |"
        )
    lines.append("")
    prism_uvicorn = _median(targets, "prism, uvicorn (prism serve)")
    prism_granian = _median(targets, "prism, Granian ASGI")
    raw_granian = _median(targets, "raw ASGI, Granian ASGI")
    one = _median(targets, "prism, sqlite, --workers 1")
    two = _median(targets, "prism, sqlite, --workers 2")

    def cpu(name: str) -> float | None:
        found = [statistics.median(t.cpu_us) for t in targets if t.name == name]
        return found[0] if found else None

    raw_cpu, prism_cpu = cpu(targets[0].name), cpu("prism, uvicorn (prism serve)")
    if prism_uvicorn is not None and uvicorn_guarded is not None and raw_cpu and prism_cpu:
        ratio = prism_uvicorn / floor
        verdict = "met" if ratio >= DEFAULT_SERVER_TARGET else "not met"
        lines.append(
            f"- Prism on its default server (uvicorn) makes {ratio:.0%} of the raw app's requests/s on plain "
            f"uvicorn (target {DEFAULT_SERVER_TARGET:.0%}: **{verdict}**) and "
            f"{prism_uvicorn / uvicorn_guarded:.0%} of the raw app on the same server and protocol "
            f"(target {SAME_SERVER_TARGET:.0%}). By server CPU per request, which the machine's other load "
            f"disturbs less than requests/s, the raw app needs {raw_cpu:.1f} µs and Prism "
            f"{prism_cpu:.1f} µs: {raw_cpu / prism_cpu:.0%}."
        )
    granian_cpu = cpu("prism, Granian ASGI")
    if prism_granian is not None and raw_granian is not None and prism_uvicorn is not None:
        lines.append(
            f"- On Granian, Prism makes {prism_granian / raw_granian:.0%} of the raw app on Granian, and "
            f"{prism_granian / prism_uvicorn:.2f}x Prism's requests/s on uvicorn"
            + (
                f", with {granian_cpu:.1f} µs of server CPU per request against {prism_cpu:.1f} µs."
                if granian_cpu and prism_cpu
                else "."
            )
        )
    elif prism_granian is None:
        lines.append("- Granian was not installed for this run (`uv pip install granian`): no Granian rows.")
    workers = [t for t in targets if "--workers" in t.name]
    if one is not None and two is not None and len(workers) == 2:
        busy = [statistics.median(t.rps) * statistics.median(t.cpu_us) / 1e6 for t in workers]
        lines.append(
            f"- `--workers 2` serves {two / one:.2f}x `--workers 1`. The server's processes got "
            f"{busy[0]:.2f} CPUs with one worker and {busy[1]:.2f} with two, out of {os.cpu_count()} shared "
            "with wrk and whatever else runs (see the load average): a second worker helps only when "
            "there is a CPU for it" + (", which this run did not have." if busy[1] < 1.5 * busy[0] else ".")
        )
    return "\n".join(lines)


# -- the protocol's own cost, without sockets ---------------------------------------------

_REQUEST = b"GET /v1/kv/default/k HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: wrk\r\n\r\n"


class _NullTransport(asyncio.Transport):
    """A transport that drops what is written: the protocol's work without the kernel's."""

    def __init__(self) -> None:
        super().__init__()
        self.protocol: Any = None
        self.closing = False

    def write(self, data: Any) -> None:
        pass

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8080), "peername": ("127.0.0.1", 50000)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_protocol(self) -> Any:
        return self.protocol

    def set_protocol(self, protocol: Any) -> None:
        self.protocol = protocol


async def _drive(protocol_class: Any, requests: int) -> None:
    import uvicorn
    from uvicorn.server import ServerState

    config = uvicorn.Config(floor_app, http=protocol_class, loop="none", access_log=False, log_config=None)
    config.load()
    protocol = protocol_class(config, ServerState(), {})
    transport = _NullTransport()
    transport.protocol = protocol
    protocol.connection_made(transport)
    for _ in range(requests):
        protocol.data_received(_REQUEST)
        # Polled rather than awaited: an event would add its own cost to what is measured.
        while protocol.cycle is None or not protocol.cycle.response_complete:  # noqa: ASYNC110
            await asyncio.sleep(0)
    protocol.connection_lost(None)


def _protocol_cost(requests: int = 20_000, rounds: int = 9) -> dict[str, float]:
    """CPU µs per request of each HTTP protocol serving ``floor_app`` in-process (least of ``rounds``)."""
    import uvloop
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    from prism.gateway.server import HttpProtocol

    classes = {"uvicorn's httptools protocol": HttpToolsProtocol, "Prism's HttpProtocol": HttpProtocol}
    costs: dict[str, list[float]] = {name: [] for name in classes}
    for _ in range(rounds):
        for name, protocol_class in classes.items():
            started = time.process_time()
            uvloop.run(_drive(protocol_class, requests))
            costs[name].append((time.process_time() - started) / requests * 1e6)
    return {name: min(values) for name, values in costs.items()}


# -- the hardening limits on Granian -----------------------------------------------------

#: What ``prism serve`` answers for each guard, to compare with what Granian does (checked by
#: tests/gateway/test_gateway_transport.py for uvicorn).
_PRISM_ANSWERS = {
    "head over 16 KiB": "431 problem+json `HEADERS_TOO_LARGE`, closed",
    "half-sent head, 1 s header timeout": "408 problem+json `HEADER_TIMEOUT`, closed",
    "40 connections, cap (backpressure) 4": "the 5th and later get 503 `TOO_MANY_CONNECTIONS`, closed",
}


def _read_until_closed(sock: socket.socket, timeout: float = 5.0) -> bytes:
    data = b""
    sock.settimeout(timeout)
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except TimeoutError:
        data += b" (still open)"
    except OSError as exc:
        data += f" ({type(exc).__name__})".encode()
    finally:
        sock.close()
    return data


def _first_line(data: bytes) -> str:
    if not data.startswith(b"HTTP/"):
        return "closed without a response" if not data.strip() else data.decode("latin-1").strip()
    head, _, body = data.partition(b"\r\n\r\n")
    kind = "problem+json" if b"problem+json" in head.lower() else f"{len(body.strip())}-byte body"
    status = head.split(b"\r\n", 1)[0].decode("latin-1")[9:]
    return f"{status} ({kind})"


def _granian_limits() -> list[str]:
    """What Granian answers to the clients ``prism serve``'s guards stop, with its closest settings."""
    port = _free_port()
    options = ["--http1-buffer-size", "16384", "--http1-header-read-timeout", "1000", "--backpressure", "4"]
    target = Target("granian limits", _granian(port, "bench.bench_gateway:floor_app", "asgi", *options), port)
    _start(target)
    try:
        address = ("127.0.0.1", port)
        flood = socket.create_connection(address)
        flood.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 17 * 1024)
        half = socket.create_connection(address)
        half.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: 1")
        answers = {
            "head over 16 KiB": _first_line(_read_until_closed(flood)),
            "half-sent head, 1 s header timeout": _first_line(_read_until_closed(half)),
        }
        idle = [socket.create_connection(address) for _ in range(40)]
        for sock in idle:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        served = sum(_read_until_closed(sock).startswith(b"HTTP/1.1 200") for sock in idle)
        answers["40 connections, cap (backpressure) 4"] = f"{served} of 40 served 200, none refused"
    finally:
        _stop(target)
    lines = [
        "",
        f"Granian's answers to the clients `prism serve`'s guards stop (`granian {' '.join(options)}`, "
        "its closest settings; it has no connection cap, and `--http1-buffer-size` cannot go below 8 KiB):",
        "",
        "| client | prism serve (uvicorn + HttpProtocol) | Granian |",
        "|---|---|---|",
    ]
    lines += [f"| {name} | {_PRISM_ANSWERS[name]} | {answer} |" for name, answer in answers.items()]
    return lines


def main(argv: list[str]) -> None:
    """Run the server benchmark and write its section of docs/benchmarks.md."""
    parser = argparse.ArgumentParser(prog="python -m bench servers")
    parser.add_argument("names", nargs="*", help=argparse.SUPPRESS)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measurement (default 5)")
    parser.add_argument("--runs", type=int, default=3, help="wrk runs per target (default 3)")
    parser.add_argument("--connections", type=int, default=32, help="keep-alive connections (default 32)")
    parser.add_argument("--quick", action="store_true", help="1 run of 2 s per target, for a smoke check")
    parser.add_argument("--no-granian", action="store_true", help="leave Granian out even if installed")
    opts, _ = parser.parse_known_args(argv)
    if opts.quick:
        opts.duration, opts.runs = 2.0, 1
    if shutil.which("wrk") is None:
        sys.exit("bench servers needs wrk (apt-get install wrk)")
    with_granian = find_spec("granian") is not None and not opts.no_granian
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    with tempfile.TemporaryDirectory(prefix="prism-bench-servers-") as tmp:
        targets = _targets(Path(tmp), with_granian)
        try:
            for target in targets:
                _start(target)
            _measure(targets, opts)
        finally:
            for target in targets:
                _stop(target)
    report = _report(targets, opts, argv, load)
    costs = _protocol_cost()
    plain, guarded = costs["uvicorn's httptools protocol"], costs["Prism's HttpProtocol"]
    report += (
        f"\n- In-process, without sockets (a null transport, least of 9 rounds of 20,000 requests), "
        f"uvicorn's httptools protocol and the raw app take {plain:.1f} µs of CPU per request, "
        f"Prism's HttpProtocol {guarded:.1f} µs: its guards cost {guarded - plain:.1f} µs a request."
    )
    if with_granian:
        report += "\n" + "\n".join(_granian_limits())
    write_section("servers", report)


if __name__ == "__main__":
    role = sys.argv[1] if len(sys.argv) > 1 else ""
    if role == "serve-uvicorn":
        _serve_uvicorn_floor(int(sys.argv[2]), sys.argv[3])
    else:
        main(sys.argv[1:])
