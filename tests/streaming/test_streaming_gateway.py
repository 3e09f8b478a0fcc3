"""Streaming mounted in the gateway (``prism serve``): its auth, its store, workers inside."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
import yaml
from streaming_helpers import FAST

from prism.gateway import create_app, parse_config
from prism.gateway.app import load_extensions
from prism.gateway.auth import hash_api_key
from prism.gateway.config import ConfigError
from prism.streaming.app import UVICORN_OPTIONS
from prism.streaming.client import RequestError, StreamClient
from prism.testing.servers import free_port

KEYS = {"alice": ("key-alice", "acme"), "bob": ("key-bob", "acme")}


def gateway_config(**streaming: Any) -> dict[str, Any]:
    return {
        "stores": {"main": f"memory://gw-{os.urandom(4).hex()}"},
        "namespaces": [{"name": "default", "store": "main"}],
        "auth": {
            "api_keys": [
                {"name": name, "sha256": hash_api_key(key), "roles": ["writer"], "tenant": tenant}
                for name, (key, tenant) in KEYS.items()
            ]
        },
        "streaming": {**FAST, **streaming},
    }


@pytest.fixture
async def gateway() -> AsyncIterator[str]:
    config = parse_config(gateway_config())
    (extension,) = load_extensions(config)
    app = create_app(
        config,
        extra_routes=extension.routes,
        on_startup=extension.on_startup,
        on_shutdown=extension.on_shutdown,
    )
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", **UVICORN_OPTIONS)
    )
    task = asyncio.create_task(server.serve())
    for _ in range(1000):
        if server.started or task.done():
            break
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def test_streaming_through_the_gateway_with_its_api_keys(gateway: str) -> None:
    async with StreamClient(gateway, token="key-alice") as client:
        assert await client.request("echo", {"hi": 1}) == {"hi": 1}
        updates: list[Any] = []
        result = await client.request(
            "delay", {"seconds": 0.3, "step": 0.1}, on_progress=updates.append, timeout=10
        )
        assert result == {"slept": 0.3}
        assert [u.seq for u in updates] == [1, 2, 3]
    async with StreamClient(gateway, token="not-a-key", reconnect=False) as client:
        with pytest.raises(RequestError) as refused:
            await client.request("echo", {}, timeout=5)
        assert refused.value.code in ("UNAUTHORIZED", "INTERNAL_ERROR")
    async with httpx.AsyncClient(base_url=gateway) as http:
        posted = await http.post("/v1/requests", headers={"X-API-Key": "key-bob"}, json={"action": "echo"})
        assert posted.status_code == 202
        rid = posted.json()["request_id"]
        assert (await http.get(f"/v1/requests/{rid}", headers={"X-API-Key": "key-alice"})).status_code == 404
        for _ in range(100):
            body = (await http.get(f"/v1/requests/{rid}", headers={"X-API-Key": "key-bob"})).json()
            if body["status"] == "COMPLETED":
                break
            await asyncio.sleep(0.05)
        assert body["result"] == {}
        # The gateway's own API is still there.
        put = await http.put("/v1/kv/default/k", headers={"X-API-Key": "key-alice"}, content=b"v")
        assert put.status_code in (200, 201, 204)


def test_bad_streaming_config_names_the_path() -> None:
    config = parse_config(gateway_config(lease_seconds=-1))
    with pytest.raises(ConfigError, match=r"\$\.streaming.*lease_seconds"):
        load_extensions(config)
    config = parse_config(gateway_config(store="nope"))
    with pytest.raises(ConfigError, match="names no store"):
        load_extensions(config)
    assert load_extensions(parse_config(gateway_config(enabled=False))) == []


def test_prism_serve_mounts_streaming(tmp_path: Path) -> None:
    config = gateway_config()
    config["stores"] = {"main": f"sqlite:///{tmp_path}/prism.db"}
    path = tmp_path / "prism.yaml"
    path.write_text(yaml.safe_dump(config))
    port = free_port()
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "prism"), "serve", "--config", str(path), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:
            while True:
                assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
                try:
                    posted = http.post(
                        "/v1/requests",
                        headers={"X-API-Key": "key-alice"},
                        json={"action": "delay", "payload": {"seconds": 0.1}},
                    )
                    break
                except httpx.HTTPError:
                    assert time.monotonic() < deadline
                    time.sleep(0.1)
            assert posted.status_code == 202
            rid = posted.json()["request_id"]
            events = http.get(f"/v1/requests/{rid}/events", headers={"X-API-Key": "key-alice"}).text
        assert "event: complete" in events
    finally:
        process.terminate()
        process.wait(20)
        if process.stderr is not None:
            process.stderr.close()
