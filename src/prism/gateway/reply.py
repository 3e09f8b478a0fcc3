"""What a data route answers: a status, headers and a body, independent of the transport.

Handlers return a :class:`Reply`; the HTTP transport sends it as it is (adding
``Content-Length``), a future transport maps it to its own messages. A reply with a
``stream`` (Server-Sent Events) sends its headers, then the stream's chunks until it
ends or the client goes away, and always closes the stream. JSON bodies are
encoded by msgspec from the structs of :mod:`prism.gateway.wire`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol

import msgspec

__all__ = ["JSON_CONTENT_TYPE", "Reply", "ReplyStream"]

JSON_CONTENT_TYPE = b"application/json"
_encode = msgspec.json.Encoder().encode


class ReplyStream(Protocol):
    """The body of a streamed reply: chunks to send, and what to release however it ends."""

    def __aiter__(self) -> AsyncIterator[bytes]: ...

    async def aclose(self) -> None:
        """Release what the stream holds; called once the reply is over (sent, refused or abandoned)."""


class Reply:
    """One answer: ``status``, ``headers`` (lower-case names, as bytes) and ``body``, or a ``stream``."""

    __slots__ = ("body", "headers", "status", "stream")

    def __init__(
        self,
        status: int,
        body: bytes = b"",
        headers: list[tuple[bytes, bytes]] | None = None,
        stream: ReplyStream | None = None,
    ) -> None:
        self.status = status
        self.body = body
        self.headers = headers if headers is not None else []
        self.stream = stream

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
