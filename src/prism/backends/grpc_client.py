"""``prism://HOST:PORT``: a running Prism gateway, used as a store through its gRPC API.

``prism.connect("prism://localhost:8081")`` gives the whole KeyValue API against a
gateway (``prism serve``) over ``prism.v1.KeyValue``: flat keys through Get, Put,
Delete, GetMany and Transact, the items of records through GetItems, PutItems and
DeleteItems. The gateway applies its own authentication, policies, tenancy, PII
rules, limits and audit to every call, exactly as for any other client; etags,
expiry times and conditions are the gateway's too.

Options (keyword arguments or URL query parameters):

* ``tls`` (``false``): talk TLS; ``ca_file`` names a PEM bundle of the CAs to trust
  (else the system's);
* ``token_env`` (``PRISM_TOKEN``): the environment variable holding the API key or
  JWT, sent as ``authorization: Bearer`` metadata. The token itself never goes into
  the URL (it would end up in logs); a ``token`` keyword argument is accepted from code;
* ``connect_timeout`` (2 s), ``operation_timeout`` (10 s): the deadline of one call,
  retries included; what is left of it goes to the gateway as the gRPC deadline of
  each attempt, so the gateway stops working on a call its client gave up;
* ``max_retries`` (5), ``retry_base`` (0.02 s), ``retry_cap`` (0.5 s): retries with
  jittered backoff on UNAVAILABLE and RESOURCE_EXHAUSTED answers and broken
  connections. Reads are always safe to retry; every write carries an
  ``IdempotencyToken`` made once per write, so a retried write is applied once by a
  gateway with ``idempotency`` enabled (its default). Writes are not retried when the
  gateway's idempotency is off (``retry_writes=false`` says so to the client);
* ``max_value_bytes`` (4 MiB): the largest value, as the gateway's namespaces allow;
* ``signals`` (``true``): ask the gateway for each namespace's signals
  (``prism.v1.Signals``) on first use and every ``refresh_after_s``, and apply them
  (docs/control-plane.md, "Signals"): reads get ``latency_max_ms`` as their deadline,
  the advised retries, and reads of keys one hedge after ``hedge_after_ms``; writes
  whose values pass ``compress_above_bytes`` are sent gzip-compressed when the gateway
  offers it. Writes keep ``operation_timeout``; settings given here win over the
  advice. ``signals_retry`` (30 s): when to ask again after no answer.
  ``signals_prefetch`` (100): when it opens, the backend lists the namespaces the
  caller may read and asks for the signals of this many of them at most (0: none),
  all within ``connect_timeout``; a failure there never fails the connect (it is
  logged, and the signals are asked for on first use). Signals are refreshed in the
  background every ``refresh_after_s``.

What cannot be honoured is declared: the gateway offers no strongly consistent
reads, so ``consistency="strong"`` raises Unsupported; transactions run on flat keys;
a conditional delete of an item of a record is Unsupported.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit

# Without the grpc extra these fail, and the scheme registry names `pip install 'prism[grpc]'`.
import grpc
from grpc import aio
from grpc_health.v1 import health_pb2

from prism.backends._retry import NetworkSettings, call_with_retry, parse_flag, split_options
from prism.backends._signals import (
    ADVISED,
    COMPRESSED,
    DEFAULT_SIGNALS_PREFETCH,
    DEFAULT_SIGNALS_RETRY,
    ClientSignals,
    NamespaceSignals,
    RetryAdvice,
    hedged,
)
from prism.backends.base import Backend
from prism.errors import (
    BackendTimeout,
    BackendUnavailable,
    InvalidArgument,
    InvalidKey,
    PreconditionFailed,
    PrismError,
    Unsupported,
    ValueTooLarge,
)
from prism.grpc._gen.prism.v1 import keyvalue_pb2 as pb
from prism.grpc._gen.prism.v1 import namespaces_pb2, signals_pb2
from prism.kv.tokens import encode_token
from prism.model import (
    DEFAULT_MAX_VALUE_BYTES,
    Capabilities,
    Item,
    StoredWrite,
    WriteOutcome,
    condition_failed,
    transaction_refused,
)

__all__ = ["DEFAULT_GRPC_OPERATION_TIMEOUT", "GatewayGrpcBackend"]

#: The environment variable read for the token when ``token_env`` is not given.
DEFAULT_TOKEN_ENV = "PRISM_TOKEN"
#: Default deadline of one call through the gateway, retries included (seconds).
DEFAULT_GRPC_OPERATION_TIMEOUT = 10.0
#: Largest page the gateway hands out for a listing, a range read or a batch.
GATEWAY_PAGE_LIMIT = 1000

_SERVICE = "/prism.v1.KeyValue/"
#: The Signals method (a full path: it is of another service).
_SIGNALS = "/prism.v1.Signals/GetSignals"
_LIST = "/prism.v1.NamespaceAdmin/List"
_OPTIONS = frozenset(
    {
        "tls",
        "token_env",
        "token",
        "ca_file",
        "max_value_bytes",
        "retry_writes",
        "signals",
        "signals_retry",
        "signals_prefetch",
    }
)
_RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED})

R = TypeVar("R")


def _ttl(expires_at: float | None) -> float | None:
    # The library computed an absolute time; the gateway takes seconds from its own clock.
    return None if expires_at is None else max(expires_at - time.time(), 0.001)


def _item(raw: Any, key: str) -> Item:
    return Item(
        key,
        raw.value,
        raw.etag,
        raw.expires_at if raw.HasField("expires_at") else None,
        raw.content_type if raw.HasField("content_type") else None,
    )


def _put_op(op: StoredWrite, key: str) -> Any:
    assert op.value is not None
    out = pb.PutOp(key=key, value=op.value, if_absent=op.if_absent)
    ttl = _ttl(op.expires_at)
    if ttl is not None:
        out.ttl_seconds = ttl
    if op.content_type is not None:
        out.content_type = op.content_type
    if op.if_match is not None:
        out.if_match = op.if_match
    return out


def _token() -> Any:
    return pb.IdempotencyToken(generation_time_ms=int(time.time() * 1000), token=secrets.token_hex(12))


class _Refused(Exception):
    """A gRPC status the gateway answered (kept apart from transport failures)."""

    def __init__(self, code: Any, detail: str, error_code: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.error_code = error_code


class GatewayGrpcBackend(Backend):
    """A Prism gateway's ``prism.v1.KeyValue`` gRPC service as a backend."""

    name = "prism"
    # The gateway makes the etag of every write, so items cannot be restored with their own.
    capabilities = Capabilities(consistent_reads=False, restore=False)

    def __init__(
        self,
        target: str,
        *,
        tls: bool = False,
        token: str | None = None,
        network: NetworkSettings | None = None,
        ca_file: str | None = None,
        max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
        retry_writes: bool = True,
        signals: bool = True,
        signals_retry: float = DEFAULT_SIGNALS_RETRY,
        signals_prefetch: int = DEFAULT_SIGNALS_PREFETCH,
        own_settings: frozenset[str] | None = None,
    ) -> None:
        if max_value_bytes < 1:
            raise InvalidArgument("max_value_bytes must be a positive number of bytes")
        self.target = target
        self.tls = tls
        self.network = network or NetworkSettings(operation_timeout=DEFAULT_GRPC_OPERATION_TIMEOUT)
        self.ca_file = ca_file
        self.retry_writes = retry_writes
        self.capabilities = Capabilities(
            consistent_reads=False, max_value_bytes=max_value_bytes, restore=False
        )
        self._metadata: tuple[tuple[str, str], ...] = (
            (("authorization", f"Bearer {token}"),) if token is not None else ()
        )
        self._channel: Any = None
        self._calls: dict[str, Any] = {}
        #: The network settings the user set, which signals never override (given ``network``: all).
        self.own_settings = (
            own_settings if own_settings is not None else frozenset(ADVISED if network is not None else ())
        )
        if signals_retry <= 0:
            raise InvalidArgument("signals_retry must be a positive number of seconds")
        if signals_prefetch < 0:
            raise InvalidArgument("signals_prefetch must be a number of namespaces, 0 or more")
        #: How many namespaces' signals are asked for when the backend opens.
        self.signals_prefetch = signals_prefetch
        #: The gateway's signals per namespace (None: not asked for).
        self.signals = (
            NamespaceSignals(self._fetch_signals, self.name, retry_after=signals_retry) if signals else None
        )

    def __repr__(self) -> str:
        return f"<GatewayGrpcBackend {'grpcs' if self.tls else 'grpc'}://{self.target}>"

    @property
    def _describe(self) -> str:
        return f"the Prism gateway at {self.target}"

    @classmethod
    def from_url(cls, url: str, **options: Any) -> GatewayGrpcBackend:
        query = urlsplit(url).query
        if any(p.split("=", 1)[0] == "token" for p in query.split("&")):
            raise InvalidArgument(
                "a prism:// URL must not hold the token (URLs end up in logs); "
                f"put it in an environment variable and name it with token_env (default {DEFAULT_TOKEN_ENV})"
            )
        base, opts = split_options(url, options)
        scheme, _, rest = base.partition("://")
        parts = urlsplit(f"grpc://{rest}")
        if parts.username is not None or parts.password is not None:
            raise InvalidArgument("a prism:// URL takes no user or password; use token_env")
        if not parts.hostname or parts.path not in ("", "/"):
            raise InvalidArgument(f"a gateway URL looks like 'prism://localhost:8081', not {scheme}://{rest}")
        own = frozenset(name for name in ADVISED if name in opts)
        if "operation_timeout" not in opts:
            opts["operation_timeout"] = DEFAULT_GRPC_OPERATION_TIMEOUT
        network = NetworkSettings.from_options(opts)
        token = opts.pop("token", None)
        token_env = str(opts.pop("token_env", DEFAULT_TOKEN_ENV))
        if token is None and token_env:
            token = os.environ.get(token_env) or None
        kwargs: dict[str, Any] = {}
        if "signals_prefetch" in opts:
            raw = opts.pop("signals_prefetch")
            try:
                kwargs["signals_prefetch"] = int(raw)
            except (TypeError, ValueError):
                raise InvalidArgument(
                    f"signals_prefetch must be a number of namespaces, not {raw!r}"
                ) from None
        if "signals_retry" in opts:
            raw = opts.pop("signals_retry")
            try:
                kwargs["signals_retry"] = float(raw)
            except (TypeError, ValueError):
                raise InvalidArgument(f"signals_retry must be a number of seconds, not {raw!r}") from None
        for flag in ("tls", "retry_writes", "signals"):
            if flag in opts:
                kwargs[flag] = parse_flag(flag, opts.pop(flag))
        if "max_value_bytes" in opts:
            try:
                kwargs["max_value_bytes"] = int(opts.pop("max_value_bytes"))
            except (TypeError, ValueError) as exc:
                raise InvalidArgument(f"bad prism:// option: {exc}") from exc
        if "ca_file" in opts:
            kwargs["ca_file"] = str(opts.pop("ca_file"))
        if opts:
            known = sorted(_OPTIONS | {f for f in NetworkSettings.__dataclass_fields__})
            raise InvalidArgument(f"unknown prism:// options: {sorted(opts)} (known: {', '.join(known)})")
        port = parts.port or 8081
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        return cls(f"{host}:{port}", token=token, network=network, own_settings=own, **kwargs)

    # -- lifecycle ------------------------------------------------------------------

    async def open(self) -> None:
        options = [("grpc.max_receive_message_length", -1), ("grpc.enable_retries", 0)]
        if self.tls:
            root = None
            if self.ca_file is not None:
                try:
                    root = await asyncio.to_thread(Path(self.ca_file).read_bytes)
                except OSError as exc:
                    raise InvalidArgument(f"cannot read ca_file {self.ca_file!r}: {exc.strerror}") from exc
            credentials = grpc.ssl_channel_credentials(root_certificates=root)
            self._channel = aio.secure_channel(self.target, credentials, options=options)
        else:
            self._channel = aio.insecure_channel(self.target, options=options)
        self._calls = {}
        try:
            await self.health()
        except BaseException:
            await self.close()
            raise
        if self.signals is not None:
            await self.signals.prefetch(self._readable, self.signals_prefetch, self.network.connect_timeout)

    async def close(self) -> None:
        if self.signals is not None:
            await self.signals.close()
        channel, self._channel = self._channel, None
        if channel is not None:
            await channel.close()

    async def health(self) -> dict[str, Any]:
        """The gateway's ``grpc.health.v1`` answer for prism.v1.KeyValue (needs no credentials)."""
        if self._channel is None:
            raise BackendUnavailable(f"the connection to {self._describe} is not open")
        check = self._channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=_serialize,
            response_deserializer=health_pb2.HealthCheckResponse.FromString,
        )
        request = health_pb2.HealthCheckRequest(service="prism.v1.KeyValue")

        async def attempt() -> Any:
            return await check(request, timeout=self.network.connect_timeout)

        def transient(exc: BaseException) -> bool:
            return isinstance(exc, aio.AioRpcError) and exc.code() == grpc.StatusCode.UNAVAILABLE

        try:
            answer = await call_with_retry(
                self.network, attempt, is_transient=transient, describe=self._describe, engine="prism"
            )
        except aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise BackendTimeout(f"{self._describe} did not answer its health check", cause=exc) from exc
            raise BackendUnavailable(
                f"{self._describe}: {exc.code().name}: {exc.details()}", cause=exc
            ) from exc
        if answer.status != health_pb2.HealthCheckResponse.SERVING:
            raise BackendUnavailable(f"{self._describe} is not serving prism.v1.KeyValue")
        return {"gateway": self.target}

    # -- transport ------------------------------------------------------------------

    def _stub(self, method: str, response_type: Any) -> Any:
        stub = self._calls.get(method)
        if stub is None:
            if self._channel is None:
                raise BackendUnavailable(f"the connection to {self._describe} is not open")
            stub = self._channel.unary_unary(
                method if method.startswith("/") else _SERVICE + method,
                request_serializer=_serialize,
                response_deserializer=response_type.FromString,
            )
            self._calls[method] = stub
        return stub

    async def _readable(self) -> list[str]:
        """The namespaces the caller may read (``prism.v1.NamespaceAdmin/List``), in the gateway's order."""
        stub = self._calls.get(_LIST) or self._stub(_LIST, namespaces_pb2.ListNamespacesResponse)
        try:
            listed = await stub(
                namespaces_pb2.ListNamespacesRequest(),
                timeout=self.network.connect_timeout,
                metadata=self._metadata,
            )
        except aio.AioRpcError as exc:
            raise BackendUnavailable(f"{self._describe}: {exc.code().name}: {exc.details()}") from exc
        return [n.namespace for n in listed.namespaces if "read" in n.actions]

    async def _fetch_signals(self, ns: str) -> ClientSignals | None:
        """The gateway's signals for ``ns``; None when it answers none (they are advice, not a need)."""
        stub = self._calls.get(_SIGNALS) or self._stub(_SIGNALS, signals_pb2.SignalsResponse)
        try:
            got = await stub(
                signals_pb2.GetSignalsRequest(namespace=ns),
                timeout=self.network.connect_timeout,
                metadata=self._metadata,
            )
        except aio.AioRpcError:
            return None
        return ClientSignals(
            latency_target_ms=got.latency_target_ms,
            latency_max_ms=got.latency_max_ms,
            hedge_after_ms=got.hedge_after_ms,
            refresh_after_s=got.refresh_after_s,
            retry=RetryAdvice(got.retry.max_attempts, got.retry.backoff_ms),
            page_size_bytes=got.page_size_bytes,
            max_value_bytes=got.max_value_bytes,
            compression=list(got.compression),
            compress_above_bytes=got.compress_above_bytes,
        )

    async def _advised(
        self, method: str, request: Any, response_type: Any, advice: ClientSignals, *, hedge: bool
    ) -> Any:
        """A read under the namespace's signals: their deadline and retries, and one hedge (pages
        are not hedged: the gateway bounds them itself by answering early)."""
        stub = self._calls.get(method) or self._stub(method, response_type)
        metadata = self._metadata
        net = advice.network(self.network, self.own_settings)
        deadline = time.monotonic() + net.operation_timeout
        hedge_after: float | None = advice.hedge_after_ms / 1000 if hedge else None

        async def one() -> Any:
            try:
                return await stub(request, timeout=max(deadline - time.monotonic(), 0.001), metadata=metadata)
            except aio.AioRpcError as exc:
                raise self._classify(exc) from None

        async def attempt() -> Any:
            nonlocal hedge_after
            if hedge_after is None:
                return await one()
            after, hedge_after = hedge_after, None  # one hedge per call, whatever the retries
            return await hedged(one, after, self.name)

        try:
            return await call_with_retry(
                net, attempt, is_transient=self._transient, describe=self._describe, engine="prism"
            )
        except (_Refused, aio.AioRpcError) as exc:
            raise self._final(exc) from None
        except BackendUnavailable as exc:
            if isinstance(exc.__cause__, _Refused | aio.AioRpcError):
                raise self._final(exc.__cause__) from None
            raise

    async def _call(
        self,
        method: str,
        request: Any,
        response_type: Any,
        *,
        safe: bool,
        read_of: str | None = None,
        hedge: bool = True,
        compress: bool = False,
    ) -> Any:
        """One call, retried where that is safe, under the operation deadline (sent to the gateway).

        The first attempt runs bare, its deadline enforced by gRPC itself; only a failure
        enters the retry loop, with what is left of the deadline. ``read_of`` names the
        namespace a read is of: its signals then set the deadline and retries, and hedge it.
        """
        if read_of is not None and self.signals is not None:
            advice = await self.signals.get(read_of)
            if advice is not None:
                return await self._advised(method, request, response_type, advice, hedge=hedge)
        stub = self._calls.get(method) or self._stub(method, response_type)
        metadata = self._metadata
        started = time.monotonic()
        coding = grpc.Compression.Gzip if compress else grpc.Compression.NoCompression
        try:
            return await stub(
                request, timeout=self.network.operation_timeout, metadata=metadata, compression=coding
            )
        except aio.AioRpcError as exc:
            first = self._classify(exc)
        retry = safe or self.retry_writes
        if not retry or not isinstance(first, _Refused | aio.AioRpcError) or not self._transient(first):
            raise self._final(first)
        left = self.network.operation_timeout - (time.monotonic() - started)
        if left <= 0 or self.network.max_retries == 0:
            raise self._final(first)
        deadline = time.monotonic() + left
        await asyncio.sleep(self.network.backoff(0))

        async def attempt() -> Any:
            try:
                return await stub(
                    request,
                    timeout=max(deadline - time.monotonic(), 0.001),
                    metadata=metadata,
                    compression=coding,
                )
            except aio.AioRpcError as exc:
                raise self._classify(exc) from None

        settings = replace(self.network, operation_timeout=left, max_retries=self.network.max_retries - 1)
        try:
            return await call_with_retry(
                settings, attempt, is_transient=self._transient, describe=self._describe, engine="prism"
            )
        except (_Refused, aio.AioRpcError) as exc:
            raise self._final(exc) from None
        except BackendUnavailable as exc:
            if isinstance(exc.__cause__, _Refused | aio.AioRpcError):
                raise self._final(exc.__cause__) from None
            raise

    def _classify(self, exc: Any) -> BaseException:
        """A failed attempt: _Refused (the gateway answered a retryable status), a Prism error, or ``exc``."""
        trailers = dict(exc.trailing_metadata() or ())
        error_code = str(trailers.get("prism-error-code", ""))
        code = exc.code()
        if code in _RETRYABLE and error_code:
            return _Refused(code, exc.details() or "", error_code)
        if error_code:
            return self._error(code, exc.details() or "", error_code)
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return BackendTimeout(
                f"{self._describe} did not answer within {self.network.operation_timeout:g} s", cause=exc
            )
        return cast(BaseException, exc)

    @staticmethod
    def _transient(exc: BaseException) -> bool:
        # A status without an error code never reached the gateway's handlers (no connection).
        return isinstance(exc, _Refused) or (isinstance(exc, aio.AioRpcError) and exc.code() in _RETRYABLE)

    def _final(self, exc: BaseException) -> BaseException:
        """What a caller sees of a failed call."""
        if isinstance(exc, _Refused):
            return self._error(exc.code, exc.detail, exc.error_code)
        if isinstance(exc, aio.AioRpcError):
            return BackendUnavailable(f"{self._describe}: {exc.code().name}: {exc.details()}", cause=exc)
        return exc

    def _error(self, code: Any, detail: str, error_code: str, key: str | None = None) -> PrismError:
        """The Prism error a gRPC status from the gateway stands for."""
        if code == grpc.StatusCode.FAILED_PRECONDITION:
            error: PrismError = PreconditionFailed(detail, key=key)
        elif error_code == "VALUE_TOO_LARGE" or error_code == "BODY_TOO_LARGE":
            error = ValueTooLarge(detail)
        elif error_code == "INVALID_KEY":
            error = InvalidKey(detail)
        elif error_code == "NAMESPACE_NOT_FOUND":
            error = InvalidArgument(f"{self._describe} answered: {detail}")
        elif code == grpc.StatusCode.INVALID_ARGUMENT:
            error = InvalidArgument(detail)
        elif code == grpc.StatusCode.UNIMPLEMENTED:
            error = Unsupported(detail)
        elif error_code == "TIMEOUT":
            error = BackendTimeout(f"{self._describe} answered: {detail}")
        elif code in _RETRYABLE:
            error = BackendUnavailable(f"{self._describe} answered {code.name}: {detail}")
        else:
            error = PrismError(f"{self._describe} answered {code.name} {error_code}: {detail}")
        if error_code:
            error.code = error_code
        return error

    # -- reads ----------------------------------------------------------------------

    async def get(self, ns: str, record: str, key: str, *, consistent: bool = False) -> Item | None:
        if consistent:
            raise Unsupported("the prism backend has no strongly consistent reads")
        if key != "":
            (item,) = await self.get_many(ns, [(record, key)])
            return item
        try:
            found = await self._call(
                "Get", pb.GetRequest(namespace=ns, key=record), pb.GetResponse, safe=True, read_of=ns
            )
        except PrismError as exc:
            if exc.code == "KEY_NOT_FOUND":
                return None
            raise
        return _item(found.item, record)

    async def get_many(
        self, ns: str, addresses: Sequence[tuple[str, str]], *, consistent: bool = False
    ) -> list[Item | None]:
        if consistent:
            raise Unsupported("the prism backend has no strongly consistent reads")
        out: list[Item | None] = [None] * len(addresses)
        flat = [(i, record) for i, (record, key) in enumerate(addresses) if key == ""]
        for start in range(0, len(flat), GATEWAY_PAGE_LIMIT):
            chunk = flat[start : start + GATEWAY_PAGE_LIMIT]
            request = pb.GetManyRequest(namespace=ns, keys=[record for _, record in chunk])
            found = await self._call("GetMany", request, pb.GetManyResponse, safe=True, read_of=ns)
            for (i, record), raw in zip(chunk, found.items, strict=True):
                out[i] = _item(raw, record) if raw.found else None
        by_record: dict[str, list[int]] = {}
        for i, (record, key) in enumerate(addresses):
            if key != "":
                by_record.setdefault(record, []).append(i)
        for record, indexes in by_record.items():
            for start in range(0, len(indexes), GATEWAY_PAGE_LIMIT):
                chunk_indexes = indexes[start : start + GATEWAY_PAGE_LIMIT]
                keys = pb.KeyList(keys=[addresses[i][1] for i in chunk_indexes])
                request = pb.GetItemsRequest(namespace=ns, record=record, keys=keys, limit=GATEWAY_PAGE_LIMIT)
                page = await self._call("GetItems", request, pb.ItemPage, safe=True, read_of=ns)
                items = {raw.key: raw for raw in page.items}
                for i in chunk_indexes:
                    hit = items.get(addresses[i][1])
                    if hit is not None:
                        out[i] = _item(hit, hit.key)
        return out

    async def scan(self, ns: str, prefix: str, after: str | None, limit: int) -> list[str]:
        keys: list[str] = []
        token = "" if after is None else encode_token("scan", prefix, after)
        while len(keys) < limit:
            request = pb.ScanRequest(
                namespace=ns,
                prefix=prefix,
                limit=min(limit - len(keys), GATEWAY_PAGE_LIMIT),
                page_token=token,
            )
            page = await self._call("Scan", request, pb.ScanResponse, safe=True, read_of=ns, hedge=False)
            keys += page.keys
            token = page.next_page_token
            if not token:
                break
        return keys

    async def get_range(
        self,
        ns: str,
        record: str,
        start: str | None,
        end: str | None,
        after: str | None,
        limit: int,
        *,
        consistent: bool = False,
    ) -> list[Item]:
        if consistent:
            raise Unsupported("the prism backend has no strongly consistent reads")
        scope = f"{record}\x00{start or ''}\x00{'' if end is None else end}"
        token = "" if after is None else encode_token("items", scope, after)
        items: list[Item] = []
        while len(items) < limit:
            request = pb.GetItemsRequest(
                namespace=ns,
                record=record,
                limit=min(limit - len(items), GATEWAY_PAGE_LIMIT),
                page_token=token,
            )
            if start is not None:
                request.start = start
            if end is not None:
                request.end = end
            page = await self._call("GetItems", request, pb.ItemPage, safe=True, read_of=ns, hedge=False)
            items += [_item(raw, raw.key) for raw in page.items]
            token = page.next_page_token
            if not token:
                break
        return items

    # -- writes ---------------------------------------------------------------------

    async def write(self, ns: str, ops: Sequence[StoredWrite]) -> list[WriteOutcome]:
        outcomes: list[WriteOutcome] = []
        i = 0
        while i < len(ops):
            op = ops[i]
            if op.key == "" and op.value is not None:
                outcomes.append(await self._put_key(ns, op))
            elif op.key == "":
                outcomes.append(await self._delete_key(ns, op))
            elif op.value is None:
                outcomes.append(await self._delete_item(ns, op))
            else:
                # Consecutive puts into one record travel in one call, results in order.
                j = i + 1
                while (
                    j < len(ops)
                    and ops[j].record == op.record
                    and ops[j].key != ""
                    and ops[j].value is not None
                ):
                    j += 1
                outcomes += await self._put_items(ns, ops[i:j])
                i = j
                continue
            i += 1
        return outcomes

    async def _conditional(self, call: Callable[[], Awaitable[R]]) -> R | None:
        """The answer of a conditional write, or None when its condition failed."""
        try:
            return await call()
        except PreconditionFailed:
            return None

    async def _compress(self, ns: str, size: int) -> bool:
        """Whether a write of ``size`` bytes of values should travel gzip-compressed."""
        advice = None if self.signals is None else await self.signals.get(ns)
        if advice is None or advice.coding != "gzip" or size <= advice.compress_above_bytes:
            return False
        COMPRESSED.labels(self.name).inc()
        return True

    async def _put_key(self, ns: str, op: StoredWrite) -> WriteOutcome:
        request = pb.PutRequest(namespace=ns, put=_put_op(op, op.record), idempotency=_token())
        compress = await self._compress(ns, len(op.value or b""))
        answer = await self._conditional(
            lambda: self._call("Put", request, pb.PutResponse, safe=False, compress=compress)
        )
        if answer is None:
            return condition_failed(op.if_absent)
        op.etag = answer.etag
        return WriteOutcome(True, answer.existed)

    async def _delete_key(self, ns: str, op: StoredWrite) -> WriteOutcome:
        delete = pb.DeleteOp(key=op.record)
        if op.if_match is not None:
            delete.if_match = op.if_match
        request = pb.DeleteRequest(namespace=ns, delete=delete, idempotency=_token())
        answer = await self._conditional(lambda: self._call("Delete", request, pb.DeleteResponse, safe=False))
        if answer is None:
            return condition_failed(False)
        return WriteOutcome(True, answer.existed)

    async def _delete_item(self, ns: str, op: StoredWrite) -> WriteOutcome:
        if op.if_match is not None:
            raise Unsupported("the prism backend deletes items of a record only unconditionally")
        request = pb.DeleteItemsRequest(
            namespace=ns, record=op.record, keys=pb.KeyList(keys=[op.key]), idempotency=_token()
        )
        answer = await self._call("DeleteItems", request, pb.DeleteItemsResponse, safe=False)
        return WriteOutcome(True, answer.deleted > 0)

    async def _put_items(self, ns: str, ops: Sequence[StoredWrite]) -> list[WriteOutcome]:
        request = pb.PutItemsRequest(
            namespace=ns,
            record=ops[0].record,
            items=[_put_op(op, op.key) for op in ops],
            idempotency=_token(),
        )
        compress = await self._compress(ns, sum(len(op.value or b"") for op in ops))
        answer = await self._call("PutItems", request, pb.WriteResults, safe=False, compress=compress)
        return [self._outcome(op, result) for op, result in zip(ops, answer.results, strict=True)]

    def _outcome(self, op: StoredWrite, result: Any) -> WriteOutcome:
        if result.ok:
            if result.etag:
                op.etag = result.etag
            return WriteOutcome(True, result.existed)
        if result.error.code == "PRECONDITION_FAILED":
            return condition_failed(op.if_absent)
        failure = PrismError(result.error.detail)
        failure.code = result.error.code
        return WriteOutcome(False, False, failure)

    async def transact(self, ns: str, ops: Sequence[StoredWrite]) -> list[WriteOutcome]:
        request = pb.TransactRequest(namespace=ns, idempotency=_token())
        for op in ops:
            if op.key != "":
                raise Unsupported("the prism backend runs transactions on flat keys only")
            if op.value is None:
                delete = pb.DeleteOp(key=op.record)
                if op.if_match is not None:
                    delete.if_match = op.if_match
                request.ops.add(delete=delete)
            else:
                request.ops.add(put=_put_op(op, op.record))
        compress = await self._compress(ns, sum(len(op.value or b"") for op in ops))
        try:
            answer = await self._call("Transact", request, pb.WriteResults, safe=False, compress=compress)
        except PreconditionFailed as exc:
            # The gateway names the op whose condition failed: "a condition failed for 'KEY'; ...".
            detail = str(exc)
            for i, op in enumerate(ops):
                if detail.startswith(f"a condition failed for {op.record!r};"):
                    return transaction_refused(len(ops), i, op.if_absent)
            raise
        return [self._outcome(op, result) for op, result in zip(ops, answer.results, strict=True)]

    async def delete_range(self, ns: str, record: str, start: str | None, end: str | None) -> int:
        request = pb.DeleteItemsRequest(namespace=ns, record=record, idempotency=_token())
        if start is not None:
            request.start = start
        if end is not None:
            request.end = end
        answer = await self._call("DeleteItems", request, pb.DeleteItemsResponse, safe=False)
        return int(answer.deleted)


def _serialize(message: Any) -> bytes:
    return bytes(message.SerializeToString())
