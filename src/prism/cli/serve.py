"""``prism serve``: run the HTTP gateway under uvicorn.

Without ``--config`` it serves the embedded SQLite store under ``./.prism/`` with a
``default`` namespace on 127.0.0.1:8080. A bad config is reported as one line
naming the file, the field and the problem (exit code 2). Binding to a
non-loopback address without any auth configured is refused unless ``--insecure``.
SIGTERM stops accepting connections and lets in-flight requests finish (up to
``server.shutdown_timeout``, 10 s by default).
"""

from __future__ import annotations

import argparse
import gc
import ipaddress
import math
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_parser", "run", "worker_app"]

#: Environment variables that carry the serve options to worker processes (``--workers N``).
_ENV_CONFIG = "PRISM_SERVE_CONFIG"
_ENV_URL = "PRISM_SERVE_URL"
_ENV_HOST = "PRISM_SERVE_HOST"
_ENV_GRPC_PORT = "PRISM_SERVE_GRPC_PORT"
#: Where the zero-config gateway keeps its embedded SQLite store (the only directory serve creates).
DEFAULT_DATA_DIR = ".prism"
#: Allocations between young-generation garbage collections. Requests allocate many short-lived
#: containers that reference counting already frees; collecting less often saves CPU per request.
GC_GEN0_THRESHOLD = 20_000
#: Exit codes: a bad config or refused options, and a server that did not start.
EXIT_CONFIG = 2
EXIT_STARTUP = 1


def add_parser(subparsers: Any) -> None:
    """Register ``prism serve`` and its options."""
    parser = subparsers.add_parser(
        "serve",
        help="run the HTTP gateway",
        description="Serve Prism namespaces over HTTP (the KeyValue API, with auth, audit and metrics).",
    )
    parser.add_argument(
        "--config", "-c", help="the YAML config (default: embedded SQLite store in ./.prism/)"
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    parser.add_argument(
        "--port", "-p", type=int, default=8080, help="port to bind (default: 8080; 0 picks one)"
    )
    parser.add_argument(
        "--grpc-port",
        type=int,
        default=None,
        help="port to serve gRPC on (default: server.grpc_port, else 8081; 0 turns gRPC off)",
    )
    parser.add_argument(
        "--insecure",
        action="store_true",
        help="allow a non-loopback bind with no auth configured (anyone who can connect gets full access)",
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="worker processes sharing the socket (default: 1)"
    )
    parser.add_argument(
        "--log-level", choices=["debug", "info", "warning", "error"], help="overrides server.log_level"
    )
    parser.set_defaults(func=run)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _fail(message: str, code: int) -> int:
    print(f"prism: error: {message}", file=sys.stderr)
    return code


def _load(config_path: str | None, *, announce: bool = False) -> Any:
    """The config to serve; without a file, the zero-config default (creating ``./.prism/``)."""
    from prism.gateway.config import default_config, load_config

    if config_path is None:
        data_dir = Path(DEFAULT_DATA_DIR).resolve()
        if not data_dir.is_dir():
            data_dir.mkdir()
            if announce:
                print(f"Created the data directory {data_dir}", flush=True)
        return default_config()
    return load_config(config_path)


def _build_app(
    config: Any,
    banner: list[str] | None = None,
    *,
    host: str = "127.0.0.1",
    grpc_port: int | None = None,
    shared_port: bool = False,
) -> Any:
    from prism.gateway.app import create_app, load_extensions

    routes: list[Any] = []
    on_startup: list[Any] = []
    on_shutdown: list[Any] = []
    for extension in load_extensions(config):
        routes.extend(extension.routes)
        on_startup.extend(extension.on_startup)
        on_shutdown.extend(extension.on_shutdown)
    grpc_hooks = _grpc_hooks(config, host, grpc_port, shared_port)
    if grpc_hooks is not None:
        on_startup.append(grpc_hooks[0])
        on_shutdown.insert(0, grpc_hooks[1])
    app = create_app(config, extra_routes=routes, on_startup=on_startup, on_shutdown=on_shutdown)
    return _QuietStartup(app, banner or [])


def _grpc_hooks(config: Any, host: str, override: int | None, shared: bool) -> tuple[Any, Any] | None:
    """The hooks serving gRPC beside HTTP, or None when it is off (port 0, or grpc not installed)."""
    port = override if override is not None else config.server.grpc_port
    if port == 0:
        return None
    try:
        from prism.grpc.server import serve_grpc
    except ImportError as exc:
        if port is not None:
            raise SystemExit(
                f"prism: error: serving gRPC needs the {exc.name!r} package: pip install 'prism[grpc]'"
            ) from None
        return None
    from prism.gateway.config import DEFAULT_GRPC_PORT

    port = DEFAULT_GRPC_PORT if port is None else port
    return serve_grpc(
        host, port, explicit=override is not None or config.server.grpc_port is not None, shared=shared
    )


class _QuietStartup:
    """Reports a failed startup (a store that does not open) as one line instead of a traceback,
    and prints the banner once startup succeeded (the stores are open)."""

    def __init__(self, app: Any, banner: list[str]) -> None:
        self.app = app
        self.banner = banner

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return

        async def send_short(message: Any) -> None:
            if message["type"] == "lifespan.startup.failed":
                error = getattr(self.app.state.gateway, "startup_error", None)
                message = {**message, "message": f"prism: error: {error or 'startup failed'}"}
            elif message["type"] == "lifespan.startup.complete":
                for line in self.banner:
                    print(line, flush=True)
            await send(message)

        try:
            await self.app(scope, receive, send_short)
        except Exception:
            if getattr(self.app.state.gateway, "startup_error", None) is None:
                raise


def worker_app() -> Any:
    """The app of one worker process (``--workers N``), built from the config the parent validated."""
    from prism.gateway.logs import configure_logging

    path = os.environ.get(_ENV_CONFIG) or None
    config = _load(path)
    configure_logging(os.environ.get("PRISM_SERVE_LOG_LEVEL", config.server.log_level))
    url = os.environ.get(_ENV_URL, "")
    grpc = os.environ.get(_ENV_GRPC_PORT) or None
    app = _build_app(
        config,
        [f"Prism gateway worker {os.getpid()} listening on {url}"],
        host=os.environ.get(_ENV_HOST, "127.0.0.1"),
        grpc_port=None if grpc is None else int(grpc),
        shared_port=True,
    )
    _tune_gc()
    return app


def _tune_gc() -> None:
    """Move everything built so far out of the collector's way and collect young objects less often."""
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, gen1, gen2)


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _banner(config: Any, base: str) -> list[str]:
    ns = config.namespaces[0].name
    auth = " -H 'X-API-Key: <your key>'" if config.auth.enabled else ""
    insecure = " -k" if base.startswith("https:") else ""
    lines = [f"Prism gateway listening on {base} (config: {config.source})"]
    if config.source == "<default config>":
        lines.append(f"Data directory: {Path(DEFAULT_DATA_DIR).resolve()} (embedded SQLite store)")
    lines.append(
        f"Try it:  curl{insecure} -X PUT{auth} --data-binary 'hello' {base}/v1/kv/{ns}/greeting && "
        f"curl{insecure}{auth} {base}/v1/kv/{ns}/greeting"
    )
    lines.append(f"API docs: {base}/docs")
    return lines


def run(args: argparse.Namespace) -> int:
    """Validate the config, bind, and serve until SIGTERM or Ctrl-C.

    The banner (where it listens, how to try it) is printed once the stores are open.
    """
    import uvicorn

    from prism.gateway.config import ConfigError
    from prism.gateway.logs import configure_logging
    from prism.gateway.server import effective_max_connections, tls_context, tls_context_factory
    from prism.streaming.app import UVICORN_OPTIONS

    if not 0 <= args.port <= 65535:
        return _fail(f"--port must be from 0 to 65535, not {args.port}", EXIT_CONFIG)
    if args.grpc_port is not None and not 0 <= args.grpc_port <= 65535:
        return _fail(f"--grpc-port must be from 0 (no gRPC) to 65535, not {args.grpc_port}", EXIT_CONFIG)
    try:
        config = _load(args.config, announce=True)
    except ConfigError as exc:
        return _fail(str(exc), EXIT_CONFIG)
    level = args.log_level or config.server.log_level
    configure_logging(level)
    if not _is_loopback(args.host) and not config.auth.enabled and not args.insecure:
        return _fail(
            f"refusing to serve on {args.host} without authentication: configure auth.api_keys or auth.jwt, "
            "bind to 127.0.0.1, or pass --insecure",
            EXIT_CONFIG,
        )
    if args.workers < 1:
        return _fail("--workers must be at least 1", EXIT_CONFIG)
    if args.workers > 1:
        shared = [n for n in config.stores if config.store_url(n).startswith("memory:")]
        if shared:
            return _fail(
                f"store {shared[0]!r} is in-memory and cannot be shared by --workers > 1", EXIT_CONFIG
            )
    server_config = config.server
    tls = server_config.tls
    try:
        if tls is not None:
            # Built here once so a bad certificate or key is reported before serving.
            tls_context(tls, config.base_dir, config.source)
    except ConfigError as exc:
        return _fail(str(exc), EXIT_CONFIG)
    try:
        sock = _bind(args.host, args.port)
    except (OSError, OverflowError) as exc:
        reason = getattr(exc, "strerror", None) or exc
        return _fail(f"cannot listen on {args.host}:{args.port}: {reason}", EXIT_STARTUP)
    port = sock.getsockname()[1]
    shown = f"[{args.host}]" if ":" in args.host else args.host
    base = f"{'https' if tls is not None else 'http'}://{shown}:{port}"
    try:
        # Built in the parent even with --workers, so a bad secret or key file fails here, once.
        app = _build_app(config, _banner(config, base), host=args.host, grpc_port=args.grpc_port)
    except ConfigError as exc:
        sock.close()
        return _fail(str(exc), EXIT_CONFIG)
    allowed = effective_max_connections(server_config.max_connections)
    if allowed < server_config.max_connections:
        print(
            f"prism: warning: serving at most {allowed} connections per process, not "
            f"server.max_connections={server_config.max_connections}: the open-file limit (ulimit -n) "
            "is lower",
            file=sys.stderr,
            flush=True,
        )
    common: dict[str, Any] = {
        "loop": "auto",
        "lifespan": "on",
        "log_config": None,
        "access_log": False,
        "server_header": False,
        "timeout_graceful_shutdown": math.ceil(config.server.shutdown_timeout),
        "timeout_keep_alive": server_config.keep_alive_timeout,
        # Prism's HTTP protocol (caps on headers and connections, a header timeout, client
        # certificates) and the WebSocket settings of /v1/stream.
        **UVICORN_OPTIONS,
    }
    if tls is not None:
        common["ssl_context_factory"] = tls_context_factory(tls, config.base_dir, config.source)
    _tune_gc()
    # uvicorn re-raises the signal it drained on; with a handler in place that ends in a clean exit 0.
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    if args.workers == 1:
        server = uvicorn.Server(uvicorn.Config(app, **common))
        try:
            server.run(sockets=[sock])
        except SystemExit:
            pass
        except KeyboardInterrupt:
            return 130
        finally:
            sock.close()
        return 0 if server.started else EXIT_STARTUP
    os.environ[_ENV_CONFIG] = args.config or ""
    os.environ[_ENV_URL] = base
    os.environ[_ENV_HOST] = args.host
    grpc_port = args.grpc_port
    if grpc_port is None and config.server.grpc_port is None:
        # Workers share their gRPC port (SO_REUSEPORT): only a port named on purpose, so two
        # unrelated gateways never end up answering on the same default port.
        print(
            "prism: note: not serving gRPC: with --workers, name its port (server.grpc_port or --grpc-port)",
            file=sys.stderr,
            flush=True,
        )
        grpc_port = 0
    os.environ[_ENV_GRPC_PORT] = "" if grpc_port is None else str(grpc_port)
    os.environ["PRISM_SERVE_LOG_LEVEL"] = level
    from uvicorn.supervisors import Multiprocess

    multi = uvicorn.Config("prism.cli.serve:worker_app", factory=True, workers=args.workers, **common)
    try:
        Multiprocess(multi, sockets=[sock]).run()
    finally:
        sock.close()
    return 0
