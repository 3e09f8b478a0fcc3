"""The gateway's configuration: typed objects parsed from YAML, with ``${ENV}`` interpolation.

``load_config(path)`` reads the file, substitutes ``${NAME}`` (or ``${NAME:-default}``)
in string values from the environment, converts the tree into :class:`GatewayConfig`
and checks the rules that span fields. Every failure is one :class:`ConfigError`
naming the file, the path of the field (``$.namespaces[0].store``) and the rule.
Secrets (store passwords, the JWT secret, PII keys) only ever come from the
environment or from key files, never from the YAML text itself.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import msgspec
import yaml

from prism.control.signals import SignalsConfig
from prism.errors import ConfigError

__all__ = [
    "DEFAULT_GRPC_PORT",
    "DEFAULT_STORE_URL",
    "IDEMPOTENCY_NAMESPACE",
    "AccessConfig",
    "AdminConfig",
    "ApiKeyConfig",
    "AuditConfig",
    "AuthConfig",
    "CompatConfig",
    "ConfigError",
    "ControlConfig",
    "GatewayConfig",
    "IdempotencyConfig",
    "JwtConfig",
    "LimitsConfig",
    "MigrationConfig",
    "MtlsIdentityConfig",
    "NamespaceConfig",
    "NeedsConfig",
    "PiiConfig",
    "PiiKeyConfig",
    "PiiKeysConfig",
    "RuntimeNamespacesConfig",
    "ServerConfig",
    "StoreCapacityConfig",
    "StoreConfig",
    "TlsConfig",
    "WatchConfig",
    "check_config",
    "default_config",
    "internal_namespace",
    "load_config",
    "parse_config",
]

#: The port ``prism serve`` serves gRPC on when ``server.grpc_port`` is not set.
DEFAULT_GRPC_PORT = 8081
#: The embedded store ``prism serve`` uses without a config file.
DEFAULT_STORE_URL = "sqlite:///.prism/data.db"

#: Logical namespace names: safe in URLs and never containing the tenant separator ``~``.
#: (``\Z``, not ``$``: ``$`` also matches before a trailing newline.)
NAMESPACE_NAME = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9_.-]{0,99}\Z")
#: Tenant ids, role names and key ids share one conservative charset.
TOKEN_NAME = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}\Z")
_ENV_REF = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_SHA256_HEX = re.compile(r"\A[0-9a-f]{64}\Z")
#: Where Idempotency-Key responses are kept: never served as a data or audit namespace.
IDEMPOTENCY_NAMESPACE = "prism-idempotency"
#: Prefixes of the namespaces Prism keeps for itself: Idempotency-Key responses
#: (``prism-idempotency``), the audit trail (``prism-audit``), embedded queues (``prism_queue_*``).
PRISM_NAMESPACE_PREFIXES = ("prism-", "prism_", "prism.")
#: Streaming keeps its request records, indexes and connections in ``<namespace_prefix>_*``.
STREAMING_NAMESPACE_PREFIX = "streaming"
_JWT_ALGORITHMS = frozenset(
    {
        "HS256",
        "HS384",
        "HS512",
        "RS256",
        "RS384",
        "RS512",
        "PS256",
        "PS384",
        "PS512",
        "ES256",
        "ES384",
        "ES512",
        "EdDSA",
    }
)


class _Base(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    pass


class StoreCapacityConfig(_Base, frozen=True):
    """What a store can carry, as its operator declares it; the planner places namespaces within it.

    An undeclared figure is one the planner cannot promise: a namespace that needs it is not
    placed on the store (docs/control-plane.md).
    """

    read_rps: float | None = None
    write_rps: float | None = None
    total_bytes: int | None = None
    latency_p99_ms: float | None = None
    durability: Literal["memory", "disk", "replicated"] | None = None


class StoreConfig(_Base, frozen=True):
    """A store: its URL, optional backend options (timeouts, pools) and an optional backend class."""

    url: str
    options: dict[str, Any] = {}
    backend: str | None = None
    #: What the store can carry, for the planner of runtime namespaces.
    capacity: StoreCapacityConfig | None = None


class ApiKeyConfig(_Base, frozen=True):
    """An API key, known only by the sha256 of its text."""

    name: str
    sha256: str
    roles: list[str] = []
    tenant: str | None = None


class JwtConfig(_Base, frozen=True):
    """How JSON Web Tokens are verified.

    ``algorithms`` is the allow-list; each algorithm is checked against the key of its
    family only (HS* with the secret, RS/PS/ES/EdDSA with public keys), which rules out
    algorithm confusion. ``clock_skew`` is the leeway for exp, nbf and iat.
    """

    algorithms: list[str]
    secret_env: str | None = None
    public_key_file: str | None = None
    jwks_file: str | None = None
    jwks_url: str | None = None
    issuer: str | None = None
    audience: str | list[str] | None = None
    clock_skew: float = 60.0
    max_age: float | None = None
    subject_claim: str = "sub"
    tenant_claim: str = "tenant_id"
    roles_claim: str = "roles"
    jwks_refresh_interval: float = 300.0
    jwks_timeout: float = 5.0


class MtlsIdentityConfig(_Base, frozen=True):
    """A client certificate identity: a principal for the certificate whose subject CN or SAN matches.

    Give exactly one of ``subject_cn`` (the subject's common name), ``san_dns``,
    ``san_uri`` (e.g. a SPIFFE id) or ``san_email``; ``name`` is the principal's subject.
    """

    name: str
    subject_cn: str | None = None
    san_dns: str | None = None
    san_uri: str | None = None
    san_email: str | None = None
    roles: list[str] = []
    tenant: str | None = None

    @property
    def match(self) -> tuple[str, str]:
        """Which certificate name this entry matches, and its value."""
        for field in MTLS_MATCH_FIELDS:
            value = getattr(self, field)
            if value is not None:
                return field, value
        raise ValueError("an mTLS identity names no certificate field")


#: The certificate names an ``auth.mtls`` entry can match on.
MTLS_MATCH_FIELDS = ("subject_cn", "san_dns", "san_uri", "san_email")


class AuthConfig(_Base, frozen=True):
    """Credentials the gateway accepts. With none configured the gateway is open (loopback only)."""

    api_keys: list[ApiKeyConfig] = []
    jwt: JwtConfig | None = None
    mtls: list[MtlsIdentityConfig] = []
    anonymous_roles: list[str] = msgspec.field(default_factory=lambda: ["reader", "writer", "admin"])
    #: Roles that may create, change and delete runtime namespaces (``/v1/namespaces/{ns}``).
    namespace_admin_roles: list[str] = msgspec.field(default_factory=lambda: ["admin"])
    #: Roles that may also name the store a runtime namespace goes on, instead of the planner.
    store_admin_roles: list[str] = msgspec.field(default_factory=lambda: ["admin"])

    @property
    def enabled(self) -> bool:
        """True when any credential (an API key, JWT or a client certificate identity) is configured."""
        return bool(self.api_keys) or self.jwt is not None or bool(self.mtls)


class AccessConfig(_Base, frozen=True):
    """Roles allowed to read, write, and administer a namespace."""

    read: list[str] = msgspec.field(default_factory=lambda: ["reader", "writer", "admin"])
    write: list[str] = msgspec.field(default_factory=lambda: ["writer", "admin"])
    admin: list[str] = msgspec.field(default_factory=lambda: ["admin"])


class PiiConfig(_Base, frozen=True):
    """Fields of JSON values holding personal data (``a.b`` for nested objects)."""

    fields: list[str] = []
    encrypt: bool = False


class LimitsConfig(_Base, frozen=True):
    """Per-namespace admission: requests per second (token bucket with ``burst``) and concurrency."""

    rate: float | None = None
    burst: int | None = None
    concurrency: int | None = None


class TimeSeriesConfig(_Base, frozen=True):
    """The settings of a ``kind: timeseries`` namespace (see docs/timeseries.md)."""

    slice_seconds: int = 3600
    retention_seconds: int | None = None
    accept_window_seconds: float | None = None
    future_skew_seconds: float = 60.0


class NeedsConfig(_Base, frozen=True):
    """What a namespace's clients declare they need; the planner places the namespace on a store
    that meets every need (docs/control-plane.md). Every field is optional: an absent need is
    not checked."""

    #: ``kv`` (flat keys), ``records`` (records of sorted items) or ``timeseries``.
    access_pattern: Literal["kv", "records", "timeseries"] = "kv"
    read_rps: float | None = None
    write_rps: float | None = None
    item_bytes_p99: int | None = None
    total_bytes: int | None = None
    ttl_seconds: float | None = None
    consistency: Literal["strong", "eventual"] = "eventual"
    latency_p99_ms: float | None = None
    transactions: bool = False
    durability: Literal["memory", "disk", "replicated"] | None = None


class FeedConfig(_Base, frozen=True):
    """The retention of a namespace's change feed (its store opened with ``feed=true``);
    an unset field keeps the store's ``feed_retention`` / ``feed_max_changes``."""

    retention_seconds: float | None = None
    max_changes: int | None = None


class CacheConfig(_Base, frozen=True):
    """A namespace's shared look-aside cache in another store (see docs/caching.md)."""

    store: str
    ttl: float = 180.0
    max_item_bytes: int = 1_048_576
    timeout: float = 0.1
    lease_ttl: float = 5.0
    recovery_interval: float = 1.0


class NearCacheConfig(_Base, frozen=True):
    """A namespace's in-process near cache, evicted by the change feed when the store keeps one."""

    max_items: int = 10_000
    ttl: float = 5.0
    poll_interval: float = 0.1


class NamespaceConfig(_Base, frozen=True):
    """A namespace served over HTTP and the store that holds it."""

    name: str
    #: ``kv`` (keys and records, /v1/kv and /v1/records) or ``timeseries`` (/v1/ts).
    kind: Literal["kv", "timeseries"] = "kv"
    store: str | None = None
    tenant_scoped: bool = False
    max_value_bytes: int | None = None
    default_ttl: float | None = None
    access: AccessConfig = AccessConfig()
    pii: PiiConfig | None = None
    audit: bool = True
    limits: LimitsConfig | None = None
    #: The settings of a ``kind: timeseries`` namespace (defaults when omitted).
    timeseries: TimeSeriesConfig | None = None
    #: The needs its clients declared (rates, sizes, consistency, latency); see docs/control-plane.md.
    needs: NeedsConfig | None = None
    #: The retention of its change feed, when it is not the store's.
    feed: FeedConfig | None = None
    #: A shared cache in front of the store, and an in-process near cache (docs/caching.md).
    cache: CacheConfig | None = None
    near_cache: NearCacheConfig | None = None


class PiiKeyConfig(_Base, frozen=True):
    """One AES-256 key (32 bytes, base64) read from an env var or a key file."""

    id: str
    env: str | None = None
    file: str | None = None


class PiiKeysConfig(_Base, frozen=True):
    """The PII keyring: ``active`` encrypts new values; every listed key decrypts."""

    active: str
    keys: list[PiiKeyConfig]


class AuditConfig(_Base, frozen=True):
    """Where audit lines go and what happens when the sink cannot keep up.

    ``on_failure: reject`` fails closed (requests get 503 while events cannot be
    recorded); ``drop`` keeps serving and counts the lost events in a metric.
    """

    sink: Literal["stdout", "file", "namespace", "none"] = "stdout"
    path: str | None = None
    store: str | None = None
    namespace: str = "prism-audit"
    buffer_size: int = 10_000
    batch_size: int = 500
    flush_interval: float = 0.2
    retry_interval: float = 1.0
    on_failure: Literal["reject", "drop"] = "drop"
    #: With ``on_failure: reject``, how long a write waits for its event to be confirmed written.
    confirm_timeout: float = 5.0
    include_values: bool = False


class IdempotencyConfig(_Base, frozen=True):
    """``Idempotency-Key`` handling: responses are kept ``ttl`` seconds in ``store``."""

    enabled: bool = True
    store: str | None = None
    ttl: float = 86_400.0
    pending_ttl: float = 60.0
    max_key_length: int = 255


class TlsConfig(_Base, frozen=True):
    """HTTPS (and WSS) for ``prism serve``; with ``client_ca_file``, client certificates too.

    Client certificates are verified against ``client_ca_file`` during the handshake
    (a wrong CA or an expired certificate never gets a connection); with
    ``require_client_cert`` a client without one is refused as well. ``auth.mtls`` maps
    a verified certificate to a principal.
    """

    cert_file: str
    key_file: str
    client_ca_file: str | None = None
    require_client_cert: bool = False


class ServerConfig(_Base, frozen=True):
    """Process-wide limits and timeouts."""

    request_timeout: float = 10.0
    retry_after: int = 1
    max_body_bytes: int = 16 * 1024 * 1024
    shutdown_timeout: float = 10.0
    access_log: bool = True
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    jwks_startup_timeout: float = 5.0
    #: The request line and headers together, in bytes; more is answered 431 and the connection closed.
    max_header_bytes: int = 16 * 1024
    #: Seconds a client has to send the request line and headers (from its first byte, or from connecting).
    header_timeout: float = 10.0
    #: Seconds a client has to send the whole request body; a slower one gets 408.
    body_timeout: float = 30.0
    #: Seconds an answered connection stays open waiting for the client's next request.
    keep_alive_timeout: float = 5.0
    #: Open connections (HTTP and WebSocket) per process; more are answered 503 and closed at once.
    max_connections: int = 10_000
    tls: TlsConfig | None = None
    #: The gRPC port served beside HTTP (``prism serve``): 0 turns gRPC off; unset means
    #: DEFAULT_GRPC_PORT, skipped with a warning when that port is taken.
    grpc_port: int | None = None


class WatchConfig(_Base, frozen=True):
    """The change-feed streams of ``GET /v1/kv/{ns}/_watch`` (Server-Sent Events)."""

    #: Seconds between comment lines sent on a stream with nothing to deliver (keeps proxies from closing it).
    heartbeat_interval: float = 15.0
    #: Seconds a stream may go without a change before it ends with ``event: reconnect`` (reason ``idle``).
    idle_timeout: float = 600.0
    #: Seconds a stream lasts at most; it then ends with ``event: reconnect`` (reason ``max_duration``).
    max_duration: float = 3600.0
    #: Streams one principal (per tenant) may hold open in one process; one more is answered 429.
    max_streams_per_principal: int = 16
    #: Seconds between reads of a feed whose backend cannot announce new changes.
    poll_interval: float = 0.05
    #: Most changes read from the feed at once.
    batch_size: int = 100
    #: Most changes read ahead of a slow client before the stream stops reading.
    max_queued: int = 1000
    #: Seconds an SSE client waits before reconnecting (sent as the stream's ``retry:`` field).
    client_retry: float = 1.0


class MigrationConfig(_Base, frozen=True):
    """Timings of live migrations (``prism.migration.MigrationSettings`` documents each)."""

    poll_interval: float = 0.5
    heartbeat_ttl: float = 5.0
    fence_timeout: float = 2.0
    repair_interval: float = 1.0


class RuntimeNamespacesConfig(_Base, frozen=True):
    """Namespaces created at runtime (``PUT /v1/namespaces/{ns}``), kept in the control store.

    ``poll_interval`` is how often each process looks for a change (a change is served
    everywhere within about that long); ``limit_headroom`` multiplies the declared
    ``read_rps`` and ``write_rps`` into the enforced read and write limits; ``delete_settle``
    is how long a delete waits, after every process stopped serving the namespace, before
    it checks or purges the data (at least ``server.request_timeout``, so that no request
    in flight outlives the check).
    """

    enabled: bool = True
    poll_interval: float = 0.5
    limit_headroom: float = 1.2
    delete_settle: float = 1.0
    #: Records deleted per batch when a namespace is purged.
    purge_batch: int = 500
    #: Seconds one purging delete may run: past it, it answers 503 and the namespace stays
    #: ``deleting``; deleting it again goes on where it stopped.
    purge_timeout: float = 30.0
    #: Tries of one change of the catalog that loses races to changes made by other processes.
    change_attempts: int = 50


class ControlConfig(_Base, frozen=True):
    """State every gateway process shares: the rate limits' token buckets, and migration state.

    ``store`` names a Redis or PostgreSQL store of ``stores``; without it each process
    keeps its own buckets. ``timeout`` bounds one check; ``on_failure`` says what a
    request gets when the store does not answer: ``reject`` (503, fail closed) or
    ``local`` (this process's own bucket).
    """

    store: str | None = None
    timeout: float = 0.5
    on_failure: Literal["reject", "local"] = "reject"
    migration: MigrationConfig = MigrationConfig()
    #: Runtime namespaces: kept in ``store`` (else in the first store of ``stores``).
    namespaces: RuntimeNamespacesConfig = RuntimeNamespacesConfig()


class CompatConfig(_Base, frozen=True):
    """The Prism seed's KeyValue interfaces over gRPC: the namespace their flat keys live in.

    A call may name another with the ``x-prism-namespace`` metadata; without either it
    is refused (INVALID_ARGUMENT).
    """

    namespace: str | None = None


class AdminConfig(_Base, frozen=True):
    """The admin console at ``/admin`` (off unless ``enabled``; on in the zero-config demo).

    ``session_ttl`` is how long a sign-in lasts (seconds); ``max_sessions`` bounds the
    sessions one process keeps (when full, a new sign-in is refused); ``sample_interval`` is how often
    the overview's charts take a sample and ``window`` how much history they keep;
    ``page_size`` is the rows of one page of keys, requests or audit events;
    ``audit_scan_limit`` bounds the audit events one search reads back;
    ``value_preview_bytes`` is how much of a value the key browser shows;
    ``max_sessions_per_principal`` bounds one principal's sessions (its oldest goes
    first; a full table refuses new sign-ins with 503 rather than end someone else's);
    ``login_rate`` and ``login_burst`` bound the sign-in attempts of one client address
    (a token bucket: attempts a second, and how many at once; past it, 429).
    """

    enabled: bool = False
    session_ttl: Annotated[float, msgspec.Meta(gt=0)] = 3600.0
    max_sessions: Annotated[int, msgspec.Meta(ge=1)] = 10_000
    sample_interval: Annotated[float, msgspec.Meta(gt=0)] = 5.0
    window: Annotated[float, msgspec.Meta(gt=0)] = 900.0
    page_size: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 50
    audit_scan_limit: Annotated[int, msgspec.Meta(ge=1)] = 100_000
    value_preview_bytes: Annotated[int, msgspec.Meta(ge=1)] = 64 * 1024
    max_sessions_per_principal: Annotated[int, msgspec.Meta(ge=1)] = 10
    login_rate: Annotated[float, msgspec.Meta(gt=0)] = 0.2
    login_burst: Annotated[int, msgspec.Meta(ge=1)] = 10


class GatewayConfig(_Base, frozen=True):
    """Everything ``prism serve`` needs. ``streaming`` and ``handlers`` belong to the streaming layer."""

    stores: dict[str, str | StoreConfig]
    namespaces: list[NamespaceConfig]
    auth: AuthConfig = AuthConfig()
    pii_keys: PiiKeysConfig | None = None
    audit: AuditConfig = AuditConfig()
    idempotency: IdempotencyConfig = IdempotencyConfig()
    server: ServerConfig = ServerConfig()
    limits: LimitsConfig = LimitsConfig()
    control: ControlConfig = ControlConfig()
    compat: CompatConfig = CompatConfig()
    watch: WatchConfig = WatchConfig()
    #: What clients are told to set their deadlines, hedging and retries to (docs/control-plane.md).
    signals: SignalsConfig = SignalsConfig()
    streaming: dict[str, Any] = {}
    handlers: list[str] = []
    admin: AdminConfig = AdminConfig()
    #: Where the config came from (for messages) and the directory relative file paths start from.
    source: str = "<config>"
    base_dir: str = "."

    def store_url(self, name: str) -> str:
        """The URL of store ``name``."""
        entry = self.stores[name]
        return entry if isinstance(entry, str) else entry.url

    def store_entry(self, name: str) -> StoreConfig:
        """Store ``name`` as a StoreConfig (a bare URL becomes one without options)."""
        entry = self.stores[name]
        return StoreConfig(url=entry) if isinstance(entry, str) else entry

    def namespace_store(self, ns: NamespaceConfig) -> str:
        """The store a namespace lives in (the first store when it names none)."""
        return ns.store if ns.store is not None else next(iter(self.stores))

    def resolve_path(self, path: str) -> Path:
        """A file path from the config, relative to the config file's directory."""
        p = Path(path)
        return p if p.is_absolute() else Path(self.base_dir) / p


def default_config() -> GatewayConfig:
    """The config ``prism serve`` runs without ``--config``: the embedded SQLite store and ``default``.

    It is the zero-config demo, so streaming's demo handlers (``delay``,
    ``generate_report``) are on; a config file turns them on only when it asks.
    """
    return GatewayConfig(
        stores={"main": DEFAULT_STORE_URL},
        namespaces=[NamespaceConfig(name="default", store="main")],
        streaming={"demo_handlers": True},
        admin=AdminConfig(enabled=True),
        source="<default config>",
    )


def load_config(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> GatewayConfig:
    """Read, interpolate and validate the YAML config at ``path``."""
    data = _read_yaml(path)
    base_dir = str(Path(path).resolve().parent)
    return parse_config(data, source=str(path), base_dir=base_dir, env=env)


def check_config(
    path: str | os.PathLike[str], env: Mapping[str, str] | None = None
) -> tuple[GatewayConfig | None, list[ConfigError]]:
    """The config at ``path`` as far as it can be read, and every error it has (not only the first).

    Nothing is opened or started. A field whose shape is wrong is reported once and
    replaced by a stand-in (its default, or an empty namespace), so the rules that span
    fields still run and one mistake is one line. The config is None only when its
    file, YAML, ``stores`` or ``namespaces`` cannot be read at all; it is valid when
    the list is empty.
    """
    try:
        data = _read_yaml(path)
    except ConfigError as exc:
        return None, [exc]
    source = str(path)
    if not isinstance(data, dict):
        return None, [
            ConfigError(source, "$", "the config must be a mapping with at least `stores` and `namespaces`")
        ]
    errors: list[ConfigError] = []
    _check_literal_secrets(data, source, errors)
    data = _interpolate(data, "$", source, os.environ if env is None else env, errors)
    shaped, broken = _shape(data, source, errors)
    if shaped is None:
        return None, errors
    # A value left as ${NAME} (its variable unset) would only repeat that error in other words.
    broken |= {error.path for error in errors}

    def report(at: str, message: str) -> None:
        if not any(at == b or at.startswith((b + ".", b + "[")) for b in broken):
            errors.append(ConfigError(source, at, message))

    config = msgspec.convert(
        {**shaped, "source": source, "base_dir": str(Path(path).resolve().parent)}, GatewayConfig
    )
    _validate(config, report)
    return config, errors


def _shape(
    data: dict[str, Any], source: str, errors: list[ConfigError]
) -> tuple[dict[str, Any] | None, set[str]]:
    """``data`` with each malformed part reported and replaced by a stand-in, and the paths replaced."""
    fields = {
        f.name: f for f in msgspec.structs.fields(GatewayConfig) if f.name not in ("source", "base_dir")
    }
    shaped: dict[str, Any] = {}
    broken: set[str] = set()

    def convert(value: Any, type_: Any, at: str) -> bool:
        try:
            msgspec.convert(value, type_)
        except msgspec.ValidationError as exc:
            message, _, where = str(exc).partition(" - at `")
            errors.append(ConfigError(source, at + where.rstrip("`").removeprefix("$"), message))
            broken.add(at)
            return False
        return True

    for key, value in data.items():
        field = fields.get(key)
        at = f"$.{key}"
        if field is None:
            errors.append(ConfigError(source, at, f"unknown field; the config takes {', '.join(fields)}"))
        elif key == "stores" and isinstance(value, dict):
            shaped[key] = {
                name: entry if convert(entry, str | StoreConfig, f"{at}.{name}") else "memory://"
                for name, entry in value.items()
            }
        elif key == "namespaces" and isinstance(value, list):
            shaped[key] = [
                entry if convert(entry, NamespaceConfig, f"{at}[{i}]") else _stand_in_namespace(entry, i)
                for i, entry in enumerate(value)
            ]
        elif convert(value, field.type, at):
            shaped[key] = value
    for name in ("stores", "namespaces"):
        if name not in data:
            errors.append(ConfigError(source, "$", f"the config needs `{name}`"))
        elif name not in shaped:
            return None, broken
    if "stores" not in shaped or "namespaces" not in shaped:
        return None, broken
    return shaped, broken


def _stand_in_namespace(entry: Any, i: int) -> dict[str, Any]:
    """A valid namespace in place of a malformed one, keeping its name when that is usable."""
    name = entry.get("name") if isinstance(entry, dict) else None
    return {"name": name if isinstance(name, str) and NAMESPACE_NAME.match(name) else f"invalid-{i}"}


def _read_yaml(path: str | os.PathLike[str]) -> Any:
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(source, "", f"cannot read the file: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(source, where, f"invalid YAML: {problem}") from None
    return data


def parse_config(
    data: Any, *, source: str = "<config>", base_dir: str = ".", env: Mapping[str, str] | None = None
) -> GatewayConfig:
    """Validate an already-parsed YAML tree (a mapping) into a GatewayConfig."""
    if not isinstance(data, dict):
        raise ConfigError(source, "$", "the config must be a mapping with at least `stores` and `namespaces`")
    _check_literal_secrets(data, source)
    data = _interpolate(data, "$", source, os.environ if env is None else env)
    stores_raw = data.get("stores")
    if isinstance(stores_raw, dict):
        # Converted one by one so an error names the store (msgspec reports dict values as [...]).
        for name, entry in stores_raw.items():
            try:
                msgspec.convert(entry, str | StoreConfig)
            except msgspec.ValidationError as exc:
                message, _, _ = str(exc).partition(" - at `")
                raise ConfigError(source, f"$.stores.{name}", message) from None
    try:
        config = msgspec.convert({**data, "source": source, "base_dir": base_dir}, GatewayConfig)
    except msgspec.ValidationError as exc:
        message, _, where = str(exc).partition(" - at `")
        raise ConfigError(source, where.rstrip("`") or "$", message) from None
    _validate(config)
    return config


def _interpolate(
    node: Any, path: str, source: str, env: Mapping[str, str], errors: list[ConfigError] | None = None
) -> Any:
    if isinstance(node, str):
        return _substitute(node, path, source, env, errors)
    if isinstance(node, dict):
        return {k: _interpolate(v, f"{path}.{k}", source, env, errors) for k, v in node.items()}
    if isinstance(node, list):
        return [_interpolate(v, f"{path}[{i}]", source, env, errors) for i, v in enumerate(node)]
    return node


def _substitute(
    text: str, path: str, source: str, env: Mapping[str, str], errors: list[ConfigError] | None = None
) -> str:
    if "$" not in text:
        return text

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$${":
            return "${"
        name, default = match.group(1), match.group(2)
        value = env.get(name)
        if value is None or (value == "" and default is not None):
            if default is None:
                error = ConfigError(source, path, f"environment variable {name} is not set")
                if errors is None:
                    raise error
                errors.append(error)
                return match.group(0)
            return default
        return value

    return _ENV_REF.sub(replace, text)


def _check_literal_secrets(
    data: dict[str, Any], source: str, errors: list[ConfigError] | None = None
) -> None:
    """Refuse store URLs that spell out a password instead of referencing ``${ENV}``."""
    stores = data.get("stores")
    if not isinstance(stores, dict):
        return
    for name, entry in stores.items():
        url = entry.get("url") if isinstance(entry, dict) else entry
        if not isinstance(url, str) or "://" not in url:
            continue
        try:
            password = urlsplit(url).password
        except ValueError:
            continue
        if password and not re.fullmatch(r"\$\{[A-Za-z_][A-Za-z0-9_]*(:-[^}]*)?\}", password):
            where = f"$.stores.{name}" + (".url" if isinstance(entry, dict) else "")
            error = ConfigError(
                source, where, "the URL holds a literal password; write it as ${ENV_VAR} and set the variable"
            )
            if errors is None:
                raise error
            errors.append(error)


def _positive(value: float | None) -> bool:
    return value is None or (value > 0 and math.isfinite(value))


def internal_namespace(name: str, config: GatewayConfig | None = None) -> str | None:
    """Why namespace ``name`` belongs to Prism itself, or None when it is free for data.

    Prism's own stores (Idempotency-Key responses, the audit trail, embedded queues,
    streaming's request records and connections) live in namespaces of the same
    stores; serving one of them over HTTP would hand out other callers' data. The
    comparison ignores case, as some stores do.
    """
    lowered = name.lower()
    if lowered.startswith(PRISM_NAMESPACE_PREFIXES):
        return (
            "names starting with 'prism-', 'prism_' or 'prism.' are reserved for Prism's own "
            "namespaces (Idempotency-Key responses, the audit trail, queues)"
        )
    prefixes = {STREAMING_NAMESPACE_PREFIX}
    configured = config.streaming.get("namespace_prefix") if config is not None else None
    if isinstance(configured, str) and configured:
        prefixes.add(configured)
    for prefix in sorted(prefixes):
        if lowered.startswith(prefix.lower() + "_"):
            return (
                f"names starting with {prefix + '_'!r} are reserved for streaming's request records, "
                "indexes and connections"
            )
    return None


def _validate(config: GatewayConfig, report: Callable[[str, str], None] | None = None) -> None:
    """Check the rules that span fields: raise the first broken one, or give each to ``report``."""
    src = config.source

    def fail(path: str, message: str) -> None:
        if report is not None:
            report(path, message)
            return
        raise ConfigError(src, path, message)

    if not config.stores:
        fail("$.stores", "declare at least one store")
    for name in config.stores:
        if not TOKEN_NAME.match(name):
            fail(f"$.stores.{name}", "store names use letters, digits and _ . : @ -")
        url = config.store_url(name)
        if "://" not in url:
            fail(
                f"$.stores.{name}", f"a store URL looks like 'sqlite:///path.db' or 'memory://', not {url!r}"
            )
    if not config.namespaces:
        fail("$.namespaces", "declare at least one namespace")
    seen: set[str] = set()
    for i, ns in enumerate(config.namespaces):
        at = f"$.namespaces[{i}]"
        if not NAMESPACE_NAME.match(ns.name):
            fail(
                f"{at}.name", "a namespace name is 1-100 of letters, digits and _ . - (starting alphanumeric)"
            )
        if ns.name in seen:
            fail(f"{at}.name", f"namespace {ns.name!r} is declared twice")
        reserved = internal_namespace(ns.name, config)
        if reserved is not None:
            fail(f"{at}.name", f"{ns.name!r} cannot be served: {reserved}")
        seen.add(ns.name)
        if ns.store is not None and ns.store not in config.stores:
            fail(f"{at}.store", f"unknown store {ns.store!r} (stores: {', '.join(config.stores)})")
        if ns.max_value_bytes is not None and ns.max_value_bytes < 1:
            fail(f"{at}.max_value_bytes", "must be a positive number of bytes")
        if not _positive(ns.default_ttl):
            fail(f"{at}.default_ttl", "must be a positive number of seconds or null")
        for action in ("read", "write", "admin"):
            for j, role in enumerate(getattr(ns.access, action)):
                if not TOKEN_NAME.match(role):
                    fail(f"{at}.access.{action}[{j}]", f"invalid role name {role!r}")
        if ns.pii is not None:
            for j, field in enumerate(ns.pii.fields):
                if not field or any(not part for part in field.split(".")):
                    fail(f"{at}.pii.fields[{j}]", "a field is a name or a dotted path like address.street")
            if ns.pii.encrypt and config.pii_keys is None:
                fail(f"{at}.pii.encrypt", "encryption needs a `pii_keys` section with at least one key")
        if ns.limits is not None:
            _validate_limits(ns.limits, f"{at}.limits", fail)
        if ns.feed is not None:
            _validate_feed(ns, at, fail)
        _validate_kind(ns, at, fail)
        _validate_cache(config, ns, at, fail)
    _validate_limits(config.limits, "$.limits", fail)
    _validate_control(config, fail)
    _validate_runtime_namespaces(config, fail)
    _validate_auth(config, fail)
    _validate_pii_keys(config, fail)
    _validate_audit(config, fail)
    idem = config.idempotency
    if idem.store is not None and idem.store not in config.stores:
        fail("$.idempotency.store", f"unknown store {idem.store!r}")
    if not (_positive(idem.ttl) and _positive(idem.pending_ttl)):
        fail("$.idempotency", "ttl and pending_ttl must be positive seconds")
    if not 1 <= idem.max_key_length <= 1024:
        fail("$.idempotency.max_key_length", "must be from 1 to 1024")
    server = config.server
    for field in ("request_timeout", "shutdown_timeout", "jwks_startup_timeout"):
        if not _positive(getattr(server, field)):
            fail(f"$.server.{field}", "must be a positive number of seconds")
    if server.retry_after < 1:
        fail("$.server.retry_after", "must be at least 1 second")
    if server.max_body_bytes < 1:
        fail("$.server.max_body_bytes", "must be a positive number of bytes")
    _validate_transport(config, fail)
    _validate_watch(config.watch, fail)
    for j, handler in enumerate(config.handlers):
        if not handler:
            fail(f"$.handlers[{j}]", "must be a non-empty string")


def _validate_feed(ns: NamespaceConfig, at: str, fail: Any) -> None:
    """A namespace's change-feed retention: positive numbers, on a KeyValue namespace."""
    feed = ns.feed
    assert feed is not None
    if ns.kind != "kv":
        fail(f"{at}.feed", "only a namespace of kind: kv has a change feed")
    if feed.retention_seconds is not None and not feed.retention_seconds > 0:
        fail(f"{at}.feed.retention_seconds", "must be a positive number of seconds")
    if feed.max_changes is not None and feed.max_changes < 1:
        fail(f"{at}.feed.max_changes", "must be at least 1")


def _validate_cache(config: GatewayConfig, ns: NamespaceConfig, at: str, fail: Any) -> None:
    """A cache names another declared store, with positive timings; only KeyValue namespaces have one."""
    for tier in ("cache", "near_cache"):
        if getattr(ns, tier) is not None and ns.kind != "kv":
            fail(f"{at}.{tier}", "only a namespace of kind: kv is cached")
    cache = ns.cache
    if cache is not None:
        if cache.store not in config.stores:
            fail(f"{at}.cache.store", f"unknown store {cache.store!r} (stores: {', '.join(config.stores)})")
        elif cache.store == config.namespace_store(ns):
            fail(f"{at}.cache.store", "the cache must be another store than the namespace's own")
        for field in ("ttl", "timeout", "lease_ttl", "recovery_interval"):
            value = getattr(cache, field)
            if not value > 0:
                fail(f"{at}.cache.{field}", "must be a positive number of seconds")
        if cache.max_item_bytes < 1:
            fail(f"{at}.cache.max_item_bytes", "must be a positive number of bytes")
    near = ns.near_cache
    if near is not None:
        if near.max_items < 1:
            fail(f"{at}.near_cache.max_items", "must be at least 1")
        if not near.ttl > 0:
            fail(f"{at}.near_cache.ttl", "must be a positive number of seconds")
        if not 0 < near.poll_interval <= 60:
            fail(f"{at}.near_cache.poll_interval", "must be more than 0 and at most 60 seconds")


def _validate_kind(ns: NamespaceConfig, at: str, fail: Any) -> None:
    """A timeseries namespace's settings, and no KeyValue-only setting on it (or the reverse)."""
    if ns.kind == "kv":
        if ns.timeseries is not None:
            fail(f"{at}.timeseries", "only a namespace of kind: timeseries takes timeseries settings")
        return
    if ns.default_ttl is not None:
        fail(f"{at}.default_ttl", "a timeseries namespace expires events by timeseries.retention_seconds")
    if ns.timeseries is None:
        return
    from prism.errors import InvalidArgument
    from prism.timeseries.settings import TimeSeriesSettings

    try:
        TimeSeriesSettings(**msgspec.structs.asdict(ns.timeseries))
    except InvalidArgument as exc:
        fail(f"{at}.timeseries", str(exc))


def _validate_transport(config: GatewayConfig, fail: Any) -> None:
    server = config.server
    for field in ("header_timeout", "body_timeout", "keep_alive_timeout"):
        if not _positive(getattr(server, field)):
            fail(f"$.server.{field}", "must be a positive number of seconds")
    if not 1024 <= server.max_header_bytes <= 1024 * 1024:
        fail("$.server.max_header_bytes", "must be from 1024 to 1048576 bytes")
    if server.max_connections < 1:
        fail("$.server.max_connections", "must be at least 1")
    if server.grpc_port is not None and not 0 <= server.grpc_port <= 65535:
        fail("$.server.grpc_port", "must be from 0 (no gRPC) to 65535")
    compat = config.compat.namespace
    if compat is not None and compat not in {ns.name for ns in config.namespaces}:
        fail("$.compat.namespace", f"unknown namespace {compat!r}")
    tls = server.tls
    # The certificate files themselves are read (and reported) when the server starts.
    if tls is not None and tls.require_client_cert and tls.client_ca_file is None:
        fail("$.server.tls.require_client_cert", "needs `client_ca_file`, the CA of client certificates")
    mtls = config.auth.mtls
    if mtls and (tls is None or tls.client_ca_file is None):
        fail("$.auth.mtls", "client certificate identities need `server.tls` with `client_ca_file`")
    names: set[str] = set()
    matches: set[tuple[str, str]] = set()
    for i, entry in enumerate(mtls):
        at = f"$.auth.mtls[{i}]"
        if not entry.name or not entry.name.isprintable():
            fail(f"{at}.name", "must be a non-empty printable name")
        if entry.name in names:
            fail(f"{at}.name", f"mTLS identity name {entry.name!r} is used twice")
        names.add(entry.name)
        given = [f for f in MTLS_MATCH_FIELDS if getattr(entry, f) is not None]
        if len(given) != 1:
            fail(at, f"give exactly one of {', '.join(MTLS_MATCH_FIELDS)}")
            continue
        field, value = entry.match
        if not value:
            fail(f"{at}.{field}", "must not be empty")
        if (field, value) in matches:
            fail(f"{at}.{field}", f"{value!r} is mapped twice")
        matches.add((field, value))
        if entry.tenant is not None and not TOKEN_NAME.match(entry.tenant):
            fail(f"{at}.tenant", "tenant ids use letters, digits and _ . : @ - (at most 128)")
        for j, role in enumerate(entry.roles):
            if not TOKEN_NAME.match(role):
                fail(f"{at}.roles[{j}]", f"invalid role name {role!r}")


def _validate_watch(watch: WatchConfig, fail: Any) -> None:
    for field in ("heartbeat_interval", "idle_timeout", "max_duration", "poll_interval", "client_retry"):
        value = getattr(watch, field)
        if not (value > 0 and math.isfinite(value)):
            fail(f"$.watch.{field}", "must be a positive number of seconds")
    if watch.poll_interval > 60:
        fail("$.watch.poll_interval", "must be at most 60 seconds")
    for field, most in (
        ("max_streams_per_principal", 1_000_000),
        ("batch_size", 1000),
        ("max_queued", 1_000_000),
    ):
        value = getattr(watch, field)
        if not 1 <= value <= most:
            fail(f"$.watch.{field}", f"must be from 1 to {most}")


def _validate_limits(limits: LimitsConfig, at: str, fail: Any) -> None:
    if limits.rate is not None and not _positive(limits.rate):
        fail(f"{at}.rate", "must be a positive number of requests per second")
    if limits.burst is not None and limits.burst < 1:
        fail(f"{at}.burst", "must be at least 1")
    if limits.burst is not None and limits.rate is None:
        fail(f"{at}.burst", "needs `rate`")
    if limits.concurrency is not None and limits.concurrency < 1:
        fail(f"{at}.concurrency", "must be at least 1")


def _validate_control(config: GatewayConfig, fail: Any) -> None:
    control = config.control
    if not _positive(control.timeout):
        fail("$.control.timeout", "must be a positive number of seconds")
    timings = control.migration
    for field in ("poll_interval", "heartbeat_ttl", "fence_timeout", "repair_interval"):
        if not _positive(getattr(timings, field)):
            fail(f"$.control.migration.{field}", "must be a positive number of seconds")
    if timings.heartbeat_ttl <= timings.poll_interval:
        fail("$.control.migration.heartbeat_ttl", "must be longer than poll_interval")
    name = control.store
    if name is None:
        return
    if name not in config.stores:
        fail("$.control.store", f"unknown store {name!r} (stores: {', '.join(config.stores)})")
    from prism.backends import SCHEMES, resolve
    from prism.errors import PrismError

    entry = config.store_entry(name)
    scheme = entry.url.split("://", 1)[0].lower()
    target = entry.backend or SCHEMES.get(scheme)
    shares = False
    if target is not None:
        try:
            shares = resolve(target, scheme).capabilities.token_buckets
        except PrismError as exc:
            fail("$.control.store", f"store {name!r}: {exc}")
    if not shares:
        fail(
            "$.control.store",
            f"store {name!r} ({scheme}://) cannot keep rate limits shared by several processes; "
            "name a Redis (redis://) or PostgreSQL (postgresql://) store",
        )


def _validate_runtime_namespaces(config: GatewayConfig, fail: Any) -> None:
    """Store capacities, the runtime namespaces' timings and the roles that administer them."""
    for name, entry in config.stores.items():
        capacity = entry.capacity if isinstance(entry, StoreConfig) else None
        if capacity is None:
            continue
        for field in ("read_rps", "write_rps", "total_bytes", "latency_p99_ms"):
            if not _positive(getattr(capacity, field)):
                fail(f"$.stores.{name}.capacity.{field}", "must be a positive number")
    runtime = config.control.namespaces
    for field in ("poll_interval", "limit_headroom"):
        if not _positive(getattr(runtime, field)):
            fail(f"$.control.namespaces.{field}", "must be a positive number")
    if runtime.delete_settle < 0 or not math.isfinite(runtime.delete_settle):
        fail("$.control.namespaces.delete_settle", "must be zero or more seconds")
    if not _positive(runtime.purge_timeout):
        fail("$.control.namespaces.purge_timeout", "must be a positive number of seconds")
    if runtime.purge_batch < 1:
        fail("$.control.namespaces.purge_batch", "must be at least 1")
    if runtime.change_attempts < 1:
        fail("$.control.namespaces.change_attempts", "must be at least 1")
    for field in ("namespace_admin_roles", "store_admin_roles"):
        for j, role in enumerate(getattr(config.auth, field)):
            if not TOKEN_NAME.match(role):
                fail(f"$.auth.{field}[{j}]", f"invalid role name {role!r}")


def _validate_auth(config: GatewayConfig, fail: Any) -> None:
    auth = config.auth
    names: set[str] = set()
    hashes: set[str] = set()
    for i, key in enumerate(auth.api_keys):
        at = f"$.auth.api_keys[{i}]"
        if key.name in names:
            fail(f"{at}.name", f"API key name {key.name!r} is used twice")
        names.add(key.name)
        if not _SHA256_HEX.match(key.sha256):
            fail(
                f"{at}.sha256",
                "must be the 64 lowercase hex digits of the key's sha256 (never the key itself)",
            )
        if key.sha256 in hashes:
            fail(f"{at}.sha256", "the same key is listed twice")
        hashes.add(key.sha256)
        if key.tenant is not None and not TOKEN_NAME.match(key.tenant):
            fail(f"{at}.tenant", "tenant ids use letters, digits and _ . : @ - (at most 128)")
        for j, role in enumerate(key.roles):
            if not TOKEN_NAME.match(role):
                fail(f"{at}.roles[{j}]", f"invalid role name {role!r}")
    for j, role in enumerate(auth.anonymous_roles):
        if not TOKEN_NAME.match(role):
            fail(f"$.auth.anonymous_roles[{j}]", f"invalid role name {role!r}")
    jwt = auth.jwt
    if jwt is None:
        return
    if not jwt.algorithms:
        fail("$.auth.jwt.algorithms", "list at least one algorithm")
    for j, alg in enumerate(jwt.algorithms):
        if alg not in _JWT_ALGORITHMS:
            fail(
                f"$.auth.jwt.algorithms[{j}]", f"{alg!r} is not allowed; use one of {sorted(_JWT_ALGORITHMS)}"
            )
    wants_hmac = any(a.startswith("HS") for a in jwt.algorithms)
    wants_public = any(not a.startswith("HS") for a in jwt.algorithms)
    has_public = bool(jwt.public_key_file or jwt.jwks_file or jwt.jwks_url)
    if wants_hmac and not jwt.secret_env:
        fail("$.auth.jwt.secret_env", "HS* algorithms need `secret_env`, the env var holding the secret")
    if jwt.secret_env and not wants_hmac:
        fail("$.auth.jwt.secret_env", "a secret is only used by HS* algorithms; add one or remove the secret")
    if wants_public and not has_public:
        fail("$.auth.jwt", "RS/PS/ES/EdDSA algorithms need public_key_file, jwks_file or jwks_url")
    if has_public and not wants_public:
        fail("$.auth.jwt.algorithms", "public keys are configured but no RS/PS/ES/EdDSA algorithm is allowed")
    if jwt.jwks_url is not None and not jwt.jwks_url.startswith(("https://", "http://")):
        fail("$.auth.jwt.jwks_url", "must be an http(s) URL")
    for field in ("clock_skew",):
        value = getattr(jwt, field)
        if value < 0 or not math.isfinite(value):
            fail(f"$.auth.jwt.{field}", "must be zero or more seconds")
    for field in ("max_age", "jwks_refresh_interval", "jwks_timeout"):
        if not _positive(getattr(jwt, field)):
            fail(f"$.auth.jwt.{field}", "must be a positive number of seconds")


def _validate_pii_keys(config: GatewayConfig, fail: Any) -> None:
    keys = config.pii_keys
    if keys is None:
        return
    if not keys.keys:
        fail("$.pii_keys.keys", "list at least one key")
    ids: set[str] = set()
    for i, key in enumerate(keys.keys):
        at = f"$.pii_keys.keys[{i}]"
        if not TOKEN_NAME.match(key.id):
            fail(f"{at}.id", "key ids use letters, digits and _ . : @ -")
        if key.id in ids:
            fail(f"{at}.id", f"key id {key.id!r} is used twice")
        ids.add(key.id)
        if (key.env is None) == (key.file is None):
            fail(at, "give exactly one of `env` (an env var holding the base64 key) or `file`")
    if keys.active not in ids:
        fail("$.pii_keys.active", f"{keys.active!r} is not one of the listed keys ({', '.join(sorted(ids))})")


def _validate_audit(config: GatewayConfig, fail: Any) -> None:
    audit = config.audit
    if audit.sink == "file" and not audit.path:
        fail("$.audit.path", "the file sink needs `path`")
    if audit.sink == "namespace":
        if audit.store is not None and audit.store not in config.stores:
            fail("$.audit.store", f"unknown store {audit.store!r}")
        if any(ns.name == audit.namespace for ns in config.namespaces):
            fail("$.audit.namespace", "the audit namespace must not also be served as a data namespace")
        if not NAMESPACE_NAME.match(audit.namespace):
            fail("$.audit.namespace", "a namespace name is letters, digits and _ . -")
        if audit.namespace == IDEMPOTENCY_NAMESPACE:
            fail("$.audit.namespace", f"{IDEMPOTENCY_NAMESPACE!r} is reserved for Idempotency-Key responses")
        elif not audit.namespace.lower().startswith("prism-audit"):
            reserved = internal_namespace(audit.namespace, config)
            if reserved is not None:
                fail("$.audit.namespace", f"{audit.namespace!r} cannot hold the audit trail: {reserved}")
    if audit.buffer_size < 1:
        fail("$.audit.buffer_size", "must be at least 1")
    if audit.batch_size < 1:
        fail("$.audit.batch_size", "must be at least 1")
    for field in ("flush_interval", "retry_interval", "confirm_timeout"):
        if not _positive(getattr(audit, field)):
            fail(f"$.audit.{field}", "must be a positive number of seconds")
