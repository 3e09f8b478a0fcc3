"""``prism kv watch NAMESPACE``: print a namespace's changes, one JSON object per line.

Against a gateway (``--url`` or ``PRISM_URL``, credential from ``PRISM_TOKEN``) it
reads ``GET /v1/kv/{ns}/_watch`` (Server-Sent Events) and, when the stream ends (the
gateway restarts or drains, the connection drops, the stream reaches its duration),
reconnects with ``Last-Event-ID`` set to the last cursor it saw, waiting longer
after each failed attempt (up to ``--max-reconnect-delay``). It stops with an error
when the gateway refuses the watch for good: no feed on the store, a cursor older
than the retained window, bad credentials. With ``--store`` it watches the store
itself through the library (the store must be opened with ``feed=true``).

Each line is ``{"key", "op", "etag", "updated_at", "cursor"}`` (plus ``item_key``
for an item of a record); ``cursor`` is what ``--after`` takes to resume.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import msgspec

from prism.errors import InvalidArgument, PrismError
from prism.kv.sync import connect_sync

__all__ = ["add_verb"]

#: Seconds before the first reconnect; each failed attempt doubles it, up to ``--max-reconnect-delay``.
RECONNECT_DELAY = 0.25
#: Default of ``--max-reconnect-delay``.
MAX_RECONNECT_DELAY = 10.0
#: Default of ``--read-timeout``: seconds without a byte (heartbeats included) before the connection is
#: taken for dead and replaced.
READ_TIMEOUT = 60.0
#: Seconds allowed to connect to the gateway.
CONNECT_TIMEOUT = 10.0
#: Problem statuses worth reconnecting after: the gateway is busy, draining or its store is down.
_RETRYABLE = frozenset({408, 429, 500, 502, 503, 504})
_OPS = frozenset({"put", "delete", "expire"})


class GatewayRefused(PrismError):
    """The gateway answered the watch with a problem no reconnect mends."""

    code = "WATCH_REFUSED"


def add_verb(verbs: Any) -> None:
    watch = verbs.add_parser(
        "watch",
        help="print a namespace's changes as they happen (one JSON object per line)",
        description=(
            "Print each change of the namespace (put, delete, expire) as one JSON line. Against a "
            "gateway, reconnects and resumes after the last change printed; with --store, the store "
            "must keep a change feed (feed=true)."
        ),
    )
    watch.add_argument("namespace")
    watch.add_argument("--prefix", default="", help="only keys starting with this")
    watch.add_argument("--after", help="resume after this cursor (the `cursor` of a printed change)")
    watch.add_argument("--count", type=int, help="stop after printing this many changes")
    watch.add_argument(
        "--max-reconnect-delay",
        type=float,
        default=MAX_RECONNECT_DELAY,
        help=f"longest wait between reconnect attempts, in seconds (default {MAX_RECONNECT_DELAY:g})",
    )
    watch.add_argument(
        "--read-timeout",
        type=float,
        default=READ_TIMEOUT,
        help=f"seconds of silence after which the connection is replaced (default {READ_TIMEOUT:g})",
    )
    watch.set_defaults(func=_watch)


def _watch(args: argparse.Namespace) -> int:
    from prism.cli.kv import URL_ENV, store_url

    if args.count is not None and args.count < 1:
        raise InvalidArgument("--count must be at least 1")
    if not args.max_reconnect_delay > 0 or not args.read_timeout > 0:
        raise InvalidArgument("--max-reconnect-delay and --read-timeout must be positive seconds")
    if args.store is None:
        url = args.url or os.environ.get(URL_ENV)
        if url:
            _watch_gateway(args, _http_base(url), os.environ.get("PRISM_TOKEN") or None)
            return 0
    with connect_sync(store_url(args)) as store:
        ns = store.namespace(args.namespace)
        printed = 0
        with ns.watch(args.prefix, after=args.after) as feed:
            for change in feed:
                line: dict[str, Any] = {
                    "key": change.key,
                    "op": change.op,
                    "etag": change.etag,
                    "updated_at": change.updated_at,
                    "cursor": change.cursor,
                }
                if change.item_key:
                    line["item_key"] = change.item_key
                _print(msgspec.json.encode(line))
                printed += 1
                if printed == args.count:
                    break
    return 0


def _http_base(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower().removeprefix("prism+")
    if not sep or scheme not in ("http", "https"):
        raise InvalidArgument(f"a gateway URL looks like http://localhost:8080, not {url!r}")
    return f"{scheme}://{rest.rstrip('/')}"


def _print(data: bytes) -> None:
    sys.stdout.buffer.write(data + b"\n")
    sys.stdout.buffer.flush()


def _events(lines: Iterator[str]) -> Iterator[dict[str, str]]:
    """The SSE blocks of a stream as field -> value (``data`` lines joined), comments left out."""
    fields: dict[str, str] = {}
    for line in lines:
        if not line:
            if fields:
                yield fields
            fields = {}
            continue
        name, _, value = line.partition(":")
        if not name:
            continue
        value = value.removeprefix(" ")
        if name == "data" and "data" in fields:
            fields["data"] += "\n" + value
        else:
            fields[name] = value


def _watch_gateway(args: argparse.Namespace, base: str, token: str | None) -> None:
    path = f"{base}/v1/kv/{quote(args.namespace, safe='')}/_watch"
    params = {"prefix": args.prefix} if args.prefix else {}
    cursor: str | None = args.after
    printed = 0
    delay = RECONNECT_DELAY
    timeout = httpx.Timeout(CONNECT_TIMEOUT, read=args.read_timeout)
    with httpx.Client(timeout=timeout) as client:
        while True:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            if cursor is not None:
                headers["Last-Event-ID"] = cursor
            problem: dict[str, Any] | None = None
            try:
                with client.stream("GET", path, params=params, headers=headers) as response:
                    if response.status_code != 200:
                        problem = _problem(response.status_code, response.read())
                    else:
                        for event in _events(response.iter_lines()):
                            if "id" in event:
                                cursor = event["id"]
                            kind = event.get("event")
                            if kind in _OPS:
                                delay = RECONNECT_DELAY
                                _print(event.get("data", "").encode())
                                printed += 1
                                if printed == args.count:
                                    return
                            elif kind == "reconnect":
                                # The gateway ends the stream on purpose: come back at once.
                                delay = 0.0
                                break
                            elif kind == "problem":
                                problem = _problem(0, event.get("data", "").encode())
                                break
            except httpx.TransportError as exc:
                print(
                    f"prism: the watch connection failed ({type(exc).__name__}); reconnecting",
                    file=sys.stderr,
                )
            if problem is not None:
                status = int(problem.get("status") or 0)
                if status not in _RETRYABLE:
                    raise GatewayRefused(f"{status} {problem.get('code')}: {problem.get('detail')}")
                print(
                    f"prism: the gateway answered {status} {problem.get('code')}; reconnecting",
                    file=sys.stderr,
                )
            time.sleep(delay)
            delay = min(max(delay * 2, RECONNECT_DELAY), args.max_reconnect_delay)


def _problem(status: int, body: bytes) -> dict[str, Any]:
    """A problem+json body as a mapping (one that is not JSON is described by its status)."""
    try:
        found = msgspec.json.decode(body)
    except msgspec.DecodeError:
        found = None
    if not isinstance(found, dict):
        return {"status": status, "code": "HTTP_ERROR", "detail": f"the gateway answered {status}"}
    return found
