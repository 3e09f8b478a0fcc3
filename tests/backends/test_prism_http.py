"""``prism+http://``: the conformance suite through a real ``prism serve`` on the memory store.

The gateway serves only the namespaces its config declares, so the suite's freshly
named namespaces are mapped, one to one, onto a pool of declared ones; each is used
by one test only, so every test still starts from an empty namespace.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import prism
from prism.backends import open_backend
from prism.gateway.auth import hash_api_key
from prism.kv.namespace import Namespace
from prism.kv.store import Store
from prism.testing.conformance import ConformanceSuite
from prism.testing.servers._base import free_port

PRISM = str(Path(sys.executable).with_name("prism"))
POOL = [f"pool-{i}" for i in range(400)]
API_KEY = "k-0123456789abcdef"


class Gateway:
    def __init__(self, proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.proc = proc
        self.port = port
        self.log = log
        self.url = f"prism+http://127.0.0.1:{port}"
        self.http = f"http://127.0.0.1:{port}"
        self.free = iter(POOL)


def start_gateway(directory: Path, *, auth: str = "") -> Iterator[Gateway]:
    namespaces = "\n".join(f"  - {{name: {name}}}" for name in POOL)
    config = directory / "prism.yaml"
    config.write_text(
        f"stores: {{main: 'memory://'}}\nnamespaces:\n{namespaces}\n"
        "audit: {sink: none}\nserver: {access_log: false}\n" + auth
    )
    port = free_port()
    log = directory / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [PRISM, "serve", "--config", str(config), "--port", str(port)],
            cwd=directory,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    gateway = Gateway(proc, port, log)
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{gateway.http}/healthz", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"prism serve did not start: {log.read_text()}")
        time.sleep(0.1)
    try:
        yield gateway
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    yield from start_gateway(tmp_path_factory.mktemp("gateway"))


class PooledStore(Store):
    """A Store whose namespace names are handed out from the gateway's declared pool."""

    def __init__(self, backend: Any, gateway: Gateway) -> None:
        super().__init__(backend)
        self._gateway = gateway
        self._names: dict[str, str] = {}

    def namespace(self, name: str, **options: Any) -> Namespace:
        if name not in self._names:
            self._names[name] = next(self._gateway.free)
        return super().namespace(self._names[name], **options)


class TestPrismHttp(ConformanceSuite):
    stateful_examples = 15

    @pytest.fixture
    def store_url(self, gateway: Gateway) -> str:
        return gateway.url

    @pytest.fixture
    async def store(self, store_url: str, gateway: Gateway) -> AsyncIterator[Store]:
        async with PooledStore(open_backend(store_url), gateway) as store:
            yield store


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    auth = f"auth: {{api_keys: [{{name: cli, sha256: {hash_api_key(API_KEY)}, roles: [writer]}}]}}\n"
    yield from start_gateway(tmp_path_factory.mktemp("guarded"), auth=auth)


async def test_the_token_comes_from_the_environment_and_is_never_shown(
    guarded: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MY_PRISM_TOKEN", API_KEY)
    async with prism.connect(f"{guarded.url}?token_env=MY_PRISM_TOKEN") as store:
        ns = store.namespace("pool-0")
        etag = await ns.put("k", b"v")
        item = await ns.get("k")
        assert item is not None and (item.value, item.etag) == (b"v", etag)
        assert API_KEY not in repr(store.backend)
    monkeypatch.setenv("PRISM_TOKEN", "not-the-key")
    async with prism.connect(guarded.url) as store:
        with pytest.raises(prism.PrismError, match="401 INVALID_CREDENTIALS") as refused:
            await store.namespace("pool-0").get("k")
        assert "not-the-key" not in str(refused.value)


def test_a_token_in_the_url_is_refused_without_echoing_it() -> None:
    with pytest.raises(prism.InvalidArgument, match="token_env") as refused:
        prism.connect(f"prism+http://127.0.0.1:1/?token={API_KEY}")
    assert API_KEY not in str(refused.value)


async def test_an_unreachable_gateway_fails_at_connect_naming_it() -> None:
    port = free_port()
    url = f"prism+http://127.0.0.1:{port}?operation_timeout=1&max_retries=1"
    with pytest.raises(prism.BackendUnavailable, match=f"Prism gateway at http://127.0.0.1:{port}"):
        await prism.connect(url)


async def test_a_namespace_the_gateway_does_not_serve_is_named(gateway: Gateway) -> None:
    async with prism.connect(gateway.url) as store:
        with pytest.raises(prism.InvalidArgument, match="no namespace 'nope'"):
            await store.namespace("nope").put("k", b"v")
        with pytest.raises(prism.Unsupported, match="strongly consistent"):
            await store.namespace("pool-399").get("k", consistency="strong")
