"""The auth matrix: API keys, JWT claims and algorithms, and role-based policy."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from gateway_helpers import (
    EC_KEY,
    ENV,
    RSA_KEY,
    bearer,
    client_for,
    full_config,
    headers,
    pem_public,
    running,
    token,
)

from prism.gateway import create_app
from prism.gateway.auth import Authenticator, AuthError
from prism.gateway.config import parse_config


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(full_config(tmp_path)) as c:
        yield c


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def handmade(header: dict[str, Any], claims: dict[str, Any], sign: Any = None) -> str:
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
    signature = b64url(sign(signing_input.encode())) if sign else ""
    return f"{signing_input}.{signature}"


def claims_of(tok: str) -> dict[str, Any]:
    return dict(jwt.decode(tok, options={"verify_signature": False}))


async def status_and_code(client: httpx.AsyncClient, hdrs: dict[str, str]) -> tuple[int, str | None]:
    r = await client.get("/v1/kv/plain/some-key", headers=hdrs)
    return r.status_code, (r.json().get("code") if r.status_code >= 400 else None)


async def test_missing_credentials_is_401_with_challenge(client: httpx.AsyncClient) -> None:
    r = await client.get("/v1/kv/plain/k")
    assert r.status_code == 401
    assert r.json()["code"] == "MISSING_CREDENTIALS"
    assert r.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    ("hdrs", "expected"),
    [
        ({"X-API-Key": "key-writer"}, (404, "KEY_NOT_FOUND")),
        ({"Authorization": "Bearer key-writer"}, (404, "KEY_NOT_FOUND")),
        ({"authorization": "bearer key-writer"}, (404, "KEY_NOT_FOUND")),
        ({"X-API-Key": "key-wrong"}, (401, "INVALID_CREDENTIALS")),
        ({"Authorization": "Basic a2V5LXdyaXRlcjo="}, (401, "INVALID_CREDENTIALS")),
        ({"Authorization": "Bearer "}, (401, "INVALID_CREDENTIALS")),
        ({"X-API-Key": "key-writer", "Authorization": "Bearer key-writer"}, (401, "AMBIGUOUS_CREDENTIALS")),
    ],
)
async def test_api_keys(client: httpx.AsyncClient, hdrs: dict[str, str], expected: tuple[int, str]) -> None:
    assert await status_and_code(client, hdrs) == expected


async def test_identity_never_comes_from_query_or_body(client: httpx.AsyncClient) -> None:
    r = await client.get("/v1/kv/plain/k", params={"api_key": "key-writer", "token": "key-writer"})
    assert r.status_code == 401
    r = await client.post("/v1/kv/plain/_bulk/get", json={"keys": ["k"], "api_key": "key-writer"})
    assert r.status_code == 401


def forged_rs256() -> str:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return token("RS256", key=other)


def tampered() -> str:
    head, _, sig = token("RS256", roles=["reader"]).split(".")
    claims = {**claims_of(token("RS256")), "roles": ["admin"]}
    return f"{head}.{b64url(json.dumps(claims).encode())}.{sig}"


def alg_none() -> str:
    return handmade({"alg": "none", "typ": "JWT"}, claims_of(token("RS256")))


def alg_none_capitalised() -> str:
    return handmade({"alg": "None", "typ": "JWT"}, claims_of(token("RS256")))


def hs_signed_with_public_key() -> str:
    # The classic confusion attack: HS256 keyed with the RSA public key text the server holds.
    secret = pem_public(RSA_KEY)
    return handmade(
        {"alg": "HS256", "typ": "JWT"},
        claims_of(token("RS256")),
        lambda data: hmac.new(secret, data, hashlib.sha256).digest(),
    )


def rs_header_hs_signature() -> str:
    return handmade(
        {"alg": "RS256", "typ": "JWT"},
        claims_of(token("RS256")),
        lambda data: hmac.new(b"s3cret-for-tests-only-0123456789abcdef", data, hashlib.sha256).digest(),
    )


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda: token("RS256"), (404, "KEY_NOT_FOUND")),
        (lambda: token("HS256"), (404, "KEY_NOT_FOUND")),
        (lambda: token("RS256", exp_in=-2), (404, "KEY_NOT_FOUND")),  # within the 5 s skew
        (lambda: token("RS256", exp_in=-60), (401, "TOKEN_EXPIRED")),
        (lambda: token("HS256", exp_in=-60), (401, "TOKEN_EXPIRED")),
        (lambda: token("RS256", nbf_in=60), (401, "TOKEN_NOT_YET_VALID")),
        (lambda: token("RS256", iat_in=60), (401, "TOKEN_NOT_YET_VALID")),
        (forged_rs256, (401, "INVALID_TOKEN")),
        (tampered, (401, "INVALID_TOKEN")),
        (lambda: token("RS256", aud="someone-else"), (401, "INVALID_AUDIENCE")),
        (lambda: token("RS256", aud=None), (401, "INVALID_TOKEN")),
        (lambda: token("RS256", iss="https://evil.example"), (401, "INVALID_ISSUER")),
        (lambda: token("RS256", drop=("exp",)), (401, "INVALID_TOKEN")),
        (lambda: token("RS256", drop=("sub",)), (401, "INVALID_TOKEN")),
        (lambda: token("RS256", tenant="../other"), (401, "INVALID_TOKEN")),
        (alg_none, (401, "ALGORITHM_NOT_ALLOWED")),
        (alg_none_capitalised, (401, "ALGORITHM_NOT_ALLOWED")),
        (lambda: token("ES256"), (401, "ALGORITHM_NOT_ALLOWED")),
        (lambda: token("RS512"), (401, "ALGORITHM_NOT_ALLOWED")),
        (hs_signed_with_public_key, (401, "INVALID_TOKEN")),
        (rs_header_hs_signature, (401, "INVALID_TOKEN")),
        (lambda: "not.a.jwt", (401, "INVALID_TOKEN")),
    ],
    ids=lambda v: getattr(v, "__name__", str(v)),
)
async def test_jwt_matrix(client: httpx.AsyncClient, make: Any, expected: tuple[int, str]) -> None:
    assert await status_and_code(client, bearer(make())) == expected


async def test_jwt_claims_become_the_principal(client: httpx.AsyncClient) -> None:
    # roles as a space-separated string (OAuth "scope" style) work too
    tok = jwt.encode({**claims_of(token("RS256")), "roles": "reader writer"}, RSA_KEY, algorithm="RS256")
    assert (await client.put("/v1/kv/orders/mine", content=b"x", headers=bearer(tok))).status_code == 201
    reader = token("RS256", roles=["reader"])
    r = await client.put("/v1/kv/plain/k", content=b"x", headers=bearer(reader))
    assert r.status_code == 403 and r.json()["code"] == "FORBIDDEN"
    assert (await client.get("/v1/kv/orders/mine", headers=bearer(reader))).status_code == 200


@pytest.mark.parametrize(
    ("who", "method", "expected"),
    [
        ("reader", "GET", 404),
        ("reader", "PUT", 403),
        ("reader", "DELETE", 403),
        ("writer", "PUT", 201),
        ("admin", "PUT", 201),
        ("nobody", "GET", 403),
        ("nobody", "PUT", 403),
    ],
)
async def test_role_policy(client: httpx.AsyncClient, who: str, method: str, expected: int) -> None:
    r = await client.request(
        method, "/v1/kv/plain/policy", content=b"x" if method == "PUT" else None, headers=headers(who)
    )
    assert r.status_code == expected


async def test_custom_access_lists(tmp_path: Path) -> None:
    config = full_config(tmp_path)
    config["namespaces"] = [
        {"name": "locked", "access": {"read": ["auditor"], "write": ["writer"], "admin": []}}
    ]
    config["auth"]["api_keys"].append(
        {"name": "auditor", "sha256": hashlib.sha256(b"key-auditor").hexdigest(), "roles": ["auditor"]}
    )
    async with client_for(config) as c:
        assert (await c.put("/v1/kv/locked/k", content=b"x", headers=headers("writer"))).status_code == 201
        assert (await c.get("/v1/kv/locked/k", headers=headers("writer"))).status_code == 403
        assert (await c.get("/v1/kv/locked/k", headers={"X-API-Key": "key-auditor"})).status_code == 200
        assert (await c.get("/v1/kv/locked/k", headers=headers("admin"))).status_code == 403


async def test_jwks_file_with_key_ids(tmp_path: Path) -> None:
    other_ec = ec.generate_private_key(ec.SECP256R1())
    jwks = {
        "keys": [
            {
                **json.loads(jwt.algorithms.ECAlgorithm.to_jwk(EC_KEY.public_key())),
                "kid": "ec-1",
                "alg": "ES256",
            },
            {**json.loads(jwt.algorithms.ECAlgorithm.to_jwk(other_ec.public_key())), "kid": "ec-2"},
            {"kty": "oct", "k": b64url(b"symmetric keys are ignored"), "kid": "oct-1"},
        ]
    }
    (tmp_path / "jwks.json").write_text(json.dumps(jwks))
    config = full_config(tmp_path)
    config["auth"]["jwt"] = {"algorithms": ["ES256"], "jwks_file": "jwks.json", "audience": "prism"}
    # Relative paths resolve from the config file's directory.
    cfg = parse_config(config, source=str(tmp_path / "prism.yaml"), base_dir=str(tmp_path), env=ENV)
    async with running(create_app(cfg, env=ENV)) as c:
        ok = token("ES256", key=EC_KEY, iss=None, headers_={"kid": "ec-1"})
        assert await status_and_code(c, bearer(ok)) == (404, "KEY_NOT_FOUND")
        second = token("ES256", key=other_ec, iss=None, headers_={"kid": "ec-2"})
        assert await status_and_code(c, bearer(second)) == (404, "KEY_NOT_FOUND")
        wrong_kid = token("ES256", key=EC_KEY, iss=None, headers_={"kid": "ec-2"})
        assert await status_and_code(c, bearer(wrong_kid)) == (401, "INVALID_TOKEN")
        unknown = token("ES256", key=EC_KEY, iss=None, headers_={"kid": "nope"})
        assert await status_and_code(c, bearer(unknown)) == (401, "UNKNOWN_KEY")
        oct_kid = handmade(
            {"alg": "HS256", "kid": "oct-1"},
            claims_of(ok),
            lambda d: hmac.new(b"symmetric keys are ignored", d, hashlib.sha256).digest(),
        )
        assert await status_and_code(c, bearer(oct_kid)) == (401, "ALGORITHM_NOT_ALLOWED")


@pytest.fixture
def jwks_server() -> Iterator[str]:
    body = json.dumps(
        {
            "keys": [
                {
                    **json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(RSA_KEY.public_key())),
                    "kid": "rsa-1",
                    "use": "sig",
                }
            ]
        }
    ).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/.well-known/jwks.json"
    server.shutdown()
    server.server_close()


async def test_jwks_url_is_fetched_at_startup(tmp_path: Path, jwks_server: str) -> None:
    config = full_config(tmp_path)
    config["auth"]["jwt"] = {
        "algorithms": ["RS256"],
        "jwks_url": jwks_server,
        "issuer": "https://id.example.test",
        "audience": "prism",
    }
    async with client_for(config) as c:
        ok = token("RS256", headers_={"kid": "rsa-1"})
        assert await status_and_code(c, bearer(ok)) == (404, "KEY_NOT_FOUND")
        assert await status_and_code(c, bearer(forged_rs256())) == (401, "INVALID_TOKEN")
        unknown = token("RS256", headers_={"kid": "rsa-9"})
        assert await status_and_code(c, bearer(unknown)) == (401, "UNKNOWN_KEY")


def test_authenticator_accepts_plain_dicts_and_query_tokens(tmp_path: Path) -> None:
    auth = Authenticator.from_config(parse_config(full_config(tmp_path), env=ENV), ENV)
    principal = auth.authenticate_headers({"x-api-key": "key-acme-writer"})
    assert (principal.subject, principal.tenant, principal.kind) == ("acme", "acme", "api_key")
    assert principal.roles == frozenset({"writer"})
    principal = auth.authenticate_headers({}, query_token=token("RS256", sub="svc", tenant="globex"))
    assert (principal.subject, principal.tenant, principal.kind) == ("svc", "globex", "jwt")
    with pytest.raises(AuthError, match="API key") as info:
        auth.authenticate_headers({}, query_token="wrong")
    assert (info.value.status, info.value.code) == (401, "INVALID_CREDENTIALS")


def signed_claims(**changes: Any) -> str:
    """An RS256 token with the usual claims, some replaced (None removes a claim)."""
    claims = {**claims_of(token("RS256")), **changes}
    payload = json.dumps({k: v for k, v in claims.items() if v is not None}).encode()
    # Signed as raw JWS so that claims PyJWT's encoder would refuse can be sent.
    return jwt.PyJWS().encode(payload, RSA_KEY, algorithm="RS256", headers={"typ": "JWT"})


@pytest.mark.parametrize(
    "changes",
    [
        {"tenant_id": 42},
        {"tenant_id": ["acme"]},
        {"tenant_id": "acme\n"},
        {"tenant_id": ""},
        {"tenant_id": "acme~t~globex"},
        {"roles": {"admin": True}},
        {"roles": ["writer", 7]},
        {"roles": 1},
        {"sub": 42},
        {"sub": ""},
        {"sub": None},
        {"exp": "soon"},
        {"nbf": "later"},
        {"iat": "now"},
        {"aud": ["other"]},
        {"iss": ["https://id.example.test"]},
    ],
    ids=repr,
)
async def test_unexpected_claim_types_are_401(client: httpx.AsyncClient, changes: dict[str, Any]) -> None:
    status, code = await status_and_code(client, bearer(signed_claims(**changes)))
    assert status == 401, (changes, code)
    assert code in {"INVALID_TOKEN", "INVALID_AUDIENCE", "INVALID_ISSUER", "TOKEN_NOT_YET_VALID"}


async def test_huge_credentials_are_refused_unparsed(client: httpx.AsyncClient) -> None:
    # Validly signed, but far over any real token's size.
    huge = signed_claims(padding="x" * 100_000)
    assert await status_and_code(client, bearer(huge)) == (401, "INVALID_CREDENTIALS")
    r = await client.put("/v1/kv/plain/k", content=b"x", headers=bearer(huge))
    assert r.status_code == 401 and "x" * 100 not in r.text
    assert await status_and_code(client, {"X-API-Key": "k" * 100_000}) == (401, "INVALID_CREDENTIALS")


ALL_ROUTES = [
    ("GET", "/v1/kv/plain/k", None),
    ("HEAD", "/v1/kv/plain/k", None),
    ("PUT", "/v1/kv/plain/k", b"x"),
    ("DELETE", "/v1/kv/plain/k", None),
    ("GET", "/v1/kv/plain", None),
    ("HEAD", "/v1/kv/plain", None),
    ("POST", "/v1/kv/plain/_bulk/get", b'{"keys": ["k"]}'),
    ("POST", "/v1/kv/plain/_bulk/put", b'{"items": [{"key": "k", "value": "eA=="}]}'),
    ("POST", "/v1/kv/plain/_bulk/delete", b'{"items": [{"key": "k"}]}'),
    ("POST", "/v1/kv/plain/_transact", b'{"ops": [{"op": "delete", "key": "k"}]}'),
    ("GET", "/v1/records/plain/r", None),
    ("PUT", "/v1/records/plain/r", b'{"items": [{"key": "i", "value": "eA=="}]}'),
    ("DELETE", "/v1/records/plain/r", None),
    ("GET", "/v1/namespaces", None),
    ("GET", "/v1/namespaces/plain", None),
]
READS = {("GET", "/v1/kv/plain/k"), ("HEAD", "/v1/kv/plain/k"), ("GET", "/v1/kv/plain")}
READS |= {("HEAD", "/v1/kv/plain"), ("POST", "/v1/kv/plain/_bulk/get"), ("GET", "/v1/records/plain/r")}


@pytest.mark.parametrize(("method", "path", "body"), ALL_ROUTES)
async def test_every_route_needs_a_verified_credential(
    client: httpx.AsyncClient, method: str, path: str, body: bytes | None
) -> None:
    refused: list[dict[str, str]] = [
        {},
        {"X-API-Key": "key-wrong"},
        bearer(token("RS256", exp_in=-60)),
        bearer(alg_none()),
        bearer(token("RS256", aud="someone-else")),
        bearer(forged_rs256()),
        # The same credential header twice is ambiguous, even when each copy is valid.
        {"X-API-Key": "key-writer", "x-api-key": "key-admin"},
    ]
    for hdrs in refused:
        raw = [(k.encode(), v.encode()) for k, v in hdrs.items()]
        r = await client.request(method, path, content=body, headers=raw)
        assert r.status_code == 401, (method, path, hdrs, r.status_code)
        assert r.headers["www-authenticate"].startswith("Bearer")
    # Identity never comes from the query string or the body.
    r = await client.request(
        method, path, content=body, params={"token": "key-writer", "api_key": "key-admin"}
    )
    assert r.status_code == 401


@pytest.mark.parametrize(("method", "path", "body"), [r for r in ALL_ROUTES if "/namespaces" not in r[1]])
async def test_each_data_route_enforces_its_action(
    client: httpx.AsyncClient, method: str, path: str, body: bytes | None
) -> None:
    is_read = (method, path) in READS
    # The default access lists: read [reader, writer, admin], write [writer, admin], admin [admin].
    for who, allowed in (("reader", is_read), ("writer", True), ("admin", True), ("nobody", False)):
        r = await client.request(method, path, content=body, headers=headers(who))
        if allowed:
            assert r.status_code < 400 or r.status_code == 404, (who, method, path, r.status_code)
        else:
            assert r.status_code == 403, (who, method, path, r.status_code)
            if method != "HEAD":
                assert r.json()["code"] == "FORBIDDEN"


async def test_jwks_encryption_keys_never_verify_signatures(tmp_path: Path) -> None:
    enc_key = ec.generate_private_key(ec.SECP256R1())
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(enc_key.public_key()))
    sig = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(EC_KEY.public_key()))
    (tmp_path / "jwks.json").write_text(
        json.dumps({"keys": [{**sig, "kid": "sig-1", "use": "sig"}, {**jwk, "kid": "enc-1", "use": "enc"}]})
    )
    config = full_config(tmp_path)
    config["auth"]["jwt"] = {"algorithms": ["ES256"], "jwks_file": "jwks.json", "audience": "prism"}
    cfg = parse_config(config, source=str(tmp_path / "prism.yaml"), base_dir=str(tmp_path), env=ENV)
    async with running(create_app(cfg, env=ENV)) as c:
        ok = token("ES256", key=EC_KEY, iss=None, headers_={"kid": "sig-1"})
        assert await status_and_code(c, bearer(ok)) == (404, "KEY_NOT_FOUND")
        enc = token("ES256", key=enc_key, iss=None, headers_={"kid": "enc-1"})
        assert await status_and_code(c, bearer(enc)) == (401, "UNKNOWN_KEY")


def test_jwt_principal_never_takes_claims_it_cannot_trust(tmp_path: Path) -> None:
    auth = Authenticator.from_config(parse_config(full_config(tmp_path), env=ENV), ENV)
    principal = auth.authenticate(None, f"Bearer {signed_claims(roles='reader writer', tenant_id=None)}")
    assert (principal.tenant, principal.roles) == (None, frozenset({"reader", "writer"}))
    raw = [(b"authorization", b"Bearer key-writer"), (b"authorization", b"Bearer key-admin")]
    with pytest.raises(AuthError) as info:
        auth.authenticate_request(raw)
    assert (info.value.status, info.value.code) == (401, "AMBIGUOUS_CREDENTIALS")
