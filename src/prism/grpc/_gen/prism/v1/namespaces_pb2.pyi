# Generated from proto/ by `python -m prism.grpc.codegen`: do not edit.
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class NamespaceNeeds(_message.Message):
    __slots__ = ("access_pattern", "read_rps", "write_rps", "item_bytes_p99", "total_bytes", "ttl_seconds", "consistency", "latency_p99_ms", "transactions", "durability")
    ACCESS_PATTERN_FIELD_NUMBER: _ClassVar[int]
    READ_RPS_FIELD_NUMBER: _ClassVar[int]
    WRITE_RPS_FIELD_NUMBER: _ClassVar[int]
    ITEM_BYTES_P99_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_FIELD_NUMBER: _ClassVar[int]
    LATENCY_P99_MS_FIELD_NUMBER: _ClassVar[int]
    TRANSACTIONS_FIELD_NUMBER: _ClassVar[int]
    DURABILITY_FIELD_NUMBER: _ClassVar[int]
    access_pattern: str
    read_rps: float
    write_rps: float
    item_bytes_p99: int
    total_bytes: int
    ttl_seconds: float
    consistency: str
    latency_p99_ms: float
    transactions: bool
    durability: str
    def __init__(self, access_pattern: _Optional[str] = ..., read_rps: _Optional[float] = ..., write_rps: _Optional[float] = ..., item_bytes_p99: _Optional[int] = ..., total_bytes: _Optional[int] = ..., ttl_seconds: _Optional[float] = ..., consistency: _Optional[str] = ..., latency_p99_ms: _Optional[float] = ..., transactions: _Optional[bool] = ..., durability: _Optional[str] = ...) -> None: ...

class NamespaceAccess(_message.Message):
    __slots__ = ("read", "write", "admin")
    READ_FIELD_NUMBER: _ClassVar[int]
    WRITE_FIELD_NUMBER: _ClassVar[int]
    ADMIN_FIELD_NUMBER: _ClassVar[int]
    read: _containers.RepeatedScalarFieldContainer[str]
    write: _containers.RepeatedScalarFieldContainer[str]
    admin: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, read: _Optional[_Iterable[str]] = ..., write: _Optional[_Iterable[str]] = ..., admin: _Optional[_Iterable[str]] = ...) -> None: ...

class NamespacePii(_message.Message):
    __slots__ = ("fields", "encrypt")
    FIELDS_FIELD_NUMBER: _ClassVar[int]
    ENCRYPT_FIELD_NUMBER: _ClassVar[int]
    fields: _containers.RepeatedScalarFieldContainer[str]
    encrypt: bool
    def __init__(self, fields: _Optional[_Iterable[str]] = ..., encrypt: _Optional[bool] = ...) -> None: ...

class NamespaceTimeSeries(_message.Message):
    __slots__ = ("slice_seconds", "retention_seconds", "accept_window_seconds", "future_skew_seconds")
    SLICE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    RETENTION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    ACCEPT_WINDOW_SECONDS_FIELD_NUMBER: _ClassVar[int]
    FUTURE_SKEW_SECONDS_FIELD_NUMBER: _ClassVar[int]
    slice_seconds: int
    retention_seconds: int
    accept_window_seconds: float
    future_skew_seconds: float
    def __init__(self, slice_seconds: _Optional[int] = ..., retention_seconds: _Optional[int] = ..., accept_window_seconds: _Optional[float] = ..., future_skew_seconds: _Optional[float] = ...) -> None: ...

class NamespaceSpec(_message.Message):
    __slots__ = ("needs", "access", "tenant_scoped", "pii", "max_value_bytes", "default_ttl", "audit", "store", "backend", "timeseries")
    NEEDS_FIELD_NUMBER: _ClassVar[int]
    ACCESS_FIELD_NUMBER: _ClassVar[int]
    TENANT_SCOPED_FIELD_NUMBER: _ClassVar[int]
    PII_FIELD_NUMBER: _ClassVar[int]
    MAX_VALUE_BYTES_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_TTL_FIELD_NUMBER: _ClassVar[int]
    AUDIT_FIELD_NUMBER: _ClassVar[int]
    STORE_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    TIMESERIES_FIELD_NUMBER: _ClassVar[int]
    needs: NamespaceNeeds
    access: NamespaceAccess
    tenant_scoped: bool
    pii: NamespacePii
    max_value_bytes: int
    default_ttl: float
    audit: bool
    store: str
    backend: str
    timeseries: NamespaceTimeSeries
    def __init__(self, needs: _Optional[_Union[NamespaceNeeds, _Mapping]] = ..., access: _Optional[_Union[NamespaceAccess, _Mapping]] = ..., tenant_scoped: _Optional[bool] = ..., pii: _Optional[_Union[NamespacePii, _Mapping]] = ..., max_value_bytes: _Optional[int] = ..., default_ttl: _Optional[float] = ..., audit: _Optional[bool] = ..., store: _Optional[str] = ..., backend: _Optional[str] = ..., timeseries: _Optional[_Union[NamespaceTimeSeries, _Mapping]] = ...) -> None: ...

class PutNamespaceRequest(_message.Message):
    __slots__ = ("namespace", "spec")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    spec: NamespaceSpec
    def __init__(self, namespace: _Optional[str] = ..., spec: _Optional[_Union[NamespaceSpec, _Mapping]] = ...) -> None: ...

class NeedFail(_message.Message):
    __slots__ = ("need", "wanted", "has")
    NEED_FIELD_NUMBER: _ClassVar[int]
    WANTED_FIELD_NUMBER: _ClassVar[int]
    HAS_FIELD_NUMBER: _ClassVar[int]
    need: str
    wanted: str
    has: str
    def __init__(self, need: _Optional[str] = ..., wanted: _Optional[str] = ..., has: _Optional[str] = ...) -> None: ...

class StoreFails(_message.Message):
    __slots__ = ("store", "fails")
    STORE_FIELD_NUMBER: _ClassVar[int]
    FAILS_FIELD_NUMBER: _ClassVar[int]
    store: str
    fails: _containers.RepeatedCompositeFieldContainer[NeedFail]
    def __init__(self, store: _Optional[str] = ..., fails: _Optional[_Iterable[_Union[NeedFail, _Mapping]]] = ...) -> None: ...

class NamespacePlacement(_message.Message):
    __slots__ = ("namespace", "store", "created", "dry_run", "rate", "burst", "refused", "read_rate", "read_burst", "write_rate", "write_burst")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    STORE_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    RATE_FIELD_NUMBER: _ClassVar[int]
    BURST_FIELD_NUMBER: _ClassVar[int]
    REFUSED_FIELD_NUMBER: _ClassVar[int]
    READ_RATE_FIELD_NUMBER: _ClassVar[int]
    READ_BURST_FIELD_NUMBER: _ClassVar[int]
    WRITE_RATE_FIELD_NUMBER: _ClassVar[int]
    WRITE_BURST_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    store: str
    created: bool
    dry_run: bool
    rate: float
    burst: int
    refused: _containers.RepeatedCompositeFieldContainer[StoreFails]
    read_rate: float
    read_burst: int
    write_rate: float
    write_burst: int
    def __init__(self, namespace: _Optional[str] = ..., store: _Optional[str] = ..., created: _Optional[bool] = ..., dry_run: _Optional[bool] = ..., rate: _Optional[float] = ..., burst: _Optional[int] = ..., refused: _Optional[_Iterable[_Union[StoreFails, _Mapping]]] = ..., read_rate: _Optional[float] = ..., read_burst: _Optional[int] = ..., write_rate: _Optional[float] = ..., write_burst: _Optional[int] = ...) -> None: ...

class GetNamespaceRequest(_message.Message):
    __slots__ = ("namespace",)
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    def __init__(self, namespace: _Optional[str] = ...) -> None: ...

class NamespaceInfo(_message.Message):
    __slots__ = ("namespace", "tenant_scoped", "max_value_bytes", "default_ttl", "rate", "burst", "actions", "health", "store", "backend", "read_rate", "read_burst", "write_rate", "write_burst")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    TENANT_SCOPED_FIELD_NUMBER: _ClassVar[int]
    MAX_VALUE_BYTES_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_TTL_FIELD_NUMBER: _ClassVar[int]
    RATE_FIELD_NUMBER: _ClassVar[int]
    BURST_FIELD_NUMBER: _ClassVar[int]
    ACTIONS_FIELD_NUMBER: _ClassVar[int]
    HEALTH_FIELD_NUMBER: _ClassVar[int]
    STORE_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    READ_RATE_FIELD_NUMBER: _ClassVar[int]
    READ_BURST_FIELD_NUMBER: _ClassVar[int]
    WRITE_RATE_FIELD_NUMBER: _ClassVar[int]
    WRITE_BURST_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    tenant_scoped: bool
    max_value_bytes: int
    default_ttl: float
    rate: float
    burst: int
    actions: _containers.RepeatedScalarFieldContainer[str]
    health: str
    store: str
    backend: str
    read_rate: float
    read_burst: int
    write_rate: float
    write_burst: int
    def __init__(self, namespace: _Optional[str] = ..., tenant_scoped: _Optional[bool] = ..., max_value_bytes: _Optional[int] = ..., default_ttl: _Optional[float] = ..., rate: _Optional[float] = ..., burst: _Optional[int] = ..., actions: _Optional[_Iterable[str]] = ..., health: _Optional[str] = ..., store: _Optional[str] = ..., backend: _Optional[str] = ..., read_rate: _Optional[float] = ..., read_burst: _Optional[int] = ..., write_rate: _Optional[float] = ..., write_burst: _Optional[int] = ...) -> None: ...

class ListNamespacesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class NamespaceSummary(_message.Message):
    __slots__ = ("namespace", "tenant_scoped", "actions")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    TENANT_SCOPED_FIELD_NUMBER: _ClassVar[int]
    ACTIONS_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    tenant_scoped: bool
    actions: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, namespace: _Optional[str] = ..., tenant_scoped: _Optional[bool] = ..., actions: _Optional[_Iterable[str]] = ...) -> None: ...

class ListNamespacesResponse(_message.Message):
    __slots__ = ("namespaces",)
    NAMESPACES_FIELD_NUMBER: _ClassVar[int]
    namespaces: _containers.RepeatedCompositeFieldContainer[NamespaceSummary]
    def __init__(self, namespaces: _Optional[_Iterable[_Union[NamespaceSummary, _Mapping]]] = ...) -> None: ...

class DeleteNamespaceRequest(_message.Message):
    __slots__ = ("namespace", "purge")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    PURGE_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    purge: bool
    def __init__(self, namespace: _Optional[str] = ..., purge: _Optional[bool] = ...) -> None: ...

class DeleteNamespaceResponse(_message.Message):
    __slots__ = ("namespace", "purged_records")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    PURGED_RECORDS_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    purged_records: int
    def __init__(self, namespace: _Optional[str] = ..., purged_records: _Optional[int] = ...) -> None: ...
