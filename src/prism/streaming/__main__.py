"""``python -m prism.streaming``: serve the streaming API alone (see ``--help``).

SIGTERM or Ctrl-C stops it within ``shutdown_timeout`` (``-o shutdown_timeout=20``):
status 0 after a clean drain, 4 when it had to stop without one (a second signal, or
the timeout ran out).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import os
import sys
from collections.abc import Sequence

from prism.errors import PrismError
from prism.streaming.app import UVICORN_OPTIONS, create_streaming_app
from prism.streaming.auth import Identity, StaticTokens
from prism.streaming.config import StreamingConfig, parse_config, parse_setting
from prism.streaming.shutdown import ProcessStop, drain_budget
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
    # Installed first, so that a signal while starting is honoured rather than lost.
    stop = ProcessStop("prism.streaming", StreamingConfig().shutdown_timeout).install()
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        config = parse_config(dict(args.option), args.handlers)
        choice = choose_store(config, url=args.store)
        service = open_service(choice, config, authenticator=StaticTokens(dict(args.token)))
    except PrismError as exc:
        print(f"prism.streaming: error: {exc}", file=sys.stderr)
        return 2
    stop.timeout = config.shutdown_timeout
    import uvicorn

    from prism.gateway.server import BoundedServer

    server = BoundedServer(
        uvicorn.Config(
            create_streaming_app(service),
            host=args.host,
            port=args.port,
            log_level=args.log_level,
            timeout_graceful_shutdown=max(1, math.floor(drain_budget(config.shutdown_timeout))),
            **UVICORN_OPTIONS,
        ),
        stop,
    )
    if not stop.requested:
        try:
            server.run()
        except SystemExit:
            pass
        except (asyncio.CancelledError, KeyboardInterrupt):
            if not stop.requested:
                raise
        finally:
            stop.finish()
    if stop.requested and not server.started:
        print(f"prism.streaming: {stop.signal_name} received while starting; stopped", file=sys.stderr)
        return 0
    return 0 if server.started else 1


if __name__ == "__main__":
    sys.exit(main())
