"""The conformance suite on the embedded SQLite store: a file in a temporary directory, and ``:memory:``."""

from __future__ import annotations

from pathlib import Path

import pytest

from prism.testing.conformance import ConformanceSuite


class TestSQLiteFile(ConformanceSuite):
    @pytest.fixture
    def store_url(self, tmp_path: Path) -> str:
        return f"sqlite:///{tmp_path / 'prism.db'}"


class TestSQLiteInMemory(ConformanceSuite):
    @pytest.fixture
    def store_url(self) -> str:
        return "sqlite:///:memory:"
