"""Where a tenant's keys live: a physical namespace of their own.

A tenant-scoped namespace ``orders`` stores the keys of tenant ``acme`` in the
physical namespace ``orders~t~acme``. Logical names cannot contain ``~`` and tenant
ids are checked against a safe charset, so no name or key a client sends can reach
another tenant's physical namespace, whatever the route (scans included).
"""

from __future__ import annotations

from prism.gateway.config import TOKEN_NAME

__all__ = ["TENANT_SEPARATOR", "check_tenant", "physical_namespace"]

TENANT_SEPARATOR = "~t~"


def check_tenant(tenant: str) -> str:
    """``tenant`` when it is a valid tenant id; ValueError otherwise."""
    if not TOKEN_NAME.match(tenant):
        raise ValueError(f"invalid tenant id {tenant!r}")
    return tenant


def physical_namespace(name: str, tenant: str | None) -> str:
    """The backend namespace that holds ``name`` for ``tenant`` (``name`` itself when not scoped)."""
    if tenant is None:
        return name
    return f"{name}{TENANT_SEPARATOR}{check_tenant(tenant)}"
