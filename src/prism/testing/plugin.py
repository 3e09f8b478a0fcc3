"""pytest fixtures for users of Prism: a fresh in-memory store and namespace per test.

The fixtures are coroutines. With pytest-asyncio installed they are declared with
``pytest_asyncio.fixture``, so they work in both of its modes: ``auto`` and the
default ``strict`` (where the test itself still needs ``@pytest.mark.asyncio``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from prism.kv.namespace import Namespace
from prism.kv.store import Store, connect

try:
    import pytest_asyncio
except ImportError:  # pragma: no cover - without pytest-asyncio, async fixtures need another plugin
    async_fixture: Callable[[Any], Any] = pytest.fixture
else:
    async_fixture = pytest_asyncio.fixture

__all__ = ["async_fixture", "prism_namespace", "prism_store"]


@async_fixture
async def prism_store() -> AsyncIterator[Store]:
    """An open in-memory Store, private to the test."""
    async with connect("memory://") as store:
        yield store


@async_fixture
async def prism_namespace(prism_store: Store) -> Namespace:
    """The ``test`` namespace of ``prism_store``."""
    return prism_store.namespace("test")
