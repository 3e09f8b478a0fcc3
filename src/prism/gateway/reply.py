"""What a data route answers: a status, headers and a body, independent of the transport.

Handlers return a :class:`Reply`; the HTTP transport sends it as it is (adding
``Content-Length``), a future transport maps it to its own messages. JSON bodies are
encoded by msgspec from the structs of :mod:`prism.gateway.wire`.
"""

from __future__ import annotations

from typing import Any

import msgspec

__all__ = ["JSON_CONTENT_TYPE", "Reply"]

JSON_CONTENT_TYPE = b"application/json"
_encode = msgspec.json.Encoder().encode


class Reply:
    """One answer: ``status``, ``headers`` (lower-case names, as bytes) and ``body``."""

    __slots__ = ("body", "headers", "status")

    def __init__(
        self, status: int, body: bytes = b"", headers: list[tuple[bytes, bytes]] | None = None
    ) -> None:
        self.status = status
        self.body = body
        self.headers = headers if headers is not None else []

    @classmethod
    def json(cls, payload: Any, status: int = 200, content_type: bytes = JSON_CONTENT_TYPE) -> Reply:
        """``payload`` (a wire struct) encoded as JSON."""
        return cls(status, _encode(payload), [(b"content-type", content_type)])

    def header(self, name: bytes) -> bytes | None:
        """The value of header ``name`` (lower case), or None."""
        for key, value in self.headers:
            if key == name:
                return value
        return None
