"""Who is calling: API keys, JSON Web Tokens and client certificates turned into a :class:`Principal`.

Identity only ever comes from a verified credential in the request headers (or, for
clients that cannot set headers, a token passed separately by the caller), never
from the body or query. API keys are compared by their sha256, so the config holds
no key. JWTs are verified against the key of the algorithm's own family: HS* with
the secret from the environment, RS/PS/ES/EdDSA with the configured public keys,
which rules out ``alg: none`` and algorithm confusion. A client certificate
(mutual TLS) was verified by the TLS handshake; ``auth.mtls`` maps its subject CN or
a SAN to a principal of kind ``mtls``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qsl

import httpx
import jwt
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from prism.errors import AuthError
from prism.gateway.config import (
    TOKEN_NAME,
    AuthConfig,
    ConfigError,
    GatewayConfig,
    JwtConfig,
    MtlsIdentityConfig,
)
from prism.model import Principal

__all__ = [
    "AuthError",
    "Authenticator",
    "JwkEntry",
    "Principal",
    "hash_api_key",
    "peer_certificate",
    "query_token",
    "read_credentials",
]

log = logging.getLogger("prism.gateway.auth")

#: Shortest HS* secret accepted, in bytes (RFC 7518 section 3.2 asks for at least the hash size).
MIN_HMAC_SECRET_BYTES = 32
#: Least time between two JWKS fetches triggered by tokens naming an unknown key id.
JWKS_MIN_REFRESH_SECONDS = 30.0
#: Verified tokens remembered (until they expire) so a client's repeated token is checked once.
JWT_CACHE_SIZE = 10_000
#: Longest credential header or query token looked at, in characters; longer ones are refused unparsed.
MAX_CREDENTIAL_CHARS = 8192

PrincipalKind = Literal["api_key", "jwt", "mtls", "anonymous"]


def hash_api_key(key: str) -> str:
    """The hex sha256 of an API key, as the config lists it."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def query_token(query_string: bytes) -> str | None:
    """The value of the ``token`` parameter of a raw query string (None when absent)."""
    if not query_string or b"token=" not in query_string:
        return None
    for name, value in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True):
        if name == "token":
            return value
    return None


def read_credentials(
    raw_headers: Iterable[tuple[bytes, bytes]],
    query_token: str | None = None,
    *,
    query_token_allowed: bool = False,
) -> tuple[str | None, str | None, str | None]:
    """``(X-API-Key, Authorization, ?token=)`` of a request: the one credential rule of every route.

    A request carries at most one credential: ``X-API-Key`` or ``Authorization``,
    each at most once, or, only where ``query_token_allowed`` (the WebSocket
    handshake and SSE event streams, for clients that cannot set headers),
    ``?token=``. Anything else is refused (401 AuthError): which of two credentials
    a proxy or framework would pick differs, so neither is trusted, and a token in
    a URL anywhere else would end up in logs and browser histories.
    """
    api_key = authorization = None
    for name, value in raw_headers:
        if name == b"x-api-key" or name == b"authorization":
            if (api_key if name == b"x-api-key" else authorization) is not None:
                raise _unauthorized("AMBIGUOUS_CREDENTIALS", "a credential header is sent more than once")
            if name == b"x-api-key":
                api_key = value.decode("latin-1")
            else:
                authorization = value.decode("latin-1")
    if query_token is not None:
        if not query_token_allowed:
            raise _unauthorized(
                "QUERY_TOKEN_NOT_ALLOWED",
                "a credential in the query string (?token=) is accepted only by the WebSocket "
                "handshake and SSE event streams; send X-API-Key or Authorization instead",
            )
        if api_key is not None or authorization is not None:
            raise _unauthorized(
                "AMBIGUOUS_CREDENTIALS", "send the credential either in a header or as ?token=, not both"
            )
    return api_key, authorization, query_token


def _unauthorized(code: str, detail: str) -> AuthError:
    return AuthError(401, code, detail)


_KEY_FAMILIES: dict[str, tuple[type, ...]] = {
    "RS": (rsa.RSAPublicKey,),
    "PS": (rsa.RSAPublicKey,),
    "ES": (ec.EllipticCurvePublicKey,),
    "Ed": (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey),
}
_JWK_FAMILIES = {"RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP"}


class Authenticator:
    """Turns request headers into a Principal, or raises AuthError (401).

    Build it with :meth:`from_config`; call :meth:`start` inside the event loop when a
    ``jwks_url`` is configured (it fetches and refreshes the key set), and :meth:`stop`.
    """

    def __init__(
        self,
        config: AuthConfig,
        *,
        hmac_secret: bytes | None = None,
        public_key: Any = None,
        jwks: Mapping[str, JwkEntry] | None = None,
    ) -> None:
        self.config = config
        self.enabled = config.enabled
        self._keys = {
            k.sha256: Principal(k.name, k.tenant, frozenset(k.roles), "api_key") for k in config.api_keys
        }
        #: Key text -> principal, for keys already verified (spares a sha256 per request).
        self._known_keys: dict[str, Principal] = {}
        self._jwt = config.jwt
        self._secret = hmac_secret
        self._public_key = public_key
        self._jwks: dict[str, JwkEntry] = dict(jwks or {})
        self._anonymous = Principal("anonymous", None, frozenset(config.anonymous_roles), "anonymous")
        self._mtls = ClientCertificates(config.mtls) if config.mtls else None
        self._refresh_task: asyncio.Task[None] | None = None
        self._last_fetch = 0.0
        self._fetch_wanted: asyncio.Event | None = None
        self._verified: dict[str, tuple[Principal, float]] = {}
        if self._jwt is not None:
            self._allowed = frozenset(self._jwt.algorithms)
            aud = self._jwt.audience
            self._audience: list[str] | None = [aud] if isinstance(aud, str) else aud
            required = ["exp", self._jwt.subject_claim]
            if self._jwt.max_age is not None:
                required.append("iat")
            self._required = required

    # -- construction ---------------------------------------------------------------

    @classmethod
    def from_config(cls, config: GatewayConfig, env: Mapping[str, str] | None = None) -> Authenticator:
        """Read the secret and key files the auth config names; ConfigError when one is missing or bad."""
        env = os.environ if env is None else env
        jwt_config = config.auth.jwt
        if jwt_config is None:
            return cls(config.auth)
        src = config.source
        secret: bytes | None = None
        if jwt_config.secret_env:
            value = env.get(jwt_config.secret_env)
            if not value:
                raise ConfigError(
                    src, "$.auth.jwt.secret_env", f"environment variable {jwt_config.secret_env} is not set"
                )
            secret = value.encode("utf-8")
            if len(secret) < MIN_HMAC_SECRET_BYTES:
                raise ConfigError(
                    src,
                    "$.auth.jwt.secret_env",
                    f"the secret in {jwt_config.secret_env} must be at least {MIN_HMAC_SECRET_BYTES} bytes",
                )
        public_key = None
        if jwt_config.public_key_file:
            public_key = _load_public_key(config, jwt_config.public_key_file)
        jwks: dict[str, JwkEntry] = {}
        if jwt_config.jwks_file:
            path = config.resolve_path(jwt_config.jwks_file)
            try:
                jwks = _parse_jwks(path.read_bytes())
            except OSError as exc:
                raise ConfigError(
                    src, "$.auth.jwt.jwks_file", f"cannot read {path}: {exc.strerror}"
                ) from None
            except ValueError as exc:
                raise ConfigError(src, "$.auth.jwt.jwks_file", str(exc)) from None
        return cls(config.auth, hmac_secret=secret, public_key=public_key, jwks=jwks)

    # -- lifecycle --------------------------------------------------------------------

    async def start(self, startup_timeout: float = 5.0) -> None:
        """Fetch the JWKS (when ``jwks_url`` is set) and keep it fresh in the background."""
        if self._jwt is None or not self._jwt.jwks_url:
            return
        self._fetch_wanted = asyncio.Event()
        try:
            async with asyncio.timeout(startup_timeout):
                await self._fetch_jwks()
        except (TimeoutError, httpx.HTTPError, ValueError) as exc:
            # Serving still starts: API keys work, and tokens are accepted once a fetch succeeds.
            log.warning("could not fetch the JWKS at startup", extra={"error": type(exc).__name__})
        self._refresh_task = asyncio.create_task(self._refresh_loop(), name="prism-jwks-refresh")

    async def stop(self) -> None:
        """Stop refreshing the JWKS."""
        task, self._refresh_task = self._refresh_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _fetch_jwks(self) -> None:
        assert self._jwt is not None and self._jwt.jwks_url
        self._last_fetch = time.monotonic()
        async with httpx.AsyncClient(timeout=self._jwt.jwks_timeout) as client:
            response = await client.get(self._jwt.jwks_url)
            response.raise_for_status()
        self._jwks = _parse_jwks(response.content)
        # Keys may have been withdrawn: verify every token again against the new set.
        self._verified.clear()

    async def _refresh_loop(self) -> None:
        assert self._jwt is not None and self._fetch_wanted is not None
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._jwt.jwks_refresh_interval):
                    await self._fetch_wanted.wait()
            self._fetch_wanted.clear()
            try:
                await self._fetch_jwks()
            except (httpx.HTTPError, ValueError) as exc:
                log.warning("could not refresh the JWKS", extra={"error": type(exc).__name__})

    # -- authentication ---------------------------------------------------------------

    def authenticate_request(
        self,
        raw_headers: Iterable[tuple[bytes, bytes]],
        query_token: str | None = None,
        *,
        query_token_allowed: bool = False,
        peer_cert: Mapping[str, Any] | None = None,
    ) -> Principal:
        """The caller named by a request's credentials, read by :func:`read_credentials`.

        ``raw_headers`` is the ASGI header list and ``query_token`` the value of a
        ``?token=`` query parameter (None when there is none), accepted only where
        ``query_token_allowed``. ``peer_cert`` is the client certificate the TLS
        handshake verified (see :func:`peer_certificate`). Without credentials the
        caller is anonymous when no auth is configured, and refused (401) otherwise.
        """
        if not self.enabled:
            return self._anonymous
        credentials = read_credentials(raw_headers, query_token, query_token_allowed=query_token_allowed)
        if peer_cert is not None and self._mtls is not None:
            return self._mtls.authenticate(peer_cert, any(c is not None for c in credentials)) or (
                self.authenticate(*credentials)
            )
        return self.authenticate(*credentials)

    def authenticate_scope(self, scope: Mapping[str, Any]) -> Principal:
        """The caller of an ASGI request (no ``?token=`` accepted): credential headers, client certificate."""
        return self.authenticate_request(
            scope["headers"], query_token(scope.get("query_string", b"")), peer_cert=peer_certificate(scope)
        )

    @property
    def uses_client_certs(self) -> bool:
        """True when ``auth.mtls`` maps client certificates to principals."""
        return self._mtls is not None

    def authenticate_headers(self, headers: Mapping[str, str], query_token: str | None = None) -> Principal:
        """The caller named by ``X-API-Key`` or ``Authorization: Bearer``, or by ``query_token``.

        For routes that authenticate on their own. Starlette's ``Headers`` keep repeated
        headers, which are refused as in :meth:`authenticate_request`; plain dicts are
        looked up in lower case. Passing ``query_token`` accepts it (when no header
        credential is sent too). Without credentials the caller is anonymous when no
        auth is configured, and refused (401) otherwise.
        """
        raw: Any = getattr(headers, "raw", None)
        if raw is None:
            raw = [
                (name.lower().encode("latin-1"), value.encode("latin-1"))
                for name, value in headers.items()
                if name.lower() in ("x-api-key", "authorization")
            ]
        return self.authenticate_request(raw, query_token, query_token_allowed=query_token is not None)

    def authenticate(
        self, api_key: str | None, authorization: str | None, query_token: str | None = None
    ) -> Principal:
        """The caller named by the values of ``X-API-Key`` and ``Authorization`` (None when absent)."""
        if not self.enabled:
            return self._anonymous
        for value in (api_key, authorization, query_token):
            if value is not None and len(value) > MAX_CREDENTIAL_CHARS:
                raise _unauthorized(
                    "INVALID_CREDENTIALS", f"a credential is longer than {MAX_CREDENTIAL_CHARS} characters"
                )
        if api_key is not None and authorization is not None:
            raise _unauthorized("AMBIGUOUS_CREDENTIALS", "send either X-API-Key or Authorization, not both")
        if api_key is not None:
            return self._api_key(api_key)
        token = query_token
        if authorization is not None:
            scheme, _, token = authorization.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise _unauthorized(
                    "INVALID_CREDENTIALS", "the Authorization header must be 'Bearer <token>'"
                )
            token = token.strip()
        if not token:
            raise _unauthorized("MISSING_CREDENTIALS", "send an API key (X-API-Key) or a bearer token")
        if self._jwt is not None and token.count(".") == 2:
            return self._jwt_principal(token)
        return self._api_key(token)

    def _jwt_principal(self, token: str) -> Principal:
        """A verified token's principal, from the cache while the token is unexpired."""
        cached = self._verified.get(token)
        now = time.time()
        if cached is not None:
            principal, expires = cached
            if now < expires:
                return principal
            del self._verified[token]
        principal, expires = self._verify_jwt(token)
        if len(self._verified) >= JWT_CACHE_SIZE:
            # Drop the oldest entry (dicts keep insertion order).
            del self._verified[next(iter(self._verified))]
        self._verified[token] = (principal, expires)
        return principal

    def _api_key(self, key: str) -> Principal:
        # Valid keys only are remembered, so the map holds at most one entry per configured key.
        principal = self._known_keys.get(key)
        if principal is not None:
            return principal
        principal = self._keys.get(hash_api_key(key))
        if principal is None:
            raise _unauthorized("INVALID_CREDENTIALS", "the API key is not valid")
        if len(self._known_keys) < len(self._keys):
            self._known_keys[key] = principal
        return principal

    def _verify_jwt(self, token: str) -> tuple[Principal, float]:
        assert self._jwt is not None
        cfg = self._jwt
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise _unauthorized("INVALID_TOKEN", "the bearer token is not a well-formed JWT") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self._allowed:
            raise _unauthorized("ALGORITHM_NOT_ALLOWED", f"JWT algorithm {alg!r} is not accepted")
        key = self._key_for(alg, header.get("kid"))
        options: dict[str, Any] = {"require": self._required, "verify_aud": self._audience is not None}
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=self._audience,
                issuer=cfg.issuer,
                leeway=cfg.clock_skew,
                options=options,  # type: ignore[arg-type]
            )
        except jwt.ExpiredSignatureError:
            raise _unauthorized("TOKEN_EXPIRED", "the token has expired") from None
        except jwt.ImmatureSignatureError:
            raise _unauthorized("TOKEN_NOT_YET_VALID", "the token is not valid yet (nbf or iat)") from None
        except jwt.InvalidAudienceError:
            raise _unauthorized("INVALID_AUDIENCE", "the token is not meant for this service") from None
        except jwt.InvalidIssuerError:
            raise _unauthorized(
                "INVALID_ISSUER", "the token comes from an issuer this service does not trust"
            ) from None
        except jwt.MissingRequiredClaimError as exc:
            raise _unauthorized("INVALID_TOKEN", f"the token lacks the {exc.claim!r} claim") from None
        except (jwt.PyJWTError, ValueError, TypeError):
            raise _unauthorized("INVALID_TOKEN", "the token signature or claims are not valid") from None
        expires = float(claims["exp"]) + cfg.clock_skew
        if cfg.max_age is not None:
            too_old = float(claims["iat"]) + cfg.max_age + cfg.clock_skew
            if time.time() > too_old:
                raise _unauthorized("TOKEN_EXPIRED", "the token is older than the accepted maximum age")
            expires = min(expires, too_old)
        return self._principal(claims, cfg), expires

    def _key_for(self, alg: str, kid: object) -> Any:
        if alg.startswith("HS"):
            if self._secret is None:
                raise _unauthorized("ALGORITHM_NOT_ALLOWED", f"JWT algorithm {alg!r} is not accepted")
            return self._secret
        family = alg[:2]
        entry = self._jwks.get(kid) if isinstance(kid, str) else None
        if entry is None and kid is None and len(self._jwks) == 1:
            (entry,) = self._jwks.values()
        if entry is not None:
            if entry.jwk.key_type != _JWK_FAMILIES.get(family) or entry.alg not in (None, alg):
                raise _unauthorized("INVALID_TOKEN", f"the key {kid!r} is not a key for {alg}")
            return entry.jwk.key
        if self._public_key is not None and isinstance(self._public_key, _KEY_FAMILIES.get(family, ())):
            return self._public_key
        self._want_jwks_refresh()
        raise _unauthorized("UNKNOWN_KEY", "no configured key verifies this token (unknown kid or key type)")

    def _want_jwks_refresh(self) -> None:
        if self._fetch_wanted is not None and time.monotonic() - self._last_fetch > JWKS_MIN_REFRESH_SECONDS:
            self._fetch_wanted.set()

    @staticmethod
    def _principal(claims: Mapping[str, Any], cfg: JwtConfig) -> Principal:
        subject = claims.get(cfg.subject_claim)
        if not isinstance(subject, str) or not subject:
            raise _unauthorized(
                "INVALID_TOKEN", f"the {cfg.subject_claim!r} claim must be a non-empty string"
            )
        tenant = claims.get(cfg.tenant_claim)
        if tenant is not None and (not isinstance(tenant, str) or not TOKEN_NAME.match(tenant)):
            raise _unauthorized("INVALID_TOKEN", f"the {cfg.tenant_claim!r} claim is not a valid tenant id")
        raw_roles = claims.get(cfg.roles_claim, [])
        if isinstance(raw_roles, str):
            raw_roles = raw_roles.split()
        if not isinstance(raw_roles, list) or not all(isinstance(r, str) for r in raw_roles):
            raise _unauthorized("INVALID_TOKEN", f"the {cfg.roles_claim!r} claim must be a list of strings")
        issuer = claims.get("iss")
        if issuer is not None and not isinstance(issuer, str):
            raise _unauthorized("INVALID_TOKEN", "the 'iss' claim must be a string")
        return Principal(subject, tenant, frozenset(raw_roles), "jwt", issuer)


# -- mutual TLS -------------------------------------------------------------------------


def peer_certificate(scope: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The verified client certificate of an ASGI request (None without TLS or a certificate).

    ``prism serve``'s transport puts it in the ASGI TLS extension as ``peer_cert``, in
    the form :meth:`ssl.SSLSocket.getpeercert` returns; only a certificate that passed
    the handshake's verification against ``server.tls.client_ca_file`` is there.
    """
    extensions = scope.get("extensions")
    if not extensions:
        return None
    tls = extensions.get("tls")
    if not tls:
        return None
    cert = tls.get("peer_cert")
    return cert if cert else None


def certificate_names(cert: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The names a certificate can be mapped by: ``(subject_cn|san_dns|san_uri|san_email, value)``."""
    names: list[tuple[str, str]] = []
    for rdn in cert.get("subject", ()):
        for attr, value in rdn:
            if attr == "commonName":
                names.append(("subject_cn", value))
    fields = {"DNS": "san_dns", "URI": "san_uri", "email": "san_email"}
    for kind, value in cert.get("subjectAltName", ()):
        field = fields.get(kind)
        if field is not None:
            names.append((field, value))
    return names


class ClientCertificates:
    """``auth.mtls``: verified client certificates mapped to principals of kind ``mtls``.

    A mapped certificate is the request's credential, so a request that also sends an
    API key or a token is refused (AMBIGUOUS_CREDENTIALS), as two headers would be. A
    certificate that maps to nothing is no credential: the request needs another one,
    and without one it is refused (UNKNOWN_CLIENT_CERTIFICATE).
    """

    def __init__(self, entries: Iterable[MtlsIdentityConfig]) -> None:
        self._by_name = {
            entry.match: Principal(entry.name, entry.tenant, frozenset(entry.roles), "mtls")
            for entry in entries
        }

    def authenticate(self, cert: Mapping[str, Any], other_credential: bool) -> Principal | None:
        """The certificate's principal; None when it maps to nothing and another credential is sent."""
        names = certificate_names(cert)
        found = {self._by_name[name] for name in names if name in self._by_name}
        if len(found) > 1:
            raise _unauthorized(
                "AMBIGUOUS_CREDENTIALS", "the client certificate matches more than one auth.mtls identity"
            )
        if found:
            if other_credential:
                raise _unauthorized(
                    "AMBIGUOUS_CREDENTIALS",
                    "the client certificate is a credential already; send no API key or token with it",
                )
            return found.pop()
        if other_credential:
            return None
        shown = ", ".join(f"{field}={value}" for field, value in names) or "no subject CN or SAN"
        raise _unauthorized(
            "UNKNOWN_CLIENT_CERTIFICATE",
            f"the client certificate ({shown}) is not mapped to an identity, and no other credential is sent",
        )


def _load_public_key(config: GatewayConfig, name: str) -> Any:
    path = config.resolve_path(name)
    at = "$.auth.jwt.public_key_file"
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(config.source, at, f"cannot read {path}: {exc.strerror}") from None
    try:
        if b"BEGIN CERTIFICATE" in data:
            return x509.load_pem_x509_certificate(data).public_key()
        return load_pem_public_key(data)
    except ValueError:
        raise ConfigError(config.source, at, f"{path} is not a PEM public key or certificate") from None


@dataclass(frozen=True, slots=True)
class JwkEntry:
    """A public key from a JWK set, and the algorithm it is pinned to (when the set says so)."""

    jwk: jwt.PyJWK
    alg: str | None


def _parse_jwks(data: bytes) -> dict[str, JwkEntry]:
    try:
        raw = json.loads(data)
        entries = raw["keys"]
        if not isinstance(entries, list):
            raise ValueError("`keys` must be a list")
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise ValueError(f"not a JWK set: {exc}") from None
    keys: dict[str, JwkEntry] = {}
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or entry.get("kty") == "oct":
            # Symmetric keys never come from a key set: the HS* secret is only read from the env.
            continue
        if entry.get("use", "sig") != "sig":
            # An encryption key ("use": "enc") never verifies a signature (RFC 7517 section 4.2).
            continue
        try:
            jwk = jwt.PyJWK(entry)
        except jwt.PyJWTError:
            log.warning("skipping an unusable key of the JWK set", extra={"kid": entry.get("kid")})
            continue
        alg = entry.get("alg")
        keys[jwk.key_id or f"#{index}"] = JwkEntry(jwk, alg if isinstance(alg, str) else None)
    if not keys:
        raise ValueError("the JWK set holds no public keys")
    return keys
