"""The TimeSeries conformance suite on the memory and SQLite engines, and what every engine shares."""

from __future__ import annotations

from pathlib import Path

import pytest

from prism.testing.timeseries import TimeSeriesSuite


class TestMemory(TimeSeriesSuite):
    @pytest.fixture
    def store_url(self) -> str:
        return "memory://"


class TestSQLiteFile(TimeSeriesSuite):
    @pytest.fixture
    def store_url(self, tmp_path: Path) -> str:
        return f"sqlite:///{tmp_path / 'prism.db'}"
