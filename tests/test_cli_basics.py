"""``prism --version`` and ``python -m bench --help``: answered at once, nothing started."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_version_comes_from_the_package_metadata() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "prism", "--version"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0
    assert result.stdout == f"prism {metadata.version('prism')}\n"


def test_bench_help_prints_help_and_starts_nothing() -> None:
    before = (ROOT / "docs" / "benchmarks.md").read_bytes()
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--help"], capture_output=True, text=True, cwd=ROOT, timeout=30
    )
    assert result.returncode == 0 and result.stderr == ""
    assert result.stdout.startswith("usage: python -m bench [NAME ...]")
    names = sorted(p.stem.removeprefix("bench_") for p in (ROOT / "bench").glob("bench_*.py"))
    assert f"benchmarks: {', '.join(names)}" in result.stdout
    assert (ROOT / "docs" / "benchmarks.md").read_bytes() == before


def test_a_benchmark_that_reads_its_own_options_answers_its_own_help() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench", "gateway", "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=30,
    )
    assert result.returncode == 0 and result.stdout.startswith("usage: python -m bench gateway")
