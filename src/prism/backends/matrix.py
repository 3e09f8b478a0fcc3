"""docs/backends.md, generated from the backends' own declarations.

``python -m prism.backends.matrix docs/backends.md`` rewrites the file from each
backend's ``capabilities`` and module docstring, and the cost figures that
``python -m bench cost`` measured and recorded in ``cost.json`` beside this module;
a test checks it is current.
"""

from __future__ import annotations

import importlib
import inspect
import json
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any

from prism.backends import SCHEMES, Backend, resolve
from prism.model import Capabilities

__all__ = ["COST_FILE", "render"]

#: The cost figures ``python -m bench cost`` measured (bytes per key, capacity units).
COST_FILE = Path(__file__).with_name("cost.json")

#: Rows of the cost table: (label, figure, unit, the raw engine's figure beside it).
COST_ROWS: tuple[tuple[str, str, str, str | None], ...] = (
    ("stored bytes per key", "bytes_per_key", "B", "baseline_bytes_per_key"),
    ("write capacity units per put", "write_units_per_put", "", "baseline_write_units_per_put"),
    (
        "write capacity units per replacing put, same expiry",
        "replace_write_units_per_put",
        "",
        "baseline_replace_write_units_per_put",
    ),
    ("read capacity units per put_many key", "read_units_per_put", "", None),
)

INTRO = """# Backends

Every backend passes the same conformance suite (`prism.testing.conformance`)
against a real server; what a backend cannot honour is declared in its
capabilities, and using it raises `prism.Unsupported` instead of degrading
silently. This page is generated from the code by
`python -m prism.backends.matrix docs/backends.md`.
"""

LABELS = {
    "ttl": "per-item TTL",
    "etag": "etags / conditional writes",
    "transactions": "atomic multi-key transactions",
    "range_reads": "record range reads",
    "prefix_scan": "prefix scans",
    "consistent_reads": "strongly consistent reads",
    "max_value_bytes": "largest value",
    "max_transaction_ops": "most ops per transaction",
    "multi_process": "shared by several processes",
    "token_buckets": "shared token buckets (gateway rate limits)",
    "timeseries": "TimeSeries (docs/timeseries.md)",
    "restore": "copies keeping etags and times (live migration)",
    "watch": "change feed (`Namespace.watch`)",
    "watch_expiry": "change feed reports expiry",
}


def _cell(value: object) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if value is None:
        return "no limit"
    if isinstance(value, int) and value >= 1024 * 1024:
        return f"{value / (1024 * 1024):g} MiB"
    if isinstance(value, int) and value >= 1024:
        return f"{value / 1024:g} KiB"
    return str(value)


def _backends() -> list[tuple[str, str, type[Backend]]]:
    """(schemes, target, class) for each distinct backend, in registry order."""
    by_target: dict[str, list[str]] = {}
    for scheme, target in SCHEMES.items():
        by_target.setdefault(target, []).append(scheme)
    return [
        (", ".join(f"`{s}://`" for s in schemes), t, resolve(t, schemes[0]))
        for t, schemes in by_target.items()
    ]


def _figure(value: object, unit: str) -> str:
    text = f"{value:g}" if isinstance(value, int | float) else str(value)
    return f"{text} {unit}" if unit else text


def _cost_lines(backends: list[tuple[str, str, type[Backend]]]) -> list[str]:
    """The cost table, from ``cost.json``; nothing when the file is absent."""
    if not COST_FILE.exists():
        return []
    cost: dict[str, Any] = json.loads(COST_FILE.read_text(encoding="utf-8"))
    figures: dict[str, dict[str, Any]] = cost["figures"]
    header = "| cost | " + " | ".join(cls.name for _, _, cls in backends) + " |"
    lines = [
        "",
        "## Cost per key",
        "",
        f"Measured by `{cost['command']}` on {cost['date']}, with 100-byte values; in brackets the raw "
        "engine holding the same keys and values (see the cost section of benchmarks.md for how each "
        "figure is measured and what it includes).",
        "",
        header,
        "|---|" + "---|" * len(backends),
    ]
    for label, name, unit, base in COST_ROWS:
        cells = []
        for _, _, cls in backends:
            mine = figures.get(cls.name, {})
            if name not in mine:
                cells.append("-")
                continue
            cell = _figure(mine[name], unit)
            if base is not None and base in mine:
                cell += f" ({mine.get('baseline', 'raw')}: {_figure(mine[base], unit)})"
            cells.append(cell)
        lines.append(f"| {label} | {' | '.join(cells)} |")
    notes = [
        f"{cls.name}: {figures[cls.name]['note']}"
        for _, _, cls in backends
        if "note" in figures.get(cls.name, {})
    ]
    if notes:
        lines += ["", *(f"- {note}" for note in notes)]
    return lines


def render() -> str:
    backends = _backends()
    header = "| capability | " + " | ".join(cls.name for _, _, cls in backends) + " |"
    lines = [INTRO, "## Capability matrix", "", header, "|---|" + "---|" * len(backends)]
    for f in fields(Capabilities):
        cells = " | ".join(
            "n/a"
            if f.name == "max_transaction_ops" and not cls.capabilities.transactions
            else "with feed=true"
            if f.name in ("watch", "watch_expiry") and cls.feed_opt_in and getattr(cls.capabilities, f.name)
            else _cell(getattr(cls.capabilities, f.name))
            for _, _, cls in backends
        )
        lines.append(f"| {LABELS.get(f.name, f.name)} | {cells} |")
    lines += _cost_lines(backends)
    for schemes, target, cls in backends:
        module = importlib.import_module(target.partition(":")[0])
        doc = inspect.cleandoc(module.__doc__ or "").strip()
        lines += ["", f"## {cls.name} ({schemes})", "", doc]
        if not cls.capabilities.timeseries and cls.timeseries_unsupported:
            lines += ["", f"No TimeSeries: {cls.timeseries_unsupported}."]
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    text = render()
    if len(sys.argv) > 1:
        with open(sys.argv[1], "w", encoding="utf-8") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
