"""Signals at the gateway, and the early pages that a slow store gets instead of errors.

Signals come from a namespace's declared needs and its store's measured latency; the
store here is the delayed memory store of prism.testing, so "measured" is real time.
"""

from __future__ import annotations

import gzip
from typing import Any

import pytest
from gateway_helpers import client_for, full_config, headers
from prometheus_client import REGISTRY

from prism.gateway import parse_config
from prism.gateway.config import ConfigError
from prism.kv.store import Store
from prism.testing.slow import DelayedBackend

READER = headers("reader")
WRITER = headers("writer")


def config(tmp_path: Any, **signals: Any) -> dict[str, Any]:
    raw = full_config(tmp_path, signals=signals)
    raw["stores"] = {"main": "memory://", "slow": "memory://"}
    raw["namespaces"] += [
        {"name": "fast-need", "needs": {"latency_p99_ms": 25}, "max_value_bytes": 1000},
        {"name": "measured", "store": "slow"},
        {"name": "paged", "store": "slow", "needs": {"latency_p99_ms": 50}},
        {"name": "series", "kind": "timeseries"},
    ]
    return raw


async def test_signals_follow_the_declared_needs(tmp_path: Any) -> None:
    async with client_for(config(tmp_path)) as client:
        r = await client.get("/v1/namespaces/fast-need/signals", headers=READER)
        assert r.status_code == 200, r.text
        assert r.json() == {
            "latency_target_ms": 25.0,
            "latency_max_ms": 100.0,
            "page_size_bytes": 2 * 1024 * 1024,
            "max_value_bytes": 1000,
            "compression": ["gzip"],
            "hedge_after_ms": 25.0,
            "retry": {"max_attempts": 2, "backoff_ms": 20.0},
            "refresh_after_s": 30.0,
            "compress_above_bytes": 4096,
        }
        # Neither needs nor samples: nothing tighter than the gateway's own request timeout (10 s).
        plain = (await client.get("/v1/namespaces/plain/signals", headers=READER)).json()
        assert plain["latency_target_ms"] == 100 and plain["latency_max_ms"] == 10_000
        assert plain["hedge_after_ms"] == 5000


async def test_the_settings_shape_the_signals(tmp_path: Any) -> None:
    raw = config(
        tmp_path,
        max_over_target=2,
        retry_attempts=3,
        retry_backoff_ms=5,
        refresh_after_s=7,
        compression=False,
        page_size_bytes=1024,
    )
    raw["server"] = {"request_timeout": 0.03}
    async with client_for(raw) as client:
        body = (await client.get("/v1/namespaces/fast-need/signals", headers=READER)).json()
    # The deadline never passes the gateway's own request timeout; hedges come before it.
    assert body["latency_max_ms"] == 30.0 and body["hedge_after_ms"] == 15.0
    assert body["retry"] == {"max_attempts": 3, "backoff_ms": 5.0}
    assert body["refresh_after_s"] == 7.0 and body["compression"] == [] and body["page_size_bytes"] == 1024


async def test_signals_follow_the_measured_latency_of_the_store(tmp_path: Any) -> None:
    slow = DelayedBackend(read_delay=0.03)
    async with client_for(config(tmp_path), stores={"slow": Store(slow)}) as client:
        for i in range(25):
            assert (
                await client.put(f"/v1/kv/measured/k{i}", content=b"v", headers=WRITER)
            ).status_code == 201
        for i in range(25):
            assert (await client.get(f"/v1/kv/measured/k{i}", headers=READER)).status_code == 200
        body = (await client.get("/v1/namespaces/measured/signals", headers=READER)).json()
    assert slow.reads == 25
    assert 30 <= body["latency_target_ms"] < 1000
    # Hedged after the measured p95: every read took 30 ms, so about as long as the p99.
    assert 30 <= body["hedge_after_ms"] <= body["latency_target_ms"]
    assert body["latency_max_ms"] == pytest.approx(4 * body["latency_target_ms"], rel=1e-3)


async def test_signals_are_for_those_who_may_read_the_namespace(tmp_path: Any) -> None:
    async with client_for(config(tmp_path)) as client:
        assert (await client.get("/v1/namespaces/plain/signals")).status_code == 401
        r = await client.get("/v1/namespaces/plain/signals", headers=headers("nobody"))
        assert r.status_code == 403 and r.json()["code"] == "FORBIDDEN"
        r = await client.get("/v1/namespaces/nope/signals", headers=READER)
        assert r.status_code == 404 and r.json()["code"] == "NAMESPACE_NOT_FOUND"
        # Every kind of namespace has signals.
        assert (await client.get("/v1/namespaces/series/signals", headers=READER)).status_code == 200
        assert (await client.put("/v1/namespaces/plain/signals", headers=WRITER)).status_code == 405


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("max_over_target", 0.5),
        ("latency_target_ms", 0),
        ("retry_attempts", 0),
        ("page_chunk", 0),
        ("bogus", 1),
    ],
)
def test_bad_settings_are_refused_naming_the_field(tmp_path: Any, setting: str, value: Any) -> None:
    with pytest.raises(ConfigError, match=rf"\$\.signals\.{setting}|\$\.signals.*{setting}"):
        parse_config(config(tmp_path, **{setting: value}), source="test.yaml", env={})


def early_pages(ns: str, op: str) -> float:
    return REGISTRY.get_sample_value("prism_early_pages_total", {"namespace": ns, "op": op}) or 0.0


async def test_a_scan_that_would_miss_the_deadline_returns_early_with_a_token(tmp_path: Any) -> None:
    # latency_max_ms is 200; every read of 10 keys takes 60 ms.
    slow = DelayedBackend(scan_delay=0.06)
    async with client_for(config(tmp_path, page_chunk=10), stores={"slow": Store(slow)}) as client:
        keys = [f"k{i:03}" for i in range(100)]
        for key in keys:
            assert (await client.put(f"/v1/kv/paged/{key}", content=b"v", headers=WRITER)).status_code == 201
        before = early_pages("paged", "scan")
        seen: list[str] = []
        token: str | None = None
        pages = 0
        while True:
            params = {"limit": "100", **({"page_token": token} if token else {})}
            r = await client.get("/v1/kv/paged", params=params, headers=READER)
            assert r.status_code == 200, r.text
            body = r.json()
            pages += 1
            assert 10 <= len(body["keys"]) < 100 or body["next_page_token"] is None
            seen += body["keys"]
            token = body["next_page_token"]
            if token is None:
                break
        assert seen == keys  # every key once, in order
        assert pages >= 2 and early_pages("paged", "scan") - before >= 1
        # Without the delay the same page is read whole.
        slow.scan_delay = 0
        r = await client.get("/v1/kv/paged", params={"limit": "100"}, headers=READER)
        assert len(r.json()["keys"]) == 100


async def test_a_record_page_that_would_miss_the_deadline_returns_early(tmp_path: Any) -> None:
    slow = DelayedBackend(scan_delay=0.06)
    async with client_for(config(tmp_path, page_chunk=10), stores={"slow": Store(slow)}) as client:
        items = [{"key": f"i{i:03}", "value": "dg=="} for i in range(60)]
        r = await client.put("/v1/records/paged/r1", json={"items": items}, headers=WRITER)
        assert r.status_code == 200, r.text
        before = early_pages("paged", "records_get")
        seen: list[str] = []
        token: str | None = None
        while True:
            params = {"limit": "60", "page_size_bytes": "1000", **({"page_token": token} if token else {})}
            r = await client.get("/v1/records/paged/r1", params=params, headers=READER)
            assert r.status_code == 200, r.text
            body = r.json()
            seen += [i["key"] for i in body["items"]]
            token = body["next_page_token"]
            if token is None:
                break
        assert seen == [i["key"] for i in items]
        assert early_pages("paged", "records_get") - before >= 1
        # The byte cap holds for the whole page, across its chunks.
        slow.scan_delay = 0
        r = await client.get(
            "/v1/records/paged/r1", params={"limit": "60", "page_size_bytes": "25"}, headers=READER
        )
        assert [i["key"] for i in r.json()["items"]] == [f"i{i:03}" for i in range(25)]


async def test_gzip_bodies_are_accepted_and_bombs_refused(tmp_path: Any) -> None:
    async with client_for(config(tmp_path)) as client:
        value = b"prism " * 5000
        gz = {**WRITER, "Content-Encoding": "gzip"}
        r = await client.put("/v1/kv/plain/big", content=gzip.compress(value), headers=gz)
        assert r.status_code == 201, r.text
        assert (await client.get("/v1/kv/plain/big", headers=READER)).content == value
        # Past the namespace's limit once decompressed: 413, nothing written.
        r = await client.put("/v1/kv/small/bomb", content=gzip.compress(b"x" * 10_000), headers=gz)
        assert r.status_code == 413 and r.json()["code"] == "BODY_TOO_LARGE"
        assert (await client.get("/v1/kv/small/bomb", headers=READER)).status_code == 404
        r = await client.put("/v1/kv/plain/bad", content=b"not gzip", headers=gz)
        assert r.status_code == 400 and r.json()["code"] == "INVALID_BODY"
        r = await client.put("/v1/kv/plain/br", content=b"x", headers={**WRITER, "Content-Encoding": "br"})
        assert r.status_code == 415 and r.json()["code"] == "UNSUPPORTED_CONTENT_ENCODING"
        assert (await client.get("/v1/kv/plain/bad", headers=READER)).status_code == 404


@pytest.mark.parametrize(
    ("need", "p99", "p95", "expected"),
    [
        # (latency_target_ms, latency_max_ms, hedge_after_ms)
        (None, None, None, (100, 10_000, 5_000)),  # nothing known: the request timeout
        (25, None, None, (25, 100, 25)),  # the need; the deadline floor is 100 ms
        (50, 8, 3, (50, 200, 50)),  # a need wins over what was measured
        (None, 100, 2, (100, 400, 5)),  # measured: hedged after the p95, not before 5 ms
        (None, 30, 20, (30, 120, 20)),
        (None, 3000, 2500, (3000, 10_000, 2500)),  # capped by the request timeout
        (None, 8000, 7000, (8000, 10_000, 5_000)),  # hedges come by half the deadline
    ],
)
def test_the_derivation_rules(
    need: float | None, p99: float | None, p95: float | None, expected: tuple[float, float, float]
) -> None:
    from prism.control.signals import SignalsConfig, derive_signals

    got = derive_signals(
        SignalsConfig(),
        latency_need_ms=need,
        measured_p99_ms=p99,
        measured_p95_ms=p95,
        max_value_bytes=1,
        request_timeout_s=10,
    )
    assert (got.latency_target_ms, got.latency_max_ms, got.hedge_after_ms) == expected


def test_two_gateway_processes_give_the_same_signals_for_the_same_needs(tmp_path: Any) -> None:
    """Replicas derive a namespace's signals from its needs alike; what they measure stays their own."""
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    import httpx

    from prism.testing.servers import free_port

    config = tmp_path / "prism.yaml"
    config.write_text(
        "stores: {main: 'memory://'}\n"
        "namespaces: [{name: profiles, needs: {latency_p99_ms: 30}, max_value_bytes: 2048}]\n"
        "signals: {retry_attempts: 3, refresh_after_s: 12}\n"
        "audit: {sink: none}\nserver: {access_log: false, grpc_port: 0}\n"
    )
    prism_bin = str(Path(sys.executable).with_name("prism"))
    procs = []
    ports = [free_port(), free_port()]
    try:
        for port in ports:
            with (tmp_path / f"serve-{port}.log").open("wb") as log:
                procs.append(
                    subprocess.Popen(
                        [prism_bin, "serve", "--config", str(config), "--port", str(port)],
                        cwd=tmp_path,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                )
        answers = []
        for port, proc in zip(ports, procs, strict=True):
            deadline = time.monotonic() + 30
            while True:
                try:
                    r = httpx.get(f"http://127.0.0.1:{port}/v1/namespaces/profiles/signals", timeout=1)
                    break
                except httpx.TransportError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        pytest.fail((tmp_path / f"serve-{port}.log").read_text())
                    time.sleep(0.1)
            assert r.status_code == 200, r.text
            answers.append(r.json())
        assert answers[0] == answers[1]
        assert answers[0]["latency_max_ms"] == 120 and answers[0]["hedge_after_ms"] == 30
        assert answers[0]["retry"]["max_attempts"] == 3 and answers[0]["refresh_after_s"] == 12
        assert answers[0]["max_value_bytes"] == 2048
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
