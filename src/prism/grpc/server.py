"""The gRPC transport of ``prism serve``: a thin adapter from gRPC calls to the gateway pipeline.

Every KeyValue method (``prism.v1.KeyValue`` and the seed's interfaces) is a
:class:`~prism.gateway.pipeline.DataRoute` run by the same
:class:`~prism.gateway.pipeline.Pipeline` as the HTTP routes. The adapter builds the
:class:`~prism.gateway.pipeline.Call` from the call's metadata (``authorization:
Bearer ...`` or ``x-api-key``, ``idempotency-key``, ``x-request-id``) and the request
message (its bytes are the body the idempotency fingerprint covers; an
``IdempotencyToken`` becomes the Idempotency-Key ``<generation_time_ms>-<token>``),
runs it, and answers the serialized response, or the problem as a gRPC status:

=====  ====================  =====  ====================
HTTP   gRPC                  HTTP   gRPC
=====  ====================  =====  ====================
400    INVALID_ARGUMENT      413    INVALID_ARGUMENT
401    UNAUTHENTICATED       422    INVALID_ARGUMENT
403    PERMISSION_DENIED     429    RESOURCE_EXHAUSTED
404    NOT_FOUND             500    INTERNAL
408    DEADLINE_EXCEEDED     501    UNIMPLEMENTED
409    ABORTED               503    UNAVAILABLE
412    FAILED_PRECONDITION
=====  ====================  =====  ====================

The problem's code travels as the trailing metadata ``prism-error-code``; a 429 or 503
also carries a ``google.rpc.RetryInfo`` detail (``grpc-status-details-bin``) and
``retry-after`` in seconds. The server also answers ``grpc.health.v1.Health`` and
server reflection, and the seed's lifecycle interface.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import grpc
import msgspec
from google.protobuf import duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc import aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import Counter, Histogram

from prism.gateway.config import DEFAULT_GRPC_PORT, ConfigError, GatewayConfig
from prism.gateway.pipeline import Pipeline
from prism.gateway.problem import HTTPProblem
from prism.gateway.runtime import Gateway
from prism.grpc._gen.prism.interfaces import lifecycle_pb2 as life
from prism.grpc.compat import LIFECYCLE, STATUS_ONLY, Lifecycle, compat_methods
from prism.grpc.keyvalue import GrpcCall, GrpcMethod, keyvalue_methods
from prism.grpc.signals import signals_methods

__all__ = ["STATUS_CODES", "GrpcServer", "GrpcTransport", "grpc_port", "serve_grpc"]

log = logging.getLogger("prism.grpc")

#: The gRPC status of each HTTP status the pipeline answers.
STATUS_CODES: dict[int, grpc.StatusCode] = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    408: grpc.StatusCode.DEADLINE_EXCEEDED,
    409: grpc.StatusCode.ABORTED,
    412: grpc.StatusCode.FAILED_PRECONDITION,
    413: grpc.StatusCode.INVALID_ARGUMENT,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    500: grpc.StatusCode.INTERNAL,
    501: grpc.StatusCode.UNIMPLEMENTED,
    503: grpc.StatusCode.UNAVAILABLE,
}

#: Room above ``server.max_body_bytes`` for the rest of a request message (keys, options).
MESSAGE_OVERHEAD_BYTES = 1024 * 1024

REQUESTS = Counter(
    "prism_grpc_requests_total", "gRPC calls answered, by method and status code.", ["method", "code"]
)
DURATION = Histogram(
    "prism_grpc_request_duration_seconds", "Time to answer a gRPC call, by method.", ["method"]
)


class _Problem(msgspec.Struct):
    status: int = 500
    code: str = "INTERNAL"
    detail: str = ""


_decode_problem = msgspec.json.Decoder(_Problem).decode
_NAMESPACE_HEADER = b"x-prism-namespace"


def _retry_info(code: grpc.StatusCode, detail: str, seconds: int) -> bytes:
    """``grpc-status-details-bin``: a google.rpc.Status holding a RetryInfo."""
    info = error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=seconds))
    status = status_pb2.Status(code=getattr(code_pb2, code.name), message=detail)
    status.details.add().Pack(info)
    return bytes(status.SerializeToString())


class GrpcTransport:
    """Builds the Call of each gRPC call, runs the pipeline, and answers its Reply as gRPC."""

    def __init__(self, gateway: Gateway, pipeline: Pipeline | None = None) -> None:
        self.gateway = gateway
        self.pipeline = pipeline or Pipeline(gateway)
        self.retry_after = gateway.config.server.retry_after
        self.compat_namespace = gateway.config.compat.namespace

    def unary(self, method: GrpcMethod) -> Callable[[bytes, aio.ServicerContext], Awaitable[bytes]]:
        """The raw (bytes in, bytes out) handler of ``method``."""
        pipeline = self.pipeline
        gateway = self.gateway
        route = method.route
        parse = method.request_type.FromString
        in_band = method.in_band
        compat = in_band is not None or not hasattr(method.request_type(), "namespace")
        token_field = "idempotency" in method.request_type.DESCRIPTOR.fields_by_name
        name = method.name
        timer = DURATION.labels(name)

        async def handle(request: bytes, context: aio.ServicerContext) -> bytes:
            started = time.perf_counter()
            headers = [
                (key.encode("latin-1"), value.encode("latin-1"))
                for key, value in context.invocation_metadata() or ()
                if isinstance(value, str)
            ]
            request_id = _request_id(headers)
            try:
                message = parse(request)
            except Exception:
                return await self._abort(
                    context, name, 400, "INVALID_BODY", "the request message is malformed", request_id
                )
            if compat:
                namespace = _header(headers, _NAMESPACE_HEADER) or self.compat_namespace
                if namespace is None:
                    return await self._abort(
                        context,
                        name,
                        400,
                        "NAMESPACE_REQUIRED",
                        "name the namespace with the x-prism-namespace metadata or compat.namespace",
                        request_id,
                    )
            else:
                namespace = message.namespace
            if token_field and message.HasField("idempotency"):
                token = message.idempotency
                headers.append((b"idempotency-key", f"{token.generation_time_ms}-{token.token}".encode()))

            async def read_body(limit: int) -> bytes:
                return request

            call = GrpcCall(
                gateway, "POST", name, {"ns": namespace}, headers, request_id=request_id, read_body=read_body
            )
            call.message = message
            reply = await pipeline.run(route, call)
            if reply.status < 400:
                REQUESTS.labels(name, "OK").inc()
                timer.observe(time.perf_counter() - started)
                return reply.body
            problem = _decode_problem(reply.body)
            if in_band is not None and reply.status not in STATUS_ONLY:
                REQUESTS.labels(name, "OK").inc()
                timer.observe(time.perf_counter() - started)
                return in_band(HTTPProblem(reply.status, problem.code, problem.detail))
            timer.observe(time.perf_counter() - started)
            return await self._abort(context, name, reply.status, problem.code, problem.detail, request_id)

        return handle

    async def _abort(
        self,
        context: aio.ServicerContext,
        method: str,
        status: int,
        code: str,
        detail: str,
        request_id: str | None,
    ) -> bytes:
        grpc_code = STATUS_CODES.get(status, grpc.StatusCode.UNKNOWN)
        REQUESTS.labels(method, grpc_code.name).inc()
        trailers: list[tuple[str, str | bytes]] = [("prism-error-code", code)]
        if request_id is not None:
            trailers.append(("x-request-id", request_id))
        if status in (429, 503):
            trailers.append(("retry-after", str(self.retry_after)))
            trailers.append(("grpc-status-details-bin", _retry_info(grpc_code, detail, self.retry_after)))
        await context.abort(grpc_code, detail, tuple(trailers))
        raise AssertionError("abort returns by raising")  # pragma: no cover


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> str | None:
    for key, value in headers:
        if key == name:
            return value.decode("latin-1")
    return None


class _RequestIds:
    """Request ids as HTTP makes them: a per-process random prefix and a counter."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.prefix = os.urandom(6).hex()
        self.counter = itertools.count(1)


_ids = _RequestIds()
os.register_at_fork(after_in_child=_ids.reset)


def _request_id(headers: list[tuple[bytes, bytes]]) -> str:
    given = _header(headers, b"x-request-id")
    if (
        given is not None
        and 0 < len(given) <= 128
        and given.isascii()
        and given.isprintable()
        and " " not in given
    ):
        return given
    return f"{_ids.prefix}{next(_ids.counter):012x}"


def _lifecycle_handler(lifecycle: Lifecycle) -> grpc.GenericRpcHandler:
    def unary(fn: Callable[[Any], Awaitable[Any]], request_type: Any, response_type: Any) -> Any:
        async def handle(request: Any, context: aio.ServicerContext) -> Any:
            return await fn(request)

        return grpc.unary_unary_rpc_method_handler(
            handle,
            request_deserializer=request_type.FromString,
            response_serializer=response_type.SerializeToString,
        )

    return grpc.method_handlers_generic_handler(
        LIFECYCLE,
        {
            "Initialize": unary(lifecycle.initialize, life.InitializeRequest, life.InitializeResponse),
            "Start": unary(lifecycle.start, life.StartRequest, life.StartResponse),
            "Drain": unary(lifecycle.drain, life.DrainRequest, life.DrainResponse),
            "Stop": unary(lifecycle.stop, life.StopRequest, life.StopResponse),
            "HealthCheck": unary(lifecycle.health_check, life.HealthCheckRequest, life.HealthCheckResponse),
        },
    )


def grpc_port(config: GatewayConfig, override: int | None = None) -> tuple[int, bool]:
    """(the port to serve gRPC on, whether it was asked for explicitly); port 0 means no gRPC."""
    if override is not None:
        return override, True
    if config.server.grpc_port is not None:
        return config.server.grpc_port, True
    return DEFAULT_GRPC_PORT, False


class GrpcServer:
    """A ``grpc.aio`` server answering every gRPC service of one gateway."""

    def __init__(
        self, gateway: Gateway, methods: Sequence[GrpcMethod] | None = None, *, shared_port: bool = False
    ) -> None:
        self.gateway = gateway
        config = gateway.config
        limit = config.server.max_body_bytes + MESSAGE_OVERHEAD_BYTES
        self.server = aio.server(
            options=[
                # Only worker processes of one `prism serve` share a port: any other process
                # on it would silently take part of the calls.
                ("grpc.so_reuseport", 1 if shared_port else 0),
                ("grpc.max_receive_message_length", limit),
                ("grpc.max_send_message_length", -1),
            ]
        )
        transport = GrpcTransport(gateway)
        found = (
            list(methods)
            if methods is not None
            else [*keyvalue_methods(gateway), *compat_methods(gateway), *signals_methods(gateway)]
        )
        by_service: dict[str, dict[str, grpc.RpcMethodHandler]] = {}
        for method in found:
            service, _, name = method.name.lstrip("/").partition("/")
            by_service.setdefault(service, {})[name] = grpc.unary_unary_rpc_method_handler(
                transport.unary(method)
            )
        handlers = [grpc.method_handlers_generic_handler(s, h) for s, h in by_service.items()]
        from prism import __version__

        handlers.append(_lifecycle_handler(Lifecycle(gateway, __version__)))
        from prism.grpc.namespaces import SERVICE as NAMESPACE_ADMIN
        from prism.grpc.namespaces import namespace_admin_handler

        handlers.append(namespace_admin_handler(gateway))
        self.server.add_generic_rpc_handlers(tuple(handlers))
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self.services = [*by_service, LIFECYCLE, NAMESPACE_ADMIN]
        reflection.enable_server_reflection(
            (*self.services, health.SERVICE_NAME, reflection.SERVICE_NAME), self.server
        )
        self.port = 0

    def bind(self, host: str, port: int) -> int:
        """Listen on ``host:port`` (TLS when ``server.tls`` is set); the port bound."""
        config = self.gateway.config
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        tls = config.server.tls
        try:
            if tls is None:
                bound = self.server.add_insecure_port(address)
            else:
                bound = self.server.add_secure_port(address, _credentials(config, tls))
        except RuntimeError as exc:
            raise OSError(f"cannot listen on {address}: {exc}") from None
        if bound == 0:
            raise OSError(f"cannot listen on {address}")
        self.port = int(bound)
        return self.port

    async def start(self) -> None:
        await self.server.start()
        for name in ("", *self.services):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)

    async def stop(self, grace: float) -> None:
        """Refuse new calls, let running ones finish within ``grace`` seconds."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)


def _credentials(config: GatewayConfig, tls: Any) -> grpc.ServerCredentials:
    def read(name: str, path: str) -> bytes:
        try:
            return config.resolve_path(path).read_bytes()
        except OSError as exc:
            raise ConfigError(
                config.source, f"$.server.tls.{name}", f"cannot read {path}: {exc.strerror}"
            ) from None

    root = read("client_ca_file", tls.client_ca_file) if tls.client_ca_file else None
    return grpc.ssl_server_credentials(
        [(read("key_file", tls.key_file), read("cert_file", tls.cert_file))],
        root_certificates=root,
        require_client_auth=bool(root is not None and tls.require_client_cert),
    )


def serve_grpc(
    host: str, port: int, explicit: bool, *, shared: bool = False
) -> tuple[Callable[[Gateway], Awaitable[None]], Callable[[Gateway], Awaitable[None]]]:
    """The startup and shutdown hooks that serve gRPC beside HTTP in ``prism serve``.

    A port asked for explicitly that cannot be bound fails the startup; the default
    port, taken by something else, is skipped with a warning. ``shared``: the worker
    processes of one ``prism serve --workers N`` listen on the same port.
    """
    running: list[GrpcServer] = []

    async def start(gateway: Gateway) -> None:
        server = GrpcServer(gateway, shared_port=shared)
        try:
            bound = server.bind(host, port)
        except OSError as exc:
            if explicit:
                gateway.startup_error = f"{exc} (server.grpc_port / --grpc-port)"
                raise
            print(f"prism: warning: not serving gRPC: {exc}; set server.grpc_port or --grpc-port", flush=True)
            return
        await server.start()
        running.append(server)
        scheme = "grpcs" if gateway.config.server.tls is not None else "grpc"
        shown = f"[{host}]" if ":" in host else host
        print(f"Prism gRPC listening on {scheme}://{shown}:{bound}", flush=True)

    async def stop(gateway: Gateway) -> None:
        while running:
            await running.pop().stop(gateway.config.server.shutdown_timeout)

    return start, stop
