"""A real in-memory store for users' unit tests: the whole API, no server."""

from __future__ import annotations

from prism.kv.store import Store, connect

__all__ = ["fake_store"]


async def fake_store() -> Store:
    """An open ``memory://`` store, private to the caller; close it when done."""
    return await connect("memory://")
