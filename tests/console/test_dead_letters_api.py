"""``POST /v1/dead-letters/{id}/retry`` and ``DELETE /v1/dead-letters/{id}`` on a real ``prism serve``."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from console.console_helpers import KEYS, Served

pytestmark = pytest.mark.timeout(120)


def client(served: Served, who: str) -> httpx.Client:
    return httpx.Client(base_url=served.url, headers={"X-API-Key": KEYS[who][0]}, timeout=10)


def dead_letter(c: httpx.Client) -> str:
    rid: str = c.post("/v1/requests", json={"action": "always_fails", "payload": {"n": 1}}).json()[
        "request_id"
    ]
    deadline = time.monotonic() + 20
    while c.get(f"/v1/requests/{rid}").json()["status"] != "FAILED":
        assert time.monotonic() < deadline, "the request did not fail in time"
        time.sleep(0.05)
    return rid


def listed(c: httpx.Client) -> list[str]:
    return [r["request_id"] for r in c.get("/v1/dead-letters", params={"limit": 100}).json()["requests"]]


def test_retry_runs_it_again_once_and_takes_it_off_the_list(served: Served) -> None:
    with client(served, "admin") as c:
        rid = dead_letter(c)
        assert rid in listed(c)
        first = c.post(f"/v1/dead-letters/{rid}/retry")
        assert first.status_code == 202
        again = first.json()["request_id"]
        assert again != rid and first.headers["location"] == f"/v1/requests/{again}"
        assert rid not in listed(c)
        second = c.post(f"/v1/dead-letters/{rid}/retry")
        assert second.status_code == 202 and second.json()["request_id"] == again
        assert second.headers["idempotent-replayed"] == "true"
        retried = c.get(f"/v1/requests/{again}").json()
        assert retried["action"] == "always_fails"
        deadline = time.monotonic() + 20
        while c.get(f"/v1/requests/{again}").json()["status"] != "FAILED":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert again in listed(c)  # it failed again: a dead letter of its own


def test_concurrent_retries_make_one_new_request(served: Served) -> None:
    with client(served, "admin") as c:
        rid = dead_letter(c)
    answers: list[str] = []
    start = threading.Barrier(6)

    def retry() -> None:
        with client(served, "admin") as own:
            start.wait()
            r = own.post(f"/v1/dead-letters/{rid}/retry")
            assert r.status_code == 202, r.text
            answers.append(r.json()["request_id"])

    threads = [threading.Thread(target=retry) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(answers) == 6 and len(set(answers)) == 1


def test_discard_takes_it_off_without_running_it(served: Served) -> None:
    with client(served, "admin") as c:
        rid = dead_letter(c)
        assert c.delete(f"/v1/dead-letters/{rid}").status_code == 204
        assert rid not in listed(c)
        assert c.get(f"/v1/requests/{rid}").json()["status"] == "FAILED"
        gone = c.delete(f"/v1/dead-letters/{rid}")
        assert gone.status_code == 404 and gone.json()["code"] == "NOT_FOUND"
        assert c.post(f"/v1/dead-letters/{rid}/retry").status_code == 404


def test_only_admins_retry_or_discard_and_only_dead_letters(served: Served) -> None:
    with client(served, "admin") as c:
        rid = dead_letter(c)
        running = c.post("/v1/requests", json={"action": "delay", "payload": {"seconds": 5}}).json()[
            "request_id"
        ]
        assert c.post(f"/v1/dead-letters/{running}/retry").status_code == 404
        assert c.delete(f"/v1/dead-letters/{running}").status_code == 404
        c.post(f"/v1/requests/{running}/cancel")
    with client(served, "reader") as r:
        assert r.post(f"/v1/dead-letters/{rid}/retry").status_code == 403
        assert r.delete(f"/v1/dead-letters/{rid}").status_code == 403
    with client(served, "acme-admin") as other_tenant:
        assert other_tenant.post(f"/v1/dead-letters/{rid}/retry").status_code == 404
        assert other_tenant.delete(f"/v1/dead-letters/{rid}").status_code == 404
    with client(served, "admin") as c:
        assert rid in listed(c)
