"""A draining server ends its SSE streams at once, cleanly, and exits on time."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from streaming_helpers import Server, make_service

from prism.testing.servers import free_port
from prism.testing.servers._base import ServerUnavailable, wait_for_port

PRISM = str(Path(sys.executable).with_name("prism"))
#: server.shutdown_timeout of the zero-config gateway: what an SSE stream used to run into.
SHUTDOWN_TIMEOUT = 10.0


#: The servers that drain: the zero-config gateway, and the streaming API served alone.
SERVERS = {
    "prism serve": ([PRISM, "serve"], {}),
    "python -m prism.streaming": (
        [
            sys.executable,
            "-m",
            "prism.streaming",
            "--token",
            "t0ken=alice",
            "-o",
            "demo_handlers=true",
            "-o",
            f"shutdown_timeout={SHUTDOWN_TIMEOUT:g}",
        ],
        {"Authorization": "Bearer t0ken"},
    ),
}


@pytest.fixture(params=list(SERVERS))
def served(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[subprocess.Popen[str], str, dict[str, str]]]:
    """A server process with streaming, its demo handlers and in-process workers."""
    command, headers = SERVERS[request.param]
    port = free_port()
    proc = subprocess.Popen(
        [*command, "--port", str(port)],
        cwd=tmp_path,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"{request.param} did not start: {proc.communicate()[1]}")
            try:
                wait_for_port(port, timeout=0.2)
                break
            except ServerUnavailable:
                continue
        yield proc, f"http://127.0.0.1:{port}", headers
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def sse_events(lines: Iterator[str]) -> Iterator[dict[str, str]]:
    """Server-Sent Events as {"id"?, "event", "data"} mappings (comments and retry skipped)."""
    event: dict[str, str] = {}
    for line in lines:
        if line == "":
            if "data" in event:
                yield event
            event = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            event[name] = value.removeprefix(" ")


def test_sigterm_ends_an_open_sse_stream_at_once_with_a_reconnect_event(
    served: tuple[subprocess.Popen[str], str, dict[str, str]],
) -> None:
    proc, url, headers = served
    with httpx.Client(base_url=url, headers=headers, timeout=30) as http:
        rid = http.post("/v1/requests", json={"action": "delay", "payload": {"seconds": 60}}).json()[
            "request_id"
        ]
        with http.stream("GET", f"/v1/requests/{rid}/events") as response:
            assert response.status_code == 200
            events = sse_events(response.iter_lines())
            first = next(events)
            assert first["event"] == "progress" and first["id"] == "1"
            proc.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            rest = list(events)
            ended = time.monotonic() - signalled
    # The stream ends well before the shutdown timeout, with an event telling the client to reconnect.
    assert ended < SHUTDOWN_TIMEOUT / 2, f"the SSE stream ran {ended:.1f} s past SIGTERM"
    assert rest, "the stream ended without a final event"
    final = rest[-1]
    assert final["event"] == "reconnect" and "id" not in final
    assert json.loads(final["data"]) == {
        "type": "reconnect",
        "request_id": rid,
        "reason": "shutdown",
        "message": "the server is shutting down; reconnect with Last-Event-ID to resume",
    }
    _, err = proc.communicate(timeout=SHUTDOWN_TIMEOUT)
    exited = time.monotonic() - signalled
    assert proc.returncode == 0, err
    # The running job had cancel_grace (5 s) to finish before it was handed back: within the bound.
    assert exited < SHUTDOWN_TIMEOUT + 1, f"the server took {exited:.1f} s to exit"
    assert "Traceback" not in err and '"level":"error"' not in err and " ERROR " not in err, err


async def test_sse_streams_opened_while_shutting_down_end_at_once(server: Server) -> None:
    headers = {"Authorization": "Bearer alice-token"}
    async with httpx.AsyncClient(base_url=server.http, headers=headers, timeout=10) as http:
        rid = (await http.post("/v1/requests", json={"action": "delay", "payload": {"seconds": 30}})).json()[
            "request_id"
        ]
        async with http.stream("GET", f"/v1/requests/{rid}/events") as open_stream:
            lines = open_stream.aiter_lines()
            assert await anext(lines) == "retry: 1000"
            server.service.shutdown.request()
            rest = [line async for line in lines]
        assert rest[-3:] == ["event: reconnect", rest[-2], ""] and rid in rest[-2]
        started = time.monotonic()
        late = await http.get(f"/v1/requests/{rid}/events", params={"after_seq": 0})
        assert time.monotonic() - started < 2
        assert late.status_code == 200 and late.text.rstrip().split("\n")[-2] == "event: reconnect"
        await http.post(f"/v1/requests/{rid}/cancel")


async def test_services_stopped_in_any_order_give_the_signal_handlers_back() -> None:
    original = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    one, two = make_service(), make_service()
    await one.start()
    await two.start()
    assert signal.getsignal(signal.SIGTERM) not in (original[signal.SIGTERM], None)
    await one.stop()
    await two.stop()
    assert {sig: signal.getsignal(sig) for sig in original} == original
