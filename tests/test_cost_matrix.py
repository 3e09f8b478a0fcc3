"""The "Cost per key" table of docs/backends.md, generated from the figures ``bench cost`` records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from prism.backends import matrix

FIGURES = {
    "command": "python -m bench cost --keys=200000",
    "date": "2026-12-07",
    "figures": {
        "redis": {"bytes_per_key": 362, "baseline": "SET", "baseline_bytes_per_key": 186, "note": "INFO"},
        "dynamodb": {
            "bytes_per_key": 170,
            "baseline": "BatchWriteItem",
            "baseline_bytes_per_key": 111,
            "write_units_per_put": 2.0,
            "baseline_write_units_per_put": 1.0,
            "replace_write_units_per_put": 1.0,
            "baseline_replace_write_units_per_put": 1.0,
            "read_units_per_put": "1 (0 with blind_batch_puts)",
        },
    },
}


def table(text: str) -> dict[str, list[str]]:
    """The cost table's rows by label, each a list of cells in the header's backend order."""
    section = text.split("## Cost per key", 1)[1].split("\n## ", 1)[0]
    rows = [line.strip("|").split(" | ") for line in section.splitlines() if line.startswith("| ")]
    return {row[0].strip(): [cell.strip() for cell in row[1:]] for row in rows}


def test_the_matrix_shows_the_recorded_cost_figures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    figures = tmp_path / "cost.json"
    figures.write_text(json.dumps(FIGURES))
    monkeypatch.setattr(matrix, "COST_FILE", figures)
    text = matrix.render()
    rows = table(text)
    names = rows.pop("cost")
    by_backend = {label: dict(zip(names, cells, strict=True)) for label, cells in rows.items()}
    assert by_backend["stored bytes per key"]["redis"] == "362 B (SET: 186 B)"
    assert by_backend["stored bytes per key"]["dynamodb"] == "170 B (BatchWriteItem: 111 B)"
    assert by_backend["stored bytes per key"]["memory"] == "-"
    assert by_backend["write capacity units per put"]["dynamodb"] == "2 (BatchWriteItem: 1)"
    assert (
        by_backend["write capacity units per replacing put, same expiry"]["dynamodb"]
        == "1 (BatchWriteItem: 1)"
    )
    assert by_backend["write capacity units per replacing put, same expiry"]["redis"] == "-"
    assert by_backend["read capacity units per put_many key"]["dynamodb"] == "1 (0 with blind_batch_puts)"
    assert "`python -m bench cost --keys=200000` on 2026-12-07" in text
    assert "- redis: INFO" in text


def test_without_recorded_figures_there_is_no_cost_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(matrix, "COST_FILE", tmp_path / "absent.json")
    assert "## Cost per key" not in matrix.render()
