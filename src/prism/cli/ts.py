"""``prism ts write|read NAMESPACE SERIES``: the TimeSeries API from a shell.

``write`` reads events from stdin, one JSON object per line (the HTTP API's event
form: ``{"time": "2024-05-01T12:00:00Z", "id": "e1", "data": {...}}`` or with
``"value"`` in base64), and writes them in batches. ``read`` prints the events of a
time range (``--since 1h``, ``--until``), newest first: a table on a terminal, one
JSON object per line when piped or with ``--json``.

The store is ``--store URL`` or the embedded SQLite store in ``./.prism/``. The
namespace's settings (``--slice-seconds`` and the others) must be the ones it was
written with.
"""

from __future__ import annotations

import argparse
import re
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec

from prism.cli.kv import DEFAULT_DATA_DIR, DEFAULT_STORE
from prism.cli.tables import format_table
from prism.errors import InvalidArgument
from prism.kv.sync import connect_sync
from prism.model import Event
from prism.timeseries.series import MAX_BATCH, MAX_PAGE_LIMIT
from prism.timeseries.settings import DEFAULT_SLICE_SECONDS
from prism.timeseries.wire import decode_events, event_to_wire

__all__ = ["add_parser", "parse_duration"]

#: Characters of a value shown in a table cell.
PREVIEW_CHARS = 60
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def add_parser(sub: Any) -> None:
    ts = sub.add_parser(
        "ts",
        help="write and read time series",
        description="Write and read events of TimeSeries namespaces (see docs/timeseries.md).",
    )
    ts.add_argument("--store", help=f"store URL (default: {DEFAULT_STORE})")
    ts.add_argument(
        "--slice-seconds",
        type=int,
        default=DEFAULT_SLICE_SECONDS,
        help=f"the namespace's slice length (default {DEFAULT_SLICE_SECONDS})",
    )
    ts.add_argument("--retention-seconds", type=int, help="the namespace's retention (default: none)")
    ts.add_argument(
        "--accept-window-seconds", type=float, help="the namespace's accept window (default: none)"
    )
    verbs = ts.add_subparsers(dest="verb", required=True, metavar="VERB")

    write = verbs.add_parser("write", help="write events read from stdin, one JSON object per line")
    write.add_argument("namespace")
    write.add_argument("series")
    write.add_argument("--json", action="store_true", help="print one JSON result per event")
    write.set_defaults(func=_write)

    read = verbs.add_parser("read", help="print events of a time range, newest first")
    read.add_argument("namespace")
    read.add_argument("series")
    read.add_argument(
        "--since", help="start: a duration back from now (30s, 15m, 1h, 7d) or an RFC 3339 time"
    )
    read.add_argument("--until", help="end (exclusive): a duration back from now or an RFC 3339 time")
    read.add_argument("--limit", type=int, default=100, help="most events to print (default 100)")
    read.add_argument("--oldest-first", action="store_true", help="print the oldest events first")
    read.add_argument("--json", action="store_true", help="one JSON object per line, even on a terminal")
    read.set_defaults(func=_read)


def parse_duration(text: str) -> timedelta:
    """``30s``, ``15m``, ``1h``, ``7d`` or ``2w`` as a timedelta."""
    match = _DURATION.match(text.strip())
    if match is None:
        raise InvalidArgument(f"a duration looks like 30s, 15m, 1h, 7d or 2w, not {text!r}")
    return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])


def _when(text: str | None, now: datetime) -> datetime | None:
    if text is None:
        return None
    if _DURATION.match(text.strip()):
        return now - parse_duration(text)
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise InvalidArgument(f"{text!r} is neither a duration (1h) nor an RFC 3339 time") from exc
    if when.tzinfo is None:
        raise InvalidArgument(f"{text!r} needs a UTC offset, like 2024-05-01T12:00:00Z")
    return when


def _store_url(args: argparse.Namespace) -> str:
    if args.store is not None:
        return str(args.store)
    data = Path(DEFAULT_DATA_DIR)
    if not data.is_dir():
        if args.verb != "write":
            raise InvalidArgument(
                f"there is no data directory {data.resolve()}: nothing was stored from here yet "
                "(run prism ts where ./.prism/ is, or pass --store)"
            )
        data.mkdir()
        print(f"prism: created the data directory {data.resolve()} for the embedded store", file=sys.stderr)
    return DEFAULT_STORE


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "slice_seconds": args.slice_seconds,
        "retention_seconds": args.retention_seconds,
        "accept_window_seconds": args.accept_window_seconds,
    }


def _emit(obj: Any) -> None:
    sys.stdout.buffer.write(msgspec.json.encode(obj) + b"\n")


def _write(args: argparse.Namespace) -> int:
    events = decode_events(sys.stdin.buffer.read(), lines=True)
    written = existed = 0
    failed: list[str] = []
    with connect_sync(_store_url(args)) as store:
        ts = store.timeseries(args.namespace, **_settings(args))
        for at in range(0, len(events), MAX_BATCH):
            for result in ts.write(args.series, events[at : at + MAX_BATCH]):
                if args.json:
                    _emit(
                        {
                            "id": result.id,
                            "time": result.time,
                            "key": result.key,
                            "ok": result.ok,
                            "existed": result.existed,
                            "error": None if result.error is None else str(result.error),
                        }
                    )
                if not result.ok:
                    failed.append(f"{result.id!r}: {result.error}")
                elif result.existed:
                    existed += 1
                else:
                    written += 1
    for line in failed:
        print(f"prism: {line}", file=sys.stderr)
    if not args.json:
        print(f"{written} written, {existed} already there, {len(failed)} refused", file=sys.stderr)
    return 1 if failed else 0


def _preview(event: Event) -> str:
    try:
        text = event.value.decode("utf-8")
    except UnicodeDecodeError:
        return f"<{len(event.value)} bytes>"
    return text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 3] + "..."


def _read(args: argparse.Namespace) -> int:
    if not 1 <= args.limit <= 1_000_000:
        raise InvalidArgument("--limit must be from 1 to 1000000")
    now = datetime.now(UTC)
    start, end = _when(args.since, now), _when(args.until, now)
    events: list[Event] = []
    token: str | None = None
    with connect_sync(_store_url(args)) as store:
        ts = store.timeseries(args.namespace, **_settings(args))
        while len(events) < args.limit:
            page = ts.read(
                args.series,
                start=start,
                end=end,
                limit=min(MAX_PAGE_LIMIT, args.limit - len(events)),
                newest_first=not args.oldest_first,
                page_token=token,
            )
            events += page.events
            token = page.next_page_token
            if token is None:
                break
    if args.json or not sys.stdout.isatty():
        for event in events:
            _emit(event_to_wire(event))
    elif events:
        rows = [
            {
                "time": e.time.isoformat(),
                "id": e.id,
                "key": e.key,
                "content_type": e.content_type,
                "value": _preview(e),
            }
            for e in events
        ]
        print(format_table(rows))
    if token is not None:
        print(f"prism: printed the first {len(events)} events; more exist (raise --limit)", file=sys.stderr)
    return 0
