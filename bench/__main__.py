"""``python -m bench [NAME ...]``: run the benchmark modules ``bench/bench_NAME.py``.

Each module has ``main(argv) -> None`` that measures and writes its own section of
docs/benchmarks.md through ``bench._report.write_section``.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

USAGE = """usage: python -m bench [NAME ...] [OPTIONS]

Measure Prism side by side with its baselines and write the results into
docs/benchmarks.md (one section per benchmark). Without NAME every benchmark runs,
which takes a long time: run it on a quiet machine.

benchmarks: {names}

Options after the names are passed to each benchmark; `python -m bench gateway --help`
lists the gateway benchmark's own options.
"""


def _parses_its_options(module: ModuleType) -> bool:
    """True when the benchmark reads its own options (and so answers --help itself)."""
    return hasattr(module, "argparse")


def main() -> None:
    here = Path(__file__).parent
    available = sorted(p.stem.removeprefix("bench_") for p in here.glob("bench_*.py"))
    argv = sys.argv[1:]
    names = [a for a in argv if not a.startswith("-")]
    unknown = set(names) - set(available)
    wants_help = any(a in ("-h", "--help") for a in argv)
    if wants_help and not names:
        print(USAGE.format(names=", ".join(available)), end="")
        return
    if unknown:
        sys.exit(f"unknown benchmark(s) {sorted(unknown)}; available: {available}")
    names = names or available
    modules = [importlib.import_module(f"bench.bench_{name}") for name in names]
    if wants_help:
        own = [m for m in modules if _parses_its_options(m)]
        if len(own) != 1 or len(modules) != 1:
            print(USAGE.format(names=", ".join(available)), end="")
            return
    for name, module in zip(names, modules, strict=True):
        print(f"== bench {name}", file=sys.stderr)
        module.main(argv)


if __name__ == "__main__":
    main()
