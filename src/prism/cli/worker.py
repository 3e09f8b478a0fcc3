"""``prism worker``: run streaming workers alone (no HTTP), next to ``prism serve`` replicas.

    prism worker --config prism.yaml            # the store and streaming settings of the gateway config
    prism worker --store redis://localhost:6379/0 --concurrency 8 --handlers myapp.jobs:router

Workers lease queued requests, run their handlers, publish progress and write the
results. SIGTERM or Ctrl-C stops leasing; running jobs get ``cancel_grace`` seconds to
finish, the rest are interrupted and freed at once for other workers (they restart from
the beginning there). The worker says which requests it released (each by its id) and
exits within ``shutdown_timeout`` (20 s by default), also when the store does not
answer: 0 when every job finished or was handed back, 3 when some could not be handed
back (abandoned: another worker takes them over once their lease expires), 4 when it
had to stop without draining (a second signal, or ``shutdown_timeout`` ran out). Its
last line counts the jobs finished, released and abandoned. A signal that arrives
while the worker starts stops it as soon as the start can be abandoned.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import sys
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prism.streaming.shutdown import ProcessStop, StopReport

__all__ = ["add_parser"]

EXIT_CONFIG = 2
PROG = "prism worker"


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
    from prism.streaming.config import StreamingConfig
    from prism.streaming.shutdown import ProcessStop

    # Installed first, so a signal during startup is honoured rather than lost.
    stop = ProcessStop(PROG, StreamingConfig().shutdown_timeout).install()
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        service = _service(args)
    except (ValueError, PrismError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    stop.timeout = service.config.shutdown_timeout
    if stop.requested:
        print(
            f"{PROG}: {stop.signal_name} received while starting; stopped before taking any job",
            file=sys.stderr,
        )
        return 0
    try:
        report = _run_loop(_serve(service, stop))
    except PrismError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    finally:
        stop.finish()
    if report is None:
        return 0
    # Last, once the event loop is closed and the tasks it gave up on are collected (asyncio
    # logs an exception nobody retrieved when its task is collected): nothing logs after it.
    gc.collect()
    print(f"{PROG}: stopped: {report}", file=sys.stderr, flush=True)
    return report.exit_code


def _run_loop(main: Coroutine[Any, Any, StopReport | None]) -> StopReport | None:
    """Run ``main`` on uvloop when it is installed (it sends and receives faster), else on asyncio's loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


async def _serve(service: Any, stop: ProcessStop) -> StopReport | None:
    """Run the workers until a stop signal; what became of their jobs (None: stopped while starting)."""
    from prism.streaming.shutdown import StopReport

    config = service.config
    loop = asyncio.get_running_loop()
    stopped = asyncio.Event()

    def on_stop(sig: object) -> None:
        loop.call_soon_threadsafe(stopped.set)

    stop.on_stop(on_stop)
    starting = loop.create_task(service.start())
    waiting = loop.create_task(stopped.wait())
    await asyncio.wait({starting, waiting}, return_when=asyncio.FIRST_COMPLETED)
    if not starting.done():
        # The store may be unreachable (a connect that retries): starting is abandoned.
        starting.cancel()
        await asyncio.wait({starting}, timeout=stop.remaining() / 2)
        print(
            f"{PROG}: {stop.signal_name} received while starting; stopped before taking any job",
            file=sys.stderr,
            flush=True,
        )
        await _close(service, stop)
        return None
    starting.result()
    if service.queue.engine == "embedded":
        print(
            f"{PROG}: warning: the embedded queue serves one process; run workers inside "
            "prism serve, or use a redis://, postgresql:// or nats:// store",
            file=sys.stderr,
        )
    print(
        f"{PROG}: {config.workers} workers on the {service.queue.engine} queue "
        f"(node {service.node}, handlers: {', '.join(sorted(service.router.handlers))})",
        file=sys.stderr,
        flush=True,
    )
    await waiting
    running = service.pool.running_jobs if service.pool is not None else []
    jobs = (
        f"releasing {len(running)} running job(s) for other workers: {', '.join(running)}"
        if running
        else "no job running"
    )
    print(f"{PROG}: {stop.signal_name} received, stopping; {jobs}", file=sys.stderr, flush=True)
    report = StopReport()
    if service.pool is not None:
        report = await service.pool.stop(stop.remaining())
    await _close(service, stop)
    return report


async def _close(service: Any, stop: ProcessStop) -> None:
    """Close the connections, within what is left of ``shutdown_timeout`` (the store may be gone)."""
    try:
        async with asyncio.timeout(max(0.05, stop.remaining() - 0.2)):
            await service.stop()
    except TimeoutError:
        print(f"{PROG}: closing the store connections timed out; exiting anyway", file=sys.stderr, flush=True)
