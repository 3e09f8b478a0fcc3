"""Needs declared in protobuf: real .proto files compiled at run time, turned into namespace bodies.

The bodies are checked against the gateway's own NamespaceConfig, and one of them is
served: the (prism.pii) fields found in the .proto are masked in values that a
Collection of the compiled message class wrote.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

import prism
from prism.control.protospec import FieldIndex, namespace_from_proto, options_include_dir
from prism.errors import InvalidArgument
from prism.gateway import create_app, parse_config
from prism.gateway.auth import hash_api_key
from prism.gateway.config import NamespaceConfig
from prism.gateway.runtime_namespaces import NamespaceBody
from prism.kv.codecs import ProtobufCodec

pytest.importorskip("grpc_tools")

USERS = """
syntax = "proto3";
package acme.users;
import "prism/options.proto";

message Address {
  string street = 1 [(prism.pii) = "address"];
  string city = 2;
  GeoPoint at = 3;
}
message GeoPoint { double lat = 1 [(prism.pii) = "location"]; double lon = 2 [(prism.pii) = "location"]; }

message UserProfile {
  option (prism.consistency) = "strong";
  option (prism.cache) = "true";
  option (prism.backend) = "postgresql";
  option (prism.access_pattern) = "kv";
  option (prism.read_rps) = 500;
  option (prism.write_rps) = 50;
  option (prism.item_bytes_p99) = 4096;
  option (prism.total_bytes) = 1000000000;
  option (prism.ttl_seconds) = 86400;
  option (prism.latency_p99_ms) = 20;
  option (prism.transactions) = true;
  option (prism.durability) = "replicated";
  string id = 1 [(prism.index) = "unique"];
  string email = 2 [(prism.pii) = "email"];
  string name = 3 [(prism.pii) = "name", (prism.index) = "secondary"];
  Address address = 4;
  repeated Address previous = 5;
  map<string, string> tags = 6;
  int32 age = 7;
}

message Plain { string a = 1; }
"""


def write(tmp_path: Path, text: str, name: str = "users.proto") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_every_option_becomes_the_namespace_body(tmp_path: Path) -> None:
    spec = namespace_from_proto(write(tmp_path, USERS), "UserProfile")
    assert spec.message == "acme.users.UserProfile"
    assert spec.body == {
        "needs": {
            "access_pattern": "kv",
            "read_rps": 500.0,
            "write_rps": 50.0,
            "item_bytes_p99": 4096,
            "total_bytes": 1_000_000_000,
            "ttl_seconds": 86400.0,
            "consistency": "strong",
            "latency_p99_ms": 20.0,
            "transactions": True,
            "durability": "replicated",
        },
        "pii": {
            "fields": [
                "email",
                "name",
                "address.street",
                "address.at.lat",
                "address.at.lon",
                "previous.street",
                "previous.at.lat",
                "previous.at.lon",
            ]
        },
        "backend": "postgresql",
    }
    assert spec.store_preference == "postgresql"
    # The body is what PUT /v1/namespaces/{ns} takes, and the namespace model, field for field.
    put = msgspec.convert(spec.body, NamespaceBody)
    assert put.backend == "postgresql" and put.store is None
    config = msgspec.convert(
        {"name": "users", **{k: v for k, v in spec.body.items() if k != "backend"}}, NamespaceConfig
    )
    assert config.needs is not None and config.needs.durability == "replicated"
    assert config.pii is not None and "address.at.lat" in config.pii.fields


def test_index_and_cache_are_recorded_and_reported_never_dropped(tmp_path: Path) -> None:
    spec = namespace_from_proto(write(tmp_path, USERS), "acme.users.UserProfile")
    assert spec.indexes == [FieldIndex("id", "unique"), FieldIndex("name", "secondary")]
    assert spec.cache is True
    assert len(spec.warnings) == 3
    assert "acme.users.UserProfile.id: (prism.index) = 'unique'" in spec.warnings[0]
    assert "not supported yet" in spec.warnings[1]
    assert "(prism.cache) = 'true' is recorded but not supported yet" in spec.warnings[2]


def test_a_message_without_options_declares_nothing(tmp_path: Path) -> None:
    spec = namespace_from_proto(write(tmp_path, USERS), "Plain")
    assert spec.body == {} and spec.warnings == [] and spec.indexes == [] and spec.cache is None


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (
            'option (prism.consistency) = "strongest";',
            "option (prism.consistency) = 'strongest': must be one of",
        ),
        ('option (prism.access_pattern) = "graph";', "option (prism.access_pattern) = 'graph'"),
        ('option (prism.durability) = "tape";', "option (prism.durability) = 'tape'"),
        ('option (prism.cache) = "yes";', "option (prism.cache) = 'yes'"),
        ("option (prism.read_rps) = -5;", "option (prism.read_rps) = -5.0: must not be negative"),
        ('option (prism.backend) = "";', "option (prism.backend) is empty"),
        ('option (prism.backend) = "main";', "option (prism.backend) = 'main': must be an engine (postgres,"),
    ],
)
def test_a_bad_option_value_is_refused_naming_it(tmp_path: Path, option: str, message: str) -> None:
    path = write(
        tmp_path, f'syntax = "proto3"; import "prism/options.proto"; message M {{ {option} string a = 1; }}'
    )
    with pytest.raises(InvalidArgument, match=rf"^M: {_escape(message)}"):
        namespace_from_proto(path, "M")


def _escape(text: str) -> str:
    import re

    return re.escape(text)


def test_an_empty_pii_kind_is_refused(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        'syntax = "proto3"; import "prism/options.proto"; message M { string a = 1 [(prism.pii) = ""]; }',
    )
    with pytest.raises(InvalidArgument, match=r"M\.a: option \(prism\.pii\) is empty"):
        namespace_from_proto(path, "M")


def test_a_recursive_message_holding_pii_is_refused(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        syntax = "proto3"; import "prism/options.proto";
        message Person { string email = 1 [(prism.pii) = "email"]; Person manager = 2; }
        message Tree { string label = 1; Tree left = 2; Tree right = 3; }
        """,
    )
    with pytest.raises(
        InvalidArgument, match=r"Person\.manager: Person nests itself and holds \(prism\.pii\)"
    ):
        namespace_from_proto(path, "Person")
    # Recursion without personal data is fine.
    assert namespace_from_proto(path, "Tree").body == {}


def test_an_unknown_message_lists_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(
        InvalidArgument, match=r"has no message 'Nope' \(its top-level messages: Address, GeoPoint"
    ):
        namespace_from_proto(write(tmp_path, USERS), "Nope")


def test_a_file_that_does_not_compile_says_why(tmp_path: Path) -> None:
    path = write(tmp_path, 'syntax = "proto3"; message M { strin a = 1; }')
    with pytest.raises(InvalidArgument, match=r"does not compile: .*strin"):
        namespace_from_proto(path, "M")
    with pytest.raises(InvalidArgument, match=r"there is no \.proto file"):
        namespace_from_proto(tmp_path / "missing.proto", "M")


def test_imports_from_include_folders(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    write(
        shared,
        'syntax = "proto3"; package s; import "prism/options.proto";\n'
        'message Card { string pan = 1 [(prism.pii) = "card"]; }',
        "card.proto",
    )
    app = tmp_path / "app"
    app.mkdir()
    path = write(app, 'syntax = "proto3"; package a; import "card.proto"; message Order { s.Card card = 1; }')
    with pytest.raises(InvalidArgument, match="does not compile"):
        namespace_from_proto(path, "Order")
    assert namespace_from_proto(path, "Order", include=[shared]).body == {"pii": {"fields": ["card.pan"]}}


def compiled(tmp_path: Path, proto: Path) -> Any:
    """The Python module protoc generates for ``proto``, imported."""
    out = tmp_path / "gen"
    out.mkdir()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{proto.parent}",
            f"-I{options_include_dir()}",
            f"--python_out={out}",
            str(proto),
        ],
        check=True,
    )
    # The options module the generated code imports is the one shipped with Prism.
    sys.modules.setdefault("prism.options_pb2", importlib.import_module("prism.grpc._gen.prism.options_pb2"))
    sys.path.insert(0, str(out))
    try:
        return importlib.import_module(proto.stem + "_pb2")
    finally:
        sys.path.remove(str(out))


async def test_a_namespace_from_the_proto_masks_what_a_collection_of_it_wrote(tmp_path: Path) -> None:
    proto = write(tmp_path, USERS, "profiles.proto")
    spec = namespace_from_proto(proto, "UserProfile")
    module = compiled(tmp_path, proto)
    profile = module.UserProfile(
        id="u1",
        email="ada@example.com",
        name="Ada",
        age=36,
        address=module.Address(street="1 Main St", city="Paris", at=module.GeoPoint(lat=48.8, lon=2.3)),
    )
    async with prism.connect("memory://") as store:
        collection = store.collection("profiles", module.UserProfile)
        assert isinstance(collection.codec, ProtobufCodec)
        await collection.put("u1", profile)
        assert await collection.get("u1") == profile
        stored = await collection.namespace.get("u1")
        assert stored is not None
    body = {k: v for k, v in spec.body.items() if k != "backend"}
    keys = [
        {"name": "writer", "sha256": hash_api_key("key-writer"), "roles": ["writer"]},
        {"name": "reader", "sha256": hash_api_key("key-reader"), "roles": ["reader"]},
    ]
    config = {
        "stores": {"main": "memory://"},
        "auth": {"api_keys": keys},
        "namespaces": [{"name": "profiles", **body}],
        "audit": {"sink": "none"},
    }
    app = create_app(parse_config(config, source="test.yaml", env={}), env={})
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as client,
    ):
        r = await client.put(
            "/v1/kv/profiles/u1",
            content=stored.value,
            headers={"X-API-Key": "key-writer", "Content-Type": "application/json"},
        )
        assert r.status_code in (200, 201), r.text
        seen = (await client.get("/v1/kv/profiles/u1", headers={"X-API-Key": "key-reader"})).json()
        assert seen["email"] == seen["name"] == "***"
        assert seen["address"] == {"street": "***", "city": "Paris", "at": {"lat": "***", "lon": "***"}}
        assert seen["id"] == "u1" and seen["age"] == 36
