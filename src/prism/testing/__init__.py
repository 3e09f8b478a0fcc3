"""Testing helpers that ship with Prism, for Prism's own tests and for users'.

* ``prism.testing.conformance.ConformanceSuite``: the black-box suite every backend
  must pass; subclass it and provide a ``store_url`` fixture.
* ``prism.testing.messaging.QueueSuite`` and ``PubSubSuite``: the same for an engine's
  queue and pub/sub (fixtures ``queue_url`` and ``pubsub_url``).
* ``prism.testing.fake_store()``: an open in-memory store for unit tests.
* pytest fixtures ``prism_store`` and ``prism_namespace`` (registered as a pytest plugin).
"""

from prism.testing.fake import fake_store

__all__ = ["fake_store"]
