"""``prism namespace create|plan|get|list|delete`` against a real ``prism serve``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from gateway_helpers import KEYS, api_keys_config
from serve_helpers import Served, serving


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    directory = tmp_path_factory.mktemp("namespace-cli")
    config = {
        "stores": {
            "main": {
                "url": f"sqlite:///{directory / 'data.db'}",
                "capacity": {"read_rps": 500, "write_rps": 100, "durability": "disk"},
            },
            "scratch": {"url": "memory://", "capacity": {"read_rps": 10_000, "write_rps": 10_000}},
        },
        "namespaces": [{"name": "fixed"}],
        "auth": {"api_keys": api_keys_config()},
        "control": {"namespaces": {"delete_settle": 0.1}},
        "audit": {"sink": "none"},
        # A delete waits out requests in flight (server.request_timeout): short here.
        "server": {"access_log": False, "request_timeout": 2.0},
        "streaming": {"enabled": False},
    }
    with serving(directory, config, "--grpc-port", "0") as served:
        yield served


def prism(
    gateway: Served, *args: str, key: str = "admin", cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PRISM_URL": gateway.url, "PRISM_TOKEN": KEYS[key][0]}
    return subprocess.run(
        [sys.executable, "-m", "prism", "namespace", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=60,
    )


def test_create_plan_get_list_and_delete(gateway: Served, tmp_path: Path) -> None:
    plan = prism(gateway, "plan", "orders", "--need", "read_rps=200", "--need", "durability=disk")
    assert plan.returncode == 0, plan.stderr
    assert plan.stdout.splitlines() == [
        "namespace orders: would be placed on store main",
        "  rate limit: reads 240/s (burst 240), writes unlimited",
    ]
    assert "orders" not in prism(gateway, "list").stdout

    created = prism(gateway, "create", "orders", "--need", "read_rps=200", "--need", "durability=disk")
    assert created.returncode == 0, created.stderr
    assert created.stdout.splitlines()[0] == "namespace orders: created on store main"

    body = tmp_path / "events.json"
    body.write_text(
        json.dumps({"needs": {"read_rps": 400, "consistency": "strong"}, "max_value_bytes": 4096})
    )
    placed = prism(gateway, "--json", "create", "events", "--file", str(body))
    assert placed.returncode == 0, placed.stderr
    answer = json.loads(placed.stdout)
    assert answer["store"] == "scratch" and answer["needs"]["consistency"] == "strong"
    assert answer["refused"] == [
        {"store": "main", "fails": [{"need": "read_rps", "wanted": 400.0, "has": 300.0}]}
    ]

    got = prism(gateway, "get", "events")
    assert got.returncode == 0, got.stderr
    assert "  store: scratch (memory)" in got.stdout and "  max value bytes: 4096" in got.stdout
    assert "  needs: access_pattern=kv, read_rps=400, consistency=strong" in got.stdout
    listed = prism(gateway, "list", key="reader").stdout.splitlines()
    assert listed == ["fixed: read", "orders: read", "events: read"]

    deleted = prism(gateway, "delete", "events", "--purge")
    assert deleted.returncode == 0, deleted.stderr
    assert deleted.stdout.strip() == "namespace events: deleted, 0 records purged"
    assert prism(gateway, "get", "events").returncode == 1


def test_refusals_print_the_reason_and_every_stores_failed_needs(gateway: Served) -> None:
    refused = prism(gateway, "create", "huge", "--need", "write_rps=50000", "--need", "latency_p99_ms=1")
    assert refused.returncode == 1
    assert refused.stderr.splitlines() == [
        "prism: error: NO_STORE_FITS: no store meets every need of namespace 'huge'; see `stores`",
        "  main: write_rps wanted 50000, has 100; latency_p99_ms wanted 1, has undeclared",
        "  scratch: write_rps wanted 50000, has 10000; latency_p99_ms wanted 1, has undeclared",
    ]
    denied = prism(gateway, "create", "mine", key="writer")
    assert denied.returncode == 1 and "FORBIDDEN" in denied.stderr
    bad = prism(gateway, "create", "x", "--need", "read_rps")
    assert bad.returncode != 0 and "--need takes NAME=VALUE" in bad.stderr
    wrong = prism(gateway, "create", "x", "--need", "read_rps=-5")
    assert wrong.returncode == 1 and "needs.read_rps: must be a positive number" in wrong.stderr


PROFILES_PROTO = """
syntax = "proto3";
package acme;
import "prism/options.proto";

message Address { string street = 1 [(prism.pii) = "address"]; string city = 2; }

message UserProfile {
  option (prism.read_rps) = 50;
  option (prism.write_rps) = 10;
  option (prism.durability) = "disk";
  string id = 1 [(prism.index) = "unique"];
  string email = 2 [(prism.pii) = "email"];
  Address address = 3;
}
"""


def test_a_namespace_from_a_proto_masks_its_pii_fields_for_a_reader(gateway: Served, tmp_path: Path) -> None:
    import httpx

    proto = tmp_path / "profiles.proto"
    proto.write_text(PROFILES_PROTO)
    planned = prism(gateway, "plan", "profiles", "--from-proto", str(proto), "--message", "UserProfile")
    assert planned.returncode == 0, planned.stderr
    assert planned.stdout.splitlines() == [
        "namespace profiles: would be placed on store main",
        "  rate limit: reads 60/s (burst 60), writes 12/s (burst 12)",
    ]
    assert planned.stderr.splitlines() == [
        "prism: warning: acme.UserProfile.id: (prism.index) = 'unique' is recorded but not supported yet; "
        "no index is built"
    ]
    created = prism(
        gateway, "create", "profiles", "--from-proto", str(proto), "--message", "acme.UserProfile"
    )
    assert created.returncode == 0, created.stderr
    assert created.stdout.splitlines()[0] == "namespace profiles: created on store main"
    got = prism(gateway, "get", "profiles")
    assert "  needs: access_pattern=kv, read_rps=50, write_rps=10, consistency=eventual, durability=disk" in (
        got.stdout
    )

    value = {"id": "u1", "email": "ada@example.com", "address": {"street": "1 Main St", "city": "Paris"}}
    with httpx.Client(base_url=gateway.url, timeout=30) as http:
        put = http.put(
            "/v1/kv/profiles/u1",
            json=value,
            headers={"X-API-Key": KEYS["writer"][0]},
        )
        assert put.status_code in (200, 201), put.text
        seen = http.get("/v1/kv/profiles/u1", headers={"X-API-Key": KEYS["reader"][0]}).json()
        clear = http.get("/v1/kv/profiles/u1", headers={"X-API-Key": KEYS["admin"][0]}).json()
    assert seen == {"id": "u1", "email": "***", "address": {"street": "***", "city": "Paris"}}
    assert clear == value
    assert prism(gateway, "delete", "profiles", "--purge").returncode == 0


def test_from_proto_refuses_a_missing_message_a_bad_file_and_stray_options(
    gateway: Served, tmp_path: Path
) -> None:
    proto = tmp_path / "profiles.proto"
    proto.write_text(PROFILES_PROTO)
    no_message = prism(gateway, "create", "p", "--from-proto", str(proto))
    assert no_message.returncode != 0
    assert "--from-proto needs --message NAME" in no_message.stderr
    unknown = prism(gateway, "create", "p", "--from-proto", str(proto), "--message", "Nope")
    assert unknown.returncode != 0
    assert "has no message 'Nope' (its top-level messages: Address, UserProfile)" in unknown.stderr
    broken = tmp_path / "broken.proto"
    broken.write_text('syntax = "proto3"; message M { strin a = 1; }')
    bad = prism(gateway, "create", "p", "--from-proto", str(broken), "--message", "M")
    assert bad.returncode != 0 and "does not compile" in bad.stderr
    stray = prism(gateway, "create", "p", "--message", "UserProfile")
    assert stray.returncode != 0 and "go with --from-proto" in stray.stderr
    assert "p:" not in prism(gateway, "list").stdout


def test_a_preferred_engine_from_the_options_or_the_proto(gateway: Served, tmp_path: Path) -> None:
    planned = prism(gateway, "plan", "cache", "--backend", "memory", "--need", "read_rps=10")
    assert planned.returncode == 0, planned.stderr
    assert planned.stdout.splitlines() == [
        "namespace cache: would be placed on store scratch",
        "  rate limit: reads 12/s (burst 12), writes unlimited",
        "  passed over main: backend wanted memory, has sqlite",
    ]
    refused = prism(gateway, "create", "pg", "--backend", "postgres")
    assert refused.returncode == 1
    assert refused.stderr.splitlines()[1:] == [
        "  main: backend wanted postgres, has sqlite",
        "  scratch: backend wanted postgres, has memory",
    ]
    unknown = prism(gateway, "create", "pg", "--backend", "mysql")
    assert unknown.returncode == 1 and "backend: unknown engine 'mysql'" in unknown.stderr
    proto = tmp_path / "sessions.proto"
    proto.write_text(
        'syntax = "proto3"; import "prism/options.proto";\n'
        'message Session { option (prism.backend) = "memory"; string token = 1 [(prism.pii) = "secret"]; }\n'
    )
    from_proto = prism(gateway, "plan", "sessions", "--from-proto", str(proto), "--message", "Session")
    assert from_proto.returncode == 0, from_proto.stderr
    assert from_proto.stdout.splitlines()[0] == "namespace sessions: would be placed on store scratch"
    # An option given on the command line wins over the proto's.
    overridden = prism(
        gateway, "plan", "sessions", "--from-proto", str(proto), "--message", "Session", "--backend", "sqlite"
    )
    assert overridden.returncode == 0, overridden.stderr
    assert overridden.stdout.splitlines()[0] == "namespace sessions: would be placed on store main"


def test_a_timeseries_namespace_from_the_command_line(gateway: Served, tmp_path: Path) -> None:
    settings = tmp_path / "clicks.json"
    settings.write_text(json.dumps({"timeseries": {"slice_seconds": 600, "retention_seconds": 86400}}))
    created = prism(
        gateway, "--json", "create", "clicks", "--need", "access_pattern=timeseries", "--file", str(settings)
    )
    assert created.returncode == 0, created.stderr
    answer = json.loads(created.stdout)
    assert answer["store"] == "main" and answer["needs"]["access_pattern"] == "timeseries"
    now = datetime.now(UTC).isoformat()
    headers = {"X-API-Key": KEYS["admin"][0]}
    r = httpx.post(
        f"{gateway.url}/v1/ts/clicks/user:1",
        json={"events": [{"time": now, "id": "e1", "data": {"page": "/"}}]},
        headers=headers,
    )
    assert r.status_code == 200, r.text
    r = httpx.get(f"{gateway.url}/v1/ts/clicks/user:1", headers=headers)
    assert [e["id"] for e in r.json()["events"]] == ["e1"]
    got = prism(gateway, "get", "clicks")
    assert got.returncode == 0, got.stderr
    assert "  store: main (sqlite)" in got.stdout
    bad = prism(gateway, "create", "bad", "--need", "access_pattern=timeseries", "--need", "ttl_seconds=-1")
    assert bad.returncode != 0 and "needs.ttl_seconds" in bad.stderr
    refused = prism(gateway, "delete", "clicks", "--purge")
    assert refused.returncode != 0 and "TIMESERIES_DELETE" in refused.stderr, refused.stderr
