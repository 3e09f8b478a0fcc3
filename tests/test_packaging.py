"""What the wheel ships besides code: the marker that makes Prism's types public."""

from __future__ import annotations

import fnmatch
import tomllib
from pathlib import Path

import prism

ROOT = Path(__file__).resolve().parent.parent


def test_the_package_marks_itself_typed_and_the_wheel_ships_the_marker() -> None:
    package = Path(prism.__file__).resolve().parent
    assert (package / "py.typed").is_file()
    wheel = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["hatch"]["build"]["targets"]["wheel"]
    assert wheel["packages"] == ["src/prism"]  # every file under it ships unless excluded or ignored
    assert not wheel.get("exclude") and not wheel.get("only-include")
    ignored = [p.strip() for p in (ROOT / ".gitignore").read_text().splitlines() if p.strip()]
    assert not [p for p in ignored if fnmatch.fnmatch("py.typed", p.rstrip("/"))]
