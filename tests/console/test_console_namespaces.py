"""Runtime namespaces in headless Chromium: plan, apply, use, change, a refusal with its reasons, delete."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect

from console.console_helpers import KEYS, Served, config, serving
from console.test_console_browser import accept_dialogs, sign_in

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Served]:
    """The console's gateway with a declared capacity on ``local`` (so rates can be planned)."""
    cwd = tmp_path_factory.mktemp("console-ns")
    stores = {
        "local": {"url": f"sqlite:///{cwd}/data.db", "capacity": {"read_rps": 1000, "write_rps": 500}},
        "redis_main": redis_url,
    }
    cfg = config(cwd, redis_url, stores=stores)
    # A delete waits out requests in flight (server.request_timeout): short here.
    cfg["server"] = {**cfg["server"], "request_timeout": 3.0}
    cfg["stores"]["fed"] = f"sqlite:///{cwd}/fed.db?feed=true"
    cfg["namespaces"].append(
        {
            "name": "profiles",
            "store": "fed",
            "cache": {"store": "redis_main", "ttl": 60},
            "near_cache": {"max_items": 100, "ttl": 30},
            "needs": {"latency_p99_ms": 20, "consistency": "strong"},
        }
    )
    # Tenant-scoped namespaces are served without the migration router, so they can be watched.
    cfg["namespaces"].append({"name": "feeds", "store": "fed", "tenant_scoped": True})
    with serving(cwd, cfg) as server:
        yield server


def api(served: Served, who: str) -> httpx.Client:
    return httpx.Client(base_url=served.url, headers={"X-API-Key": KEYS[who][0]}, timeout=10)


def test_create_by_plan_and_apply_use_change_and_delete(page: Any, served: Served) -> None:
    sign_in(page, "admin")
    page.get_by_role("link", name="Namespaces").click()
    page.get_by_role("link", name="New namespace").click()
    # Keyboard: the name field, then Tab reaches the needs in order.
    page.get_by_label("Name", exact=True).focus()
    page.keyboard.type("sessions")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "f-needs-access-pattern"
    page.get_by_label("Reads per second", exact=True).fill("50")
    page.get_by_label("Default expiry (s)").fill("3600")
    page.get_by_label("PII fields", exact=True).fill("email")
    page.get_by_role("button", name="Plan").click()

    page.get_by_role("heading", name="The planner's decision").wait_for()
    assert page.locator("[data-plan-store]").inner_text() == "local"
    assert "read 60/s, burst 60" in page.locator("main dl").first.inner_text()  # 50 x limit_headroom 1.2
    with api(served, "admin") as c:
        assert c.get("/v1/namespaces/sessions").status_code == 404  # a dry run changes nothing

    asked = accept_dialogs(page)
    page.get_by_role("button", name="Apply: create sessions").click()
    page.wait_for_url(re.compile(r".*/admin/namespaces/sessions\?done=.*"))
    assert asked == ["Create namespace sessions on store local?"]
    assert "created on store local" in page.get_by_role("status").inner_text()

    with api(served, "admin") as c:
        detail = c.get("/v1/namespaces/sessions").json()
        assert detail["store"] == "local" and detail["default_ttl"] == 3600
        assert detail["needs"]["read_rps"] == 50 and detail["pii"]["fields"] == ["email"]
        assert c.put(
            "/v1/kv/sessions/s1",
            content=b'{"email": "a@b.c", "n": 1}',
            headers={"Content-Type": "application/json"},
        ).status_code in (200, 201)

    page.get_by_role("link", name="Namespaces").click()
    row = page.locator("main table tbody tr", has_text="sessions").inner_text()
    assert "runtime" in row
    assert "config file" in page.locator("main table tbody tr", has_text="orders").inner_text()
    page.get_by_role("link", name="sessions", exact=True).click()
    page.get_by_role("link", name="Browse keys").click()
    page.get_by_role("button", name="Scan").click()
    assert page.locator("main table tbody tr").all_inner_texts() == ["s1"]

    # Change it: a larger read rate and a shorter expiry, on the same store.
    page.goto("/admin/namespaces/sessions")
    page.get_by_role("link", name="Change settings").click()
    assert page.get_by_label("Reads per second", exact=True).input_value() == "50"
    page.get_by_label("Reads per second", exact=True).fill("100")
    page.get_by_label("Default expiry (s)").fill("60")
    page.get_by_role("button", name="Plan").click()
    page.get_by_role("button", name="Apply: change sessions").click()
    page.wait_for_url(re.compile(r".*/admin/namespaces/sessions\?done=.*"))
    assert asked[-1] == "Change namespace sessions on store local?"
    with api(served, "admin") as c:
        detail = c.get("/v1/namespaces/sessions").json()
        assert detail["needs"]["read_rps"] == 100 and detail["default_ttl"] == 60
        assert detail["limits"]["read_rate"] == 120

    # A change no store can carry: 422, each store's failed need shown, nothing changed.
    page.get_by_role("link", name="Change settings").click()
    page.get_by_label("Writes per second").fill("100000")
    page.get_by_role("button", name="Plan").click()
    assert "NO_STORE_FITS" in page.get_by_role("alert").inner_text()
    reasons = page.locator("main table tbody tr").all_inner_texts()
    assert any("local" in r and "write_rps" in r and "100000" in r for r in reasons), reasons
    assert page.get_by_role("button", name=re.compile("^Apply")).count() == 0
    with api(served, "admin") as c:
        assert c.get("/v1/namespaces/sessions").json()["needs"]["write_rps"] is None

    # Delete: refused while it holds data, then with purge.
    page.goto("/admin/namespaces/sessions")
    page.get_by_role("button", name="Delete namespace").click()
    assert "NAMESPACE_NOT_EMPTY" in page.get_by_role("alert").inner_text()
    page.goto("/admin/namespaces/sessions")
    page.get_by_label("Purge its data too").check()
    page.get_by_role("button", name="Delete namespace").click()
    page.wait_for_url(re.compile(r".*/admin/namespaces\?done=.*"))
    assert "deleted sessions, 1 records purged" in page.get_by_role("status").inner_text()
    assert asked[-1] == "Delete namespace sessions? With purge, its data is deleted too."
    with api(served, "admin") as c:
        assert c.get("/v1/namespaces/sessions").status_code == 404


def test_bad_field_is_named_and_nothing_is_created(page: Any, served: Served) -> None:
    sign_in(page, "admin")
    page.goto("/admin/namespaces/new")
    page.get_by_label("Name", exact=True).fill("badfield")
    page.get_by_label("Reads per second", exact=True).fill("lots")
    page.get_by_role("button", name="Plan").click()
    assert "needs.read_rps" in page.get_by_role("alert").inner_text()
    # The form comes back with what was typed.
    assert page.get_by_label("Reads per second", exact=True).input_value() == "lots"
    with api(served, "admin") as c:
        assert c.get("/v1/namespaces/badfield").status_code == 404


def test_config_file_namespaces_are_read_only(page: Any, served: Served) -> None:
    sign_in(page, "admin")
    page.goto("/admin/namespaces/orders")
    assert "declared in the gateway's config file" in page.locator("main").inner_text()
    assert page.get_by_role("link", name="Change settings").count() == 0
    assert page.get_by_role("button", name="Delete namespace").count() == 0
    page.goto("/admin/namespaces/orders/edit")
    assert "declared in the config file" in page.get_by_role("alert").inner_text()


def test_reader_gets_no_forms_and_the_api_refuses_a_forged_plan(page: Any, served: Served) -> None:
    with api(served, "admin") as c:
        assert c.put("/v1/namespaces/readable", json={"needs": {}}).status_code == 201
    try:
        sign_in(page, "reader")
        page.goto("/admin/namespaces")
        assert page.get_by_role("link", name="New namespace").count() == 0
        page.goto("/admin/namespaces/readable")
        assert page.get_by_role("link", name="Change settings").count() == 0
        assert page.get_by_role("button", name="Delete namespace").count() == 0
        page.goto("/admin/namespaces/new")
        assert "may not create namespaces" in page.get_by_role("alert").inner_text()
        # A plan and an apply posted by hand (with the session's CSRF token) reach the API, which refuses.
        csrf = page.locator("input[name=csrf]").first.get_attribute("value")
        for path, fields in (
            ("/admin/namespaces/plan", {"csrf": csrf, "name": "sneaky"}),
            ("/admin/namespaces/apply", {"csrf": csrf, "name": "sneaky", "body": "{}"}),
            ("/admin/namespaces/readable/delete", {"csrf": csrf, "purge": "true"}),
        ):
            answer = page.request.post(path, form=fields)
            assert answer.status == 403, (path, answer.status)
            assert "namespace_admin_roles" in answer.text()
        with api(served, "admin") as c:
            assert c.get("/v1/namespaces/sneaky").status_code == 404
            assert c.get("/v1/namespaces/readable").status_code == 200
    finally:
        with api(served, "admin") as c:
            c.delete("/v1/namespaces/readable", params={"purge": "true"})


def test_detail_shows_cache_hit_ratio_needs_signals_and_feed(page: Any, served: Served) -> None:
    with api(served, "admin") as c:
        assert c.put("/v1/kv/profiles/ann", content=b'{"plan": "gold"}').status_code in (200, 201)
        for _ in range(3):
            assert c.get("/v1/kv/profiles/ann").status_code == 200
        detail = c.get("/v1/namespaces/profiles").json()
        cache = detail["cache"]
    sign_in(page, "admin")
    page.goto("/admin/namespaces/profiles")
    section = page.locator("section", has=page.get_by_role("heading", name="Cache"))
    rows = section.locator("tbody tr").all_inner_texts()
    near = next(r for r in rows if r.startswith("near"))
    expected = f"{cache['near']['hit_ratio'] * 100:.1f}%"
    assert cache["near"]["hits"] >= 2 and expected in near, (near, cache)
    bound = "evicted by the change feed" if cache["near"]["bound"] == "feed" else "bounded by its ttl"
    assert bound in near
    assert any(r.startswith("shared") and "store redis_main" in r for r in rows), rows
    needs = page.locator("section", has=page.get_by_role("heading", name="Declared needs")).inner_text()
    assert "latency_p99_ms\n20" in needs.replace("\t", "\n") and "strong" in needs
    signals = page.locator("section", has=page.get_by_role("heading", name="Signals")).inner_text()
    assert "Hedge a read after" in signals and "20 ms" in signals  # needs.latency_p99_ms
    # The feed's status is the API's answer to a watch, whatever it is.
    feed = page.locator("section", has=page.get_by_role("heading", name="Change feed")).inner_text()
    with api(served, "admin") as c, c.stream("GET", "/v1/kv/profiles/_watch") as watched:
        if watched.status_code == 200:
            assert "Kept" in feed
        else:
            watched.read()
            assert "Not kept" in feed and watched.json()["code"] in feed
    assert "lag is not shown" in feed

    page.goto("/admin/namespaces/orders")
    assert "Not cached" in page.locator("main").inner_text()
    feed = page.locator("section", has=page.get_by_role("heading", name="Change feed")).inner_text()
    assert "Not kept" in feed
    assert "None declared" in page.locator("main").inner_text()


def test_reader_sees_signals_but_no_store_cache_or_needs(page: Any, served: Served) -> None:
    sign_in(page, "reader")
    page.goto("/admin/namespaces/profiles")
    text = page.locator("main").inner_text()
    assert "Deadline" in text
    for hidden in ("Declared needs", "Cache", "Change feed", "redis_main"):
        assert hidden not in text, hidden


def test_feed_kept_shows_its_cursor_and_moves(page: Any, served: Served) -> None:
    sign_in(page, "acme-admin")
    page.goto("/admin/namespaces/feeds")
    feed = page.locator("section", has=page.get_by_role("heading", name="Change feed"))
    assert "Kept" in feed.inner_text()
    before = int(feed.locator("code").nth(1).inner_text())
    with api(served, "acme-admin") as c:
        for i in range(3):
            assert c.put(f"/v1/kv/feeds/k{i}", content=b"v").status_code in (200, 201)
    page.reload()
    after = int(feed.locator("code").nth(1).inner_text())
    assert after >= before + 3


def test_overview_shows_this_process_streaming_numbers_live(page: Any, served: Served) -> None:
    sign_in(page, "admin")
    counts = page.locator("dl.counts")
    assert "this process" in page.locator("section", has=counts).inner_text()
    assert counts.locator("[data-count=jobs_running]").inner_text() == "0"
    ws_url = served.url.replace("http://", "ws://") + "/v1/stream"
    with connect(ws_url, additional_headers={"X-API-Key": KEYS["admin"][0]}) as ws:
        # Events sent over the WebSocket count as delivered, with their delivery latency.
        ws.send(json.dumps({"action": "delay", "payload": {"seconds": 30, "step": 0.1}}))
        rid = None
        events = 0
        while events < 5:
            message = json.loads(ws.recv(timeout=15))
            rid = rid or message.get("request_id")
            events += message.get("type") not in ("ack", "error")
        # A job running here shows up live (over the overview's SSE), without reloading.
        page.wait_for_function(
            "() => document.querySelector('[data-count=jobs_running]').textContent === '1'", timeout=15_000
        )
        with api(served, "admin") as c:
            assert c.post(f"/v1/requests/{rid}/cancel").status_code in (200, 202)
    page.wait_for_function(
        "() => document.querySelector('[data-count=jobs_running]').textContent === '0'", timeout=15_000
    )
    page.wait_for_function(
        "() => Number(document.querySelector('[data-count=delivered]').textContent) >= 3", timeout=15_000
    )
    p50 = counts.locator("[data-count=delivery_p50]").inner_text()
    p99 = counts.locator("[data-count=delivery_p99]").inner_text()
    assert re.fullmatch(r"≤ [\d.]+ ms", p50) and re.fullmatch(r"(≤|over) [\d.]+ ms", p99), (p50, p99)
    assert counts.locator("[data-count=queue_depth]").inner_text().isdigit()
    assert "Workers here" in counts.inner_text()


def test_namespace_forms_fit_a_phone(browser: Any, served: Served) -> None:
    context = browser.new_context(base_url=served.url, viewport={"width": 390, "height": 844})
    page = context.new_page()
    try:
        sign_in(page, "admin")
        page.goto("/admin/namespaces/new")
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        page.get_by_label("Name", exact=True).fill("phone")
        page.get_by_role("button", name="Plan").click()
        page.get_by_role("heading", name="The planner's decision").wait_for()
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        page.goto("/admin/namespaces/profiles")
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
    finally:
        context.close()
