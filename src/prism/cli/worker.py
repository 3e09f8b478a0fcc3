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


def _settings(args: argparse.Namespace) -> tuple[str, dict[str, Any], dict[str, Any], list[str]]:
    """(store URL, store connect options, raw streaming settings, handler routers)."""
    from prism.streaming.config import parse_setting

    raw: dict[str, Any] = {}
    handlers = list(args.handlers)
    connect_options: dict[str, Any] = {}
    if args.config:
        from prism.gateway.config import load_config

        config = load_config(args.config)
        raw = dict(config.streaming)
        handlers = [*config.handlers, *handlers]
        name = raw.get("store") or next(iter(config.stores))
        if name not in config.stores:
            raise ValueError(f"$.streaming.store names no store of $.stores: {name!r}")
        entry = config.store_entry(name)
        url = entry.url
        connect_options = (
            {"backend": entry.backend, **entry.options} if entry.backend else dict(entry.options)
        )
    elif args.store:
        url = args.store
    else:
        raise ValueError("give --config FILE or --store URL")
    for spec in args.option:
        key, value = parse_setting(spec)
        raw[key] = value
    if args.concurrency is not None:
        raw["workers"] = args.concurrency
    raw["run_workers"] = True
    return url, connect_options, raw, handlers


def run(args: argparse.Namespace) -> int:
    """Start the workers and run until SIGTERM or Ctrl-C."""
    from prism.errors import PrismError
    from prism.gateway.config import ConfigError

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        url, connect_options, raw, handlers = _settings(args)
    except (ValueError, ConfigError, PrismError) as exc:
        print(f"prism worker: error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        return asyncio.run(_serve(url, connect_options, raw, handlers))
    except PrismError as exc:
        print(f"prism worker: error: {exc}", file=sys.stderr)
        return EXIT_CONFIG


async def _serve(url: str, connect_options: dict[str, Any], raw: dict[str, Any], handlers: list[str]) -> int:
    from prism.kv.store import connect
    from prism.streaming.config import parse_config
    from prism.streaming.service import StreamingService

    config = parse_config(raw, handlers)
    service = StreamingService(connect(url, **connect_options), config, store_url=url, owns_store=True)
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
