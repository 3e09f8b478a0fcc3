"""Request ids, structured access logs, metrics labels, and W3C trace propagation to backend spans."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from pathlib import Path
from typing import Any

from gateway_helpers import client_for, full_config, headers
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from prism.gateway.logs import AccessLog, JsonFormatter

W = headers("writer")


def span_exporter() -> InMemorySpanExporter:
    """An exporter on the global tracer provider (installing an SDK provider when none is set)."""
    exporter = InMemorySpanExporter()
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
        provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter


async def test_request_id_is_echoed_or_generated(tmp_path: Path) -> None:
    async with client_for(full_config(tmp_path)) as c:
        r = await c.get("/healthz", headers={"X-Request-ID": "trace-me-123"})
        assert r.headers["x-request-id"] == "trace-me-123"
        r = await c.get("/healthz", headers={"X-Request-ID": "x" * 500})
        assert len(r.headers["x-request-id"]) == 24
        r = await c.get("/v1/kv/plain/missing", headers=W)
        assert r.json()["request_id"] == r.headers["x-request-id"]


def access_lines(err: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("logger") == "prism.gateway.access"]


async def test_access_log_has_route_template_status_latency_and_no_keys(tmp_path: Path, capfd: Any) -> None:
    async with client_for(full_config(tmp_path)) as c:
        r = await c.put("/v1/kv/plain/user:secret-key", content=b"x", headers=W)
        await c.get("/no/such/route")
    put, unmatched = access_lines(capfd.readouterr().err)[-2:]
    assert put["message"] == "request" and put["level"] == "info"
    assert put["request_id"] == r.headers["x-request-id"]
    assert put["route"] == "/v1/kv/{ns}/{key:path}" and put["method"] == "PUT" and put["status"] == 201
    assert put["namespace"] == "plain" and put["principal"] == "writer"
    assert put["latency_ms"] >= 0 and put["time"].endswith("Z")
    assert "secret-key" not in json.dumps(put)
    assert unmatched["route"] == "unmatched" and unmatched["status"] == 404


async def test_access_log_lines_are_written_without_waiting_for_shutdown(tmp_path: Path, capfd: Any) -> None:
    async with client_for(full_config(tmp_path)) as c:
        await c.get("/healthz")
        await asyncio.sleep(0.3)
        assert [line["route"] for line in access_lines(capfd.readouterr().err)] == ["/healthz"]


async def test_access_log_can_be_turned_off(tmp_path: Path, capfd: Any) -> None:
    async with client_for(full_config(tmp_path, server={"access_log": False})) as c:
        await c.get("/healthz")
    assert access_lines(capfd.readouterr().err) == []


def test_json_formatter_keeps_extra_fields() -> None:
    record = logging.LogRecord("prism.test", logging.WARNING, __file__, 1, "hello %s", ("there",), None)
    record.namespace = "orders"
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "hello there" and line["level"] == "warning" and line["namespace"] == "orders"
    assert line["logger"] == "prism.test" and line["time"].endswith("Z")


async def test_metrics_use_route_templates_and_bounded_labels(tmp_path: Path) -> None:
    async with client_for(full_config(tmp_path)) as c:
        await c.get("/v1/kv/plain/some-unique-key-123", headers=W)
        await c.get("/random/path/abc")
        text = (await c.get("/metrics")).text
    assert "some-unique-key-123" not in text and "/random/path" not in text
    assert re.search(
        r'prism_http_requests_total\{method="GET",namespace="",route="unmatched",status="404"\}', text
    )
    assert re.search(
        r'prism_http_request_duration_seconds_count\{method="GET",namespace="plain",'
        r'route="/v1/kv/\{ns\}/\{key:path\}"\} [1-9]',
        text,
    )
    assert "prism_http_requests_in_flight" in text


async def test_traceparent_parents_the_request_and_backend_spans(tmp_path: Path) -> None:
    exporter = span_exporter()
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    parent_id = "00f067aa0ba902b7"
    async with client_for(full_config(tmp_path)) as c:
        r = await c.put(
            "/v1/kv/plain/traced", content=b"x", headers={**W, "traceparent": f"00-{trace_id}-{parent_id}-01"}
        )
        assert r.status_code == 201
    spans = [s for s in exporter.get_finished_spans() if format(s.context.trace_id, "032x") == trace_id]
    server = next(s for s in spans if s.name.startswith("HTTP PUT"))
    assert server.name == "HTTP PUT /v1/kv/{ns}/{key:path}"
    assert server.parent is not None and format(server.parent.span_id, "016x") == parent_id
    assert server.attributes is not None and server.attributes["http.response.status_code"] == 201
    backend = next(s for s in spans if s.name == "kv.put")
    assert backend.parent is not None and backend.parent.span_id == server.context.span_id
    assert backend.attributes is not None and backend.attributes["db.system"] == "memory"


def sample(text: str, name: str, labels: str) -> float:
    match = re.search(rf"^{re.escape(name)}\{{{re.escape(labels)}\}} ([0-9.e+]+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


async def test_key_reads_are_counted_by_status_with_prometheus_bucket_labels(tmp_path: Path) -> None:
    route = 'method="GET",namespace="plain",route="/v1/kv/{ns}/{key:path}"'
    async with client_for(full_config(tmp_path)) as c:
        before = (await c.get("/metrics")).text
        await c.put("/v1/kv/plain/counted", content=b"x", headers=W)
        for _ in range(3):
            assert (await c.get("/v1/kv/plain/counted", headers=W)).status_code == 200
        assert (await c.get("/v1/kv/plain/not-there", headers=W)).status_code == 404
        text = (await c.get("/metrics")).text
    for status, added in (("200", 3), ("404", 1)):
        name, labels = "prism_http_requests_total", f'{route},status="{status}"'
        assert sample(text, name, labels) == sample(before, name, labels) + added
    count = "prism_http_request_duration_seconds_count"
    assert sample(text, count, route) == sample(before, count, route) + 4
    bucket = "prism_http_request_duration_seconds_bucket"
    for le in ("0.0005", "1.0", "10.0", "+Inf"):
        assert f'{bucket}{{le="{le}",{route}}}' in text
    assert sample(text, bucket, f'le="+Inf",{route}') == sample(text, count, route)


async def test_key_read_access_line_names_namespace_principal_and_status(tmp_path: Path, capfd: Any) -> None:
    async with client_for(full_config(tmp_path)) as c:
        await c.put("/v1/kv/plain/logged", content=b"x", headers=W)
        r = await c.get("/v1/kv/plain/logged", headers=W)
    line = access_lines(capfd.readouterr().err)[-1]
    assert line["request_id"] == r.headers["x-request-id"] and line["method"] == "GET"
    assert line["route"] == "/v1/kv/{ns}/{key:path}" and line["status"] == 200
    assert line["namespace"] == "plain" and line["principal"] == "writer"
    assert list(line)[:4] == ["time", "level", "logger", "message"]


async def test_access_log_writes_once_max_buffer_lines_pile_up(capfd: Any) -> None:
    log = AccessLog(flush_interval=60, max_buffer_lines=3)
    for i in range(2):
        log.request(f"r{i}", "GET", "/healthz", 200, 0.00123456, None, None, None)
    assert access_lines(capfd.readouterr().err) == []
    log.request("r2", "GET", "/healthz", 200, 0.00123456, None, None, None)
    lines = access_lines(capfd.readouterr().err)
    assert [line["request_id"] for line in lines] == ["r0", "r1", "r2"]
    assert lines[0]["latency_ms"] == 1.235 and "namespace" not in lines[0] and "principal" not in lines[0]


def test_log_lines_never_hold_query_tokens() -> None:
    # uvicorn logs every WebSocket handshake with its query string, where browsers send the token.
    token_text = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"
    record = logging.LogRecord(
        "uvicorn.error",
        logging.INFO,
        __file__,
        1,
        '%s - "WebSocket %s" [accepted]',
        ("127.0.0.1:5555", f"/v1/stream?token={token_text}&x=1"),
        None,
    )
    line = json.loads(JsonFormatter().format(record))
    assert token_text not in line["message"]
    assert line["message"] == '127.0.0.1:5555 - "WebSocket /v1/stream?token=***&x=1" [accepted]'
