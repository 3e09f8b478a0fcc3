"""The HTTP transport of the data pipeline: one dispatch table, a Call from the scope, the Reply sent.

:class:`RouteTable` is built from the :class:`~prism.gateway.pipeline.DataRoute`
declarations and finds a request's route by splitting its path once (no regular
expressions), so every data route costs the same to reach. :class:`DataTransport`
is the thin ASGI adapter: it builds the :class:`~prism.gateway.pipeline.Call` from
the scope (no Starlette request object), runs the :class:`Pipeline`, and sends the
:class:`~prism.gateway.reply.Reply` as it is. HEAD answers a GET's headers
(``Content-Length`` included) without its body.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

from starlette.types import Receive, Scope, Send

from prism.gateway.auth import peer_certificate
from prism.gateway.pipeline import BodyReader, Call, DataRoute, Pipeline
from prism.gateway.problem import HTTPProblem
from prism.gateway.reply import Reply
from prism.gateway.sse import send_stream

__all__ = ["DataTransport", "RouteMatch", "RouteTable", "send_reply"]

#: ``/prefix/{ns}``, then nothing, a literal tail, or one ``{name:path}`` parameter.
_TEMPLATE = re.compile(r"^(?P<prefix>/(?:[\w.-]+/)+)\{ns\}(?:/(?P<tail>[\w./-]+)|/\{(?P<param>\w+):path\})?$")
_METHOD_ORDER = ("GET", "HEAD", "PUT", "POST", "DELETE", "PATCH")


@dataclass(frozen=True, slots=True)
class _Entry:
    route: DataRoute
    tail: str | None  # the literal tail, when there is one
    param: str | None  # the name of the parameter taking the rest of the path


#: What :meth:`RouteTable.match` finds: the route (None: the path exists, not with this method), the
#: path parameters, the methods the path allows (for a 405), and a route of the path (its metrics label).
#: A plain tuple: it is built on every request.
RouteMatch = tuple[DataRoute | None, dict[str, str], tuple[str, ...], DataRoute]


class RouteTable:
    """The data routes by path template, matched by splitting the path once."""

    def __init__(self, routes: Sequence[DataRoute]) -> None:
        self.routes = list(routes)
        #: prefix -> every entry under it, in declaration order
        self._prefixes: dict[str, list[_Entry]] = {}
        #: prefix -> method -> the entries answering that method (HEAD: the GET ones)
        self._methods: dict[str, dict[str, list[_Entry]]] = {}
        for route in routes:
            found = _TEMPLATE.match(route.path)
            if found is None:
                raise ValueError(
                    f"data route {route.path!r}: a template is /prefix/{{ns}}, optionally followed by "
                    "/literal or /{name:path}"
                )
            entry = _Entry(route, found["tail"], found["param"])
            prefix = found["prefix"]
            self._prefixes.setdefault(prefix, []).append(entry)
            by_method = self._methods.setdefault(prefix, {})
            for method in ("GET", "HEAD") if route.method == "GET" else (route.method,):
                by_method.setdefault(method, []).append(entry)

    def match(self, path: str, method: str) -> RouteMatch | None:
        """The route of ``method`` on ``path``; None when no data route has this path."""
        for prefix, methods_here in self._methods.items():
            if path.startswith(prefix):
                by_method = methods_here
                break
        else:
            return None
        ns, sep, rest = path[len(prefix) :].partition("/")
        if not ns:
            return None
        for entry in by_method.get(method, ()):
            if _fits(entry, sep, rest):
                route = entry.route
                params = {"ns": ns} if entry.param is None else {"ns": ns, entry.param: rest}
                return route, params, (), route
        allowed = [e.route for e in self._prefixes[prefix] if _fits(e, sep, rest)]
        if not allowed:
            return None
        methods = {r.method for r in allowed}
        if "GET" in methods:
            methods.add("HEAD")
        allow = tuple(m for m in _METHOD_ORDER if m in methods)
        return None, {"ns": ns}, allow, allowed[0]


def _fits(entry: _Entry, sep: str, rest: str) -> bool:
    """True when what follows ``/prefix/{ns}`` (``sep``, ``rest``) has the shape of ``entry``'s template."""
    if entry.param is not None:
        return bool(sep)
    if entry.tail is not None:
        return rest == entry.tail
    return not sep


class DataTransport:
    """The ASGI app running a matched data route (``scope["prism.match"]``) through the pipeline.

    It reports to the observability middleware directly: it adds the X-Request-ID
    header itself and leaves the status in ``scope["prism.status"]``.
    """

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.gateway = pipeline.gateway
        #: Client certificates are looked up only where they can name the caller.
        self.client_certs = pipeline.gateway.authenticator.uses_client_certs

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route, params, allow, _ = scope["prism.match"]
        request_id: str | None = scope.get("prism.request_id")
        method: str = scope["method"]
        if route is None:
            reply = HTTPProblem(
                405,
                "METHOD_NOT_ALLOWED",
                f"{method} is not allowed on this path",
                headers={"Allow": ", ".join(allow)},
            ).reply(request_id)
        else:
            headers: list[tuple[bytes, bytes]] = scope["headers"]
            call = Call(
                self.gateway,
                method,
                scope["path"],
                params,
                headers,
                scope["query_string"],
                request_id=request_id,
                peer_cert=peer_certificate(scope) if self.client_certs else None,
                read_body=_body_reader(receive, headers) if route.body_limit is not None else _no_body,
            )
            try:
                reply = await self.pipeline.run(route, call)
            finally:
                principal = getattr(call, "principal", None)
                if principal is not None:
                    scope["prism.principal"] = principal.subject
                served = getattr(call, "ns", None)
                if served is not None:
                    scope["prism.namespace"] = served.name
            if reply.stream is not None:
                await send_stream(reply, reply.stream, scope, receive, send)
                return
        await send_reply(reply, scope, send)


async def send_reply(reply: Reply, scope: Scope, send: Send) -> None:
    """Send ``reply`` (with Content-Length and X-Request-ID); HEAD gets the headers only."""
    status = reply.status
    scope["prism.status"] = status
    headers = reply.headers
    body = reply.body
    if status >= 200 and status not in (204, 304):
        headers.append((b"content-length", str(len(body)).encode("ascii")))
    request_id = scope.get("prism.request_id")
    if request_id is not None:
        headers.append((b"x-request-id", request_id.encode("ascii")))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})


async def _no_body(limit: int) -> bytes:
    return b""


def _decoded(body: bytes, coding: bytes, limit: int) -> bytes:
    """``body`` without its Content-Encoding (gzip, which signals offer clients), refusing past ``limit``."""
    coding = coding.strip().lower()
    if coding in (b"", b"identity"):
        return body
    if coding != b"gzip":
        raise HTTPProblem(
            415,
            "UNSUPPORTED_CONTENT_ENCODING",
            f"Content-Encoding {coding.decode('latin-1')!r} is not accepted: send gzip or none",
        )
    inflate = zlib.decompressobj(wbits=31)
    try:
        out = inflate.decompress(body, limit + 1)
    except zlib.error:
        raise HTTPProblem(400, "INVALID_BODY", "the gzip body does not decompress") from None
    if len(out) > limit:
        raise HTTPProblem(413, "BODY_TOO_LARGE", f"the decompressed body is over the limit of {limit} bytes")
    if not inflate.eof or inflate.unused_data:
        raise HTTPProblem(400, "INVALID_BODY", "the gzip body is truncated or followed by other data")
    return out


def _body_reader(receive: Receive, headers: list[tuple[bytes, bytes]]) -> BodyReader:
    coding = next((value for name, value in headers if name == b"content-encoding"), None)

    async def read(limit: int) -> bytes:
        body = await read_raw(limit)
        return body if coding is None else _decoded(body, coding, limit)

    async def read_raw(limit: int) -> bytes:
        for name, value in headers:
            if name == b"content-length":
                try:
                    size = int(value)
                except ValueError:
                    raise HTTPProblem(
                        400, "INVALID_CONTENT_LENGTH", "Content-Length is not a number"
                    ) from None
                if size > limit:
                    raise HTTPProblem(
                        413, "BODY_TOO_LARGE", f"the body is {size} bytes; at most {limit} are accepted"
                    )
                break
        chunks: list[bytes] = []
        total = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise HTTPProblem(
                    400, "BODY_INCOMPLETE", "the connection closed before the whole body arrived"
                )
            chunk: bytes = message.get("body", b"")
            total += len(chunk)
            if total > limit:
                raise HTTPProblem(413, "BODY_TOO_LARGE", f"the body is over the limit of {limit} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    return read
