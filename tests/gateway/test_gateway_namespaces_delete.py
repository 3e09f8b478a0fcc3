"""Deleting runtime namespaces against races: two deletes at once, writes in flight, slow purges,
and a catalog the control store lost or that a newer version wrote."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, ClassVar

import msgspec
import pytest
from gateway_helpers import client_for, headers
from test_gateway_namespaces import ADMIN, config

import prism
from prism.backends.memory import MemoryBackend
from prism.control.catalog import CATALOG_KEY, CONTROL_NAMESPACE

pytestmark = pytest.mark.anyio


class SlowStore(MemoryBackend):
    """A memory backend whose writes of record ``late`` and whose whole-record deletes are slow."""

    write_delay: ClassVar[float] = 0.0
    delete_delay: ClassVar[float] = 0.0
    #: Reads of the catalog hang until this is set (a control store that stopped answering).
    hang_control: ClassVar[asyncio.Event | None] = None

    @classmethod
    def from_url(cls, url: str, **options: Any) -> SlowStore:
        return cls(url.split("://", 1)[1].strip("/"))

    async def write(self, ns: str, ops: Any) -> Any:
        if any(getattr(op, "record", None) == "late" for op in ops):
            await asyncio.sleep(SlowStore.write_delay)
        return await super().write(ns, ops)

    async def delete_range(self, ns: str, record: str, start: str | None, end: str | None) -> int:
        await asyncio.sleep(SlowStore.delete_delay)
        return await super().delete_range(ns, record, start, end)

    async def get(self, ns: str, record: str, key: str, *, consistent: bool = False) -> Any:
        hang = SlowStore.hang_control
        if hang is not None and ns == CONTROL_NAMESPACE:
            await hang.wait()
        return await super().get(ns, record, key, consistent=consistent)


def slow_config(tmp_path: Path, **namespaces: Any) -> dict[str, Any]:
    store = {
        "url": f"memory://slow-{uuid.uuid4().hex[:8]}",
        "backend": "test_gateway_namespaces_delete:SlowStore",
    }
    cfg = config(tmp_path, stores={"slow": store}, namespaces=[{"name": "fixed"}])
    cfg["control"] = {"namespaces": {"poll_interval": 0.05, "delete_settle": 0, **namespaces}}
    return cfg


async def test_a_second_delete_while_one_runs_is_refused_and_no_acknowledged_write_is_lost(
    tmp_path: Path,
) -> None:
    async with client_for(config(tmp_path)) as c:
        assert (await c.put("/v1/namespaces/carts", json={}, headers=ADMIN)).status_code == 201
        assert (await c.put("/v1/kv/carts/old", content=b"x", headers=headers("writer"))).status_code == 201
        purge = asyncio.create_task(c.delete("/v1/namespaces/carts?purge=true", headers=ADMIN))
        await asyncio.sleep(0.3)
        plain = await c.delete("/v1/namespaces/carts", headers=ADMIN)
        assert plain.status_code == 409 and plain.json()["code"] == "NAMESPACE_DELETING", plain.text
        await asyncio.sleep(0.2)
        # Still not served: a write is refused, never acknowledged and then purged.
        w = await c.put("/v1/kv/carts/acked", content=b"important", headers=headers("writer"))
        assert w.status_code == 404 and w.json()["code"] == "NAMESPACE_NOT_FOUND", w.text
        r = await purge
        assert r.status_code == 200 and r.json()["purged_records"] == 1, r.text
        assert (await c.get("/v1/namespaces/carts", headers=ADMIN)).status_code == 404


async def test_a_write_in_flight_during_a_delete_is_seen_by_its_emptiness_check(tmp_path: Path) -> None:
    cfg = slow_config(tmp_path)
    cfg["server"] = {"request_timeout": 2.0}
    SlowStore.write_delay = 1.5
    try:
        async with client_for(cfg) as c:
            assert (await c.put("/v1/namespaces/carts", json={}, headers=ADMIN)).status_code == 201
            write = asyncio.create_task(
                c.put("/v1/kv/carts/late", content=b"secret", headers=headers("writer"))
            )
            await asyncio.sleep(0.1)
            d = await c.delete("/v1/namespaces/carts", headers=ADMIN)
            w = await write
            assert w.status_code == 201, w.text
            # The acknowledged write landed before the check: the delete is refused, the data kept.
            assert d.status_code == 409 and d.json()["code"] == "NAMESPACE_NOT_EMPTY", d.text
            await asyncio.sleep(0.2)
            g = await c.get("/v1/kv/carts/late", headers=headers("reader"))
            assert g.status_code == 200 and g.content == b"secret"
    finally:
        SlowStore.write_delay = 0.0


async def test_a_write_whose_body_arrives_after_the_delete_is_refused(tmp_path: Path) -> None:
    async with client_for(config(tmp_path)) as c:
        assert (await c.put("/v1/namespaces/carts", json={}, headers=ADMIN)).status_code == 201

        async def slow_body() -> AsyncIterator[bytes]:
            await asyncio.sleep(2.0)  # past the delete's wait (request_timeout 1 s + a poll)
            yield b"secret"

        write = asyncio.create_task(
            c.put("/v1/kv/carts/late", content=slow_body(), headers=headers("writer"))
        )
        await asyncio.sleep(0.1)
        d = await c.delete("/v1/namespaces/carts", headers=ADMIN)
        assert d.status_code == 200 and d.json()["purged_records"] == 0, d.text
        w = await write
        assert w.status_code == 404 and w.json()["code"] == "NAMESPACE_NOT_FOUND", w.text
        # Nothing was left behind for a namespace later made under the same name.
        assert (await c.put("/v1/namespaces/carts", json={}, headers=ADMIN)).status_code == 201
        await asyncio.sleep(0.2)
        assert (await c.get("/v1/kv/carts/late", headers=headers("reader"))).status_code == 404


async def test_a_purge_past_purge_timeout_answers_503_and_deleting_again_finishes_it(tmp_path: Path) -> None:
    cfg = slow_config(tmp_path, purge_timeout=0.3)
    cfg["server"] = {"request_timeout": 0.5}
    async with client_for(cfg) as c:
        c.headers.update(ADMIN)
        assert (await c.put("/v1/namespaces/big", json={})).status_code == 201
        for i in range(6):
            assert (await c.put(f"/v1/kv/big/k{i}", content=b"x")).status_code == 201
        SlowStore.delete_delay = 0.1
        try:
            r = await c.delete("/v1/namespaces/big?purge=true")
            assert r.status_code == 503 and r.json()["code"] == "DELETE_TIMEOUT", r.text
            assert "control.namespaces.purge_timeout" in r.json()["detail"]
            assert (await c.get("/v1/kv/big/k5")).json()["code"] == "NAMESPACE_NOT_FOUND"
            r = await c.put("/v1/namespaces/big", json={})
            assert r.status_code == 409 and r.json()["code"] == "NAMESPACE_DELETING"
        finally:
            SlowStore.delete_delay = 0.0
        r = await c.delete("/v1/namespaces/big?purge=true")
        assert r.status_code == 200, r.text
        assert 0 < r.json()["purged_records"] < 6
        assert (await c.get("/v1/namespaces/big")).status_code == 404


async def test_put_and_delete_answer_503_within_request_timeout_when_the_catalog_hangs(
    tmp_path: Path,
) -> None:
    cfg = slow_config(tmp_path)
    cfg["server"] = {"request_timeout": 0.5}
    async with client_for(cfg) as c:
        c.headers.update(ADMIN)
        assert (await c.put("/v1/namespaces/carts", json={})).status_code == 201
        SlowStore.hang_control = released = asyncio.Event()
        try:
            for method, path in (("PUT", "/v1/namespaces/other"), ("DELETE", "/v1/namespaces/carts")):
                started = time.monotonic()
                r = await c.request(method, path, json={} if method == "PUT" else None)
                assert r.status_code == 503 and r.json()["code"] == "TIMEOUT", (method, r.text)
                assert "server.request_timeout" in r.json()["detail"]
                assert time.monotonic() - started < 3.0
        finally:
            SlowStore.hang_control = None
            released.set()
        assert (await c.put("/v1/namespaces/other", json={})).status_code == 201
        assert (await c.get("/v1/kv/carts/k")).json()["code"] == "KEY_NOT_FOUND"


async def _catalog(url: str) -> tuple[Any, Any, dict[str, Any]]:
    store = await prism.connect(url)
    ns = store.namespace(CONTROL_NAMESPACE)
    item = await ns.get(CATALOG_KEY)
    assert item is not None
    return store, item, msgspec.json.decode(item.value)


async def test_a_deletion_whose_process_died_is_resumed_once_its_token_is_stale(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    async with client_for(cfg) as c:
        c.headers.update(ADMIN)
        assert (await c.put("/v1/namespaces/gone", json={})).status_code == 201
        for age, code in ((1.0, 409), (3600.0, 200)):
            store, item, cat = await _catalog(cfg["stores"]["small"]["url"])
            entry = cat["namespaces"]["gone"]
            entry.update(state="deleting", deletion="dead-process", updated_at=entry["updated_at"] - age)
            cat["version"] += 1
            await store.namespace(CONTROL_NAMESPACE).put(
                CATALOG_KEY, msgspec.json.encode(cat), if_match=item.etag
            )
            await store.close()
            r = await c.delete("/v1/namespaces/gone")
            assert r.status_code == code, r.text
            if code == 409:
                assert r.json()["code"] == "NAMESPACE_DELETING"
        assert (await c.get("/v1/namespaces/gone")).status_code == 404


async def test_a_catalog_the_control_store_lost_is_followed_from_its_new_start(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    async with client_for(cfg) as c:
        for i in range(3):
            assert (await c.put(f"/v1/namespaces/old{i}", json={}, headers=ADMIN)).status_code == 201
        store = await prism.connect(cfg["stores"]["small"]["url"])
        await store.namespace(CONTROL_NAMESPACE).delete(CATALOG_KEY)
        await store.close()
        assert (await c.put("/v1/namespaces/fresh", json={}, headers=ADMIN)).status_code == 201
        await asyncio.sleep(0.3)
        w = await c.put("/v1/kv/fresh/k", content=b"v", headers=headers("writer"))
        assert w.status_code == 201, w.text
        assert (await c.get("/v1/namespaces/fresh", headers=ADMIN)).status_code == 200
        # The lost namespaces are in no catalog: no longer served.
        r = await c.put("/v1/kv/old0/k", content=b"v", headers=headers("writer"))
        assert r.status_code == 404 and r.json()["code"] == "NAMESPACE_NOT_FOUND"


async def test_catalog_entries_with_fields_unknown_here_are_read_and_unreadable_ones_are_503(
    tmp_path: Path,
) -> None:
    cfg = config(tmp_path)
    async with client_for(cfg) as c:
        c.headers.update(ADMIN)
        assert (await c.put("/v1/namespaces/a", json={"needs": {"read_rps": 5}})).status_code == 201
        store, item, cat = await _catalog(cfg["stores"]["small"]["url"])
        # Written leniently: fields at their defaults are left out.
        assert "tenant_scoped" not in cat["namespaces"]["a"]["config"]
        newer = dict(cat["namespaces"]["a"])
        newer["config"] = {
            **newer["config"],
            "name": "b",
            "new_field_of_v2": 1,
            "needs": {**newer["config"]["needs"], "new_need": 2},
        }
        broken = dict(cat["namespaces"]["a"])
        broken["config"] = {**broken["config"], "name": "c", "audit": "not a bool"}
        cat["namespaces"].update(b=newer, c=broken)
        cat["version"] += 1
        await store.namespace(CONTROL_NAMESPACE).put(
            CATALOG_KEY, msgspec.json.encode(cat), if_match=item.etag
        )
        await store.close()
        await asyncio.sleep(0.3)
        assert (await c.put("/v1/kv/b/k", content=b"v", headers=headers("writer"))).status_code == 201
        r = await c.put("/v1/namespaces/other", json={})
        assert r.status_code == 503 and r.json()["code"] == "CATALOG_ENTRY_UNREADABLE", r.text
        assert "'c'" in r.json()["detail"] and "audit" in r.json()["detail"]
        r = await c.delete("/v1/namespaces/c")
        assert r.status_code == 503 and r.json()["code"] == "CATALOG_ENTRY_UNREADABLE", r.text
        assert (await c.delete("/v1/namespaces/b?purge=true")).status_code == 200
