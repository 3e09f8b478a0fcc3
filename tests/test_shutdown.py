"""A stop signal during startup is honoured: ``prism serve`` and ``prism worker`` exit within their bound.

A signal that comes before the command has installed its handlers (while Python is
still importing it) ends the process the default way, at once; from then on the exit
status is 0.

Each test signals at 20 points of startup, chosen at random among: early (while the
interpreter imports and the config loads, before the store opens), once the socket
accepts connections (bound, the stores opening), and once the banner is printed. The
exit deadline asserted is the behaviour under test, not a speed measurement.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from prism.testing.servers import free_port
from prism.testing.servers.redis import redis_server

PRISM = str(Path(sys.executable).parent / "prism")
TRIES = 20
#: Slack on top of shutdown_timeout for the process to be reaped and seen as gone.
SLACK = 1.0


def _accepts(port: int) -> bool:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def _signal_during_startup(
    command: list[str], cwd: Path, point: str, rng: random.Random, port: int | None, banner: str
) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    if point == "early":
        time.sleep(rng.uniform(0.0, 0.6))
    elif point == "bound" and port is not None:
        while not _accepts(port) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
    else:
        assert proc.stderr is not None and proc.stdout is not None
        stream = proc.stdout if point == "banner-out" else proc.stderr
        while proc.poll() is None and time.monotonic() < deadline:
            if banner in stream.readline().decode(errors="replace"):
                break
        time.sleep(rng.uniform(0.0, 0.05))
    # Early, Python may still be importing, before any handler is set: SIGINT would end that
    # with a KeyboardInterrupt traceback, so the early point sends SIGTERM.
    proc.send_signal(signal.SIGTERM if point == "early" else rng.choice([signal.SIGTERM, signal.SIGINT]))
    return proc


def _clean(point: str, code: int) -> bool:
    """Exit status 0, or (signalled before the command installed its handlers) death by SIGTERM."""
    return code == 0 or (point == "early" and code == -signal.SIGTERM)


def _exit_within(proc: subprocess.Popen[bytes], bound: float) -> tuple[int, str, float]:
    started = time.monotonic()
    try:
        _, err = proc.communicate(timeout=bound + 20)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    return proc.returncode, err.decode(errors="replace"), time.monotonic() - started


def test_serve_stops_within_the_bound_when_signalled_anywhere_in_startup(tmp_path: Path) -> None:
    rng = random.Random()
    bound = 10.0 + SLACK  # server.shutdown_timeout of the zero-config gateway
    for attempt in range(TRIES):
        cwd = tmp_path / str(attempt)
        cwd.mkdir()
        port = free_port()
        point = rng.choice(["early", "bound", "banner-out"])
        proc = _signal_during_startup(
            [PRISM, "serve", "--port", str(port)], cwd, point, rng, port, "listening on"
        )
        code, err, took = _exit_within(proc, bound)
        assert took <= bound and _clean(point, code), (attempt, point, code, took, err)
        assert "Traceback" not in err, (point, err)


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with redis_server() as server:
        yield server.url


def test_worker_stops_within_the_bound_when_signalled_anywhere_in_startup(
    tmp_path: Path, redis_url: str
) -> None:
    rng = random.Random()
    timeout = 3.0
    bound = timeout + SLACK
    command = [PRISM, "worker", "--store", redis_url, "-o", f"shutdown_timeout={timeout}"]
    for attempt in range(TRIES):
        point = rng.choice(["early", "banner-err"])
        proc = _signal_during_startup(command, tmp_path, point, rng, None, "workers on the")
        code, err, took = _exit_within(proc, bound)
        assert took <= bound and _clean(point, code), (attempt, point, code, took, err)
        assert "Traceback" not in err, (point, err)
        if code == 0:
            last = err.rstrip().splitlines()[-1]
            assert last.endswith(("stopped before taking any job", "0 released, 0 abandoned")), (point, err)


def test_worker_stops_within_the_bound_while_its_store_does_not_answer(tmp_path: Path) -> None:
    # A port where nothing listens: opening the store fails or retries; the signal still wins.
    timeout = 2.0
    url = f"redis://127.0.0.1:{free_port()}/0"
    command = [PRISM, "worker", "--store", url, "-o", f"shutdown_timeout={timeout}"]
    rng = random.Random()
    for _ in range(5):
        proc = _signal_during_startup(command, tmp_path, "early", rng, None, "")
        code, err, took = _exit_within(proc, timeout + SLACK)
        assert took <= timeout + SLACK and (_clean("early", code) or code == 2), (code, took, err)
        assert "Traceback" not in err, err
