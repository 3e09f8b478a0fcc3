"""Codecs that turn typed objects into stored bytes and back."""

from __future__ import annotations

import sys
from typing import Any, Generic, Protocol, TypeVar, cast

import msgspec
import msgspec.inspect

from prism.errors import DecodeError, InvalidArgument

__all__ = ["Codec", "ProtobufCodec", "codec_for"]

T = TypeVar("T")


class Codec(Protocol[T]):
    content_type: str

    def encode(self, obj: T) -> bytes: ...

    def decode(self, data: bytes) -> T: ...


class BytesCodec:
    content_type = "application/octet-stream"

    def encode(self, obj: bytes) -> bytes:
        if not isinstance(obj, bytes | bytearray | memoryview):
            raise InvalidArgument(f"expected bytes, got {type(obj).__name__}")
        return bytes(obj)

    def decode(self, data: bytes) -> bytes:
        return data


class StrCodec:
    content_type = "text/plain; charset=utf-8"

    def encode(self, obj: str) -> bytes:
        if not isinstance(obj, str):
            raise InvalidArgument(f"expected str, got {type(obj).__name__}")
        return obj.encode("utf-8")

    def decode(self, data: bytes) -> str:
        return data.decode("utf-8")


class JsonCodec(Generic[T]):
    """msgspec JSON for Structs, dataclasses, TypedDicts, dicts, lists and scalars."""

    content_type = "application/json"

    def __init__(self, type_: Any) -> None:
        self._type = type_
        self._cls = type_ if isinstance(type_, type) and type_ not in (dict, list) else None
        self._decoder = msgspec.json.Decoder(type_)
        self._encoder = msgspec.json.Encoder()

    def encode(self, obj: T) -> bytes:
        name = getattr(self._type, "__name__", repr(self._type))
        if self._cls is not None and not isinstance(obj, self._cls):
            raise InvalidArgument(f"expected {name}, got {type(obj).__name__}")
        try:
            if self._cls is None:
                # Generic containers (dict[str, int], list[Foo]): refuse what would not decode back.
                msgspec.convert(obj, self._type)
            return self._encoder.encode(obj)
        except (msgspec.ValidationError, TypeError) as exc:
            raise InvalidArgument(f"cannot encode {type(obj).__name__} as {name}: {exc}") from exc

    def decode(self, data: bytes) -> T:
        return cast(T, self._decoder.decode(data))


class PydanticCodec(Generic[T]):
    content_type = "application/json"

    def __init__(self, type_: Any) -> None:
        self._type = type_

    def encode(self, obj: T) -> bytes:
        if not isinstance(obj, self._type):
            raise InvalidArgument(f"expected {self._type.__name__}, got {type(obj).__name__}")
        return cast(bytes, obj.model_dump_json().encode("utf-8"))

    def decode(self, data: bytes) -> T:
        return cast(T, self._type.model_validate_json(data))


class ProtobufCodec(Generic[T]):
    """Protobuf message classes: their JSON form by default, the binary wire form with ``binary=True``.

    JSON keeps the ``.proto`` field names (``preserving_proto_field_name``), so the
    ``(prism.pii)`` fields of a namespace declared from the same ``.proto`` are found
    and masked by the gateway; the binary form is smaller but opaque to those rules.
    """

    def __init__(self, type_: Any, *, binary: bool = False) -> None:
        self._type = type_
        self.binary = binary
        self.content_type = "application/x-protobuf" if binary else "application/json"

    def encode(self, obj: T) -> bytes:
        if not isinstance(obj, self._type):
            raise InvalidArgument(f"expected {self._type.__name__}, got {type(obj).__name__}")
        if self.binary:
            return cast(bytes, obj.SerializeToString(deterministic=True))
        from google.protobuf import json_format

        text = json_format.MessageToJson(obj, preserving_proto_field_name=True, indent=None)
        return cast(str, text).encode("utf-8")

    def decode(self, data: bytes) -> T:
        if self.binary:
            return cast(T, self._type.FromString(data))
        from google.protobuf import json_format

        return cast(T, json_format.Parse(data, self._type()))


def _is_protobuf(type_: Any) -> bool:
    # A message class exists only once its runtime is imported: no import needed to tell.
    message = sys.modules.get("google.protobuf.message")
    return message is not None and isinstance(type_, type) and issubclass(type_, message.Message)


def _is_pydantic(type_: Any) -> bool:
    return (
        isinstance(type_, type)
        and hasattr(type_, "model_validate_json")
        and hasattr(type_, "model_dump_json")
    )


def codec_for(type_: Any) -> Codec[Any]:
    """The codec for ``type_``: bytes, str, protobuf messages, pydantic models, or anything msgspec
    can type as JSON."""
    if type_ is bytes:
        return BytesCodec()
    if type_ is str:
        return StrCodec()
    if _is_protobuf(type_):
        return ProtobufCodec(type_)
    if _is_pydantic(type_):
        return PydanticCodec(type_)
    try:
        info = msgspec.inspect.type_info(type_)
        if isinstance(info, msgspec.inspect.CustomType):
            raise TypeError("not a Struct, dataclass, pydantic model, TypedDict or JSON type")
        return JsonCodec(type_)
    except TypeError as exc:
        raise InvalidArgument(f"no codec for type {type_!r}: {exc}") from exc


def decode_error(key: str, type_: Any, exc: Exception) -> DecodeError:
    name = getattr(type_, "__name__", repr(type_))
    return DecodeError(f"value at {key!r} does not decode as {name}: {exc}", key=key)
