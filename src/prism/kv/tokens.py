"""Opaque page tokens: the last key returned, bound to the query that produced it."""

from __future__ import annotations

import base64
import binascii

import msgspec

from prism.errors import InvalidArgument

__all__ = ["decode_token", "encode_token"]

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(tuple[str, str, str])


def encode_token(kind: str, scope: str, last: str) -> str:
    raw = _encoder.encode((kind, scope, last))
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode_token(token: str | None, kind: str, scope: str) -> str | None:
    """The last key of the previous page, or None for the first page."""
    if token is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        got_kind, got_scope, last = _decoder.decode(raw)
    except (binascii.Error, ValueError, msgspec.DecodeError, TypeError) as exc:
        raise InvalidArgument("page_token is not a token this API returned") from exc
    if got_kind != kind or got_scope != scope:
        raise InvalidArgument("page_token belongs to a different query; start again without it")
    return last
