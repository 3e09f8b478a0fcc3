"""``prism serve`` serving gRPC: health, reflection, the seed's interfaces, and a Node.js client."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from serve_process import PRISM, Served, start_serve

from prism.gateway.auth import hash_api_key
from prism.grpc._gen.prism.interfaces import lifecycle_pb2, lifecycle_pb2_grpc
from prism.grpc._gen.prism.interfaces.keyvalue import keyvalue_basic_pb2 as basic
from prism.grpc._gen.prism.interfaces.keyvalue import keyvalue_basic_pb2_grpc as basic_grpc
from prism.grpc._gen.prism.interfaces.keyvalue import keyvalue_ttl_pb2 as ttl
from prism.grpc._gen.prism.interfaces.keyvalue import keyvalue_ttl_pb2_grpc as ttl_grpc
from prism.grpc.codegen import PROTO_ROOT
from prism.testing.servers._base import free_port

NODE_DIR = Path(__file__).resolve().parents[1] / "node"
API_KEY = "k-node-0123456789abcdef"
KEY = (("x-api-key", API_KEY),)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    auth = f"auth: {{api_keys: [{{name: node, sha256: {hash_api_key(API_KEY)}, roles: [writer]}}]}}\n"
    yield from start_serve(tmp_path_factory.mktemp("grpc-serve"), extra=auth)


async def test_health_and_reflection_list_the_services(served: Served) -> None:
    async with aio.insecure_channel(f"127.0.0.1:{served.grpc_port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "prism.v1.KeyValue", "prism.interfaces.keyvalue.KeyValueBasicInterface"):
            answer = await health.Check(health_pb2.HealthCheckRequest(service=service))
            assert answer.status == health_pb2.HealthCheckResponse.SERVING
        reflect = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        async for response in reflect.ServerReflectionInfo(iter([request])):
            names = {s.name for s in response.list_services_response.service}
        assert {
            "prism.v1.KeyValue",
            "prism.interfaces.keyvalue.KeyValueBasicInterface",
            "prism.interfaces.keyvalue.KeyValueBatchInterface",
            "prism.interfaces.keyvalue.KeyValueTTLInterface",
            "prism.interfaces.LifecycleInterface",
            "grpc.health.v1.Health",
        } <= names


async def test_lifecycle_initialize_lists_the_interfaces(served: Served) -> None:
    async with aio.insecure_channel(f"127.0.0.1:{served.grpc_port}") as channel:
        lifecycle = lifecycle_pb2_grpc.LifecycleInterfaceStub(channel)
        init = await lifecycle.Initialize(lifecycle_pb2.InitializeRequest(name="client"))
        assert init.success
        declared = {i.name: i for i in init.metadata.interfaces}
        assert set(declared) == {
            "KeyValueBasicInterface",
            "KeyValueBatchInterface",
            "KeyValueTTLInterface",
            "LifecycleInterface",
        }
        assert len(declared["KeyValueBasicInterface"].proto_hash) == 64
        assert init.metadata.extra["namespace"] == "plain"
        health = await lifecycle.HealthCheck(lifecycle_pb2.HealthCheckRequest())
        assert health.status == lifecycle_pb2.HEALTH_STATUS_HEALTHY


async def test_seed_calls_answer_in_band_and_refuse_by_status(served: Served) -> None:
    async with aio.insecure_channel(f"127.0.0.1:{served.grpc_port}") as channel:
        kv = basic_grpc.KeyValueBasicInterfaceStub(channel)
        timers = ttl_grpc.KeyValueTTLInterfaceStub(channel)
        with pytest.raises(aio.AioRpcError) as refused:
            await kv.Get(basic.GetRequest(key="k"))
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        bad = await kv.Set(basic.SetRequest(key="", value=b"v"), metadata=KEY)
        assert not bad.success and bad.error
        missing_ns = await kv.Get(basic.GetRequest(key="k"), metadata=(*KEY, ("x-prism-namespace", "nope")))
        assert not missing_ns.found and "nope" in missing_ns.error
        other = (*KEY, ("x-prism-namespace", "pool-7"))
        assert (await kv.Set(basic.SetRequest(key="k", value=b"v"), metadata=other)).success
        assert not (await kv.Exists(basic.ExistsRequest(key="k"), metadata=KEY)).exists
        assert (await kv.Exists(basic.ExistsRequest(key="k"), metadata=other)).exists
        assert (await timers.GetTTL(ttl.GetTTLRequest(key="k"), metadata=other)).ttl_seconds == -1
        expired = await timers.Expire(ttl.ExpireRequest(key="k", ttl_seconds=100), metadata=other)
        assert expired.success and expired.key_existed
        assert 0 < (await timers.GetTTL(ttl.GetTTLRequest(key="k"), metadata=other)).ttl_seconds <= 100
        persisted = await timers.Persist(ttl.PersistRequest(key="k"), metadata=other)
        assert persisted.success and persisted.expiration_removed
        assert (await timers.GetTTL(ttl.GetTTLRequest(key="k"), metadata=other)).ttl_seconds == -1
        gone = await timers.Expire(ttl.ExpireRequest(key="k", ttl_seconds=0), metadata=other)
        assert gone.success
        assert (await timers.GetTTL(ttl.GetTTLRequest(key="k"), metadata=other)).ttl_seconds == -2
        missing = await timers.Expire(ttl.ExpireRequest(key="k", ttl_seconds=5), metadata=other)
        assert not missing.success and not missing.key_existed


def test_a_node_client_speaks_the_seed_protocol(served: Served) -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: the Node.js client test needs it")
    if not (NODE_DIR / "node_modules" / "@grpc" / "grpc-js").is_dir():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR, check=True, timeout=300)
    done = subprocess.run(
        [node, "seed_client.js", f"127.0.0.1:{served.grpc_port}", str(PROTO_ROOT), API_KEY],
        cwd=NODE_DIR,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["set"] == {"success": True, "error": ""}
    assert out["get"] == {"found": True, "value": "hello", "error": ""}
    assert out["exists"]["exists"] is True
    assert out["getTtlForever"]["ttl_seconds"] == -1
    assert out["expire"] == {"success": True, "error": "", "key_existed": True}
    assert 590 <= out["getTtl"]["ttl_seconds"] <= 600
    assert out["delete"]["success"] is True
    assert out["existsAfter"]["exists"] is False
    assert out["getMissing"]["found"] is False
    assert out["getTtlMissing"]["ttl_seconds"] == -2
    assert out["batchSet"]["all_success"] is True
    assert out["batchGet"]["found_count"] == 2
    assert [(r["found"], r.get("value")) for r in out["batchGet"]["results"]] == [
        (True, "1"),
        (False, ""),
        (True, "2"),
    ]
    assert out["badKey"]["success"] is False and out["badKey"]["error"]


def test_an_explicit_grpc_port_that_is_taken_fails_the_startup(tmp_path: Path) -> None:
    taken = free_port()
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", taken))
        holder.listen()
        config = tmp_path / "prism.yaml"
        config.write_text("stores: {main: 'memory://'}\nnamespaces: [{name: plain}]\naudit: {sink: none}\n")
        done = subprocess.run(
            [PRISM, "serve", "--config", str(config), "--port", "0", "--grpc-port", str(taken)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode != 0
    assert f"cannot listen on 127.0.0.1:{taken}" in done.stdout + done.stderr


def test_a_grpc_port_out_of_range_is_refused(tmp_path: Path) -> None:
    done = subprocess.run(
        [PRISM, "serve", "--port", "0", "--grpc-port", "70000"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "--grpc-port must be from 0 (no gRPC) to 65535, not 70000" in done.stderr


def test_workers_share_a_named_grpc_port(tmp_path: Path) -> None:
    config = tmp_path / "prism.yaml"
    config.write_text(
        f"stores: {{main: 'sqlite:///{tmp_path / 'data.db'}'}}\nnamespaces: [{{name: plain}}]\n"
        "audit: {sink: none}\nserver: {access_log: false}\n"
    )
    port, grpc_port = free_port(), free_port()
    argv = [PRISM, "serve", "--config", str(config), "--port", str(port), "--grpc-port", str(grpc_port)]
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([*argv, "--workers", "2"], stdout=out, stderr=subprocess.STDOUT)
    try:
        for _ in range(900):  # a loaded machine starts workers slowly
            if log.read_bytes().count(b"Prism gRPC listening") == 2 or proc.poll() is not None:
                break
            time.sleep(0.1)
        assert log.read_bytes().count(b"Prism gRPC listening") == 2, log.read_text()
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            kv = basic_grpc.KeyValueBasicInterfaceStub(channel)
            ns = (("x-prism-namespace", "plain"),)
            assert kv.Set(basic.SetRequest(key="k", value=b"v"), metadata=ns).success
            for _ in range(4):
                assert kv.Get(basic.GetRequest(key="k"), metadata=ns).value == b"v"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, log.read_text()
