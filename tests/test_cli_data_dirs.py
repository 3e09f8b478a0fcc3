"""Prism creates no directory but the zero-config ``./.prism/``: a wrong path is an error naming it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import prism
from prism.testing.servers import free_port


def test_an_audit_file_in_a_missing_directory_stops_serve_naming_it(tmp_path: Path) -> None:
    (tmp_path / "prism.yaml").write_text(
        "stores: {main: 'memory://'}\nnamespaces: [{name: a}]\n"
        "audit: {sink: file, path: logs/prism/audit.log}\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "prism", "serve", "--config", "prism.yaml", "--port", str(free_port())],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"prism: error: prism.yaml: $.audit.path: cannot open {tmp_path}/logs/prism/audit.log: "
        f"the directory {tmp_path}/logs/prism does not exist (create it first)"
    ]
    assert not (tmp_path / "logs").exists()


async def test_a_sqlite_database_in_a_missing_directory_is_refused_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such"
    with pytest.raises(prism.BackendUnavailable, match=f"the directory '{missing}' does not exist"):
        await prism.connect(f"sqlite:///{missing}/data.db")
    assert not (tmp_path / "no").exists()
    async with prism.connect(f"sqlite:///{tmp_path}/data.db") as store:
        await store.namespace("n").put("k", b"v")
    assert (tmp_path / "data.db").exists()
