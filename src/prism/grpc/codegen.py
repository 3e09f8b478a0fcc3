"""Generate the Python modules of ``proto/`` (run ``python -m prism.grpc.codegen``).

The ``.proto`` files under ``proto/`` are the source of truth of the gRPC API; their
modules are checked in under ``prism/grpc/_gen`` so an installed Prism needs no
compiler. ``tests/grpc_api/test_grpc_codegen.py`` regenerates them into a temporary folder
and fails when the checked-in copies differ.

The generated modules import each other by their proto package (``prism.v1``,
``prism.interfaces.keyvalue``); those imports are rewritten to live under
``prism.grpc._gen`` so they never shadow the ``prism`` package itself.
"""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

__all__ = ["GENERATED", "PROTO_FILES", "PROTO_ROOT", "SHIPPED_SOURCES", "generate"]

#: The repository's proto/ folder (the sources).
PROTO_ROOT = Path(__file__).resolve().parents[3] / "proto"
#: Where the generated modules are checked in.
GENERATED = Path(__file__).resolve().parent / "_gen"
#: The sources, relative to PROTO_ROOT.
PROTO_FILES = (
    "prism/common/types.proto",
    "prism/interfaces/keyvalue/keyvalue_basic.proto",
    "prism/interfaces/keyvalue/keyvalue_batch.proto",
    "prism/interfaces/keyvalue/keyvalue_ttl.proto",
    "prism/interfaces/lifecycle.proto",
    "prism/v1/keyvalue.proto",
    "prism/v1/namespaces.proto",
    "prism/options.proto",
    "prism/v1/signals.proto",
)
#: Sources shipped beside the modules, for ``.proto`` files of applications to import.
SHIPPED_SOURCES = ("prism/options.proto",)

_IMPORT = re.compile(r"^(from|import) prism\.", re.MULTILINE)
_HEADER = "# Generated from proto/ by `python -m prism.grpc.codegen`: do not edit.\n"


def generate(out: Path, proto_root: Path = PROTO_ROOT) -> list[Path]:
    """Write the modules of every proto file under ``out`` (a package folder); the files written."""
    try:
        from grpc_tools import protoc
    except ImportError as exc:  # pragma: no cover - a dev dependency
        raise RuntimeError("generating the gRPC modules needs grpcio-tools (a dev dependency)") from exc
    include = Path(protoc.__file__).resolve().parent / "_proto"
    with tempfile.TemporaryDirectory() as raw:
        tmp = Path(raw)
        args = [
            "grpc_tools.protoc",
            f"-I{proto_root}",
            f"-I{include}",
            f"--python_out={tmp}",
            f"--pyi_out={tmp}",
            f"--grpc_python_out={tmp}",
            *PROTO_FILES,
        ]
        if protoc.main(args) != 0:
            raise RuntimeError(f"protoc failed on {proto_root}")
        written: list[Path] = []
        out.mkdir(parents=True, exist_ok=True)
        (out / "__init__.py").write_text('"""Modules generated from proto/."""\n')
        written.append(out / "__init__.py")
        for source in sorted(tmp.rglob("*.py*")):
            relative = source.relative_to(tmp)
            target = out / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            for package in relative.parents:
                init = out / package / "__init__.py"
                if package != Path(".") and not init.exists():
                    init.write_text("")
                    written.append(init)
            text = _IMPORT.sub(r"\1 prism.grpc._gen.prism.", source.read_text())
            target.write_text(_HEADER + text)
            written.append(target)
        for name in SHIPPED_SOURCES:
            target = out / name
            target.write_text((proto_root / name).read_text())
            written.append(target)
    return written


if __name__ == "__main__":
    for path in generate(Path(sys.argv[1]) if len(sys.argv) > 1 else GENERATED):
        print(path)
