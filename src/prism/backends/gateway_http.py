"""``prism+http://HOST:PORT``: a running Prism gateway, used as a store through its HTTP API.

``prism.connect("prism+http://localhost:8080")`` gives the whole KeyValue API
against a gateway (``prism serve``): flat keys go through ``/v1/kv``, the items of
records through ``/v1/records``. The gateway applies its own authentication,
policies, tenancy, PII rules, limits and audit to every call, exactly as for any
other HTTP client. ``prism+https://`` talks TLS.

Namespaces are the gateway's: a namespace the gateway does not serve answers
InvalidArgument. Etags, expiry times and conditions are the gateway's too, so
everything the library promises about them holds through it.

Options (keyword arguments or URL query parameters):

* ``token_env`` (``PRISM_TOKEN``): the environment variable holding the API key or
  JWT, sent as ``Authorization: Bearer``. The token itself never goes into the URL
  (it would end up in logs); a ``token`` keyword argument is accepted from code.
* ``connect_timeout`` (2 s), ``operation_timeout`` (10 s): the deadline of one call,
  retries included;
* ``max_retries`` (5), ``retry_base`` (0.02 s), ``retry_cap`` (0.5 s): retries with
  jittered backoff, only where they are safe: reads on any transport failure, 429
  and 503; writes only when the request never reached the gateway (the connection
  was refused) or was turned away before running (429);
* ``max_connections`` (100): the connection pool's size;
* ``ca_file``: a PEM bundle of the CAs to trust for ``prism+https://``;
* ``max_value_bytes`` (4 MiB): the largest value, as the gateway's namespaces allow;
* ``signals`` (``true``): ask the gateway for each namespace's signals on first use and
  every ``refresh_after_s``, and apply them (docs/control-plane.md, "Signals"): reads
  get ``latency_max_ms`` as their deadline, the advised retries, and reads of keys one
  hedge after ``hedge_after_ms``; write bodies above ``compress_above_bytes`` are sent
  gzip-compressed when the gateway offers it. Writes keep ``operation_timeout`` (a
  write cut short has an unknown outcome); settings given here win over the advice.
  ``signals_retry`` (30 s): when to ask again after no answer.
  ``signals_prefetch`` (100): when it opens, the backend lists the namespaces the
  caller may read and asks for the signals of this many of them at most (0: none),
  all within ``connect_timeout``; a failure there never fails the connect (it is
  logged, and the signals are asked for on first use). Signals are refreshed in the
  background every ``refresh_after_s``.

Redirects are not followed and proxy environment variables are ignored, so the
token only ever goes to the gateway named in the URL.

What cannot be honoured is declared: the gateway offers no strongly consistent
reads, so ``consistency="strong"`` raises Unsupported; ``existed`` of a write is
reported for single keys and deletes, but not for the items of a record or the ops
of a transaction (the gateway's batch answers do not carry it). Transactions are
declared; on a namespace whose store has none the gateway's 501 becomes Unsupported.
Keys and record ids holding a newline are reached through the batch routes (the
single-key routes cannot address them); record ids holding one are Unsupported.
"""

from __future__ import annotations

import gzip
import os
import ssl
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import msgspec

from prism.backends._retry import NetworkSettings, call_with_retry, parse_flag, split_options
from prism.backends._signals import (
    ADVISED,
    COMPRESSED,
    DEFAULT_SIGNALS_PREFETCH,
    DEFAULT_SIGNALS_RETRY,
    ClientSignals,
    NamespaceSignals,
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

__all__ = ["DEFAULT_TOKEN_ENV", "GatewayHTTPBackend"]

#: The environment variable read for the token when ``token_env`` is not given.
DEFAULT_TOKEN_ENV = "PRISM_TOKEN"
#: Default deadline of one call through the gateway, retries included (seconds).
DEFAULT_OPERATION_TIMEOUT = 10.0
#: Largest page the gateway hands out for a listing or a range read.
GATEWAY_PAGE_LIMIT = 1000
#: gzip level of compressed values: fast, most of the gain on repetitive data.
COMPRESS_LEVEL = 1
#: Most characters of listed keys put in one request's query string.
MAX_QUERY_CHARS = 6000

_OPTIONS = frozenset(
    {
        "token_env",
        "token",
        "max_connections",
        "ca_file",
        "max_value_bytes",
        "signals",
        "signals_retry",
        "signals_prefetch",
    }
)


class _StatusToRetry(Exception):
    """A 429 or 503 answer, raised so the retry loop can decide whether to resend."""

    def __init__(self, response: httpx.Response) -> None:
        super().__init__(f"the gateway answered {response.status_code}")
        self.response = response


class _ItemJson(msgspec.Struct):
    key: str
    etag: str = ""
    value: bytes = b""
    content_type: str | None = None
    expires_at: str | None = None
    found: bool = True


class _Items(msgspec.Struct):
    items: list[_ItemJson]
    next_page_token: str | None = None


class _Keys(msgspec.Struct):
    keys: list[str]
    next_page_token: str | None = None


class _ResultError(msgspec.Struct):
    code: str
    detail: str


class _Result(msgspec.Struct):
    key: str
    ok: bool
    etag: str | None = None
    error: _ResultError | None = None


class _Results(msgspec.Struct):
    results: list[_Result]


class _Deleted(msgspec.Struct):
    deleted: int


class _Problem(msgspec.Struct):
    status: int = 0
    code: str = ""
    detail: str = ""


def _seg(text: str) -> str:
    """One path segment: every reserved character escaped, and dots too (never a dot segment)."""
    if "\n" in text:
        raise Unsupported(f"the gateway's routes cannot address a name holding a newline: {text[:40]!r}")
    return quote(text, safe="").replace(".", "%2E")


def _epoch(text: str | None) -> float | None:
    if text is None:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _item(raw: _ItemJson, key: str) -> Item:
    return Item(key, raw.value, raw.etag, _epoch(raw.expires_at), raw.content_type)


def _ttl(expires_at: float | None) -> float | None:
    # The library computed an absolute time; the gateway takes seconds from its own clock.
    return None if expires_at is None else max(expires_at - time.time(), 0.001)


class _Listed(msgspec.Struct):
    name: str
    actions: list[str] = []


class _NamespaceList(msgspec.Struct):
    namespaces: list[_Listed]


class GatewayHTTPBackend(Backend):
    """A Prism gateway's ``/v1/kv`` and ``/v1/records`` API as a backend."""

    name = "prism+http"
    # The gateway makes the etag of every write, so items cannot be restored with their own.
    capabilities = Capabilities(consistent_reads=False, restore=False)

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        network: NetworkSettings | None = None,
        max_connections: int = 100,
        ca_file: str | None = None,
        max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
        signals: bool = True,
        signals_retry: float = DEFAULT_SIGNALS_RETRY,
        signals_prefetch: int = DEFAULT_SIGNALS_PREFETCH,
        own_settings: frozenset[str] | None = None,
    ) -> None:
        if max_connections < 1:
            raise InvalidArgument("max_connections must be at least 1")
        if max_value_bytes < 1:
            raise InvalidArgument("max_value_bytes must be a positive number of bytes")
        self.base_url = base_url.rstrip("/")
        self.network = network or NetworkSettings(operation_timeout=DEFAULT_OPERATION_TIMEOUT)
        self.max_connections = max_connections
        self.ca_file = ca_file
        self.capabilities = Capabilities(
            consistent_reads=False, max_value_bytes=max_value_bytes, restore=False
        )
        self._token = token
        self._client: httpx.AsyncClient | None = None
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
        return f"<GatewayHTTPBackend {self.base_url}>"

    @classmethod
    def from_url(cls, url: str, **options: Any) -> GatewayHTTPBackend:
        query = urlsplit(url).query
        if "token=" in query and any(p.split("=", 1)[0] == "token" for p in query.split("&")):
            raise InvalidArgument(
                "a prism+http URL must not hold the token (URLs end up in logs); "
                f"put it in an environment variable and name it with token_env (default {DEFAULT_TOKEN_ENV})"
            )
        base, opts = split_options(url, options)
        scheme, _, rest = base.partition("://")
        parts = urlsplit(f"http://{rest}")
        if parts.username is not None or parts.password is not None:
            raise InvalidArgument("a prism+http URL takes no user or password; use token_env")
        if not parts.hostname:
            raise InvalidArgument(
                f"a gateway URL looks like 'prism+http://localhost:8080', not {scheme}://{rest}"
            )
        http_scheme = "https" if scheme.lower() == "prism+https" else "http"
        own = frozenset(name for name in ADVISED if name in opts)
        if "operation_timeout" not in opts:
            opts["operation_timeout"] = DEFAULT_OPERATION_TIMEOUT
        network = NetworkSettings.from_options(opts)
        token = opts.pop("token", None)
        token_env = str(opts.pop("token_env", DEFAULT_TOKEN_ENV))
        if token is None and token_env:
            token = os.environ.get(token_env) or None
        kwargs: dict[str, Any] = {}
        try:
            for key in ("max_connections", "max_value_bytes"):
                if key in opts:
                    kwargs[key] = int(opts.pop(key))
        except (TypeError, ValueError) as exc:
            raise InvalidArgument(f"bad prism+http option: {exc}") from exc
        if "ca_file" in opts:
            kwargs["ca_file"] = str(opts.pop("ca_file"))
        if "signals" in opts:
            kwargs["signals"] = parse_flag("signals", opts.pop("signals"))
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
        if opts:
            known = sorted(_OPTIONS | {f for f in NetworkSettings.__dataclass_fields__})
            raise InvalidArgument(f"unknown prism+http options: {sorted(opts)} (known: {', '.join(known)})")
        return cls(
            f"{http_scheme}://{parts.netloc}{parts.path}",
            token=token,
            network=network,
            own_settings=own,
            **kwargs,
        )

    # -- lifecycle ------------------------------------------------------------------

    async def open(self) -> None:
        verify: ssl.SSLContext | bool = True
        if self.ca_file is not None:
            try:
                verify = ssl.create_default_context(cafile=self.ca_file)
            except (OSError, ssl.SSLError) as exc:
                raise InvalidArgument(f"cannot read ca_file {self.ca_file!r}: {exc}") from exc
        headers = {"accept": "application/json"}
        if self._token is not None:
            headers["authorization"] = f"Bearer {self._token}"
        net = self.network
        self._client = httpx.AsyncClient(
            base_url=self.base_url,
            headers=headers,
            timeout=httpx.Timeout(net.operation_timeout, connect=net.connect_timeout),
            limits=httpx.Limits(
                max_connections=self.max_connections, max_keepalive_connections=self.max_connections
            ),
            verify=verify,
            trust_env=False,
        )
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
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def health(self) -> dict[str, Any]:
        response = await self._send("GET", "/healthz", safe=True)
        if response.status_code != 200:
            raise BackendUnavailable(
                f"the Prism gateway at {self.base_url} is not healthy ({response.status_code})"
            )
        return {"gateway": self.base_url}

    # -- transport ------------------------------------------------------------------

    async def _send(
        self,
        method: str,
        path: str,
        *,
        safe: bool,
        params: Any = None,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
        read_of: str | None = None,
        hedge: bool = True,
        network: NetworkSettings | None = None,
    ) -> httpx.Response:
        """One request, retried where that is safe; transport failures become Prism errors.

        ``read_of`` names the namespace a read is of: the namespace's signals then set
        its deadline and retries, and hedge it (unless ``hedge`` is false: pages, which
        the gateway bounds itself by answering early).
        """
        client = self._client
        if client is None:
            raise BackendUnavailable(f"the connection to the Prism gateway at {self.base_url} is not open")
        net = network or self.network
        advice = None
        if read_of is not None and self.signals is not None:
            advice = await self.signals.get(read_of)
            if advice is not None:
                net = advice.network(net, self.own_settings)

        async def one() -> httpx.Response:
            response = await client.request(method, path, params=params, content=content, headers=headers)
            if response.status_code in (429, 503):
                raise _StatusToRetry(response)
            return response

        hedge_after = None if advice is None or not hedge else advice.hedge_after_ms / 1000

        async def attempt() -> httpx.Response:
            nonlocal hedge_after
            if hedge_after is None:
                return await one()
            after, hedge_after = hedge_after, None  # one hedge per call, whatever the retries
            return await hedged(one, after, self.name)

        def transient(exc: BaseException) -> bool:
            if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
                return True  # nothing reached the gateway
            if isinstance(exc, _StatusToRetry):
                return safe or exc.response.status_code == 429
            return safe and isinstance(exc, httpx.TransportError)

        describe = f"the Prism gateway at {self.base_url}"
        try:
            return await call_with_retry(
                net, attempt, is_transient=transient, describe=describe, engine="prism+http"
            )
        except _StatusToRetry as exc:
            raise self._error(exc.response) from None
        except BackendUnavailable as exc:
            if isinstance(exc.__cause__, _StatusToRetry):
                raise self._error(exc.__cause__.response) from None
            raise
        except httpx.TimeoutException as exc:
            raise BackendTimeout(
                f"{describe} did not answer within {net.operation_timeout:g} s", cause=exc
            ) from exc
        except httpx.TransportError as exc:
            raise BackendUnavailable(f"{describe}: {type(exc).__name__}: {exc}", cause=exc) from exc

    async def _readable(self) -> list[str]:
        """The namespaces the caller may read (``GET /v1/namespaces``), in the gateway's order."""
        quick = NetworkSettings(
            connect_timeout=self.network.connect_timeout,
            operation_timeout=self.network.connect_timeout,
            max_retries=0,
        )
        response = await self._send("GET", "/v1/namespaces", safe=True, network=quick)
        if response.status_code != 200:
            raise self._error(response)
        listed = msgspec.json.decode(response.content, type=_NamespaceList)
        return [n.name for n in listed.namespaces if "read" in n.actions]

    async def _fetch_signals(self, ns: str) -> ClientSignals | None:
        """The gateway's signals for ``ns``; None when it answers none (they are advice, not a need)."""
        quick = NetworkSettings(
            connect_timeout=self.network.connect_timeout,
            operation_timeout=self.network.connect_timeout,
            max_retries=0,
        )
        try:
            response = await self._send("GET", f"/v1/namespaces/{_seg(ns)}/signals", safe=True, network=quick)
        except PrismError:
            return None
        if response.status_code != 200:
            return None
        try:
            return msgspec.json.decode(response.content, type=ClientSignals)
        except msgspec.DecodeError:
            return None

    def _error(self, response: httpx.Response, key: str | None = None) -> PrismError:
        """The Prism error that a problem+json answer stands for."""
        try:
            problem = msgspec.json.decode(response.content, type=_Problem)
        except msgspec.DecodeError:
            problem = _Problem(response.status_code, "", response.text[:200])
        status, code, detail = response.status_code, problem.code, problem.detail or response.reason_phrase
        if status == 412:
            return PreconditionFailed(detail, key=key)
        if status == 413 or code == "VALUE_TOO_LARGE":
            return ValueTooLarge(detail)
        if code == "INVALID_KEY":
            return InvalidKey(detail)
        if code == "NAMESPACE_NOT_FOUND":
            return InvalidArgument(f"the Prism gateway at {self.base_url} answered: {detail}")
        if status in (400, 422):
            return InvalidArgument(detail)
        if status == 501:
            return Unsupported(detail)
        if code == "TIMEOUT":
            return BackendTimeout(f"the Prism gateway at {self.base_url} answered: {detail}")
        if status in (502, 503, 504, 429):
            return BackendUnavailable(f"the Prism gateway at {self.base_url} answered {status}: {detail}")
        error = PrismError(f"the Prism gateway at {self.base_url} answered {status} {code}: {detail}")
        if code:
            error.code = code
        return error

    def _check(self, response: httpx.Response, *ok: int, key: str | None = None) -> httpx.Response:
        if response.status_code not in ok:
            raise self._error(response, key)
        return response

    # -- reads ----------------------------------------------------------------------

    async def get(self, ns: str, record: str, key: str, *, consistent: bool = False) -> Item | None:
        (item,) = await self.get_many(ns, [(record, key)], consistent=consistent)
        return item

    async def get_many(
        self, ns: str, addresses: Sequence[tuple[str, str]], *, consistent: bool = False
    ) -> list[Item | None]:
        if consistent:
            raise Unsupported("the prism+http backend has no strongly consistent reads")
        out: list[Item | None] = [None] * len(addresses)
        flat = [(i, record) for i, (record, key) in enumerate(addresses) if key == ""]
        for start in range(0, len(flat), GATEWAY_PAGE_LIMIT):
            chunk = flat[start : start + GATEWAY_PAGE_LIMIT]
            body = msgspec.json.encode({"keys": [record for _, record in chunk]})
            response = self._check(
                await self._send(
                    "POST", f"/v1/kv/{_seg(ns)}/_bulk/get", safe=True, content=body, headers=_JSON, read_of=ns
                ),
                200,
            )
            found = msgspec.json.decode(response.content, type=_Items).items
            for (i, record), raw in zip(chunk, found, strict=True):
                out[i] = _item(raw, record) if raw.found else None
        by_record: dict[str, list[int]] = {}
        for i, (record, key) in enumerate(addresses):
            if key != "":
                by_record.setdefault(record, []).append(i)
        for record, indexes in by_record.items():
            for listed in _query_chunks([addresses[i][1] for i in indexes]):
                response = self._check(
                    await self._send(
                        "GET",
                        f"/v1/records/{_seg(ns)}/{_seg(record)}",
                        safe=True,
                        params={"keys": listed},
                        read_of=ns,
                    ),
                    200,
                )
                items = {raw.key: raw for raw in msgspec.json.decode(response.content, type=_Items).items}
                for i in indexes:
                    hit = items.get(addresses[i][1])
                    if hit is not None:
                        out[i] = _item(hit, hit.key)
        return out

    async def scan(self, ns: str, prefix: str, after: str | None, limit: int) -> list[str]:
        keys: list[str] = []
        token = None if after is None else encode_token("scan", prefix, after)
        while len(keys) < limit:
            params = {"prefix": prefix, "limit": min(limit - len(keys), GATEWAY_PAGE_LIMIT)}
            if token is not None:
                params["page_token"] = token
            response = self._check(
                await self._send(
                    "GET", f"/v1/kv/{_seg(ns)}", safe=True, params=params, read_of=ns, hedge=False
                ),
                200,
            )
            page = msgspec.json.decode(response.content, type=_Keys)
            keys += page.keys
            token = page.next_page_token
            if token is None:
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
            raise Unsupported("the prism+http backend has no strongly consistent reads")
        scope = f"{record}\x00{start or ''}\x00{'' if end is None else end}"
        token = None if after is None else encode_token("items", scope, after)
        items: list[Item] = []
        while len(items) < limit:
            params: dict[str, Any] = {"limit": min(limit - len(items), GATEWAY_PAGE_LIMIT)}
            if start is not None:
                params["start"] = start
            if end is not None:
                params["end"] = end
            if token is not None:
                params["page_token"] = token
            response = self._check(
                await self._send(
                    "GET",
                    f"/v1/records/{_seg(ns)}/{_seg(record)}",
                    safe=True,
                    params=params,
                    read_of=ns,
                    hedge=False,
                ),
                200,
            )
            page = msgspec.json.decode(response.content, type=_Items)
            items += [_item(raw, raw.key) for raw in page.items]
            token = page.next_page_token
            if token is None:
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
            elif op.value is None and op.if_match is not None:
                outcomes.append(await self._delete_key_if_match(ns, op))
            elif op.value is None:
                outcomes.append(await self._delete_item(ns, op))
            else:
                # Consecutive puts into one record travel in one request, results in order.
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

    async def _put_key(self, ns: str, op: StoredWrite) -> WriteOutcome:
        assert op.value is not None
        if "\n" in op.record:
            # The gateway's single-key route cannot address a key holding a newline; the batch route can.
            return (await self._put_batch(ns, op))[0]
        headers: dict[str, str] = {}
        if op.content_type is not None:
            headers["content-type"] = op.content_type
        if op.if_match is not None:
            headers["if-match"] = f'"{op.if_match}"'
        if op.if_absent:
            headers["if-none-match"] = "*"
        ttl = _ttl(op.expires_at)
        params = {"ttl": repr(ttl)} if ttl is not None else None
        content = await self._packed(ns, op.value, headers)
        response = await self._send(
            "PUT",
            f"/v1/kv/{_seg(ns)}/{_seg(op.record)}",
            safe=False,
            params=params,
            content=content,
            headers=headers,
        )
        if response.status_code == 412:
            return condition_failed(op.if_absent)
        self._check(response, 200, 201, key=op.record)
        op.etag = response.headers["etag"].strip('"')
        return WriteOutcome(True, response.status_code == 200)

    async def _packed(self, ns: str, body: bytes, headers: dict[str, str]) -> bytes:
        """``body`` gzip-compressed (``headers`` saying so) when the namespace's signals offer it
        and it is large enough; data that does not compress (compressed, random) goes as it is."""
        advice = None if self.signals is None else await self.signals.get(ns)
        if advice is None or advice.coding != "gzip" or len(body) <= advice.compress_above_bytes:
            return body
        packed = gzip.compress(body, compresslevel=COMPRESS_LEVEL)
        if len(packed) >= len(body):
            return body
        headers["content-encoding"] = "gzip"
        COMPRESSED.labels(self.name).inc()
        return packed

    async def _delete_key_if_match(self, ns: str, op: StoredWrite) -> WriteOutcome:
        if op.key != "":
            raise Unsupported("the prism+http backend deletes items of a record only unconditionally")
        if "\n" in op.record:
            return (await self._put_batch(ns, op))[0]
        response = await self._send(
            "DELETE",
            f"/v1/kv/{_seg(ns)}/{_seg(op.record)}",
            safe=False,
            headers={"if-match": f'"{op.if_match}"'},
        )
        if response.status_code == 412:
            return condition_failed(False)
        self._check(response, 204, key=op.record)
        return WriteOutcome(True, True)

    async def _delete_item(self, ns: str, op: StoredWrite) -> WriteOutcome:
        if "\n" in op.record and op.key == "":
            return await self._delete_by_etag(ns, op)
        # The records route deletes exactly the listed item keys ("" is the flat entry) and counts them.
        response = self._check(
            await self._send(
                "DELETE", f"/v1/records/{_seg(ns)}/{_seg(op.record)}", safe=False, params={"keys": [op.key]}
            ),
            200,
        )
        return WriteOutcome(True, msgspec.json.decode(response.content, type=_Deleted).deleted > 0)

    async def _delete_by_etag(self, ns: str, op: StoredWrite) -> WriteOutcome:
        """An unconditional delete through the batch route that still knows whether a live item existed.

        Read the etag, delete only that version; a write in between makes the delete
        fail its condition, and it is tried again on the new version.
        """
        while True:
            (current,) = await self.get_many(ns, [(op.record, "")])
            if current is None:
                return WriteOutcome(True, False)
            attempt = StoredWrite(op.record, "", None, if_match=current.etag)
            (outcome,) = await self._put_batch(ns, attempt)
            if not outcome.condition_failed:
                return outcome

    async def _put_batch(self, ns: str, op: StoredWrite) -> list[WriteOutcome]:
        """A flat put or conditional delete through ``_bulk/put|delete`` (``existed`` not reported)."""
        if op.value is None:
            path, entry = "_bulk/delete", {"key": op.record, "if_match": op.if_match}
        else:
            path, entry = "_bulk/put", _wire_put(op, op.record)
        headers = dict(_JSON)
        body = await self._packed(ns, msgspec.json.encode({"items": [entry]}), headers)
        response = self._check(
            await self._send("POST", f"/v1/kv/{_seg(ns)}/{path}", safe=False, content=body, headers=headers),
            200,
        )
        (result,) = msgspec.json.decode(response.content, type=_Results).results
        outcome = self._outcome(op, result)
        if outcome.condition_failed:
            return [outcome]
        return [WriteOutcome(outcome.ok, outcome.ok and op.value is None, outcome.error)]

    async def _put_items(self, ns: str, ops: Sequence[StoredWrite]) -> list[WriteOutcome]:
        items = [_wire_put(op, op.key) for op in ops]
        headers = dict(_JSON)
        body = await self._packed(ns, msgspec.json.encode({"items": items}), headers)
        response = self._check(
            await self._send(
                "PUT",
                f"/v1/records/{_seg(ns)}/{_seg(ops[0].record)}",
                safe=False,
                content=body,
                headers=headers,
            ),
            200,
        )
        results = msgspec.json.decode(response.content, type=_Results).results
        return [self._outcome(op, result) for op, result in zip(ops, results, strict=True)]

    def _outcome(self, op: StoredWrite, result: _Result) -> WriteOutcome:
        if result.ok:
            if result.etag is not None:
                op.etag = result.etag
            return WriteOutcome(True, False)
        error = result.error or _ResultError("PRECONDITION_FAILED", "the condition failed")
        if error.code == "PRECONDITION_FAILED":
            return condition_failed(op.if_absent)
        failure = PrismError(error.detail)
        failure.code = error.code
        return WriteOutcome(False, False, failure)

    async def transact(self, ns: str, ops: Sequence[StoredWrite]) -> list[WriteOutcome]:
        body: list[dict[str, Any]] = []
        for op in ops:
            if op.key != "":
                raise Unsupported("the prism+http backend runs transactions on flat keys only")
            if op.value is None:
                body.append({"op": "delete", "key": op.record, "if_match": op.if_match})
            else:
                body.append({"op": "put", **_wire_put(op, op.record)})
        headers = dict(_JSON)
        packed = await self._packed(ns, msgspec.json.encode({"ops": body}), headers)
        response = await self._send(
            "POST", f"/v1/kv/{_seg(ns)}/_transact", safe=False, content=packed, headers=headers
        )
        if response.status_code == 412:
            # The gateway names the op whose condition failed: "a condition failed for 'KEY'; ...".
            try:
                detail = msgspec.json.decode(response.content, type=_Problem).detail
            except msgspec.DecodeError:
                detail = ""
            for i, op in enumerate(ops):
                if detail.startswith(f"a condition failed for {op.record!r};"):
                    return transaction_refused(len(ops), i, op.if_absent)
            raise self._error(response)
        self._check(response, 200)
        results = msgspec.json.decode(response.content, type=_Results).results
        return [self._outcome(op, result) for op, result in zip(ops, results, strict=True)]

    async def delete_range(self, ns: str, record: str, start: str | None, end: str | None) -> int:
        params = {k: v for k, v in (("start", start), ("end", end)) if v is not None}
        response = self._check(
            await self._send("DELETE", f"/v1/records/{_seg(ns)}/{_seg(record)}", safe=False, params=params),
            200,
        )
        return msgspec.json.decode(response.content, type=_Deleted).deleted


_JSON = {"content-type": "application/json"}


def _wire_put(op: StoredWrite, key: str) -> dict[str, Any]:
    """A put as the gateway's JSON routes take it (the value base64 by msgspec)."""
    return {
        "key": key,
        "value": op.value,
        "ttl": _ttl(op.expires_at),
        "if_match": op.if_match,
        "if_absent": op.if_absent,
        "content_type": op.content_type,
    }


def _query_chunks(keys: list[str]) -> list[list[str]]:
    """Listed keys split so no request's query string grows past MAX_QUERY_CHARS."""
    chunks: list[list[str]] = [[]]
    size = 0
    for key in keys:
        cost = len(quote(key, safe="")) + 6
        if chunks[-1] and size + cost > MAX_QUERY_CHARS:
            chunks.append([])
            size = 0
        chunks[-1].append(key)
        size += cost
    return chunks
