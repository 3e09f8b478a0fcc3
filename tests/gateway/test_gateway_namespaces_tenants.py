"""Deleting a tenant-scoped runtime namespace: its tenants are recorded, checked and purged.

Each tenant's data lives in a namespace of its own in the store; the gateway records a
tenant in the control store before its first write, so a delete finds every tenant's part.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any, ClassVar

import httpx
import msgspec
import pytest
from gateway_helpers import api_keys_config, build_app, client_for, headers, running
from test_gateway_namespaces_shared import config as shared_config
from test_gateway_namespaces_shared import two, until

from prism.backends.memory import MemoryBackend
from prism.control.catalog import CatalogState
from prism.errors import BackendUnavailable
from prism.gateway.auth import hash_api_key
from prism.model import StoredWrite, WriteOutcome
from prism.testing.servers.redis import RedisServer, redis_server

pytestmark = pytest.mark.anyio

ADMIN = headers("admin")
ACME = headers("acme")
GLOBEX = headers("globex")
ACME_ADMIN = {"X-API-Key": "key-acme-namespace-admin"}
SCOPED = {"tenant_scoped": True, "store": "data"}


class CountedControl(MemoryBackend):
    """A memory backend counting (and, when ``failing``, refusing) writes of recorded tenants."""

    failing: ClassVar[bool] = False
    tenant_writes: ClassVar[int] = 0

    @classmethod
    def from_url(cls, url: str, **options: Any) -> CountedControl:
        return cls(url.split("://", 1)[1].strip("/"))

    async def write(self, ns: str, writes: Sequence[StoredWrite]) -> list[WriteOutcome]:
        if ns == "prism.control" and any(w.record.startswith("tenants~") for w in writes):
            if CountedControl.failing:
                raise BackendUnavailable("the control store went away")
            CountedControl.tenant_writes += 1
        return await super().write(ns, writes)


class FlakyPurge(MemoryBackend):
    """A memory backend whose whole-record deletes fail once ``allowed`` of them have run."""

    allowed: ClassVar[int | None] = None

    @classmethod
    def from_url(cls, url: str, **options: Any) -> FlakyPurge:
        return cls(url.split("://", 1)[1].strip("/"))

    async def delete_range(self, ns: str, record: str, start: str | None, end: str | None) -> int:
        if FlakyPurge.allowed is not None:
            if FlakyPurge.allowed == 0:
                raise BackendUnavailable("the store went away mid-purge")
            FlakyPurge.allowed -= 1
        return await super().delete_range(ns, record, start, end)


def config(**overrides: Any) -> dict[str, Any]:
    run = uuid.uuid4().hex[:8]
    keys = [
        *api_keys_config(),
        {
            "name": "acme-nsadmin",
            "sha256": hash_api_key(ACME_ADMIN["X-API-Key"]),
            "roles": ["nsadmin"],
            "tenant": "acme",
        },
    ]
    cfg: dict[str, Any] = {
        # The first store keeps the runtime namespaces (no control store is named).
        "stores": {
            "ctl": {
                "url": f"memory://tenants-ctl-{run}",
                "backend": "test_gateway_namespaces_tenants:CountedControl",
            },
            "data": {
                "url": f"memory://tenants-data-{run}",
                "backend": "test_gateway_namespaces_tenants:FlakyPurge",
            },
        },
        "namespaces": [{"name": "fixed", "store": "data"}],
        "auth": {"api_keys": keys, "namespace_admin_roles": ["admin", "nsadmin"]},
        "control": {"namespaces": {"poll_interval": 0.05, "delete_settle": 0}},
        "audit": {"sink": "none"},
    }
    cfg.update(overrides)
    return cfg


async def write_both_tenants(c: httpx.AsyncClient, ns: str) -> None:
    for i in range(3):
        r = await c.put(f"/v1/kv/{ns}/a{i}", content=b"acme", headers=ACME)
        assert r.status_code == 201, r.text
    r = await c.put(f"/v1/kv/{ns}/g", content=b"globex", headers=GLOBEX)
    assert r.status_code == 201, r.text
    r = await c.put(f"/v1/records/{ns}/r", json={"items": [{"key": "i", "value": "eA=="}]}, headers=GLOBEX)
    assert r.status_code == 200, r.text


async def test_a_tenant_scoped_namespace_is_refused_while_any_tenant_holds_data_unless_purged() -> None:
    async with client_for(config()) as c:
        assert (await c.put("/v1/namespaces/orders", json=SCOPED, headers=ADMIN)).status_code == 201
        await write_both_tenants(c, "orders")

        r = await c.delete("/v1/namespaces/orders", headers=ADMIN)
        assert r.status_code == 409 and r.json()["code"] == "NAMESPACE_NOT_EMPTY", r.text
        assert "2 tenant(s)" in r.json()["detail"]
        # A namespace admin of one tenant learns how many tenants hold data, never which.
        r = await c.delete("/v1/namespaces/orders", headers=ACME_ADMIN)
        assert r.status_code == 409 and "2 tenant(s)" in r.json()["detail"]
        assert "globex" not in r.text and "acme" not in r.text
        # Refused: served again, both tenants' data intact.
        assert (await c.get("/v1/kv/orders/a1", headers=ACME)).content == b"acme"
        assert (await c.get("/v1/kv/orders/g", headers=GLOBEX)).content == b"globex"

        r = await c.delete("/v1/namespaces/orders?purge=true", headers=ADMIN)
        assert r.status_code == 200, r.text
        assert r.json()["purged_records"] == 5
        assert (await c.get("/v1/namespaces/orders", headers=ADMIN)).status_code == 404

        # Created again under the same name, it is empty for every tenant, and holds no tenant.
        assert (await c.put("/v1/namespaces/orders", json=SCOPED, headers=ADMIN)).status_code == 201
        for key, who in (("a1", ACME), ("g", GLOBEX)):
            assert (await c.get(f"/v1/kv/orders/{key}", headers=who)).status_code == 404
        assert (await c.get("/v1/kv/orders", headers=GLOBEX)).json()["keys"] == []
        # Written to after it was created anew, the tenant is recorded anew.
        assert (await c.put("/v1/kv/orders/again", content=b"x", headers=ACME)).status_code == 201
        r = await c.delete("/v1/namespaces/orders", headers=ADMIN)
        assert r.status_code == 409 and "1 tenant(s)" in r.json()["detail"]
        assert (await c.delete("/v1/kv/orders/again", headers=ACME)).status_code in (200, 204)
        # Every tenant's part empty: deleted without a purge.
        r = await c.delete("/v1/namespaces/orders", headers=ADMIN)
        assert r.status_code == 200 and r.json()["purged_records"] == 0, r.text


async def test_a_tenant_is_recorded_once_and_its_first_write_fails_when_it_cannot_be() -> None:
    CountedControl.tenant_writes = 0
    async with client_for(config()) as c:
        assert (await c.put("/v1/namespaces/carts", json=SCOPED, headers=ADMIN)).status_code == 201
        CountedControl.failing = True
        try:
            r = await c.put("/v1/kv/carts/k", content=b"v", headers=ACME)
            assert r.status_code == 503 and r.json()["code"] == "TENANT_NOT_RECORDED", r.text
            assert "Retry-After" in r.headers
            # Nothing was written that a delete could not find.
            assert (await c.get("/v1/kv/carts/k", headers=ACME)).status_code == 404
            # Reads need no record.
            assert (await c.get("/v1/kv/carts", headers=ACME)).status_code == 200
        finally:
            CountedControl.failing = False
        for i in range(20):
            assert (await c.put(f"/v1/kv/carts/k{i}", content=b"v", headers=ACME)).status_code == 201
        # One write to the control store for the tenant, whatever the number of its writes.
        assert CountedControl.tenant_writes == 1
        r = await c.delete("/v1/namespaces/carts", headers=ADMIN)
        assert r.status_code == 409 and "1 tenant(s)" in r.json()["detail"]


async def test_tenants_writing_for_the_first_time_at_once_are_all_recorded() -> None:
    tenants = [f"t{i}" for i in range(12)]
    keys = [
        {"name": t, "sha256": hash_api_key(f"key-{t}"), "roles": ["writer"], "tenant": t} for t in tenants
    ]
    cfg = config()
    cfg["auth"]["api_keys"] += keys
    CountedControl.tenant_writes = 0
    async with client_for(cfg) as c:
        assert (await c.put("/v1/namespaces/burst", json=SCOPED, headers=ADMIN)).status_code == 201
        writes = [
            c.put(f"/v1/kv/burst/k{i}", content=b"v", headers={"X-API-Key": f"key-{t}"})
            for t in tenants
            for i in range(4)
        ]
        answers = await asyncio.gather(*writes)
        assert all(r.status_code == 201 for r in answers), [r.text for r in answers if r.status_code != 201]
        # Concurrent first writes of one tenant may each record it, but never more than its writes.
        assert len(tenants) <= CountedControl.tenant_writes <= 4 * len(tenants)
        r = await c.delete("/v1/namespaces/burst", headers=ADMIN)
        assert r.status_code == 409 and f"{len(tenants)} tenant(s)" in r.json()["detail"], r.text
        r = await c.delete("/v1/namespaces/burst?purge=true", headers=ADMIN)
        assert r.status_code == 200 and r.json()["purged_records"] == 4 * len(tenants), r.text


async def test_a_namespace_created_anew_records_its_tenants_anew_in_a_process_that_saw_no_delete() -> None:
    app = build_app(config())
    async with running(app) as c:
        catalog = app.state.gateway.runtime_namespaces.catalog
        assert (await c.put("/v1/namespaces/orders", json=SCOPED, headers=ADMIN)).status_code == 201
        assert (await c.put("/v1/kv/orders/k", content=b"v", headers=ACME)).status_code == 201
        assert await catalog.tenants("orders") == ["acme"]

        # Deleted and created again with the same definition by another process, between two
        # reads of the catalog by this one: only the entry's creation time tells them apart.
        async def recreate(state: CatalogState) -> tuple[CatalogState, None]:
            entry = state.namespaces["orders"]
            anew = msgspec.structs.replace(entry, created_at=entry.created_at + 1)
            return msgspec.structs.replace(state, namespaces={**state.namespaces, "orders": anew}), None

        await catalog.forget_tenants("orders")
        await catalog.change(recreate)
        assert (await c.put("/v1/kv/orders/k2", content=b"v", headers=ACME)).status_code == 201
        assert await catalog.tenants("orders") == ["acme"]


async def test_a_purge_of_tenants_that_fails_half_way_is_finished_by_deleting_again() -> None:
    async with client_for(config()) as c:
        assert (await c.put("/v1/namespaces/half", json=SCOPED, headers=ADMIN)).status_code == 201
        await write_both_tenants(c, "half")
        FlakyPurge.allowed = 2
        try:
            r = await c.delete("/v1/namespaces/half?purge=true", headers=ADMIN)
            assert r.status_code == 503, r.text
            assert (await c.get("/v1/kv/half/g", headers=GLOBEX)).json()["code"] == "NAMESPACE_NOT_FOUND"
            r = await c.put("/v1/namespaces/half", json=SCOPED, headers=ADMIN)
            assert r.status_code == 409 and r.json()["code"] == "NAMESPACE_DELETING"
        finally:
            FlakyPurge.allowed = None
        r = await c.delete("/v1/namespaces/half?purge=true", headers=ADMIN)
        assert r.status_code == 200 and r.json()["purged_records"] == 3, r.text
        assert (await c.put("/v1/namespaces/half", json=SCOPED, headers=ADMIN)).status_code == 201
        assert (await c.get("/v1/kv/half/g", headers=GLOBEX)).status_code == 404
        assert (await c.get("/v1/kv/half/a0", headers=ACME)).status_code == 404


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisServer]:
    with redis_server() as server:
        yield server


async def test_tenants_written_through_one_process_are_purged_through_the_other(
    tmp_path: Path, redis: RedisServer
) -> None:
    with ExitStack() as stack:
        a, b = two(tmp_path, shared_config({"url": redis.url_for(3)}), stack)
        async with httpx.AsyncClient(timeout=10) as http:
            r = await http.put(f"{a}/v1/namespaces/orders", json={"tenant_scoped": True}, headers=ADMIN)
            assert r.status_code == 201, r.text

            async def b_serves() -> bool:
                r = await http.put(f"{b}/v1/kv/orders/first", content=b"acme", headers=ACME)
                return r.status_code in (200, 201)

            await until(b_serves, 2.0)
            r = await http.put(f"{b}/v1/kv/orders/g", content=b"globex", headers=GLOBEX)
            assert r.status_code == 201, r.text

            r = await http.delete(f"{a}/v1/namespaces/orders", headers=ADMIN)
            assert r.status_code == 409 and "2 tenant(s)" in r.json()["detail"], r.text

            async def b_serves_again() -> bool:
                return (await http.get(f"{b}/v1/kv/orders/g", headers=GLOBEX)).status_code == 200

            await until(b_serves_again, 2.0)
            # Written after the refusal through b (its record of the tenant made anew), then purged through a.
            r = await http.put(f"{b}/v1/kv/orders/second", content=b"acme", headers=ACME)
            assert r.status_code == 201, r.text
            r = await http.delete(f"{a}/v1/namespaces/orders?purge=true", headers=ADMIN)
            assert r.status_code == 200 and r.json()["purged_records"] == 3, r.text

            r = await http.put(f"{a}/v1/namespaces/orders", json={"tenant_scoped": True}, headers=ADMIN)
            assert r.status_code == 201, r.text

            async def b_serves_new() -> bool:
                r = await http.get(f"{b}/v1/kv/orders/g", headers=GLOBEX)
                return r.status_code == 404 and r.json().get("code") != "NAMESPACE_NOT_FOUND"

            await until(b_serves_new, 2.0)
            for key, who in (("first", ACME), ("second", ACME), ("g", GLOBEX)):
                assert (await http.get(f"{b}/v1/kv/orders/{key}", headers=who)).status_code == 404
            assert (await http.delete(f"{a}/v1/namespaces/orders", headers=ADMIN)).status_code == 200


async def test_a_first_write_is_refused_while_the_control_store_is_stopped(tmp_path: Path) -> None:
    with redis_server() as server:
        cfg = shared_config({"url": server.url_for(4)})
        cfg["stores"] = {"data": f"sqlite:///{tmp_path / 'data.db'}", "control": server.url_for(4)}
        cfg["control"] = {
            "store": "control",
            "on_failure": "local",
            "namespaces": {"poll_interval": 0.05, "delete_settle": 0},
        }
        async with client_for(cfg) as c:
            r = await c.put(
                "/v1/namespaces/orders", json={"tenant_scoped": True, "store": "data"}, headers=ADMIN
            )
            assert r.status_code == 201, r.text
            assert (await c.put("/v1/kv/orders/k", content=b"v", headers=GLOBEX)).status_code == 201
            server.stop()
            try:
                r = await c.put("/v1/kv/orders/k", content=b"v", headers=ACME)
                assert r.status_code == 503 and r.json()["code"] == "TENANT_NOT_RECORDED", r.text
                # A tenant recorded before writes on without the control store.
                assert (await c.put("/v1/kv/orders/k2", content=b"v", headers=GLOBEX)).status_code == 201
            finally:
                server.start()
            assert (await c.get("/v1/kv/orders/k", headers=ACME)).status_code == 404
            assert (await c.put("/v1/kv/orders/k", content=b"v", headers=ACME)).status_code == 201
            r = await c.delete("/v1/namespaces/orders?purge=true", headers=ADMIN)
            assert r.status_code == 200 and r.json()["purged_records"] == 3, r.text
