"""The Audit page reads stored lines it cannot make sense of as missing, never as the user's error."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from console.test_console_sessions import cfg, client, sign_in


async def test_a_stored_line_with_a_bad_time_is_skipped(tmp_path: Path) -> None:
    async with client(cfg(tmp_path)) as c:
        await c.get("/v1/kv/plain/before-it", headers={"X-API-Key": "k-admin"})
        await asyncio.sleep(0.2)
        with (tmp_path / "audit.jsonl").open("a") as f:
            for bad in ("not-a-time", 12, ["2026-01-01"]):
                line = {"time": bad, "namespace": "plain", "operation": "get", "key": f"bad-{bad!s:.3}"}
                f.write(json.dumps(line) + "\n")
        await c.get("/v1/kv/plain/after-it", headers={"X-API-Key": "k-admin"})
        await asyncio.sleep(0.2)
        await sign_in(c, "k-admin")
        for params in ({}, {"since": "2000-01-01T00:00"}, {"namespace": "plain"}):
            page = await c.get("/admin/audit", params=params)
            assert page.status_code == 200, page.text
            assert "before-it" in page.text and "after-it" in page.text
            assert "bad-" not in page.text
        # The user's own bad filter is still the user's error, named.
        wrong = await c.get("/admin/audit", params={"since": "yesterday"})
        assert wrong.status_code == 400
        assert "since: a date and time" in wrong.text
