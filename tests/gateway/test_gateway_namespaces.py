"""Runtime namespaces in one gateway: create, plan, change, list, delete, audit and enforced rates."""

from __future__ import annotations

import asyncio
import functools
import json
import subprocess
import sys
import uuid
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import pytest
from gateway_helpers import api_keys_config, client_for, headers

from prism.backends.memory import MemoryBackend
from prism.errors import BackendUnavailable
from prism.gateway.auth import hash_api_key
from prism.gateway.config import ConfigError, parse_config

pytestmark = pytest.mark.anyio

NS_ADMIN_KEY = "key-namespace-admin"


class FlakyDeletes(MemoryBackend):
    """A memory backend whose whole-record deletes fail once ``allowed`` of them have run."""

    allowed: ClassVar[int | None] = None

    @classmethod
    def from_url(cls, url: str, **options: Any) -> FlakyDeletes:
        return cls(url.split("://", 1)[1].strip("/"))

    async def delete_range(self, ns: str, record: str, start: str | None, end: str | None) -> int:
        if FlakyDeletes.allowed is not None:
            if FlakyDeletes.allowed == 0:
                raise BackendUnavailable("the store went away mid-purge")
            FlakyDeletes.allowed -= 1
        return await super().delete_range(ns, record, start, end)


class NoSeries(MemoryBackend):
    """A memory backend that declares no TimeSeries store."""

    capabilities = replace(MemoryBackend.capabilities, timeseries=False)
    timeseries_unsupported = "a test backend without TimeSeries"

    @classmethod
    def from_url(cls, url: str, **options: Any) -> NoSeries:
        return cls(url.split("://", 1)[1].strip("/"))


def config(tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    keys = [
        *api_keys_config(),
        {"name": "nsadmin", "sha256": hash_api_key(NS_ADMIN_KEY), "roles": ["nsadmin"]},
    ]
    run = uuid.uuid4().hex[:8]
    cfg: dict[str, Any] = {
        "stores": {
            "small": {"url": f"memory://ns-small-{run}", "capacity": {"read_rps": 100, "write_rps": 50}},
            "big": {
                "url": f"memory://ns-big-{run}",
                "capacity": {"read_rps": 1000, "write_rps": 500, "total_bytes": 10**9, "latency_p99_ms": 5},
            },
        },
        "namespaces": [{"name": "fixed", "store": "small"}],
        "auth": {"api_keys": keys, "namespace_admin_roles": ["admin", "nsadmin"]},
        "control": {"namespaces": {"poll_interval": 0.05, "delete_settle": 0}},
        # A delete waits out requests in flight (server.request_timeout): short here.
        "server": {"request_timeout": 1.0},
        "audit": {"sink": "none"},
    }
    cfg.update(overrides)
    return cfg


ADMIN = headers("admin")
NSADMIN = {"X-API-Key": NS_ADMIN_KEY}


async def test_admin_creates_a_namespace_that_is_served_at_once(tmp_path: Path) -> None:
    async with client_for(config(tmp_path)) as c:
        r = await c.put(
            "/v1/namespaces/carts", json={"needs": {"read_rps": 50, "write_rps": 10}}, headers=ADMIN
        )
        assert r.status_code == 201, r.text
        body = r.json()
        assert body["store"] == "small" and body["created"] is True and body["dry_run"] is False
        assert body["limits"] == {"read_rate": 60.0, "read_burst": 60, "write_rate": 12.0, "write_burst": 12}
        r = await c.put("/v1/kv/carts/k1", content=b"v1", headers=headers("writer"))
        assert r.status_code in (200, 201), r.text
        assert (await c.get("/v1/kv/carts/k1", headers=headers("reader"))).content == b"v1"
        listed = (await c.get("/v1/namespaces", headers=headers("reader"))).json()
        assert {n["name"] for n in listed["namespaces"]} == {"fixed", "carts"}
        detail = (await c.get("/v1/namespaces/carts", headers=ADMIN)).json()
        assert detail["store"] == "small" and detail["limits"]["read_rate"] == 60.0
        assert (detail["limits"]["write_rate"], detail["limits"]["rate"]) == (12.0, None)
        assert detail["limits"]["read_burst"] == 60 and detail["limits"]["write_burst"] == 12
        assert detail["needs"]["read_rps"] == 50.0 and detail["needs"]["write_rps"] == 10.0
        assert "needs" not in (await c.get("/v1/namespaces/carts", headers=headers("reader"))).json()
        # A change keeps the namespace where it is and answers 200.
        r = await c.put("/v1/namespaces/carts", json={"needs": {"read_rps": 80}}, headers=NSADMIN)
        assert r.status_code == 200, r.text
        assert r.json()["created"] is False and r.json()["store"] == "small"
        detail = (await c.get("/v1/namespaces/carts", headers=ADMIN)).json()
        assert (detail["limits"]["read_rate"], detail["limits"].get("write_rate")) == (96.0, None)


async def test_only_namespace_admins_may_change_namespaces(tmp_path: Path) -> None:
    async with client_for(config(tmp_path)) as c:
        for who in ("writer", "reader", "nobody"):
            r = await c.put("/v1/namespaces/x", json={}, headers=headers(who))
            assert r.status_code == 403, r.text
        r = await c.put("/v1/namespaces/x", json={})
        assert r.status_code == 401
        assert (await c.get("/v1/namespaces/x", headers=ADMIN)).status_code == 404
        assert (await c.put("/v1/namespaces/x", json={}, headers=ADMIN)).status_code == 201
        assert (await c.delete("/v1/namespaces/x", headers=headers("writer"))).status_code == 403
        assert (await c.get("/v1/namespaces/x", headers=ADMIN)).status_code == 200


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"needs": {"read_rps": -1}}, "needs.read_rps"),
        ({"needs": {"read_rps": "many"}}, "$.needs.read_rps"),
        ({"needs": {"consistency": "linear"}}, "$.needs.consistency"),
        ({"colour": "blue"}, "colour"),
        ({"max_value_bytes": 0}, "max_value_bytes"),
        ({"pii": {"fields": ["a..b"]}}, "pii.fields[0]"),
        ({"pii": {"fields": ["email"], "encrypt": True}}, "pii.encrypt"),
        ({"access": {"read": ["bad role!"]}}, "access.read[0]"),
        ({"store": "nowhere"}, "store"),
    ],
)
async def test_bad_input_names_the_field_and_creates_nothing(
    tmp_path: Path, body: dict[str, Any], field: str
) -> None:
    async with client_for(config(tmp_path)) as c:
        r = await c.put("/v1/namespaces/bad", json=body, headers=ADMIN)
        assert r.status_code == 400, r.text
        assert field in r.json()["detail"]
        assert (await c.get("/v1/namespaces/bad", headers=ADMIN)).status_code == 404


async def test_reserved_and_config_file_names_are_refused(tmp_path: Path) -> None:
    async with client_for(config(tmp_path)) as c:
        r = await c.put("/v1/namespaces/fixed", json={}, headers=ADMIN)
        assert r.status_code == 409 and r.json()["code"] == "NAMESPACE_READ_ONLY"
        assert (await c.delete("/v1/namespaces/fixed", headers=ADMIN)).status_code == 409
        r = await c.put("/v1/namespaces/prism-audit", json={}, headers=ADMIN)
        assert r.status_code == 400 and "name" in r.json()["detail"]


async def test_the_planner_refuses_with_every_stores_reasons(tmp_path: Path) -> None:
    async with client_for(config(tmp_path)) as c:
        body = {"needs": {"read_rps": 5000, "latency_p99_ms": 10, "durability": "disk"}}
        r = await c.put("/v1/namespaces/huge", json=body, headers=ADMIN)
        assert r.status_code == 422, r.text
        problem = r.json()
        assert problem["code"] == "NO_STORE_FITS"
        assert problem["stores"] == [
            {
                "store": "small",
                "fails": [
                    {"need": "read_rps", "wanted": 5000.0, "has": 100.0},
                    {"need": "latency_p99_ms", "wanted": 10.0, "has": None},
                    {"need": "durability", "wanted": "disk", "has": "memory"},
                ],
            },
            {
                "store": "big",
                "fails": [
                    {"need": "read_rps", "wanted": 5000.0, "has": 1000.0},
                    {"need": "durability", "wanted": "disk", "has": "memory"},
                ],
            },
        ]
        assert (await c.get("/v1/namespaces/huge", headers=ADMIN)).status_code == 404


async def test_dry_run_shows_the_decision_without_applying_it(tmp_path: Path) -> None:
    async with client_for(config(tmp_path)) as c:
        body = {"needs": {"read_rps": 200, "latency_p99_ms": 10}}
        r = await c.put("/v1/namespaces/later?dry_run=true", json=body, headers=ADMIN)
        assert r.status_code == 200, r.text
        assert r.json()["store"] == "big" and r.json()["dry_run"] is True
        assert [s["store"] for s in r.json()["refused"]] == ["small"]
        assert (await c.get("/v1/namespaces/later", headers=ADMIN)).status_code == 404
        r = await c.put("/v1/namespaces/later?dry_run=maybe", json=body, headers=ADMIN)
        assert r.status_code == 400 and "dry_run" in r.json()["detail"]


async def test_placed_namespaces_use_up_a_stores_room(tmp_path: Path) -> None:
    async with client_for(config(tmp_path)) as c:
        for i in range(2):
            r = await c.put(f"/v1/namespaces/n{i}", json={"needs": {"write_rps": 25}}, headers=ADMIN)
            assert r.json()["store"] == "small", r.text
        # small has 50 write rps, both used: the next goes to big.
        r = await c.put("/v1/namespaces/n2", json={"needs": {"write_rps": 25}}, headers=ADMIN)
        assert r.json()["store"] == "big", r.text
        # Changing n0 may use its own share again, not more.
        r = await c.put("/v1/namespaces/n0", json={"needs": {"write_rps": 25}}, headers=ADMIN)
        assert r.status_code == 200
        r = await c.put("/v1/namespaces/n0", json={"needs": {"write_rps": 26}}, headers=ADMIN)
        assert r.status_code == 422
        assert r.json()["stores"] == [
            {"store": "small", "fails": [{"need": "write_rps", "wanted": 26.0, "has": 25.0}]}
        ]
        # Placements one after another fill big's 500 - 25 write rps and no more. (Concurrent
        # placements racing on the catalog are tested across processes, where they interleave.)
        puts = [
            c.put(f"/v1/namespaces/c{i}", json={"needs": {"write_rps": 100}, "store": "big"}, headers=ADMIN)
            for i in range(8)
        ]
        statuses = sorted(r.status_code for r in await asyncio.gather(*puts))
        assert statuses == [201] * 4 + [422] * 4


async def test_naming_the_store_needs_the_store_admin_role_and_still_checks_needs(tmp_path: Path) -> None:
    async with client_for(config(tmp_path)) as c:
        r = await c.put("/v1/namespaces/e1", json={"store": "big"}, headers=NSADMIN)
        assert r.status_code == 403 and "store_admin_roles" in r.json()["detail"]
        r = await c.put(
            "/v1/namespaces/e1", json={"store": "small", "needs": {"read_rps": 500}}, headers=ADMIN
        )
        assert r.status_code == 422
        assert [s["store"] for s in r.json()["stores"]] == ["small"]
        r = await c.put("/v1/namespaces/e1", json={"store": "big", "needs": {"read_rps": 10}}, headers=ADMIN)
        assert r.status_code == 201 and r.json()["store"] == "big"
        r = await c.put("/v1/namespaces/e1", json={"store": "small"}, headers=ADMIN)
        assert r.status_code == 409 and r.json()["code"] == "STORE_CHANGE"
        r = await c.put("/v1/namespaces/e1", json={"tenant_scoped": True}, headers=ADMIN)
        assert r.status_code == 409 and "tenant_scoped" in r.json()["detail"]


async def test_a_preferred_engine_places_on_a_store_of_that_engine_or_says_why_not(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    cfg["stores"]["lite"] = {
        "url": f"sqlite:///{tmp_path / 'lite.db'}",
        "capacity": {"read_rps": 300, "write_rps": 100},
    }
    async with client_for(cfg) as c:
        # A namespace admin may prefer an engine (naming a store needs the store admin role).
        r = await c.put(
            "/v1/namespaces/orders", json={"backend": "sqlite", "needs": {"read_rps": 50}}, headers=NSADMIN
        )
        assert r.status_code == 201, r.text
        assert r.json()["store"] == "lite"
        assert r.json()["refused"] == [
            {"store": "small", "fails": [{"need": "backend", "wanted": "sqlite", "has": "memory"}]},
            {"store": "big", "fails": [{"need": "backend", "wanted": "sqlite", "has": "memory"}]},
        ]
        r = await c.put("/v1/namespaces/pg", json={"backend": "postgres"}, headers=NSADMIN)
        assert r.status_code == 422 and r.json()["code"] == "NO_STORE_FITS"
        assert r.json()["stores"] == [
            {"store": "small", "fails": [{"need": "backend", "wanted": "postgres", "has": "memory"}]},
            {"store": "big", "fails": [{"need": "backend", "wanted": "postgres", "has": "memory"}]},
            {"store": "lite", "fails": [{"need": "backend", "wanted": "postgres", "has": "sqlite"}]},
        ]
        # The engine's only store is full: refused with its failed need, the others with their engine.
        r = await c.put(
            "/v1/namespaces/more", json={"backend": "sqlite", "needs": {"read_rps": 400}}, headers=NSADMIN
        )
        assert r.status_code == 422
        assert r.json()["stores"][2] == {
            "store": "lite",
            "fails": [{"need": "read_rps", "wanted": 400.0, "has": 250.0}],
        }
        r = await c.put("/v1/namespaces/x", json={"backend": "mysql"}, headers=NSADMIN)
        assert r.status_code == 400 and r.json()["detail"].startswith("backend: unknown engine 'mysql'")
        r = await c.put("/v1/namespaces/x", json={"backend": 5}, headers=NSADMIN)
        assert r.status_code == 400 and "backend" in r.json()["detail"]
        # A change preferring another engine than the namespace's store is refused, not moved.
        r = await c.put("/v1/namespaces/orders", json={"backend": "memory"}, headers=NSADMIN)
        assert r.status_code == 422
        assert r.json()["stores"] == [
            {"store": "lite", "fails": [{"need": "backend", "wanted": "memory", "has": "sqlite"}]}
        ]
        # Expert mode still names a store, and both must agree.
        r = await c.put("/v1/namespaces/y", json={"store": "big", "backend": "postgresql"}, headers=ADMIN)
        assert r.status_code == 422
        listed = (await c.get("/v1/namespaces", headers=ADMIN)).json()
        assert {n["name"] for n in listed["namespaces"]} == {"fixed", "orders"}


async def test_delete_is_refused_while_data_is_held_unless_purged(tmp_path: Path) -> None:
    async with client_for(config(tmp_path)) as c:
        assert (await c.put("/v1/namespaces/tmp", json={}, headers=ADMIN)).status_code == 201
        for i in range(7):
            await c.put(f"/v1/kv/tmp/k{i}", content=b"x", headers=ADMIN)
        r = await c.put("/v1/records/tmp/r1", json={"items": [{"key": "a", "value": "eA=="}]}, headers=ADMIN)
        assert r.status_code == 200, r.text
        r = await c.delete("/v1/namespaces/tmp", headers=ADMIN)
        assert r.status_code == 409 and r.json()["code"] == "NAMESPACE_NOT_EMPTY"
        # Refused: still served, data intact.
        assert (await c.get("/v1/kv/tmp/k3", headers=ADMIN)).content == b"x"
        r = await c.delete("/v1/namespaces/tmp?purge=true", headers=ADMIN)
        assert r.status_code == 200, r.text
        assert r.json()["purged_records"] == 8
        assert (await c.get("/v1/kv/tmp/k3", headers=ADMIN)).status_code == 404
        assert (await c.get("/v1/namespaces/tmp", headers=ADMIN)).status_code == 404
        # Created again, it starts empty.
        assert (await c.put("/v1/namespaces/tmp", json={}, headers=ADMIN)).status_code == 201
        assert (await c.get("/v1/kv/tmp/k3", headers=ADMIN)).status_code == 404
        assert (await c.delete("/v1/namespaces/tmp", headers=ADMIN)).status_code == 200
        assert (await c.delete("/v1/namespaces/tmp", headers=ADMIN)).status_code == 404


async def test_declared_rates_become_a_read_limit_and_a_write_limit(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    cfg["control"]["namespaces"]["limit_headroom"] = 1.5
    async with client_for(cfg) as c:
        r = await c.put(
            "/v1/namespaces/slow", json={"needs": {"read_rps": 2, "write_rps": 0.01}}, headers=ADMIN
        )
        assert r.json()["limits"] == {
            "read_rate": 3.0,
            "read_burst": 3,
            "write_rate": 0.015,
            "write_burst": 1,
        }
        # Reads spend the read bucket only: 3 admitted, then 429 naming reads.
        statuses = [(await c.get("/v1/kv/slow/k", headers=ADMIN)).status_code for _ in range(5)]
        assert statuses[:3] == [404, 404, 404] and statuses[3:] == [429, 429], statuses
        refused = await c.get("/v1/kv/slow/k", headers=ADMIN)
        assert "allows 3 reads per second" in refused.json()["detail"]
        # Writes have their own bucket, untouched by the reads: one write, then 429 naming writes.
        first = await c.put("/v1/kv/slow/k", content=b"v", headers=ADMIN)
        assert first.status_code in (200, 201), first.text
        second = await c.put("/v1/kv/slow/k2", content=b"v", headers=ADMIN)
        assert second.status_code == 429 and "allows 0.015 writes per second" in second.json()["detail"]
        # A side without a declared rate is not limited.
        r = await c.put("/v1/namespaces/reads-only", json={"needs": {"read_rps": 0.01}}, headers=ADMIN)
        assert r.json()["limits"] == {
            "read_rate": 0.015,
            "read_burst": 1,
            "write_rate": None,
            "write_burst": None,
        }
        writes = [
            (await c.put(f"/v1/kv/reads-only/k{i}", content=b"v", headers=ADMIN)).status_code
            for i in range(5)
        ]
        assert set(writes) <= {200, 201}, writes
        reads = [(await c.get("/v1/kv/reads-only/k0", headers=ADMIN)).status_code for _ in range(2)]
        assert reads == [200, 429]


async def test_every_change_is_audited_with_before_and_after(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    async with client_for(config(tmp_path, audit={"sink": "file", "path": str(log)})) as c:
        await c.put("/v1/namespaces/aud", json={"needs": {"read_rps": 5}}, headers=ADMIN)
        await c.put("/v1/namespaces/aud", json={"needs": {"read_rps": 6}}, headers=ADMIN)
        await c.put("/v1/namespaces/aud", json={}, headers=headers("writer"))
        await c.delete("/v1/namespaces/aud", headers=ADMIN)
    events = [json.loads(line) for line in log.read_text().splitlines()]
    changes = [e for e in events if e["operation"] in ("namespace_put", "namespace_delete")]
    assert [(e["operation"], e["status"]) for e in changes] == [
        ("namespace_put", 201),
        ("namespace_put", 200),
        ("namespace_put", 403),
        ("namespace_delete", 200),
    ]
    created, changed, refused, deleted = changes
    assert created["values"]["before"] is None
    assert created["values"]["after"]["needs"]["read_rps"] == 5.0
    assert changed["values"]["before"]["needs"]["read_rps"] == 5.0
    assert changed["values"]["after"]["needs"]["read_rps"] == 6.0
    assert "values" not in refused and refused["principal"] == "writer"
    assert deleted["values"]["before"]["name"] == "aud" and deleted["values"]["after"] is None


async def test_runtime_namespaces_survive_a_restart_on_a_file_store(tmp_path: Path) -> None:
    db = tmp_path / "data.db"
    cfg = config(tmp_path, stores={"main": f"sqlite:///{db}"}, namespaces=[{"name": "fixed"}])
    async with client_for(cfg) as c:
        assert (await c.put("/v1/namespaces/kept", json={}, headers=ADMIN)).status_code == 201
        await c.put("/v1/kv/kept/a", content=b"1", headers=ADMIN)
    async with client_for(cfg) as c:
        assert (await c.get("/v1/kv/kept/a", headers=ADMIN)).content == b"1"


async def test_the_config_file_wins_a_name_clash_and_config_check_reports_it(tmp_path: Path) -> None:
    db = tmp_path / "data.db"
    cfg = config(tmp_path, stores={"main": f"sqlite:///{db}"}, namespaces=[{"name": "fixed"}])
    async with client_for(cfg) as c:
        r = await c.put("/v1/namespaces/shared", json={"max_value_bytes": 1000}, headers=ADMIN)
        assert r.status_code == 201
    path = tmp_path / "prism.yaml"
    clashing = {**cfg, "namespaces": [{"name": "fixed"}, {"name": "shared", "max_value_bytes": 16}]}
    path.write_text(json.dumps(clashing))
    async with client_for(clashing) as c:
        assert (await c.get("/v1/namespaces/shared", headers=ADMIN)).json()["max_value_bytes"] == 16
        assert (await c.put("/v1/kv/shared/k", content=b"x" * 17, headers=ADMIN)).status_code == 413
    run = functools.partial(subprocess.run, capture_output=True, text=True, cwd=tmp_path, timeout=60)
    prism = [sys.executable, "-m", "prism", "config", "check", "--config", str(path)]
    assert run(prism).returncode == 0
    checked = run([*prism, "--runtime"])
    assert checked.returncode == 2, checked.stdout
    assert "$.namespaces[1].name: 'shared' is also a runtime namespace in store 'main'" in checked.stderr
    path.write_text(json.dumps(cfg))
    assert run([*prism, "--runtime"]).returncode == 0


async def test_a_purge_that_fails_half_way_is_finished_by_deleting_again(tmp_path: Path) -> None:
    flaky = {
        "url": f"memory://flaky-{uuid.uuid4().hex[:8]}",
        "backend": "test_gateway_namespaces:FlakyDeletes",
    }
    async with client_for(config(tmp_path, stores={"flaky": flaky}, namespaces=[{"name": "fixed"}])) as c:
        c.headers.update(ADMIN)
        assert (await c.put("/v1/namespaces/half", json={})).status_code == 201
        for i in range(5):
            await c.put(f"/v1/kv/half/k{i}", content=b"x")
        FlakyDeletes.allowed = 2
        try:
            r = await c.delete("/v1/namespaces/half?purge=true")
            assert r.status_code == 503, r.text
            # Deleted but not gone: served nowhere, its name not free, its data partly there.
            assert (await c.get("/v1/kv/half/k4")).json()["code"] == "NAMESPACE_NOT_FOUND"
            r = await c.put("/v1/namespaces/half", json={})
            assert r.status_code == 409 and r.json()["code"] == "NAMESPACE_DELETING"
        finally:
            FlakyDeletes.allowed = None
        r = await c.delete("/v1/namespaces/half?purge=true")
        assert r.status_code == 200 and r.json()["purged_records"] == 3
        assert (await c.put("/v1/namespaces/half", json={})).status_code == 201
        assert (await c.get("/v1/kv/half/k4")).status_code == 404


async def test_runtime_namespaces_can_be_turned_off(tmp_path: Path) -> None:
    cfg = config(tmp_path, control={"namespaces": {"enabled": False}})
    async with client_for(cfg) as c:
        r = await c.put("/v1/namespaces/x", json={}, headers=ADMIN)
        assert r.status_code == 501 and r.json()["code"] == "RUNTIME_NAMESPACES_OFF"
        assert (await c.delete("/v1/namespaces/x", headers=ADMIN)).status_code == 501
        assert (await c.get("/v1/namespaces/fixed", headers=ADMIN)).status_code == 200


@pytest.mark.parametrize(
    ("change", "path"),
    [
        ({"control": {"namespaces": {"poll_interval": 0}}}, "$.control.namespaces.poll_interval"),
        ({"control": {"namespaces": {"limit_headroom": -1}}}, "$.control.namespaces.limit_headroom"),
        ({"control": {"namespaces": {"delete_settle": -1}}}, "$.control.namespaces.delete_settle"),
        ({"control": {"namespaces": {"purge_batch": 0}}}, "$.control.namespaces.purge_batch"),
        ({"control": {"namespaces": {"purge_timeout": 0}}}, "$.control.namespaces.purge_timeout"),
        ({"control": {"namespaces": {"change_attempts": 0}}}, "$.control.namespaces.change_attempts"),
        (
            {"stores": {"main": {"url": "memory://", "capacity": {"read_rps": 0}}}},
            "$.stores.main.capacity.read_rps",
        ),
        ({"stores": {"main": {"url": "memory://", "capacity": {"durability": "tape"}}}}, "$.stores.main"),
        ({"auth": {"namespace_admin_roles": ["bad role"]}}, "$.auth.namespace_admin_roles[0]"),
    ],
)
def test_bad_settings_name_their_field(tmp_path: Path, change: dict[str, Any], path: str) -> None:
    cfg = {"stores": {"main": "memory://"}, "namespaces": [{"name": "fixed"}], **change}
    with pytest.raises(ConfigError) as error:
        parse_config(cfg, source="test.yaml")
    assert error.value.path.startswith(path), str(error.value)


async def test_declared_rates_of_config_file_namespaces_are_enforced_too(tmp_path: Path) -> None:
    namespaces = [
        {"name": "fixed"},
        {"name": "declared", "needs": {"read_rps": 1, "write_rps": 1}},
        {"name": "own", "needs": {"read_rps": 1}, "limits": {"rate": 50, "concurrency": 3}},
    ]
    cfg = config(tmp_path, namespaces=namespaces)
    cfg["control"]["namespaces"]["limit_headroom"] = 1.0
    async with client_for(cfg) as c:
        limits = (await c.get("/v1/namespaces/declared", headers=ADMIN)).json()["limits"]
        assert (limits["read_rate"], limits["read_burst"], limits["write_rate"], limits["rate"]) == (
            1.0,
            1,
            1.0,
            None,
        )
        statuses = [(await c.get("/v1/kv/declared/k", headers=ADMIN)).status_code for _ in range(3)]
        assert statuses == [404, 429, 429]
        assert (await c.put("/v1/kv/declared/k", content=b"v", headers=ADMIN)).status_code in (200, 201)
        # A rate the file sets itself wins.
        limits = (await c.get("/v1/namespaces/own", headers=ADMIN)).json()["limits"]
        assert (limits["rate"], limits["concurrency"]) == (50.0, 3)


TS_NEEDS = {"needs": {"access_pattern": "timeseries"}}


def _events(*ids: str) -> dict[str, Any]:
    now = datetime.now(UTC).isoformat()
    return {"events": [{"time": now, "id": i, "data": {"n": i}} for i in ids]}


async def test_a_timeseries_namespace_is_created_and_served_by_the_ts_routes(tmp_path: Path) -> None:
    async with client_for(config(tmp_path)) as c:
        c.headers.update(ADMIN)
        settings = {"slice_seconds": 60, "retention_seconds": 86400, "accept_window_seconds": 3600}
        body = {**TS_NEEDS, "timeseries": settings}
        r = await c.put("/v1/namespaces/clicks", json=body)
        assert r.status_code == 201, r.text
        assert r.json()["store"] == "small" and r.json()["needs"]["access_pattern"] == "timeseries"
        r = await c.post("/v1/ts/clicks/user:1", json=_events("e1", "e2"))
        assert r.status_code == 200, r.text
        assert [x["ok"] for x in r.json()["results"]] == [True, True]
        r = await c.get("/v1/ts/clicks/user:1?order=asc")
        assert r.status_code == 200, r.text
        assert [e["id"] for e in r.json()["events"]] == ["e1", "e2"]
        assert r.json()["events"][0]["data"] == {"n": "e1"}
        # Served by /v1/ts, not by /v1/kv.
        r = await c.put("/v1/kv/clicks/k", content=b"x")
        assert r.status_code == 404 and "/v1/ts" in r.json()["detail"], r.text
        # Its definition keeps its kind and settings.
        r = await c.get("/v1/namespaces/clicks")
        assert r.status_code == 200, r.text
        assert (await c.get("/v1/namespaces", headers=ADMIN)).status_code == 200
        # Its settings are applied: an event older than the accept window is refused.
        old = {"events": [{"time": "2001-01-01T00:00:00+00:00", "id": "e0", "data": {}}]}
        r = await c.post("/v1/ts/clicks/user:1", json=old)
        assert r.status_code == 400 and "accept" in r.json()["detail"], r.text
        # Changing it the same way is fine; changing its kind or its settings is refused.
        assert (await c.put("/v1/namespaces/clicks", json=body)).status_code == 200
        r = await c.put("/v1/namespaces/clicks", json={})
        assert r.status_code == 409 and r.json()["code"] == "KIND_CHANGE", r.text
        r = await c.put("/v1/namespaces/clicks", json={**TS_NEEDS, "timeseries": {"slice_seconds": 120}})
        assert r.status_code == 409 and r.json()["code"] == "TIMESERIES_SETTINGS_CHANGE", r.text
        assert (await c.put("/v1/namespaces/kvns", json={})).status_code == 201
        r = await c.put("/v1/namespaces/kvns", json=TS_NEEDS)
        assert r.status_code == 409 and r.json()["code"] == "KIND_CHANGE", r.text
        # Still served as before.
        r = await c.get("/v1/ts/clicks/user:1?order=asc")
        assert [e["id"] for e in r.json()["events"]] == ["e1", "e2"]


async def test_a_timeseries_namespace_goes_only_to_a_store_with_timeseries(tmp_path: Path) -> None:
    plain = {"url": f"memory://plain-{uuid.uuid4().hex[:8]}", "backend": "test_gateway_namespaces:NoSeries"}
    cfg = config(tmp_path, stores={"plain": plain}, namespaces=[{"name": "fixed"}])
    async with client_for(cfg) as c:
        c.headers.update(ADMIN)
        r = await c.put("/v1/namespaces/clicks", json=TS_NEEDS)
        assert r.status_code == 422, r.text
        assert r.json()["stores"] == [
            {
                "store": "plain",
                "fails": [{"need": "access_pattern", "wanted": "timeseries", "has": "no timeseries"}],
            }
        ]
        assert (await c.get("/v1/namespaces/clicks")).status_code == 404
        # A kv namespace still fits there.
        assert (await c.put("/v1/namespaces/carts", json={})).status_code == 201
    two = {"plain": plain, "lite": f"sqlite:///{tmp_path / 'ts.db'}"}
    async with client_for(config(tmp_path, stores=two, namespaces=[{"name": "fixed"}])) as c:
        c.headers.update(ADMIN)
        r = await c.put("/v1/namespaces/clicks", json=TS_NEEDS)
        assert r.status_code == 201, r.text
        assert r.json()["store"] == "lite"
        assert r.json()["refused"] == [
            {
                "store": "plain",
                "fails": [{"need": "access_pattern", "wanted": "timeseries", "has": "no timeseries"}],
            }
        ]
        assert (await c.post("/v1/ts/clicks/s", json=_events("e1"))).status_code == 200
        # Naming the store without TimeSeries is refused too.
        r = await c.put("/v1/namespaces/other", json={**TS_NEEDS, "store": "plain"})
        assert r.status_code == 422 and r.json()["stores"][0]["store"] == "plain", r.text


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**TS_NEEDS, "timeseries": {"slice_seconds": 0}}, "slice_seconds"),
        ({**TS_NEEDS, "timeseries": {"slice_seconds": 1.5}}, "slice_seconds"),
        ({**TS_NEEDS, "timeseries": {"retention_seconds": -5}}, "retention_seconds"),
        ({**TS_NEEDS, "timeseries": {"accept_window_seconds": 0}}, "accept_window_seconds"),
        ({**TS_NEEDS, "timeseries": {"future_skew_seconds": -1}}, "future_skew_seconds"),
        ({**TS_NEEDS, "timeseries": {"slice_seconds": "hour"}}, "slice_seconds"),
        ({**TS_NEEDS, "timeseries": {"slices": 60}}, "slices"),
        ({"timeseries": {"slice_seconds": 60}}, "timeseries"),
        ({**TS_NEEDS, "default_ttl": 60}, "default_ttl"),
    ],
)
async def test_bad_timeseries_settings_name_their_field_and_create_nothing(
    tmp_path: Path, body: dict[str, Any], field: str
) -> None:
    async with client_for(config(tmp_path)) as c:
        r = await c.put("/v1/namespaces/clicks", json=body, headers=ADMIN)
        assert r.status_code == 400, r.text
        assert field in r.json()["detail"], r.text
        assert (await c.get("/v1/namespaces/clicks", headers=ADMIN)).status_code == 404


async def test_a_timeseries_namespace_is_not_deleted_at_runtime(tmp_path: Path) -> None:
    async with client_for(config(tmp_path)) as c:
        c.headers.update(ADMIN)
        assert (await c.put("/v1/namespaces/clicks", json=TS_NEEDS)).status_code == 201
        assert (await c.post("/v1/ts/clicks/s", json=_events("e1"))).status_code == 200
        for path in ("/v1/namespaces/clicks", "/v1/namespaces/clicks?purge=true"):
            r = await c.delete(path)
            assert r.status_code == 409 and r.json()["code"] == "TIMESERIES_DELETE", r.text
        # Refused before anything changed: still served, events intact, not marked deleting.
        r = await c.get("/v1/ts/clicks/s")
        assert [e["id"] for e in r.json()["events"]] == ["e1"]
        assert (await c.put("/v1/namespaces/clicks", json=TS_NEEDS)).status_code == 200


async def test_concurrent_creations_with_other_settings_leave_one_set_of_settings(tmp_path: Path) -> None:
    async with client_for(config(tmp_path)) as c:
        c.headers.update(ADMIN)
        bodies = [{**TS_NEEDS, "timeseries": {"slice_seconds": s}} for s in (60, 120, 300, 600)]
        answers = await asyncio.gather(*(c.put("/v1/namespaces/clicks", json=b) for b in bodies))
        codes = sorted(r.status_code for r in answers)
        assert codes == [201, 409, 409, 409], [r.text for r in answers]
        assert {r.json()["code"] for r in answers if r.status_code == 409} == {"TIMESERIES_SETTINGS_CHANGE"}
        winner = next(b for b, r in zip(bodies, answers, strict=True) if r.status_code == 201)
        # The winner's settings are the ones served, and the namespace answers its clients' signals.
        assert (await c.put("/v1/namespaces/clicks", json=winner)).status_code == 200
        assert (await c.post("/v1/ts/clicks/s", json=_events("e1"))).status_code == 200
        r = await c.get("/v1/namespaces/clicks/signals")
        assert r.status_code == 200 and r.json()["latency_target_ms"] > 0, r.text
