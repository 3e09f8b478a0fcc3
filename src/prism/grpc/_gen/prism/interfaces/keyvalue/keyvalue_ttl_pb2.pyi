# Generated from proto/ by `python -m prism.grpc.codegen`: do not edit.
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class ExpireRequest(_message.Message):
    __slots__ = ("key", "ttl_seconds")
    KEY_FIELD_NUMBER: _ClassVar[int]
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    key: str
    ttl_seconds: int
    def __init__(self, key: _Optional[str] = ..., ttl_seconds: _Optional[int] = ...) -> None: ...

class ExpireResponse(_message.Message):
    __slots__ = ("success", "error", "key_existed")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    KEY_EXISTED_FIELD_NUMBER: _ClassVar[int]
    success: bool
    error: str
    key_existed: bool
    def __init__(self, success: _Optional[bool] = ..., error: _Optional[str] = ..., key_existed: _Optional[bool] = ...) -> None: ...

class GetTTLRequest(_message.Message):
    __slots__ = ("key",)
    KEY_FIELD_NUMBER: _ClassVar[int]
    key: str
    def __init__(self, key: _Optional[str] = ...) -> None: ...

class GetTTLResponse(_message.Message):
    __slots__ = ("ttl_seconds", "error")
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ttl_seconds: int
    error: str
    def __init__(self, ttl_seconds: _Optional[int] = ..., error: _Optional[str] = ...) -> None: ...

class PersistRequest(_message.Message):
    __slots__ = ("key",)
    KEY_FIELD_NUMBER: _ClassVar[int]
    key: str
    def __init__(self, key: _Optional[str] = ...) -> None: ...

class PersistResponse(_message.Message):
    __slots__ = ("success", "error", "expiration_removed")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    EXPIRATION_REMOVED_FIELD_NUMBER: _ClassVar[int]
    success: bool
    error: str
    expiration_removed: bool
    def __init__(self, success: _Optional[bool] = ..., error: _Optional[str] = ..., expiration_removed: _Optional[bool] = ...) -> None: ...
