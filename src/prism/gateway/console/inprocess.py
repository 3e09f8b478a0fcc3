"""Calls to the gateway's own HTTP API from inside the process, with a signed-in principal's credential.

The console never reads or writes data itself: every page asks the API, through the
same ASGI app, authentication, policies, limits and audit as any other client. So a
principal sees and does in the console exactly what its roles allow through the API.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

import msgspec
from starlette.types import ASGIApp, Message

__all__ = ["ApiAnswer", "InProcessApi"]


@dataclass(slots=True)
class ApiAnswer:
    """One answer of the API: status, headers (lower-case names) and body."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def json(self) -> Any:
        return msgspec.json.decode(self.body) if self.body else None

    @property
    def problem(self) -> str:
        """The problem's detail (or the status) of a refused request, for the page to show."""
        try:
            body = self.json()
        except msgspec.DecodeError:
            body = None
        if isinstance(body, dict):
            detail = body.get("detail") or body.get("title")
            code = body.get("code")
            if detail:
                return f"{code}: {detail}" if code else str(detail)
        return f"the API answered {self.status}"


class InProcessApi:
    """The gateway's API, called through ``app`` with the credential header of one principal."""

    def __init__(
        self,
        app: ASGIApp,
        credential: tuple[str, str],
        *,
        secure: bool,
        timeout: float,
        client: tuple[str, int] | None = None,
    ) -> None:
        self.app = app
        #: The browser's address, so the API's logs name who is really calling.
        self.client = client or ("127.0.0.1", 0)
        self.credential = (credential[0].lower().encode("latin-1"), credential[1].encode("latin-1"))
        self.scheme = "https" if secure else "http"
        self.timeout = timeout

    def _scope(
        self,
        method: str,
        path: str,
        query: Mapping[str, str | int | None] | None,
        headers: list[tuple[bytes, bytes]],
    ) -> dict[str, Any]:
        params = {k: str(v) for k, v in (query or {}).items() if v is not None and v != ""}
        return {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": self.scheme,
            "path": path,
            "raw_path": quote(path, safe="/").encode("ascii"),
            "query_string": urlencode(params).encode("ascii"),
            "root_path": "",
            "headers": [self.credential, (b"host", b"console.internal"), *headers],
            "client": self.client,
            "server": ("console.internal", 80),
            "state": {},
        }

    async def call(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str | int | None] | None = None,
        body: bytes = b"",
        content_type: str | None = None,
        headers: Mapping[str, str] | None = None,
        within: float | None = None,
    ) -> ApiAnswer:
        """The whole answer of one request (``within`` seconds, else ``server.request_timeout``, bounds
        it: 504 past it)."""
        extra = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()]
        if content_type is not None:
            extra.append((b"content-type", content_type.encode("latin-1")))
        extra.append((b"content-length", str(len(body)).encode("ascii")))
        answer = ApiAnswer(0)
        chunks: list[bytes] = []
        sent = False

        async def receive() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.Event().wait()
            raise AssertionError("unreachable")

        async def send(message: Message) -> None:
            if message["type"] == "http.response.start":
                answer.status = message["status"]
                answer.headers = {
                    k.decode("latin-1").lower(): v.decode("latin-1") for k, v in message.get("headers", [])
                }
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        try:
            async with asyncio.timeout(self.timeout if within is None else within):
                await self.app(self._scope(method, path, query, extra), receive, send)
        except TimeoutError:
            return ApiAnswer(504, {}, b'{"detail": "the API did not answer in time"}')
        answer.body = b"".join(chunks)
        return answer

    @contextlib.asynccontextmanager
    async def stream(
        self, path: str, *, query: Mapping[str, str | int | None] | None = None
    ) -> AsyncIterator[tuple[ApiAnswer, AsyncIterator[bytes]]]:
        """A GET whose body arrives piece by piece (an SSE stream): its status and headers, then chunks."""
        queue: asyncio.Queue[Message | None] = asyncio.Queue()
        disconnected = asyncio.Event()
        sent = False

        async def receive() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await disconnected.wait()
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            await queue.put(message)

        async def run() -> None:
            try:
                await self.app(self._scope("GET", path, query, []), receive, send)
            finally:
                await queue.put(None)

        task = asyncio.create_task(run())
        try:
            first = await queue.get()
            if first is None or first["type"] != "http.response.start":
                await task
                yield ApiAnswer(502), _nothing()
                return
            head = ApiAnswer(
                first["status"],
                {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in first.get("headers", [])},
            )

            async def chunks() -> AsyncIterator[bytes]:
                while True:
                    message = await queue.get()
                    if message is None:
                        return
                    data: bytes = message.get("body", b"")
                    if data:
                        yield data
                    if not message.get("more_body", False):
                        return

            yield head, chunks()
        finally:
            disconnected.set()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


async def _nothing() -> AsyncIterator[bytes]:
    return
    yield b""
