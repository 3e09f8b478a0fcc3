"""Rate limits across processes: one token bucket per namespace in a Redis or PostgreSQL control store.

Two real ``prism serve`` processes share one burst when ``control.store`` names a Redis
or PostgreSQL store, and each has its own without it; a control store that stops
answering fails closed (503) unless ``control.on_failure: local``.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from gateway_helpers import client_for

import prism
from prism.gateway.config import ConfigError, parse_config
from prism.testing.servers._base import ServerUnavailable, free_port, require_or_skip, wait_for_port
from prism.testing.servers.postgres import postgres_url
from prism.testing.servers.redis import RedisServer, redis_server

PRISM = str(Path(sys.executable).with_name("prism"))
#: A bucket that refills one token per 100 s: within a test, exactly ``BURST`` requests get in.
RATE = 0.01
BURST = 5


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with redis_server() as server:
        yield server.url


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    url, server = postgres_url()
    try:
        yield url
    finally:
        if server is not None:
            server.close()


@pytest.fixture(params=["redis", "postgres"])
def control_url(request: pytest.FixtureRequest) -> str:
    fixture = "redis_url" if request.param == "redis" else "pg_url"
    url: str = request.getfixturevalue(fixture)
    return url


def config(store_url: str, namespace: str, *, control: dict[str, Any] | None = None) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "stores": {"main": store_url},
        "namespaces": [{"name": namespace, "limits": {"rate": RATE, "burst": BURST}}, {"name": "free"}],
        "audit": {"sink": "none"},
        "server": {"access_log": False},
        "streaming": {"enabled": False},
    }
    if control is not None:
        cfg["control"] = control
    return cfg


@contextmanager
def two_gateways(tmp_path: Path, cfg: dict[str, Any]) -> Iterator[list[str]]:
    """Two ``prism serve`` processes on one config, each on its own port: their base URLs."""
    path = tmp_path / "prism.yaml"
    path.write_text(yaml.safe_dump(cfg))
    ports = [free_port(), free_port()]
    procs = [
        subprocess.Popen(
            [PRISM, "serve", "--config", str(path), "--port", str(port)],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for port in ports
    ]
    try:
        deadline = time.monotonic() + 30
        for proc, port in zip(procs, ports, strict=True):
            while True:
                if proc.poll() is not None or time.monotonic() > deadline:
                    proc.kill()
                    out, err = proc.communicate()
                    raise AssertionError(f"prism serve did not start:\n{out}\n{err}")
                try:
                    wait_for_port(port, timeout=0.2)
                    break
                except ServerUnavailable:
                    continue
        yield [f"http://127.0.0.1:{port}" for port in ports]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                _, err = proc.communicate(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                _, err = proc.communicate()
            assert "Traceback" not in err, err


async def burst(urls: list[str], path: str, per_process: int) -> list[int]:
    """``per_process`` concurrent GETs of ``path`` on each gateway: every status."""
    async with httpx.AsyncClient(timeout=10) as http:
        responses = await asyncio.gather(
            *(http.get(f"{url}{path}") for _ in range(per_process) for url in urls)
        )
    for r in responses:
        if r.status_code == 429:
            assert r.headers["content-type"] == "application/problem+json"
            assert r.json()["code"] == "RATE_LIMITED"
            assert int(r.headers["retry-after"]) >= 1
    return [r.status_code for r in responses]


async def test_a_burst_across_two_processes_admits_the_configured_burst_once(
    tmp_path: Path, control_url: str
) -> None:
    ns = f"limited-{uuid.uuid4().hex[:8]}"
    cfg = config(control_url, ns, control={"store": "main"})
    with two_gateways(tmp_path, cfg) as urls:
        statuses = await burst(urls, f"/v1/kv/{ns}/missing", per_process=2 * BURST)
        # Every request either got in (404: no such key) or was refused; exactly BURST got in.
        assert sorted(set(statuses)) == [404, 429]
        assert statuses.count(404) == BURST
        # Namespaces without limits are not touched by the shared buckets.
        free = await burst(urls, "/v1/kv/free/missing", per_process=BURST)
        assert free == [404] * (2 * BURST)


async def test_without_a_control_store_each_process_has_its_own_bucket(tmp_path: Path) -> None:
    cfg = config(f"sqlite:///{tmp_path}/data.db", "limited")
    with two_gateways(tmp_path, cfg) as urls:
        statuses = await burst(urls, "/v1/kv/limited/missing", per_process=2 * BURST)
        # The documented single-process behaviour: each of the two processes admits BURST.
        assert statuses.count(404) == 2 * BURST
        assert statuses.count(429) == 2 * BURST


async def test_shared_bucket_refills_at_the_configured_rate(control_url: str) -> None:
    store = prism.connect(control_url)
    async with store:
        backend = store.backend
        name = f"refill-{uuid.uuid4().hex[:8]}"
        # A slow rate (2 per second), so a loaded machine's round trips cannot refill a token unseen.
        waits = await asyncio.gather(*(backend.take_token(name, 2.0, 2) for _ in range(6)))
        assert waits.count(0.0) == 2
        assert all(0 < w <= 0.5 + 0.01 for w in waits if w)
        await asyncio.sleep(1.2)
        # 1.2 s at 2 per second is 2.4 tokens, capped at the burst of 2: two takes pass, the third waits
        # (it would pass only if another 0.5 s went by between them).
        later = [await backend.take_token(name, 2.0, 2) for _ in range(3)]
        assert later[:2] == [0.0, 0.0] and later[2] > 0


def _local_redis() -> RedisServer:
    try:
        return RedisServer.local()
    except ServerUnavailable as exc:
        require_or_skip("redis", str(exc))
        raise


async def test_an_unreachable_control_store_fails_closed_with_503() -> None:
    server = _local_redis()
    try:
        cfg = {
            "stores": {"data": "memory://", "control": server.url},
            "namespaces": [
                {"name": "limited", "store": "data", "limits": {"rate": 100}},
                {"name": "free", "store": "data"},
            ],
            "control": {"store": "control", "timeout": 0.3},
            "audit": {"sink": "none"},
            "streaming": {"enabled": False},
        }
        async with client_for(cfg) as c:
            assert (await c.put("/v1/kv/limited/k", content=b"v")).status_code == 201
            server.stop()
            started = time.monotonic()
            r = await c.get("/v1/kv/limited/k")
            assert time.monotonic() - started < 3
            assert r.status_code == 503
            assert r.headers["content-type"] == "application/problem+json"
            assert r.headers["retry-after"] == "1"
            body = r.json()
            assert body["code"] == "RATE_LIMIT_UNAVAILABLE"
            assert "control store 'control'" in body["detail"] and "redis://" not in body["detail"]
            r = await c.put("/v1/kv/limited/k2", content=b"v")
            assert r.status_code == 503
            # Nothing was written behind the refusal, and unlimited namespaces keep serving.
            assert (await c.get("/v1/kv/free/k")).status_code == 404
            server.start()
            assert (await c.get("/v1/kv/limited/k")).content == b"v"
            assert (await c.get("/v1/kv/limited/k2")).status_code == 404
    finally:
        server.close()


async def test_on_failure_local_falls_back_to_the_process_bucket() -> None:
    server = _local_redis()
    try:
        cfg = {
            "stores": {"data": "memory://", "control": server.url},
            "namespaces": [{"name": "limited", "store": "data", "limits": {"rate": RATE, "burst": 2}}],
            "control": {"store": "control", "timeout": 0.3, "on_failure": "local"},
            "audit": {"sink": "none"},
            "streaming": {"enabled": False},
        }
        async with client_for(cfg) as c:
            server.stop()
            statuses = [(await c.get("/v1/kv/limited/k")).status_code for _ in range(3)]
            assert statuses == [404, 404, 429]
    finally:
        server.close()


@pytest.mark.parametrize(
    ("stores", "control", "path", "message"),
    [
        ({"main": "memory://"}, {"store": "nope"}, "$.control.store", "unknown store 'nope'"),
        ({"main": "memory://"}, {"store": "main"}, "$.control.store", "name a Redis (redis://) or"),
        ({"main": "sqlite:///x.db"}, {"store": "main"}, "$.control.store", "sqlite://"),
        ({"main": "redis://127.0.0.1:1/0"}, {"store": "main", "timeout": 0}, "$.control.timeout", "positive"),
        (
            {"main": "redis://127.0.0.1:1/0"},
            {"store": "main", "on_failure": "ignore"},
            "$.control.on_failure",
            "Invalid enum value 'ignore'",
        ),
    ],
)
def test_control_config_errors_name_the_path(
    stores: dict[str, str], control: dict[str, Any], path: str, message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"stores": stores, "namespaces": [{"name": "a"}], "control": control}, source="t.yaml")
    assert info.value.path == path
    assert message in info.value.message


def test_redis_and_postgres_control_stores_are_accepted() -> None:
    for url in ("redis://127.0.0.1:1/0", "postgresql://u@127.0.0.1:1/db"):
        cfg = parse_config({"stores": {"c": url}, "namespaces": [{"name": "a"}], "control": {"store": "c"}})
        assert cfg.control.store == "c" and cfg.control.on_failure == "reject"
