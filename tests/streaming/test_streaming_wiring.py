"""How streaming is put together: one store choice, a service built whole, found by entry point."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from streaming_helpers import FAST, IDENTITIES, recv_json, running, send_json
from test_streaming_cli import prism

from prism.errors import ConfigError, InvalidArgument
from prism.gateway import load_extensions, parse_config
from prism.kv.store import connect
from prism.streaming.auth import StaticTokens
from prism.streaming.config import parse_config as parse_streaming
from prism.streaming.service import StreamingService
from prism.streaming.stores import StoreChoice, choose_store


def gateway_config(**streaming: Any) -> dict[str, Any]:
    return {
        "stores": {
            "main": f"memory://wiring-{os.urandom(4).hex()}",
            "jobs": {"url": "sqlite:///:memory:", "options": {"busy_timeout": 2.0}},
        },
        "namespaces": [{"name": "default", "store": "main"}],
        "streaming": streaming,
    }


def test_the_store_is_the_configs_first_unless_streaming_names_one() -> None:
    config = parse_config(gateway_config())
    first = choose_store(parse_streaming({}), config=config)
    assert first.name == "main" and first.url == config.store_url("main")
    named = choose_store(parse_streaming({"store": "jobs"}), config=config)
    assert named == StoreChoice("sqlite:///:memory:", "jobs", {"busy_timeout": 2.0})


def test_a_store_that_is_not_in_the_config_names_the_field() -> None:
    config = parse_config(gateway_config())
    with pytest.raises(ConfigError, match=r"\$\.streaming\.store: names no store of \$\.stores: 'nope'"):
        choose_store(parse_streaming({"store": "nope"}), config=config)


def test_a_store_url_alone_is_the_store() -> None:
    assert choose_store(parse_streaming({}), url="memory://x") == StoreChoice("memory://x")
    config = parse_config(gateway_config())
    with pytest.raises(InvalidArgument, match="give one"):
        choose_store(parse_streaming({}), config=config, url="memory://x")
    with pytest.raises(InvalidArgument, match="give one"):
        choose_store(parse_streaming({}))


async def test_prism_worker_reports_a_store_that_is_not_in_the_config(tmp_path: Path) -> None:
    path = tmp_path / "prism.yaml"
    path.write_text(yaml.safe_dump(gateway_config(store="nope")))
    code, _, err = await prism("worker", "--config", str(path))
    assert code == 2
    assert "$.streaming.store: names no store of $.stores: 'nope'" in err


async def test_the_service_is_whole_from_construction() -> None:
    """Every part exists before start(); start() only opens them."""
    service = StreamingService(
        connect("memory://"),
        parse_streaming(FAST),
        store_url="memory://",
        authenticator=StaticTokens(IDENTITIES),
        owns_store=True,
    )
    assert service.queue.engine == "embedded" and service.pubsub.engine == "local"
    assert service.pool is not None and service.hub.followers == 0
    assert "echo" in service.router
    async with running(service) as server, server.connect() as ws:
        await send_json(ws, {"action": "echo", "payload": {"n": 1}, "id": "e"})
        assert (await recv_json(ws))["data"] == {"n": 1}


def test_the_gateway_finds_streaming_through_its_entry_point() -> None:
    config = parse_config(gateway_config())
    (extension,) = load_extensions(config)
    assert {getattr(r, "path", None) for r in extension.routes} >= {"/v1/stream", "/v1/requests"}
    assert load_extensions(config, group="prism.no-such-group") == []


async def test_streaming_routes_answer_while_the_gateway_has_not_started_streaming() -> None:
    import httpx
    from starlette.applications import Starlette

    (extension,) = load_extensions(parse_config(gateway_config()))
    app = Starlette(routes=list(extension.routes))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        r = await client.get("/v1/requests")
    assert r.status_code == 500 and r.headers["content-type"] == "application/problem+json"
    assert r.json()["code"] == "INTERNAL_ERROR" and "not running" in r.json()["detail"]
