"""The Prism gateway: the KeyValue model over HTTP, with auth, tenancy, audit, PII and observability.

``prism serve`` runs it; embed it with::

    from prism.gateway import create_app, load_config
    app = create_app(load_config("prism.yaml"))
"""

from prism.gateway.app import AppExtension, create_app, load_extensions
from prism.gateway.auth import Authenticator, AuthError, Principal
from prism.gateway.config import ConfigError, GatewayConfig, default_config, load_config, parse_config
from prism.gateway.runtime import Gateway

__all__ = [
    "AppExtension",
    "AuthError",
    "Authenticator",
    "ConfigError",
    "Gateway",
    "GatewayConfig",
    "Principal",
    "create_app",
    "default_config",
    "load_config",
    "load_extensions",
    "parse_config",
]
