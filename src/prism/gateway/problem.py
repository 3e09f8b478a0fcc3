"""Errors as ``application/problem+json`` (RFC 9457), and the map from Prism errors to HTTP.

Every error the gateway answers goes through :class:`HTTPProblem`, so clients always
get the same shape: ``type``, ``title``, ``status``, ``detail`` and a stable ``code``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import msgspec
from starlette.responses import Response

from prism.errors import (
    AuthError,
    BackendUnavailable,
    DecodeError,
    InvalidArgument,
    PreconditionFailed,
    PrismError,
    StoreClosed,
    Timeout,
    Unsupported,
    ValueTooLarge,
)
from prism.gateway.audit import AuditUnavailable
from prism.gateway.pii import PiiError
from prism.gateway.reply import Reply

__all__ = [
    "PROBLEM_TYPE_BASE",
    "HTTPProblem",
    "Problem",
    "RequestTimeout",
    "from_prism_error",
    "problem_body",
    "problem_for",
    "problem_response",
]

log = logging.getLogger("prism.gateway")

PROBLEM_TYPE_BASE = "https://prism.dev/problems/"
PROBLEM_CONTENT_TYPE = "application/problem+json"

_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    409: "Conflict",
    412: "Precondition Failed",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
}


class RequestTimeout(Timeout):
    """A request did not finish within the gateway's ``server.request_timeout`` (answered 503 TIMEOUT)."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"the request did not finish within {seconds:g} s; retry later")
        self.seconds = seconds


class Problem(msgspec.Struct, omit_defaults=True):
    """The JSON body of an error response."""

    type: str
    title: str
    status: int
    detail: str
    code: str
    request_id: str | None = None


_encoder = msgspec.json.Encoder()


class HTTPProblem(Exception):
    """An error response: raise it anywhere in a handler and the gateway answers with it."""

    def __init__(
        self, status: int, code: str, detail: str, *, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = dict(headers or {})

    def response(self, request_id: str | None = None) -> Response:
        """The problem+json response for this error (for Starlette routes)."""
        return problem_response(
            self.status, self.code, self.detail, headers=self.headers, request_id=request_id
        )

    def reply(self, request_id: str | None = None) -> Reply:
        """The problem+json :class:`Reply` for this error (for data routes)."""
        headers = [
            (name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in self.headers.items()
        ]
        headers.append((b"content-type", _PROBLEM_CONTENT_TYPE))
        return Reply(self.status, problem_body(self.status, self.code, self.detail, request_id), headers)


_PROBLEM_CONTENT_TYPE = PROBLEM_CONTENT_TYPE.encode("ascii")


def problem_body(status: int, code: str, detail: str, request_id: str | None = None) -> bytes:
    """The JSON of a problem: the one place its fields are filled in."""
    return _encoder.encode(
        Problem(
            type=PROBLEM_TYPE_BASE + code.lower().replace("_", "-"),
            title=_TITLES.get(status, "Error"),
            status=status,
            detail=detail,
            code=code,
            request_id=request_id,
        )
    )


def problem_response(
    status: int,
    code: str,
    detail: str,
    *,
    headers: Mapping[str, str] | None = None,
    request_id: str | None = None,
) -> Response:
    """Build an ``application/problem+json`` response."""
    return Response(
        problem_body(status, code, detail, request_id),
        status,
        headers=dict(headers or {}),
        media_type=PROBLEM_CONTENT_TYPE,
    )


def status_for(exc: PrismError) -> int:
    """The HTTP status that reports ``exc``."""
    if isinstance(exc, AuthError):
        return exc.status
    if isinstance(exc, ValueTooLarge):
        return 413
    if isinstance(exc, InvalidArgument):
        return 400
    if isinstance(exc, PreconditionFailed):
        return 412
    if isinstance(exc, Unsupported):
        return 501
    if isinstance(exc, BackendUnavailable | Timeout | StoreClosed):
        return 503
    if isinstance(exc, DecodeError):
        return 500
    return 500


def from_prism_error(exc: PrismError, retry_after: int) -> HTTPProblem:
    """Translate a KeyValue error into the problem the client sees.

    Unavailable backends, timeouts and a closed store are retryable, so they carry
    ``Retry-After``. The message of a backend failure never includes the driver's
    text, which may hold a connection URL. An AuthError answers with its own status
    (a 401 carries a Bearer challenge); a PiiError is a 500 that names its code.
    """
    if isinstance(exc, AuthError):
        challenge = {"WWW-Authenticate": 'Bearer realm="prism"'} if exc.status == 401 else None
        return HTTPProblem(exc.status, exc.code, exc.detail, headers=challenge)
    if isinstance(exc, PiiError):
        return HTTPProblem(500, exc.code, str(exc))
    status = status_for(exc)
    headers: dict[str, str] = {}
    detail = str(exc)
    if status == 503:
        headers["Retry-After"] = str(retry_after)
        if isinstance(exc, RequestTimeout):
            detail = str(exc)
        elif isinstance(exc, Timeout):
            detail = "the backend did not answer in time; retry later"
        elif isinstance(exc, BackendUnavailable):
            detail = "the backend is unavailable; retry later"
        else:
            detail = "the store is not open; retry later"
    elif status == 500:
        detail = "the stored value could not be decoded"
    return HTTPProblem(status, exc.code, detail, headers=headers)


def problem_for(
    exc: Exception, timeout: float, retry_after: int, request_id: str | None = None
) -> HTTPProblem:
    """The problem that reports ``exc``: its own for an expected failure, else a logged 500.

    The one map from an exception to what a client is answered; ``timeout`` is the
    request timeout a bare TimeoutError stands for.
    """
    if isinstance(exc, HTTPProblem):
        return exc
    if isinstance(exc, AuditUnavailable):
        return HTTPProblem(503, "AUDIT_UNAVAILABLE", str(exc), headers={"Retry-After": str(retry_after)})
    if isinstance(exc, PrismError):
        return from_prism_error(exc, retry_after)
    if isinstance(exc, TimeoutError):
        return from_prism_error(RequestTimeout(timeout), retry_after)
    log.error("unhandled error", exc_info=exc, extra={"request_id": request_id})
    return HTTPProblem(500, "INTERNAL", "the gateway failed to handle this request")
