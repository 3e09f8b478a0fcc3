# Generated from proto/ by `python -m prism.grpc.codegen`: do not edit.
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class IdempotencyToken(_message.Message):
    __slots__ = ("generation_time_ms", "token")
    GENERATION_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    generation_time_ms: int
    token: str
    def __init__(self, generation_time_ms: _Optional[int] = ..., token: _Optional[str] = ...) -> None: ...

class Item(_message.Message):
    __slots__ = ("key", "value", "etag", "expires_at", "content_type", "found")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    FOUND_FIELD_NUMBER: _ClassVar[int]
    key: str
    value: bytes
    etag: str
    expires_at: float
    content_type: str
    found: bool
    def __init__(self, key: _Optional[str] = ..., value: _Optional[bytes] = ..., etag: _Optional[str] = ..., expires_at: _Optional[float] = ..., content_type: _Optional[str] = ..., found: _Optional[bool] = ...) -> None: ...

class GetRequest(_message.Message):
    __slots__ = ("namespace", "key")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    key: str
    def __init__(self, namespace: _Optional[str] = ..., key: _Optional[str] = ...) -> None: ...

class GetResponse(_message.Message):
    __slots__ = ("item",)
    ITEM_FIELD_NUMBER: _ClassVar[int]
    item: Item
    def __init__(self, item: _Optional[_Union[Item, _Mapping]] = ...) -> None: ...

class PutOp(_message.Message):
    __slots__ = ("key", "value", "ttl_seconds", "content_type", "if_match", "if_absent")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    IF_MATCH_FIELD_NUMBER: _ClassVar[int]
    IF_ABSENT_FIELD_NUMBER: _ClassVar[int]
    key: str
    value: bytes
    ttl_seconds: float
    content_type: str
    if_match: str
    if_absent: bool
    def __init__(self, key: _Optional[str] = ..., value: _Optional[bytes] = ..., ttl_seconds: _Optional[float] = ..., content_type: _Optional[str] = ..., if_match: _Optional[str] = ..., if_absent: _Optional[bool] = ...) -> None: ...

class DeleteOp(_message.Message):
    __slots__ = ("key", "if_match")
    KEY_FIELD_NUMBER: _ClassVar[int]
    IF_MATCH_FIELD_NUMBER: _ClassVar[int]
    key: str
    if_match: str
    def __init__(self, key: _Optional[str] = ..., if_match: _Optional[str] = ...) -> None: ...

class PutRequest(_message.Message):
    __slots__ = ("namespace", "put", "idempotency")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    PUT_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    put: PutOp
    idempotency: IdempotencyToken
    def __init__(self, namespace: _Optional[str] = ..., put: _Optional[_Union[PutOp, _Mapping]] = ..., idempotency: _Optional[_Union[IdempotencyToken, _Mapping]] = ...) -> None: ...

class PutResponse(_message.Message):
    __slots__ = ("etag", "existed")
    ETAG_FIELD_NUMBER: _ClassVar[int]
    EXISTED_FIELD_NUMBER: _ClassVar[int]
    etag: str
    existed: bool
    def __init__(self, etag: _Optional[str] = ..., existed: _Optional[bool] = ...) -> None: ...

class DeleteRequest(_message.Message):
    __slots__ = ("namespace", "delete", "idempotency")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    DELETE_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    delete: DeleteOp
    idempotency: IdempotencyToken
    def __init__(self, namespace: _Optional[str] = ..., delete: _Optional[_Union[DeleteOp, _Mapping]] = ..., idempotency: _Optional[_Union[IdempotencyToken, _Mapping]] = ...) -> None: ...

class DeleteResponse(_message.Message):
    __slots__ = ("existed",)
    EXISTED_FIELD_NUMBER: _ClassVar[int]
    existed: bool
    def __init__(self, existed: _Optional[bool] = ...) -> None: ...

class GetManyRequest(_message.Message):
    __slots__ = ("namespace", "keys")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    keys: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, namespace: _Optional[str] = ..., keys: _Optional[_Iterable[str]] = ...) -> None: ...

class GetManyResponse(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[Item]
    def __init__(self, items: _Optional[_Iterable[_Union[Item, _Mapping]]] = ...) -> None: ...

class PutManyRequest(_message.Message):
    __slots__ = ("namespace", "puts", "idempotency")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    PUTS_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    puts: _containers.RepeatedCompositeFieldContainer[PutOp]
    idempotency: IdempotencyToken
    def __init__(self, namespace: _Optional[str] = ..., puts: _Optional[_Iterable[_Union[PutOp, _Mapping]]] = ..., idempotency: _Optional[_Union[IdempotencyToken, _Mapping]] = ...) -> None: ...

class DeleteManyRequest(_message.Message):
    __slots__ = ("namespace", "deletes", "idempotency")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    DELETES_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    deletes: _containers.RepeatedCompositeFieldContainer[DeleteOp]
    idempotency: IdempotencyToken
    def __init__(self, namespace: _Optional[str] = ..., deletes: _Optional[_Iterable[_Union[DeleteOp, _Mapping]]] = ..., idempotency: _Optional[_Union[IdempotencyToken, _Mapping]] = ...) -> None: ...

class TransactOp(_message.Message):
    __slots__ = ("put", "delete")
    PUT_FIELD_NUMBER: _ClassVar[int]
    DELETE_FIELD_NUMBER: _ClassVar[int]
    put: PutOp
    delete: DeleteOp
    def __init__(self, put: _Optional[_Union[PutOp, _Mapping]] = ..., delete: _Optional[_Union[DeleteOp, _Mapping]] = ...) -> None: ...

class TransactRequest(_message.Message):
    __slots__ = ("namespace", "ops", "idempotency")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    OPS_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    ops: _containers.RepeatedCompositeFieldContainer[TransactOp]
    idempotency: IdempotencyToken
    def __init__(self, namespace: _Optional[str] = ..., ops: _Optional[_Iterable[_Union[TransactOp, _Mapping]]] = ..., idempotency: _Optional[_Union[IdempotencyToken, _Mapping]] = ...) -> None: ...

class WriteError(_message.Message):
    __slots__ = ("code", "detail")
    CODE_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    code: str
    detail: str
    def __init__(self, code: _Optional[str] = ..., detail: _Optional[str] = ...) -> None: ...

class WriteResult(_message.Message):
    __slots__ = ("key", "ok", "etag", "existed", "error")
    KEY_FIELD_NUMBER: _ClassVar[int]
    OK_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    EXISTED_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    key: str
    ok: bool
    etag: str
    existed: bool
    error: WriteError
    def __init__(self, key: _Optional[str] = ..., ok: _Optional[bool] = ..., etag: _Optional[str] = ..., existed: _Optional[bool] = ..., error: _Optional[_Union[WriteError, _Mapping]] = ...) -> None: ...

class WriteResults(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[WriteResult]
    def __init__(self, results: _Optional[_Iterable[_Union[WriteResult, _Mapping]]] = ...) -> None: ...

class ScanRequest(_message.Message):
    __slots__ = ("namespace", "prefix", "limit", "page_token")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    prefix: str
    limit: int
    page_token: str
    def __init__(self, namespace: _Optional[str] = ..., prefix: _Optional[str] = ..., limit: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ScanResponse(_message.Message):
    __slots__ = ("keys", "next_page_token")
    KEYS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedScalarFieldContainer[str]
    next_page_token: str
    def __init__(self, keys: _Optional[_Iterable[str]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class KeyList(_message.Message):
    __slots__ = ("keys",)
    KEYS_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, keys: _Optional[_Iterable[str]] = ...) -> None: ...

class GetItemsRequest(_message.Message):
    __slots__ = ("namespace", "record", "start", "end", "keys", "limit", "page_size_bytes", "page_token")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    RECORD_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    record: str
    start: str
    end: str
    keys: KeyList
    limit: int
    page_size_bytes: int
    page_token: str
    def __init__(self, namespace: _Optional[str] = ..., record: _Optional[str] = ..., start: _Optional[str] = ..., end: _Optional[str] = ..., keys: _Optional[_Union[KeyList, _Mapping]] = ..., limit: _Optional[int] = ..., page_size_bytes: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ItemPage(_message.Message):
    __slots__ = ("items", "next_page_token")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[Item]
    next_page_token: str
    def __init__(self, items: _Optional[_Iterable[_Union[Item, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class PutItemsRequest(_message.Message):
    __slots__ = ("namespace", "record", "items", "idempotency")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    RECORD_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    record: str
    items: _containers.RepeatedCompositeFieldContainer[PutOp]
    idempotency: IdempotencyToken
    def __init__(self, namespace: _Optional[str] = ..., record: _Optional[str] = ..., items: _Optional[_Iterable[_Union[PutOp, _Mapping]]] = ..., idempotency: _Optional[_Union[IdempotencyToken, _Mapping]] = ...) -> None: ...

class DeleteItemsRequest(_message.Message):
    __slots__ = ("namespace", "record", "start", "end", "keys", "idempotency")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    RECORD_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    record: str
    start: str
    end: str
    keys: KeyList
    idempotency: IdempotencyToken
    def __init__(self, namespace: _Optional[str] = ..., record: _Optional[str] = ..., start: _Optional[str] = ..., end: _Optional[str] = ..., keys: _Optional[_Union[KeyList, _Mapping]] = ..., idempotency: _Optional[_Union[IdempotencyToken, _Mapping]] = ...) -> None: ...

class DeleteItemsResponse(_message.Message):
    __slots__ = ("deleted",)
    DELETED_FIELD_NUMBER: _ClassVar[int]
    deleted: int
    def __init__(self, deleted: _Optional[int] = ...) -> None: ...
