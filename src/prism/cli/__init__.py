"""The ``prism`` command: kv, ts, serve, worker, request, config, auth, migrate and namespace.

Each subcommand lives in its own module exposing ``add_parser(subparsers)``, which
registers its arguments and sets ``func`` to a callable taking the parsed args and
returning an exit code. Errors are one clear line on stderr and a non-zero exit.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
from collections.abc import Sequence
from importlib import metadata

from prism.errors import PrismError

__all__ = ["main"]

#: Subcommand modules, imported lazily so ``prism kv`` never loads the server stack.
COMMANDS = ("kv", "ts", "serve", "worker", "request", "config", "auth", "migrate", "namespace")


def _version() -> str:
    try:
        return metadata.version("prism")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


def build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="prism", description="Prism data-access layer")
    parser.add_argument("--version", action="version", version=f"prism {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    wanted = next((a for a in argv if not a.startswith("-")), None)
    for name in COMMANDS:
        if wanted not in (None, name) and wanted in COMMANDS:
            # Only the chosen command's module is imported; the others are listed by name.
            sub.add_parser(name)
            continue
        try:
            module = importlib.import_module(f"prism.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"prism.cli.{name}":
                raise
            continue
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(argv).parse_args(argv)
    try:
        code: int = args.func(args)
    except PrismError as exc:
        print(f"prism: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (``prism kv ls | head``): stop quietly, as other tools do.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    return code


if __name__ == "__main__":
    sys.exit(main())
