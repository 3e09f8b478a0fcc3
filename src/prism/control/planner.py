"""The planner: which store can carry a namespace, given what its clients declared they need.

:func:`plan` is a pure function. It checks every need of a namespace against every
store -- the capabilities the store's backend declares (transactions, strong reads,
value size, ttl, TimeSeries) and the capacity its operator declared in the config
(rates, bytes, latency, durability) less what the namespaces already placed on it
declared -- and answers with the first store, in the config's order, that meets them
all, or with every store's failed needs. A preferred engine (``backend``: postgres,
redis, sqlite, nats, dynamodb, memory) narrows the choice to the stores of that engine;
a store of another engine fails the ``backend`` need. A capacity figure a store does not declare is
one the planner cannot promise: a namespace that needs it does not go there.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import msgspec

from prism.model import Capabilities

if TYPE_CHECKING:
    # The config's types, for annotations only: the control layer sits below the gateway.
    from prism.gateway.config import NeedsConfig, StoreCapacityConfig

__all__ = ["DURABILITY", "ENGINES", "Fail", "Plan", "StoreFails", "StoreOffer", "check_needs", "plan"]

#: Durability levels, weakest first: a store of a level meets every need up to it.
DURABILITY = ("memory", "disk", "replicated")
#: What an embedded backend keeps without being told: nothing (memory) or a file (sqlite).
_BACKEND_DURABILITY = {"memory": "memory", "sqlite": "disk"}

#: The engines a namespace may prefer, by the name it may be given (``postgresql`` is ``postgres``).
ENGINES = {
    "postgres": "postgres",
    "postgresql": "postgres",
    "redis": "redis",
    "sqlite": "sqlite",
    "nats": "nats",
    "dynamodb": "dynamodb",
    "memory": "memory",
}

#: The needs that consume a store's declared capacity, added up over the namespaces placed on it.
_SUMMED = ("read_rps", "write_rps", "total_bytes")

Wanted = str | float | int | bool | None


class Fail(msgspec.Struct, frozen=True):
    """One need a store fails: what the namespace wants and what the store has (None: not declared)."""

    need: str
    wanted: Wanted
    has: Wanted


class StoreFails(msgspec.Struct, frozen=True):
    """Why one store cannot carry the namespace."""

    store: str
    fails: list[Fail]


class Plan(msgspec.Struct, frozen=True):
    """The planner's answer: ``store`` it chose, or None with ``refused`` naming every store's fails.

    ``refused`` also lists the stores passed over before the chosen one.
    """

    store: str | None
    refused: list[StoreFails]


@dataclass(frozen=True, slots=True)
class StoreOffer:
    """A store as the planner sees it: what it honours, what it can carry, and what it already carries."""

    name: str
    backend: str
    capabilities: Capabilities
    capacity: StoreCapacityConfig | None = None
    #: The needs of the namespaces already placed on the store (the one being planned left out).
    placed: tuple[NeedsConfig, ...] = ()

    @property
    def durability(self) -> str | None:
        """The declared durability, else what an embedded backend keeps by itself, else None."""
        if self.capacity is not None and self.capacity.durability is not None:
            return self.capacity.durability
        return _BACKEND_DURABILITY.get(self.backend)

    def room(self, need: str) -> float | None:
        """The declared capacity ``need`` less what the placed namespaces declared (None: undeclared)."""
        declared = None if self.capacity is None else getattr(self.capacity, need)
        if declared is None:
            return None
        used = sum(getattr(n, need) or 0 for n in self.placed)
        left = declared - used
        return left if isinstance(declared, int) and isinstance(left, int) else float(left)


def engine(name: str) -> str | None:
    """The engine ``name`` stands for (``postgresql`` -> ``postgres``), or None when it names none."""
    return ENGINES.get(name.strip().lower())


def check_needs(
    needs: NeedsConfig,
    store: StoreOffer,
    *,
    max_value_bytes: int | None = None,
    backend: str | None = None,
) -> list[Fail]:
    """Every need of ``needs`` that ``store`` fails, the namespace's ``max_value_bytes`` and engine too."""
    caps = store.capabilities
    fails: list[Fail] = []
    if backend is not None and engine(backend) != store.backend:
        fails.append(Fail("backend", backend, store.backend))
    if needs.access_pattern == "timeseries" and not caps.timeseries:
        fails.append(Fail("access_pattern", "timeseries", "no timeseries"))
    for need in _SUMMED:
        wanted = getattr(needs, need)
        if wanted is None:
            continue
        room = store.room(need)
        if room is None or room < wanted:
            fails.append(Fail(need, wanted, room))
    if needs.item_bytes_p99 is not None and needs.item_bytes_p99 > caps.max_value_bytes:
        fails.append(Fail("item_bytes_p99", needs.item_bytes_p99, caps.max_value_bytes))
    if max_value_bytes is not None and max_value_bytes > caps.max_value_bytes:
        fails.append(Fail("max_value_bytes", max_value_bytes, caps.max_value_bytes))
    if needs.ttl_seconds is not None and not caps.ttl:
        fails.append(Fail("ttl_seconds", needs.ttl_seconds, False))
    if needs.consistency == "strong" and not caps.consistent_reads:
        fails.append(Fail("consistency", "strong", "eventual"))
    if needs.latency_p99_ms is not None:
        latency = None if store.capacity is None else store.capacity.latency_p99_ms
        if latency is None or latency > needs.latency_p99_ms:
            fails.append(Fail("latency_p99_ms", needs.latency_p99_ms, latency))
    if needs.transactions and not caps.transactions:
        fails.append(Fail("transactions", True, False))
    if needs.durability is not None:
        has = store.durability
        if has is None or DURABILITY.index(has) < DURABILITY.index(needs.durability):
            fails.append(Fail("durability", needs.durability, has))
    return fails


def plan(
    needs: NeedsConfig,
    stores: Iterable[StoreOffer],
    *,
    only: str | None = None,
    max_value_bytes: int | None = None,
    backend: str | None = None,
) -> Plan:
    """The first store (in the given order) that meets every need, or every store's reasons.

    With ``only`` (a store named by the caller) that store alone is considered, and its
    needs are still checked. With ``backend`` (an engine of :data:`ENGINES`) only a store
    of that engine is chosen; every other store fails the ``backend`` need, with its engine
    as ``has``.
    """
    refused: list[StoreFails] = []
    candidates: Sequence[StoreOffer] = [s for s in stores if only is None or s.name == only]
    for store in candidates:
        fails = check_needs(needs, store, max_value_bytes=max_value_bytes, backend=backend)
        if not fails:
            return Plan(store.name, refused)
        refused.append(StoreFails(store.name, fails))
    return Plan(None, refused)


def needs_problems(needs: NeedsConfig) -> list[tuple[str, str]]:
    """(field, rule) for each declared figure that is not a positive finite number."""
    problems: list[tuple[str, str]] = []
    for field in ("read_rps", "write_rps", "ttl_seconds", "latency_p99_ms"):
        value = getattr(needs, field)
        if value is not None and not (value > 0 and math.isfinite(value)):
            problems.append((field, "must be a positive number"))
    for field in ("item_bytes_p99", "total_bytes"):
        value = getattr(needs, field)
        if value is not None and value < 1:
            problems.append((field, "must be a positive number of bytes"))
    return problems
