"""Write a PNG of each admin console page into docs/images/ (``make screenshots``).

It serves a gateway with the console on (the config of the console's browser tests:
a throwaway Redis as the control store, SQLite data), fills it with a few keys, a
running and a failed streaming request and a migration in progress, and has headless
Chromium visit every page at 1280x800 (and the overview at phone width).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from console.console_helpers import CHROMIUM, CHROMIUM_ARGS, KEYS, config, serving  # noqa: E402
from prism.testing.servers.redis import redis_server  # noqa: E402

OUT = ROOT / "docs" / "images"


def seed(url: str) -> dict[str, str]:
    """Data for the pages to show; the ids of a running and a dead request."""
    c = httpx.Client(base_url=url, headers={"X-API-Key": KEYS["admin"][0]}, timeout=10)
    json_type = {"Content-Type": "application/json"}
    for i in range(12):
        body = b'{"id": %d, "status": "shipped", "items": [{"sku": "A-%d", "qty": 2}]}' % (i, i)
        c.put(f"/v1/kv/orders/2026/12/order-{i:04d}", content=body, headers=json_type)
    c.put("/v1/kv/users/ada", content=b'{"name": "Ada", "email": "ada@example.com"}', headers=json_type)
    for i in range(40):
        c.put(f"/v1/kv/moving/item-{i}", content=b"value")
    c.post("/v1/namespaces/moving/migration", json={"to": "redis_main"})
    c.post("/v1/namespaces/moving/migration/backfill")
    c.post(
        "/v1/requests",
        json={
            "action": "generate_report",
            "payload": {"start_date": "2026-11-01", "end_date": "2026-11-30", "step_seconds": 0.1},
        },
    )
    running = c.post("/v1/requests", json={"action": "delay", "payload": {"seconds": 60, "step": 0.5}})
    dead = c.post("/v1/requests", json={"action": "always_fails"})
    c.put("/v1/namespaces/sessions", json={"needs": {"durability": "disk", "ttl_seconds": 3600}})
    c.put("/v1/kv/profiles/ada", content=b'{"plan": "gold"}', headers=json_type)
    for _ in range(40):
        c.get("/v1/kv/profiles/ada")
        c.get("/v1/kv/orders/2026/12/order-0001")
        c.get("/v1/kv/orders/missing")
    time.sleep(2)
    return {"running": running.json()["request_id"], "dead": dead.json()["request_id"]}


def plans(page: Any) -> None:
    """The planner's decision for a new namespace, and a refusal with every store's failed needs."""
    for file, fill in (
        ("console-namespace-plan.png", {"Name": "events", "Items expire after (s)": "86400"}),
        ("console-namespace-refused.png", {"Name": "firehose", "Writes per second": "100000"}),
    ):
        page.goto("/admin/namespaces/new")
        for label, value in fill.items():
            page.get_by_label(label, exact=True).fill(value)
        page.get_by_role("button", name="Plan").click()
        page.wait_for_timeout(200)
        page.screenshot(path=OUT / file, full_page=True)
        print(OUT / file)


def main() -> int:
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import sync_playwright

    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, redis_server() as redis:
        cwd = Path(tmp)
        cfg = config(cwd, redis.url)
        cfg["namespaces"].append(
            {
                "name": "profiles",
                "store": "local",
                "access": {"read": ["reader"], "write": ["writer"], "admin": ["admin"]},
                "cache": {"store": "redis_main", "ttl": 60},
                "near_cache": {"max_items": 1000, "ttl": 5},
                "needs": {"latency_p99_ms": 20, "consistency": "strong"},
            }
        )
        with serving(cwd, cfg) as served:
            ids = seed(served.url)
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                for name, viewport in (
                    ("desktop", {"width": 1280, "height": 800}),
                    ("phone", {"width": 390, "height": 844}),
                ):
                    context = browser.new_context(base_url=served.url, viewport=viewport)
                    page = context.new_page()
                    page.goto("/admin/login")
                    if name == "desktop":
                        page.screenshot(path=OUT / "console-sign-in.png")
                    page.get_by_label("API key or token").fill(KEYS["admin"][0])
                    page.get_by_role("button", name="Sign in").click()
                    page.wait_for_timeout(2500)  # a few live samples on the charts
                    if name == "phone":
                        page.screenshot(path=OUT / "console-overview-phone.png", full_page=True)
                        context.close()
                        continue
                    page.screenshot(path=OUT / "console-overview.png", full_page=True)
                    shots = {
                        "console-namespaces.png": "/admin/namespaces",
                        "console-namespace.png": "/admin/namespaces/moving",
                        "console-namespace-cached.png": "/admin/namespaces/profiles",
                        "console-namespace-runtime.png": "/admin/namespaces/sessions",
                        "console-namespace-new.png": "/admin/namespaces/new",
                        "console-keys.png": "/admin/namespaces/orders/keys?prefix=2026/",
                        "console-item.png": "/admin/namespaces/orders/item?key=2026/12/order-0003",
                        "console-requests.png": "/admin/requests",
                        "console-request.png": f"/admin/requests/{ids['running']}",
                        "console-dead-letters.png": "/admin/dead-letters",
                        "console-audit.png": "/admin/audit?namespace=orders",
                    }
                    for file, path in shots.items():
                        for attempt in range(3):
                            # A page that refreshes itself may reload mid-shot: take it again.
                            try:
                                page.goto("about:blank")  # no timer of the last page left running
                                page.goto(path)
                                page.wait_for_timeout(1500 if "request" in file else 200)
                                page.screenshot(path=OUT / file, full_page=True)
                                break
                            except PlaywrightError:
                                if attempt == 2:
                                    raise
                        print(OUT / file)
                    plans(page)
                    context.close()
                browser.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
