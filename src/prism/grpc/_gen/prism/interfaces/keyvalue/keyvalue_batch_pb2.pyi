# Generated from proto/ by `python -m prism.grpc.codegen`: do not edit.
from prism.grpc._gen.prism.interfaces.keyvalue import keyvalue_basic_pb2 as _keyvalue_basic_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class BatchSetRequest(_message.Message):
    __slots__ = ("requests",)
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    requests: _containers.RepeatedCompositeFieldContainer[_keyvalue_basic_pb2.SetRequest]
    def __init__(self, requests: _Optional[_Iterable[_Union[_keyvalue_basic_pb2.SetRequest, _Mapping]]] = ...) -> None: ...

class BatchSetResponse(_message.Message):
    __slots__ = ("results", "all_success")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    ALL_SUCCESS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[_keyvalue_basic_pb2.SetResponse]
    all_success: bool
    def __init__(self, results: _Optional[_Iterable[_Union[_keyvalue_basic_pb2.SetResponse, _Mapping]]] = ..., all_success: _Optional[bool] = ...) -> None: ...

class BatchGetRequest(_message.Message):
    __slots__ = ("keys",)
    KEYS_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, keys: _Optional[_Iterable[str]] = ...) -> None: ...

class BatchGetResponse(_message.Message):
    __slots__ = ("results", "found_count")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    FOUND_COUNT_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[_keyvalue_basic_pb2.GetResponse]
    found_count: int
    def __init__(self, results: _Optional[_Iterable[_Union[_keyvalue_basic_pb2.GetResponse, _Mapping]]] = ..., found_count: _Optional[int] = ...) -> None: ...

class BatchDeleteRequest(_message.Message):
    __slots__ = ("keys",)
    KEYS_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, keys: _Optional[_Iterable[str]] = ...) -> None: ...

class BatchDeleteResponse(_message.Message):
    __slots__ = ("results", "all_success")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    ALL_SUCCESS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[_keyvalue_basic_pb2.DeleteResponse]
    all_success: bool
    def __init__(self, results: _Optional[_Iterable[_Union[_keyvalue_basic_pb2.DeleteResponse, _Mapping]]] = ..., all_success: _Optional[bool] = ...) -> None: ...
