"""The Queue and PubSub contracts (defined in ``prism.backends.messaging``)."""

from prism.backends.messaging import (
    Lease,
    MessageHandler,
    PubSub,
    Queue,
    Subscription,
    check_queue_name,
    check_seconds,
    check_topic,
)

__all__ = [
    "Lease",
    "MessageHandler",
    "PubSub",
    "Queue",
    "Subscription",
    "check_queue_name",
    "check_seconds",
    "check_topic",
]
