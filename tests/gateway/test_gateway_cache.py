"""The cache tier behind the gateway: config, admin detail, tenants, PII, two `prism serve` processes."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis as redis_py
import yaml
from gateway_helpers import client_for, full_config, headers
from test_gateway_limits_shared import two_gateways

from prism.gateway import ConfigError, parse_config
from prism.testing.servers import free_port
from prism.testing.servers._base import wait_for_port
from prism.testing.servers.postgres import postgres_url
from prism.testing.servers.redis import RedisServer, redis_server

PRISM = str(Path(sys.executable).with_name("prism"))
ACME = headers("acme")
GLOBEX = headers("globex")
ADMIN = headers("admin")
CACHE = {"store": "cache", "ttl": 60, "timeout": 0.2, "recovery_interval": 0.2}


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisServer]:
    with redis_server() as server:
        yield server


def cached_config(tmp_path: Path, cache_url: str) -> dict[str, Any]:
    cfg = full_config(tmp_path, stores={"main": f"sqlite:///{tmp_path / 'data.db'}", "cache": cache_url})
    for ns in cfg["namespaces"]:
        ns["store"] = "main"
        ns["cache"] = dict(CACHE)
    cfg["namespaces"][0]["access"] = {"read": ["reader"], "write": ["writer"], "admin": ["admin"]}
    cfg["namespaces"][0]["near_cache"] = {"max_items": 100, "ttl": 5}
    return cfg


@pytest.mark.parametrize(
    ("change", "path", "message"),
    [
        ({"store": "nowhere"}, "$.namespaces[0].cache.store", "unknown store 'nowhere'"),
        ({"store": "main"}, "$.namespaces[0].cache.store", "another store"),
        ({"store": "cache", "ttl": 0}, "$.namespaces[0].cache.ttl", "positive"),
        ({"store": "cache", "timeout": -1}, "$.namespaces[0].cache.timeout", "positive"),
        ({"store": "cache", "max_item_bytes": 0}, "$.namespaces[0].cache.max_item_bytes", "positive"),
        ({"store": "cache", "colour": "red"}, "$.namespaces[0].cache", "unknown field"),
    ],
)
def test_bad_cache_settings_name_the_path(
    tmp_path: Path, change: dict[str, Any], path: str, message: str
) -> None:
    cfg = cached_config(tmp_path, "memory://c")
    cfg["namespaces"][0]["cache"] = change
    with pytest.raises(ConfigError) as caught:
        parse_config(cfg, source="test.yaml")
    assert path in str(caught.value) and message in str(caught.value)


def test_bad_near_cache_settings_name_the_path(tmp_path: Path) -> None:
    cfg = cached_config(tmp_path, "memory://c")
    cfg["namespaces"][0]["near_cache"] = {"max_items": 0}
    with pytest.raises(ConfigError, match=r"\$\.namespaces\[0\]\.near_cache\.max_items"):
        parse_config(cfg, source="test.yaml")
    cfg["namespaces"][0]["near_cache"] = {"ttl": -1}
    with pytest.raises(ConfigError, match=r"\$\.namespaces\[0\]\.near_cache\.ttl"):
        parse_config(cfg, source="test.yaml")


async def test_hits_show_on_the_namespace_for_admins_only(tmp_path: Path, redis: RedisServer) -> None:
    async with client_for(cached_config(tmp_path, redis.url)) as c:
        assert (await c.put("/v1/kv/plain/k", content=b"v", headers=headers("writer"))).status_code == 201
        for _ in range(4):
            r = await c.get("/v1/kv/plain/k", headers=headers("reader"))
            assert r.status_code == 200 and r.content == b"v"
        detail = (await c.get("/v1/namespaces/plain", headers=ADMIN)).json()
        cache = detail["cache"]
        assert cache["shared"]["store"] == "cache" and cache["shared"]["degraded"] is False
        assert cache["near"]["hits"] == 3 and cache["near"]["hit_ratio"] == 0.75
        assert cache["near"]["bound"] == "ttl"  # this SQLite store keeps no change feed
        assert cache["shared"]["misses"] >= 1
        reader_view = (await c.get("/v1/namespaces/plain", headers=headers("reader"))).json()
        assert "cache" not in reader_view
        metrics = (await c.get("/metrics", headers=ADMIN)).text
        assert 'prism_cache_requests_total{namespace="plain",result="hit",tier="near"}' in metrics


async def test_tenants_never_see_each_others_cached_values(tmp_path: Path, redis: RedisServer) -> None:
    async with client_for(cached_config(tmp_path, redis.url)) as c:
        assert (await c.put("/v1/kv/orders/k", content=b"acme", headers=ACME)).status_code == 201
        for _ in range(3):
            assert (await c.get("/v1/kv/orders/k", headers=ACME)).content == b"acme"
            assert (await c.get("/v1/kv/orders/k", headers=GLOBEX)).status_code == 404
        assert (await c.put("/v1/kv/orders/k", content=b"globex", headers=GLOBEX)).status_code == 201
        for _ in range(3):
            assert (await c.get("/v1/kv/orders/k", headers=ACME)).content == b"acme"
            assert (await c.get("/v1/kv/orders/k", headers=GLOBEX)).content == b"globex"


async def test_personal_data_is_cached_only_encrypted(tmp_path: Path, redis: RedisServer) -> None:
    secret = f"alice-{uuid.uuid4().hex}@example.com"
    async with client_for(cached_config(tmp_path, redis.url)) as c:
        body = {"email": secret, "plan": "gold"}
        assert (await c.put("/v1/kv/people/alice", json=body, headers=ACME)).status_code == 201
        for _ in range(2):
            r = await c.get("/v1/kv/people/alice", headers=headers("acme-pii"))
            assert r.json()["email"] == secret
            assert (await c.get("/v1/kv/people/alice", headers=ACME)).json()["email"] == "***"
    raw = redis_py.Redis.from_url(redis.url)
    try:
        values = [raw.dump(key) or b"" for key in raw.scan_iter("*")]
    finally:
        raw.close()
    assert any(b"gold" in v for v in values), "the entry was cached"
    assert not any(secret.encode() in v for v in values)


# -- two processes on PostgreSQL -------------------------------------------------------


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    url, server = postgres_url()
    try:
        yield url
    finally:
        if server is not None:
            server.close()


def two_process_config(pg: str, cache_url: str, ns: str) -> dict[str, Any]:
    return {
        "stores": {"main": pg, "cache": cache_url},
        "namespaces": [{"name": ns, "store": "main", "cache": dict(CACHE)}],
        "audit": {"sink": "none"},
        "server": {"access_log": False},
        "streaming": {"enabled": False},
    }


async def test_two_gateways_never_serve_a_value_older_than_the_last_acknowledged_write(
    tmp_path: Path, pg_url: str
) -> None:
    ns = f"hot-{uuid.uuid4().hex[:8]}"
    with redis_server() as cache:
        if cache.external:
            pytest.skip("stopping the cache needs a local redis-server")
        with two_gateways(tmp_path, two_process_config(pg_url, cache.url, ns)) as (one, two):
            async with httpx.AsyncClient(timeout=10) as http:
                acked = 0
                stop = asyncio.Event()
                stale: list[tuple[int, int]] = []

                async def check(url: str) -> None:
                    # Readers on both gateways keep missing and filling while the writer runs.
                    while not stop.is_set():
                        floor = acked
                        r = await http.get(f"{url}/v1/kv/{ns}/counter")
                        assert r.status_code in (200, 404), r.text
                        seen = int(r.content) if r.status_code == 200 else 0
                        if seen < floor:
                            stale.append((seen, floor))

                async def write(n: int, url: str) -> None:
                    nonlocal acked
                    r = await http.put(f"{url}/v1/kv/{ns}/counter", content=str(n).encode())
                    assert r.status_code in (200, 201), r.text
                    acked = n

                checkers = [asyncio.create_task(check(u)) for u in (one, two, one, two)]
                for n in range(1, 151):
                    await write(n, one if n % 2 else two)
                    if n == 75:
                        cache.stop()  # the cache goes down mid-run: nothing fails
                    if n == 100:
                        cache.start()  # with the entries it saved
                        await asyncio.sleep(0.5)
                stop.set()
                await asyncio.gather(*checkers)
                assert stale == []
                for url in (one, two):
                    assert (await http.get(f"{url}/v1/kv/{ns}/counter")).content == b"150"
                metrics = (await http.get(f"{one}/metrics")).text
                assert f'prism_cache_requests_total{{namespace="{ns}",result="hit",tier="shared"}}' in metrics
                hits = [
                    float(line.rsplit(" ", 1)[1])
                    for line in metrics.splitlines()
                    if line.startswith("prism_cache_requests_total") and f'"{ns}"' in line and '"hit"' in line
                ]
                assert sum(hits) > 0


async def test_a_write_on_one_gateway_evicts_the_others_near_cache_through_the_feed(
    tmp_path: Path, pg_url: str, redis: RedisServer
) -> None:
    ns = f"near-{uuid.uuid4().hex[:8]}"
    feed_url = pg_url + ("&" if "?" in pg_url else "?") + "feed=true"
    cfg = two_process_config(feed_url, redis.url, ns)
    cfg["namespaces"][0]["near_cache"] = {"max_items": 100, "ttl": 60, "poll_interval": 0.05}
    with two_gateways(tmp_path, cfg) as (one, two):
        async with httpx.AsyncClient(timeout=10) as http:
            assert (await http.put(f"{one}/v1/kv/{ns}/k", content=b"v1")).status_code == 201
            for _ in range(3):
                assert (await http.get(f"{two}/v1/kv/{ns}/k")).content == b"v1"
            metrics = (await http.get(f"{two}/metrics")).text
            assert f'prism_cache_requests_total{{namespace="{ns}",result="hit",tier="near"}} 2.0' in metrics
            for n in range(2, 7):
                assert (await http.put(f"{one}/v1/kv/{ns}/k", content=b"v%d" % n)).status_code == 200
                acked = asyncio.get_running_loop().time()
                while (await http.get(f"{two}/v1/kv/{ns}/k")).content != b"v%d" % n:
                    # The bound: the feed's delivery, well inside the near cache's 60 s ttl.
                    assert asyncio.get_running_loop().time() - acked < 2.0, "the feed never evicted it"
                    await asyncio.sleep(0.01)


async def test_a_gateway_killed_mid_run_leaves_the_other_serving_fresh_values(
    tmp_path: Path, pg_url: str, redis: RedisServer
) -> None:
    ns = f"killed-{uuid.uuid4().hex[:8]}"
    cfg = two_process_config(pg_url, redis.url, ns)
    cfg["namespaces"][0]["cache"]["lease_ttl"] = 0.5
    with gateway_process(tmp_path, cfg) as (doomed, victim), two_gateways(tmp_path, cfg) as (survivor, _):
        async with httpx.AsyncClient(timeout=10) as http:
            acked = 0
            stop = asyncio.Event()
            stale: list[tuple[int, int]] = []

            async def hammer_the_victim() -> None:
                # Reads that miss, take leases and fill; writes in flight when it dies.
                n = 10_000
                while not stop.is_set():
                    n += 1
                    with contextlib.suppress(httpx.HTTPError):
                        await http.get(f"{doomed}/v1/kv/{ns}/other")
                        await http.put(f"{doomed}/v1/kv/{ns}/other", content=str(n).encode())
                        await http.get(f"{doomed}/v1/kv/{ns}/counter")

            async def check() -> None:
                while not stop.is_set():
                    floor = acked
                    r = await http.get(f"{survivor}/v1/kv/{ns}/counter")
                    assert r.status_code in (200, 404), r.text
                    seen = int(r.content) if r.status_code == 200 else 0
                    if seen < floor:
                        stale.append((seen, floor))

            tasks = [asyncio.create_task(hammer_the_victim()) for _ in range(4)]
            tasks += [asyncio.create_task(check()) for _ in range(3)]
            for n in range(1, 101):
                r = await http.put(f"{survivor}/v1/kv/{ns}/counter", content=str(n).encode())
                assert r.status_code in (200, 201), r.text
                acked = n
                if n == 30:
                    victim.send_signal(signal.SIGKILL)
            stop.set()
            await asyncio.gather(*tasks)
            assert stale == []
            assert victim.poll() == -signal.SIGKILL
            assert (await http.get(f"{survivor}/v1/kv/{ns}/counter")).content == b"100"


@contextlib.contextmanager
def gateway_process(tmp_path: Path, cfg: dict[str, Any]) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """One more ``prism serve`` process on ``cfg``: its base URL and the process (to kill)."""
    path = tmp_path / "victim.yaml"
    path.write_text(yaml.safe_dump(cfg))
    port = free_port()
    process = subprocess.Popen(
        [PRISM, "serve", "--config", str(path), "--port", str(port)],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, timeout=30)
        yield f"http://127.0.0.1:{port}", process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
