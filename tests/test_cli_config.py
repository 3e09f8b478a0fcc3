"""``prism config check``: every error at once, one line each, without opening or starting anything."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from prism.gateway.config import ConfigError, load_config
from prism.testing.servers import free_port

BROKEN = """\
stores:
  main: "sqlite:///nodir/data.db"
  cache: {url: "redis://localhost:6379/0", options: {timeout: 2}}
  odd: {uri: "memory://"}
  env: "${UNSET_PRISM_CHECK_VAR}"
namespaces:
  - {name: orders, store: nosuch}
  - {name: "bad name!"}
  - {name: users, limits: {rate: -1}}
  - {name: typo, acess: {read: [x]}}
  - {name: orders}
auth:
  api_keys: [{name: a, sha256: nothex}]
audit: {sink: file, path: logs/audit.log, batch_size: 0}
server: {request_timeout: -1}
bogus: 1
"""


def check(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "prism", "config", "check", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=60,
    )


def test_every_error_is_reported_at_once_one_line_each(tmp_path: Path) -> None:
    (tmp_path / "prism.yaml").write_text(BROKEN)
    result = check(tmp_path, "--config", "prism.yaml")
    assert result.returncode == 2 and result.stdout == ""
    lines = result.stderr.splitlines()
    # The Redis backend's list of known options is long; its start is what matters here.
    lines = [line.split(" operation_timeout")[0] + " ..." if "redis://" in line else line for line in lines]
    assert lines == [
        "prism.yaml: $.stores.env: environment variable UNSET_PRISM_CHECK_VAR is not set",
        "prism.yaml: $.stores.odd: Object contains unknown field `uri`",
        "prism.yaml: $.namespaces[3]: Object contains unknown field `acess`",
        "prism.yaml: $.bogus: unknown field; the config takes stores, namespaces, auth, pii_keys, audit, "
        "idempotency, server, limits, control, compat, watch, signals, streaming, handlers, admin",
        "prism.yaml: $.namespaces[0].store: unknown store 'nosuch' (stores: main, cache, odd, env)",
        "prism.yaml: $.namespaces[1].name: a namespace name is 1-100 of letters, digits and _ . - "
        "(starting alphanumeric)",
        "prism.yaml: $.namespaces[2].limits.rate: must be a positive number of requests per second",
        "prism.yaml: $.namespaces[4].name: namespace 'orders' is declared twice",
        "prism.yaml: $.auth.api_keys[0].sha256: must be the 64 lowercase hex digits of the key's sha256 "
        "(never the key itself)",
        "prism.yaml: $.audit.batch_size: must be at least 1",
        "prism.yaml: $.server.request_timeout: must be a positive number of seconds",
        f"prism.yaml: $.stores.main: the directory {tmp_path}/nodir does not exist",
        "prism.yaml: $.stores.cache: unknown option(s) for redis://: timeout; known: connect_timeout, ...",
        f"prism.yaml: $.audit.path: the directory {tmp_path}/logs does not exist",
        "prism.yaml: 14 errors",
    ]
    # Checking created nothing: no data directory, no database directory, no audit directory.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prism.yaml"]
    # prism serve refuses the same file with the first of these errors.
    with pytest.raises(ConfigError) as first:
        load_config(tmp_path / "prism.yaml")
    assert first.value.path == "$.stores.env"


def test_secrets_and_key_files_are_checked_without_printing_them(tmp_path: Path) -> None:
    (tmp_path / "prism.yaml").write_text(
        "stores: {main: 'memory://'}\nnamespaces: [{name: a}]\n"
        "auth: {jwt: {algorithms: [HS256], secret_env: UNSET_CHECK_JWT_SECRET}}\n"
        "pii_keys: {active: k1, keys: [{id: k1, file: keys/missing.key}]}\n"
    )
    result = check(tmp_path, "-c", "prism.yaml")
    assert result.returncode == 2
    assert "$.auth.jwt.secret_env: environment variable UNSET_CHECK_JWT_SECRET is not set" in result.stderr
    assert "$.pii_keys.keys[0]" in result.stderr and "missing.key" in result.stderr
    assert result.stderr.splitlines()[-1] == "prism.yaml: 2 errors"


def test_a_valid_config_gets_a_summary_and_nothing_is_opened(tmp_path: Path) -> None:
    # The Redis store points at a port nobody listens on: checking must not try to connect.
    (tmp_path / "prism.yaml").write_text(
        f"stores: {{main: 'memory://', cache: 'redis://127.0.0.1:{free_port()}/0'}}\n"
        "namespaces: [{name: orders}, {name: sessions, store: cache}]\n"
        "auth: {api_keys: [{name: ops, sha256: " + "a" * 64 + ", roles: [admin]}]}\n"
    )
    result = check(tmp_path, "--config", "prism.yaml")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "prism.yaml: valid",
        "  stores: main (memory), cache (redis)",
        "  namespaces: orders, sessions",
        "  auth: 1 API key",
        "  audit: stdout",
    ]


def test_without_a_config_it_describes_the_zero_config_default(tmp_path: Path) -> None:
    result = check(tmp_path)
    assert result.returncode == 0 and "zero-config default" in result.stdout
    assert not (tmp_path / ".prism").exists()


def test_an_unreadable_file_is_one_error(tmp_path: Path) -> None:
    result = check(tmp_path, "--config", "missing.yaml")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "missing.yaml: cannot read the file: No such file or directory",
        "missing.yaml: 1 error",
    ]
