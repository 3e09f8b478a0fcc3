"""``prism://``: the conformance suite through a real ``prism serve`` over gRPC, on memory and SQLite stores.

The gateway serves only the namespaces its config declares, so the suite's freshly
named namespaces are mapped, one to one, onto a pool of declared ones.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from serve_process import Served, start_serve

import prism
from prism.backends import open_backend
from prism.gateway.auth import hash_api_key
from prism.kv.namespace import Namespace
from prism.kv.store import Store
from prism.testing.conformance import ConformanceSuite
from prism.testing.servers._base import free_port

API_KEY = "k-0123456789abcdef"


class PooledStore(Store):
    """A Store whose namespace names are handed out from the gateway's declared pool."""

    def __init__(self, backend: Any, served: Served) -> None:
        super().__init__(backend)
        self._served = served
        self._names: dict[str, str] = {}

    def namespace(self, name: str, **options: Any) -> Namespace:
        if name not in self._names:
            self._names[name] = next(self._served.free)
        return super().namespace(self._names[name], **options)


@pytest.fixture(scope="module")
def memory_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    yield from start_serve(tmp_path_factory.mktemp("grpc-memory"))


@pytest.fixture(scope="module")
def sqlite_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    directory = tmp_path_factory.mktemp("grpc-sqlite")
    yield from start_serve(directory, f"sqlite:///{directory / 'data.db'}")


class TestPrismGrpcMemory(ConformanceSuite):
    stateful_examples = 15

    @pytest.fixture
    def store_url(self, memory_gateway: Served) -> str:
        return memory_gateway.url

    @pytest.fixture
    async def store(self, store_url: str, memory_gateway: Served) -> AsyncIterator[Store]:
        async with PooledStore(open_backend(store_url), memory_gateway) as store:
            yield store


class TestPrismGrpcSqlite(ConformanceSuite):
    stateful_examples = 15

    @pytest.fixture
    def store_url(self, sqlite_gateway: Served) -> str:
        return sqlite_gateway.url

    @pytest.fixture
    async def store(self, store_url: str, sqlite_gateway: Served) -> AsyncIterator[Store]:
        async with PooledStore(open_backend(store_url), sqlite_gateway) as store:
            yield store


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    auth = f"auth: {{api_keys: [{{name: cli, sha256: {hash_api_key(API_KEY)}, roles: [writer]}}]}}\n"
    yield from start_serve(tmp_path_factory.mktemp("grpc-guarded"), extra=auth)


async def test_the_token_comes_from_the_environment_and_is_never_shown(
    guarded: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MY_PRISM_TOKEN", API_KEY)
    async with prism.connect(f"{guarded.url}?token_env=MY_PRISM_TOKEN&tls=false") as store:
        ns = store.namespace("pool-0")
        etag = await ns.put("k", b"v")
        item = await ns.get("k")
        assert item is not None and (item.value, item.etag) == (b"v", etag)
        assert API_KEY not in repr(store.backend)
    monkeypatch.setenv("PRISM_TOKEN", "not-the-key")
    async with prism.connect(guarded.url) as store:
        with pytest.raises(prism.PrismError, match="UNAUTHENTICATED INVALID_CREDENTIALS") as refused:
            await store.namespace("pool-0").get("k")
        assert "not-the-key" not in str(refused.value)


def test_a_token_in_the_url_is_refused_without_echoing_it() -> None:
    with pytest.raises(prism.InvalidArgument, match="token_env") as refused:
        prism.connect(f"prism://127.0.0.1:1/?token={API_KEY}")
    assert API_KEY not in str(refused.value)


def test_bad_options_are_named() -> None:
    with pytest.raises(prism.InvalidArgument, match="tls must be true or false"):
        prism.connect("prism://127.0.0.1:1?tls=maybe")
    with pytest.raises(prism.InvalidArgument, match=r"unknown prism:// options: \['colour'\]"):
        prism.connect("prism://127.0.0.1:1?colour=red")


async def test_an_unreachable_gateway_fails_at_connect_naming_it() -> None:
    port = free_port()
    url = f"prism://127.0.0.1:{port}?operation_timeout=1&connect_timeout=0.5&max_retries=1"
    with pytest.raises(prism.BackendUnavailable, match=f"Prism gateway at 127.0.0.1:{port}"):
        await prism.connect(url)


async def test_a_namespace_the_gateway_does_not_serve_is_named(memory_gateway: Served) -> None:
    async with prism.connect(memory_gateway.url) as store:
        with pytest.raises(prism.InvalidArgument, match="no namespace 'nope'"):
            await store.namespace("nope").put("k", b"v")
        with pytest.raises(prism.Unsupported, match="strongly consistent"):
            await store.namespace("pool-399").get("k", consistency="strong")


def test_the_blocking_api_works_too(memory_gateway: Served, tmp_path: Path) -> None:
    with prism.connect_sync(memory_gateway.url) as store:
        ns = store.namespace("pool-398")
        ns.put("k", b"v", ttl=60)
        item = ns.get("k")
        assert item is not None and item.value == b"v" and item.expires_at is not None
