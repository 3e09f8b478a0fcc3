"""The audit trail: one JSON line per data access, to a file or a namespace; drop or fail closed."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway_helpers import build_app, client_for, full_config, headers, running

import prism
from prism.gateway.audit import AuditEvent, AuditLog, AuditSink
from prism.gateway.config import AuditConfig


def audit_config(tmp_path: Path, **audit: Any) -> dict[str, Any]:
    config = full_config(tmp_path, audit={"flush_interval": 0.02, "retry_interval": 0.05, **audit})
    config["namespaces"].append({"name": "quiet", "audit": False})
    return config


async def wait_for(predicate: Any) -> None:
    for _ in range(150):
        if predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met within 3 s")


def metric(text: str, name: str, labels: str) -> float:
    selector = re.escape(name) + (rf"\{{{re.escape(labels)}\}}" if labels else "")
    match = re.search(rf"^{selector} ([0-9.e+]+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


async def test_each_data_access_is_one_json_line(tmp_path: Path) -> None:
    log = tmp_path / "audit" / "prism-audit.log"
    log.parent.mkdir()  # Prism creates the file, never its directory
    async with client_for(audit_config(tmp_path, sink="file", path=str(log))) as c:
        put = await c.put("/v1/kv/orders/o1", content=b"x", headers=headers("acme"))
        await c.get("/v1/kv/orders/o1", headers=headers("acme"))
        await c.post("/v1/kv/orders/_bulk/get", json={"keys": ["o1", "o2", "o3"]}, headers=headers("acme"))
        await c.put("/v1/kv/plain/denied", content=b"x", headers=headers("reader"))
        await c.put("/v1/kv/quiet/q", content=b"x", headers=headers("writer"))
    assert oct(log.stat().st_mode & 0o777) == "0o600"
    events = [json.loads(line) for line in log.read_text().splitlines()]
    assert [e["operation"] for e in events] == ["put", "get", "bulk_get", "put"]
    first = events[0]
    assert first["request_id"] == put.headers["x-request-id"]
    assert first["principal"] == "acme" and first["principal_kind"] == "api_key" and first["tenant"] == "acme"
    assert first["namespace"] == "orders" and first["key"] == "o1"
    assert first["outcome"] == "ok" and first["status"] == 201
    assert first["time"].endswith("Z") and first["latency_ms"] >= 0
    assert events[2]["key_count"] == 3 and "key" not in events[2]
    assert events[3]["outcome"] == "FORBIDDEN" and events[3]["status"] == 403
    assert "quiet" not in {e["namespace"] for e in events}


async def test_namespace_sink_stores_events_in_order(tmp_path: Path) -> None:
    url = f"memory://audit-{uuid.uuid4().hex}"
    config = audit_config(tmp_path, sink="namespace", namespace="audit-trail")
    config["stores"] = {"main": url}
    async with client_for(config) as c:
        for i in range(3):
            await c.put(f"/v1/kv/plain/k{i}", content=b"x", headers=headers("writer"))
    async with prism.connect(url) as store:
        ns = store.namespace("audit-trail")
        keys = (await ns.scan(limit=10)).keys
        assert len(keys) == 3
        events = [json.loads((await ns.get(k)).value) for k in keys]  # type: ignore[union-attr]
        assert [e["key"] for e in events] == ["k0", "k1", "k2"]


async def test_drop_mode_keeps_serving_and_counts_lost_events(tmp_path: Path) -> None:
    async with client_for(audit_config(tmp_path, sink="file", path="/dev/full", on_failure="drop")) as c:
        before = metric((await c.get("/metrics")).text, "prism_audit_events_total", 'outcome="dropped"')
        for i in range(3):
            r = await c.put(f"/v1/kv/plain/d{i}", content=b"x", headers=headers("writer"))
            assert r.status_code == 201

        async def dropped() -> float:
            return metric((await c.get("/metrics")).text, "prism_audit_events_total", 'outcome="dropped"')

        for _ in range(100):
            if await dropped() >= before + 3:
                break
            await asyncio.sleep(0.02)
        assert await dropped() >= before + 3
        assert metric((await c.get("/metrics")).text, "prism_audit_sink_up", "") == 0.0
        assert (await c.get("/readyz")).status_code == 200


async def test_fail_closed_refuses_requests_while_the_sink_fails(tmp_path: Path) -> None:
    url = f"memory://closed-{uuid.uuid4().hex}"
    config = audit_config(tmp_path, sink="file", path="/dev/full", on_failure="reject")
    config["stores"] = {"main": url}
    app = build_app(config)
    gateway = app.state.gateway
    async with running(app) as c:
        # Admitted while the sink was believed healthy, but not acknowledged: its event was not written.
        r = await c.put("/v1/kv/plain/first", content=b"x", headers=headers("writer"))
        assert r.status_code == 503 and r.json()["code"] == "AUDIT_UNAVAILABLE"
        await wait_for(lambda: not gateway.audit.healthy)
        r = await c.put("/v1/kv/plain/second", content=b"x", headers=headers("writer"))
        assert r.status_code == 503
        assert r.json()["code"] == "AUDIT_UNAVAILABLE" and r.headers["retry-after"] == "1"
        assert (await c.get("/v1/kv/plain/first", headers=headers("writer"))).status_code == 503
        ready = await c.get("/readyz")
        assert ready.status_code == 503 and ready.json()["audit"]["healthy"] is False
        # Namespaces without audit keep working.
        assert (await c.put("/v1/kv/quiet/q", content=b"x", headers=headers("writer"))).status_code == 201
    async with prism.connect(url) as store:
        assert await store.namespace("plain").get("second") is None


async def test_fail_closed_bounds_the_buffer(tmp_path: Path) -> None:
    config = audit_config(
        tmp_path,
        sink="file",
        path=str(tmp_path / "a.log"),
        on_failure="reject",
        buffer_size=2,
        flush_interval=30,
        batch_size=100,
    )
    app = build_app(config)
    async with running(app) as c:
        statuses = []
        # Reads are answered before their events are written, so they fill the buffer.
        for i in range(4):
            r = await c.get(f"/v1/kv/plain/b{i}", headers=headers("writer"))
            statuses.append(r.status_code)
        assert statuses == [404, 404, 503, 503]
    # Buffered events are flushed at shutdown.
    assert len((tmp_path / "a.log").read_text().splitlines()) == 2


async def test_unauthenticated_requests_are_audited_without_a_principal(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    async with client_for(audit_config(tmp_path, sink="file", path=str(log))) as c:
        assert (await c.get("/v1/kv/plain/k")).status_code == 401
        assert (await c.get("/v1/kv/plain/k", headers=headers("writer"))).status_code == 404
    events = [json.loads(line) for line in log.read_text().splitlines()]
    seen = [(e["status"], e["outcome"]) for e in events]
    assert seen == [(401, "MISSING_CREDENTIALS"), (404, "KEY_NOT_FOUND")]
    assert "principal" not in events[0] and events[1]["principal"] == "writer"


async def test_stdout_sink(tmp_path: Path, capfd: Any) -> None:
    async with client_for(audit_config(tmp_path, sink="stdout")) as c:
        await c.put("/v1/kv/plain/out", content=b"x", headers=headers("writer"))
    out = capfd.readouterr().out
    event = json.loads(out.strip().splitlines()[-1])
    assert event["key"] == "out" and event["operation"] == "put"


class RecordingSink(AuditSink):
    """Keeps the size of every batch it is given."""

    def __init__(self) -> None:
        self.batches: list[int] = []

    async def write(self, data: bytes) -> None:
        self.batches.append(data.count(b"\n"))


def event(i: int) -> AuditEvent:
    return AuditEvent(
        time=datetime.now(UTC),
        request_id=f"r{i}",
        principal="p",
        principal_kind="api_key",
        tenant=None,
        namespace="plain",
        operation="get",
        outcome="ok",
        status=200,
        latency_ms=0.1,
    )


async def test_the_writer_waits_for_full_batches_under_load() -> None:
    sink = RecordingSink()
    audit = AuditLog(sink, AuditConfig(batch_size=3, flush_interval=30))
    await audit.start()
    for i in range(7):
        audit.record(event(i))
        await asyncio.sleep(0)
    await wait_for(lambda: sum(sink.batches) == 6)
    await asyncio.sleep(0.05)
    # Full batches only: the seventh event waits for its batch (or the flush interval).
    assert sink.batches == [3, 3]
    await audit.stop(1.0)
    assert sink.batches == [3, 3, 1]


async def test_a_partial_batch_is_written_after_the_flush_interval() -> None:
    sink = RecordingSink()
    audit = AuditLog(sink, AuditConfig(batch_size=100, flush_interval=0.05))
    await audit.start()
    audit.record(event(0))
    audit.record(event(1))
    await wait_for(lambda: sink.batches == [2])
    await audit.stop(1.0)
    assert sink.batches == [2]
