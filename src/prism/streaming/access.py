"""Who may do what: the access rules every command and query of streaming applies.

A principal sees only its own requests, or, with the admin role, those of its
tenant; an action needs its handler's permission (or the admin role).
"""

from __future__ import annotations

from prism.streaming.auth import Principal, tenant_of
from prism.streaming.config import StreamingConfig
from prism.streaming.errors import StreamError
from prism.streaming.events import topic_for_user
from prism.streaming.handlers import HandlerSpec, Router
from prism.streaming.requests import RequestRecord

__all__ = ["Access"]


class Access:
    """The access rules of one streaming service (its config and handlers)."""

    def __init__(self, config: StreamingConfig, router: Router) -> None:
        self.config = config
        self.router = router

    def is_admin(self, principal: Principal) -> bool:
        return self.config.admin_role in principal.roles

    def visible(self, principal: Principal, record: RequestRecord) -> bool:
        """Whether ``principal`` may read, follow and cancel ``record``."""
        if record.tenant != principal.tenant:
            return False
        return record.user == principal.owner or self.is_admin(principal)

    def handler_for(self, principal: Principal, action: str) -> HandlerSpec:
        """The handler of ``action``: INVALID_ACTION when there is none, FORBIDDEN without its permission."""
        spec = self.router.get(action)
        if spec is None:
            raise StreamError(
                "INVALID_ACTION",
                f"unknown action {action!r}",
                details={"actions": sorted(self.router.handlers)},
            )
        if spec.permission is not None and not (
            spec.permission in principal.roles or self.is_admin(principal)
        ):
            raise StreamError("FORBIDDEN", f"action {action!r} needs the {spec.permission!r} role")
        return spec

    def is_sync(self, spec: HandlerSpec) -> bool:
        """Whether ``spec`` is quick enough to run inline and answer in one response."""
        return spec.estimated_duration < self.config.sync_threshold

    def topic_of(self, principal: Principal) -> str:
        """The topic carrying the events of every request of ``principal``."""
        return topic_for_user(self.config, tenant_of(principal), principal.owner)

    def owner_topic(self, record: RequestRecord) -> str:
        """The topic carrying the events of ``record`` (its owner's topic)."""
        return topic_for_user(self.config, record.tenant, record.user)
