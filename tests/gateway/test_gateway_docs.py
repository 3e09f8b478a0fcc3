"""The configuration reference stays true: its example parses, and it documents every key."""

from __future__ import annotations

import re
from pathlib import Path

import msgspec
import yaml

from prism.gateway import config as config_module
from prism.gateway.config import GatewayConfig, parse_config

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_the_complete_example_is_a_valid_config() -> None:
    (block,) = re.findall(r"<!-- doc-test: id=complete -->\n```yaml\n(.*?)```", DOC.read_text(), re.S)
    config = parse_config(yaml.safe_load(block), env={"REDIS_PASSWORD": "x"})
    assert isinstance(config, GatewayConfig)
    assert [ns.name for ns in config.namespaces] == ["orders", "sessions", "clicks"]


def test_every_config_field_is_documented() -> None:
    text = DOC.read_text()
    internal = {"source", "base_dir"}
    structs = [
        value
        for value in vars(config_module).values()
        if isinstance(value, type)
        and issubclass(value, msgspec.Struct)
        and value.__module__ == config_module.__name__
    ]
    missing = [
        f"{struct.__name__}.{field}"
        for struct in structs
        for field in struct.__struct_fields__
        if field not in internal
        and not any(form in text for form in (f"`{field}`", f".{field}`", f"`{field}.", f"`{field}[]"))
    ]
    assert missing == []
