"""``prism kv get|put|delete|ls NAMESPACE [KEY]``: the KeyValue API from a shell."""

from __future__ import annotations

import argparse
import base64
import sys
from typing import Any

import msgspec

from prism.errors import InvalidArgument
from prism.kv.sync import SyncNamespace, connect_sync
from prism.model import Item

__all__ = ["DEFAULT_STORE", "add_parser"]

#: The embedded store used when ``--store`` is not given.
DEFAULT_STORE = "sqlite:///.prism/data.db"


def add_parser(sub: Any) -> None:
    kv = sub.add_parser("kv", help="read and write keys", description="Read and write keys of a store.")
    kv.add_argument("--store", default=DEFAULT_STORE, help=f"store URL (default: {DEFAULT_STORE})")
    kv.add_argument("--json", action="store_true", help="print JSON (values base64) instead of raw bytes")
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

    ls = verbs.add_parser("ls", help="list keys")
    ls.add_argument("namespace")
    ls.add_argument("prefix", nargs="?", default="")
    ls.add_argument("--limit", type=int, default=1000, help="most keys to list (default 1000)")
    ls.set_defaults(func=_ls)


def _namespace(args: argparse.Namespace) -> tuple[Any, SyncNamespace]:
    store = connect_sync(args.store)
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
    token = None
    with store:
        while len(keys) < args.limit:
            page = ns.scan(args.prefix, limit=min(1000, args.limit - len(keys)), page_token=token)
            keys += page.keys
            token = page.next_page_token
            if token is None:
                break
    if args.json:
        _emit({"keys": keys, "truncated": token is not None})
    else:
        for key in keys:
            print(key)
    return 0
