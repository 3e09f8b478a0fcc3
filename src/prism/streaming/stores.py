"""Which store streaming runs on, decided in one place for every way of running it.

``prism serve``, ``prism worker`` and ``python -m prism.streaming`` all ask
:func:`choose_store`: with a gateway config, ``streaming.store`` names one of its
``stores`` (default: the first one), with the URL and options written there; without
one, the store is the URL given on the command line. The queue and the pub/sub ride
on the same store unless ``streaming.queue_url`` / ``pubsub_url`` say otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from prism.errors import ConfigError, InvalidArgument
from prism.kv.store import Store, connect
from prism.streaming.auth import Authenticator
from prism.streaming.config import StreamingConfig
from prism.streaming.handlers import Router
from prism.streaming.service import StreamingService

if TYPE_CHECKING:
    from prism.gateway.config import GatewayConfig

__all__ = ["StoreChoice", "choose_store", "open_service"]


@dataclass(frozen=True, slots=True)
class StoreChoice:
    """The store streaming runs on: its URL and connect options, and its name in a gateway config."""

    url: str
    #: The name under ``stores:`` of the gateway config (None for a URL given on its own).
    name: str | None = None
    #: ``connect()`` keywords written in the config (``backend`` and the store's options).
    options: Mapping[str, Any] = field(default_factory=dict)

    def connect(self) -> Store:
        """A new, unopened Store on this choice."""
        return connect(self.url, **self.options)


def choose_store(
    settings: StreamingConfig, *, config: GatewayConfig | None = None, url: str | None = None
) -> StoreChoice:
    """The store of streaming: from the gateway ``config`` (``streaming.store``), or the store ``url``.

    Give exactly one of them. A ``streaming.store`` that names no store of the config
    is a ConfigError at ``$.streaming.store``.
    """
    if (config is None) == (url is None):
        raise InvalidArgument("streaming runs on the store of a gateway config or on a store URL: give one")
    if url is not None:
        if not isinstance(url, str) or not url:
            raise InvalidArgument(f"a store URL is a non-empty string, got {url!r}")
        return StoreChoice(url)
    assert config is not None
    names = list(config.stores)
    name = settings.store or (names[0] if names else None)
    if name is None or name not in config.stores:
        raise ConfigError(config.source, "$.streaming.store", f"names no store of $.stores: {name!r}")
    entry = config.store_entry(name)
    options = {"backend": entry.backend, **entry.options} if entry.backend else dict(entry.options)
    return StoreChoice(entry.url, name, options)


def open_service(
    choice: StoreChoice,
    settings: StreamingConfig | None = None,
    *,
    authenticator: Authenticator | None = None,
    router: Router | None = None,
) -> StreamingService:
    """A StreamingService on a store of its own, made from ``choice`` (and closed with the service)."""
    return StreamingService(
        choice.connect(),
        settings,
        store_url=choice.url,
        authenticator=authenticator,
        router=router,
        owns_store=True,
    )
