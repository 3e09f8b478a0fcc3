"""How values cross the wire: JSON bodies, base64 values, etag headers, times and query numbers.

The structs here are the response bodies of the data routes: handlers return them,
msgspec encodes them, and ``/openapi.json`` describes them from the same classes.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal, TypeVar

import msgspec
from msgspec import UNSET, UnsetType

from prism.errors import InvalidArgument
from prism.gateway.problem import HTTPProblem
from prism.kv.validation import MAX_TTL_SECONDS, not_utf8, ttl_seconds, undecodable_escape
from prism.model import Item, WriteResult

__all__ = [
    "JSON",
    "MAX_TTL_SECONDS",
    "BatchResult",
    "BatchResults",
    "BulkGetItem",
    "BulkGetResponse",
    "DeletedCount",
    "Entry",
    "ItemPage",
    "KeyPage",
    "NamespaceAccess",
    "NamespaceDetail",
    "NamespaceHealth",
    "NamespaceLimits",
    "NamespaceList",
    "NamespacePii",
    "NamespaceSummary",
    "Ttl",
    "WriteError",
    "decode_body",
    "escape_problem",
    "expires_header",
    "item_out",
    "parse_etag_header",
    "query_int",
    "result_out",
    "ttl_param",
]

T = TypeVar("T")

#: Longest ttl accepted (100 years): expiry times must stay within what datetimes can hold.
#: A ttl field of a JSON body: positive seconds, at most MAX_TTL_SECONDS.
Ttl = Annotated[float, msgspec.Meta(gt=0, le=MAX_TTL_SECONDS)]

JSON = msgspec.json.Encoder()


def _doc(text: str, **extra: object) -> msgspec.Meta:
    return msgspec.Meta(description=text, extra_json_schema=extra or None)


Base64 = Annotated[bytes, _doc("The value, base64-encoded.")]
Moment = Annotated[
    str, _doc("When the entry expires (RFC 3339, UTC); null without a ttl.", format="date-time")
]


class Entry(msgspec.Struct):
    """One entry as the JSON routes return it."""

    key: str
    value: Base64
    etag: str
    content_type: str | None
    expires_at: Moment | None


class BulkGetItem(msgspec.Struct):
    """One answer of POST /_bulk/get: the entry, or only ``found: false``."""

    key: str
    found: bool
    value: Base64 | UnsetType = UNSET
    etag: str | UnsetType = UNSET
    content_type: str | UnsetType | None = UNSET
    expires_at: Moment | UnsetType | None = UNSET


class BulkGetResponse(msgspec.Struct):
    """Body answering POST /_bulk/get: one entry per requested key, in order."""

    items: list[BulkGetItem]


class WriteError(msgspec.Struct):
    """Why one write of a batch was not applied."""

    code: str
    detail: str


class BatchResult(msgspec.Struct):
    """One entry of a batch write's ``results``."""

    key: str
    ok: bool
    etag: str | UnsetType = UNSET
    error: WriteError | UnsetType = UNSET


class BatchResults(msgspec.Struct):
    """One result per entry, in order."""

    results: list[BatchResult]


class KeyPage(msgspec.Struct):
    """One page of keys, and the token of the next page (null on the last)."""

    keys: list[str]
    next_page_token: str | None


class ItemPage(msgspec.Struct):
    """One page of a record's items, and the token of the next page (null on the last)."""

    items: list[Entry]
    next_page_token: str | None


class DeletedCount(msgspec.Struct):
    """How many live items were deleted."""

    deleted: Annotated[int, msgspec.Meta(ge=0)]


class NamespaceSummary(msgspec.Struct):
    """A namespace the caller may see, and what the caller may do in it."""

    name: str
    tenant_scoped: bool
    actions: list[Literal["read", "write", "admin"]]


class NamespaceList(msgspec.Struct):
    """The namespaces the caller may see."""

    namespaces: list[NamespaceSummary]


class NamespaceLimits(msgspec.Struct, omit_defaults=True):
    """Admission limits of a namespace (null: none; the read and write limits only when declared)."""

    rate: float | None
    burst: float | None
    concurrency: int | None
    #: The limits of reads and of writes its declared ``read_rps`` and ``write_rps`` became.
    read_rate: float | None = None
    read_burst: int | None = None
    write_rate: float | None = None
    write_burst: int | None = None


class NamespaceHealth(msgspec.Struct):
    """The health of the store holding a namespace."""

    status: str


class NamespaceAccess(msgspec.Struct):
    """The roles that may read, write and administer a namespace."""

    read: list[str]
    write: list[str]
    admin: list[str]


class NamespacePii(msgspec.Struct):
    """The PII fields of a namespace's values, and whether they are encrypted at rest."""

    fields: list[str]
    encrypt: bool


class NamespaceDetail(msgspec.Struct):
    """A namespace's settings, what the caller may do, and its health; the rest only for its admins."""

    name: str
    tenant_scoped: bool
    max_value_bytes: int
    default_ttl: float | None
    limits: NamespaceLimits
    actions: list[Literal["read", "write", "admin"]]
    health: NamespaceHealth
    store: str | UnsetType = UNSET
    backend: str | UnsetType = UNSET
    access: NamespaceAccess | UnsetType = UNSET
    pii: NamespacePii | UnsetType | None = UNSET
    audit: bool | UnsetType = UNSET
    capabilities: dict[str, Any] | UnsetType = UNSET
    #: The needs its clients declared (docs/control-plane.md), for its admins.
    needs: dict[str, Any] | UnsetType = UNSET
    #: The cache tiers' settings and this process's counters (hit_ratio), or None when not cached.
    cache: dict[str, Any] | UnsetType | None = UNSET


def decode_body(body: bytes, type_: type[T]) -> T:
    """The JSON body as ``type_``; a 400 problem naming the field when it does not fit."""
    if not body:
        raise HTTPProblem(400, "INVALID_BODY", "this route needs a JSON body")
    try:
        return msgspec.json.decode(body, type=type_)
    except msgspec.ValidationError as exc:
        raise HTTPProblem(400, "INVALID_BODY", str(exc).replace(" - at `$", " at `$")) from None
    except msgspec.DecodeError as exc:
        raise HTTPProblem(400, "INVALID_BODY", f"the body is not valid JSON: {exc}") from None
    except UnicodeDecodeError:
        raise HTTPProblem(400, "INVALID_BODY", f"the body is not valid JSON: {not_utf8(body)}") from None
    except RecursionError:
        raise HTTPProblem(400, "INVALID_BODY", "the body is not valid JSON: it nests too deeply") from None


def escape_problem(raw_path: bytes, query_string: bytes) -> HTTPProblem | None:
    """The 400 for a path or query whose percent-escapes do not decode as UTF-8, else None.

    Servers decode such escapes (``%FF``, ``%ED%A0%80``) to U+FFFD, which would make
    different keys, record ids and names alias one another.
    """
    for where, code, raw in (
        ("path", "INVALID_PATH", raw_path),
        ("query string", "INVALID_QUERY", query_string),
    ):
        bad = undecodable_escape(raw)
        if bad is not None:
            return HTTPProblem(
                400,
                code,
                f"the {where} holds {bad}, which is not UTF-8: keys, record ids, names and query values "
                "are UTF-8 text, percent-encoded byte by byte",
            )
    return None


def expires_header(moment: datetime) -> str:
    """RFC 3339 UTC with milliseconds, as X-Prism-Expires-At and ``expires_at`` fields show it."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def item_out(item: Item, value: bytes) -> Entry:
    """An item as the JSON routes return it, showing ``value`` (the value base64 by msgspec)."""
    expires = expires_header(item.expires_at) if item.expires_at is not None else None
    return Entry(item.key, value, item.etag, item.content_type, expires)


def result_out(result: WriteResult) -> BatchResult:
    """One entry of a batch write's ``results``."""
    return BatchResult(
        result.key,
        result.ok,
        UNSET if result.etag is None else result.etag,
        UNSET if result.error is None else WriteError(result.error.code, str(result.error)),
    )


def parse_etag_header(raw: str, *, allow_star: bool, many: bool) -> list[str]:
    """The etags of an If-Match / If-None-Match header (quotes and weak markers removed)."""
    parts = [p.strip() for p in raw.split(",")] if many else [raw.strip()]
    tags: list[str] = []
    for part in parts:
        if part == "*":
            if not allow_star:
                raise HTTPProblem(
                    400, "INVALID_HEADER", "If-Match: * is not supported; send the entry's etag"
                )
            tags.append("*")
            continue
        if part.startswith("W/"):
            part = part[2:]
        if len(part) >= 2 and part[0] == part[-1] == '"':
            part = part[1:-1]
        if not part or '"' in part:
            raise HTTPProblem(400, "INVALID_HEADER", 'an etag header holds a quoted etag like "abc"')
        tags.append(part)
    return tags


def query_int(raw: str | None, name: str, *, default: int, low: int = 1, high: int = 1000) -> int:
    """An integer query parameter within [low, high]; absent means ``default``, empty is refused."""
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise HTTPProblem(400, "INVALID_ARGUMENT", f"{name} must be an integer") from None
    if not low <= value <= high:
        raise HTTPProblem(400, "INVALID_ARGUMENT", f"{name} must be from {low} to {high}")
    return value


def ttl_param(raw: str | None) -> float | None:
    """``?ttl=SECONDS``: a positive, finite number of seconds."""
    if raw is None or raw == "":
        return None
    try:
        ttl = float(raw)
    except ValueError:
        raise HTTPProblem(400, "INVALID_TTL", "ttl must be a number of seconds") from None
    try:
        return ttl_seconds(ttl)
    except InvalidArgument as exc:
        raise HTTPProblem(400, "INVALID_TTL", str(exc)) from None
