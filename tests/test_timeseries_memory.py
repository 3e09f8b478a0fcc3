"""The TimeSeries conformance suite on the memory and SQLite engines, and what every engine shares."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import prism
from prism.testing.timeseries import TimeSeriesSuite, check_unsupported


class TestMemory(TimeSeriesSuite):
    stores_share_data = False

    @pytest.fixture
    def store_url(self) -> str:
        return "memory://"


class TestSQLiteFile(TimeSeriesSuite):
    @pytest.fixture
    def store_url(self, tmp_path: Path) -> str:
        return f"sqlite:///{tmp_path / 'prism.db'}"


class TestSQLiteInMemory(TimeSeriesSuite):
    stores_share_data = False

    @pytest.fixture
    def store_url(self) -> str:
        return "sqlite:///:memory:"


def test_the_blocking_twin_writes_reads_and_flushes_on_close(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'prism.db'}"
    now = datetime.now(UTC)
    with prism.connect_sync(url) as store:
        ts = store.timeseries("clicks", retention_seconds=3600)
        results = ts.write("user:42", [prism.Event(time=now, id="e1", value=b"a")])
        assert results[0].ok and not results[0].existed
        ts.write_nowait("user:42", [prism.Event(time=now - timedelta(seconds=1), id="e2", value=b"b")])
        assert [e.id for e in ts.read("user:42").events] == ["e1"]
    with prism.connect_sync(url) as store:
        ts = store.timeseries("clicks", retention_seconds=3600)
        assert [e.id for e in ts.read("user:42").events] == ["e1", "e2"]
        assert ts.drop_expired() == 0
        ts.delete_series("user:42")
        assert ts.read("user:42").events == []


def test_backends_without_timeseries_say_why() -> None:
    check_unsupported(prism.connect("prism+http://127.0.0.1:1"))
    nats = prism.connect("nats://127.0.0.1:1")
    check_unsupported(nats)
    with pytest.raises(prism.Unsupported, match="JetStream KV buckets cannot read"):
        nats.timeseries("clicks")
