"""A real ``prism serve`` with the console on, the keys the tests sign in with, Chromium for Playwright."""

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

import pytest

from prism.gateway.auth import hash_api_key
from prism.testing.servers._base import free_port, required

PRISM = str(Path(sys.executable).with_name("prism"))
CHROMIUM = os.environ.get("PRISM_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

#: name -> (key, roles, tenant)
KEYS: dict[str, tuple[str, list[str], str | None]] = {
    "admin": ("console-admin-key", ["admin"], None),
    "reader": ("console-reader-key", ["reader"], None),
    "acme-admin": ("console-acme-admin-key", ["admin", "pii:read"], "acme"),
}


def chromium() -> str:
    """The Chromium binary; without it a skip naming what to install (a failure when
    ``PRISM_REQUIRE_BACKENDS`` is ``all`` or names ``chromium``, as in CI)."""
    if not os.access(CHROMIUM, os.X_OK):
        message = f"the console's browser tests need Chromium at {CHROMIUM}: apt-get install chromium"
        if required("chromium"):
            pytest.fail(message + " (PRISM_REQUIRE_BACKENDS requires it)", pytrace=False)
        pytest.skip(message)
    return CHROMIUM


def config(tmp_path: Path, redis_url: str, **extra: Any) -> dict[str, Any]:
    """A gateway with the console on: namespaces (one tenant-scoped), migration, streaming, file audit."""
    access = {"read": ["reader"], "write": ["writer"], "admin": ["admin"]}
    return {
        "stores": {"local": f"sqlite:///{tmp_path}/data.db", "redis_main": redis_url},
        "namespaces": [
            {"name": "users", "store": "local", "access": access, "pii": {"fields": ["email"]}},
            {"name": "orders", "store": "local", "access": access},
            {"name": "moving", "store": "local", "access": access},
            {
                "name": "private",
                "store": "local",
                "access": {"read": ["auditor"], "write": [], "admin": ["root"]},
            },
            {"name": "carts", "store": "local", "access": access, "tenant_scoped": True},
        ],
        "auth": {
            "api_keys": [
                {"name": name, "sha256": hash_api_key(key), "roles": roles, **({"tenant": t} if t else {})}
                for name, (key, roles, t) in KEYS.items()
            ]
        },
        "control": {"store": "redis_main"},
        "audit": {"sink": "file", "path": str(tmp_path / "audit.jsonl"), "flush_interval": 0.05},
        "server": {"access_log": False},
        "streaming": {"demo_handlers": True, "store": "local", "retry_backoff": 0.05},
        "handlers": ["console_handlers:router"],
        # Every test of a module signs in to one server from one address.
        "admin": {"enabled": True, "sample_interval": 0.5, "login_burst": 1000},
        **extra,
    }


class Served:
    def __init__(self, proc: subprocess.Popen[bytes], port: int, out: Path, err: Path) -> None:
        self.proc = proc
        self.url = f"http://127.0.0.1:{port}"
        self.out = out
        self.err = err


@contextmanager
def serving(cwd: Path, cfg: dict[str, Any]) -> Iterator[Served]:
    """``prism serve`` with ``cfg`` in ``cwd``, stopped with SIGTERM."""
    port = free_port()
    path = cwd / "prism.yaml"
    path.write_text(json.dumps(cfg))
    out, err = cwd / "serve.out", cwd / "serve.err"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).parent), env.get("PYTHONPATH")]))
    with out.open("wb") as stdout, err.open("wb") as stderr:
        proc = subprocess.Popen(
            [PRISM, "serve", "--port", str(port), "--config", str(path)],
            cwd=cwd,
            stdout=stdout,
            stderr=stderr,
            env=env,
        )
    served = Served(proc, port, out, err)
    try:
        deadline = time.monotonic() + 30
        while "API docs:" not in out.read_text():  # the banner's last line (gRPC may speak first)
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"prism serve did not start:\n{out.read_text()}\n{err.read_text()}")
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
