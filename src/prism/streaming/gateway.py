"""How ``prism serve`` mounts streaming: the gateway finds :func:`extension` through the
``prism.gateway`` entry point group and calls it with its config.

The gateway's config keeps a raw ``streaming:`` mapping and a ``handlers:`` list; they
become a :class:`~prism.streaming.config.StreamingConfig`. The service runs on the
store :func:`~prism.streaming.stores.choose_store` picks (``streaming.store``, default:
the config's first store), on the gateway's own opened instance of it, with the
gateway's authenticator and audit trail; it is built whole when the gateway starts.
Unless ``streaming.run_workers`` is false, its workers run inside the serving
process. ``streaming.enabled: false`` mounts nothing.
"""

from __future__ import annotations

from typing import Any

from prism.errors import InvalidArgument
from prism.streaming.config import parse_config
from prism.streaming.errors import StreamError
from prism.streaming.routes import streaming_routes
from prism.streaming.service import StreamingService
from prism.streaming.stores import choose_store

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
    choice = choose_store(settings, config=config)
    running: list[StreamingService] = []

    def current() -> StreamingService:
        if not running:
            raise StreamError("INTERNAL_ERROR", "streaming is not running: the server starts or stops")
        return running[0]

    async def start(gateway: Any) -> None:
        assert choice.name is not None
        service = StreamingService(
            gateway.stores[choice.name],
            settings,
            store_url=choice.url,
            authenticator=gateway.authenticator,
            audit=RouteAudit(gateway),
        )
        await service.start()
        running[:] = [service]

    async def stop(gateway: Any) -> None:
        if running:
            service = running.pop()
            await service.stop()

    return AppExtension(routes=streaming_routes(current), on_startup=[start], on_shutdown=[stop])
