"""What the streaming routes take and answer, for the gateway's ``/openapi.json`` and ``/docs``.

The request body of ``POST /v1/requests`` is described from the struct the route
decodes (:class:`~prism.streaming.protocol.Inbound`, the request fields of it). The
structs below are the shapes of the JSON answers; the tests decode real answers
with them (unknown or missing fields fail), so they cannot drift from the wire.
"""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.routing import BaseRoute

from prism.streaming.protocol import (
    Acknowledgment,
    Complete,
    ErrorBody,
    ErrorMessage,
    Feed,
    Inbound,
    Pong,
    Progress,
    ProgressState,
    Response,
    StatusMessage,
    Subscribed,
)
from prism.streaming.requests import RequestStatus

__all__ = ["Accepted", "RequestPage", "RequestState", "describe_routes"]


class Accepted(msgspec.Struct, forbid_unknown_fields=True):
    """A request stored and queued; ``Location`` is its URL."""

    request_id: str
    status: RequestStatus


class RequestState(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """A request: its status, latest progress, and its result or error once finished."""

    request_id: str
    action: str
    status: RequestStatus
    progress: ProgressState
    attempts: int
    last_seq: int
    created_at: str
    updated_at: str
    id: str | None = None
    result: Any = None
    error: ErrorBody | None = None
    finished_at: str | None = None


class RequestPage(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """One page of requests, newest first, and the token of the next page."""

    requests: list[RequestState]
    next_page_token: str | None = None


_REQUEST_FIELDS = ("action", "id", "payload", "metadata")

#: Every message the server sends on the WebSocket, told apart by ``type``.
ServerMessage = (
    Acknowledgment | Response | Progress | Complete | ErrorMessage | StatusMessage | Subscribed | Feed | Pong
)


def _operations() -> dict[str, dict[str, Any]]:
    from prism.gateway.openapi import Operation

    def query(name: str, text: str, schema: dict[str, Any]) -> dict[str, Any]:
        return {"name": name, "in": "query", "required": False, "description": text, "schema": schema}

    def header(name: str, text: str) -> dict[str, Any]:
        return {
            "name": name,
            "in": "header",
            "required": False,
            "description": text,
            "schema": {"type": "string"},
        }

    request_id = {
        "name": "request_id",
        "in": "path",
        "required": True,
        "description": "The request id the server gave (`acknowledgment`, `POST /v1/requests`).",
        "schema": {"type": "string", "minLength": 1},
    }
    page = [
        query("limit", "Most requests per page (at most `streaming.max_list_limit`).", {"type": "integer"}),
        query("page_token", "The `next_page_token` of the previous page.", {"type": "string"}),
    ]
    auth = {401: "Missing or invalid credentials (`UNAUTHORIZED`)."}
    not_found = {404: "No such request, or another user's (`NOT_FOUND`)."}
    store = {500: "The store could not be reached; retry (`INTERNAL_ERROR`)."}
    one = Operation(
        operation_id="getRequest",
        summary="A request's status, progress and result",
        params=[request_id],
        response=RequestState,
        response_description="The request.",
        errors={**auth, **not_found, **store},
    )
    return {
        "/v1/stream": {
            "get": Operation(
                operation_id="stream",
                summary="The streaming WebSocket",
                description=(
                    "Upgrade to a WebSocket (`101`). Authenticate with the gateway's headers, or "
                    "`?token=` from a browser; a refused connection gets an `error` message "
                    "(`UNAUTHORIZED`) and close code 1008.\n\n"
                    'Send requests `{"action", "id"?, "payload"?, "metadata"?}` and control messages '
                    '`{"type": "subscribe" | "cancel" | "status" | "ping", "request_id"?, "after_seq"?}`; '
                    "receive `acknowledgment`, `response`, `progress`, `complete`, `error`, "
                    "`subscribed`, `status` and `pong` messages. See the streaming guide for every field."
                ),
                status=101,
                response_description="Switching Protocols: the WebSocket is open.",
                params=[
                    query("token", "A credential, for clients that cannot set headers.", {"type": "string"})
                ],
                messages={"client": Inbound, "server": ServerMessage},
            )
        },
        "/v1/requests": {
            "post": Operation(
                operation_id="submitRequest",
                summary="Submit a request to run through the queue",
                description=(
                    "The request is stored before it is acknowledged, then run by a worker. "
                    "`id` (or the `Idempotency-Key` header) makes a retry return the same request: "
                    "the answer then carries `Idempotent-Replayed: true`."
                ),
                body=Inbound,
                body_fields=_REQUEST_FIELDS,
                body_required=("action",),
                body_description=(
                    "A request in the streamer wire format: the handler's `action`, its `payload` "
                    "(a JSON object), the client's `id` and free `metadata`."
                ),
                status=202,
                response=Accepted,
                response_description="Stored and queued.",
                response_headers={
                    "Location": "The request's URL.",
                    "Idempotent-Replayed": "`true` when the id named an existing request.",
                },
                params=[header("Idempotency-Key", "The request's `id`: 1-128 printable characters.")],
                errors={
                    400: "Malformed body (`INVALID_MESSAGE`) or no handler for the action "
                    "(`INVALID_ACTION`, `details.actions` lists them).",
                    **auth,
                    403: "The handler's permission role is missing (`FORBIDDEN`).",
                    409: "The id was used for a different request (`DUPLICATE_REQUEST`).",
                    413: "The body is over `streaming.max_frame_bytes` (`MESSAGE_TOO_LARGE`).",
                    422: "The payload does not fit the handler (`VALIDATION_ERROR`, `details.field`).",
                    **store,
                },
            ),
            "get": Operation(
                operation_id="listRequests",
                summary="The caller's own requests, newest first (an admin may name another user)",
                params=[
                    query(
                        "status",
                        "Only requests in this status.",
                        {"type": "string", "enum": [s.value for s in RequestStatus]},
                    ),
                    query(
                        "action",
                        "Only requests of this action (handler name).",
                        {"type": "string", "maxLength": 256},
                    ),
                    query(
                        "user",
                        "Another user of the caller's tenant, as requests record it (`apikey:NAME`, "
                        "`jwt:ISSUER:SUB`); admins only.",
                        {"type": "string"},
                    ),
                    *page,
                ],
                response=RequestPage,
                response_description="One page of requests.",
                errors={
                    **auth,
                    403: "`user` names someone else and the caller is no admin (`FORBIDDEN`).",
                    422: "A bad `limit`, `status` or `action` (`VALIDATION_ERROR`, `details.field`).",
                    **store,
                },
            ),
        },
        "/v1/requests/{request_id}": {"get": one},
        "/v1/requests/{request_id}/cancel": {
            "post": Operation(
                operation_id="cancelRequest",
                summary="Cancel a request (a finished one is returned as it is)",
                params=[request_id],
                response=RequestState,
                response_description="The request afterwards.",
                errors={**auth, **not_found, **store},
            )
        },
        "/v1/requests/{request_id}/events": {
            "get": Operation(
                operation_id="requestEvents",
                summary="Follow a request's events (Server-Sent Events)",
                description=(
                    "Each event is `id: <seq>`, `event: <type>`, `data: <event JSON>`; the stream "
                    "resumes after `Last-Event-ID` (or `?after_seq=`) and ends with the final event."
                ),
                params=[
                    request_id,
                    header("Last-Event-ID", "Resume after this event number."),
                    query("after_seq", "Resume after this event number.", {"type": "integer", "minimum": 0}),
                    query("token", "A credential, for `EventSource` clients.", {"type": "string"}),
                ],
                response_media="text/event-stream",
                response_description="The event stream.",
                errors={**auth, **not_found, 422: "A bad `Last-Event-ID` or `after_seq`.", **store},
            )
        },
        "/v1/dead-letters": {
            "get": Operation(
                operation_id="listDeadLetters",
                summary="Requests of the caller's tenant that failed for good (admin role)",
                params=page,
                response=RequestPage,
                response_description="One page of dead letters.",
                errors={**auth, 403: "The admin role is missing (`FORBIDDEN`).", **store},
            )
        },
        "/v1/dead-letters/{request_id}/retry": {
            "post": Operation(
                operation_id="retryDeadLetter",
                summary="Run a dead letter again as a new request of its user (admin role)",
                description=(
                    "The new request has the same action, payload and metadata and a fresh set of "
                    "attempts; the dead letter leaves the list. Retrying it again answers the same new "
                    "request."
                ),
                params=[request_id],
                status=202,
                response=Accepted,
                response_description="The new request, stored and queued.",
                errors={
                    **auth,
                    403: "The admin role is missing (`FORBIDDEN`).",
                    404: "No such dead letter in the caller's tenant (`NOT_FOUND`).",
                    **store,
                },
            )
        },
        "/v1/dead-letters/{request_id}": {
            "delete": Operation(
                operation_id="discardDeadLetter",
                summary="Take a dead letter off the list without running it (admin role)",
                params=[request_id],
                status=204,
                response_description="Discarded.",
                errors={
                    **auth,
                    403: "The admin role is missing (`FORBIDDEN`).",
                    404: "No such dead letter in the caller's tenant (`NOT_FOUND`).",
                    **store,
                },
            )
        },
    }


def describe_routes(routes: list[BaseRoute]) -> list[BaseRoute]:
    """Attach their OpenAPI descriptions to the streaming routes; returns ``routes``."""
    from prism.gateway.openapi import describe

    operations = _operations()
    for route in routes:
        found = operations.get(getattr(route, "path", ""))
        if found is not None:
            describe(route, **found)
    return routes
