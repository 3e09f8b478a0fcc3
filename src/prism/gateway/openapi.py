"""The OpenAPI 3.0 description of the gateway, and a self-contained HTML page rendering it.

The document is built from the config (the ``ns`` parameter lists the served
namespaces), so it is exact for this deployment. ``/docs`` is plain HTML with inline
CSS: no scripts, no CDN, readable offline.
"""

from __future__ import annotations

import html
from typing import Any

from prism.gateway.config import GatewayConfig
from prism.gateway.wire import MAX_TTL_SECONDS
from prism.kv.namespace import MAX_BATCH, MAX_PAGE_LIMIT

__all__ = ["docs_html", "openapi_document"]

_PROBLEM = {"$ref": "#/components/schemas/Problem"}
_NULLABLE_STR = {"type": "string", "nullable": True}


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


def _page_response(description: str, field: str, entry: dict[str, Any]) -> dict[str, Any]:
    """A page of ``field`` entries and the token of the next page."""
    return _json_response(
        description,
        {
            "type": "object",
            "required": [field, "next_page_token"],
            "properties": {field: {"type": "array", "items": entry}, "next_page_token": _NULLABLE_STR},
        },
    )


def _batch_body(field: str, schema: str) -> dict[str, Any]:
    """A JSON body holding one array ``field`` of up to MAX_BATCH ``schema`` objects."""
    return _json_body(
        {
            "type": "object",
            "required": [field],
            "additionalProperties": False,
            "properties": {
                field: {
                    "type": "array",
                    "maxItems": MAX_BATCH,
                    "items": {"$ref": f"#/components/schemas/{schema}"},
                }
            },
        }
    )


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


def _schemas() -> dict[str, Any]:
    base64 = {"type": "string", "format": "byte", "description": "The value, base64-encoded."}
    etag = {"type": "string"}
    time = {"type": "string", "format": "date-time", "nullable": True}
    error = {
        "type": "object",
        "required": ["code", "detail"],
        "properties": {"code": {"type": "string"}, "detail": {"type": "string"}},
    }
    return {
        "Problem": {
            "type": "object",
            "required": ["type", "title", "status", "detail", "code"],
            "properties": {
                "type": {"type": "string"},
                "title": {"type": "string"},
                "status": {"type": "integer"},
                "detail": {"type": "string"},
                "code": {"type": "string"},
                "request_id": {"type": "string"},
            },
        },
        "Item": {
            "type": "object",
            "required": ["key", "value", "etag", "content_type", "expires_at"],
            "properties": {
                "key": {"type": "string"},
                "value": base64,
                "etag": etag,
                "content_type": _NULLABLE_STR,
                "expires_at": time,
            },
        },
        "BulkGetItem": {
            "type": "object",
            "required": ["key", "found"],
            "properties": {
                "key": {"type": "string"},
                "found": {"type": "boolean"},
                "value": base64,
                "etag": etag,
                "content_type": _NULLABLE_STR,
                "expires_at": time,
            },
        },
        "PutItem": {
            "type": "object",
            "required": ["key", "value"],
            "additionalProperties": False,
            "properties": {
                "key": {"type": "string"},
                "value": base64,
                "ttl": {
                    "type": "number",
                    "exclusiveMinimum": True,
                    "minimum": 0,
                    "maximum": MAX_TTL_SECONDS,
                    "nullable": True,
                },
                "if_match": _NULLABLE_STR,
                "if_absent": {"type": "boolean"},
                "content_type": _NULLABLE_STR,
            },
        },
        "DeleteItem": {
            "type": "object",
            "required": ["key"],
            "additionalProperties": False,
            "properties": {"key": {"type": "string"}, "if_match": _NULLABLE_STR},
        },
        "TransactOp": {
            "type": "object",
            "required": ["op", "key"],
            "additionalProperties": False,
            "properties": {
                "op": {"type": "string", "enum": ["put", "delete"]},
                "key": {"type": "string"},
                "value": {**base64, "nullable": True},
                "ttl": {
                    "type": "number",
                    "exclusiveMinimum": True,
                    "minimum": 0,
                    "maximum": MAX_TTL_SECONDS,
                    "nullable": True,
                },
                "if_match": _NULLABLE_STR,
                "if_absent": {"type": "boolean"},
                "content_type": _NULLABLE_STR,
            },
        },
        "WriteResult": {
            "type": "object",
            "required": ["key", "ok"],
            "properties": {
                "key": {"type": "string"},
                "ok": {"type": "boolean"},
                "etag": etag,
                "error": error,
            },
        },
        "Results": {
            "type": "object",
            "required": ["results"],
            "properties": {
                "results": {"type": "array", "items": {"$ref": "#/components/schemas/WriteResult"}}
            },
        },
        "NamespaceSummary": {
            "type": "object",
            "required": ["name", "tenant_scoped", "actions"],
            "properties": {
                "name": {"type": "string"},
                "tenant_scoped": {"type": "boolean"},
                "actions": {"type": "array", "items": {"type": "string", "enum": ["read", "write", "admin"]}},
            },
        },
    }


def openapi_document(config: GatewayConfig) -> dict[str, Any]:
    """The OpenAPI 3.0.3 document for the gateway serving ``config``."""
    names = [ns.name for ns in config.namespaces]
    ns_param = {
        "name": "ns",
        "in": "path",
        "required": True,
        "description": "A configured namespace.",
        "schema": {"type": "string", "enum": names},
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
    results = _json_response("One result per entry, in order.", {"$ref": "#/components/schemas/Results"})
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
                    "200": _page_response("One page of keys.", "keys", {"type": "string"}),
                    **_errors(400, 401, 403, 404, 429, 501, 503),
                },
            },
        },
        "/v1/kv/{ns}/_bulk/get": {
            "parameters": [ns_param],
            "post": {
                "summary": "Read many entries",
                "operationId": "bulkGet",
                "requestBody": _json_body(
                    {
                        "type": "object",
                        "required": ["keys"],
                        "additionalProperties": False,
                        "properties": {
                            "keys": {"type": "array", "maxItems": MAX_BATCH, "items": {"type": "string"}}
                        },
                    }
                ),
                "responses": {
                    "200": _json_response(
                        "One entry per requested key, in order.",
                        {
                            "type": "object",
                            "required": ["items"],
                            "properties": {
                                "items": {
                                    "type": "array",
                                    "items": {"$ref": "#/components/schemas/BulkGetItem"},
                                }
                            },
                        },
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
                "requestBody": _batch_body("items", "PutItem"),
                "responses": {"200": results, **write_errors},
            },
        },
        "/v1/kv/{ns}/_bulk/delete": {
            "parameters": [ns_param],
            "post": {
                "summary": "Delete many entries (each on its own)",
                "operationId": "bulkDelete",
                "parameters": [idem],
                "requestBody": _batch_body("items", "DeleteItem"),
                "responses": {"200": results, **write_errors},
            },
        },
        "/v1/kv/{ns}/_transact": {
            "parameters": [ns_param],
            "post": {
                "summary": "Apply puts and deletes all together, or none",
                "operationId": "transact",
                "parameters": [idem],
                "requestBody": _batch_body("ops", "TransactOp"),
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
                    "200": _page_response(
                        "One page of items.", "items", {"$ref": "#/components/schemas/Item"}
                    ),
                    **_errors(400, 401, 403, 404, 429, 501, 503),
                },
            },
            "put": {
                "summary": "Write items of a record (each on its own)",
                "operationId": "putRecord",
                "parameters": [idem],
                "requestBody": _batch_body("items", "PutItem"),
                "responses": {"200": results, **write_errors},
            },
            "delete": {
                "summary": "Delete items of a record (a range, keys, or all)",
                "operationId": "deleteRecord",
                "parameters": [*range_params, idem],
                "responses": {
                    "200": _json_response(
                        "How many live items were deleted.",
                        {
                            "type": "object",
                            "required": ["deleted"],
                            "properties": {"deleted": {"type": "integer", "minimum": 0}},
                        },
                    ),
                    **write_errors,
                },
            },
        },
        "/v1/namespaces": {
            "get": {
                "summary": "Namespaces the caller may see",
                "operationId": "listNamespaces",
                "responses": {
                    "200": _json_response(
                        "The visible namespaces.",
                        {
                            "type": "object",
                            "required": ["namespaces"],
                            "properties": {
                                "namespaces": {
                                    "type": "array",
                                    "items": {"$ref": "#/components/schemas/NamespaceSummary"},
                                }
                            },
                        },
                    ),
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
                    "200": _json_response(
                        "The namespace (no secrets).",
                        {
                            "type": "object",
                            "required": [
                                "name",
                                "store",
                                "backend",
                                "tenant_scoped",
                                "capabilities",
                                "health",
                            ],
                            "properties": {
                                "name": {"type": "string"},
                                "store": {"type": "string"},
                                "backend": {"type": "string"},
                                "tenant_scoped": {"type": "boolean"},
                                "capabilities": {"type": "object"},
                                "health": {"type": "object"},
                            },
                        },
                    ),
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
    doc: dict[str, Any] = {
        "openapi": "3.0.3",
        "info": {
            "title": "Prism gateway",
            "version": "1",
            "description": (
                "The KeyValue model over HTTP. Errors are application/problem+json with a stable `code`."
            ),
        },
        "paths": paths,
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                "bearer": {"type": "http", "scheme": "bearer", "description": "An API key or a JWT."},
            },
        },
    }
    if config.auth.enabled:
        doc["security"] = [{"apiKey": []}, {"bearer": []}]
    return doc


def docs_html(doc: dict[str, Any]) -> str:
    """A standalone HTML page listing every operation, its parameters and its responses."""
    esc = html.escape
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        f"<title>{esc(doc['info']['title'])} API</title>",
        "<style>body{font:15px/1.5 system-ui,sans-serif;max-width:960px;margin:2em auto;padding:0 1em;"
        "color:#222}h2{margin-top:2em;border-bottom:1px solid #ddd}"
        "code{background:#f4f4f4;padding:0 .3em;border-radius:3px}"
        ".m{display:inline-block;min-width:4.5em;font-weight:bold;font-family:monospace}"
        ".get{color:#0a6}.put{color:#a60}.post{color:#06a}.delete{color:#a00}.head{color:#666}"
        "table{border-collapse:collapse;margin:.3em 0 1em}td,th{border:1px solid #ddd;padding:.2em .6em;"
        "text-align:left;vertical-align:top}</style></head><body>",
        f"<h1>{esc(doc['info']['title'])}</h1><p>{esc(doc['info']['description'])}</p>",
        '<p>Machine-readable: <a href="/openapi.json">/openapi.json</a>. Authenticate with '
        "<code>X-API-Key: &lt;key&gt;</code> or <code>Authorization: Bearer &lt;key or JWT&gt;</code>.</p>",
    ]
    for path, item in doc["paths"].items():
        shared = item.get("parameters", [])
        for method in ("get", "head", "put", "post", "delete"):
            op = item.get(method)
            if op is None:
                continue
            parts.append(
                f"<h2><span class='m {method}'>{method.upper()}</span> <code>{esc(path)}</code></h2>"
                f"<p>{esc(op.get('summary', ''))}</p>"
            )
            params = [*shared, *op.get("parameters", [])]
            if params:
                parts.append("<table><tr><th>parameter</th><th>in</th><th>description</th></tr>")
                parts.extend(
                    f"<tr><td><code>{esc(p['name'])}</code></td><td>{esc(p['in'])}</td>"
                    f"<td>{esc(p.get('description', ''))}</td></tr>"
                    for p in params
                )
                parts.append("</table>")
            if "requestBody" in op:
                types = ", ".join(op["requestBody"]["content"])
                parts.append(f"<p>Body: <code>{esc(types)}</code></p>")
            parts.append("<table><tr><th>status</th><th>meaning</th></tr>")
            for status, response in op["responses"].items():
                parts.append(
                    f"<tr><td>{esc(status)}</td><td>{esc(response.get('description', ''))}</td></tr>"
                )
            parts.append("</table>")
    parts.append("</body></html>")
    return "".join(parts)
