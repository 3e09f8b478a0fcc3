# Generated from proto/ by `python -m prism.grpc.codegen`: do not edit.
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetSignalsRequest(_message.Message):
    __slots__ = ("namespace",)
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    def __init__(self, namespace: _Optional[str] = ...) -> None: ...

class RetrySignal(_message.Message):
    __slots__ = ("max_attempts", "backoff_ms")
    MAX_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    BACKOFF_MS_FIELD_NUMBER: _ClassVar[int]
    max_attempts: int
    backoff_ms: float
    def __init__(self, max_attempts: _Optional[int] = ..., backoff_ms: _Optional[float] = ...) -> None: ...

class SignalsResponse(_message.Message):
    __slots__ = ("latency_target_ms", "latency_max_ms", "page_size_bytes", "max_value_bytes", "compression", "hedge_after_ms", "retry", "refresh_after_s", "compress_above_bytes")
    LATENCY_TARGET_MS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MAX_MS_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_VALUE_BYTES_FIELD_NUMBER: _ClassVar[int]
    COMPRESSION_FIELD_NUMBER: _ClassVar[int]
    HEDGE_AFTER_MS_FIELD_NUMBER: _ClassVar[int]
    RETRY_FIELD_NUMBER: _ClassVar[int]
    REFRESH_AFTER_S_FIELD_NUMBER: _ClassVar[int]
    COMPRESS_ABOVE_BYTES_FIELD_NUMBER: _ClassVar[int]
    latency_target_ms: float
    latency_max_ms: float
    page_size_bytes: int
    max_value_bytes: int
    compression: _containers.RepeatedScalarFieldContainer[str]
    hedge_after_ms: float
    retry: RetrySignal
    refresh_after_s: float
    compress_above_bytes: int
    def __init__(self, latency_target_ms: _Optional[float] = ..., latency_max_ms: _Optional[float] = ..., page_size_bytes: _Optional[int] = ..., max_value_bytes: _Optional[int] = ..., compression: _Optional[_Iterable[str]] = ..., hedge_after_ms: _Optional[float] = ..., retry: _Optional[_Union[RetrySignal, _Mapping]] = ..., refresh_after_s: _Optional[float] = ..., compress_above_bytes: _Optional[int] = ...) -> None: ...
