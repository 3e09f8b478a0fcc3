"""Tables for people: what ``prism kv ls`` and ``prism request list`` print on a terminal.

Piped output stays JSON; a table is for reading. Columns are the keys of the first
row, headed by their upper-cased names, each as wide as its widest cell; a cell that
holds a tab, a newline or another non-printable character is escaped, so a row stays
one line.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["format_table"]


def _cell(value: Any) -> str:
    text = "-" if value is None else str(value)
    return text.encode("unicode_escape").decode("ascii") if not text.isprintable() else text


def format_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The rows as aligned columns under a header line ("" for no rows)."""
    if not rows:
        return ""
    columns = list(rows[0])
    cells = [[_cell(row[c]) for c in columns] for row in rows]
    widths = [max(len(c), *(len(line[i]) for line in cells)) for i, c in enumerate(columns)]
    header = [c.upper().replace("_", " ") for c in columns]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in (header, *cells)
    )
