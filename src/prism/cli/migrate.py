"""``prism migrate``: move a namespace of a running gateway to another store while it serves traffic.

    prism migrate start users --to redis_main      # shadow writes begin
    prism migrate backfill users --rps 2000        # copy existing records (progress on stderr)
    prism migrate verify users                     # compare every item in both stores
    prism migrate cutover users                    # the target becomes primary
    prism migrate rollback users                   # the old store is primary again
    prism migrate complete users                   # the old store leaves the namespace
    prism migrate abort users                      # before cutover: stop, leave the target's data
    prism migrate status users [--watch]           # phase, counts, last error

The gateway is ``--url`` (or ``PRISM_URL``, default http://127.0.0.1:8080) and the
credential ``--token`` (or ``PRISM_TOKEN``), which must hold the namespace's admin
role. ``backfill`` and ``verify`` run on the gateway; the command follows them until
they finish (``--no-wait`` returns at once). Ctrl-C stops following, not the work:
``status`` shows it, and a stopped backfill resumes from its checkpoint when run again.
A refused action prints the gateway's reason and exits 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

import httpx

__all__ = ["add_parser"]

DEFAULT_URL = "http://127.0.0.1:8080"
#: Seconds one HTTP call may take.
HTTP_TIMEOUT = 30.0
#: Seconds between two looks at the status while following or watching.
POLL_INTERVAL = 0.5
EXIT_FAILED = 1
ACTIONS = ("backfill", "verify", "cutover", "rollback", "complete", "abort")


def _positive(kind: type[float] | type[int]) -> Any:
    def parse(text: str) -> float | int:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a {kind.__name__}, not {text!r}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be > 0, not {text}")
        return value

    return parse


def add_parser(subparsers: Any) -> None:
    """Register ``prism migrate``."""
    parser = subparsers.add_parser(
        "migrate",
        help="move a namespace to another store while it serves traffic",
        description="Drive a live migration on a running gateway (see docs/migration.md).",
    )
    parser.add_argument("--url", default=os.environ.get("PRISM_URL", DEFAULT_URL), help="the gateway")
    parser.add_argument("--token", default=os.environ.get("PRISM_TOKEN"), help="API key or bearer token")
    parser.add_argument("--json", action="store_true", help="print the status as JSON")
    steps = parser.add_subparsers(dest="step", required=True, metavar="STEP")
    start = steps.add_parser("start", help="begin shadowing writes to the target store")
    start.add_argument("namespace")
    start.add_argument("--to", required=True, help="the target store's name in the gateway config")
    start.add_argument("--shadow-read-sample", type=float, default=0.0, help="share of reads compared (0-1)")
    start.set_defaults(func=_start)
    for action in ACTIONS:
        step = steps.add_parser(action, help=f"run the migration's {action}")
        step.add_argument("namespace")
        if action == "backfill":
            step.add_argument("--rps", type=_positive(float), help="items copied per second at most")
            step.add_argument("--parallelism", type=_positive(int), help="records read at once")
        if action in ("backfill", "verify"):
            step.add_argument("--no-wait", action="store_true", help="return once it started")
        if action == "cutover":
            step.add_argument("--force", action="store_true", help="cut over without a clean verify")
        step.set_defaults(func=_act, action=action)
    status = steps.add_parser("status", help="show the migration's phase and counts")
    status.add_argument("namespace")
    status.add_argument("--watch", action="store_true", help="refresh until Ctrl-C")
    status.set_defaults(func=_status)


def _client(args: argparse.Namespace) -> httpx.Client:
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
    return httpx.Client(base_url=args.url.rstrip("/"), headers=headers, timeout=HTTP_TIMEOUT)


def _path(namespace: str, action: str | None = None) -> str:
    quoted = httpx.URL(f"/v1/namespaces/{namespace}/migration").raw_path.decode()
    return quoted if action is None else f"{quoted}/{action}"


def _answer(response: httpx.Response) -> dict[str, Any] | None:
    """The status of a successful answer; None after printing the gateway's reason for a refusal."""
    if response.status_code < 400:
        body: dict[str, Any] = response.json()
        return body
    try:
        problem = response.json()
        reason = f"{problem.get('code', response.status_code)}: {problem.get('detail', response.text)}"
    except ValueError:
        reason = f"HTTP {response.status_code}: {response.text.strip()}"
    print(f"prism: error: {reason}", file=sys.stderr)
    return None


def _render(status: dict[str, Any]) -> str:
    b, v, s, r = status["backfill"], status["verify"], status["shadow"], status["shadow_reads"]
    lines = [
        f"namespace {status['namespace']}: {status['phase']} ({status['from']} -> {status['to']}), "
        f"primary {status['primary']}",
        f"backfill: copied {b['copied']}, skipped {b['skipped']}, done {'yes' if b['done'] else 'no'}",
        f"verify: checked {v['checked']}, missing {v['missing']}, extra {v['extra']}, "
        f"different {v['different']}, done {'yes' if v['done'] else 'no'}",
        f"shadow writes: {s['writes']}, failed {s['failed']}, pending repair {s['pending']}",
        f"shadow reads: compared {r['compared']}, mismatches {r['mismatches']}",
    ]
    if v.get("samples"):
        lines.append("differing keys: " + ", ".join(v["samples"]))
    if status.get("error"):
        lines.append(f"error: {status['error']}")
    return "\n".join(lines)


def _print(args: argparse.Namespace, status: dict[str, Any]) -> None:
    print(json.dumps(status, indent=2) if args.json else _render(status))


def _start(args: argparse.Namespace) -> int:
    body = {"to": args.to, "shadow_read_sample": args.shadow_read_sample}
    with _client(args) as http:
        status = _answer(http.post(_path(args.namespace), json=body))
    if status is None:
        return EXIT_FAILED
    _print(args, status)
    return 0


def _act(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {}
    if getattr(args, "force", False):
        body["force"] = True
    if getattr(args, "rps", None) is not None:
        body["rps"] = args.rps
    if getattr(args, "parallelism", None) is not None:
        body["parallelism"] = args.parallelism
    with _client(args) as http:
        status = _answer(http.post(_path(args.namespace, args.action), json=body))
        if status is None:
            return EXIT_FAILED
        if args.action in ("backfill", "verify") and not args.no_wait:
            try:
                status = _follow(http, args)
            except KeyboardInterrupt:
                print(
                    f"\nstopped following; the {args.action} goes on: prism migrate status {args.namespace}",
                    file=sys.stderr,
                )
                return 130
            if status is None:
                return EXIT_FAILED
    _print(args, status)
    if status.get("error") and args.action in ("backfill", "verify"):
        return EXIT_FAILED
    return 0


def _follow(http: httpx.Client, args: argparse.Namespace) -> dict[str, Any] | None:
    """Poll the status until the backfill or verify finished, with progress on stderr."""
    while True:
        status = _answer(http.get(_path(args.namespace)))
        if status is None:
            return None
        if args.action == "backfill":
            b = status["backfill"]
            print(f"\rbackfill: {b['copied']} copied, {b['skipped']} skipped", end="", file=sys.stderr)
        else:
            print(f"\rverify: {status['verify']['checked']} checked", end="", file=sys.stderr)
        if status[args.action]["done"] or status.get("error"):
            print(file=sys.stderr)
            return status
        time.sleep(POLL_INTERVAL)


def _status(args: argparse.Namespace) -> int:
    with _client(args) as http:
        while True:
            status = _answer(http.get(_path(args.namespace)))
            if status is None:
                return EXIT_FAILED
            if args.watch and sys.stdout.isatty():
                print("\x1b[2J\x1b[H", end="")
            _print(args, status)
            if not args.watch:
                return 0
            try:
                time.sleep(POLL_INTERVAL * 2)
            except KeyboardInterrupt:
                return 0
            print()
