"""The console in headless Chromium: sign in, browse keys, migrate, cancel, dead letters, audit, sign out."""

from __future__ import annotations

import re
import time
from typing import Any

import httpx
import pytest

from console.console_helpers import KEYS, Served

pytestmark = pytest.mark.timeout(120)


def api(served: Served, who: str) -> httpx.Client:
    return httpx.Client(base_url=served.url, headers={"X-API-Key": KEYS[who][0]}, timeout=10)


def sign_in(page: Any, who: str, *, kind: str = "api_key", credential: str | None = None) -> None:
    page.goto("/admin/")
    assert page.url.endswith("/admin/login?next=/admin/")
    page.get_by_label("JSON Web Token" if kind == "jwt" else "API key", exact=True).check()
    page.get_by_label("API key or token").fill(credential if credential is not None else KEYS[who][0])
    page.get_by_role("button", name="Sign in").click()


def accept_dialogs(page: Any) -> list[str]:
    asked: list[str] = []

    def answer(dialog: Any) -> None:
        asked.append(dialog.message)
        dialog.accept()

    page.on("dialog", answer)
    return asked


def test_sign_in_browse_keys_and_sign_out(page: Any, served: Served) -> None:
    with api(served, "admin") as c:
        for i in range(7):
            assert c.put(
                f"/v1/kv/orders/browse/k{i}",
                content=b'{"n": %d, "note": "hi"}' % i,
                headers={"Content-Type": "application/json"},
            ).status_code in (200, 201)
        assert c.put("/v1/kv/orders/other", content=b"\x00\x01binary").status_code in (200, 201)
    sign_in(page, "admin")
    assert page.get_by_role("heading", name="Overview").is_visible()
    cookie = next(c for c in page.context.cookies() if c["name"] == "prism_console")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/admin"
    assert cookie["expires"] > time.time()

    page.get_by_role("link", name="Namespaces").click()
    page.get_by_role("link", name="orders").click()
    page.get_by_role("link", name="Browse keys").click()
    page.get_by_label("Key prefix").fill("browse/")
    page.get_by_role("button", name="Scan").click()
    keys = page.locator("main table tbody tr").all_inner_texts()
    assert keys == [f"browse/k{i}" for i in range(7)]

    page.get_by_role("link", name="browse/k3").click()
    assert page.locator("pre.value").inner_text() == '{\n  "n": 3,\n  "note": "hi"\n}'
    assert "application/json" in page.locator("main dl").inner_text()
    page.get_by_role("link", name="hex").click()
    assert page.locator("pre.value").inner_text().startswith("00000000  7b 22 6e 22")
    page.get_by_role("link", name="text").click()
    assert page.locator("pre.value").inner_text() == '{"n": 3, "note": "hi"}'

    asked = accept_dialogs(page)
    page.get_by_role("button", name="Delete").click()
    page.wait_for_url(re.compile(r".*/keys\?done=.*"))
    assert asked == ["Delete key 'browse/k3' from orders?"]
    with api(served, "admin") as c:
        assert c.get("/v1/kv/orders/browse/k3").status_code == 404
        assert c.get("/v1/kv/orders/browse/k2").status_code == 200

    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(re.compile(r".*/admin/login$"))
    assert not [c for c in page.context.cookies() if c["name"] == "prism_console"]
    page.goto("/admin/namespaces")
    assert "/admin/login" in page.url


def test_paging_through_keys(page: Any, served: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    with api(served, "admin") as c:
        for i in range(60):
            assert c.put(f"/v1/kv/orders/page/{i:03d}", content=b"x").status_code in (200, 201)
    sign_in(page, "admin")
    page.goto("/admin/namespaces/orders/keys?prefix=page/")
    first = page.locator("main table tbody tr").all_inner_texts()
    page.get_by_role("link", name="Next page →").click()
    second = page.locator("main table tbody tr").all_inner_texts()
    assert first + second == [f"page/{i:03d}" for i in range(60)]
    assert page.get_by_role("link", name="Next page →").count() == 0


def test_a_declined_confirmation_deletes_nothing(page: Any, served: Served) -> None:
    with api(served, "admin") as c:
        assert c.put("/v1/kv/orders/keep-me", content=b"x").status_code in (200, 201)
    sign_in(page, "admin")
    page.goto("/admin/namespaces/orders/item?key=keep-me")
    page.on("dialog", lambda dialog: dialog.dismiss())
    page.get_by_role("button", name="Delete").click()
    page.wait_for_timeout(300)
    assert "/item?key=keep-me" in page.url
    with api(served, "admin") as c:
        assert c.get("/v1/kv/orders/keep-me").status_code == 200


def test_a_wrong_credential_is_refused_and_named(page: Any, served: Served) -> None:
    sign_in(page, "admin", credential="not-a-key")
    assert "/admin/login" in page.url
    assert "sign-in refused" in page.get_by_role("alert").inner_text()
    assert "not-a-key" not in page.content()


def test_pii_is_masked_without_pii_read(page: Any, served: Served) -> None:
    with api(served, "admin") as c:
        body = b'{"name": "Ada", "email": "ada@example.com"}'
        assert c.put(
            "/v1/kv/users/u1", content=body, headers={"Content-Type": "application/json"}
        ).status_code in (
            200,
            201,
        )
    sign_in(page, "reader")
    page.goto("/admin/namespaces/users/item?key=u1")
    shown = page.locator("pre.value").inner_text()
    assert "Ada" in shown and "ada@example.com" not in shown


def test_a_reader_gets_read_only_pages(page: Any, served: Served) -> None:
    with api(served, "admin") as c:
        assert c.put("/v1/kv/orders/ro", content=b"x").status_code in (200, 201)
    sign_in(page, "reader")
    page.get_by_role("link", name="Namespaces").click()
    names = page.locator("main table tbody tr td:first-child").all_inner_texts()
    assert "orders" in names and "private" not in names and "carts" not in names
    page.get_by_role("link", name="orders").click()
    assert page.get_by_role("heading", name="Migration").count() == 0
    assert page.get_by_role("button", name="Start migration").count() == 0
    assert "Store" not in page.locator("main dl").first.inner_text().split("\n")
    page.goto("/admin/namespaces/private")
    assert page.get_by_role("alert").inner_text().startswith("FORBIDDEN")
    page.goto("/admin/audit")
    assert "administers no namespace" in page.get_by_role("alert").inner_text()
    # The delete button is shown (the API decides), and the API refuses it: nothing is deleted.
    page.goto("/admin/namespaces/orders/item?key=ro")
    accept_dialogs(page)
    page.get_by_role("button", name="Delete").click()
    assert page.get_by_role("alert").inner_text().startswith("FORBIDDEN")
    with api(served, "admin") as c:
        assert c.get("/v1/kv/orders/ro").status_code == 200


def test_a_reader_cannot_drive_a_migration_even_by_posting(page: Any, served: Served) -> None:
    sign_in(page, "reader")
    page.goto("/admin/namespaces/orders")
    csrf = page.locator('meta[name="csrf-token"]').get_attribute("content")
    answer = page.request.post("/admin/namespaces/orders/migration", form={"csrf": csrf, "to": "redis_main"})
    assert answer.status == 403
    with api(served, "admin") as c:
        assert c.get("/v1/namespaces/orders/migration").status_code == 404


def test_posts_without_the_csrf_token_are_refused(page: Any, served: Served) -> None:
    with api(served, "admin") as c:
        assert c.put("/v1/kv/orders/csrf", content=b"x").status_code in (200, 201)
    sign_in(page, "admin")
    for form in ({"key": "csrf"}, {"key": "csrf", "csrf": "forged"}):
        answer = page.request.post("/admin/namespaces/orders/item/delete", form=form)
        assert answer.status == 403
        assert "CSRF" in answer.text()
    answer = page.request.post("/admin/logout", form={})
    assert answer.status == 403
    with api(served, "admin") as c:
        assert c.get("/v1/kv/orders/csrf").status_code == 200
    # And the sign-in form itself needs its token.
    fresh = httpx.post(f"{served.url}/admin/login", data={"kind": "api_key", "credential": KEYS["admin"][0]})
    assert fresh.status_code == 403 and "prism_console=" not in fresh.headers.get("set-cookie", "")


def test_run_a_migration_step(page: Any, served: Served) -> None:
    with api(served, "admin") as c:
        for i in range(20):
            assert c.put(f"/v1/kv/moving/m{i}", content=b"v").status_code in (200, 201)
    sign_in(page, "admin")
    page.goto("/admin/namespaces/moving")
    assert "No migration has been started." in page.inner_text("main")
    asked = accept_dialogs(page)
    page.get_by_label("Target store").select_option("redis_main")
    page.get_by_role("button", name="Start migration").click()
    page.wait_for_url(re.compile(r".*done=.*"))
    assert "migration to redis_main started" in page.get_by_role("status").inner_text()
    assert "shadowing" in page.inner_text("main")
    page.get_by_role("button", name="Backfill").click()
    deadline = time.monotonic() + 30
    while "backfilled" not in page.inner_text("main") and time.monotonic() < deadline:
        page.wait_for_timeout(300)
        page.goto("/admin/namespaces/moving")
    assert "backfilled" in page.inner_text("main")
    assert re.search(r"2\d copied", page.inner_text("main"))
    assert asked[0].startswith("Start migrating moving?") and asked[1].startswith("Copy every item of moving")
    page.get_by_role("button", name="Abort").click()
    page.wait_for_url(re.compile(r".*done=abort.*"))
    assert "aborted" in page.inner_text("main")
    with api(served, "admin") as c:
        assert c.get("/v1/namespaces/moving/migration").json()["phase"] == "aborted"


def test_cancel_a_request_and_watch_its_events(page: Any, served: Served) -> None:
    with api(served, "admin") as c:
        r = c.post("/v1/requests", json={"action": "delay", "payload": {"seconds": 30, "step": 0.2}})
        assert r.status_code == 202
        rid = r.json()["request_id"]
        deadline = time.monotonic() + 20
        while c.get(f"/v1/requests/{rid}").json()["status"] != "PROCESSING" and time.monotonic() < deadline:
            time.sleep(0.05)
    sign_in(page, "admin")
    page.get_by_role("link", name="Requests").click()
    page.get_by_label("Status").select_option("PROCESSING")
    page.get_by_label("Action").fill("delay")
    page.get_by_role("button", name="Filter").click()
    page.get_by_role("link", name=rid).click()
    page.wait_for_function("() => document.querySelectorAll('ol.events li').length >= 2")
    assert "progress" in page.locator("ol.events").inner_text()
    asked = accept_dialogs(page)
    page.get_by_role("button", name="Cancel request").click()
    page.wait_for_url(re.compile(r".*done=cancelled.*"))
    assert asked == [f"Cancel request {rid}?"]
    with api(served, "admin") as c:
        assert c.get(f"/v1/requests/{rid}").json()["status"] == "CANCELLED"


def test_retry_and_discard_dead_letters(page: Any, served: Served) -> None:
    with api(served, "admin") as c:
        ids = [c.post("/v1/requests", json={"action": "always_fails"}).json()["request_id"] for _ in range(2)]
        deadline = time.monotonic() + 20
        for rid in ids:
            while c.get(f"/v1/requests/{rid}").json()["status"] != "FAILED" and time.monotonic() < deadline:
                time.sleep(0.1)
    retry, discard = ids
    sign_in(page, "admin")
    page.goto("/admin/dead-letters")
    table = page.locator("main table").inner_text()
    assert retry in table and discard in table and "this handler always fails" in table
    asked = accept_dialogs(page)
    page.locator("tr", has_text=retry).get_by_role("button", name="Retry").click()
    page.wait_for_url(re.compile(r".*done=retried.*"))
    again = page.get_by_role("status").inner_text().removeprefix("retried as ")
    assert asked == [f"Run always_fails request {retry} again as a new request?"]
    assert retry not in page.locator("main").inner_text().replace(f"retried as {again}", "")
    page.locator("tr", has_text=discard).get_by_role("button", name="Discard").click()
    page.wait_for_url(re.compile(r".*done=discarded.*"))
    assert asked[1] == f"Discard dead letter {discard}? It will not run again."
    with api(served, "admin") as c:
        listed = [
            r["request_id"] for r in c.get("/v1/dead-letters", params={"limit": 100}).json()["requests"]
        ]
        assert retry not in listed and discard not in listed
        assert c.get(f"/v1/requests/{again}").json()["action"] == "always_fails"


def test_audit_search(page: Any, served: Served) -> None:
    with api(served, "admin") as c:
        assert c.put("/v1/kv/orders/audited-key", content=b"x").status_code in (200, 201)
    with api(served, "reader") as c:
        assert c.get("/v1/kv/orders/audited-key").status_code == 200
    time.sleep(0.5)  # the audit trail is written off the request path
    sign_in(page, "admin")
    page.get_by_role("link", name="Audit").click()
    page.get_by_label("Principal").fill("reader")
    page.get_by_label("Namespace").fill("orders")
    page.get_by_label("Action").fill("get")
    page.get_by_role("button", name="Search").click()
    rows = page.locator("main table tbody tr").all_inner_texts()
    assert rows and all("reader" in r and "get" in r for r in rows)
    assert any("audited-key" in r for r in rows)
    page.get_by_label("From").fill("2999-01-01T00:00")
    page.get_by_role("button", name="Search").click()
    assert page.get_by_text("No event matches.").is_visible()


def test_overview_charts_update_live(page: Any, served: Served) -> None:
    sign_in(page, "admin")
    charts = page.locator(".charts")
    first = charts.get_attribute("data-updated")
    with api(served, "admin") as c:
        for _ in range(20):
            c.get("/v1/kv/orders/nothing-here")
    page.wait_for_function(
        "(before) => document.querySelector('.charts').getAttribute('data-updated') !== before", arg=first
    )
    page.wait_for_function(
        "() => /requests\\/s \\d/.test(document.querySelector('figure[data-ns=orders]').innerText)"
    )
    assert page.locator("figure[data-ns=orders] svg").count() == 4
    assert page.locator("figure[data-ns=private]").count() == 0
    assert "UP" in page.locator("main table").first.inner_text()


def test_phone_width_has_no_horizontal_scroll(browser: Any, served: Served) -> None:
    context = browser.new_context(base_url=served.url, viewport={"width": 390, "height": 844})
    page = context.new_page()
    try:
        sign_in(page, "admin")
        for path in ("/admin/", "/admin/namespaces/orders", "/admin/requests", "/admin/audit"):
            page.goto(path)
            width = page.evaluate("document.documentElement.scrollWidth")
            assert width <= 390, path
        # Keyboard: the skip link, then the navigation, reachable with Tab.
        page.goto("/admin/namespaces")
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    finally:
        context.close()


def test_the_request_list_updates_itself(page: Any, served: Served) -> None:
    sign_in(page, "admin")
    page.goto("/admin/requests")
    with api(served, "admin") as c:
        rid = c.post("/v1/requests", json={"action": "echo", "payload": {"hi": 1}}).json()["request_id"]
    page.get_by_role("link", name=rid).wait_for(timeout=10_000)
    assert page.get_by_role("link", name=rid).count() == 1  # appeared without a reload


def test_an_admin_filters_the_requests_of_another_user(page: Any, served: Served) -> None:
    with api(served, "reader") as c:
        rid = c.post("/v1/requests", json={"action": "echo", "payload": {"by": "reader"}}).json()[
            "request_id"
        ]
    sign_in(page, "admin")
    page.goto("/admin/requests")
    page.get_by_label("User (admins: another user of your tenant, e.g. apikey:NAME)").fill("apikey:reader")
    page.get_by_role("button", name="Filter").click()
    page.get_by_role("link", name=rid).wait_for(timeout=10_000)
    assert "The requests of apikey:reader" in page.content()
    # A reader may not look at someone else's requests: the API's refusal is shown.
    page.get_by_role("button", name="Sign out").click()
    sign_in(page, "reader")
    response = page.goto("/admin/requests?user=apikey%3Aadmin")
    assert response is not None and response.status == 403
    assert rid not in page.content()
