"""Collection[T]: a namespace whose values are typed objects."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from prism.errors import PrismError
from prism.kv.codecs import Codec, codec_for, decode_error
from prism.model import Page, Put, WriteResult

if TYPE_CHECKING:
    from prism.kv.namespace import Consistency, Namespace

__all__ = ["Collection"]

T = TypeVar("T")


class Collection(Generic[T]):
    """Typed get/put over a namespace: values are encoded with the codec for ``type_``.

    A stored value that does not decode raises DecodeError naming the key and the
    type; it is never skipped.
    """

    def __init__(self, namespace: Namespace, type_: type[T], codec: Codec[T] | None = None) -> None:
        self.namespace = namespace
        self.type = type_
        self.codec: Codec[T] = codec or codec_for(type_)

    @property
    def name(self) -> str:
        return self.namespace.name

    def _decode(self, key: str, data: bytes) -> T:
        try:
            return self.codec.decode(data)
        except PrismError:
            raise
        except Exception as exc:
            raise decode_error(key, self.type, exc) from exc

    async def get(self, key: str, *, consistency: Consistency = "eventual") -> T | None:
        item = await self.namespace.get(key, consistency=consistency)
        return None if item is None else self._decode(key, item.value)

    async def get_with_etag(self, key: str, *, consistency: Consistency = "eventual") -> tuple[T, str] | None:
        """The object and its etag, for a later ``put(..., if_match=etag)``."""
        item = await self.namespace.get(key, consistency=consistency)
        return None if item is None else (self._decode(key, item.value), item.etag)

    async def get_many(self, keys: Sequence[str], *, consistency: Consistency = "eventual") -> dict[str, T]:
        """The found keys and their objects (missing keys are left out)."""
        items = await self.namespace.get_many(keys, consistency=consistency)
        return {item.key: self._decode(item.key, item.value) for item in items if item is not None}

    async def put(
        self,
        key: str,
        obj: T,
        *,
        ttl: float | timedelta | None = None,
        if_match: str | None = None,
        if_absent: bool = False,
    ) -> str:
        return await self.namespace.put(
            key,
            self.codec.encode(obj),
            ttl=ttl,
            content_type=self.codec.content_type,
            if_match=if_match,
            if_absent=if_absent,
        )

    async def put_many(
        self,
        objs: Mapping[str, T] | Iterable[tuple[str, T]],
        *,
        ttl: float | timedelta | None = None,
        existed: bool = True,
    ) -> list[WriteResult]:
        """Store each object; ``existed=False`` as in ``Namespace.put_many``."""
        pairs = objs.items() if isinstance(objs, Mapping) else objs
        ct = self.codec.content_type
        puts = [Put(k, self.codec.encode(v), ttl, ct) for k, v in pairs]
        return await self.namespace.put_many(puts, existed=existed)

    async def delete(self, key: str, *, if_match: str | None = None) -> bool:
        return await self.namespace.delete(key, if_match=if_match)

    async def exists(self, key: str, *, consistency: Consistency = "eventual") -> bool:
        return await self.namespace.exists(key, consistency=consistency)

    async def scan(self, prefix: str = "", *, limit: int = 100, page_token: str | None = None) -> Page[str]:
        return await self.namespace.scan(prefix, limit=limit, page_token=page_token)

    def __repr__(self) -> str:
        name: Any = getattr(self.type, "__name__", self.type)
        return f"<Collection {self.name!r} of {name}>"
