"""The wire format: the streamer message types, the control messages, and their codecs.

A client request is ``{"action", "id"?, "payload"?, "metadata"?}``; control messages
carry a ``"type"`` (subscribe, cancel, status, ping). Every server message carries
``"type"``; progress, complete and error events of a request also carry ``seq``, which
grows by one per request. Payloads and results stay raw JSON (``msgspec.Raw``) until a
handler decodes them, so relaying costs no re-encoding.
"""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec

from prism.streaming.errors import StreamError

__all__ = [
    "Acknowledgment",
    "Complete",
    "ErrorBody",
    "ErrorMessage",
    "EventHeader",
    "Inbound",
    "Pong",
    "Progress",
    "ProgressState",
    "Response",
    "StatusMessage",
    "Subscribed",
    "decode_event_header",
    "decode_inbound",
    "encode",
    "encode_result",
    "error_body",
    "timestamp",
]

#: Longest client id, action name and request id accepted.
MAX_NAME_CHARS = 128

CONTROL_TYPES = frozenset({"subscribe", "cancel", "status", "ping"})
TERMINAL_TYPES = frozenset({"complete", "error"})


class ErrorBody(msgspec.Struct, kw_only=True, omit_defaults=True):
    """``error`` of an error message or a failed response."""

    code: str
    message: str
    retryable: bool
    details: Any = None
    retry_after: float | None = None


class ProgressState(msgspec.Struct, kw_only=True):
    """The latest progress of a request."""

    percentage: float = 0.0
    message: str = ""


# -- client -> server -----------------------------------------------------------------


def _doc(text: str) -> msgspec.Meta:
    """A field's description, for the gateway's OpenAPI document."""
    return msgspec.Meta(description=text)


class Inbound(msgspec.Struct, kw_only=True):
    """Any client message: a request (``action``) or a control message (``type``)."""

    type: Annotated[str | None, _doc("A control message: subscribe, cancel, status or ping.")] = None
    action: Annotated[str | None, _doc("A request: the handler to run (1-128 printable characters).")] = None
    id: Annotated[str | None, _doc("The client's id: a repeat returns the same request.")] = None
    payload: Annotated[msgspec.Raw, _doc("The handler's input: a JSON object.")] = msgspec.field(
        default_factory=msgspec.Raw
    )
    metadata: Annotated[dict[str, Any] | None, _doc("Free data kept with the request.")] = None
    request_id: Annotated[str | None, _doc("The request a control message is about.")] = None
    after_seq: Annotated[int | None, _doc("subscribe: send the events after this number.")] = None


_inbound = msgspec.json.Decoder(Inbound)
EMPTY_OBJECT = msgspec.Raw(b"{}")


def decode_inbound(frame: bytes | str) -> Inbound:
    """Parse one client frame; raise StreamError(INVALID_MESSAGE) naming what is wrong.

    Nothing else escapes: bytes that are not UTF-8 (anywhere, the payload included) and
    JSON nested deeper than the parser follows are INVALID_MESSAGE too.
    """
    try:
        if isinstance(frame, bytes):
            # The payload stays raw until a handler decodes it: check all of it here.
            frame.decode("utf-8")
        msg = _inbound.decode(frame)
    except msgspec.ValidationError as exc:
        raise StreamError("INVALID_MESSAGE", f"invalid message: {exc}") from None
    except msgspec.DecodeError as exc:
        raise StreamError("INVALID_MESSAGE", f"malformed JSON: {exc}") from None
    except UnicodeDecodeError as exc:
        raise StreamError(
            "INVALID_MESSAGE", f"the message is not UTF-8 (byte {exc.start} is invalid)"
        ) from None
    except RecursionError:
        raise StreamError("INVALID_MESSAGE", "the message nests too deeply") from None
    if msg.type is None and msg.action is None:
        raise StreamError(
            "INVALID_MESSAGE", 'a message needs "action" (a request) or "type" (a control message)'
        )
    if msg.type is not None and msg.type not in CONTROL_TYPES:
        raise StreamError(
            "INVALID_MESSAGE", f"unknown message type {msg.type!r}; expected one of {sorted(CONTROL_TYPES)}"
        )
    for name in ("action", "id", "request_id"):
        value = getattr(msg, name)
        if value is not None and not (0 < len(value) <= MAX_NAME_CHARS and value.isprintable()):
            raise StreamError(
                "INVALID_MESSAGE",
                f'"{name}" must be 1-{MAX_NAME_CHARS} printable characters',
                details={"field": name},
            )
    payload = bytes(msg.payload)
    if payload in (b"", b"null"):
        msg.payload = EMPTY_OBJECT
    elif not payload.startswith(b"{"):
        raise StreamError("VALIDATION_ERROR", '"payload" must be a JSON object', details={"field": "payload"})
    if msg.after_seq is not None and msg.after_seq < 0:
        raise StreamError("INVALID_MESSAGE", '"after_seq" must be >= 0', details={"field": "after_seq"})
    if msg.type in ("subscribe", "cancel", "status") and msg.request_id is None:
        raise StreamError(
            "INVALID_MESSAGE", f'a "{msg.type}" message needs "request_id"', details={"field": "request_id"}
        )
    return msg


# -- server -> client -----------------------------------------------------------------


class _Out(msgspec.Struct, kw_only=True, omit_defaults=True, tag_field="type"):
    pass


class Acknowledgment(_Out, tag="acknowledgment"):
    """An async request was stored and queued; events follow."""

    request_id: str
    status: str
    message: str
    id: str | None = None


class Response(_Out, tag="response"):
    """The answer to a sync request."""

    request_id: str
    success: bool
    data: Any = None
    error: ErrorBody | None = None
    id: str | None = None


class Progress(_Out, tag="progress"):
    request_id: str
    seq: int
    percentage: float
    message: str
    timestamp: str
    metadata: dict[str, Any] | None = None


class Complete(_Out, tag="complete"):
    request_id: str
    seq: int
    result: Any
    timestamp: str


class ErrorMessage(_Out, tag="error"):
    """A failure: of a request (with ``seq`` when it is that request's terminal event) or of a message."""

    error: ErrorBody
    request_id: str | None = None
    seq: int | None = None
    id: str | None = None
    timestamp: str | None = None


class Pong(_Out, tag="pong"):
    timestamp: str


class StatusMessage(_Out, tag="status"):
    """Answer to ``status`` (and to ``cancel``): the request as stored."""

    request_id: str
    action: str
    status: str
    progress: ProgressState
    seq: int
    result: Any = None
    error: ErrorBody | None = None


class Subscribed(_Out, tag="subscribed"):
    """A ``subscribe`` took effect: events after ``after_seq`` follow, in order, then live ones."""

    request_id: str
    after_seq: int
    last_seq: int
    status: str


class EventHeader(msgspec.Struct):
    """The routing fields of a stored event, decoded without the rest."""

    type: str
    request_id: str
    seq: int = 0


_encoder = msgspec.json.Encoder()
decode_event_header = msgspec.json.Decoder(EventHeader).decode


def encode(message: msgspec.Struct) -> bytes:
    """JSON bytes of a server message."""
    return _encoder.encode(message)


def encode_result(result: Any) -> bytes:
    """JSON bytes of a handler's result; StreamError(PROCESSING_FAILED) saying why when it has none.

    Such a result fails its request at once: another attempt would only produce it again.
    """
    try:
        return msgspec.json.encode(result)
    except RecursionError:
        reason = "it nests too deeply"
    except (TypeError, ValueError, msgspec.EncodeError) as exc:
        reason = str(exc)
    raise StreamError("PROCESSING_FAILED", f"the handler's result is not JSON: {reason}")


#: The last whole second formatted by ``timestamp``, and its text (events come many a second).
_second: list[Any] = [None, ""]


def timestamp(ts: float | None = None) -> str:
    """RFC 3339 UTC time with milliseconds, as every event carries.

    The same text as ``datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")``
    with ``Z``; the date and time of day are formatted once per second.
    """
    if ts is None:
        ts = time.time()
    whole = math.floor(ts)
    micros = round((ts - whole) * 1_000_000)
    if micros >= 1_000_000:
        whole += 1
        micros -= 1_000_000
    if _second[0] != whole:
        moment = datetime.fromtimestamp(whole, UTC)
        _second[0], _second[1] = whole, moment.strftime("%Y-%m-%dT%H:%M:%S")
    return f"{_second[1]}.{micros // 1000:03d}Z"


def error_body(exc: StreamError) -> ErrorBody:
    return ErrorBody(
        code=exc.code,
        message=exc.message,
        retryable=exc.retryable,
        details=exc.details,
        retry_after=exc.retry_after,
    )
