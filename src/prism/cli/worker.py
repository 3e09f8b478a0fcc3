"""``prism worker``: run streaming workers alone (no HTTP), next to ``prism serve`` replicas.

    prism worker --config prism.yaml            # the store and streaming settings of the gateway config
    prism worker --store redis://localhost:6379/0 --concurrency 8 --handlers myapp.jobs:router

Workers lease queued requests, run their handlers, publish progress and write the
results. SIGTERM or Ctrl-C stops leasing; running jobs are interrupted and freed at
once for other workers (they restart from the beginning there). The worker says which
requests it released (each by its id) and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Coroutine
from typing import Any

__all__ = ["add_parser"]

EXIT_CONFIG = 2


def add_parser(subparsers: Any) -> None:
    """Register ``prism worker``."""
    parser = subparsers.add_parser(
        "worker",
        help="run streaming workers (no HTTP)",
        description="Run the workers of streaming requests against a shared store and queue.",
    )
    parser.add_argument("--config", "-c", help="a gateway YAML config (its stores, streaming: and handlers:)")
    parser.add_argument("--store", help="store URL (instead of --config)")
    parser.add_argument("--concurrency", type=int, help="jobs run at once (streaming.workers)")
    parser.add_argument(
        "--handlers", action="append", default=[], metavar="MODULE:ROUTER", help="extra handlers"
    )
    parser.add_argument(
        "--option", "-o", action="append", default=[], metavar="NAME=VALUE", help="a streaming setting"
    )
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    parser.set_defaults(func=run)


def _service(args: argparse.Namespace) -> Any:
    """The StreamingService of the worker: settings from the config file and the command line."""
    from prism.streaming.config import parse_config, parse_setting
    from prism.streaming.stores import choose_store, open_service

    raw: dict[str, Any] = {}
    handlers = list(args.handlers)
    config = None
    if args.config:
        from prism.gateway.config import load_config

        config = load_config(args.config)
        raw = dict(config.streaming)
        handlers = [*config.handlers, *handlers]
    elif not args.store:
        raise ValueError("give --config FILE or --store URL")
    for spec in args.option:
        key, value = parse_setting(spec)
        raw[key] = value
    if args.concurrency is not None:
        raw["workers"] = args.concurrency
    raw["run_workers"] = True
    settings = parse_config(raw, handlers)
    choice = choose_store(settings, config=config) if config is not None else None
    return open_service(choice or choose_store(settings, url=args.store), settings)


def run(args: argparse.Namespace) -> int:
    """Start the workers and run until SIGTERM or Ctrl-C."""
    from prism.errors import PrismError

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        service = _service(args)
    except (ValueError, PrismError) as exc:
        print(f"prism worker: error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        return _run_loop(_serve(service))
    except PrismError as exc:
        print(f"prism worker: error: {exc}", file=sys.stderr)
        return EXIT_CONFIG


def _run_loop(main: Coroutine[Any, Any, int]) -> int:
    """Run ``main`` on uvloop when it is installed (it sends and receives faster), else on asyncio's loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


async def _serve(service: Any) -> int:
    config = service.config
    stop = asyncio.Event()
    received: list[signal.Signals] = []
    loop = asyncio.get_running_loop()

    def on_signal(sig: signal.Signals) -> None:
        received.append(sig)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, on_signal, sig)
    async with service:
        if service.queue.engine == "embedded":
            print(
                "prism worker: warning: the embedded queue serves one process; run workers inside "
                "prism serve, or use a redis://, postgresql:// or nats:// store",
                file=sys.stderr,
            )
        print(
            f"prism worker: {config.workers} workers on the {service.queue.engine} queue "
            f"(node {service.node}, handlers: {', '.join(sorted(service.router.handlers))})",
            file=sys.stderr,
            flush=True,
        )
        await stop.wait()
        running = service.pool.running_jobs if service.pool is not None else []
        why = received[0].name if received else "stop"
        jobs = (
            f"releasing {len(running)} running job(s) for other workers: {', '.join(running)}"
            if running
            else "no job running"
        )
        print(f"prism worker: {why} received, stopping; {jobs}", file=sys.stderr, flush=True)
    print("prism worker: stopped", file=sys.stderr, flush=True)
    return 0
