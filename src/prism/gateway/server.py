"""The HTTP transport of ``prism serve``: uvicorn's protocols with Prism's connection guards.

:class:`HttpProtocol` is uvicorn's httptools protocol with the limits a public server
needs before any application code runs:

- the request line and headers are capped at ``server.max_header_bytes`` in all; a
  client that sends more gets 431 and the connection is closed, without the parser
  ever buffering more than the cap (httptools itself has no limit);
- a client has ``server.header_timeout`` seconds to finish its request line and
  headers (counted from its first byte, or from connecting), else it gets 408 and the
  connection is closed, so half-sent requests (slowloris) cannot pile up;
- at most ``server.max_connections`` connections (HTTP and WebSocket) are open per
  process; one more is answered 503 and closed at once.

With TLS, the verified client certificate reaches the application in the ASGI scope
as ``scope["extensions"]["tls"]`` (the ASGI TLS extension, plus ``peer_cert``: the
certificate as :meth:`ssl.SSLSocket.getpeercert` returns it), on HTTP requests and on
WebSocket handshakes alike. The settings come from the gateway the app's lifespan
started (``app_state["gateway"]``); a server without one uses the defaults.
"""

from __future__ import annotations

import asyncio
import functools
import http
import logging
import resource
import ssl
import time
from asyncio import TimerHandle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httptools
import msgspec
from prometheus_client import Counter
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from prism.gateway.config import ConfigError, ServerConfig, TlsConfig
from prism.gateway.problem import PROBLEM_CONTENT_TYPE, PROBLEM_TYPE_BASE, Problem

__all__ = [
    "CONNECTION_HEADROOM",
    "HttpProtocol",
    "effective_max_connections",
    "tls_context",
    "tls_context_factory",
]

log = logging.getLogger("prism.gateway.server")

#: File descriptors kept free for everything else a process opens (store connections, files,
#: the listening socket) when ``server.max_connections`` is lowered to fit the process's limit.
CONNECTION_HEADROOM = 256
#: Least time between two warnings about refused connections.
_REFUSAL_LOG_INTERVAL = 10.0

REFUSED = Counter(
    "prism_http_connections_refused_total",
    "Connections closed by the transport before reaching the app, by reason.",
    ["reason"],
)

_DEFAULTS = ServerConfig()
_encoder = msgspec.json.Encoder()
_TLS_VERSIONS = {"TLSv1.2": 0x0303, "TLSv1.3": 0x0304}


@functools.cache
def effective_max_connections(configured: int) -> int:
    """``configured``, lowered so the process's open-file limit still leaves room for other files."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return configured
    return max(1, min(configured, soft - CONNECTION_HEADROOM))


def _problem(status: int, code: str, detail: str) -> bytes:
    """A complete ``Connection: close`` problem+json response, written straight to the socket."""
    phrase = http.HTTPStatus(status).phrase
    body = _encoder.encode(
        Problem(
            type=PROBLEM_TYPE_BASE + code.lower().replace("_", "-"),
            title=phrase,
            status=status,
            detail=detail,
            code=code,
        )
    )
    head = (
        f"HTTP/1.1 {status} {phrase}\r\n"
        f"content-type: {PROBLEM_CONTENT_TYPE}\r\n"
        f"content-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


def _settings(app_state: Mapping[str, Any]) -> ServerConfig:
    gateway = app_state.get("gateway")
    config = getattr(gateway, "config", None)
    server = getattr(config, "server", None)
    return server if isinstance(server, ServerConfig) else _DEFAULTS


def _tls_extension(transport: asyncio.BaseTransport) -> dict[str, Any] | None:
    """The ASGI TLS extension of a connection (None when it is plain TCP)."""
    ssl_object = transport.get_extra_info("ssl_object")
    if ssl_object is None:
        return None
    # Only a certificate that passed verification is returned (None when the client sent none).
    peer = ssl_object.getpeercert() or None
    der = ssl_object.getpeercert(binary_form=True) if peer else None
    name = None
    if peer:
        name = ",".join(f"{attr}={value}" for rdn in reversed(peer.get("subject", ())) for attr, value in rdn)
    return {
        "server_cert": None,
        "client_cert_chain": [ssl.DER_cert_to_PEM_cert(der)] if der else [],
        "client_cert_name": name,
        "client_cert_error": None,
        "tls_version": _TLS_VERSIONS.get(ssl_object.version() or ""),
        "cipher_suite": None,
        "peer_cert": peer,
    }


class HttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with header, connection and TLS guards (see the module docs)."""

    _last_refusal_log = 0.0

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        settings = _settings(app_state)
        self.max_header_bytes = settings.max_header_bytes
        self.header_timeout = settings.header_timeout
        self.max_connections = effective_max_connections(settings.max_connections)
        # Per request: still reading the request line and headers, and how many bytes of them.
        self.in_head = True
        self.head_bytes = 0
        self.head_started = False
        self.head_timer: TimerHandle | None = None
        # Whether the next head begins at the start of a chunk (counted by data_received), and
        # whether the current one began mid-chunk, after a pipelined request (measured whole).
        self.chunk_begins_head = False
        self.head_unchecked = False
        self.heads_completed = 0
        self.head_too_large = False
        self.refused = False
        self.tls: dict[str, Any] | None = None

    # -- connection ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if len(self.connections) >= self.max_connections:
            self.transport = transport
            self.refused = True
            REFUSED.labels("max_connections").inc()
            self._warn_refusal()
            transport.write(
                _problem(503, "TOO_MANY_CONNECTIONS", "the server has too many open connections; retry later")
            )
            transport.close()
            return
        super().connection_made(transport)
        self.tls = _tls_extension(transport)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        if self.refused:
            return
        super().connection_lost(exc)

    def _warn_refusal(self) -> None:
        now = time.monotonic()
        if now - HttpProtocol._last_refusal_log >= _REFUSAL_LOG_INTERVAL:
            HttpProtocol._last_refusal_log = now
            log.warning(
                "refusing connections: server.max_connections is reached",
                extra={"max_connections": self.max_connections},
            )

    # -- reading ------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self.refused or self.parser is None:
            return
        if not self.in_head:
            self.chunk_begins_head = False
            self._feed(data)
            return
        self.chunk_begins_head = not self.head_started
        if data:
            self.head_started = True
        room = self.max_header_bytes - self.head_bytes
        if len(data) <= room:
            self.head_bytes += len(data)
            self._feed(data)
            return
        # Feed only what fits: if the head in progress is not complete by then, it is too large.
        completed = self.heads_completed
        self.head_bytes = self.max_header_bytes
        self._feed(data[:room])
        if self.transport.is_closing():
            return
        if self.heads_completed == completed:
            self._send_431()
            return
        rest = data[room:]
        protocol = self.transport.get_protocol()
        if protocol is not self:
            # Upgraded to a WebSocket: the rest belongs to it.
            protocol.data_received(rest)  # type: ignore[attr-defined]
        else:
            self.data_received(rest)

    def _feed(self, data: bytes) -> None:
        if self.in_head or self.cycle is None or not self.cycle.response_complete:
            # Once a request is answered, the rest of a body nobody reads does not keep the
            # connection alive: the keep-alive timeout runs until the next request begins.
            self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
            if self.in_head and self.head_started and self.head_timer is None:
                # A head left incomplete by this chunk: its clock starts now. A head that arrives
                # whole (the usual case) never needs a timer, which keeps the timer off the hot path.
                self._arm_head_timer()
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
        except httptools.HttpParserError:
            if self.head_too_large:
                self._send_431()
                return
            message = "Invalid HTTP request received."
            self.logger.warning(message)
            self.send_400_response(message)

    def _send_431(self) -> None:
        self._cancel_head_timer()
        REFUSED.labels("header_too_large").inc()
        self.transport.write(
            _problem(
                431,
                "HEADERS_TOO_LARGE",
                f"the request line and headers are over the limit of {self.max_header_bytes} bytes",
            )
        )
        self.transport.close()

    # -- parser callbacks -----------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self.tls is not None:
            self.scope["extensions"] = {"tls": self.tls}  # type: ignore[dict-item]
        # A head that begins at the start of a chunk is counted chunk by chunk in data_received;
        # one that begins mid-chunk (after a pipelined request) is measured once it is complete.
        self.head_unchecked = not self.chunk_begins_head
        self.chunk_begins_head = False
        self.head_started = True

    def on_headers_complete(self) -> None:
        if self.head_unchecked and self._head_size() > self.max_header_bytes:
            # Only the part in the chunk where it began went uncounted: at most one chunk of it
            # was held beyond the limit.
            self.head_too_large = True
            raise ValueError("request head too large")
        self.in_head = False
        self.heads_completed += 1
        self._cancel_head_timer()
        super().on_headers_complete()

    def _head_size(self) -> int:
        return len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)

    def handle_websocket_upgrade(self) -> None:
        super().handle_websocket_upgrade()
        # The WebSocket protocol built the handshake's scope; its task has not started yet.
        scope = getattr(self.transport.get_protocol(), "scope", None)
        if scope is not None and self.tls is not None:
            scope.setdefault("extensions", {})["tls"] = self.tls

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self.in_head = True
        self.head_bytes = 0
        self.head_started = False

    # -- header timeout -----------------------------------------------------------------

    def _arm_head_timer(self) -> None:
        if self.head_timer is None:
            self.head_timer = self.loop.call_later(self.header_timeout, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None

    def _head_timed_out(self) -> None:
        self.head_timer = None
        if self.transport.is_closing() or not self.in_head:
            return
        if self.cycle is not None and not self.cycle.response_complete:
            # The previous request is still being answered; its successor waits for it.
            self._arm_head_timer()
            return
        REFUSED.labels("header_timeout").inc()
        if self.head_started:
            self.transport.write(
                _problem(
                    408,
                    "HEADER_TIMEOUT",
                    f"the request line and headers did not arrive within {self.header_timeout:g} s",
                )
            )
        self.transport.close()


# -- TLS ---------------------------------------------------------------------------------


def tls_context(tls: TlsConfig, base_dir: str = ".", source: str = "<config>") -> ssl.SSLContext:
    """The server's TLS context: its certificate and key, and client verification when configured.

    TLS 1.2 is the oldest version accepted. Raises ConfigError naming the field when a
    file cannot be read or does not hold what it should.
    """

    def path(name: str) -> str:
        p = Path(name)
        return str(p if p.is_absolute() else Path(base_dir) / p)

    for field in ("cert_file", "key_file", "client_ca_file"):
        name = getattr(tls, field)
        if name is not None and not Path(path(name)).is_file():
            raise ConfigError(source, f"$.server.tls.{field}", f"no such file: {path(name)}")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(path(tls.cert_file), path(tls.key_file))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            source,
            "$.server.tls",
            f"cannot load the certificate {path(tls.cert_file)} with key {path(tls.key_file)}: "
            f"{getattr(exc, 'reason', None) or getattr(exc, 'strerror', None) or exc}",
        ) from None
    if tls.client_ca_file is not None:
        try:
            context.load_verify_locations(cafile=path(tls.client_ca_file))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                source,
                "$.server.tls.client_ca_file",
                f"cannot load CA certificates from {path(tls.client_ca_file)}: "
                f"{getattr(exc, 'reason', None) or getattr(exc, 'strerror', None) or exc}",
            ) from None
        context.verify_mode = ssl.CERT_REQUIRED if tls.require_client_cert else ssl.CERT_OPTIONAL
    return context


def _context_factory(tls: TlsConfig, base_dir: str, source: str, config: Any, default: Any) -> ssl.SSLContext:
    return tls_context(tls, base_dir, source)


def tls_context_factory(tls: TlsConfig, base_dir: str = ".", source: str = "<config>") -> Any:
    """uvicorn's ``ssl_context_factory`` for ``tls``: picklable, so worker processes build their own."""
    return functools.partial(_context_factory, tls, base_dir, source)
