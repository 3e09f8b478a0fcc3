"""Who may do what: per-namespace roles for read, write and admin, and tenant rules.

A principal may act on a namespace when one of its roles is listed for the action
(``admin`` also grants read and write). A tenant-scoped namespace additionally
needs a principal that belongs to a tenant, since its keys are private to one.
"""

from __future__ import annotations

from typing import Literal

from prism.gateway.auth import AuthError, Principal
from prism.gateway.config import NamespaceConfig

__all__ = ["PII_READ_ROLE", "Action", "authorize", "can_see", "may"]

Action = Literal["read", "write", "admin"]

#: The role that lets a reader see PII fields in clear.
PII_READ_ROLE = "pii:read"


def may(principal: Principal, ns: NamespaceConfig, action: Action) -> bool:
    """True when ``principal`` holds a role the namespace lists for ``action`` (or for admin)."""
    roles = principal.roles
    access = ns.access
    if not roles.isdisjoint(access.admin):
        return True
    if action == "read":
        return not roles.isdisjoint(access.read)
    if action == "write":
        return not roles.isdisjoint(access.write)
    return False


def can_see(principal: Principal, ns: NamespaceConfig) -> bool:
    """True when the namespace should appear in the principal's listing."""
    if ns.tenant_scoped and principal.tenant is None:
        return False
    return may(principal, ns, "read") or may(principal, ns, "write")


def authorize(principal: Principal, ns: NamespaceConfig, action: Action) -> None:
    """Raise AuthError(403) unless ``principal`` may perform ``action`` on ``ns``."""
    if not may(principal, ns, action):
        raise AuthError(403, "FORBIDDEN", f"{principal.subject!r} may not {action} namespace {ns.name!r}")
    if ns.tenant_scoped and principal.tenant is None:
        raise AuthError(
            403, "TENANT_REQUIRED", f"namespace {ns.name!r} is tenant-scoped and the caller has no tenant"
        )
