"""pytest fixtures for users of Prism: a fresh in-memory store and namespace per test."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from prism.kv.namespace import Namespace
from prism.kv.store import Store, connect


@pytest.fixture
async def prism_store() -> AsyncIterator[Store]:
    """An open in-memory Store, private to the test."""
    async with connect("memory://") as store:
        yield store


@pytest.fixture
async def prism_namespace(prism_store: Store) -> Namespace:
    """The ``test`` namespace of ``prism_store``."""
    return prism_store.namespace("test")
