"""Keys whose names are also route paths (`_watch`, `_bulk`...) are shown and deleted in the console."""

from __future__ import annotations

import base64
import time
from pathlib import Path

from console.test_console_sessions import cfg, client, csrf_of, sign_in

ADMIN = {"X-API-Key": "k-admin"}
KEYS = ["_watch", "_bulk", "_scan", "odd?key#1 %2F/x"]


async def test_route_named_keys_are_read_and_deleted(tmp_path: Path) -> None:
    config = cfg(
        tmp_path, stores={"main": "memory://?feed=true"}, server={"access_log": False, "request_timeout": 3}
    )
    async with client(config) as c:
        items = [
            {
                "key": k,
                "value": base64.b64encode(f"value of {k}".encode()).decode(),
                "content_type": "text/plain",
            }
            for k in KEYS
        ]
        put = await c.post("/v1/kv/plain/_bulk/put", json={"items": items}, headers=ADMIN)
        assert put.status_code == 200 and all(r["ok"] for r in put.json()["results"])
        await sign_in(c, "k-admin")
        for key in KEYS:
            started = time.monotonic()
            shown = await c.get("/admin/namespaces/plain/item", params={"key": key})
            assert shown.status_code == 200, (key, shown.status_code)
            assert time.monotonic() - started < 2  # not a watch stream held open until the timeout
            assert f"value of {key}" in shown.text
            assert "text/plain" in shown.text
            gone = await c.post(
                "/admin/namespaces/plain/item/delete", data={"key": key, "csrf": csrf_of(shown)}
            )
            assert gone.status_code == 303, (key, gone.status_code)
        left = await c.post("/v1/kv/plain/_bulk/get", json={"keys": KEYS}, headers=ADMIN)
        assert [i["found"] for i in left.json()["items"]] == [False] * len(KEYS)
        missing = await c.get("/admin/namespaces/plain/item", params={"key": "_watch"})
        assert missing.status_code == 404
        assert "is not in plain" in missing.text
