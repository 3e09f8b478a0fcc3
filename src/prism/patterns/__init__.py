"""Queue and PubSub, opened by URL scheme: the public names of ``prism.backends``' messaging.

The same URL that opens a store picks the engine: ``redis://`` gives Redis Streams and
Redis pub/sub, ``postgresql://`` a ``FOR UPDATE SKIP LOCKED`` table and LISTEN/NOTIFY,
``nats://`` a JetStream work-queue stream and core subjects, ``dynamodb://`` a table of
conditional-update leases, and ``memory://``/``sqlite://`` the embedded engines (one
node: a queue on the KeyValue store, pub/sub inside the process). Each engine's queue
and pub/sub live in its package under ``prism.backends``, beside its KeyValue backend.
"""

from __future__ import annotations

from prism.backends import PUBSUBS, QUEUES, open_pubsub, open_queue
from prism.backends.messaging import Lease, PubSub, Queue, Subscription

__all__ = ["PUBSUBS", "QUEUES", "Lease", "PubSub", "Queue", "Subscription", "open_pubsub", "open_queue"]
