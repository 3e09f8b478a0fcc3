"""The conformance suite on ``memory://``, the reference backend.

A second run uses a memory backend that declares fewer capabilities, so the suite's
skips and the ``Unsupported`` answers the contract demands are exercised too.
"""

from __future__ import annotations

import pytest

from prism.backends.memory import MemoryBackend
from prism.model import Capabilities
from prism.testing.conformance import ConformanceSuite


class TestMemory(ConformanceSuite):
    @pytest.fixture
    def store_url(self) -> str:
        return "memory://"


class FewerCapabilitiesBackend(MemoryBackend):
    """The memory engine declaring plain reads and writes only: no ttl, conditions, listing, transactions."""

    name = "memory-limited"
    capabilities = Capabilities(
        ttl=False,
        etag=False,
        transactions=False,
        range_reads=False,
        prefix_scan=False,
        max_value_bytes=512 * 1024,
        multi_process=False,
    )


class TestMemoryWithFewerCapabilities(ConformanceSuite):
    @pytest.fixture
    def store_url(self) -> str:
        return "memory://"

    @pytest.fixture
    def store_options(self) -> dict[str, str]:
        return {"backend": f"{__name__}:FewerCapabilitiesBackend"}
