"""The console's sign-in, sessions, settings and scoping, in-process (no browser needed)."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from prism.errors import ConfigError
from prism.gateway.app import create_app
from prism.gateway.auth import hash_api_key
from prism.gateway.config import default_config, parse_config

SECRET = "console-test-secret-0123456789abcdef0123"
ENV = {"CONSOLE_TEST_JWT_SECRET": SECRET}
KEYS = {
    "admin": ("k-admin", ["admin"], None),
    "acme": ("k-acme", ["admin"], "acme"),
    "globex": ("k-globex", ["admin"], "globex"),
    "reader": ("k-reader", ["reader"], None),
}


def cfg(tmp_path: Path, **extra: Any) -> dict[str, Any]:
    return {
        "stores": {"main": "memory://"},
        "namespaces": [
            {"name": "plain"},
            {"name": "carts", "tenant_scoped": True},
        ],
        "auth": {
            "api_keys": [
                {"name": n, "sha256": hash_api_key(k), "roles": r, **({"tenant": t} if t else {})}
                for n, (k, r, t) in KEYS.items()
            ],
            "jwt": {"algorithms": ["HS256"], "secret_env": "CONSOLE_TEST_JWT_SECRET"},
        },
        "audit": {"sink": "file", "path": str(tmp_path / "audit.jsonl"), "flush_interval": 0.02},
        "server": {"access_log": False},
        "admin": {"enabled": True},
        **extra,
    }


@contextlib.asynccontextmanager
async def client(config: dict[str, Any]) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(parse_config(config, source="test.yaml", env=ENV), env=ENV)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as c:
            yield c


async def sign_in(c: httpx.AsyncClient, credential: str, kind: str = "api_key") -> httpx.Response:
    form = await c.get("/admin/login")
    token = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert token is not None
    return await c.post(
        "/admin/login",
        data={"csrf": token.group(1), "kind": kind, "credential": credential, "next": "/admin/"},
    )


def csrf_of(page: httpx.Response) -> str:
    found = re.search(r'<meta name="csrf-token" content="([^"]+)">', page.text)
    assert found is not None
    return found.group(1)


async def test_the_console_is_off_unless_enabled(tmp_path: Path) -> None:
    config = cfg(tmp_path)
    del config["admin"]
    async with client(config) as c:
        assert (await c.get("/admin/")).status_code == 404
        assert (await c.get("/admin/login")).status_code == 404
    async with client(cfg(tmp_path)) as c:
        r = await c.get("/admin/")
        assert r.status_code == 303 and r.headers["location"].startswith("/admin/login")


def test_the_zero_config_demo_turns_it_on() -> None:
    assert default_config().admin.enabled


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("session_ttl", 0),
        ("max_sessions", 0),
        ("sample_interval", -1),
        ("page_size", 5000),
        ("max_sessions_per_principal", 0),
        ("login_rate", 0),
        ("login_burst", 0),
        ("bogus", 1),
    ],
)
def test_bad_admin_settings_name_the_field(tmp_path: Path, field: str, value: Any) -> None:
    config = cfg(tmp_path, admin={"enabled": True, field: value})
    with pytest.raises(ConfigError) as caught:
        parse_config(config, source="test.yaml", env=ENV)
    assert f"$.admin.{field}" in str(caught.value) or (
        field == "bogus" and "$.admin: Object contains unknown field `bogus`" in str(caught.value)
    )


async def test_a_session_ends_after_its_ttl(tmp_path: Path) -> None:
    async with client(cfg(tmp_path, admin={"enabled": True, "session_ttl": 0.5})) as c:
        r = await sign_in(c, "k-admin")
        assert r.status_code == 303
        assert "Max-Age=1" in r.headers["set-cookie"] or "Max-Age=0" not in r.headers["set-cookie"]
        page = await c.get("/admin/namespaces")
        assert page.status_code == 200
        csrf = csrf_of(page)
        await asyncio.sleep(0.7)
        assert (await c.get("/admin/namespaces")).status_code == 303
        refused = await c.post("/admin/logout", data={"csrf": csrf})
        assert refused.status_code == 401


async def test_a_jwt_session_ends_when_the_token_expires(tmp_path: Path) -> None:
    token = jwt.encode({"sub": "jo", "roles": ["admin"], "exp": int(time.time()) + 2}, SECRET, "HS256")
    async with client(cfg(tmp_path)) as c:
        r = await sign_in(c, token, "jwt")
        assert r.status_code == 303
        max_age = int(re.search(r"prism_console=[^;]+;.*?Max-Age=(\d+)", r.headers["set-cookie"]).group(1))  # type: ignore[union-attr]
        assert max_age <= 2
        page = await c.get("/admin/namespaces")
        assert page.status_code == 200 and "jo" in page.text
        await asyncio.sleep(2.2)
        assert (await c.get("/admin/namespaces")).status_code == 303


async def test_an_expired_or_forged_token_is_refused(tmp_path: Path) -> None:
    expired = jwt.encode({"sub": "jo", "roles": ["admin"], "exp": int(time.time()) - 120}, SECRET, "HS256")
    forged = jwt.encode({"sub": "jo", "roles": ["admin"]}, "another-secret-0123456789abcdef01234", "HS256")
    async with client(cfg(tmp_path)) as c:
        for token in (expired, forged):
            r = await sign_in(c, token, "jwt")
            assert r.status_code == 401
            assert "prism_console=" not in r.headers.get("set-cookie", "")
            assert token not in r.text


async def test_the_cookie_is_secure_when_the_gateway_serves_tls(tmp_path: Path) -> None:
    tls = {"tls": {"cert_file": str(tmp_path / "cert.pem"), "key_file": str(tmp_path / "key.pem")}}
    async with client(cfg(tmp_path, server={"access_log": False, **tls})) as c:
        cookie = (await sign_in(c, "k-admin")).headers["set-cookie"]
        assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
    async with client(cfg(tmp_path)) as c:
        assert "Secure" not in (await sign_in(c, "k-admin")).headers["set-cookie"]


async def test_the_oldest_session_ends_past_max_sessions(tmp_path: Path) -> None:
    async with client(cfg(tmp_path, admin={"enabled": True, "max_sessions": 2})) as c:
        cookies = []
        for _ in range(3):
            c.cookies.clear()
            await sign_in(c, "k-admin")
            cookies.append(c.cookies.get("prism_console", path="/admin"))
        live = []
        for value in cookies:
            c.cookies.clear()
            c.cookies.set("prism_console", value or "", path="/admin")
            r = await c.get("/admin/namespaces")
            live.append(r.status_code == 200)
        assert live == [False, True, True]


async def test_after_sign_in_only_console_paths_are_followed(tmp_path: Path) -> None:
    async with client(cfg(tmp_path)) as c:
        form = await c.get("/admin/login")
        token = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)  # type: ignore[union-attr]
        for target in ("https://evil.example/", "//evil.example/admin/", "/v1/kv/plain"):
            r = await c.post(
                "/admin/login",
                data={"csrf": token, "kind": "api_key", "credential": "k-admin", "next": target},
            )
            assert r.headers["location"] == "/admin/"
            c.cookies.delete("prism_console", path="/admin")
            form = await c.get("/admin/login")
            token = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)  # type: ignore[union-attr]


async def test_tenants_browse_only_their_own_keys(tmp_path: Path) -> None:
    async with client(cfg(tmp_path)) as c:
        for who in ("acme", "globex"):
            r = await c.put(f"/v1/kv/carts/{who}-cart", content=b"x", headers={"X-API-Key": KEYS[who][0]})
            assert r.status_code == 201
        await sign_in(c, "k-acme")
        page = await c.get("/admin/namespaces/carts/keys")
        assert "acme-cart" in page.text and "globex-cart" not in page.text
        assert "Keys of tenant <strong>acme</strong> only." in page.text
        assert (await c.get("/admin/namespaces/carts/item", params={"key": "globex-cart"})).status_code == 404
        c.cookies.clear()
        await sign_in(c, "k-admin")  # no tenant: the tenant-scoped namespace is not browsable
        listing = await c.get("/admin/namespaces")
        assert "carts" not in listing.text
        assert (await c.get("/admin/namespaces/carts/keys")).status_code == 403


async def test_audit_search_stays_within_the_tenant(tmp_path: Path) -> None:
    async with client(cfg(tmp_path)) as c:
        for who in ("acme", "globex"):
            await c.get(f"/v1/kv/carts/{who}-nothing", headers={"X-API-Key": KEYS[who][0]})
        await asyncio.sleep(0.2)
        await sign_in(c, "k-acme")
        page = await c.get("/admin/audit", params={"namespace": "carts"})
        assert page.status_code == 200
        assert "acme-nothing" in page.text and "globex-nothing" not in page.text
        c.cookies.clear()
        await sign_in(c, "k-admin")
        page = await c.get("/admin/audit", params={"namespace": "carts"})
        assert "acme-nothing" not in page.text  # an admin without tenant sees no tenant's events


async def test_console_actions_are_audited_as_the_signed_in_principal(tmp_path: Path) -> None:
    async with client(cfg(tmp_path)) as c:
        assert (
            await c.put("/v1/kv/plain/gone", content=b"x", headers={"X-API-Key": "k-admin"})
        ).status_code == 201
        await sign_in(c, "k-admin")
        page = await c.get("/admin/namespaces/plain/item", params={"key": "gone"})
        r = await c.post("/admin/namespaces/plain/item/delete", data={"csrf": csrf_of(page), "key": "gone"})
        assert r.status_code == 303
        await asyncio.sleep(0.2)
    lines = (tmp_path / "audit.jsonl").read_text().splitlines()
    deletes = [line for line in lines if '"operation":"delete"' in line and '"key":"gone"' in line]
    assert len(deletes) == 1 and '"principal":"admin"' in deletes[0] and '"status":204' in deletes[0]


async def test_pages_forbid_framing_and_foreign_scripts(tmp_path: Path) -> None:
    async with client(cfg(tmp_path)) as c:
        await sign_in(c, "k-admin")
        page = await c.get("/admin/namespaces")
        policy = page.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in policy and "script-src 'self'" in policy
        assert page.headers["cache-control"] == "no-store"
        assert "<script>" not in page.text and "http" not in re.sub(
            r'content="[^"]*"', "", page.text.split("<body>")[0]
        )


async def test_the_zero_config_demo_signs_in_without_a_credential(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".prism").mkdir()
    app = create_app(default_config())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as c:
            form = await c.get("/admin/login")
            assert "no authentication configured" in form.text
            r = await sign_in(c, "")
            assert r.status_code == 303
            assert (await c.put("/v1/kv/default/hello", content=b"world")).status_code == 201
            page = await c.get("/admin/namespaces/default/keys")
            assert page.status_code == 200 and "hello" in page.text


async def test_a_large_value_is_shown_in_part(tmp_path: Path) -> None:
    async with client(cfg(tmp_path, admin={"enabled": True, "value_preview_bytes": 100})) as c:
        value = b"a" * 90 + b"TAIL-MARKER" + b"b" * 200
        assert (
            await c.put("/v1/kv/plain/big", content=value, headers={"X-API-Key": "k-admin"})
        ).status_code == 201
        await sign_in(c, "k-admin")
        page = await c.get("/admin/namespaces/plain/item", params={"key": "big"})
        assert "Showing the first 100 of 301 bytes." in page.text
        assert "a" * 90 + "TAIL-MAR" in page.text and "TAIL-MARKER" not in page.text
        assert "301 bytes" in page.text


async def test_without_runtime_namespaces_there_are_no_namespace_forms(tmp_path: Path) -> None:
    async with client(cfg(tmp_path, control={"namespaces": {"enabled": False}})) as c:
        assert (await sign_in(c, "k-admin")).status_code == 303
        listing = await c.get("/admin/namespaces")
        assert listing.status_code == 200 and "New namespace" not in listing.text
        assert "config file" in listing.text
        new = await c.get("/admin/namespaces/new")
        assert new.status_code == 501 and "runtime namespaces are turned off" in new.text
        detail = await c.get("/admin/namespaces/plain")
        assert "read-only here" in detail.text and "Delete namespace" not in detail.text
        # A plan posted anyway reaches the API, which answers that the feature is off.
        planned = await c.post("/admin/namespaces/plan", data={"csrf": csrf_of(listing), "name": "x"})
        assert planned.status_code == 501 and "RUNTIME_NAMESPACES_OFF" in planned.text
