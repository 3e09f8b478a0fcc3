"""Connection records on the KeyValue layer: who is connected where, listable by user and tenant.

A record ``c/<id>`` holds the connection's user, tenant, node, times and metadata;
index entries ``u/<tenant>/<user>/<id>`` and ``t/<tenant>/<id>`` list it. All three
carry a ttl of ``connection_stale_after`` that each touch renews, so the records of a
node that died expire on their own; :meth:`ConnectionRegistry.sweep` removes what is
left (index entries whose record is gone, records past their last_seen).
"""

from __future__ import annotations

import os
import time
from typing import Any
from urllib.parse import quote

import msgspec

from prism.kv.store import Store
from prism.model import Delete, Put
from prism.streaming.config import StreamingConfig

__all__ = ["ConnectionRecord", "ConnectionRegistry", "new_connection_id"]


class ConnectionRecord(msgspec.Struct, kw_only=True):
    id: str
    #: The connected caller's ``owner`` (credential kind, issuer and subject).
    user: str
    tenant: str
    node: str
    connected_at: float
    last_seen: float
    metadata: dict[str, Any] = msgspec.field(default_factory=dict)


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(ConnectionRecord).decode


def new_connection_id() -> str:
    return "c" + os.urandom(12).hex()


def _q(text: str) -> str:
    return quote(text, safe="")


class ConnectionRegistry:
    """Stores, lists and sweeps connection records."""

    def __init__(self, store: Store, config: StreamingConfig) -> None:
        self.config = config
        self.ns = store.namespace(config.namespace("connections"), default_ttl=config.connection_stale_after)

    @staticmethod
    def _keys(record: ConnectionRecord) -> tuple[str, str, str]:
        return (
            f"c/{record.id}",
            f"u/{_q(record.tenant)}/{_q(record.user)}/{record.id}",
            f"t/{_q(record.tenant)}/{record.id}",
        )

    async def save(self, record: ConnectionRecord) -> None:
        """Write the record and its index entries (renewing their ttl)."""
        key, by_user, by_tenant = self._keys(record)
        await self.ns.put_many([Put(key, _encode(record)), Put(by_user, b""), Put(by_tenant, b"")])

    async def touch(self, record: ConnectionRecord, now: float | None = None) -> bool:
        """Update last_seen when ``connection_touch_interval`` has passed; True when it wrote."""
        now = time.time() if now is None else now
        if now - record.last_seen < self.config.connection_touch_interval:
            return False
        record.last_seen = now
        await self.save(record)
        return True

    async def remove(self, record: ConnectionRecord) -> None:
        await self.ns.delete_many(list(self._keys(record)))

    async def get(self, connection_id: str) -> ConnectionRecord | None:
        item = await self.ns.get(f"c/{connection_id}")
        return None if item is None else _decode(item.value)

    async def _listed(self, prefix: str, limit: int) -> list[ConnectionRecord]:
        out: list[ConnectionRecord] = []
        token: str | None = None
        while len(out) < limit:
            page = await self.ns.scan(prefix, limit=min(1000, limit - len(out)), page_token=token)
            ids = [k.rsplit("/", 1)[1] for k in page.keys]
            if ids:
                items = await self.ns.get_many([f"c/{i}" for i in ids])
                out.extend(_decode(i.value) for i in items if i is not None)
            token = page.next_page_token
            if token is None:
                break
        return out

    async def list_by_user(self, tenant: str, user: str, *, limit: int = 1000) -> list[ConnectionRecord]:
        """Live connections of one user, on every node."""
        return await self._listed(f"u/{_q(tenant)}/{_q(user)}/", limit)

    async def list_by_tenant(self, tenant: str, *, limit: int = 1000) -> list[ConnectionRecord]:
        """Live connections of one tenant, on every node."""
        return await self._listed(f"t/{_q(tenant)}/", limit)

    async def sweep(self, now: float | None = None) -> int:
        """Delete stale records and index entries whose record is gone; how many keys were deleted."""
        now = time.time() if now is None else now
        deleted = 0
        for prefix in ("c/", "u/", "t/"):
            token: str | None = None
            while True:
                page = await self.ns.scan(prefix, limit=500, page_token=token)
                stale: list[str | Delete] = []
                if prefix == "c/":
                    items = await self.ns.get_many(page.keys) if page.keys else []
                    for key, item in zip(page.keys, items, strict=True):
                        if (
                            item is not None
                            and now - _decode(item.value).last_seen > self.config.connection_stale_after
                        ):
                            stale.append(key)
                elif page.keys:
                    ids = [k.rsplit("/", 1)[1] for k in page.keys]
                    records = await self.ns.get_many([f"c/{i}" for i in ids])
                    stale.extend(k for k, r in zip(page.keys, records, strict=True) if r is None)
                if stale:
                    results = await self.ns.delete_many(stale)
                    deleted += sum(1 for r in results if r.existed)
                token = page.next_page_token
                if token is None:
                    break
        return deleted
