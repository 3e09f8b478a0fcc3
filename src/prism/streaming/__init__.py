"""Streaming requests: long-running work with live progress over WebSocket and SSE.

Handlers are registered on a :class:`Router`; the :class:`StreamingService` stores
requests on the KeyValue layer, queues them for workers and streams their events;
:class:`StreamClient` is the Python SDK. See docs/streaming.md.
"""

from prism.streaming.client import ProgressUpdate, RequestError, RequestHandle, StreamClient
from prism.streaming.config import StreamingConfig, parse_config
from prism.streaming.errors import Cancelled, RetryableError, StreamError
from prism.streaming.handlers import ProgressReporter, Router
from prism.streaming.service import StreamingService

__all__ = [
    "Cancelled",
    "ProgressReporter",
    "ProgressUpdate",
    "RequestError",
    "RequestHandle",
    "RetryableError",
    "Router",
    "StreamClient",
    "StreamError",
    "StreamingConfig",
    "StreamingService",
    "parse_config",
]
