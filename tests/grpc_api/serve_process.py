"""``prism serve`` in a subprocess, serving HTTP and gRPC on free ports, for the end-to-end tests."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from prism.testing.servers._base import free_port

PRISM = str(Path(sys.executable).with_name("prism"))
#: Namespaces handed one per test to the conformance suite (each test starts from an empty one).
POOL = [f"pool-{i}" for i in range(400)]


class Served:
    def __init__(self, proc: subprocess.Popen[bytes], port: int, grpc_port: int, log: Path) -> None:
        self.proc = proc
        self.port = port
        self.grpc_port = grpc_port
        self.log = log
        self.http = f"http://127.0.0.1:{port}"
        self.url = f"prism://127.0.0.1:{grpc_port}"
        self.free = iter(POOL)


def start_serve(directory: Path, store: str = "memory://", *, extra: str = "") -> Iterator[Served]:
    """Serve the POOL namespaces and ``plain`` (the seed's) from ``store`` until the generator closes."""
    namespaces = "\n".join(f"  - {{name: {name}}}" for name in ["plain", *POOL])
    config = directory / "prism.yaml"
    config.write_text(
        f"stores: {{main: '{store}'}}\nnamespaces:\n{namespaces}\n"
        "audit: {sink: none}\nserver: {access_log: false}\ncompat: {namespace: plain}\n" + extra
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
    served = Served(proc, port, grpc_port, log)
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{served.http}/healthz", timeout=1).status_code == 200 and (
                b"Prism gRPC listening" in log.read_bytes()
            ):
                break
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"prism serve did not start: {log.read_text()}")
        time.sleep(0.1)
    try:
        yield served
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
