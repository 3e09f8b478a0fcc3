"""The console's event streams end when the session does (against a real ``prism serve``)."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

from console.console_helpers import KEYS, Served

pytestmark = pytest.mark.timeout(60)


@contextmanager
def signed_in(served: Served) -> Iterator[tuple[httpx.Client, str]]:
    with httpx.Client(base_url=served.url, timeout=10) as c:
        yield c, _sign_in(c)


def _sign_in(c: httpx.Client) -> str:
    form = c.get("/admin/login")
    token = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert token is not None
    r = c.post(
        "/admin/login", data={"csrf": token.group(1), "kind": "api_key", "credential": KEYS["admin"][0]}
    )
    assert r.status_code == 303
    page = c.get("/admin/namespaces")
    csrf = re.search(r'<meta name="csrf-token" content="([^"]+)">', page.text)
    assert csrf is not None
    return csrf.group(1)


def test_signing_out_ends_the_open_overview_stream(served: Served) -> None:
    samples: list[str] = []
    ended = threading.Event()

    def follow(c: httpx.Client) -> None:
        with c.stream("GET", "/admin/overview/stream") as stream:
            samples.extend(line for line in stream.iter_lines() if line.startswith("event: sample"))
        ended.set()

    with signed_in(served) as (c, csrf):
        follower = threading.Thread(target=follow, args=(c,), daemon=True)
        follower.start()
        deadline = time.monotonic() + 10
        while len(samples) < 2:
            assert time.monotonic() < deadline, "no live samples arrived"
            time.sleep(0.05)
        with httpx.Client(base_url=served.url, timeout=10) as other:
            other.cookies = c.cookies
            assert other.post("/admin/logout", data={"csrf": csrf}).status_code == 303
        assert ended.wait(5), "the stream went on after sign-out"
        follower.join(5)
        assert c.get("/admin/overview/stream").status_code == 303  # and a new one goes to sign-in


def test_the_request_event_stream_relays_the_api_and_ends_with_the_request(served: Served) -> None:
    with (
        signed_in(served) as (c, _),
        httpx.Client(base_url=served.url, headers={"X-API-Key": KEYS["admin"][0]}, timeout=10) as api,
    ):
        payload = {"seconds": 0.6, "step": 0.2}
        rid = api.post("/v1/requests", json={"action": "delay", "payload": payload}).json()["request_id"]
        with c.stream("GET", f"/admin/requests/{rid}/events") as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            events = [
                line.removeprefix("event: ") for line in stream.iter_lines() if line.startswith("event: ")
            ]
        assert events.count("progress") >= 2 and events[-1] == "complete"
        other = c.get("/admin/requests/r0123456789abcdef0123456789abcdef/events")
        assert other.status_code == 404
