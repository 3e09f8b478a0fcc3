"""How ``prism serve`` mounts streaming: the gateway calls :func:`extension` with its config.

The gateway's config keeps a raw ``streaming:`` mapping and a ``handlers:`` list; they
become a :class:`~prism.streaming.config.StreamingConfig`. The service runs on the
store named by ``streaming.store`` (default: the config's first store), uses the
gateway's authenticator, and, unless ``streaming.run_workers`` is false, runs its
workers inside the serving process. ``streaming.enabled: false`` mounts nothing.
"""

from __future__ import annotations

from typing import Any

from prism.errors import InvalidArgument
from prism.streaming.config import parse_config
from prism.streaming.routes import streaming_routes
from prism.streaming.service import StreamingService

__all__ = ["extension"]


def extension(config: Any) -> Any:
    """The routes and lifecycle hooks of streaming for a GatewayConfig (None when disabled)."""
    from prism.gateway.app import AppExtension
    from prism.gateway.config import ConfigError
    from prism.gateway.pipeline import RouteAudit

    try:
        settings = parse_config(config.streaming, config.handlers)
    except InvalidArgument as exc:
        raise ConfigError(config.source, "$.streaming", str(exc)) from None
    if not settings.enabled:
        return None
    names = list(config.stores)
    store_name = settings.store or (names[0] if names else None)
    if store_name is None or store_name not in config.stores:
        raise ConfigError(config.source, "$.streaming.store", f"names no store of $.stores: {store_name!r}")
    service = StreamingService(None, settings, store_url=config.store_url(store_name))

    async def start(gateway: Any) -> None:
        service.store = gateway.stores[store_name]
        service.authenticator = gateway.authenticator
        service.audit = RouteAudit(gateway)
        await service.start()

    async def stop(gateway: Any) -> None:
        await service.stop()

    return AppExtension(routes=streaming_routes(service), on_startup=[start], on_shutdown=[stop])
