"""``python -m prism.streaming``: serve the streaming API alone (see ``--help``)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Sequence

from prism.errors import PrismError
from prism.streaming.app import UVICORN_OPTIONS, create_streaming_app
from prism.streaming.auth import Identity, StaticTokens
from prism.streaming.config import parse_config, parse_setting
from prism.streaming.stores import choose_store, open_service


def parse_token(spec: str) -> tuple[str, Identity]:
    """``TOKEN=SUBJECT[@TENANT][+ROLE...]`` -> (token, identity)."""
    token, sep, who = spec.partition("=")
    if not sep or not token or not who:
        raise argparse.ArgumentTypeError(f"a token is TOKEN=SUBJECT[@TENANT][+ROLE...], not {spec!r}")
    who, *roles = who.split("+")
    subject, _, tenant = who.partition("@")
    return token, Identity(subject, tenant or "default", frozenset(roles))


def _setting(spec: str) -> tuple[str, object]:
    try:
        return parse_setting(spec)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m prism.streaming", description=__doc__)
    parser.add_argument("--store", default=os.environ.get("PRISM_STORE_URL", "memory://"), help="store URL")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument(
        "--token",
        action="append",
        type=parse_token,
        default=[],
        metavar="TOKEN=SUBJECT[@TENANT][+ROLE]",
        help="accept this bearer token as that identity (repeatable)",
    )
    parser.add_argument("--handlers", action="append", default=[], metavar="MODULE:ROUTER")
    parser.add_argument(
        "--option",
        "-o",
        action="append",
        type=_setting,
        default=[],
        metavar="NAME=VALUE",
        help="a streaming setting, e.g. -o workers=4 -o lease_seconds=10",
    )
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        config = parse_config(dict(args.option), args.handlers)
        choice = choose_store(config, url=args.store)
        service = open_service(choice, config, authenticator=StaticTokens(dict(args.token)))
    except PrismError as exc:
        print(f"prism.streaming: error: {exc}", file=sys.stderr)
        return 2
    import uvicorn

    # uvicorn re-raises the signal it drained on; with a handler in place a drained server exits 0.
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    uvicorn.run(
        create_streaming_app(service),
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        **UVICORN_OPTIONS,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
