"""Ephemeral servers for tests: each starts a real engine from its local binary on a free port.

``PRISM_TEST_<BACKEND>_URL`` points a test run at an existing server instead. When
neither is possible the tests skip with a message naming what to install, unless
``PRISM_REQUIRE_BACKENDS`` is ``all`` (or lists the backend): then they fail.
"""

from prism.testing.servers._base import ServerUnavailable, free_port, require_or_skip, wait_for_port

__all__ = ["ServerUnavailable", "free_port", "require_or_skip", "wait_for_port"]
