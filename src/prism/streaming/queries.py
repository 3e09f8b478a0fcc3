"""The read side of streaming: look up one request, list a user's requests or a tenant's dead letters.

Queries change nothing; each checks that the caller may see what it asks for (a
request of another user is NOT_FOUND, so its existence is not revealed).
"""

from __future__ import annotations

from typing import Any

import msgspec

from prism.errors import InvalidArgument
from prism.streaming.access import Access
from prism.streaming.auth import Principal, tenant_of
from prism.streaming.config import StreamingConfig
from prism.streaming.errors import StreamError
from prism.streaming.protocol import StatusMessage, timestamp
from prism.streaming.requests import RequestRecord, RequestStatus, RequestStore, Versioned, is_request_id

__all__ = ["MAX_ACTION_FILTER", "Queries", "status_body", "status_message"]

#: The longest ``action`` a request listing may be filtered by.
MAX_ACTION_FILTER = 256


class Queries:
    """Reads of request records on behalf of a principal."""

    def __init__(self, config: StreamingConfig, access: Access, requests: RequestStore) -> None:
        self.config = config
        self.access = access
        self.requests = requests

    async def lookup(self, principal: Principal, request_id: str) -> Versioned:
        """The request, or NOT_FOUND (also for another user's request: its existence is not revealed)."""
        current = await self.requests.get(request_id) if is_request_id(request_id) else None
        if current is None or not self.access.visible(principal, current.record):
            raise StreamError("NOT_FOUND", f"no request {request_id!r}", details={"request_id": request_id})
        return current

    def _check_limit(self, limit: int) -> None:
        if not 1 <= limit <= self.config.max_list_limit:
            raise StreamError(
                "VALIDATION_ERROR",
                f"limit must be from 1 to {self.config.max_list_limit}",
                details={"field": "limit"},
            )

    async def list_requests(
        self,
        principal: Principal,
        *,
        status: str | None,
        limit: int,
        page_token: str | None,
        user: str | None = None,
        action: str | None = None,
    ) -> tuple[list[RequestRecord], str | None]:
        """The caller's own requests, newest first; an admin may name another ``user`` of its tenant.

        ``status`` and ``action`` keep only the requests in that status and of that action.

        ``user`` is an owner as requests record it (``apikey:NAME``, ``jwt:ISSUER:SUB``, ...).
        """
        owner = principal.owner if user is None else user
        if owner != principal.owner and not self.access.is_admin(principal):
            raise StreamError(
                "FORBIDDEN", f"listing another user's requests needs the {self.config.admin_role!r} role"
            )
        if status is not None and status not in RequestStatus.__members__:
            raise StreamError(
                "VALIDATION_ERROR",
                f"status must be one of {', '.join(RequestStatus.__members__)}",
                details={"field": "status"},
            )
        if action is not None and len(action) > MAX_ACTION_FILTER:
            raise StreamError(
                "VALIDATION_ERROR",
                f"action must be at most {MAX_ACTION_FILTER} characters",
                details={"field": "action"},
            )
        self._check_limit(limit)
        try:
            return await self.requests.list_for(
                tenant_of(principal), owner, status=status, limit=limit, page_token=page_token, action=action
            )
        except InvalidArgument as exc:
            raise StreamError("VALIDATION_ERROR", str(exc), details={"field": "page_token"}) from None

    async def dead_letters(
        self, principal: Principal, *, limit: int, page_token: str | None
    ) -> tuple[list[RequestRecord], str | None]:
        """Requests of the caller's tenant that failed for good (admin only)."""
        if not self.access.is_admin(principal):
            raise StreamError("FORBIDDEN", f"listing dead letters needs the {self.config.admin_role!r} role")
        self._check_limit(limit)
        try:
            return await self.requests.dead_letters(tenant_of(principal), limit=limit, page_token=page_token)
        except InvalidArgument as exc:
            raise StreamError("VALIDATION_ERROR", str(exc), details={"field": "page_token"}) from None


def status_message(record: RequestRecord) -> StatusMessage:
    """The WebSocket ``status`` message of ``record``."""
    return StatusMessage(
        request_id=record.request_id,
        action=record.action,
        status=record.status,
        progress=record.progress,
        seq=record.seq,
        result=record.result if record.status == RequestStatus.COMPLETED else None,
        error=record.error if record.terminal else None,
    )


def status_body(record: RequestRecord) -> dict[str, Any]:
    """The JSON of GET /v1/requests/{id}."""
    body: dict[str, Any] = {
        "request_id": record.request_id,
        "action": record.action,
        "status": record.status,
        "progress": {"percentage": record.progress.percentage, "message": record.progress.message},
        "attempts": record.attempts,
        "last_seq": record.seq,
        "created_at": timestamp(record.created_at),
        "updated_at": timestamp(record.updated_at),
    }
    if record.client_id is not None:
        body["id"] = record.client_id
    if record.status == RequestStatus.COMPLETED:
        body["result"] = record.result
    if record.error is not None and record.status != RequestStatus.COMPLETED:
        body["error"] = msgspec.to_builtins(record.error)
    if record.finished_at is not None:
        body["finished_at"] = timestamp(record.finished_at)
    return body
