"""Collection[T]: typed values over a namespace, with one codec per kind of type."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import msgspec
import pydantic
import pytest

import prism
from prism import Collection, DecodeError, InvalidArgument, PreconditionFailed, PrismError
from prism.kv.store import Store


class User(msgspec.Struct):
    name: str
    age: int
    tags: list[str] = []
    joined: datetime | None = None


@dataclass
class Point:
    x: int
    y: int
    labels: dict[str, str] = field(default_factory=dict)


class Account(pydantic.BaseModel):
    id: int
    email: str
    active: bool = True


class Opaque:
    """A class no codec knows how to store."""


CASES: list[tuple[Any, Any, str]] = [
    (User, User("Ada", 36, ["math"], datetime(2024, 5, 1, 12, 30, tzinfo=UTC)), "application/json"),
    (Point, Point(1, -2, {"k": "v"}), "application/json"),
    (Account, Account(id=7, email="ada@example.com"), "application/json"),
    (dict[str, int], {"a": 1, "b": 2}, "application/json"),
    (list[int], [3, 1, 2], "application/json"),
    (dict, {"nested": {"list": [1, "two", None]}, "f": 1.5}, "application/json"),
    (list, ["x", 1, {"y": True}], "application/json"),
    (str, "héllo 😀", "text/plain; charset=utf-8"),
    (bytes, bytes(range(256)), "application/octet-stream"),
]


@pytest.fixture
async def store() -> AsyncIterator[Store]:
    async with prism.connect("memory://") as store:
        yield store


@pytest.mark.parametrize(("type_", "obj", "content_type"), CASES, ids=lambda v: getattr(v, "__name__", None))
async def test_round_trip(store: Store, type_: Any, obj: Any, content_type: str) -> None:
    coll: Collection[Any] = store.collection("typed", type_)
    etag = await coll.put("k", obj)
    assert await coll.get("k") == obj
    raw = await coll.namespace.get("k")
    assert raw is not None and raw.content_type == content_type and raw.etag == etag
    assert await coll.get_with_etag("k") == (obj, etag)
    assert await coll.exists("k")
    assert await coll.delete("k") is True
    assert await coll.get("k") is None and await coll.get_with_etag("k") is None
    assert await coll.delete("k") is False


async def test_stored_json_is_plain_json(store: Store) -> None:
    users = store.collection("users", User)
    await users.put("u1", User("Ada", 36))
    raw = await store.namespace("users").get("u1")
    assert raw is not None
    assert json.loads(raw.value) == {"name": "Ada", "age": 36, "tags": [], "joined": None}
    await store.namespace("users").put("u2", b'{"name": "Grace", "age": 45}')
    assert await users.get("u2") == User("Grace", 45)


async def test_get_many_returns_only_found_keys(store: Store) -> None:
    users = store.collection("users", User)
    results = await users.put_many({"a": User("A", 1), "b": User("B", 2)})
    assert [(r.key, r.ok) for r in results] == [("a", True), ("b", True)]
    await users.put_many([("c", User("C", 3))])
    got = await users.get_many(["c", "missing", "a", "b"])
    assert got == {"c": User("C", 3), "a": User("A", 1), "b": User("B", 2)}
    assert list(got) == ["c", "a", "b"], "request order"
    assert await users.get_many([]) == {}


async def test_ttl_and_conditions(store: Store) -> None:
    points = store.collection("points", Point)
    etag = await points.put("p", Point(0, 0), ttl=60)
    raw = await points.namespace.get("p")
    assert raw is not None and raw.expires_at is not None
    with pytest.raises(PreconditionFailed):
        await points.put("p", Point(1, 1), if_absent=True)
    with pytest.raises(PreconditionFailed):
        await points.put("p", Point(1, 1), if_match="stale")
    new_etag = await points.put("p", Point(2, 2), if_match=etag)
    assert await points.get("p") == Point(2, 2)
    with pytest.raises(PreconditionFailed):
        await points.delete("p", if_match=etag)
    assert await points.delete("p", if_match=new_etag)
    results = await points.put_many({"q": Point(1, 2)}, ttl=30)
    assert results[0].ok
    raw = await points.namespace.get("q")
    assert raw is not None and raw.expires_at is not None


@pytest.mark.parametrize(
    ("type_", "stored"),
    [
        (User, b"not json"),
        (User, b'{"name": "Ada"}'),
        (User, b'{"name": "Ada", "age": "old"}'),
        (Point, b'{"x": 1}'),
        (Account, b'{"id": "seven", "email": "x"}'),
        (dict[str, int], b'{"a": "one"}'),
        (list[int], b'{"not": "a list"}'),
        (str, b"\xff\xfe invalid utf-8"),
    ],
    ids=lambda v: getattr(v, "__name__", None),
)
async def test_undecodable_values_raise_decode_error(store: Store, type_: Any, stored: bytes) -> None:
    coll: Collection[Any] = store.collection("typed", type_)
    await coll.namespace.put("bad key", stored)
    name = getattr(type_, "__name__", repr(type_))
    with pytest.raises(DecodeError, match=r"'bad key'.*" + name) as raised:
        await coll.get("bad key")
    assert raised.value.key == "bad key" and isinstance(raised.value, PrismError)
    assert raised.value.__cause__ is not None
    with pytest.raises(DecodeError, match="'bad key'"):
        await coll.get_many(["fine", "bad key"])
    with pytest.raises(DecodeError):
        await coll.get_with_etag("bad key")


async def test_get_many_never_drops_an_undecodable_value(store: Store) -> None:
    users = store.collection("users", User)
    await users.put("good", User("Ada", 36))
    await users.namespace.put("broken", b"[1, 2]")
    with pytest.raises(DecodeError, match="'broken'") as raised:
        await users.get_many(["good", "broken"])
    assert raised.value.key == "broken"


@pytest.mark.parametrize(
    ("type_", "wrong"),
    [
        (User, Point(1, 2)),
        (User, {"name": "Ada", "age": 36}),
        (Point, User("Ada", 36)),
        (Account, {"id": 1, "email": "x"}),
        (dict[str, int], {"a": "one"}),
        (list[int], ["x"]),
        (str, b"bytes"),
        (bytes, "text"),
    ],
    ids=lambda v: getattr(v, "__name__", None),
)
async def test_objects_of_the_wrong_type_are_refused(store: Store, type_: Any, wrong: Any) -> None:
    coll: Collection[Any] = store.collection("typed", type_)
    with pytest.raises(InvalidArgument):
        await coll.put("k", wrong)
    with pytest.raises(InvalidArgument):
        await coll.put_many([("fine", wrong)])
    assert await coll.namespace.get_many(["k", "fine"]) == [None, None], "nothing written"


async def test_a_bad_object_in_put_many_writes_nothing(store: Store) -> None:
    users = store.collection("users", User)
    with pytest.raises(InvalidArgument):
        await users.put_many({"a": User("A", 1), "b": "not a user"})  # type: ignore[arg-type]
    assert await users.get_many(["a", "b"]) == {}


async def test_types_without_a_codec_are_refused(store: Store) -> None:
    with pytest.raises(InvalidArgument, match="no codec"):
        store.collection("x", 42)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="no codec for type"):
        store.collection("opaque", Opaque)
    assert await store.namespace("opaque").get("k") is None


async def test_collection_metadata(store: Store) -> None:
    users = store.collection("users", User, max_value_bytes=64)
    assert users.name == "users" and users.type is User
    assert repr(users) == "<Collection 'users' of User>"
    with pytest.raises(prism.ValueTooLarge):
        await users.put("big", User("x" * 100, 1))
    assert (await users.scan()).keys == []
    await users.put("u:1", User("A", 1))
    assert (await users.scan("u:")).keys == ["u:1"]


def test_sync_collection_matches_the_async_one() -> None:
    with prism.connect_sync("memory://") as store:
        users = store.collection("users", User)
        assert users.name == "users"
        etag = users.put("a", User("Ada", 36))
        assert users.get("a") == User("Ada", 36) and users.get("missing") is None
        users.put("a", User("Ada", 37), if_match=etag)
        users.put_many({"b": User("B", 2)})
        assert users.get_many(["a", "b", "c"]) == {"a": User("Ada", 37), "b": User("B", 2)}
        assert users.exists("b") and users.delete("b") and not users.exists("b")
        store.namespace("users").put("bad", b"{}")
        with pytest.raises(DecodeError, match="'bad'"):
            users.get("bad")
