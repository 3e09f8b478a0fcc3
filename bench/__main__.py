"""``python -m bench [NAME ...]``: run the benchmark modules ``bench/bench_NAME.py``.

Each module has ``main(argv) -> None`` that measures and writes its own section of
docs/benchmarks.md through ``bench._report.write_section``.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path


def main() -> None:
    here = Path(__file__).parent
    available = sorted(p.stem.removeprefix("bench_") for p in here.glob("bench_*.py"))
    names = [a for a in sys.argv[1:] if not a.startswith("-")] or available
    unknown = set(names) - set(available)
    if unknown:
        sys.exit(f"unknown benchmark(s) {sorted(unknown)}; available: {available}")
    for name in names:
        print(f"== bench {name}", file=sys.stderr)
        importlib.import_module(f"bench.bench_{name}").main(sys.argv[1:])


if __name__ == "__main__":
    main()
