"""``prism.v1.NamespaceAdmin``: runtime namespaces over gRPC, the same rules and answers as over HTTP."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from gateway_helpers import KEYS, build_app
from grpc import aio
from test_gateway_namespaces import config

from prism.grpc._gen.prism.v1 import namespaces_pb2 as pb
from prism.grpc.server import GrpcServer


@contextlib.asynccontextmanager
async def serving(cfg: dict[str, Any]) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    """An in-process HTTP client and a gRPC channel's call function to one gateway."""
    app = build_app(cfg)
    async with app.router.lifespan_context(app):
        server = GrpcServer(app.state.gateway)
        port = server.bind("127.0.0.1", 0)
        await server.start()
        try:
            async with (
                httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as http,
                aio.insecure_channel(f"127.0.0.1:{port}") as channel,
            ):

                async def call(method: str, request: Any, response: Any, key: str = "admin") -> Any:
                    stub = channel.unary_unary(
                        f"/prism.v1.NamespaceAdmin/{method}",
                        request_serializer=lambda m: m.SerializeToString(),
                        response_deserializer=response.FromString,
                    )
                    return await stub(request, metadata=(("x-api-key", KEYS[key][0]),))

                yield http, call
        finally:
            await server.stop(1)


def put(name: str, **spec: Any) -> Any:
    return pb.PutNamespaceRequest(namespace=name, spec=pb.NamespaceSpec(**spec))


async def test_put_plan_get_list_and_delete_over_grpc(tmp_path: Path) -> None:
    async with serving(config(tmp_path)) as (http, call):
        planned = await call(
            "Plan", put("carts", needs=pb.NamespaceNeeds(read_rps=50)), pb.NamespacePlacement
        )
        assert (planned.store, planned.dry_run, planned.read_rate, planned.read_burst) == (
            "small",
            True,
            60.0,
            60,
        )
        assert not planned.HasField("write_rate") and not planned.HasField("rate")
        assert (
            await http.get("/v1/namespaces/carts", headers={"X-API-Key": KEYS["admin"][0]})
        ).status_code == 404

        spec = {"needs": pb.NamespaceNeeds(read_rps=500, latency_p99_ms=5), "max_value_bytes": 1024}
        placed = await call("Put", put("carts", **spec), pb.NamespacePlacement)
        assert (placed.store, placed.created, placed.dry_run) == ("big", True, False)
        assert [
            (s.store, [(f.need, json.loads(f.wanted), json.loads(f.has)) for f in s.fails])
            for s in placed.refused
        ] == [("small", [("read_rps", 500.0, 100.0), ("latency_p99_ms", 5.0, None)])]
        # Served over HTTP at once: the same namespace, whatever the transport.
        r = await http.put("/v1/kv/carts/k", content=b"v", headers={"X-API-Key": KEYS["writer"][0]})
        assert r.status_code in (200, 201)

        info = await call("Get", pb.GetNamespaceRequest(namespace="carts"), pb.NamespaceInfo)
        assert (info.store, info.backend, info.max_value_bytes, info.read_rate, info.read_burst) == (
            "big",
            "memory",
            1024,
            500 * 1.2,
            600,
        )
        assert not info.HasField("rate") and not info.HasField("write_rate")
        seen = await call("Get", pb.GetNamespaceRequest(namespace="carts"), pb.NamespaceInfo, key="reader")
        assert not seen.HasField("store") and list(seen.actions) == ["read"]
        listed = await call("List", pb.ListNamespacesRequest(), pb.ListNamespacesResponse, key="reader")
        assert [n.namespace for n in listed.namespaces] == ["fixed", "carts"]

        with pytest.raises(aio.AioRpcError) as refused:
            await call("Delete", pb.DeleteNamespaceRequest(namespace="carts"), pb.DeleteNamespaceResponse)
        assert refused.value.code() == grpc.StatusCode.ABORTED
        deleted = await call(
            "Delete", pb.DeleteNamespaceRequest(namespace="carts", purge=True), pb.DeleteNamespaceResponse
        )
        assert deleted.purged_records == 1
        assert (await http.get("/v1/kv/carts/k", headers={"X-API-Key": KEYS["admin"][0]})).status_code == 404


async def test_refusals_over_grpc_carry_the_code_and_every_stores_reasons(tmp_path: Path) -> None:
    async with serving(config(tmp_path)) as (_, call):
        with pytest.raises(aio.AioRpcError) as refused:
            await call("Put", put("huge", needs=pb.NamespaceNeeds(write_rps=10_000)), pb.NamespacePlacement)
        error = refused.value
        trailers = dict(error.trailing_metadata() or ())
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert trailers["prism-error-code"] == "NO_STORE_FITS"
        assert json.loads(trailers["prism-refused-stores"]) == [
            {"store": "small", "fails": [{"need": "write_rps", "wanted": 10000.0, "has": 50.0}]},
            {"store": "big", "fails": [{"need": "write_rps", "wanted": 10000.0, "has": 500.0}]},
        ]
        with pytest.raises(aio.AioRpcError) as denied:
            await call("Put", put("mine"), pb.NamespacePlacement, key="writer")
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(aio.AioRpcError) as bad:
            await call(
                "Put", put("bad", needs=pb.NamespaceNeeds(consistency="linear")), pb.NamespacePlacement
            )
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "needs.consistency" in str(
            bad.value.details()
        )
        with pytest.raises(aio.AioRpcError) as missing:
            await call("Get", pb.GetNamespaceRequest(namespace=f"n{uuid.uuid4().hex[:6]}"), pb.NamespaceInfo)
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
        nothing = await call("List", pb.ListNamespacesRequest(), pb.ListNamespacesResponse, key="nobody")
        assert list(nothing.namespaces) == []
        with pytest.raises(aio.AioRpcError) as engine:
            await call("Put", put("pg", backend="postgres"), pb.NamespacePlacement)
        assert json.loads(dict(engine.value.trailing_metadata() or ())["prism-refused-stores"]) == [
            {"store": "small", "fails": [{"need": "backend", "wanted": "postgres", "has": "memory"}]},
            {"store": "big", "fails": [{"need": "backend", "wanted": "postgres", "has": "memory"}]},
        ]
        placed = await call("Plan", put("mem", backend="memory"), pb.NamespacePlacement)
        assert placed.store == "small"


async def test_changes_over_grpc_are_audited_with_before_and_after(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    async with serving(config(tmp_path, audit={"sink": "file", "path": str(log)})) as (_, call):
        await call("Put", put("aud", needs=pb.NamespaceNeeds(read_rps=5)), pb.NamespacePlacement)
        await call("Delete", pb.DeleteNamespaceRequest(namespace="aud"), pb.DeleteNamespaceResponse)
    events = [json.loads(line) for line in log.read_text().splitlines()]
    created, deleted = [e for e in events if e["operation"] in ("namespace_put", "namespace_delete")]
    assert created["values"]["before"] is None and created["values"]["after"]["needs"]["read_rps"] == 5.0
    assert deleted["values"]["before"]["name"] == "aud" and deleted["values"]["after"] is None
    assert created["principal"] == "admin" and created["status"] == 200


async def test_a_timeseries_namespace_over_grpc(tmp_path: Path) -> None:
    admin = {"X-API-Key": KEYS["admin"][0]}
    async with serving(config(tmp_path)) as (http, call):
        needs = pb.NamespaceNeeds(access_pattern="timeseries")
        settings = pb.NamespaceTimeSeries(slice_seconds=600, accept_window_seconds=3600)
        placed = await call("Put", put("clicks", needs=needs, timeseries=settings), pb.NamespacePlacement)
        assert (placed.store, placed.created) == ("small", True)
        now = datetime.now(UTC).isoformat()
        r = await http.post(
            "/v1/ts/clicks/s", json={"events": [{"time": now, "id": "e1", "data": {}}]}, headers=admin
        )
        assert r.status_code == 200, r.text
        # The accept window it was given is applied: an event of 2001 is refused.
        old = {"events": [{"time": "2001-01-01T00:00:00+00:00", "id": "e0", "data": {}}]}
        r = await http.post("/v1/ts/clicks/s", json=old, headers=admin)
        assert r.status_code == 400 and "accept" in r.json()["detail"], r.text
        with pytest.raises(aio.AioRpcError) as bad:
            await call(
                "Put",
                put("other", needs=needs, timeseries=pb.NamespaceTimeSeries(slice_seconds=0)),
                pb.NamespacePlacement,
            )
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "slice_seconds" in (bad.value.details() or "")
        with pytest.raises(aio.AioRpcError) as refused:
            await call(
                "Delete",
                pb.DeleteNamespaceRequest(namespace="clicks", purge=True),
                pb.DeleteNamespaceResponse,
            )
        assert refused.value.code() == grpc.StatusCode.ABORTED
        assert dict(refused.value.trailing_metadata() or ())["prism-error-code"] == "TIMESERIES_DELETE"
