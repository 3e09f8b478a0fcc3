"""The demo handlers (``delay``, ``generate_report``) serve the zero-config demo, not a configured gateway.

``prism serve`` without ``--config`` registers them; with a config file they are
unknown actions unless ``streaming.demo_handlers`` is true, and ``delay`` never
accepts more than ``streaming.max_delay_seconds`` (60 s by default).
"""

from __future__ import annotations

import asyncio
import contextlib
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from prism.gateway import create_app
from prism.gateway.app import load_extensions
from prism.gateway.auth import hash_api_key
from prism.gateway.config import ConfigError, GatewayConfig, default_config, load_config

KEY = {"X-API-Key": "key-alice"}


def config_file(tmp_path: Path, streaming: str = "") -> GatewayConfig:
    path = tmp_path / "prism.yaml"
    path.write_text(
        textwrap.dedent(f"""
        stores:
          main: "sqlite:///{tmp_path}/data.db"
        auth:
          api_keys:
            - {{name: alice, sha256: "{hash_api_key("key-alice")}", roles: [writer], tenant: acme}}
        namespaces:
          - {{name: default}}
        audit: {{sink: none}}
        """)
        + streaming
    )
    return load_config(path)


@contextlib.asynccontextmanager
async def gateway(config: GatewayConfig) -> AsyncIterator[httpx.AsyncClient]:
    """The gateway ``prism serve`` builds for ``config`` (streaming mounted), served in-process."""
    (extension,) = load_extensions(config)
    app = create_app(
        config,
        extra_routes=extension.routes,
        on_startup=extension.on_startup,
        on_shutdown=extension.on_shutdown,
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway", headers=KEY) as client:
            yield client


async def submit(client: httpx.AsyncClient, action: str, payload: Any = None) -> httpx.Response:
    body: dict[str, Any] = {"action": action}
    if payload is not None:
        body["payload"] = payload
    return await client.post("/v1/requests", json=body)


async def completed(client: httpx.AsyncClient, response: httpx.Response) -> dict[str, Any]:
    assert response.status_code in (200, 202), response.text
    request_id = response.json()["request_id"]
    for _ in range(200):
        body: dict[str, Any] = (await client.get(f"/v1/requests/{request_id}")).json()
        if body["status"] in ("COMPLETED", "FAILED"):
            return body
        await asyncio.sleep(0.05)
    raise AssertionError(f"request {request_id} did not finish: {body}")


async def test_with_a_config_file_the_demo_handlers_are_unknown_actions(tmp_path: Path) -> None:
    async with gateway(config_file(tmp_path)) as client:
        for action, payload in (
            ("delay", {"seconds": 1}),
            ("generate_report", {"start_date": "2024-01-01", "end_date": "2024-01-31"}),
        ):
            r = await submit(client, action, payload)
            assert r.status_code == 400
            assert r.headers["content-type"] == "application/problem+json"
            body = r.json()
            assert body["code"] == "INVALID_ACTION"
            assert action in body["detail"]
            # The error lists the actions this gateway does serve.
            assert body["details"]["actions"] == ["echo"]
        # echo stays: it answers with its own payload and holds nothing.
        done = await completed(client, await submit(client, "echo", {"hello": "world"}))
        assert done["status"] == "COMPLETED" and done["result"] == {"hello": "world"}


async def test_the_zero_config_demo_has_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".prism").mkdir()
    async with gateway(default_config()) as client:
        r = await submit(client, "teleport")
        assert r.json()["details"]["actions"] == ["delay", "echo", "generate_report"]
        done = await completed(client, await submit(client, "delay", {"seconds": 0.1, "step": 0.05}))
        assert done["status"] == "COMPLETED" and done["result"] == {"slept": 0.1}
        report = await completed(
            client,
            await submit(
                client,
                "generate_report",
                {"start_date": "2024-01-01", "end_date": "2024-01-07", "step_seconds": 0},
            ),
        )
        assert report["status"] == "COMPLETED" and report["result"]["rows"] == 7 * 24
        # Even in the demo, delay holds a worker for at most max_delay_seconds (60 s).
        r = await submit(client, "delay", {"seconds": 3600})
        assert r.status_code == 422
        assert r.json()["code"] == "VALIDATION_ERROR" and r.json()["details"]["field"] == "seconds"
        assert "<= 60" in r.json()["detail"]


async def test_a_config_file_can_enable_them_with_its_own_cap(tmp_path: Path) -> None:
    streaming = "streaming: {demo_handlers: true, max_delay_seconds: 2}\n"
    async with gateway(config_file(tmp_path, streaming)) as client:
        r = await submit(client, "teleport")
        assert r.json()["details"]["actions"] == ["delay", "echo", "generate_report"]
        done = await completed(client, await submit(client, "delay", {"seconds": 0.1, "step": 0.05}))
        assert done["status"] == "COMPLETED"
        r = await submit(client, "delay", {"seconds": 2.5})
        assert r.status_code == 422 and r.json()["details"]["field"] == "seconds"
        assert "<= 2" in r.json()["detail"]
        # generate_report's four steps together are held to the same cap.
        report = {"start_date": "2024-01-01", "end_date": "2024-01-02", "step_seconds": 0.6}
        r = await submit(client, "generate_report", report)
        assert r.status_code == 422 and r.json()["details"]["field"] == "step_seconds"
        assert "<= 0.5" in r.json()["detail"]


async def test_builtin_handlers_false_leaves_only_the_configured_ones(tmp_path: Path) -> None:
    streaming = "streaming: {builtin_handlers: false, demo_handlers: true}\n"
    async with gateway(config_file(tmp_path, streaming)) as client:
        r = await submit(client, "echo", {})
        assert r.status_code == 400 and r.json()["details"]["actions"] == ["delay", "generate_report"]


@pytest.mark.parametrize("value", ["0", "-1", ".inf"])
def test_max_delay_seconds_must_be_positive_and_finite(tmp_path: Path, value: str) -> None:
    config = config_file(tmp_path, f"streaming: {{max_delay_seconds: {value}}}\n")
    with pytest.raises(ConfigError) as info:
        load_extensions(config)
    assert info.value.path == "$.streaming"
    assert "max_delay_seconds" in info.value.message
