"""The docs that are executed or generated: the README's example and the backend matrix."""

from __future__ import annotations

import contextlib
import io
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), re.S)


def test_readme_shows_the_two_commands_first() -> None:
    first_screen = "\n".join(ROOT.joinpath("README.md").read_text().splitlines()[:20])
    assert "make run" in first_screen and "make test" in first_screen


def test_readme_says_how_to_serve_make_run_on_another_port() -> None:
    readme = ROOT.joinpath("README.md").read_text()
    assert 'make run ARGS="--port 9000"' in readme
    plan = subprocess.run(
        ["make", "-s", "-n", "-C", str(ROOT), "run", "ARGS=--port 9000"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert ".venv/bin/prism serve --port 9000" in plan.splitlines()


def test_readme_example_runs_and_prints_what_it_says() -> None:
    (block,) = python_blocks(ROOT / "README.md")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(block, "README.md", "exec"), {"__name__": "__readme__"})
    assert out.getvalue().strip() == "['user:1']"


def test_backend_matrix_is_generated_from_the_code() -> None:
    from prism.backends.matrix import render

    try:
        expected = render()
    except Exception as exc:  # a backend module that does not import is a failure too
        pytest.fail(f"cannot render the backend matrix: {exc}")
    assert ROOT.joinpath("docs/backends.md").read_text() == expected, (
        "docs/backends.md is stale: run `make docs`"
    )
