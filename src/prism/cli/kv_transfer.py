"""``prism kv export`` and ``prism kv import``: a namespace as JSON lines, streamed both ways.

One line per key::

    {"key": "k", "value": "<base64>", "content_type": null, "expires_at": null,
     "etag": "...", "updated_at": "2026-12-07T13:00:00+00:00"}

``export`` pages through a scan and reads each page with one ``get_many``; ``import``
writes a batch of lines with one ``put_many``. Neither holds more than a batch in
memory. ``content_type`` and ``expires_at`` are restored (the ttl is what is left
until ``expires_at``; a line already expired is skipped and counted); ``etag`` and
``updated_at`` are informative: a written key gets a new etag, as every write does.
Only ``key`` and ``value`` are required on import. The import reads the next batch
while the store writes the last, with one ``put_many`` in flight at a time, so a key
given twice ends with its last line. An export holds the namespace's keys (what
``get`` and ``scan`` see), not the items of records written with ``put_items``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import IO, Any

import msgspec

from prism.errors import InvalidArgument
from prism.kv.namespace import MAX_BATCH as NAMESPACE_MAX_BATCH
from prism.model import Item, Put, WriteResult

__all__ = ["DEFAULT_BATCH", "ExportLine", "Progress", "add_verbs"]

#: Keys per scan page and ``get_many`` (export), lines per ``put_many`` (import).
DEFAULT_BATCH = 1000
#: Largest batch accepted by ``--batch``: the most keys one scan page, get_many or put_many takes.
MAX_BATCH = NAMESPACE_MAX_BATCH
#: Seconds between two redraws of the progress line.
PROGRESS_INTERVAL = 0.2


class ExportLine(msgspec.Struct, omit_defaults=False):
    """One line of an export (and of an import: only ``key`` and ``value`` are required)."""

    key: str
    #: The value's bytes, base64 in the JSON text.
    value: bytes
    content_type: str | None = None
    expires_at: str | None = None
    etag: str | None = None
    updated_at: str | None = None


_decoder = msgspec.json.Decoder(ExportLine)
_encoder = msgspec.json.Encoder()


def add_verbs(verbs: Any) -> None:
    """Add ``export`` and ``import`` to the ``prism kv`` verbs."""
    export = verbs.add_parser(
        "export",
        help="write a namespace's keys as JSON lines",
        description=(
            "Write every key of NAMESPACE (or those starting with PREFIX) as one JSON object "
            "per line: key, value (base64), content_type, expires_at, etag, updated_at."
        ),
    )
    export.add_argument("namespace")
    export.add_argument("prefix", nargs="?", default="")
    export.add_argument("-o", "--output", help="write to this file instead of stdout")
    _common(export)
    export.set_defaults(func=_export)

    imp = verbs.add_parser(
        "import",
        help="write keys from JSON lines (as written by export)",
        description=(
            "Put every line of FILE (or stdin: '-' or nothing) into NAMESPACE, a batch per "
            "put_many. A line that is not valid stops the import there, naming the line; the "
            "batches before it stay written."
        ),
    )
    imp.add_argument("namespace")
    imp.add_argument("file", nargs="?", default="-", help="JSON lines file; '-' or absent reads stdin")
    _common(imp)
    imp.set_defaults(func=_import)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--batch",
        type=int,
        default=DEFAULT_BATCH,
        help=f"keys per request (default {DEFAULT_BATCH}, at most {MAX_BATCH})",
    )
    shown = parser.add_mutually_exclusive_group()
    shown.add_argument(
        "--progress", dest="progress", action="store_true", default=None, help="show progress on stderr"
    )
    shown.add_argument(
        "--no-progress",
        dest="progress",
        action="store_false",
        help="no progress (default when not a terminal)",
    )


def _batch(args: argparse.Namespace) -> int:
    batch = int(args.batch)
    if not 1 <= batch <= MAX_BATCH:
        raise InvalidArgument(f"--batch must be between 1 and {MAX_BATCH}, got {batch}")
    return batch


class Progress:
    """A progress line on a stream: keys done, rate, and the share done when the total is known."""

    def __init__(self, verb: str, stream: IO[str] | None, total_bytes: int | None = None) -> None:
        self._verb = verb
        self._stream = stream
        self._total = total_bytes
        self._started = time.monotonic()
        self._shown = 0.0
        self.keys = 0

    def update(self, keys: int, done_bytes: int | None = None, *, final: bool = False) -> None:
        self.keys += keys
        if self._stream is None:
            return
        now = time.monotonic()
        if not final and now - self._shown < PROGRESS_INTERVAL:
            return
        self._shown = now
        elapsed = max(now - self._started, 1e-9)
        line = f"{self._verb} {self.keys} keys, {self.keys / elapsed:,.0f} keys/s"
        if self._total and done_bytes is not None:
            share = min(1.0, done_bytes / self._total)
            filled = int(share * 30)
            line = f"[{'#' * filled}{'.' * (30 - filled)}] {share:4.0%} " + line
        self._stream.write("\r" + line + ("\n" if final else ""))
        self._stream.flush()


def _progress_stream(args: argparse.Namespace) -> IO[str] | None:
    wanted = sys.stderr.isatty() if args.progress is None else bool(args.progress)
    return sys.stderr if wanted else None


def _when(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _line(item: Item) -> bytes:
    return _encoder.encode(
        ExportLine(
            item.key,
            item.value,
            item.content_type,
            _when(item.expires_at),
            item.etag,
            _when(item.updated_at),
        )
    )


def _export(args: argparse.Namespace) -> int:
    from prism.cli.kv import _namespace

    batch = _batch(args)
    store, ns = _namespace(args)
    out: IO[bytes]
    if args.output is None:
        out = sys.stdout.buffer
    else:
        try:
            out = open(args.output, "wb")  # noqa: SIM115 - closed below, after the store
        except OSError as exc:
            raise InvalidArgument(f"cannot write {args.output}: {exc.strerror}") from exc
    progress = Progress("exported", _progress_stream(args))
    try:
        with store:
            token: str | None = None
            while True:
                page = ns.scan(args.prefix, limit=batch, page_token=token)
                items = ns.get_many(page.keys) if page.keys else []
                # A key deleted or expired between the scan and the read is left out.
                lines = [_line(item) for item in items if item is not None]
                if lines:
                    out.write(b"\n".join(lines) + b"\n")
                progress.update(len(lines))
                token = page.next_page_token
                if token is None:
                    break
    finally:
        if out is not sys.stdout.buffer:
            out.close()
        else:
            out.flush()
    progress.update(0, final=True)
    return 0


def _expiry(text: str, number: int) -> float:
    try:
        when = datetime.fromisoformat(text)
    except ValueError as exc:
        raise InvalidArgument(f"line {number}: expires_at must be an ISO 8601 time, got {text!r}") from exc
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def _decode(raws: list[bytes], first: int) -> list[ExportLine]:
    """The lines ``raws`` (line ``first`` onwards) decoded at once; a bad one is named by its number."""
    try:
        return _decoder.decode_lines(b"".join(raws))
    except (msgspec.ValidationError, msgspec.DecodeError):
        pass
    for number, raw in enumerate(raws, first):
        try:
            _decoder.decode(raw)
        except msgspec.ValidationError as exc:
            raise InvalidArgument(f"line {number}: {exc}") from exc
        except msgspec.DecodeError as exc:
            raise InvalidArgument(f"line {number}: not a JSON object ({exc})") from exc
    raise InvalidArgument(f"lines {first} to {first + len(raws) - 1} are not JSON lines")


def _puts(source: IO[bytes], batch: int) -> Iterator[tuple[list[Put], int, int]]:
    """Batches of puts from JSON lines: (puts, lines skipped as expired, bytes read so far)."""
    done = 0
    number = 0
    while True:
        raws: list[bytes] = []
        numbers: list[int] = []
        for raw in source:
            number += 1
            done += len(raw)
            if raw.strip():
                raws.append(raw if raw.endswith(b"\n") else raw + b"\n")
                numbers.append(number)
                if len(raws) >= batch:
                    break
        if not raws:
            return
        puts: list[Put] = []
        skipped = 0
        lines = _decode(raws, numbers[0]) if numbers[-1] - numbers[0] + 1 == len(raws) else None
        if lines is None:
            # Blank lines in between: decode one by one so that errors name the right line.
            lines = [_decode([raw], n)[0] for raw, n in zip(raws, numbers, strict=True)]
        now = time.time()
        for line, n in zip(lines, numbers, strict=True):
            ttl = None
            if line.expires_at is not None:
                ttl = _expiry(line.expires_at, n) - now
                if ttl <= 0:
                    skipped += 1
                    continue
            puts.append(Put(line.key, line.value, ttl=ttl, content_type=line.content_type))
        yield puts, skipped, done


def _import(args: argparse.Namespace) -> int:
    batch = _batch(args)
    total: int | None = None
    source: IO[bytes]
    if args.file == "-":
        source = sys.stdin.buffer
    else:
        try:
            source = open(args.file, "rb")  # noqa: SIM115 - closed below, after the store
            total = os.fstat(source.fileno()).st_size
        except OSError as exc:
            raise InvalidArgument(f"cannot read {args.file}: {exc.strerror}") from exc
    progress = Progress("imported", _progress_stream(args), total)
    try:
        expired, failed = asyncio.run(_write_batches(args, _puts(source, batch), progress))
    finally:
        if source is not sys.stdin.buffer:
            source.close()
    progress.update(0, total, final=True)
    summary = f"prism: imported {progress.keys - len(failed)} keys into {args.namespace!r}"
    if expired:
        summary += f", skipped {expired} already expired"
    if failed:
        summary += f"; {len(failed)} failed, first: {failed[0]}"
    print(summary, file=sys.stderr)
    return 1 if failed else 0


async def _write_batches(
    args: argparse.Namespace, batches: Iterator[tuple[list[Put], int, int]], progress: Progress
) -> tuple[int, list[str]]:
    """Put the batches in order, reading the next one while the store writes the last.

    One put_many is in flight at a time, so a key given twice ends with its last line.
    """
    from prism.cli.kv import store_url
    from prism.kv.store import connect

    expired = 0
    failed: list[str] = []
    async with connect(store_url(args)) as store:
        ns = store.namespace(args.namespace)
        pending: asyncio.Task[list[WriteResult]] | None = None
        pending_size = pending_done = 0
        while True:
            # Parsing runs while the store works on the batch sent before it.
            try:
                following = next(batches, None)
            except BaseException:
                if pending is not None:
                    await pending  # the batches before a bad line are written
                raise
            if pending is not None:
                failed += (f"{r.key}: {r.error}" for r in await pending if not r.ok)
                progress.update(pending_size, pending_done)
                pending = None
            if following is None:
                break
            puts, skipped, done = following
            expired += skipped
            if puts:
                pending = asyncio.ensure_future(ns.put_many(puts))
                pending_size, pending_done = len(puts), done
                # Let the call send its request before the next batch is read.
                await asyncio.sleep(0)
            else:
                progress.update(0, done)
    return expired, failed
