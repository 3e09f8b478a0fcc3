"""``prism auth hash-key`` and ``prism auth dev-token``: what they print works against a real gateway."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from prism.gateway.config import parse_config
from prism.testing.servers import free_port

SECRET = "a-development-secret-of-at-least-32-bytes"


def prism(*args: str, stdin: str = "", cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "prism", *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=60,
        env={**os.environ, "DEV_JWT_SECRET": SECRET, "SHORT_SECRET": "too short"},
    )


def serve(home: Path, config: str) -> Iterator[str]:
    (home / "prism.yaml").write_text(config)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "prism", "serve", "--config", "prism.yaml", "--port", str(port)],
        cwd=home,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "DEV_JWT_SECRET": SECRET},
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"prism serve did not start: {proc.communicate()[1].decode(errors='replace')}")
        time.sleep(0.1)
    try:
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=20)


@pytest.fixture
def generated(tmp_path: Path) -> tuple[str, str]:
    """A generated key and the auth.api_keys entry printed for it."""
    made = prism("auth", "hash-key", "--generate", "--name", "ci", "--roles", "writer", "--tenant", "acme")
    assert made.returncode == 0, made.stderr
    key = made.stderr.strip().rsplit(" ", 1)[1]
    assert key not in made.stdout
    return key, made.stdout


@pytest.fixture
def gateway(tmp_path: Path, generated: tuple[str, str]) -> Iterator[str]:
    entry = "\n".join("    " + line for line in generated[1].splitlines())
    yield from serve(
        tmp_path,
        "stores: {main: 'memory://'}\n"
        "namespaces: [{name: notes, tenant_scoped: true}]\n"
        "audit: {sink: none}\n"
        "auth:\n"
        "  jwt: {algorithms: [HS256], secret_env: DEV_JWT_SECRET, clock_skew: 0}\n"
        f"  api_keys:\n{entry}\n",
    )


def test_a_hashed_key_and_a_dev_token_are_accepted_by_the_gateway(
    gateway: str, generated: tuple[str, str]
) -> None:
    key = generated[0]
    put = httpx.put(f"{gateway}/v1/kv/notes/n1", content=b"from the key", headers={"X-API-Key": key})
    assert put.status_code == 201, put.text
    minted = prism(
        "auth",
        "dev-token",
        "--secret-env",
        "DEV_JWT_SECRET",
        "--sub",
        "ada",
        "--roles",
        "reader",
        "--tenant",
        "acme",
    )
    assert minted.returncode == 0, minted.stderr
    token = minted.stdout.strip()
    assert SECRET not in minted.stdout + minted.stderr
    got = httpx.get(f"{gateway}/v1/kv/notes/n1", headers={"Authorization": f"Bearer {token}"})
    assert got.status_code == 200 and got.content == b"from the key"
    # The token's tenant is its own: another tenant sees nothing of acme's.
    other = prism(
        "auth",
        "dev-token",
        "--secret-env",
        "DEV_JWT_SECRET",
        "--sub",
        "bob",
        "--roles",
        "reader",
        "--tenant",
        "zeta",
    )
    elsewhere = httpx.get(
        f"{gateway}/v1/kv/notes/n1", headers={"Authorization": f"Bearer {other.stdout.strip()}"}
    )
    assert elsewhere.status_code == 404
    # A reader token cannot write; an expired one is refused.
    denied = httpx.put(
        f"{gateway}/v1/kv/notes/n2", content=b"x", headers={"Authorization": f"Bearer {token}"}
    )
    assert denied.status_code == 403
    short = prism(
        "auth",
        "dev-token",
        "--secret-env",
        "DEV_JWT_SECRET",
        "--sub",
        "ada",
        "--roles",
        "reader",
        "--tenant",
        "acme",
        "--ttl",
        "1",
    )
    time.sleep(2.2)
    late = httpx.get(f"{gateway}/v1/kv/notes/n1", headers={"Authorization": f"Bearer {short.stdout.strip()}"})
    assert late.status_code == 401


def test_hash_key_reads_stdin_and_prints_what_the_config_expects(tmp_path: Path) -> None:
    plain = prism("auth", "hash-key", stdin="my-key\n")
    assert plain.returncode == 0
    assert plain.stdout == f"sha256: {hashlib.sha256(b'my-key').hexdigest()}\n"
    entry = prism("auth", "hash-key", "--name", "svc", "--roles", "reader", stdin="my-key")

    config = parse_config(
        {
            "stores": {"m": "memory://"},
            "namespaces": [{"name": "a"}],
            "auth": {"api_keys": yaml.safe_load(entry.stdout)},
        }
    )
    assert config.auth.api_keys[0].sha256 == hashlib.sha256(b"my-key").hexdigest()
    assert config.auth.api_keys[0].roles == ["reader"]


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (("auth", "hash-key"), "", "no API key on stdin"),
        (("auth", "hash-key", "--roles", "x"), "k", "give its --name too"),
        (("auth", "hash-key", "--name", "n", "--roles", "bad role"), "k", "invalid role name 'bad role'"),
        (
            ("auth", "dev-token", "--secret-env", "UNSET_SECRET_VAR", "--sub", "a"),
            "",
            "UNSET_SECRET_VAR is not set",
        ),
        (("auth", "dev-token", "--secret-env", "SHORT_SECRET", "--sub", "a"), "", "at least 32 bytes"),
        (("auth", "dev-token", "--secret-env", "DEV_JWT_SECRET", "--sub", "a", "--ttl", "0"), "", "--ttl"),
    ],
)
def test_bad_input_is_one_line_naming_the_problem(args: tuple[str, ...], stdin: str, message: str) -> None:
    result = prism(*args, stdin=stdin)
    assert result.returncode == 1
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "too short" not in result.stderr and SECRET not in result.stderr
