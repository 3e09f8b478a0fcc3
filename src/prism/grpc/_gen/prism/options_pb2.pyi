# Generated from proto/ by `python -m prism.grpc.codegen`: do not edit.
from google.protobuf import descriptor_pb2 as _descriptor_pb2
from google.protobuf import descriptor as _descriptor
from typing import ClassVar as _ClassVar

DESCRIPTOR: _descriptor.FileDescriptor
PII_FIELD_NUMBER: _ClassVar[int]
pii: _descriptor.FieldDescriptor
INDEX_FIELD_NUMBER: _ClassVar[int]
index: _descriptor.FieldDescriptor
CACHE_FIELD_NUMBER: _ClassVar[int]
cache: _descriptor.FieldDescriptor
CONSISTENCY_FIELD_NUMBER: _ClassVar[int]
consistency: _descriptor.FieldDescriptor
BACKEND_FIELD_NUMBER: _ClassVar[int]
backend: _descriptor.FieldDescriptor
ACCESS_PATTERN_FIELD_NUMBER: _ClassVar[int]
access_pattern: _descriptor.FieldDescriptor
READ_RPS_FIELD_NUMBER: _ClassVar[int]
read_rps: _descriptor.FieldDescriptor
WRITE_RPS_FIELD_NUMBER: _ClassVar[int]
write_rps: _descriptor.FieldDescriptor
ITEM_BYTES_P99_FIELD_NUMBER: _ClassVar[int]
item_bytes_p99: _descriptor.FieldDescriptor
TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
total_bytes: _descriptor.FieldDescriptor
TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
ttl_seconds: _descriptor.FieldDescriptor
LATENCY_P99_MS_FIELD_NUMBER: _ClassVar[int]
latency_p99_ms: _descriptor.FieldDescriptor
TRANSACTIONS_FIELD_NUMBER: _ClassVar[int]
transactions: _descriptor.FieldDescriptor
DURABILITY_FIELD_NUMBER: _ClassVar[int]
durability: _descriptor.FieldDescriptor
