"""``/docs``: the OpenAPI document as one self-contained HTML page.

Plain HTML with inline CSS: no scripts, no CDN, readable offline. Descriptions are
markdown (inline code, bold, links) and are rendered, and every JSON request body is
shown as tables of its fields (type, whether required, rules, meaning), following
the objects its fields hold.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping
from typing import Any

import msgspec

__all__ = ["docs_html"]

_METHODS = ("get", "head", "put", "post", "delete", "patch")


def _markdown(text: str) -> str:
    """Inline markdown (and reST double backticks) as HTML: code, bold, links."""
    out = html.escape(text, quote=False)
    out = re.sub(r"``(.+?)``", r"<code>\1</code>", out)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    out = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", out)
    return re.sub(
        r"\[([^\]]+)\]\(([^)\s]+)\)",
        lambda m: f'<a href="{html.escape(m.group(2))}">{m.group(1)}</a>',
        out,
    )


def _paragraphs(text: str) -> str:
    return "".join(f"<p>{_markdown(chunk.strip())}</p>" for chunk in text.split("\n\n") if chunk.strip())


def _resolve(doc: dict[str, Any], schema: Mapping[str, Any]) -> tuple[str | None, Mapping[str, Any]]:
    ref = schema.get("$ref") or next((s.get("$ref") for s in schema.get("allOf", []) if "$ref" in s), None)
    if ref is None:
        return None, schema
    name = ref.rsplit("/", 1)[-1]
    return name, doc["components"]["schemas"].get(name, {})


def _type_label(doc: dict[str, Any], schema: Mapping[str, Any]) -> str:
    name, _ = _resolve(doc, schema)
    if name is not None:
        label = name
    elif "enum" in schema:
        label = " | ".join(f"`{v}`" for v in schema["enum"])
    elif schema.get("type") == "array":
        label = f"array of {_type_label(doc, schema.get('items', {}))}"
    elif schema.get("format") == "byte":
        label = "string (base64)"
    elif "type" in schema:
        label = str(schema["type"])
    elif "anyOf" in schema:
        label = " or ".join(_type_label(doc, s) for s in schema["anyOf"])
    else:
        label = "any JSON"
    return f"{label} or null" if schema.get("nullable") else label


def _rules(schema: Mapping[str, Any]) -> str:
    rules = []
    for key, text in (
        ("minimum", "≥"),
        ("maximum", "≤"),
        ("minLength", "length ≥"),
        ("maxLength", "length ≤"),
        ("maxItems", "items ≤"),
    ):
        if key in schema:
            exclusive = schema.get(f"exclusive{key[0].upper()}{key[1:]}") is True
            rules.append(f"{text.replace('≥', '>').replace('≤', '<') if exclusive else text} {schema[key]}")
    if "default" in schema and schema["default"] is not None:
        rules.append(f"default `{msgspec.json.encode(schema['default']).decode()}`")
    return ", ".join(rules)


def _body_tables(doc: dict[str, Any], schema: Mapping[str, Any], seen: set[str]) -> list[str]:
    """Tables of the fields of a body schema and of the objects its fields hold."""
    if "anyOf" in schema and "$ref" not in schema:
        return [part for member in schema["anyOf"] for part in _body_tables(doc, member, seen)]
    name, target = _resolve(doc, schema)
    if name is not None:
        if name in seen:
            return []
        seen.add(name)
    props: Mapping[str, Any] = target.get("properties", {})
    if not props:
        return []
    required = set(target.get("required", []))
    title = f"<p><code>{html.escape(name)}</code>: " if name else "<p>"
    parts = [title + _markdown(target.get("description", "A JSON object.")) + "</p>"]
    parts.append("<table><tr><th>field</th><th>type</th><th>required</th><th>rules and meaning</th></tr>")
    nested: list[Mapping[str, Any]] = []
    for field_name, field_schema in props.items():
        note = " ".join(s for s in (_rules(field_schema), field_schema.get("description", "")) if s)
        parts.append(
            f"<tr><td><code>{html.escape(field_name)}</code></td>"
            f"<td>{_markdown(_type_label(doc, field_schema))}</td>"
            f"<td>{'yes' if field_name in required else 'no'}</td><td>{_markdown(note)}</td></tr>"
        )
        nested.append(field_schema.get("items", field_schema))
    parts.append("</table>")
    for inner in nested:
        parts.extend(_body_tables(doc, inner, seen))
    return parts


def docs_html(doc: dict[str, Any]) -> str:
    """A standalone HTML page listing every operation, its parameters, body fields and responses."""
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
        f"<h1>{esc(doc['info']['title'])}</h1>{_paragraphs(doc['info']['description'])}",
        '<p>Machine-readable: <a href="/openapi.json">/openapi.json</a>. Authenticate with '
        "<code>X-API-Key: &lt;key&gt;</code> or <code>Authorization: Bearer &lt;key or JWT&gt;</code>.</p>",
    ]
    for path, item in doc["paths"].items():
        shared = item.get("parameters", [])
        for method in _METHODS:
            op = item.get(method)
            if op is None:
                continue
            parts.append(
                f"<h2><span class='m {method}'>{method.upper()}</span> <code>{esc(path)}</code></h2>"
                f"<p>{_markdown(op.get('summary', ''))}</p>{_paragraphs(op.get('description', ''))}"
            )
            params = [*shared, *op.get("parameters", [])]
            if params:
                parts.append("<table><tr><th>parameter</th><th>in</th><th>description</th></tr>")
                parts.extend(
                    f"<tr><td><code>{esc(p['name'])}</code></td><td>{esc(p['in'])}</td>"
                    f"<td>{_markdown(p.get('description', ''))}</td></tr>"
                    for p in params
                )
                parts.append("</table>")
            if "requestBody" in op:
                content = op["requestBody"]["content"]
                parts.append(f"<p>Body: {', '.join(f'<code>{esc(t)}</code>' for t in content)}</p>")
                for media in content.values():
                    parts.extend(_body_tables(doc, media.get("schema", {}), set()))
            for way, schema in op.get("x-websocket-messages", {}).items():
                parts.append(f"<p>WebSocket messages from the {esc(way)}:</p>")
                parts.extend(_body_tables(doc, schema, set()))
            parts.append("<table><tr><th>status</th><th>meaning</th></tr>")
            for status, response in op["responses"].items():
                parts.append(
                    f"<tr><td>{esc(status)}</td><td>{_markdown(response.get('description', ''))}</td></tr>"
                )
            parts.append("</table>")
    parts.append("</body></html>")
    return "".join(parts)
