"""The checked-in modules under prism/grpc/_gen are exactly what proto/ generates."""

from __future__ import annotations

from pathlib import Path

import pytest

from prism.grpc.codegen import GENERATED, PROTO_ROOT, generate


def _tree(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): path.read_text()
        for path in sorted(root.rglob("*"))
        if path.is_file() and "__pycache__" not in path.parts
    }


def test_generated_modules_match_the_protos(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools")
    generate(tmp_path / "_gen", PROTO_ROOT)
    fresh, checked_in = _tree(tmp_path / "_gen"), _tree(GENERATED)
    stale = sorted(
        name for name in fresh.keys() | checked_in.keys() if fresh.get(name) != checked_in.get(name)
    )
    assert not stale, f"regenerate with `python -m prism.grpc.codegen`; stale: {stale}"


def test_seed_interfaces_keep_their_wire_names() -> None:
    from prism.grpc._gen.prism.interfaces import lifecycle_pb2
    from prism.grpc._gen.prism.interfaces.keyvalue import keyvalue_basic_pb2, keyvalue_ttl_pb2

    basic = keyvalue_basic_pb2.DESCRIPTOR
    assert basic.package == "prism.interfaces.keyvalue"
    assert basic.name == "prism/interfaces/keyvalue/keyvalue_basic.proto"
    assert [m.name for m in basic.services_by_name["KeyValueBasicInterface"].methods] == [
        "Set",
        "Get",
        "Delete",
        "Exists",
    ]
    fields = {f.name: (f.number, f.type) for f in keyvalue_basic_pb2.GetResponse.DESCRIPTOR.fields}
    assert fields == {"found": (1, 8), "value": (2, 12), "error": (3, 9)}
    ttl = {f.name: (f.number, f.type) for f in keyvalue_ttl_pb2.GetTTLResponse.DESCRIPTOR.fields}
    assert ttl == {"ttl_seconds": (1, 3), "error": (2, 9)}
    assert lifecycle_pb2.DESCRIPTOR.package == "prism.interfaces"
