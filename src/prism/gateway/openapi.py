"""The OpenAPI 3.0 description of a running gateway, and a self-contained HTML page rendering it.

The document is built from the app's own routes on first request, so it lists every
route that is mounted (the gateway's, streaming's, any ``extra_routes``) with its
methods. Request bodies are generated from the msgspec structs the handlers decode
(``msgspec.json.schema_components``, turned into OpenAPI 3.0 schemas), never written
twice. A route describes itself with :func:`describe` and one :class:`Operation` per
method; the gateway's own routes are described here. The ``ns`` parameter lists the
namespaces the caller may see (every one on an open gateway, none for a caller without
credentials), so the document is exact for its reader and names nothing to strangers. ``/docs`` is plain
HTML with inline CSS: no scripts, no CDN, readable offline; descriptions are markdown.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
from starlette.routing import BaseRoute, Route, WebSocketRoute

from prism.control.signals import Signals
from prism.gateway.apidocs import docs_html
from prism.gateway.config import GatewayConfig
from prism.gateway.pipeline import DataRoute
from prism.gateway.problem import Problem
from prism.gateway.routes_kv import BulkDeleteRequest, BulkGetRequest, BulkPutRequest, TransactRequest
from prism.gateway.routes_records import RecordPutRequest
from prism.gateway.routes_watch import ChangeEvent
from prism.gateway.wire import (
    MAX_TTL_SECONDS,
    BatchResults,
    BulkGetResponse,
    DeletedCount,
    ItemPage,
    KeyPage,
    NamespaceDetail,
    NamespaceList,
)
from prism.kv.namespace import MAX_PAGE_LIMIT
from prism.timeseries.series import MAX_PAGE_LIMIT as MAX_EVENTS
from prism.timeseries.wire import WirePage, WireWrite, WireWriteResults

__all__ = ["ApiDescription", "Operation", "describe", "docs_html", "openapi_document"]

_ATTRIBUTE = "prism_openapi"
_METHODS = ("get", "head", "put", "post", "delete", "patch")


@dataclass(frozen=True, slots=True)
class Operation:
    """The description of one method of a route, for ``/openapi.json`` and ``/docs``.

    ``body`` is the msgspec type the handler decodes its JSON body with (``body_fields``
    keeps only some of its fields, ``body_required`` marks more of them required and
    ``body_description`` says what the body is, for a struct shared by several messages).
    ``response`` is the type of the success body (answered with ``status``, and with each of
    ``more_statuses``). Texts are markdown. ``errors`` maps an
    HTTP status to what it means here; they are answered as ``application/problem+json``.
    ``messages`` maps a direction (``client``, ``server``) to the msgspec type of the
    WebSocket messages sent that way (``x-websocket-messages`` in the document).
    """

    operation_id: str
    summary: str
    description: str = ""
    body: Any = None
    body_fields: tuple[str, ...] = ()
    body_required: tuple[str, ...] = ()
    body_description: str = ""
    status: int = 200
    #: Other success statuses answered with the same body (201 beside 200 for create-or-replace).
    more_statuses: tuple[int, ...] = ()
    response: Any = None
    response_description: str = "Success."
    response_media: str = "application/json"
    response_headers: Mapping[str, str] = field(default_factory=dict)
    params: Sequence[Mapping[str, Any]] = ()
    errors: Mapping[int, str] = field(default_factory=dict)
    public: bool = False
    messages: Mapping[str, Any] = field(default_factory=dict)


def describe(route: BaseRoute, **operations: Operation) -> BaseRoute:
    """Attach the description of each method (``get=Operation(...)``) to ``route``; returns it."""
    unknown = set(operations) - set(_METHODS)
    if unknown:
        raise ValueError(f"not HTTP methods: {sorted(unknown)}")
    setattr(route, _ATTRIBUTE, dict(operations))
    return route


_PROBLEM = {"$ref": "#/components/schemas/Problem"}


def _problem(description: str, retry: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "description": description,
        "content": {"application/problem+json": {"schema": _PROBLEM}},
    }
    if retry:
        out["headers"] = {"Retry-After": {"schema": {"type": "string"}, "description": "Seconds to wait."}}
    return out


_ERRORS: dict[str, dict[str, Any]] = {
    "400": _problem("Invalid input (key, parameter or body); nothing was written."),
    "401": _problem("Missing or invalid credentials."),
    "403": _problem("The policy denies this caller."),
    "404": _problem("No such namespace or key."),
    "409": _problem("A request with this Idempotency-Key is still running.", retry=True),
    "412": _problem("A condition (If-Match / If-None-Match / if_match / if_absent) failed."),
    "413": _problem("The value or body is too large."),
    "422": _problem("The Idempotency-Key was used for a different request."),
    "429": _problem("A rate or concurrency limit of the namespace was hit.", retry=True),
    "501": _problem("The backend does not support this operation."),
    "503": _problem("The backend or audit trail is unavailable, or the request timed out.", retry=True),
}


def _errors(*codes: int) -> dict[str, Any]:
    return {str(c): _ERRORS[str(c)] for c in codes}


def _json_response(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _json_body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _header(name: str, description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "in": "header",
        "required": False,
        "description": description,
        "schema": schema or {"type": "string"},
    }


def _query(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description, "schema": schema}


def _timeseries_path(
    ns_param: dict[str, Any], idem: dict[str, Any], write_errors: dict[str, Any], schemas: _Schemas
) -> dict[str, Any]:
    """``/v1/ts/{ns}/{series}``: the events of a series of a ``kind: timeseries`` namespace."""
    series_param = {
        "name": "series",
        "in": "path",
        "required": True,
        "description": "The series id (1-1024 UTF-8 bytes, no NUL; may contain '/').",
        "schema": {"type": "string", "minLength": 1},
    }
    time_schema = {"type": "string", "format": "date-time"}
    order = {"type": "string", "enum": ["desc", "asc"]}
    return {
        "parameters": [ns_param, series_param],
        "get": {
            "summary": "Read events of a series in a time range, one page at a time",
            "operationId": "readEvents",
            "parameters": [
                _query("start", "First time (inclusive, RFC 3339).", time_schema),
                _query("end", "Time to stop before (exclusive, RFC 3339).", time_schema),
                _query("order", "desc (newest first, the default) or asc.", order),
                _query(
                    "limit", "Most events per page.", {"type": "integer", "minimum": 1, "maximum": MAX_EVENTS}
                ),
                _query(
                    "page_size_bytes",
                    "Stop a page before its values pass this many bytes.",
                    {"type": "integer", "minimum": 1},
                ),
                _query("page_token", "The next_page_token of the previous page.", {"type": "string"}),
            ],
            "responses": {
                "200": _json_response("One page of events.", schemas.ref(WirePage)),
                **_errors(400, 401, 403, 404, 429, 503),
            },
        },
        "post": {
            "summary": "Write events to a series (each on its own; events are immutable)",
            "operationId": "writeEvents",
            "parameters": [idem],
            "requestBody": _json_body(schemas.ref(WireWrite)),
            "responses": {
                "200": _json_response("One result per event, in order.", schemas.ref(WireWriteResults)),
                **write_errors,
            },
        },
        "delete": {
            "summary": "Delete every event of a series",
            "operationId": "deleteSeries",
            "parameters": [idem],
            "responses": {"204": {"description": "The series is empty."}, **write_errors},
        },
    }


def _gateway_paths(config: GatewayConfig, schemas: _Schemas, names: Sequence[str]) -> dict[str, Any]:
    """The path items of the gateway's own routes, by path template."""
    ns_param = {
        "name": "ns",
        "in": "path",
        "required": True,
        "description": "A namespace (those listed are the ones your credentials may use).",
        "schema": {"type": "string", "enum": list(names)} if names else {"type": "string", "minLength": 1},
    }
    key_param = {
        "name": "key",
        "in": "path",
        "required": True,
        "description": "The key (1-1024 UTF-8 bytes, no NUL; may contain '/').",
        "schema": {"type": "string", "minLength": 1},
    }
    id_param = {
        "name": "id",
        "in": "path",
        "required": True,
        "description": "The record id.",
        "schema": {"type": "string", "minLength": 1},
    }
    idem = _header(
        "Idempotency-Key",
        "Makes a retried write return the first response (kept 24 h).",
        {"type": "string", "minLength": 1, "maxLength": config.idempotency.max_key_length},
    )
    if_match = _header("If-Match", "Apply only when the current etag is this one (quoted).")
    etag_header = {
        "ETag": {"schema": {"type": "string"}, "required": True, "description": "The entry's etag."}
    }
    expires = {
        "X-Prism-Expires-At": {
            "schema": {"type": "string", "format": "date-time"},
            "description": "When the entry expires (RFC 3339), if it has a ttl.",
        }
    }
    results = _json_response("One result per entry, in order.", schemas.ref(BatchResults))
    write_errors = _errors(400, 401, 403, 404, 409, 413, 422, 429, 503)
    binary = {"type": "string", "format": "binary"}
    limit = _query(
        "limit", "Most entries per page.", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_LIMIT}
    )
    token = _query("page_token", "The next_page_token of the previous page.", {"type": "string"})
    range_params = [
        _query("start", "First item key (inclusive).", {"type": "string"}),
        _query("end", "Item key to stop before (exclusive).", {"type": "string"}),
        {
            **_query("keys", "Exactly these item keys.", {"type": "array", "items": {"type": "string"}}),
            "style": "form",
            "explode": True,
        },
    ]
    paths: dict[str, Any] = {
        "/v1/kv/{ns}/{key}": {
            "parameters": [ns_param, key_param],
            "get": {
                "summary": "Read one entry",
                "operationId": "getKey",
                "parameters": [_header("If-None-Match", "Answer 304 when the etag still matches.")],
                "responses": {
                    "200": {
                        "description": "The raw value.",
                        "headers": {**etag_header, **expires},
                        "content": {"*/*": {"schema": binary}},
                    },
                    "304": {"description": "The entry still has the given etag.", "headers": etag_header},
                    **_errors(400, 401, 403, 404, 429, 503),
                },
            },
            "head": {
                "summary": "Check one entry (GET without the body)",
                "operationId": "headKey",
                "responses": {
                    "200": {"description": "The entry exists.", "headers": {**etag_header, **expires}},
                    "304": {"description": "Not modified."},
                    **{
                        c: {"description": r["description"]}
                        for c, r in _errors(400, 401, 403, 404, 429, 503).items()
                    },
                },
            },
            "put": {
                "summary": "Write one entry",
                "operationId": "putKey",
                "parameters": [
                    _query(
                        "ttl",
                        "Seconds until the entry expires.",
                        {
                            "type": "number",
                            "minimum": 0,
                            "exclusiveMinimum": True,
                            "maximum": MAX_TTL_SECONDS,
                        },
                    ),
                    if_match,
                    _header(
                        "If-None-Match", "`*`: create only, never replace.", {"type": "string", "enum": ["*"]}
                    ),
                    idem,
                ],
                "requestBody": {
                    "required": True,
                    "content": {"application/octet-stream": {"schema": binary}},
                },
                "responses": {
                    "200": {"description": "Replaced.", "headers": etag_header},
                    "201": {"description": "Created.", "headers": etag_header},
                    "412": _ERRORS["412"],
                    **write_errors,
                },
            },
            "delete": {
                "summary": "Delete one entry (204 also when it was missing)",
                "operationId": "deleteKey",
                "parameters": [if_match, idem],
                "responses": {
                    "204": {"description": "Deleted (or already absent)."},
                    "412": _ERRORS["412"],
                    **write_errors,
                },
            },
        },
        "/v1/kv/{ns}": {
            "parameters": [ns_param],
            "get": {
                "summary": "List keys",
                "operationId": "scanKeys",
                "parameters": [
                    _query("prefix", "Only keys starting with this.", {"type": "string"}),
                    limit,
                    token,
                ],
                "responses": {
                    "200": _json_response("One page of keys.", schemas.ref(KeyPage)),
                    **_errors(400, 401, 403, 404, 429, 501, 503),
                },
            },
        },
        "/v1/kv/{ns}/_watch": {
            "parameters": [ns_param],
            "get": {
                "summary": "Watch the namespace's changes (Server-Sent Events)",
                "description": (
                    "One event per change: `id:` the cursor, `event:` the op (put, delete, expire), "
                    "`data:` a ChangeEvent. Heartbeats are comment lines; `event: reconnect` ends a stream "
                    "the server closes (shutdown, watch.max_duration, watch.idle_timeout) and `event: "
                    "problem` one whose feed failed (a problem+json body). Reconnect with Last-Event-ID. "
                    "The credential may be given as ?token=."
                ),
                "operationId": "watchKeys",
                "parameters": [
                    _query("prefix", "Only changes of keys starting with this.", {"type": "string"}),
                    _query("after", "Resume after this cursor (an event's id).", {"type": "string"}),
                    _header("Last-Event-ID", "Resume after this cursor; takes precedence over `after`."),
                ],
                "responses": {
                    "200": {
                        "description": "The stream of changes.",
                        "content": {"text/event-stream": {"schema": {"type": "string"}}},
                        "x-event-data": schemas.ref(ChangeEvent),
                    },
                    "409": _problem("The namespace's store keeps no change feed (start it with feed=true)."),
                    "410": _problem("The cursor is older than the feed's retained window."),
                    "429": _problem(
                        "Too many streams open for this caller (watch.max_streams_per_principal).", retry=True
                    ),
                    **_errors(400, 401, 403, 404, 503),
                },
            },
        },
        "/v1/kv/{ns}/_bulk/get": {
            "parameters": [ns_param],
            "post": {
                "summary": "Read many entries",
                "operationId": "bulkGet",
                "requestBody": _json_body(schemas.ref(BulkGetRequest)),
                "responses": {
                    "200": _json_response(
                        "One entry per requested key, in order.", schemas.ref(BulkGetResponse)
                    ),
                    **_errors(400, 401, 403, 404, 413, 429, 503),
                },
            },
        },
        "/v1/kv/{ns}/_bulk/put": {
            "parameters": [ns_param],
            "post": {
                "summary": "Write many entries (each on its own)",
                "operationId": "bulkPut",
                "parameters": [idem],
                "requestBody": _json_body(schemas.ref(BulkPutRequest)),
                "responses": {"200": results, **write_errors},
            },
        },
        "/v1/kv/{ns}/_bulk/delete": {
            "parameters": [ns_param],
            "post": {
                "summary": "Delete many entries (each on its own)",
                "operationId": "bulkDelete",
                "parameters": [idem],
                "requestBody": _json_body(schemas.ref(BulkDeleteRequest)),
                "responses": {"200": results, **write_errors},
            },
        },
        "/v1/kv/{ns}/_transact": {
            "parameters": [ns_param],
            "post": {
                "summary": "Apply puts and deletes all together, or none",
                "operationId": "transact",
                "parameters": [idem],
                "requestBody": _json_body(schemas.ref(TransactRequest)),
                "responses": {"200": results, "412": _ERRORS["412"], "501": _ERRORS["501"], **write_errors},
            },
        },
        "/v1/records/{ns}/{id}": {
            "parameters": [ns_param, id_param],
            "get": {
                "summary": "Read items of a record",
                "operationId": "getRecord",
                "parameters": [
                    *range_params,
                    limit,
                    _query(
                        "page_size_bytes",
                        "Stop a page before its values pass this many bytes.",
                        {"type": "integer", "minimum": 1},
                    ),
                    token,
                ],
                "responses": {
                    "200": _json_response("One page of items.", schemas.ref(ItemPage)),
                    **_errors(400, 401, 403, 404, 429, 501, 503),
                },
            },
            "put": {
                "summary": "Write items of a record (each on its own)",
                "operationId": "putRecord",
                "parameters": [idem],
                "requestBody": _json_body(schemas.ref(RecordPutRequest)),
                "responses": {"200": results, **write_errors},
            },
            "delete": {
                "summary": "Delete items of a record (a range, keys, or all)",
                "operationId": "deleteRecord",
                "parameters": [*range_params, idem],
                "responses": {
                    "200": _json_response("How many live items were deleted.", schemas.ref(DeletedCount)),
                    **write_errors,
                },
            },
        },
        "/v1/ts/{ns}/{series}": _timeseries_path(ns_param, idem, write_errors, schemas),
        "/v1/namespaces": {
            "get": {
                "summary": "Namespaces the caller may see",
                "operationId": "listNamespaces",
                "responses": {
                    "200": _json_response("The visible namespaces.", schemas.ref(NamespaceList)),
                    **_errors(401),
                },
            },
        },
        "/v1/namespaces/{ns}": {
            "parameters": [ns_param],
            "get": {
                "summary": "A namespace's settings, capabilities and health",
                "operationId": "getNamespace",
                "responses": {
                    "200": _json_response("The namespace (no secrets).", schemas.ref(NamespaceDetail)),
                    **_errors(401, 403, 404),
                },
            },
        },
        "/v1/namespaces/{ns}/signals": {
            "parameters": [ns_param],
            "get": {
                "summary": "What a client of the namespace should set its deadlines, hedging and retries to",
                "description": (
                    "Derived from the namespace's declared needs and its store's measured latency; "
                    "ask again after `refresh_after_s`. Readable by anyone who may read the namespace."
                ),
                "operationId": "getSignals",
                "responses": {
                    "200": _json_response("The namespace's signals.", schemas.ref(Signals)),
                    **_errors(401, 403, 404),
                },
            },
        },
    }
    ops_paths = {
        "/healthz": ("Process is alive", "healthz", {"200": _json_response("Alive.", {"type": "object"})}),
        "/readyz": (
            "Every store is healthy",
            "readyz",
            {
                "200": _json_response("Ready.", {"type": "object"}),
                "503": {
                    **_json_response("Not ready; details per store.", {"type": "object"}),
                    "headers": {"Retry-After": {"schema": {"type": "string"}}},
                },
            },
        ),
        "/metrics": (
            "Prometheus metrics",
            "metrics",
            {
                "200": {
                    "description": "Text exposition format.",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                },
            },
        ),
        "/openapi.json": (
            "This document",
            "openapi",
            {"200": _json_response("OpenAPI 3.0.", {"type": "object"})},
        ),
        "/docs": (
            "Human-readable API docs",
            "docs",
            {
                "200": {"description": "HTML.", "content": {"text/html": {"schema": {"type": "string"}}}},
            },
        ),
    }
    for path, (summary, op_id, responses) in ops_paths.items():
        paths[path] = {
            "get": {"summary": summary, "operationId": op_id, "security": [], "responses": responses}
        }
    return paths


# -- schemas from msgspec types ---------------------------------------------------------

_REF = "#/components/schemas/{name}"


def _openapi30(schema: Any) -> Any:
    """A msgspec (JSON Schema 2020-12) schema as an OpenAPI 3.0 schema."""
    if isinstance(schema, list):
        return [_openapi30(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _openapi30(v) for k, v in schema.items()}
    any_of = out.get("anyOf")
    if isinstance(any_of, list) and {"type": "null"} in any_of:
        rest = [s for s in any_of if s != {"type": "null"}]
        del out["anyOf"]
        if len(rest) == 1 and "$ref" in rest[0]:
            out["allOf"] = rest
        elif len(rest) == 1:
            out = {**rest[0], **out}
        else:
            out["anyOf"] = rest
        out["nullable"] = True
    for bound, plain in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        value = out.get(bound)
        if isinstance(value, int | float) and not isinstance(value, bool):
            out[plain] = value
            out[bound] = True
    if out.get("contentEncoding") == "base64":
        del out["contentEncoding"]
        out["format"] = "byte"
    if "const" in out:
        out["enum"] = [out.pop("const")]
    enum = out.get("enum")
    if isinstance(enum, list) and "type" not in out and all(isinstance(v, str) for v in enum):
        out["type"] = "string"
    return out


class _Schemas:
    """The msgspec types a document refers to; their schemas are generated all at once."""

    def __init__(self) -> None:
        self._types: list[Any] = []
        self._uses: list[tuple[Any, dict[str, Any], tuple[str, ...], tuple[str, ...], str]] = []

    def ref(
        self,
        type_: Any,
        fields: tuple[str, ...] = (),
        required: tuple[str, ...] = (),
        description: str = "",
    ) -> dict[str, Any]:
        """A schema for ``type_``, filled in by :meth:`components` (only ``fields`` if given)."""
        if type_ not in self._types:
            self._types.append(type_)
        slot: dict[str, Any] = {}
        self._uses.append((type_, slot, fields, required, description))
        return slot

    def components(self) -> dict[str, Any]:
        """Fill every schema handed out by :meth:`ref`; the named schemas they refer to."""
        if not self._types:
            return {}
        roots, named = msgspec.json.schema_components(self._types, ref_template=_REF)
        components = {name: _openapi30(schema) for name, schema in named.items()}
        for type_, slot, fields, required, description in self._uses:
            schema = _openapi30(roots[self._types.index(type_)])
            if fields or required:
                name = schema["$ref"].rsplit("/", 1)[-1] if "$ref" in schema else None
                whole = components[name] if name is not None else schema
                props = whole.get("properties", {})
                keep = fields or tuple(props)
                needed = [k for k in keep if k in required or k in whole.get("required", [])]
                schema = {
                    **{k: v for k, v in whole.items() if k not in ("properties", "required", "title")},
                    "properties": {
                        k: {n: v for n, v in props[k].items() if n not in ("nullable", "default")}
                        if k in required
                        else props[k]
                        for k in keep
                    },
                    "required": needed,
                    "additionalProperties": False,
                }
            if description:
                schema["description"] = description
            slot.update(schema)
        return components


# -- the document -----------------------------------------------------------------------


def _template(route: BaseRoute | DataRoute) -> str:
    path: str = getattr(route, "path", "")
    return re.sub(r"\{(\w+):\w+\}", r"{\1}", path)


def _methods(route: BaseRoute | DataRoute) -> list[str]:
    if isinstance(route, WebSocketRoute):
        return ["get"]
    if isinstance(route, DataRoute):
        return ["get", "head"] if route.method == "GET" else [route.method.lower()]
    methods = getattr(route, "methods", None) or {"GET"}
    return [m for m in _METHODS if m.upper() in methods]


def _path_params(path: str, declared: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    names = {p["name"] for p in declared if p.get("in") == "path"}
    return [
        {"name": n, "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
        for n in re.findall(r"\{(\w+)\}", path)
        if n not in names
    ]


def _render(op: Operation, path: str, schemas: _Schemas) -> dict[str, Any]:
    out: dict[str, Any] = {"summary": op.summary, "operationId": op.operation_id}
    if op.description:
        out["description"] = op.description
    params = [dict(p) for p in op.params]
    params += _path_params(path, params)
    if params:
        out["parameters"] = params
    if op.body is not None:
        body = schemas.ref(op.body, op.body_fields, op.body_required, op.body_description)
        out["requestBody"] = _json_body(body)
    success: dict[str, Any] = {"description": op.response_description}
    if op.response is not None:
        success["content"] = {op.response_media: {"schema": schemas.ref(op.response)}}
    elif op.response_media != "application/json":
        success["content"] = {op.response_media: {"schema": {"type": "string"}}}
    if op.response_headers:
        success["headers"] = {
            name: {"schema": {"type": "string"}, "description": text}
            for name, text in op.response_headers.items()
        }
    out["responses"] = {
        str(op.status): success,
        **{str(status): success for status in op.more_statuses},
        **{str(code): _problem(text, retry=code in (429, 503)) for code, text in sorted(op.errors.items())},
    }
    if op.public:
        out["security"] = []
    if op.messages:
        out["x-websocket-messages"] = {way: schemas.ref(type_) for way, type_ in op.messages.items()}
    return out


def _undocumented(route: BaseRoute | DataRoute, path: str) -> dict[str, Any]:
    endpoint = getattr(route, "endpoint", None) or getattr(route, "handler", None)
    summary = (getattr(endpoint, "__doc__", None) or "").strip().split("\n", 1)[0]
    return {
        "summary": summary or f"{path} (not described)",
        "parameters": _path_params(path, []),
        "responses": {"default": {"description": "Not described."}},
    }


def openapi_document(
    config: GatewayConfig,
    routes: Iterable[BaseRoute | DataRoute] = (),
    namespaces: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The OpenAPI 3.0.3 document of an app serving ``config`` with ``routes``.

    Without ``routes``, the gateway's own routes are described. ``namespaces`` are the
    names the ``ns`` parameter lists (default: every configured namespace).
    """
    schemas = _Schemas()
    schemas.ref(Problem)  # every error answer refers to it
    names = [ns.name for ns in config.namespaces] if namespaces is None else namespaces
    table = _gateway_paths(config, schemas, names)
    paths: dict[str, Any] = {}
    routes = list(routes)
    if not routes:
        paths = table
    for route in routes:
        if not isinstance(route, Route | WebSocketRoute | DataRoute):
            continue
        path = _template(route)
        item = paths.setdefault(path, {})
        operations: dict[str, Operation] | None = getattr(route, _ATTRIBUTE, None)
        if operations is not None:
            for method, op in operations.items():
                item[method] = _render(op, path, schemas)
            continue
        known = table.get(path)
        for method in _methods(route):
            if known is not None and method in known:
                item[method] = known[method]
                if "parameters" in known:
                    item["parameters"] = known["parameters"]
            elif method != "head":
                item[method] = _undocumented(route, path)
    doc: dict[str, Any] = {
        "openapi": "3.0.3",
        "info": {
            "title": "Prism gateway",
            "version": "1",
            "description": (
                "The KeyValue model over HTTP, and streaming requests. Errors are "
                "`application/problem+json` with a stable `code`."
            ),
        },
        "paths": paths,
        "components": {
            "schemas": schemas.components(),
            "securitySchemes": {
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                "bearer": {"type": "http", "scheme": "bearer", "description": "An API key or a JWT."},
            },
        },
    }
    if config.auth.enabled:
        doc["security"] = [{"apiKey": []}, {"bearer": []}]
    return doc


class ApiDescription:
    """``/openapi.json`` and ``/docs`` of one app, built from its routes on first request.

    One document is kept per set of visible namespaces; there are at most as many sets
    as distinct roles-and-tenant combinations among the configured credentials.
    """

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self._pages: dict[tuple[str, ...], tuple[bytes, str]] = {}

    def pages(self, routes: Iterable[BaseRoute | DataRoute], namespaces: Sequence[str]) -> tuple[bytes, str]:
        """The JSON document and the HTML page listing ``namespaces``."""
        names = tuple(namespaces)
        pages = self._pages.get(names)
        if pages is None:
            doc = openapi_document(self.config, routes, names)
            pages = self._pages[names] = (msgspec.json.encode(doc), docs_html(doc))
        return pages
