"""With the namespace sink, the Audit page reads the newest ``audit_scan_limit`` events, not the history."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from console.test_console_sessions import cfg, client, sign_in
from prism.kv.namespace import Namespace

ADMIN = {"X-API-Key": "k-admin"}


@pytest.mark.parametrize("scan_limit", [10, 700])
async def test_the_audit_page_reads_from_the_newest_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scan_limit: int
) -> None:
    events = 1500
    config = cfg(
        tmp_path,
        audit={"sink": "namespace", "store": "main", "flush_interval": 0.02},
        admin={"enabled": True, "audit_scan_limit": scan_limit, "page_size": 1000},
    )
    async with client(config) as c:
        for i in range(events):
            await c.get(f"/v1/kv/plain/key-{i:05d}-end", headers=ADMIN)
            if i % 200 == 0:
                await asyncio.sleep(0.03)  # several flushes: the events span many times
        await asyncio.sleep(0.3)
        await sign_in(c, "k-admin")
        await asyncio.sleep(0.3)  # the sign-in's audit event is written too
        read: list[int] = []
        real = Namespace.scan

        async def counted(self: Namespace, *args: Any, **kwargs: Any) -> Any:
            found = await real(self, *args, **kwargs)
            if self.name == "prism-audit":
                read.append(len(found.keys))
            return found

        monkeypatch.setattr(Namespace, "scan", counted)
        page = await c.get("/admin/audit", params={"operation": "get"})
        assert page.status_code == 200
    shown = [i for i in range(events) if f"key-{i:05d}-end" in page.text]
    # The sign-in's own audit event is among the newest read back, so one get fewer is shown.
    assert shown == list(range(events - scan_limit + 1, events))
    # Keys read: the newest ``scan_limit``, plus at most one oversized prefix per character of a
    # key (about 40), each read up to ``scan_limit``, whatever the length of the history.
    assert sum(read) <= scan_limit + 40 * scan_limit, (sum(read), len(read))
    if scan_limit == 10:
        assert sum(read) < events / 4  # reading the whole history read all 1500
