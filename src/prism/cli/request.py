"""``prism request``: send a streaming request and follow it, or inspect and cancel requests.

    prism request generate_report --payload '{"start_date": "2024-01-01", "end_date": "2024-03-31"}' --follow
    prism request follow REQUEST_ID [--after-seq N]
    prism request status REQUEST_ID
    prism request cancel REQUEST_ID
    prism request list [--status COMPLETED] [--limit 20] [--page-token T] [--json]

The server is ``--url`` (or ``PRISM_URL``, default http://127.0.0.1:8080) and the
credential ``--token`` (or ``PRISM_TOKEN``: an API key or a bearer token). Results
and records print as JSON on stdout; the progress bar goes to stderr. ``list`` prints
a table on a terminal and JSON when piped (or with ``--json``), and says on stderr
when more requests exist than it printed. A request that fails prints its error code
and message and exits 1. Ctrl-C, SIGTERM or ``--timeout`` while following leave the
request running and print the command that re-attaches to it (``prism request follow``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shlex
import signal
import sys
from collections.abc import Awaitable
from typing import Any, TextIO, TypeVar

import msgspec

__all__ = ["add_parser"]

DEFAULT_URL = "http://127.0.0.1:8080"
#: Characters of the progress bar.
BAR_WIDTH = 30
#: Seconds an HTTP call of status, cancel or list may take.
HTTP_TIMEOUT = 30.0
#: Reconnect attempts after a dropped connection before following gives up.
RECONNECT_ATTEMPTS = 5
#: Widest ACTION column of the ``list`` table (longer names are cut with "...").
ACTION_WIDTH = 24
EXIT_FAILED = 1
EXIT_USAGE = 2
#: Signals that stop following (Ctrl-C, and what ``kill`` or ``timeout(1)`` send); the exit code is 128 + it.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
VERBS = ("status", "cancel", "list", "follow")

T = TypeVar("T")


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, not {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, not {value}")
    return value


def _positive(text: str) -> int:
    value = _non_negative(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be >= 1")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds, not {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0 seconds, not {text}")
    return value


def add_parser(subparsers: Any) -> None:
    """Register ``prism request``."""
    parser = subparsers.add_parser(
        "request",
        help="send a streaming request, or follow, show, cancel and list requests",
        description="Send ACTION with a JSON payload (--follow shows progress and waits for the result), "
        "or: follow REQUEST_ID [--after-seq N] | status REQUEST_ID | cancel REQUEST_ID | list.",
    )
    parser.add_argument("words", nargs="+", metavar="ACTION | follow ID | status ID | cancel ID | list")
    parser.add_argument("--payload", "-d", default=None, help="the JSON payload; @FILE reads a file, - stdin")
    parser.add_argument("--id", help="your id for the request (a repeat with the same id never runs twice)")
    parser.add_argument("--follow", "-f", action="store_true", help="show progress and wait for the result")
    parser.add_argument(
        "--timeout", type=_seconds, default=None, help="stop following after this many seconds"
    )
    parser.add_argument(
        "--after-seq",
        type=_non_negative,
        default=0,
        metavar="N",
        help="with follow: show only the events after event N (what an interrupted follow printed)",
    )
    parser.add_argument("--status", help="list only requests in this status")
    parser.add_argument("--limit", type=_positive, default=20, help="how many requests to list (default 20)")
    parser.add_argument("--page-token", help="list the page after the one that printed this token")
    parser.add_argument(
        "--json", action="store_true", help="list as JSON even on a terminal (the default when piped)"
    )
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
            self.shown = False


def run(args: argparse.Namespace) -> int:
    """Dispatch ``prism request ...``."""
    verb, *rest = args.words
    if verb in VERBS:
        if verb == "list" and rest:
            return _usage("prism request list takes no arguments (use --status and --limit)")
        if verb != "list" and len(rest) != 1:
            return _usage(f"prism request {verb} takes one REQUEST_ID")
        if verb == "follow":
            return asyncio.run(_follow(args, rest[0]))
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


def _failed(code: str, message: str, details: Any = None) -> int:
    print(f"prism request: {code}: {message}", file=sys.stderr)
    if isinstance(details, dict) and isinstance(details.get("actions"), list):
        actions = ", ".join(str(a) for a in details["actions"]) or "none"
        print(f"prism request: valid actions: {actions}", file=sys.stderr)
    return EXIT_FAILED


class _Stopped(Exception):
    """Following ended before the request did: a signal (Ctrl-C, SIGTERM) or ``--timeout``."""

    def __init__(self, signal_received: signal.Signals | None) -> None:
        super().__init__("interrupted" if signal_received is not None else "timed out")
        self.signal = signal_received


class _Watch:
    """Races each wait of a command against Ctrl-C and the ``--timeout`` deadline."""

    def __init__(self, timeout: float | None) -> None:
        self.loop = asyncio.get_running_loop()
        self.deadline = None if timeout is None else self.loop.time() + timeout
        self.interrupted = asyncio.Event()
        self.signal: signal.Signals | None = None

    def _on_signal(self, sig: signal.Signals) -> None:
        self.signal = self.signal or sig
        self.interrupted.set()

    def __enter__(self) -> _Watch:
        for sig in STOP_SIGNALS:
            with contextlib.suppress(NotImplementedError, RuntimeError):
                self.loop.add_signal_handler(sig, self._on_signal, sig)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig in STOP_SIGNALS:
            with contextlib.suppress(NotImplementedError, RuntimeError):
                self.loop.remove_signal_handler(sig)

    async def until(self, aw: Awaitable[T]) -> T:
        task = asyncio.ensure_future(aw)
        stop = asyncio.ensure_future(self.interrupted.wait())
        remaining = None if self.deadline is None else max(0.0, self.deadline - self.loop.time())
        try:
            done, _ = await asyncio.wait({task, stop}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        if task in done:
            return task.result()
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        raise _Stopped(self.signal)


def _command(args: argparse.Namespace, *words: str) -> str:
    """A ``prism request`` command line for the same server (never with the token: it is a secret)."""
    parts = ["prism", "request", *words]
    if args.url != os.environ.get("PRISM_URL", DEFAULT_URL):
        parts += ["--url", args.url]
    return shlex.join(parts)


def _stopped(args: argparse.Namespace, stop: _Stopped, request_id: str | None, last_seq: int) -> int:
    """Say why following stopped, that the request goes on, and how to re-attach."""
    if stop.signal is None:
        why = f"TIMEOUT: no result within {args.timeout:g} s"
    else:
        why = "interrupted" if stop.signal == signal.SIGINT else f"stopped by {stop.signal.name}"
    if request_id is None:
        hint = (
            f"; it may have been stored: send it again with --id {shlex.quote(args.id)} to find it"
            if args.id
            else ""
        )
        print(f"prism request: {why} before the server acknowledged the request{hint}", file=sys.stderr)
    else:
        print(f"prism request: {why}; request {request_id} keeps running on the server", file=sys.stderr)
        reattach = _command(args, "follow", request_id, "--after-seq", str(last_seq))
        print(f"prism request: re-attach with: {reattach}", file=sys.stderr)
    return EXIT_FAILED if stop.signal is None else 128 + stop.signal


async def _send(args: argparse.Namespace, action: str, payload: dict[str, Any] | None) -> int:
    from prism.streaming.client import RequestHandle

    async def start(client: Any, progress: Any) -> RequestHandle:
        handle: RequestHandle = await client.submit(
            action, payload, id=args.id, on_progress=progress if args.follow else None
        )
        return handle

    return await _attach(args, start, wait=args.follow)


async def _follow(args: argparse.Namespace, request_id: str) -> int:
    from prism.streaming.client import RequestHandle

    async def start(client: Any, progress: Any) -> RequestHandle:
        handle: RequestHandle = await client.follow(
            request_id, after_seq=args.after_seq, on_progress=progress
        )
        return handle

    return await _attach(args, start, wait=True, request_id=request_id)


async def _attach(args: argparse.Namespace, start: Any, *, wait: bool, request_id: str | None = None) -> int:
    """Connect, start (submit or follow), and wait for the outcome when asked to."""
    from prism.errors import PrismError
    from prism.streaming.client import ProgressUpdate, RequestError, StreamClient

    bar = ProgressBar(sys.stderr)
    handle: Any = None

    def progress(update: ProgressUpdate) -> None:
        bar.update(update.percentage, update.message)

    try:
        client = StreamClient(args.url, token=args.token, max_reconnect_attempts=RECONNECT_ATTEMPTS)
    except ValueError as exc:
        return _usage(f"--url: {exc}")
    with _Watch(args.timeout) as watch:
        try:
            try:
                await watch.until(client.connect())
                handle = await watch.until(start(client, progress))
                if handle.future.done() or wait:
                    result = await watch.until(handle.result())
                    bar.done()
                    _print_json(result)
                    return 0
                _print_json({"request_id": handle.request_id, "status": "PENDING"})
                print(
                    f"prism request: follow it with: {_command(args, 'follow', handle.request_id)}",
                    file=sys.stderr,
                )
                return 0
            finally:
                await client.close()
        except _Stopped as stop:
            bar.done()
            rid = handle.request_id if handle is not None else request_id
            return _stopped(args, stop, rid, handle.last_seq if handle is not None else args.after_seq)
        except RequestError as exc:
            bar.done()
            code = _failed(exc.code, exc.message, exc.details)
            if handle is not None and handle.request_id is not None and exc.request_id is None:
                # The connection failed, not the request: it may well run on.
                reattach = _command(args, "follow", handle.request_id, "--after-seq", str(handle.last_seq))
                rid = handle.request_id
                print(
                    f"prism request: request {rid} may still be running; re-attach with: {reattach}",
                    file=sys.stderr,
                )
            return code
        except PrismError as exc:
            bar.done()
            return _failed("UNAVAILABLE", str(exc))


def _table(requests: list[dict[str, Any]]) -> str:
    """The requests as a table: the columns a person scans first, the full id to copy."""
    from prism.cli.tables import format_table

    rows = []
    for r in requests:
        action = str(r.get("action", ""))
        if len(action) > ACTION_WIDTH:
            action = action[: ACTION_WIDTH - 3] + "..."
        percentage = (r.get("progress") or {}).get("percentage", 0.0)
        rows.append(
            {
                "request_id": r.get("request_id"),
                "action": action,
                "status": r.get("status"),
                "progress": f"{percentage:.0f}%",
                "created": r.get("created_at"),
            }
        )
    return format_table(rows)


def _http(args: argparse.Namespace, verb: str, request_id: str | None) -> int:
    import httpx

    from prism.streaming.client import stream_url

    try:
        base = (
            stream_url(args.url)
            .replace("ws://", "http://")
            .replace("wss://", "https://")
            .removesuffix("/v1/stream")
        )
    except ValueError as exc:
        return _usage(f"--url: {exc}")
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
                if args.page_token:
                    params["page_token"] = args.page_token
                response = http.get("/v1/requests", params=params)
    except httpx.HTTPError as exc:
        return _failed("UNAVAILABLE", f"cannot reach {base}: {exc}")
    try:
        body = response.json()
    except ValueError:
        return _failed(f"HTTP_{response.status_code}", response.text[:200])
    if response.status_code >= 400:
        return _failed(
            str(body.get("code", response.status_code)), str(body.get("detail", body)), body.get("details")
        )
    if verb != "list":
        _print_json(body)
        return 0
    if args.json or not sys.stdout.isatty():
        _print_json(body)
    else:
        requests = body.get("requests", [])
        print(_table(requests) if requests else "no requests")
    token = body.get("next_page_token")
    if token:
        words = ["list", "--page-token", token, "--limit", str(args.limit)]
        if args.status:
            words += ["--status", args.status]
        if args.json:
            words.append("--json")
        shown = len(body.get("requests", []))
        print(
            f"prism request: more requests than the {shown} shown; next page: {_command(args, *words)}",
            file=sys.stderr,
        )
    return 0
