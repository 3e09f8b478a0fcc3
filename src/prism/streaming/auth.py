"""Who is calling: the principal the streaming service needs, and how it asks for one.

The service takes any authenticator with the gateway's shape,
``authenticate_request(raw_headers, query_token=None, *, query_token_allowed=False)
-> Principal`` (sync or async), which raises :class:`prism.errors.AuthError` (its
``status``, ``code`` and ``detail``) when the credentials are missing or wrong. Identity always comes
from there, never from a message. Credentials are read by one rule everywhere
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
from dataclasses import dataclass, field
from typing import Any, Protocol

from prism.errors import AuthError
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
]


class Principal(Protocol):
    """The fields of ``prism.gateway.auth.Principal`` the streaming service reads."""

    @property
    def subject(self) -> str: ...

    @property
    def tenant(self) -> str: ...

    @property
    def roles(self) -> frozenset[str]: ...

    @property
    def owner(self) -> str: ...


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


@dataclass(frozen=True, slots=True)
class Identity:
    """A principal as the streaming service sees it (the gateway's Principal, or a standalone one).

    ``owner`` is what the caller's requests and connections are stored under; it
    defaults to ``subject`` for the standalone server's identities, which all come
    from one kind of credential.
    """

    subject: str
    tenant: str = "default"
    roles: frozenset[str] = field(default_factory=frozenset)
    kind: str = "user"
    owner: str = ""
    #: Who vouches for the subject when the kind has several (a JWT's ``iss``).
    issuer: str | None = None

    def __post_init__(self) -> None:
        if not self.owner:
            object.__setattr__(self, "owner", self.subject)


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
    if isinstance(result, Identity):
        identity = result
    else:
        kind = str(getattr(result, "kind", "user"))
        subject = str(result.subject)
        owner = getattr(result, "owner", None)
        identity = Identity(
            subject,
            result.tenant or "",
            frozenset(result.roles),
            kind,
            str(owner) if owner else f"{kind}:{subject}",
            getattr(result, "issuer", None),
        )
    if "\x00" in identity.owner or "\x00" in identity.subject or "\x00" in identity.tenant:
        # Request ids and topics are derived from "tenant NUL owner": a NUL would make them ambiguous.
        raise StreamError("UNAUTHORIZED", "the credentials name a subject or tenant with a NUL character")
    return identity
