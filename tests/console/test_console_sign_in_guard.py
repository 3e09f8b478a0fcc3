"""Console sign-ins are audited and rate-limited per client address; sessions are bounded per principal."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx

from console.test_console_sessions import ENV, cfg, client, sign_in
from prism.gateway.app import create_app
from prism.gateway.config import parse_config


def _audit_lines(tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / "audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


async def _settle() -> None:
    await asyncio.sleep(0.2)  # the file sink flushes every 0.02 s


async def test_every_sign_in_attempt_is_audited_without_the_credential(tmp_path: Path) -> None:
    async with client(cfg(tmp_path)) as c:
        wrong = await sign_in(c, "wrong-guess-secret-1")
        assert wrong.status_code == 401
        c.cookies.clear()
        right = await sign_in(c, "k-reader")
        assert right.status_code == 303
        c.cookies.clear()
        await sign_in(c, "not.a.token", kind="jwt")
        await _settle()
    text = (tmp_path / "audit.jsonl").read_text()
    events = [e for e in _audit_lines(tmp_path) if e["operation"] == "console_sign_in"]
    assert [(e["status"], e["outcome"]) for e in events] == [
        (401, "INVALID_CREDENTIALS"),
        (303, "ok"),
        (401, events[2]["outcome"]),
    ]
    assert "principal" not in events[0]
    assert events[1]["principal"] == "reader"
    assert events[1]["principal_kind"] == "api_key"
    assert all(e.get("request_id") for e in events)
    for secret in ("wrong-guess-secret-1", "k-reader", "not.a.token"):
        assert secret not in text


async def test_sign_in_attempts_past_the_burst_are_refused_with_retry_after(tmp_path: Path) -> None:
    config = cfg(tmp_path, admin={"enabled": True, "login_rate": 0.5, "login_burst": 3})
    app = create_app(parse_config(config, source="test.yaml", env=ENV), env=ENV)
    here = httpx.ASGITransport(app=app, client=("198.51.100.7", 4000))
    there = httpx.ASGITransport(app=app, client=("203.0.113.9", 4000))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=here, base_url="http://gateway") as c,
        httpx.AsyncClient(transport=there, base_url="http://gateway") as c2,
    ):
        statuses = []
        for i in range(5):
            c.cookies.clear()
            statuses.append(await sign_in(c, f"guess-{i}"))
        assert [r.status_code for r in statuses] == [401, 401, 401, 429, 429]
        assert 1 <= int(statuses[3].headers["Retry-After"]) <= 2
        assert "too many sign-in attempts" in statuses[3].text
        # The right key is refused too while the address is over its limit: guessing gains nothing.
        c.cookies.clear()
        assert (await sign_in(c, "k-admin")).status_code == 429
        # Another address has its own bucket.
        assert (await sign_in(c2, "k-admin")).status_code == 303
        await asyncio.sleep(2.1)  # one token back at 0.5 a second
        c.cookies.clear()
        assert (await sign_in(c, "k-admin")).status_code == 303
        await _settle()
    events = [e for e in _audit_lines(tmp_path) if e["operation"] == "console_sign_in"]
    assert [e["status"] for e in events] == [401, 401, 401, 429, 429, 429, 303, 303]
    assert [e["outcome"] for e in events if e["status"] == 429] == ["RATE_LIMITED"] * 3


async def _session_of(c: httpx.AsyncClient, key: str) -> str:
    c.cookies.clear()
    r = await sign_in(c, key)
    assert r.status_code == 303, r.text
    value = c.cookies.get("prism_console", path="/admin")
    assert value
    return value


async def _live(c: httpx.AsyncClient, value: str) -> bool:
    c.cookies.clear()
    c.cookies.set("prism_console", value, path="/admin")
    r = await c.get("/admin/namespaces")
    return r.status_code == 200


async def test_sign_ins_of_one_principal_never_end_another_principals_session(tmp_path: Path) -> None:
    admin = {"enabled": True, "max_sessions": 3, "max_sessions_per_principal": 2}
    async with client(cfg(tmp_path, admin=admin)) as c:
        boss = await _session_of(c, "k-admin")
        readers = [await _session_of(c, "k-reader") for _ in range(5)]
        # The reader keeps only its own two newest; the admin's session is untouched.
        assert await _live(c, boss)
        assert [await _live(c, r) for r in readers] == [False, False, False, True, True]
        # The table is full (1 admin + 2 readers): a third principal is refused, nobody is pushed out.
        c.cookies.clear()
        refused = await sign_in(c, "k-acme")
        assert refused.status_code == 503
        assert "session" in refused.text
        assert await _live(c, boss)
        assert [await _live(c, r) for r in readers[-2:]] == [True, True]
        # A principal already in the table can still sign in again: its own oldest makes room.
        newer = await _session_of(c, "k-admin")
        assert await _live(c, newer)
        assert not await _live(c, boss)
        assert [await _live(c, r) for r in readers[-2:]] == [True, True]


async def test_no_sign_in_goes_unaudited_when_the_audit_trail_fails_closed(tmp_path: Path) -> None:
    config = cfg(tmp_path)
    config["audit"] = {"sink": "file", "path": "/dev/full", "on_failure": "reject", "flush_interval": 0.02}
    async with client(config) as c:
        await c.get("/v1/kv/plain/x", headers={"X-API-Key": "k-admin"})  # its write fails: the trail is down
        await asyncio.sleep(0.3)
        refused = await sign_in(c, "k-admin")
        assert refused.status_code == 503
        assert "audit" in refused.text
        assert c.cookies.get("prism_console", path="/admin") is None
