"""Write one benchmark's section into docs/benchmarks.md, keeping the other sections."""

from __future__ import annotations

import platform
import re
import statistics
import sys
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
HEADER = """# Benchmarks

Every table below was produced by the command shown above it, on the machine and
date it names. Ratios compare Prism with a baseline measured side by side in the
same run, so they hold across machines better than absolute times; the absolute
numbers are medians of several runs with their spread (min-max).

Run them all with `make bench`, or one with `make bench ARGS=NAME`.
"""


def environment(*packages: str) -> str:
    versions = []
    for name in packages:
        try:
            versions.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    return (
        f"{datetime.now(UTC):%Y-%m-%d}, Python {platform.python_version()} on {platform.machine()} "
        f"({platform.system()}), {', '.join(versions)}"
    )


def spread(values: list[float]) -> tuple[float, float, float]:
    """Median, min and max."""
    return statistics.median(values), min(values), max(values)


def write_section(name: str, markdown: str) -> None:
    """Replace (or append) the section ``name`` of docs/benchmarks.md."""
    DOC.parent.mkdir(parents=True, exist_ok=True)
    text = DOC.read_text() if DOC.exists() else HEADER
    begin, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    block = f"{begin}\n{markdown.strip()}\n{end}"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    text = (
        pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    )
    DOC.write_text(text)
    print(
        f"wrote section {name!r} of {DOC.relative_to(Path.cwd()) if DOC.is_relative_to(Path.cwd()) else DOC}",
        file=sys.stderr,
    )
