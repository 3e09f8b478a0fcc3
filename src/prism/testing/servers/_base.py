"""What every ephemeral test server shares: ports, readiness, and skip-or-fail."""

from __future__ import annotations

import os
import socket
import time
from typing import NoReturn

import pytest

__all__ = ["ServerUnavailable", "env_url", "free_port", "free_ports", "require_or_skip", "wait_for_port"]


class ServerUnavailable(RuntimeError):
    """The engine cannot be started here; the message says what to install."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_ports(taken: set[int]) -> tuple[int, int]:
    """Two distinct free ports not in ``taken`` (which gets them): a node's client port and its
    cluster bus or route port."""
    while True:
        first, second = free_port(), free_port()
        if first != second and not {first, second} & taken:
            taken.update((first, second))
            return first, second


def wait_for_port(port: int, timeout: float = 20.0, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise ServerUnavailable(f"nothing listened on {host}:{port} within {timeout} s") from None
            time.sleep(0.05)


def env_url(backend: str) -> str | None:
    """``PRISM_TEST_<BACKEND>_URL`` when set."""
    return os.environ.get(f"PRISM_TEST_{backend.upper()}_URL") or None


def required(backend: str) -> bool:
    wanted = os.environ.get("PRISM_REQUIRE_BACKENDS", "").lower().replace(" ", "")
    return wanted == "all" or backend.lower() in wanted.split(",")


def require_or_skip(backend: str, reason: str) -> NoReturn:
    """Skip the tests of ``backend`` (or fail them when the run requires it)."""
    message = f"{backend} tests need a server: {reason}"
    if required(backend):
        pytest.fail(message + " (PRISM_REQUIRE_BACKENDS requires it)", pytrace=False)
    pytest.skip(message)
