"""A real ``prism serve`` process for the transport tests: started on a free port, stopped with SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from prism.testing.servers._base import free_port

PRISM = str(Path(sys.executable).with_name("prism"))


class Served:
    """A running ``prism serve``: its port, base URL and output files."""

    def __init__(self, proc: subprocess.Popen[bytes], port: int, scheme: str, out: Path, err: Path) -> None:
        self.proc = proc
        self.port = port
        self.url = f"{scheme}://127.0.0.1:{port}"
        self.out = out
        self.err = err

    def stdout(self) -> str:
        return self.out.read_text()

    def stderr(self) -> str:
        return self.err.read_text()


def started(out: str) -> bool:
    """Whether ``prism serve`` printed its whole banner (the gRPC server may speak first)."""
    return "API docs:" in out or "Prism gateway worker" in out


def write_config(directory: Path, config: dict[str, Any]) -> Path:
    """``config`` as ``prism.yaml`` in ``directory`` (JSON is YAML)."""
    path = directory / "prism.yaml"
    path.write_text(json.dumps(config))
    return path


@contextmanager
def serving(
    cwd: Path, config: dict[str, Any] | None = None, *args: str, scheme: str = "http"
) -> Iterator[Served]:
    """``prism serve`` in ``cwd`` (with ``config`` when given), yielded once its banner is printed."""
    port = free_port()
    command = [PRISM, "serve", "--port", str(port), *args]
    if config is not None:
        command += ["--config", str(write_config(cwd, config))]
    out, err = cwd / "serve.out", cwd / "serve.err"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        proc = subprocess.Popen(command, cwd=cwd, stdout=stdout, stderr=stderr, env=dict(os.environ))
    served = Served(proc, port, scheme, out, err)
    try:
        deadline = time.monotonic() + 30
        while not started(served.stdout()):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"prism serve did not start:\n{served.stdout()}\n{served.stderr()}")
            time.sleep(0.05)
        yield served
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
