"""How Prism items map to DynamoDB items: key encoding, attributes, liveness, chunks.

One table holds every namespace. An item is addressed by

* ``pk`` (partition key, S): ``"<len(ns)>:<ns>:<record id>"``, unambiguous for any
  namespace because the length comes first;
* ``sk`` (sort key, S): the item key, except that DynamoDB refuses empty key strings,
  so ``""`` is stored as ``"\\x01"`` and a key starting with ``"\\x01"`` gets a second
  ``"\\x01"`` in front. The mapping keeps code-point order.

Each item also carries ``ns`` and ``rid`` (namespace and record id), the keys of the
``prism_records`` global secondary index that serves ordered scans, ``e`` (etag),
``u`` (updated at) and, when set, ``ct`` (content type) and its expiry twice: ``x``,
exact epoch seconds, which every read and condition compares with the clock, and
``t``, the same rounded up to whole seconds, the table's TTL attribute (DynamoDB's
TTL reads whole epoch seconds). A value of at most ``INLINE_VALUE_BYTES`` is
the binary attribute ``v``; a larger one is a manifest (``cv`` version, ``cn`` chunk
count, ``cl`` length) pointing at chunk items ``pk = "#<version>"``, ``sk = "00000"``...
whose ``c`` attributes concatenate to the value. Chunk items carry no ``ns``, so
scans never see them, and the same ``t``, so DynamoDB's TTL removes them too.
"""

from __future__ import annotations

import math
import uuid
from typing import Any

from prism.errors import InvalidKey
from prism.model import Item, StoredWrite

__all__ = [
    "CHUNK_BYTES",
    "INDEX_NAME",
    "INLINE_VALUE_BYTES",
    "Attrs",
    "chunk_items",
    "chunk_keys",
    "condition",
    "is_live",
    "item_attributes",
    "item_key",
    "key_of",
    "make_item",
    "new_version",
    "partition_key",
    "sort_key",
]

#: An item as the low-level client speaks it: attribute name -> {"S"|"N"|"B": value}.
Attrs = dict[str, Any]

PK, SK, NS, RID = "pk", "sk", "ns", "rid"
VALUE, ETAG, EXPIRES, CONTENT_TYPE, UPDATED = "v", "e", "x", "ct", "u"
#: The table's TTL attribute: the expiry rounded up to whole epoch seconds.
TTL_ATTRIBUTE = "t"
CHUNK_VERSION, CHUNK_COUNT, VALUE_LENGTH, CHUNK_DATA = "cv", "cn", "cl", "c"

#: The global secondary index (ns -> rid) that lists record ids in order.
INDEX_NAME = "prism_records"
#: Largest value stored inside its item. DynamoDB's item limit is 400 KB counting
#: names, keys and metadata (which Prism keeps under 6 KB); moto's is 405,000 bytes.
INLINE_VALUE_BYTES = 390_000
#: Bytes of value per chunk item.
CHUNK_BYTES = 390_000
#: DynamoDB's key size limits, in UTF-8 bytes.
MAX_PARTITION_KEY_BYTES = 2048
MAX_SORT_KEY_BYTES = 1024

_ESCAPE = "\x01"


def _utf8_len(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8"))


def partition_key(ns: str, record: str) -> str:
    """The ``pk`` of ``record`` in ``ns``; InvalidKey when it passes DynamoDB's 2048 bytes."""
    pk = f"{len(ns)}:{ns}:{record}"
    if len(pk) > MAX_PARTITION_KEY_BYTES // 4 and _utf8_len(pk) > MAX_PARTITION_KEY_BYTES:
        raise InvalidKey(
            f"namespace and record id together take {_utf8_len(pk)} bytes; DynamoDB partition keys "
            f"hold at most {MAX_PARTITION_KEY_BYTES} (use a shorter namespace name)"
        )
    return pk


def sort_key(key: str) -> str:
    """The ``sk`` of item ``key`` (order-preserving, never empty)."""
    if not key:
        return _ESCAPE
    if key[0] == _ESCAPE:
        sk = _ESCAPE + key
        if _utf8_len(sk) > MAX_SORT_KEY_BYTES:
            raise InvalidKey(
                f"item keys starting with U+0001 hold at most {MAX_SORT_KEY_BYTES - 1} bytes on DynamoDB"
            )
        return sk
    return key


def item_key(sk: str) -> str:
    """The item key stored as ``sk`` (the inverse of ``sort_key``)."""
    return sk[1:] if sk[0] == _ESCAPE else sk


def key_of(ns: str, record: str, key: str) -> Attrs:
    """The primary key of one item, as the client wants it."""
    return {PK: {"S": partition_key(ns, record)}, SK: {"S": sort_key(key)}}


def _number(value: float) -> str:
    return repr(float(value))


def is_live(attrs: Attrs, now: float) -> bool:
    """False once the item's ``x`` has passed (DynamoDB's TTL deletes it much later)."""
    expires = attrs.get(EXPIRES)
    return expires is None or float(expires["N"]) > now


def make_item(key: str, attrs: Attrs, value: bytes) -> Item:
    """The public Item for ``attrs`` whose value is ``value``."""
    expires = attrs.get(EXPIRES)
    updated = attrs.get(UPDATED)
    content_type = attrs.get(CONTENT_TYPE)
    return Item(
        key,
        value,
        attrs[ETAG]["S"],
        None if expires is None else float(expires["N"]),
        None if content_type is None else content_type["S"],
        None if updated is None else float(updated["N"]),
    )


def new_version() -> str:
    """A fresh chunk version id."""
    return uuid.uuid4().hex


def item_attributes(
    ns: str, op: StoredWrite, key: Attrs, version: str | None = None, *, indexed: bool = True
) -> Attrs:
    """The full DynamoDB item of put ``op``; with ``version`` a manifest of chunked value.

    ``indexed`` False leaves out ``ns`` and ``rid``, the keys of the ``prism_records``
    index, so the item is not in it (a store with ``scan_index=false``).
    """
    assert op.value is not None
    attrs: Attrs = {PK: key[PK], SK: key[SK]}
    if indexed:
        attrs[NS] = {"S": ns}
        attrs[RID] = {"S": op.record}
    attrs[ETAG] = {"S": op.etag}
    attrs[UPDATED] = {"N": _number(op.updated_at)}
    if version is None:
        attrs[VALUE] = {"B": op.value}
    else:
        attrs[CHUNK_VERSION] = {"S": version}
        attrs[CHUNK_COUNT] = {"N": str(chunk_count(len(op.value)))}
        attrs[VALUE_LENGTH] = {"N": str(len(op.value))}
    if op.expires_at is not None:
        attrs[EXPIRES] = {"N": _number(op.expires_at)}
        attrs[TTL_ATTRIBUTE] = {"N": str(math.ceil(op.expires_at))}
    if op.content_type is not None:
        attrs[CONTENT_TYPE] = {"S": op.content_type}
    return attrs


def chunk_count(length: int) -> int:
    return max(1, -(-length // CHUNK_BYTES))


def chunk_keys(version: str, count: int) -> list[Attrs]:
    """The primary keys of the ``count`` chunk items of ``version``."""
    pk = {"S": f"#{version}"}
    return [{PK: pk, SK: {"S": f"{i:05d}"}} for i in range(count)]


def chunk_items(version: str, value: bytes, expires_at: float | None) -> list[Attrs]:
    """The chunk items holding ``value`` under ``version`` (expiring with their manifest)."""
    items = []
    for i, key in enumerate(chunk_keys(version, chunk_count(len(value)))):
        item: Attrs = {**key, CHUNK_DATA: {"B": value[i * CHUNK_BYTES : (i + 1) * CHUNK_BYTES]}}
        if expires_at is not None:
            item[TTL_ATTRIBUTE] = {"N": str(math.ceil(expires_at))}
        items.append(item)
    return items


def chunk_ref(attrs: Attrs) -> tuple[str, int] | None:
    """(version, count) when ``attrs`` is a manifest of a chunked value."""
    version = attrs.get(CHUNK_VERSION)
    if version is None:
        return None
    return version["S"], int(attrs[CHUNK_COUNT]["N"])


def assemble(attrs: Attrs, chunks: list[Attrs | None]) -> bytes | None:
    """The value of manifest ``attrs`` from its chunk items, or None if any is missing."""
    if any(c is None for c in chunks):
        return None
    value = b"".join(c[CHUNK_DATA]["B"] for c in chunks if c is not None)
    if len(value) != int(attrs[VALUE_LENGTH]["N"]):
        return None
    return value


#: Conditions on the stored item, evaluated by DynamoDB against a client-side ``:now``
#: (an item whose ``x`` has passed counts as absent, as on every read).
ABSENT = "attribute_not_exists(pk) OR x <= :now"
LIVE_WITH_ETAG = "e = :etag AND (attribute_not_exists(x) OR x > :now)"


def condition(params: dict[str, Any], *, etag: str | None, absent: bool, now: float) -> None:
    """Add to request ``params`` the condition "absent" or "live with ``etag``"."""
    if absent:
        params["ConditionExpression"] = ABSENT
        params["ExpressionAttributeValues"] = {":now": {"N": _number(now)}}
    elif etag is not None:
        params["ConditionExpression"] = LIVE_WITH_ETAG
        params["ExpressionAttributeValues"] = {":etag": {"S": etag}, ":now": {"N": _number(now)}}
