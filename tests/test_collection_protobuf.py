"""Collection[T] of protobuf message classes: JSON by default (the .proto field names), binary on request."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

import prism
from prism import Collection, DecodeError, InvalidArgument
from prism.grpc._gen.prism.v1 import keyvalue_pb2 as pb
from prism.kv.codecs import ProtobufCodec
from prism.kv.store import Store

ITEM = pb.Item(key="k1", value=b"\x00\xff", etag="e", expires_at=12.5, content_type="text/plain", found=True)


@pytest.fixture
async def store() -> AsyncIterator[Store]:
    async with prism.connect("memory://") as store:
        yield store


async def test_a_message_round_trips_as_json_with_proto_field_names(store: Store) -> None:
    coll: Collection[pb.Item] = store.collection("items", pb.Item)
    assert isinstance(coll.codec, ProtobufCodec) and coll.codec.content_type == "application/json"
    await coll.put("a", ITEM)
    assert await coll.get("a") == ITEM
    raw = await coll.namespace.get("a")
    assert raw is not None and raw.content_type == "application/json"
    assert b'"content_type":"text/plain"' in raw.value.replace(b" ", b"")
    assert await coll.get_many(["a", "missing"]) == {"a": ITEM}


async def test_the_binary_wire_form(store: Store) -> None:
    coll = Collection(store.namespace("bin"), pb.Item, ProtobufCodec(pb.Item, binary=True))
    await coll.put("a", ITEM)
    raw = await coll.namespace.get("a")
    assert raw is not None and raw.content_type == "application/x-protobuf"
    assert raw.value == ITEM.SerializeToString(deterministic=True)
    assert await coll.get("a") == ITEM


async def test_another_type_is_refused_and_nothing_is_written(store: Store) -> None:
    coll: Collection[pb.Item] = store.collection("items", pb.Item)
    with pytest.raises(InvalidArgument, match="expected Item, got GetRequest"):
        await coll.put("a", pb.GetRequest(key="x"))
    assert await coll.namespace.get("a") is None


@pytest.mark.parametrize("binary", [False, True])
async def test_a_stored_value_that_does_not_decode_names_the_key(store: Store, binary: bool) -> None:
    coll = Collection(store.namespace("items"), pb.Item, ProtobufCodec(pb.Item, binary=binary))
    await coll.namespace.put("bad", b'{"no_such_field": 1}' if not binary else b"\xff\xff\xff")
    with pytest.raises(DecodeError, match="value at 'bad' does not decode as Item"):
        await coll.get("bad")


def test_the_sync_collection_takes_messages_too() -> None:
    with prism.connect_sync("memory://") as store:
        coll = store.collection("items", pb.Item)
        coll.put("a", ITEM)
        assert coll.get("a") == ITEM
        assert isinstance(coll.codec, ProtobufCodec)
