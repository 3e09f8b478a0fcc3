"""``prism namespace``: create, plan, read, list and delete runtime namespaces of a running gateway.

    prism namespace create carts --need read_rps=200 --need write_rps=50 --need durability=disk
    prism namespace plan carts --file carts.json     # the planner's decision, nothing applied
    prism namespace create profiles --from-proto profiles.proto --message UserProfile
    prism namespace get carts
    prism namespace list
    prism namespace delete carts [--purge]

The gateway is ``--url`` (or ``PRISM_URL``, default http://127.0.0.1:8080) and the
credential ``--token`` (or ``PRISM_TOKEN``), which must hold a role of
``auth.namespace_admin_roles`` to create, change or delete. ``--file`` reads the body
of ``PUT /v1/namespaces/{ns}`` (docs/control-plane.md); the other options override
its fields. ``--from-proto FILE --message NAME`` reads the body from the options of a
message type (docs/control-plane.md, "Needs in protobuf"); what the file declares but
the gateway does not apply yet is printed as a warning. A refusal prints the gateway's
reason (for a namespace no store can carry, every store's failed needs) and exits 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import httpx

__all__ = ["add_parser"]

DEFAULT_URL = "http://127.0.0.1:8080"
#: Seconds one HTTP call may take (a delete waits for every process to stop serving the namespace).
HTTP_TIMEOUT = 60.0
EXIT_FAILED = 1


def add_parser(subparsers: Any) -> None:
    """Register ``prism namespace``."""
    parser = subparsers.add_parser(
        "namespace",
        help="create, plan, read, list and delete runtime namespaces",
        description="Manage the runtime namespaces of a running gateway (see docs/control-plane.md).",
    )
    parser.add_argument("--url", default=os.environ.get("PRISM_URL", DEFAULT_URL), help="the gateway")
    parser.add_argument("--token", default=os.environ.get("PRISM_TOKEN"), help="API key or bearer token")
    parser.add_argument("--json", action="store_true", help="print the gateway's answer as JSON")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for verb, text in (
        ("create", "create or change a namespace, placed by the planner"),
        ("plan", "show where the planner would place a namespace, without applying it"),
    ):
        cmd = verbs.add_parser(verb, help=text, description=text)
        cmd.add_argument("namespace")
        cmd.add_argument("--file", help="a JSON file with the namespace's body")
        cmd.add_argument(
            "--from-proto", metavar="FILE.proto", help="read needs and PII fields from a message's options"
        )
        cmd.add_argument("--message", help="the message type of --from-proto (UserProfile, acme.UserProfile)")
        cmd.add_argument(
            "--proto-include",
            action="append",
            default=[],
            metavar="DIR",
            help="a folder --from-proto's imports are searched in (repeatable)",
        )
        cmd.add_argument(
            "--need",
            action="append",
            default=[],
            metavar="NAME=VALUE",
            help="a declared need, e.g. read_rps=100, consistency=strong, transactions=true (repeatable)",
        )
        cmd.add_argument("--store", help="place it on this store (needs the store admin role)")
        cmd.add_argument(
            "--backend",
            metavar="ENGINE",
            help="place it on a store of this engine: postgres, redis, sqlite, nats, dynamodb or memory",
        )
        cmd.add_argument(
            "--tenant-scoped", action="store_true", default=None, help="keys private to a tenant"
        )
        cmd.add_argument("--max-value-bytes", type=int, help="largest value accepted")
        cmd.add_argument("--default-ttl", type=float, help="seconds a value lives when written without ttl")
        cmd.set_defaults(func=_put, dry_run=verb == "plan")
    get = verbs.add_parser("get", help="show a namespace's settings, limits and health")
    get.add_argument("namespace")
    get.set_defaults(func=_get)
    ls = verbs.add_parser("list", help="list the namespaces the caller may see")
    ls.set_defaults(func=_list)
    delete = verbs.add_parser("delete", help="delete a runtime namespace (refused while it holds data)")
    delete.add_argument("namespace")
    delete.add_argument("--purge", action="store_true", help="delete its data too")
    delete.set_defaults(func=_delete)


def _client(args: argparse.Namespace) -> httpx.Client:
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
    return httpx.Client(base_url=args.url.rstrip("/"), headers=headers, timeout=HTTP_TIMEOUT)


def _path(namespace: str | None = None) -> str:
    if namespace is None:
        return "/v1/namespaces"
    return httpx.URL(f"/v1/namespaces/{namespace}").raw_path.decode()


def _value(text: str) -> Any:
    """A need's value: a JSON number, boolean or null when it reads as one, else the text."""
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if isinstance(value, int | float | bool) or value is None else text


def body_from(args: argparse.Namespace) -> dict[str, Any]:
    """The ``PUT /v1/namespaces/{ns}`` body: ``--file``, then the options over it."""
    body: dict[str, Any] = {}
    if args.file is not None:
        try:
            loaded = json.loads(Path(args.file).read_text(encoding="utf-8"))
        except OSError as exc:
            raise SystemExit(f"prism: error: cannot read {args.file}: {exc.strerror}") from None
        except ValueError as exc:
            raise SystemExit(f"prism: error: {args.file} is not JSON: {exc}") from None
        if not isinstance(loaded, dict):
            raise SystemExit(f"prism: error: {args.file} must hold a JSON object")
        body.update(loaded)
    if args.from_proto is not None:
        _merge(body, _proto_body(args))
    elif args.message is not None or args.proto_include:
        raise SystemExit("prism: error: --message and --proto-include go with --from-proto FILE.proto")
    needs = dict(body.get("needs") or {})
    for given in args.need:
        name, sep, text = given.partition("=")
        if not sep or not name:
            raise SystemExit(f"prism: error: --need takes NAME=VALUE (like read_rps=100), not {given!r}")
        needs[name.strip()] = _value(text.strip())
    if needs:
        body["needs"] = needs
    for option in ("store", "backend", "tenant_scoped", "max_value_bytes", "default_ttl"):
        value = getattr(args, option)
        if value is not None:
            body[option] = value
    return body


def _merge(body: dict[str, Any], over: dict[str, Any]) -> None:
    """``over`` on ``body``: its needs join the body's needs, its other fields replace the body's."""
    for key, value in over.items():
        if key == "needs" and isinstance(body.get("needs"), dict):
            body["needs"] = {**body["needs"], **value}
        else:
            body[key] = value


def _proto_body(args: argparse.Namespace) -> dict[str, Any]:
    """The body the options of ``--message`` in ``--from-proto`` declare; warnings go to stderr."""
    from prism.control.protospec import namespace_from_proto
    from prism.errors import InvalidArgument

    if not args.message:
        raise SystemExit("prism: error: --from-proto needs --message NAME (the message type to read)")
    try:
        spec = namespace_from_proto(args.from_proto, args.message, include=args.proto_include)
    except InvalidArgument as exc:
        raise SystemExit(f"prism: error: --from-proto: {exc}") from None
    for warning in spec.warnings:
        print(f"prism: warning: {warning}", file=sys.stderr)
    return spec.body


def _refusal(response: httpx.Response) -> int:
    try:
        problem = response.json()
    except ValueError:
        print(f"prism: error: HTTP {response.status_code}: {response.text.strip()}", file=sys.stderr)
        return EXIT_FAILED
    print(
        f"prism: error: {problem.get('code', response.status_code)}: {problem.get('detail')}", file=sys.stderr
    )
    for store in problem.get("stores", []):
        print(f"  {store['store']}: {_fails(store['fails'])}", file=sys.stderr)
    return EXIT_FAILED


def _sides(limits: dict[str, Any]) -> str:
    """``reads 600/s (burst 600), writes 120/s (burst 120)``; a side without a rate is unlimited."""
    sides = []
    for side in ("read", "write"):
        rate = limits.get(f"{side}_rate")
        shown = "unlimited" if rate is None else f"{_show(rate)}/s (burst {limits[f'{side}_burst']})"
        sides.append(f"{side}s {shown}")
    return ", ".join(sides)


def _fails(fails: list[dict[str, Any]]) -> str:
    def has(value: Any) -> str:
        return "undeclared" if value is None else _show(value)

    return "; ".join(f"{f['need']} wanted {_show(f['wanted'])}, has {has(f['has'])}" for f in fails)


def _show(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return json.dumps(value) if isinstance(value, bool) else str(value)


def _put(args: argparse.Namespace) -> int:
    body = body_from(args)
    params = {"dry_run": "true"} if args.dry_run else {}
    with _client(args) as http:
        response = http.put(_path(args.namespace), json=body, params=params)
    if response.status_code >= 400:
        return _refusal(response)
    answer = response.json()
    if args.json:
        print(json.dumps(answer, indent=2))
        return 0
    verb = "would be placed" if answer["dry_run"] else ("created" if answer["created"] else "changed")
    print(f"namespace {answer['namespace']}: {verb} on store {answer['store']}")
    limits = answer.get("limits")
    if limits is not None:
        print(f"  rate limit: {_sides(limits)}")
    for store in answer["refused"]:
        print(f"  passed over {store['store']}: {_fails(store['fails'])}")
    return 0


def _get(args: argparse.Namespace) -> int:
    with _client(args) as http:
        response = http.get(_path(args.namespace))
    if response.status_code >= 400:
        return _refusal(response)
    detail = response.json()
    if args.json:
        print(json.dumps(detail, indent=2))
        return 0
    lines = [f"namespace {detail['name']}"]
    if "store" in detail:
        lines.append(f"  store: {detail['store']} ({detail['backend']})")
    limits = detail["limits"]
    burst = limits["burst"]
    if limits.get("read_rate") is not None or limits.get("write_rate") is not None:
        rate = _sides(limits)
    elif limits["rate"] is None:
        rate = "none"
    else:
        rate = f"{_show(limits['rate'])} requests/s, burst {_show(burst)}"
    lines += [
        f"  tenant scoped: {'yes' if detail['tenant_scoped'] else 'no'}",
        f"  max value bytes: {detail['max_value_bytes']}",
        f"  rate limit: {rate}",
        f"  you may: {', '.join(detail['actions']) or 'nothing'}",
        f"  health: {detail['health']['status']}",
    ]
    needs = detail.get("needs") or {}
    declared = [f"{k}={_show(v)}" for k, v in needs.items() if v not in (None, False)]
    if declared:
        lines.append(f"  needs: {', '.join(declared)}")
    print("\n".join(lines))
    return 0


def _list(args: argparse.Namespace) -> int:
    with _client(args) as http:
        response = http.get(_path())
    if response.status_code >= 400:
        return _refusal(response)
    listed = response.json()
    if args.json:
        print(json.dumps(listed, indent=2))
        return 0
    for ns in listed["namespaces"]:
        scoped = " (tenant scoped)" if ns["tenant_scoped"] else ""
        print(f"{ns['name']}{scoped}: {', '.join(ns['actions'])}")
    return 0


def _delete(args: argparse.Namespace) -> int:
    params = {"purge": "true"} if args.purge else {}
    with _client(args) as http:
        response = http.delete(_path(args.namespace), params=params)
    if response.status_code >= 400:
        return _refusal(response)
    answer = response.json()
    if args.json:
        print(json.dumps(answer, indent=2))
        return 0
    count = answer["purged_records"]
    purged = f", {count} record{'' if count == 1 else 's'} purged" if args.purge else ""
    print(f"namespace {answer['namespace']}: deleted{purged}")
    return 0
