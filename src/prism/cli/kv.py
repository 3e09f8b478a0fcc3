"""``prism kv get|put|delete|ls|export|import|watch NAMESPACE ...``: the KeyValue API from a shell.

The store is, in order: ``--store URL``; a running gateway named by ``--url`` or the
``PRISM_URL`` environment variable (reached through the ``prism+http://`` backend,
with the token from ``PRISM_TOKEN``); otherwise the embedded SQLite store in
``./.prism/``, created by the first ``put`` (which says so on stderr).
"""

from __future__ import annotations

import argparse
import base64
import os
import sys
from pathlib import Path
from typing import Any

import msgspec

from prism.cli.tables import format_table
from prism.errors import InvalidArgument
from prism.kv.sync import SyncNamespace, connect_sync
from prism.model import Item

__all__ = ["DEFAULT_DATA_DIR", "DEFAULT_STORE", "add_parser", "store_url"]

#: The directory of the embedded store used when no store or gateway is given.
DEFAULT_DATA_DIR = ".prism"
#: The embedded store used when no store or gateway is given.
DEFAULT_STORE = f"sqlite:///{DEFAULT_DATA_DIR}/data.db"
#: Environment variable naming a running gateway (``http://host:port``).
URL_ENV = "PRISM_URL"
#: Keys read per request when ``ls --long`` shows sizes and expiry.
LONG_LISTING_BATCH = 100


def add_parser(sub: Any) -> None:
    kv = sub.add_parser(
        "kv",
        help="read and write keys",
        description=(
            "Read and write keys of a store or of a running gateway. Without --store or --url "
            f"(or {URL_ENV}) the embedded store in ./{DEFAULT_DATA_DIR}/ is used."
        ),
    )
    where = kv.add_mutually_exclusive_group()
    where.add_argument("--store", help=f"store URL (default: {DEFAULT_STORE})")
    where.add_argument(
        "--url",
        help=f"a running gateway, http://host:port (default: ${URL_ENV}); token from $PRISM_TOKEN",
    )
    kv.add_argument(
        "--json", action="store_true", help="print JSON (values base64) instead of raw bytes or tables"
    )
    verbs = kv.add_subparsers(dest="verb", required=True, metavar="VERB")

    get = verbs.add_parser("get", help="print a key's value")
    get.add_argument("namespace")
    get.add_argument("key")
    get.set_defaults(func=_get)

    put = verbs.add_parser("put", help="store a value: from VALUE, --file PATH, or stdin ('-' or nothing)")
    put.add_argument("namespace")
    put.add_argument("key")
    put.add_argument("value", nargs="?", help="the value; '-' or absent reads stdin")
    put.add_argument("--file", help="read the value from this file")
    put.add_argument("--ttl", type=float, help="seconds until the key expires")
    put.add_argument("--content-type")
    put.add_argument("--if-match", help="write only if the current etag is this")
    put.add_argument("--if-absent", action="store_true", help="write only if the key does not exist")
    put.set_defaults(func=_put)

    delete = verbs.add_parser("delete", help="delete a key")
    delete.add_argument("namespace")
    delete.add_argument("key")
    delete.add_argument("--if-match")
    delete.set_defaults(func=_delete)

    ls = verbs.add_parser(
        "ls",
        help="list keys",
        description=(
            "List keys: a table on a terminal, one JSON object per line when piped, one JSON "
            "document with --json. When more keys exist than --limit, the output says so."
        ),
    )
    ls.add_argument("namespace")
    ls.add_argument("prefix", nargs="?", default="")
    ls.add_argument("--limit", type=int, default=1000, help="most keys to list (default 1000)")
    ls.add_argument("--page-token", help="continue a listing after its last key (from --json output)")
    ls.add_argument("-l", "--long", action="store_true", help="also show size, content type and expiry")
    ls.set_defaults(func=_ls)

    from prism.cli.kv_transfer import add_verbs
    from prism.cli.kv_watch import add_verb as add_watch

    add_verbs(verbs)
    add_watch(verbs)


def _gateway_url(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if sep and scheme in ("http", "https"):
        return f"prism+{scheme}://{rest}"
    if sep and scheme in ("prism+http", "prism+https"):
        return url
    raise InvalidArgument(f"a gateway URL looks like http://localhost:8080, not {url!r}")


def store_url(args: argparse.Namespace) -> str:
    """The store ``args`` names; the default data directory is created only by a write."""
    if args.store is not None:
        return str(args.store)
    url = args.url or os.environ.get(URL_ENV)
    if url:
        return _gateway_url(url)
    data = Path(DEFAULT_DATA_DIR)
    if not data.is_dir():
        if args.verb not in ("put", "import"):
            raise InvalidArgument(
                f"there is no data directory {data.resolve()}: nothing was stored from here yet "
                "(run prism kv where ./.prism/ is, or pass --store or --url)"
            )
        data.mkdir()
        print(f"prism: created the data directory {data.resolve()} for the embedded store", file=sys.stderr)
    return DEFAULT_STORE


def _namespace(args: argparse.Namespace) -> tuple[Any, SyncNamespace]:
    store = connect_sync(store_url(args))
    return store, store.namespace(args.namespace)


def _emit(obj: Any) -> None:
    sys.stdout.buffer.write(msgspec.json.encode(obj) + b"\n")


def _item_json(item: Item) -> dict[str, Any]:
    return {
        "key": item.key,
        "value": base64.b64encode(item.value).decode("ascii"),
        "etag": item.etag,
        "content_type": item.content_type,
        "expires_at": item.expires_at.isoformat() if item.expires_at else None,
    }


def _get(args: argparse.Namespace) -> int:
    store, ns = _namespace(args)
    with store:
        item = ns.get(args.key)
    if item is None:
        print(f"prism: {args.key!r} not found in {args.namespace!r}", file=sys.stderr)
        return 1
    if args.json:
        _emit(_item_json(item))
    else:
        sys.stdout.buffer.write(item.value)
        sys.stdout.buffer.flush()
    return 0


def _read_value(args: argparse.Namespace) -> bytes:
    if args.file is not None:
        if args.value is not None:
            raise InvalidArgument("give the value either as an argument or with --file, not both")
        try:
            with open(args.file, "rb") as f:
                return f.read()
        except OSError as exc:
            raise InvalidArgument(f"cannot read {args.file}: {exc.strerror}") from exc
    if args.value is None or args.value == "-":
        return sys.stdin.buffer.read()
    return str(args.value).encode("utf-8")


def _put(args: argparse.Namespace) -> int:
    value = _read_value(args)
    store, ns = _namespace(args)
    with store:
        etag = ns.put(
            args.key,
            value,
            ttl=args.ttl,
            content_type=args.content_type,
            if_match=args.if_match,
            if_absent=args.if_absent,
        )
    if args.json:
        _emit({"key": args.key, "etag": etag})
    else:
        print(etag)
    return 0


def _delete(args: argparse.Namespace) -> int:
    store, ns = _namespace(args)
    with store:
        deleted = ns.delete(args.key, if_match=args.if_match)
    if args.json:
        _emit({"key": args.key, "deleted": deleted})
    elif not deleted:
        print(f"prism: {args.key!r} was not there", file=sys.stderr)
    return 0


def _ls(args: argparse.Namespace) -> int:
    if args.limit < 1:
        raise InvalidArgument("--limit must be at least 1")
    store, ns = _namespace(args)
    keys: list[str] = []
    token = args.page_token
    items: list[Item | None] = []
    with store:
        while len(keys) < args.limit:
            page = ns.scan(args.prefix, limit=min(1000, args.limit - len(keys)), page_token=token)
            keys += page.keys
            token = page.next_page_token
            if token is None:
                break
        if args.long:
            for start in range(0, len(keys), LONG_LISTING_BATCH):
                items += ns.get_many(keys[start : start + LONG_LISTING_BATCH])
    rows = [_row(key, items[i] if args.long else None, args.long) for i, key in enumerate(keys)]
    truncated = token is not None
    if args.json:
        document: dict[str, Any] = {"keys": keys, "truncated": truncated, "next_page_token": token}
        if args.long:
            document["items"] = rows
        _emit(document)
    elif sys.stdout.isatty():
        _table(rows)
        if truncated:
            more = f"raise --limit, narrow the prefix, or continue with --page-token {token}"
            print(f"first {len(keys)} keys; more exist ({more})")
        else:
            print(f"{len(keys)} key{'' if len(keys) == 1 else 's'}")
    else:
        for row in rows:
            _emit(row)
        if truncated:
            more = "raise --limit, or use --json for the page token"
            print(f"prism: listed the first {len(keys)} keys; more exist ({more})", file=sys.stderr)
    return 0


def _row(key: str, item: Item | None, long: bool) -> dict[str, Any]:
    if not long:
        return {"key": key}
    if item is None:  # deleted or expired between the listing and the read
        return {"key": key, "bytes": None, "content_type": None, "expires_at": None}
    return {
        "key": key,
        "bytes": len(item.value),
        "content_type": item.content_type,
        "expires_at": item.expires_at.isoformat() if item.expires_at else None,
    }


def _table(rows: list[dict[str, Any]]) -> None:
    # A key may hold tabs or newlines: format_table escapes them, so a row stays one line.
    if rows:
        print(format_table(rows))
