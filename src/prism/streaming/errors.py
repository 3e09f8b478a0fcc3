"""Errors of the streaming protocol: one stable code each, and how handlers signal them.

``StreamError`` carries a protocol error code (the ``error.code`` a client sees); the
codes and their HTTP statuses are listed in :data:`HTTP_STATUS`. Handlers raise
``RetryableError`` for failures worth another attempt (with backoff), or any
``StreamError`` to fail with a specific code; any other exception fails the request
with PROCESSING_FAILED.
"""

from __future__ import annotations

from typing import Any

from prism.errors import PrismError

__all__ = [
    "HTTP_STATUS",
    "Cancelled",
    "OwnershipLost",
    "RetryableError",
    "StreamError",
]

#: Every protocol error code and the HTTP status it maps to.
HTTP_STATUS: dict[str, int] = {
    "VALIDATION_ERROR": 422,
    "INVALID_ACTION": 400,
    "UNAUTHORIZED": 401,
    "FORBIDDEN": 403,
    "NOT_FOUND": 404,
    "RATE_LIMITED": 429,
    "TIMEOUT": 504,
    "INTERNAL_ERROR": 500,
    "PROCESSING_FAILED": 500,
    "CANCELLED": 409,
    "DUPLICATE_REQUEST": 409,
    "MESSAGE_TOO_LARGE": 413,
    "REQUEST_TIMEOUT": 408,
    "INVALID_MESSAGE": 400,
    "AUDIT_UNAVAILABLE": 503,
}

_RETRYABLE = frozenset({"RATE_LIMITED", "TIMEOUT", "INTERNAL_ERROR", "AUDIT_UNAVAILABLE"})


class StreamError(PrismError):
    """A failure with a protocol error code, safe to show to the client (a :class:`prism.PrismError`)."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        details: Any = None,
        retryable: bool | None = None,
        retry_after: float | None = None,
    ) -> None:
        if code not in HTTP_STATUS:
            raise ValueError(f"unknown streaming error code {code!r}; known: {sorted(HTTP_STATUS)}")
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details
        self.retryable = code in _RETRYABLE if retryable is None else retryable
        self.retry_after = retry_after

    @property
    def http_status(self) -> int:
        return HTTP_STATUS[self.code]

    def __repr__(self) -> str:
        return f"StreamError({self.code!r}, {self.message!r})"


class RetryableError(Exception):
    """Raised by a handler for a transient failure: the job is retried with backoff.

    ``retry_after`` (seconds) asks for at least that delay before the next attempt.
    """

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Cancelled(Exception):
    """Raised in a handler (by ``progress.report`` or ``check_cancelled``) once its request is cancelled."""


class OwnershipLost(Exception):
    """This worker no longer owns the request (another took it over); its work is discarded."""
