"""The whole Prism error hierarchy, in one place.

Every failure that leaves the public API is one of these; driver exceptions are
mapped at the backend boundary and chained as ``__cause__``::

    PrismError
    ├── InvalidArgument          a parameter breaks a documented rule
    │   ├── InvalidKey           a record id or item key is empty, too long, or holds NUL
    │   └── ValueTooLarge        a value is over the namespace's limit
    ├── PreconditionFailed       an if_match / if_absent condition did not hold
    ├── CursorExpired            a change-feed cursor is older than the retained window
    ├── Unsupported              the backend does not honour this operation
    ├── DecodeError              a stored value does not decode to the requested type
    ├── Timeout                  the operation's deadline passed
    │   └── BackendTimeout       a backend did not answer within its deadline (also BackendUnavailable)
    ├── BackendUnavailable       the backend cannot be reached (retryable)
    ├── StoreClosed              the store was used after close() or before open
    ├── ConfigError              a configuration file breaks a rule (names the file and field)
    ├── AuthError                credentials missing or refused (401) or not allowed (403)
    ├── PiiError                 prism.gateway.pii: a stored PII field cannot be revealed
    │   └── StoredValueNotJson   a stored value of a PII namespace is not JSON
    ├── MigrationRefused         prism.migration: a migration's phase does not allow the action
    └── StreamError              prism.streaming.errors: a streaming failure with a protocol code
        └── RequestError         prism.streaming.client: a request failed or was refused

The gateway, migration and streaming errors live in their own modules (they carry HTTP and
protocol codes); they subclass :class:`PrismError`, so one ``except PrismError``
catches every failure Prism reports. The gateway and the streaming service share
one :class:`AuthError`. Streaming's ``Cancelled`` and ``OwnershipLost`` stay outside
the tree on purpose: they are signals that stop a handler (an ``except PrismError``
in a handler must not swallow them), and ``RetryableError`` is what a handler raises
to Prism, not a failure Prism reports.
"""

from __future__ import annotations

__all__ = [
    "AuthError",
    "BackendTimeout",
    "BackendUnavailable",
    "ConfigError",
    "CursorExpired",
    "DecodeError",
    "InvalidArgument",
    "InvalidKey",
    "PreconditionFailed",
    "PrismError",
    "StoreClosed",
    "Timeout",
    "Unsupported",
    "ValueTooLarge",
]


class PrismError(Exception):
    """Base of every error Prism raises. ``code`` is a stable machine-readable name."""

    code = "PRISM_ERROR"
    retryable = False


class InvalidArgument(PrismError, ValueError):
    """A parameter breaks a documented rule; nothing was written."""

    code = "INVALID_ARGUMENT"


class InvalidKey(InvalidArgument):
    """A record id or item key is not a valid key; nothing was written."""

    code = "INVALID_KEY"


class ValueTooLarge(InvalidArgument):
    """A value is larger than the namespace (or backend) allows; nothing was written."""

    code = "VALUE_TOO_LARGE"


class PreconditionFailed(PrismError):
    """A conditional write found the item in another state (etag mismatch or present/absent)."""

    code = "PRECONDITION_FAILED"

    def __init__(self, message: str, *, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


class CursorExpired(PrismError):
    """A change-feed cursor is older than the feed's retained window: changes after it are gone.

    Resuming from it would skip changes silently, so the watch stops instead; start
    again from a fresh cursor (and re-read what the watcher keeps, as it may be stale).
    """

    code = "CURSOR_EXPIRED"

    def __init__(self, message: str, *, cursor: str | None = None) -> None:
        super().__init__(message)
        self.cursor = cursor


class Unsupported(PrismError):
    """The backend does not honour this operation (see ``store.capabilities``)."""

    code = "UNSUPPORTED"


class DecodeError(PrismError):
    """A stored value could not be decoded to the requested type."""

    code = "DECODE_ERROR"

    def __init__(self, message: str, *, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


class Timeout(PrismError):
    """The operation did not finish within its deadline."""

    code = "TIMEOUT"
    retryable = True


class BackendUnavailable(PrismError):
    """The backend could not be reached or answered with a transient failure.

    Retryable; the driver's exception is kept as ``__cause__`` and its text in ``cause``.
    """

    code = "BACKEND_UNAVAILABLE"
    retryable = True

    def __init__(self, message: str, *, cause: BaseException | None = None) -> None:
        super().__init__(message)
        self.cause = cause


class BackendTimeout(Timeout, BackendUnavailable):
    """A backend did not answer within its deadline (``operation_timeout``, ``connect_timeout``).

    A :class:`Timeout` and, as the backend could not be used, a :class:`BackendUnavailable`:
    whether a write sent before the deadline was applied is unknown.
    """

    code = "TIMEOUT"


class StoreClosed(PrismError):
    """The store was used after ``close()``."""

    code = "STORE_CLOSED"


class ConfigError(PrismError):
    """A configuration file breaks a rule: names the file, the field path and the problem."""

    code = "CONFIG_ERROR"

    def __init__(self, source: str, path: str, message: str) -> None:
        self.source = source
        self.path = path
        self.message = message
        super().__init__(f"{source}: {path}: {message}" if path else f"{source}: {message}")


class AuthError(PrismError):
    """Authentication or authorization failed: 401 (who are you?) or 403 (not allowed).

    ``code`` names the reason (``UNAUTHORIZED``, ``FORBIDDEN``, ``INVALID_TOKEN``...),
    ``detail`` says it to the caller; the gateway and the streaming service both raise it.
    """

    code = "UNAUTHORIZED"

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
