"""docs/backends.md, generated from the backends' own declarations.

``python -m prism.backends.matrix docs/backends.md`` rewrites the file from each
backend's ``capabilities`` and module docstring; a test checks it is current.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from dataclasses import fields

from prism.backends import SCHEMES, Backend, resolve
from prism.model import Capabilities

__all__ = ["render"]

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


def render() -> str:
    backends = _backends()
    header = "| capability | " + " | ".join(cls.name for _, _, cls in backends) + " |"
    lines = [INTRO, "## Capability matrix", "", header, "|---|" + "---|" * len(backends)]
    for f in fields(Capabilities):
        cells = " | ".join(
            "n/a"
            if f.name == "max_transaction_ops" and not cls.capabilities.transactions
            else _cell(getattr(cls.capabilities, f.name))
            for _, _, cls in backends
        )
        lines.append(f"| {LABELS.get(f.name, f.name)} | {cells} |")
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
