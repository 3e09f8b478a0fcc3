"""A namespace declared in protobuf: the options of a message type as a namespace body.

A message type carries its data-handling rules and its namespace's needs as the custom
options of ``prism/options.proto``::

    import "prism/options.proto";

    message UserProfile {
      option (prism.consistency) = "strong";
      option (prism.read_rps) = 500;
      string email = 2 [(prism.pii) = "email"];
      Address address = 3;   // its (prism.pii) fields count too, as address.street
    }

:func:`namespace_from_proto` compiles the ``.proto`` file at run time (with
grpcio-tools' ``protoc``) and answers the body a ``PUT /v1/namespaces/{ns}`` takes:
``needs`` from the message options, ``pii.fields`` from the field options (nested
fields by dotted path, the names a JSON value of the message has), and ``backend`` from
``(prism.backend)`` (an engine, ``option (prism.backend) = "postgres";``: the planner
chooses among the stores of that engine meeting every need).
What the gateway does not serve yet (``(prism.index)``, ``(prism.cache)``) is
recorded in the result and listed in ``warnings``, never dropped.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prism.control.planner import ENGINES, engine
from prism.errors import InvalidArgument

__all__ = ["FieldIndex", "ProtoNamespace", "namespace_from_proto", "options_include_dir"]

#: The values a string option may take, by option name.
_CHOICES: dict[str, tuple[str, ...]] = {
    "consistency": ("strong", "eventual"),
    "access_pattern": ("kv", "records", "timeseries"),
    "durability": ("memory", "disk", "replicated"),
    "cache": ("true", "false"),
}
#: Message options that are needs, in the order NeedsConfig lists them.
_NEEDS = (
    "access_pattern",
    "read_rps",
    "write_rps",
    "item_bytes_p99",
    "total_bytes",
    "ttl_seconds",
    "consistency",
    "latency_p99_ms",
    "transactions",
    "durability",
)
#: How long protoc may take on one file (seconds).
COMPILE_TIMEOUT = 60.0


@dataclass(frozen=True)
class FieldIndex:
    """An index asked for with ``(prism.index)`` on a field (dotted path) of the message."""

    field: str
    kind: str


@dataclass(frozen=True)
class ProtoNamespace:
    """What the options of one message type declare, as a namespace."""

    #: The message's full name (``acme.users.UserProfile``).
    message: str
    #: The body of ``PUT /v1/namespaces/{ns}``.
    body: dict[str, Any]
    #: ``(prism.backend)``: the engine asked for; the planner picks a store of it meeting every need.
    store_preference: str | None = None
    #: ``(prism.cache)``: whether reads may come from a cache tier (not served yet).
    cache: bool | None = None
    #: ``(prism.index)`` options (not served yet).
    indexes: list[FieldIndex] = field(default_factory=list)
    #: Options declared but not applied, one sentence each.
    warnings: list[str] = field(default_factory=list)


def options_include_dir() -> Path:
    """The folder holding ``prism/options.proto`` (shipped with the package) for ``-I``."""
    return Path(__file__).resolve().parents[1] / "grpc" / "_gen"


def _descriptor_set(path: Path, include: Sequence[Path]) -> bytes:
    """The FileDescriptorSet of ``path`` and its imports, compiled by protoc in a child process.

    A child process, because protoc reports errors on its own stderr, which is read here
    and put in the error.
    """
    try:
        import grpc_tools
    except ImportError:
        raise InvalidArgument(
            "reading a .proto file needs protoc from grpcio-tools: pip install 'prism[proto]'"
        ) from None
    protoc_include = Path(grpc_tools.__file__).resolve().parent / "_proto"
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "set.pb"
        args = [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{path.parent}",
            *(f"-I{p}" for p in include),
            f"-I{options_include_dir()}",
            f"-I{protoc_include}",
            "--include_imports",
            f"--descriptor_set_out={out}",
            str(path),
        ]
        try:
            done = subprocess.run(args, capture_output=True, timeout=COMPILE_TIMEOUT, check=False)
        except subprocess.TimeoutExpired:
            raise InvalidArgument(f"{path}: protoc did not finish within {COMPILE_TIMEOUT:g} s") from None
        if done.returncode != 0:
            detail = done.stderr.decode("utf-8", "replace").strip() or f"exit status {done.returncode}"
            raise InvalidArgument(f"{path} does not compile: {detail}")
        return out.read_bytes()


def namespace_from_proto(
    path: str | Path, message: str, *, include: Sequence[str | Path] = ()
) -> ProtoNamespace:
    """The namespace that message type ``message`` of the ``.proto`` file ``path`` declares.

    ``message`` is the type's name, bare (``UserProfile``) or full
    (``acme.users.UserProfile``). ``include`` adds import folders (the file's own folder
    and the one holding ``prism/options.proto`` are always searched). Raises
    InvalidArgument when the file does not compile, the message is not in it, or an
    option has a value outside its rule (the message names the option and the field).
    """
    from google.protobuf import descriptor_pb2, descriptor_pool

    from prism.grpc._gen.prism import options_pb2 as opt

    source = Path(path)
    if not source.is_file():
        raise InvalidArgument(f"there is no .proto file at {source}")
    files = descriptor_pb2.FileDescriptorSet.FromString(
        _descriptor_set(source.resolve(), [Path(p) for p in include])
    )
    pool = descriptor_pool.DescriptorPool()
    for proto in files.file:
        pool.Add(proto)
    target = files.file[-1]
    full = message if "." in message else f"{target.package}.{message}" if target.package else message
    try:
        desc = pool.FindMessageTypeByName(full)
    except KeyError:
        known = ", ".join(m.name for m in target.message_type) or "none"
        raise InvalidArgument(
            f"{source} has no message {message!r} (its top-level messages: {known})"
        ) from None
    # The options parsed with the generated classes, so Prism's extensions are known.
    options = descriptor_pb2.MessageOptions.FromString(desc.GetOptions().SerializeToString())
    where = f"{desc.full_name}: option (prism.%s)"
    declared: dict[str, Any] = {}
    for name in (*_NEEDS, "cache", "backend"):
        ext = getattr(opt, name)
        if options.HasExtension(ext):
            value = options.Extensions[ext]
            choices = _CHOICES.get(name)
            if choices is not None and value not in choices:
                raise InvalidArgument(
                    f"{where % name} = {value!r}: must be one of {', '.join(repr(c) for c in choices)}"
                )
            if isinstance(value, int | float) and not isinstance(value, bool) and value < 0:
                raise InvalidArgument(f"{where % name} = {value!r}: must not be negative")
            declared[name] = value
    pii: list[str] = []
    indexes: list[FieldIndex] = []
    _walk_fields(desc, "", (desc.full_name,), pii, indexes, opt, descriptor_pb2)
    body: dict[str, Any] = {}
    needs = {name: declared[name] for name in _NEEDS if name in declared}
    if needs:
        body["needs"] = needs
    if pii:
        body["pii"] = {"fields": pii}
    store = declared.get("backend")
    if store is not None:
        if not store:
            raise InvalidArgument(f"{where % 'backend'} is empty: name an engine or leave the option out")
        if engine(store) is None:
            raise InvalidArgument(
                f"{where % 'backend'} = {store!r}: must be an engine ({', '.join(ENGINES)})"
            )
        body["backend"] = store
    cache = None if "cache" not in declared else declared["cache"] == "true"
    warnings = [
        f"{desc.full_name}.{ix.field}: (prism.index) = {ix.kind!r} is recorded but not supported yet; "
        "no index is built"
        for ix in indexes
    ]
    if cache is not None:
        warnings.append(
            f"{desc.full_name}: (prism.cache) = {declared['cache']!r} is recorded but not supported yet; "
            "reads go to the store"
        )
    return ProtoNamespace(desc.full_name, body, store, cache, indexes, warnings)


def _walk_fields(
    desc: Any,
    prefix: str,
    seen: tuple[str, ...],
    pii: list[str],
    indexes: list[FieldIndex],
    opt: Any,
    descriptor_pb2: Any,
) -> None:
    """Collect the (prism.pii) and (prism.index) fields of ``desc``, nested messages by dotted path."""
    for f in desc.fields:
        path = f"{prefix}{f.name}"
        options = descriptor_pb2.FieldOptions.FromString(f.GetOptions().SerializeToString())
        if options.HasExtension(opt.pii):
            kind = options.Extensions[opt.pii]
            if not kind:
                raise InvalidArgument(
                    f"{desc.full_name}.{f.name}: option (prism.pii) is empty: name the kind of data "
                    '("email", "name", ...)'
                )
            pii.append(path)
        if options.HasExtension(opt.index):
            indexes.append(FieldIndex(path, options.Extensions[opt.index]))
        nested = f.message_type
        if nested is None or nested.GetOptions().map_entry:
            continue
        if nested.full_name in seen:
            # A recursive type: its fields are listed at the shallower path, and a PII rule
            # cannot reach every depth, so personal data down there would go unmasked.
            if _has_pii(nested, set(), opt, descriptor_pb2):
                raise InvalidArgument(
                    f"{desc.full_name}.{f.name}: {nested.full_name} nests itself and holds (prism.pii) "
                    "fields, which a namespace's PII rules cannot reach at every depth"
                )
            continue
        _walk_fields(nested, f"{path}.", (*seen, nested.full_name), pii, indexes, opt, descriptor_pb2)


def _has_pii(desc: Any, visited: set[str], opt: Any, descriptor_pb2: Any) -> bool:
    """True when ``desc`` or a message nested in it has a (prism.pii) field."""
    visited.add(desc.full_name)
    for f in desc.fields:
        options = descriptor_pb2.FieldOptions.FromString(f.GetOptions().SerializeToString())
        if options.HasExtension(opt.pii):
            return True
        nested = f.message_type
        if (
            nested is not None
            and nested.full_name not in visited
            and _has_pii(nested, visited, opt, descriptor_pb2)
        ):
            return True
    return False
