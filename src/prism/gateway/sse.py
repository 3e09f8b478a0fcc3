"""Sending a streamed :class:`~prism.gateway.reply.Reply` (Server-Sent Events) over ASGI.

The headers go out at once; then the stream's chunks, each as it comes, until the
stream ends or the client goes away (``http.disconnect``, watched beside the stream,
since a server does not fail a write to a closed connection). The stream is closed
however the reply ends, so what it holds (a connection slot, a change feed) is
released with it. HEAD gets the headers only.
"""

from __future__ import annotations

import asyncio
import contextlib

from starlette.types import Receive, Scope, Send

from prism.gateway.reply import Reply, ReplyStream

__all__ = ["send_stream"]


async def send_stream(reply: Reply, stream: ReplyStream, scope: Scope, receive: Receive, send: Send) -> None:
    """Send ``reply``'s headers and then ``stream``'s chunks; ``stream`` is closed on the way out."""
    try:
        scope["prism.status"] = reply.status
        headers = reply.headers
        request_id = scope.get("prism.request_id")
        if request_id is not None:
            headers.append((b"x-request-id", request_id.encode("ascii")))
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        if scope["method"] != "HEAD":
            await _until_over(stream, receive, send)
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    finally:
        await stream.aclose()


async def _until_over(stream: ReplyStream, receive: Receive, send: Send) -> None:
    """Send the chunks of ``stream`` until it ends or the client disconnects."""

    async def chunks() -> None:
        async for chunk in stream:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})

    async def disconnect() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    sending = asyncio.ensure_future(chunks())
    listening = asyncio.ensure_future(disconnect())
    try:
        await asyncio.wait((sending, listening), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (sending, listening):
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
    if sending.done() and not sending.cancelled():
        sending.result()
