"""Who is calling: the principal the streaming service needs, and how it asks for one.

The service takes any authenticator with the gateway's shape,
``authenticate_headers(headers, query_token=None) -> Principal`` (sync or async),
which raises an error carrying ``status``, ``code`` and ``detail`` when the
credentials are missing or wrong. Identity always comes from there, never from a
message. :class:`StaticTokens` is a small authenticator for tests, demos and the
standalone server.
"""

from __future__ import annotations

import hmac
import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from prism.streaming.errors import StreamError

__all__ = ["AuthError", "Authenticator", "Identity", "Principal", "StaticTokens", "authenticate"]


class Principal(Protocol):
    """The fields of ``prism.gateway.auth.Principal`` the streaming service reads."""

    @property
    def subject(self) -> str: ...

    @property
    def tenant(self) -> str: ...

    @property
    def roles(self) -> frozenset[str]: ...


class Authenticator(Protocol):
    def authenticate_headers(self, headers: Mapping[str, str], query_token: str | None = None) -> Any: ...


@dataclass(frozen=True, slots=True)
class Identity:
    """A principal of the standalone server (same fields as the gateway's Principal)."""

    subject: str
    tenant: str = "default"
    roles: frozenset[str] = field(default_factory=frozenset)
    kind: str = "user"


class AuthError(Exception):
    """Credentials missing or refused (the same shape as the gateway's AuthError)."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail


class StaticTokens:
    """Bearer tokens mapped to identities, compared in constant time."""

    def __init__(self, tokens: Mapping[str, Identity]) -> None:
        self._tokens = dict(tokens)

    def authenticate_headers(self, headers: Mapping[str, str], query_token: str | None = None) -> Identity:
        value = headers.get("authorization") or headers.get("Authorization") or ""
        scheme, _, credential = value.partition(" ")
        token = credential.strip() if scheme.lower() == "bearer" else ""
        token = token or (query_token or "")
        if not token:
            raise AuthError(401, "UNAUTHORIZED", "missing credentials: send 'Authorization: Bearer <token>'")
        for known, identity in self._tokens.items():
            if hmac.compare_digest(known.encode(), token.encode()):
                return identity
        raise AuthError(401, "UNAUTHORIZED", "invalid token")


def _auth_error_types() -> tuple[type[BaseException], ...]:
    types: list[type[BaseException]] = [AuthError]
    try:
        from prism.gateway.auth import AuthError as GatewayAuthError
    except ImportError:
        pass
    else:
        types.append(GatewayAuthError)
    return tuple(types)


async def authenticate(
    authenticator: Authenticator, headers: Mapping[str, str], query_token: str | None
) -> Identity:
    """The caller's identity; StreamError(UNAUTHORIZED or FORBIDDEN) when refused.

    A principal without a tenant (the gateway's anonymous caller, a key without one)
    gets the tenant "" so it is kept apart from every named tenant. A subject or tenant
    holding a NUL character is refused, as it could pass for another identity.
    """
    try:
        result = authenticator.authenticate_headers(headers, query_token)
        if inspect.isawaitable(result):
            result = await result
    except _auth_error_types() as exc:
        status = getattr(exc, "status", 401)
        code = "FORBIDDEN" if status == 403 else "UNAUTHORIZED"
        raise StreamError(code, str(getattr(exc, "detail", "") or exc) or "unauthorized") from None
    identity = (
        result
        if isinstance(result, Identity)
        else Identity(
            str(result.subject),
            result.tenant or "",
            frozenset(result.roles),
            str(getattr(result, "kind", "user")),
        )
    )
    if "\x00" in identity.subject or "\x00" in identity.tenant:
        # Request ids and topics are derived from "tenant NUL user": a NUL would make them ambiguous.
        raise StreamError("UNAUTHORIZED", "the credentials name a subject or tenant with a NUL character")
    return identity
