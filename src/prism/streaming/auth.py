"""Who is calling: the principal the streaming service needs, and how it asks for one.

The service takes any authenticator with the gateway's shape,
``authenticate_request(raw_headers, query_token=None, *, query_token_allowed=False)
-> Principal`` (sync or async), which raises :class:`prism.errors.AuthError` (its
``status``, ``code`` and ``detail``) when the credentials are missing or wrong.
Gateway and streaming share one :class:`prism.model.Principal` (``Identity`` is
another name for it). Identity always comes from there, never from a message.
Credentials are read by one rule everywhere
(:func:`prism.gateway.auth.read_credentials`): one credential per request, and
``?token=`` only on the WebSocket handshake and SSE event streams.
:class:`StaticTokens` is a small authenticator for tests, demos and the standalone
server.

What a caller owns (its requests, their events, its connections) is kept under
its ``owner``: the gateway's ``Principal.owner`` names the credential kind and
issuer too, so an API key and a token with the key's name as subject never share
anything.
"""

from __future__ import annotations

import hmac
import inspect
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any, Protocol

from prism.errors import AuthError
from prism.model import Principal
from prism.streaming.errors import StreamError

__all__ = [
    "AccessAudit",
    "AuthError",
    "Authenticator",
    "Identity",
    "Principal",
    "StaticTokens",
    "authenticate",
    "peer_certificate",
    "query_token",
    "tenant_of",
]


class Authenticator(Protocol):
    def authenticate_request(
        self,
        raw_headers: Iterable[tuple[bytes, bytes]],
        query_token: str | None = None,
        *,
        query_token_allowed: bool = False,
    ) -> Any: ...


class AccessAudit(Protocol):
    """Where the requests of the streaming routes are audited (the gateway's audit trail).

    ``admit`` is called before authentication and raises (anything) to refuse the
    request, when the trail cannot take its event; ``record`` gets every admitted
    request's outcome (``principal`` is None when authentication refused it) and,
    for a ``write`` that succeeded, returns only once the event is written when the
    trail fails closed, raising when it could not be.
    """

    def admit(self) -> bool: ...

    async def record(
        self,
        scope: Mapping[str, Any],
        principal: Any,
        operation: str,
        status: int,
        outcome: str,
        *,
        started: float,
        write: bool,
    ) -> None: ...


#: The standalone server's name for :class:`prism.model.Principal` (one class for gateway and streaming).
Identity = Principal


def tenant_of(principal: Principal) -> str:
    """The tenant a principal's requests and connections are kept under: "" for one without a tenant."""
    return principal.tenant or ""


class StaticTokens:
    """Bearer tokens mapped to identities, compared in constant time."""

    def __init__(self, tokens: Mapping[str, Identity]) -> None:
        self._tokens = dict(tokens)

    def authenticate_request(
        self,
        raw_headers: Iterable[tuple[bytes, bytes]],
        query_token: str | None = None,
        *,
        query_token_allowed: bool = False,
    ) -> Identity:
        from prism.gateway.auth import read_credentials

        api_key, authorization, token = read_credentials(
            raw_headers, query_token, query_token_allowed=query_token_allowed
        )
        if api_key is not None:
            raise AuthError(401, "UNAUTHORIZED", "this server takes 'Authorization: Bearer <token>' only")
        if authorization is not None:
            scheme, _, credential = authorization.partition(" ")
            token = credential.strip() if scheme.lower() == "bearer" else ""
        if not token:
            raise AuthError(401, "UNAUTHORIZED", "missing credentials: send 'Authorization: Bearer <token>'")
        for known, identity in self._tokens.items():
            if hmac.compare_digest(known.encode(), token.encode()):
                return identity
        raise AuthError(401, "UNAUTHORIZED", "invalid token")


def query_token(query_string: bytes) -> str | None:
    """The ``?token=`` of a raw query string (None when absent), as the gateway reads it."""
    from prism.gateway.auth import query_token as read

    return read(query_string)


def peer_certificate(scope: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The verified TLS client certificate of a request (None without one), as the gateway reads it."""
    from prism.gateway.auth import peer_certificate as read

    return read(scope)


async def authenticate(
    authenticator: Authenticator,
    raw_headers: Iterable[tuple[bytes, bytes]],
    query_token: str | None = None,
    *,
    query_token_allowed: bool = False,
    peer_cert: Mapping[str, Any] | None = None,
) -> Identity:
    """The caller's identity; StreamError(UNAUTHORIZED or FORBIDDEN) when refused.

    ``query_token`` (the ``?token=`` parameter, None when absent) is accepted only
    where ``query_token_allowed``: the WebSocket handshake and SSE event streams.
    A principal without a tenant (the gateway's anonymous caller, a key without one)
    gets the tenant "" so it is kept apart from every named tenant. A subject, owner
    or tenant holding a NUL character is refused, as it could pass for another identity.
    """
    try:
        # The client certificate (mutual TLS) is passed only when there is one, so
        # authenticators that know nothing of certificates keep working.
        extra: dict[str, Any] = {"peer_cert": peer_cert} if peer_cert is not None else {}
        result = authenticator.authenticate_request(
            raw_headers, query_token, query_token_allowed=query_token_allowed, **extra
        )
        if inspect.isawaitable(result):
            result = await result
    except AuthError as exc:
        status = getattr(exc, "status", 401)
        code = "FORBIDDEN" if status == 403 else "UNAUTHORIZED"
        reason = getattr(exc, "code", None)
        raise StreamError(
            code,
            str(getattr(exc, "detail", "") or exc) or "unauthorized",
            details={"reason": reason} if isinstance(reason, str) and reason != code else None,
        ) from None
    if isinstance(result, Principal):
        identity = result if result.tenant is not None else replace(result, tenant="")
    else:
        # An authenticator of another shape: its principal's fields, under the same owner rule.
        owner = getattr(result, "owner", None)
        identity = Principal(
            str(result.subject),
            result.tenant or "",
            frozenset(result.roles),
            str(getattr(result, "kind", "user")),
            getattr(result, "issuer", None),
            str(owner) if owner else f"{getattr(result, 'kind', 'user')}:{result.subject}",
        )
    if "\x00" in identity.owner or "\x00" in identity.subject or "\x00" in (identity.tenant or ""):
        # Request ids and topics are derived from "tenant NUL owner": a NUL would make them ambiguous.
        raise StreamError("UNAUTHORIZED", "the credentials name a subject or tenant with a NUL character")
    return identity
