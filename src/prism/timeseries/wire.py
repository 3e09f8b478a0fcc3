"""Events as JSON, for the HTTP API and the ``prism ts`` command alike.

An event on the wire is ``{"time": "<RFC 3339>", "id": "...", "key"?: "...",
"value": "<base64>" | "data": <any JSON>, "content_type"?: "..."}``: ``data`` is
stored as its JSON text with content type ``application/json`` unless another is
given. A read answers each event with ``value`` (base64), and ``data`` too when its
content type is ``application/json``. The msgspec structs here are the schema.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from prism.errors import InvalidArgument
from prism.model import Event, EventPage, EventResult

__all__ = [
    "JSON_CONTENT_TYPE",
    "WireEvent",
    "WireEventOut",
    "WirePage",
    "WireResult",
    "WireWrite",
    "WireWriteResults",
    "event_from_wire",
    "event_to_wire",
    "page_to_wire",
    "result_to_wire",
]

JSON_CONTENT_TYPE = "application/json"


class WireEvent(msgspec.Struct, forbid_unknown_fields=True):
    """One event to write: ``value`` (base64 bytes) or ``data`` (any JSON), not both."""

    time: datetime
    id: str
    key: str = ""
    value: bytes | None = None
    #: Any JSON value (null included); absent when ``value`` is given.
    data: Any = msgspec.UNSET
    content_type: str | None = None


class WireWrite(msgspec.Struct, forbid_unknown_fields=True):
    """The body of ``POST /v1/ts/{ns}/{series}``."""

    events: list[WireEvent]


class WireResult(msgspec.Struct, omit_defaults=True):
    """The outcome of one written event."""

    id: str
    time: datetime
    key: str
    ok: bool
    existed: bool = False
    error: str | None = None
    code: str | None = None


class WireWriteResults(msgspec.Struct):
    """The answer to a write: one result per event, in order."""

    results: list[WireResult]


class WireEventOut(msgspec.Struct, omit_defaults=True):
    """One event read."""

    time: datetime
    id: str
    key: str
    value: bytes
    content_type: str | None = None
    #: The value decoded, for events whose content type is application/json.
    data: Any = msgspec.UNSET


class WirePage(msgspec.Struct):
    """The answer to a read: events and the token of the next page (null on the last)."""

    events: list[WireEventOut]
    next_page_token: str | None = None


def event_from_wire(event: WireEvent, where: str = "event") -> Event:
    """The library event for a decoded wire event; InvalidArgument names ``where`` on bad input."""
    if event.time.tzinfo is None:
        raise InvalidArgument(f"{where}.time must carry a UTC offset (RFC 3339), like 2024-05-01T12:00:00Z")
    if (event.value is None) == (event.data is msgspec.UNSET):
        raise InvalidArgument(f"{where} needs exactly one of value (base64) and data (JSON)")
    content_type: str | None
    if event.data is not msgspec.UNSET:
        value = msgspec.json.encode(event.data)
        content_type = event.content_type or JSON_CONTENT_TYPE
    else:
        assert event.value is not None
        value, content_type = event.value, event.content_type
    return Event(time=event.time, id=event.id, key=event.key, value=value, content_type=content_type)


def decode_events(body: bytes, *, lines: bool = False) -> list[Event]:
    """Events from a write body (``{"events": [...]}``), or from JSON lines when ``lines``."""
    try:
        if lines:
            decoder = msgspec.json.Decoder(WireEvent)
            wire = [decoder.decode(line) for line in body.splitlines() if line.strip()]
        else:
            wire = msgspec.json.decode(body, type=WireWrite).events
    except msgspec.ValidationError as exc:
        raise InvalidArgument(f"bad event: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise InvalidArgument(f"events are not valid JSON: {exc}") from exc
    return [event_from_wire(e, f"events[{i}]") for i, e in enumerate(wire)]


def event_to_wire(event: Event) -> WireEventOut:
    data: Any = msgspec.UNSET
    if event.content_type == JSON_CONTENT_TYPE:
        try:
            data = msgspec.json.decode(event.value)
        except msgspec.DecodeError:
            data = msgspec.UNSET
    return WireEventOut(event.time, event.id, event.key, event.value, event.content_type, data)


def page_to_wire(page: EventPage) -> WirePage:
    return WirePage([event_to_wire(e) for e in page.events], page.next_page_token)


def result_to_wire(result: EventResult) -> WireResult:
    if result.error is None:
        return WireResult(result.id, result.time, result.key, result.ok, result.existed)
    return WireResult(
        result.id, result.time, result.key, result.ok, result.existed, str(result.error), result.error.code
    )
