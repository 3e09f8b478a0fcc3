"""``server.grpc_port`` and ``compat.namespace``: validated with the rest of the config."""

from __future__ import annotations

from typing import Any

import pytest

from prism.gateway.config import ConfigError, parse_config
from prism.grpc.server import grpc_port


def _config(**extra: Any) -> dict[str, Any]:
    return {"stores": {"main": "memory://"}, "namespaces": [{"name": "plain"}], **extra}


def test_the_grpc_port_defaults_to_8081_and_can_be_turned_off() -> None:
    assert grpc_port(parse_config(_config(), source="t.yaml")) == (8081, False)
    assert grpc_port(parse_config(_config(server={"grpc_port": 0}), source="t.yaml")) == (0, True)
    assert grpc_port(parse_config(_config(server={"grpc_port": 9000}), source="t.yaml"), 9001) == (9001, True)


@pytest.mark.parametrize(
    ("extra", "where"),
    [
        ({"server": {"grpc_port": 70000}}, "$.server.grpc_port"),
        ({"server": {"grpc_port": -1}}, "$.server.grpc_port"),
        ({"compat": {"namespace": "nope"}}, "$.compat.namespace"),
        ({"compat": {"namespaces": "plain"}}, "compat"),
    ],
)
def test_bad_settings_are_named(extra: dict[str, Any], where: str) -> None:
    with pytest.raises(ConfigError) as refused:
        parse_config(_config(**extra), source="t.yaml")
    assert where in str(refused.value)
