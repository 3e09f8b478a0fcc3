"""How values cross the wire: JSON bodies, base64 values, etag headers, times and query numbers."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

import msgspec

from prism.errors import InvalidArgument
from prism.gateway.problem import HTTPProblem
from prism.kv.validation import MAX_TTL_SECONDS, not_utf8, ttl_seconds, undecodable_escape
from prism.model import Item, WriteResult

__all__ = [
    "JSON",
    "MAX_TTL_SECONDS",
    "Ttl",
    "decode_body",
    "escape_problem",
    "expires_header",
    "item_json",
    "parse_etag_header",
    "query_int",
    "result_json",
    "ttl_param",
]

T = TypeVar("T")

#: Longest ttl accepted (100 years): expiry times must stay within what datetimes can hold.
#: A ttl field of a JSON body: positive seconds, at most MAX_TTL_SECONDS.
Ttl = Annotated[float, msgspec.Meta(gt=0, le=MAX_TTL_SECONDS)]

JSON = msgspec.json.Encoder()


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


def item_json(item: Item, value: bytes, **extra: Any) -> dict[str, Any]:
    """An item as the JSON routes return it (the value base64 by msgspec)."""
    return {
        "key": item.key,
        **extra,
        "value": value,
        "etag": item.etag,
        "content_type": item.content_type,
        "expires_at": expires_header(item.expires_at) if item.expires_at is not None else None,
    }


def result_json(result: WriteResult) -> dict[str, Any]:
    """One entry of a batch write's ``results``."""
    out: dict[str, Any] = {"key": result.key, "ok": result.ok}
    if result.etag is not None:
        out["etag"] = result.etag
    if result.error is not None:
        out["error"] = {"code": result.error.code, "detail": str(result.error)}
    return out


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
    """An integer query parameter within [low, high]."""
    if raw is None or raw == "":
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
