"""The conformance suite: black-box tests that every backend must pass.

Run it on a backend by subclassing and providing the ``store_url`` fixture (and,
optionally, ``store_options``)::

    from prism.testing.conformance import ConformanceSuite

    class TestMyBackend(ConformanceSuite):
        @pytest.fixture
        def store_url(self, my_server) -> str:
            return my_server.url

Each test works in a fresh, uniquely named namespace, so the suite never wipes data
and can share one server. Tests of features the backend's capabilities exclude skip.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

import prism
from prism.kv.namespace import Namespace
from prism.kv.store import Store


class ConformanceSuite:
    """Subclass with a ``store_url`` fixture to run every contract test on a backend."""

    @pytest.fixture
    def store_options(self) -> dict[str, Any]:
        return {}

    @pytest.fixture
    async def store(self, store_url: str, store_options: dict[str, Any]) -> AsyncIterator[Store]:
        async with prism.connect(store_url, **store_options) as store:
            yield store

    @pytest.fixture
    def ns(self, store: Store) -> Namespace:
        return store.namespace(f"conf-{uuid.uuid4().hex[:12]}")
