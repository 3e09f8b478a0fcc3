"""``kind: timeseries`` namespaces: their config, and ``/v1/ts/{ns}/{series}`` through the gateway."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from gateway_helpers import ENV, build_app

from prism.gateway.config import ConfigError, parse_config


def _config(*namespaces: dict[str, Any], store: str = "memory://") -> dict[str, Any]:
    return {"stores": {"main": store}, "namespaces": list(namespaces), "audit": {"sink": "none"}}


def test_timeseries_namespaces_take_their_settings() -> None:
    config = parse_config(
        _config(
            {
                "name": "clicks",
                "kind": "timeseries",
                "timeseries": {"slice_seconds": 60, "retention_seconds": 3600},
            },
            {"name": "plain"},
        ),
        env=ENV,
    )
    clicks, plain = config.namespaces
    assert clicks.kind == "timeseries" and clicks.timeseries is not None
    assert (clicks.timeseries.slice_seconds, clicks.timeseries.retention_seconds) == (60, 3600)
    assert plain.kind == "kv" and plain.timeseries is None


@pytest.mark.parametrize(
    ("namespace", "where", "message"),
    [
        ({"name": "x", "kind": "queue"}, "$.namespaces[0].kind", "Invalid enum value 'queue'"),
        (
            {"name": "x", "timeseries": {}},
            "$.namespaces[0].timeseries",
            "only a namespace of kind: timeseries",
        ),
        ({"name": "x", "kind": "timeseries", "default_ttl": 60}, "$.namespaces[0].default_ttl", "retention"),
        (
            {"name": "x", "kind": "timeseries", "timeseries": {"slice_seconds": 0}},
            "$.namespaces[0].timeseries",
            "slice_seconds",
        ),
        (
            {"name": "x", "kind": "timeseries", "timeseries": {"slice": 60}},
            "$.namespaces[0].timeseries",
            "slice",
        ),
    ],
)
def test_bad_timeseries_settings_name_the_field(namespace: dict[str, Any], where: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(_config(namespace), source="test.yaml", env=ENV)
    assert where in str(caught.value) and message in str(caught.value)


def test_a_store_without_timeseries_is_refused_naming_why(tmp_path: Path) -> None:
    config = _config({"name": "clicks", "kind": "timeseries"}, store="nats://127.0.0.1:1")
    with pytest.raises(ConfigError) as caught:
        build_app(config)
    text = str(caught.value)
    assert "$.namespaces[0].kind" in text and "JetStream KV buckets cannot read" in text
