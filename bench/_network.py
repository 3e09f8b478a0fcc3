"""The harness of the network-backend benchmarks: Prism beside a raw driver doing the same work, in one run.

A benchmark module subclasses ``NetworkBench``: it says how to start its server, gives
its raw driver's calls (one table per baseline) and its notes, and may add a
measurement of its own. The harness does the rest. It starts the server (or uses
``PRISM_TEST_<NAME>_URL``), opens one Prism store and the raw clients, writes every
key once through each side, warms each side up, then times get, put, get_many(100)
and put_many(100) with 100 B values at each concurrency in ``calls``:

- by default ``tasks`` coroutines share one store (or one raw client) and run their
  share of the calls; in a round every side runs once, the side going first rotating
  from round to round, so a ratio compares runs made moments apart;
- with ``waves = True`` the calls go in waves of ``tasks`` concurrent calls and the
  sides take turns wave by wave, so they share the machine's drift within a round.

A table cell is the median time per call (or per key) over the rounds with its
spread; a ratio is the median over rounds of Prism's time divided by the baseline's
in the same round. Targets are stated against the first baseline.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Coroutine
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import prism
from bench._report import environment, spread, write_section
from prism.kv.namespace import MAX_BATCH
from prism.testing.servers._base import ServerUnavailable, env_url

VALUE = bytes(range(100))
BATCH = 100
#: The operations measured, each with the number of keys one call touches.
OPS = {"get": 1, "put": 1, "get_many(100)": BATCH, "put_many(100)": BATCH}
#: Prism's time at most this multiple of the first baseline's, by concurrency.
TARGETS = {1: 1.3, 64: 1.15}

#: One call of an operation: its argument is the call's number within a run.
Call = Callable[[int], Awaitable[Any]]
#: A side's calls by operation name (a side may lack some operations).
Calls = dict[str, Call]
#: Seconds per call of each side, one entry per round.
Times = dict[str, list[float]]
Results = dict[tuple[str, int], Times]


class Server(Protocol):
    """A server the benchmark started: its URL, and how to stop it for good."""

    @property
    def url(self) -> str: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Keys:
    """The key space: call ``i`` touches ``one(i)``, or the ``BATCH`` keys of ``batch(i)``.

    With ``count`` at least the number of keys a run touches, every call of a run has
    keys of its own, so no two tasks ever write the same key at once.
    """

    count: int

    def one(self, i: int) -> str:
        return f"key-{i % self.count}"

    def batch(self, i: int) -> list[str]:
        return [self.one(i * BATCH + j) for j in range(BATCH)]

    def all(self) -> list[str]:
        return [self.one(i) for i in range(self.count)]


@dataclass(frozen=True)
class Unit:
    """How the table shows a time: ``name`` (µs, ms) per call or per key, with ``decimals``."""

    name: str
    scale: float
    decimals: int
    per_key: bool = False

    @property
    def per(self) -> str:
        return "key" if self.per_key else "call"

    @property
    def label(self) -> str:
        return f"{self.name}/{self.per}"

    def cell(self, op: str, seconds: list[float] | None) -> str:
        """Median (min-max) of one side's rounds, or ``-`` when the side lacks ``op``."""
        if not seconds:
            return "-"
        scale = self.scale / (OPS[op] if self.per_key else 1)
        median, lo, hi = spread([s * scale for s in seconds])
        d = self.decimals
        return f"{median:.{d}f} ({lo:.{d}f}-{hi:.{d}f})"


MICROS = Unit("µs", 1e6, 0)
MILLIS = Unit("ms", 1e3, 2)
MICROS_PER_KEY = Unit("µs", 1e6, 1, per_key=True)


@dataclass(frozen=True)
class Baseline:
    """A raw side: ``label`` heads its column, ``short`` names it in its ratio column (Prism/short)."""

    label: str
    short: str


def table(
    get: Call | None = None,
    put: Call | None = None,
    get_many: Call | None = None,
    put_many: Call | None = None,
) -> Calls:
    """A side's call table from the operations it has."""
    calls = {"get": get, "put": put, "get_many(100)": get_many, "put_many(100)": put_many}
    return {op: call for op, call in calls.items() if call is not None}


def prism_calls(ns: prism.Namespace, keys: Keys) -> Calls:
    """The four operations through Prism's public API."""
    return table(
        get=lambda i: ns.get(keys.one(i)),
        put=lambda i: ns.put(keys.one(i), VALUE),
        get_many=lambda i: ns.get_many(keys.batch(i)),
        put_many=lambda i: ns.put_many([prism.Put(k, VALUE) for k in keys.batch(i)]),
    )


async def run_calls(call: Call, calls: int, tasks: int) -> float:
    """Seconds per call: ``calls`` calls split over ``tasks`` concurrent tasks."""

    async def worker(first: int) -> None:
        for i in range(first, calls, tasks):
            await call(i)

    start = time.perf_counter()
    await asyncio.gather(*(worker(t) for t in range(tasks)))
    return (time.perf_counter() - start) / calls


async def run_turns(sides: dict[str, Call], calls: int, tasks: int, turn: int) -> dict[str, float]:
    """Seconds per call of each side, one after another, starting with side number ``turn`` (mod sides)."""
    return {who: await run_calls(sides[who], calls, tasks) for who in _rotated(list(sides), turn)}


async def run_waves(sides: dict[str, Call], calls: int, tasks: int) -> dict[str, float]:
    """Seconds per call of each side, in waves of ``tasks`` concurrent calls, the sides taking turns."""
    spent = dict.fromkeys(sides, 0.0)
    for wave, first in enumerate(range(0, calls, tasks)):
        numbers = range(first, min(first + tasks, calls))
        for who in _rotated(list(sides), wave):
            start = time.perf_counter()
            await asyncio.gather(*(sides[who](i) for i in numbers))
            spent[who] += time.perf_counter() - start
    return {who: seconds / calls for who, seconds in spent.items()}


def _rotated(names: list[str], turn: int) -> list[str]:
    k = turn % len(names)
    return names[k:] + names[:k]


def ratio(times: Times, baseline: str) -> float:
    """Median over rounds of Prism's time divided by ``baseline``'s in the same round."""
    return statistics.median(p / q for p, q in zip(times["prism"], times[baseline], strict=True))


def _event_loop() -> tuple[str, Callable[[Coroutine[Any, Any, Any]], Any]]:
    try:
        import uvloop
    except ImportError:
        return "asyncio", asyncio.run
    return "uvloop", uvloop.run


class NetworkBench(ABC):
    """One network backend's benchmark: the class attributes and ``start_server``/``raw`` describe it."""

    #: The section of docs/benchmarks.md, the ``make bench ARGS=`` name and ``PRISM_TEST_<NAME>_URL``.
    name: ClassVar[str]
    title: ClassVar[str]
    #: Distributions whose versions the section names, besides prism, msgspec and uvloop.
    packages: ClassVar[tuple[str, ...]]
    #: The server the benchmark starts, as the section names it.
    server: ClassVar[str]
    #: The raw sides, in the order of ``raw``'s tables; targets are stated against the first.
    baselines: ClassVar[tuple[Baseline, ...]]
    #: Calls per round and side by (operation, concurrency), in the table's order.
    calls: ClassVar[dict[tuple[str, int], int]]
    #: What the clients of both sides are (pools, timeouts), for the method paragraph.
    clients: ClassVar[str]
    #: Paragraphs after the table: what each side does per call.
    notes: ClassVar[tuple[str, ...]] = ()
    keys: ClassVar[Keys] = Keys(1000)
    rounds: ClassVar[int] = 7
    unit: ClassVar[Unit] = MICROS
    waves: ClassVar[bool] = False
    #: Unmeasured calls of each operation and side, at the widest concurrency, before the rounds.
    warmup: ClassVar[int] = 64
    #: Keyword options of ``prism.connect``.
    options: ClassVar[dict[str, Any]] = {}

    @abstractmethod
    def start_server(self) -> Server:
        """Start a private server (ServerUnavailable, saying what to install, when it cannot)."""

    @abstractmethod
    def raw(self, url: str) -> AbstractAsyncContextManager[list[Calls]]:
        """Open the raw clients on ``url``: one call table per baseline; leaving closes them."""

    async def prepare(self) -> None:
        """Run after every key is written and before the warm-up (e.g. refresh planner statistics)."""
        return None

    async def extra(self, store: prism.Store, namespace: str, sides: dict[str, Calls]) -> str:
        """A further measurement on the open store and sides, as markdown after the notes."""
        return ""

    def where(self, local: bool) -> str:
        """The server, as the Command line names it."""
        return self.server if local else f"the server of PRISM_TEST_{self.name.upper()}_URL"

    def run(self) -> None:
        """Measure Prism and the raw sides and write this backend's section of docs/benchmarks.md."""
        loop_name, runner = _event_loop()
        url = env_url(self.name)
        server = None
        if url is None:
            try:
                server = self.start_server()
            except ServerUnavailable as exc:
                sys.exit(f"bench {self.name}: {exc}")
            url = server.url
        try:
            results, extra = runner(self._measure(url))
        finally:
            if server is not None:
                server.close()
        write_section(self.name, self.report(results, extra, loop_name, self.where(server is not None)))

    async def _measure(self, url: str) -> tuple[Results, str]:
        namespace = f"bench-{os.getpid()}"
        results: Results = {}
        async with prism.connect(url, **self.options) as store, self.raw(url) as raw_tables:
            ns = store.namespace(namespace)
            sides = {"prism": prism_calls(ns, self.keys)}
            sides.update((b.label, t) for b, t in zip(self.baselines, raw_tables, strict=True))
            for calls in sides.values():  # every key once through each side
                for i in range(self.keys.count // BATCH):
                    await calls["put_many(100)"](i)
            await self.prepare()
            widest = max(tasks for _, tasks in self.calls)
            for calls in sides.values():  # open every connection, fill every statement or script cache
                for call in calls.values():
                    await run_calls(call, self.warmup, widest)
            for (op, tasks), count in self.calls.items():
                results[op, tasks] = times = await self._rounds(sides, op, count, tasks)
                ratios = " ".join(f"prism/{b.short} {ratio(times, b.label):.3f}" for b in self._having(times))
                print(f"  {op:>14} x{tasks:<3} {ratios}", file=sys.stderr)
            extra = await self.extra(store, namespace, sides)
            everything = self.keys.all()
            for start in range(0, len(everything), MAX_BATCH):
                await ns.delete_many(everything[start : start + MAX_BATCH])
        return results, extra

    async def _rounds(self, sides: dict[str, Calls], op: str, count: int, tasks: int) -> Times:
        having = {who: calls[op] for who, calls in sides.items() if op in calls}
        times: Times = {who: [] for who in having}
        for r in range(self.rounds):
            if self.waves:
                spent = await run_waves(having, count, tasks)
            else:
                spent = await run_turns(having, count, tasks, r)
            for who, seconds in spent.items():
                times[who].append(seconds)
        return times

    def _having(self, times: Times) -> list[Baseline]:
        return [b for b in self.baselines if b.label in times]

    def report(self, results: Results, extra: str, loop_name: str, where: str) -> str:
        """The section's markdown: setup, method, table, missed targets, notes, and the extra part."""
        unit, first = self.unit, self.baselines[0]
        head = ["op", "concurrency", f"Prism {unit.label}", f"{first.label} {unit.label}"]
        head += [f"Prism/{first.short}", "target"]
        for b in self.baselines[1:]:
            head += [f"{b.label} {unit.label}", f"Prism/{b.short}"]
        rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        missed = []
        for (op, tasks), times in results.items():
            main, target = ratio(times, first.label), TARGETS[tasks]
            row = [op, str(tasks), unit.cell(op, times["prism"]), unit.cell(op, times[first.label])]
            row += [f"{main:.2f}", f"<= {target} {'met' if main <= target else 'missed'}"]
            for b in self.baselines[1:]:
                row += [unit.cell(op, times.get(b.label))]
                row += [f"{ratio(times, b.label):.2f}" if b.label in times else "-"]
            rows.append("| " + " | ".join(row) + " |")
            if main > target:
                over = f"{main:.2f}x, {main / target - 1:.0%} over the target"
                missed.append(f"- {op} at concurrency {tasks}: {over}")
        if self.waves:
            concurrency = (
                "Concurrency N = waves of N concurrent calls on one store / one raw client, the sides taking "
                "turns wave by wave within a round."
            )
        else:
            concurrency = (
                "Concurrency N = N tasks sharing one store / one raw client; in a round each side runs once, "
                "the side going first rotating from round to round."
            )
        packages = environment("prism", *self.packages, "msgspec", "uvloop")
        parts = [
            f"## {self.title}",
            f"Command: `make bench ARGS={self.name}` ({packages}, event loop {loop_name}, {where}, "
            f"{os.cpu_count()} CPUs shared by the client, the server and whatever else ran).",
            f"100 B values, {self.rounds} rounds; time per {unit.per} in {unit.name}, median "
            "(min-max) over rounds; a ratio is the median of the per-round ratios of Prism's time to the "
            f"baseline's. {concurrency} {self.clients} Targets, against *{first.label}*: Prism/{first.short} "
            f"<= {TARGETS[1]} at concurrency 1 and <= {TARGETS[64]} at concurrency 64.",
            "\n".join(rows),
            "Targets missed:\n\n" + "\n".join(missed) if missed else "All targets met.",
            *self.notes,
            extra,
        ]
        return "\n\n".join(part for part in parts if part)
