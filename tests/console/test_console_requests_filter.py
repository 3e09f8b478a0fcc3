"""The Requests page's action filter is applied by the API (``GET /v1/requests?action=``), across pages."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from console.test_console_sessions import ENV, cfg, sign_in
from prism.gateway.app import create_app
from prism.gateway.config import parse_config
from prism.streaming.gateway import extension

ADMIN = {"X-API-Key": "k-admin"}


async def test_the_action_filter_finds_requests_past_the_first_page(tmp_path: Path) -> None:
    raw = cfg(
        tmp_path,
        streaming={"demo_handlers": True, "store": "main", "shutdown_timeout": 2},
        admin={"enabled": True, "page_size": 2},
    )
    config = parse_config(raw, source="t.yaml", env=ENV)
    ext = extension(config)
    app = create_app(
        config, env=ENV, extra_routes=ext.routes, on_startup=ext.on_startup, on_shutdown=ext.on_shutdown
    )
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://g") as c,
    ):
        echo = await c.post("/v1/requests", json={"action": "echo", "payload": {"a": 1}}, headers=ADMIN)
        assert echo.status_code == 202
        for _ in range(3):
            await asyncio.sleep(0.01)
            r = await c.post(
                "/v1/requests", json={"action": "delay", "payload": {"seconds": 0.1}}, headers=ADMIN
            )
            assert r.status_code == 202
        # The API filters before it pages: the one echo request is the first page.
        api = await c.get("/v1/requests", params={"action": "echo", "limit": 2}, headers=ADMIN)
        assert api.status_code == 200
        assert [r["request_id"] for r in api.json()["requests"]] == [echo.json()["request_id"]]
        assert "next_page_token" not in api.json()
        delays = await c.get("/v1/requests", params={"action": "delay", "limit": 10}, headers=ADMIN)
        assert [r["action"] for r in delays.json()["requests"]] == ["delay"] * 3
        none = await c.get("/v1/requests", params={"action": "nothing-like-it"}, headers=ADMIN)
        assert none.json()["requests"] == []
        too_long = await c.get("/v1/requests", params={"action": "x" * 257}, headers=ADMIN)
        assert too_long.status_code == 422
        assert too_long.json()["details"]["field"] == "action"
        # The console passes the filter on, so the match shows on its first page.
        await sign_in(c, "k-admin")
        page = await c.get("/admin/requests", params={"action": "echo"})
        assert page.status_code == 200
        assert echo.json()["request_id"] in page.text
        assert "No request matches." not in page.text
        assert "Next page" not in page.text
