"""``prism request``: send a streaming request and follow it, or inspect and cancel requests.

    prism request generate_report --payload '{"start_date": "2024-01-01", "end_date": "2024-03-31"}' --follow
    prism request status REQUEST_ID
    prism request cancel REQUEST_ID
    prism request list [--status COMPLETED] [--limit 20]

The server is ``--url`` (or ``PRISM_URL``, default http://127.0.0.1:8080) and the
credential ``--token`` (or ``PRISM_TOKEN``: an API key or a bearer token). Results
and records print as JSON on stdout; the progress bar goes to stderr. A request that
fails prints its error code and message and exits 1.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import Any, TextIO

import msgspec

__all__ = ["add_parser"]

DEFAULT_URL = "http://127.0.0.1:8080"
#: Characters of the progress bar.
BAR_WIDTH = 30
#: Seconds an HTTP call of status, cancel or list may take.
HTTP_TIMEOUT = 30.0
EXIT_FAILED = 1
EXIT_USAGE = 2
VERBS = ("status", "cancel", "list")


def add_parser(subparsers: Any) -> None:
    """Register ``prism request``."""
    parser = subparsers.add_parser(
        "request",
        help="send a streaming request, or show, cancel and list requests",
        description="Send ACTION with a JSON payload (--follow shows progress and waits for the result), "
        "or: status REQUEST_ID | cancel REQUEST_ID | list.",
    )
    parser.add_argument("words", nargs="+", metavar="ACTION | status ID | cancel ID | list")
    parser.add_argument("--payload", "-d", default=None, help="the JSON payload; @FILE reads a file, - stdin")
    parser.add_argument("--id", help="your id for the request (a repeat with the same id never runs twice)")
    parser.add_argument("--follow", "-f", action="store_true", help="show progress and wait for the result")
    parser.add_argument(
        "--timeout", type=float, default=None, help="give up following after this many seconds"
    )
    parser.add_argument("--status", help="list only requests in this status")
    parser.add_argument("--limit", type=int, default=20, help="how many requests to list (default 20)")
    parser.add_argument("--url", default=os.environ.get("PRISM_URL", DEFAULT_URL), help="the server")
    parser.add_argument("--token", default=os.environ.get("PRISM_TOKEN"), help="API key or bearer token")
    parser.set_defaults(func=run)


def _payload(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    if text == "-":
        text = sys.stdin.read()
    elif text.startswith("@"):
        with open(text[1:], encoding="utf-8") as f:
            text = f.read()
    try:
        value = msgspec.json.decode(text)
    except msgspec.DecodeError as exc:
        raise ValueError(f"--payload is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ValueError("--payload must be a JSON object")
    return value


def _print_json(value: Any) -> None:
    print(msgspec.json.format(msgspec.json.encode(value), indent=2).decode())


class ProgressBar:
    """A one-line progress bar on a terminal, or one line per update otherwise."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.shown = False

    def update(self, percentage: float, message: str) -> None:
        filled = int(BAR_WIDTH * percentage / 100)
        line = f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {percentage:5.1f}% {message}"
        if self.tty:
            self.stream.write("\r\x1b[K" + line[: os.get_terminal_size(self.stream.fileno()).columns - 1])
        else:
            self.stream.write(line + "\n")
        self.stream.flush()
        self.shown = True

    def done(self) -> None:
        if self.tty and self.shown:
            self.stream.write("\n")
            self.stream.flush()


def run(args: argparse.Namespace) -> int:
    """Dispatch ``prism request ...``."""
    verb, *rest = args.words
    if verb in VERBS:
        if verb == "list" and rest:
            return _usage("prism request list takes no arguments (use --status and --limit)")
        if verb != "list" and len(rest) != 1:
            return _usage(f"prism request {verb} takes one REQUEST_ID")
        return _http(args, verb, rest[0] if rest else None)
    if rest:
        return _usage(f"unexpected arguments after the action: {' '.join(rest)}")
    try:
        payload = _payload(args.payload)
    except (ValueError, OSError) as exc:
        return _usage(str(exc))
    return asyncio.run(_send(args, verb, payload))


def _usage(message: str) -> int:
    print(f"prism request: error: {message}", file=sys.stderr)
    return EXIT_USAGE


def _failed(code: str, message: str) -> int:
    print(f"prism request: {code}: {message}", file=sys.stderr)
    return EXIT_FAILED


async def _send(args: argparse.Namespace, action: str, payload: dict[str, Any] | None) -> int:
    from prism.streaming.client import ProgressUpdate, RequestError, StreamClient

    bar = ProgressBar(sys.stderr)

    def progress(update: ProgressUpdate) -> None:
        bar.update(update.percentage, update.message)

    try:
        async with StreamClient(args.url, token=args.token, max_reconnect_attempts=5) as client:
            handle = await client.submit(
                action, payload, id=args.id, on_progress=progress if args.follow else None
            )
            acked = asyncio.ensure_future(handle.acknowledged.wait())
            done, _ = await asyncio.wait({acked, handle.future}, return_when=asyncio.FIRST_COMPLETED)
            acked.cancel()
            if handle.future in done or args.follow:
                result = await handle.result(args.timeout)
                bar.done()
                _print_json(result)
                return 0
            _print_json({"request_id": handle.request_id, "status": "PENDING"})
            return 0
    except RequestError as exc:
        bar.done()
        return _failed(exc.code, exc.message)
    except TimeoutError:
        bar.done()
        return _failed("TIMEOUT", f"no result within {args.timeout:g} s (the request keeps running)")
    except OSError as exc:
        return _failed("UNAVAILABLE", f"cannot reach {args.url}: {exc}")


def _http(args: argparse.Namespace, verb: str, request_id: str | None) -> int:
    import httpx

    from prism.streaming.client import stream_url

    base = (
        stream_url(args.url)
        .replace("ws://", "http://")
        .replace("wss://", "https://")
        .removesuffix("/v1/stream")
    )
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
    try:
        with httpx.Client(base_url=base, headers=headers, timeout=HTTP_TIMEOUT) as http:
            if verb == "status":
                response = http.get(f"/v1/requests/{request_id}")
            elif verb == "cancel":
                response = http.post(f"/v1/requests/{request_id}/cancel")
            else:
                params: dict[str, Any] = {"limit": args.limit}
                if args.status:
                    params["status"] = args.status.upper()
                response = http.get("/v1/requests", params=params)
    except httpx.HTTPError as exc:
        return _failed("UNAVAILABLE", f"cannot reach {base}: {exc}")
    try:
        body = response.json()
    except ValueError:
        return _failed(f"HTTP_{response.status_code}", response.text[:200])
    if response.status_code >= 400:
        return _failed(str(body.get("code", response.status_code)), str(body.get("detail", body)))
    _print_json(body)
    return 0
