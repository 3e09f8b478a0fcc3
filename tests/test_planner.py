"""The planner's decisions, table-driven: needs x stores -> the chosen store, or every store's reasons."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import msgspec
import pytest

from prism.control.planner import StoreOffer, check_needs, needs_problems, plan
from prism.gateway.config import NeedsConfig, StoreCapacityConfig
from prism.model import Capabilities


def needs(**fields: Any) -> NeedsConfig:
    return NeedsConfig(**fields)


def capacity(**fields: Any) -> StoreCapacityConfig:
    return StoreCapacityConfig(**fields)


MEMORY = StoreOffer("mem", "memory", Capabilities())
SQLITE = StoreOffer("lite", "sqlite", Capabilities(max_value_bytes=1 << 20))
REDIS = StoreOffer(
    "redis",
    "redis",
    Capabilities(max_value_bytes=512 << 20, token_buckets=True, timeseries=True),
    capacity(read_rps=50_000, write_rps=20_000, total_bytes=8 << 30, latency_p99_ms=2, durability="memory"),
)
PG = StoreOffer(
    "pg",
    "postgres",
    Capabilities(max_value_bytes=256 << 20, timeseries=True, watch=True),
    capacity(
        read_rps=5_000, write_rps=2_000, total_bytes=500 << 30, latency_p99_ms=10, durability="replicated"
    ),
)
#: Eventual reads, no transactions, no ttl, 400 KB values.
DYNAMO = StoreOffer(
    "dynamo",
    "dynamodb",
    Capabilities(consistent_reads=False, transactions=False, ttl=False, max_value_bytes=400_000),
    capacity(read_rps=100_000, write_rps=100_000, latency_p99_ms=20, durability="replicated"),
)
ALL = [MEMORY, SQLITE, REDIS, PG, DYNAMO]

CASES: list[tuple[str, NeedsConfig, list[StoreOffer], str | None, dict[str, list[tuple[str, Any, Any]]]]] = [
    ("no needs: the first store", needs(), ALL, "mem", {}),
    (
        "disk durability skips memory",
        needs(durability="disk"),
        ALL,
        "lite",
        {"mem": [("durability", "disk", "memory")]},
    ),
    (
        "replicated durability",
        needs(durability="replicated"),
        ALL,
        "pg",
        {
            "mem": [("durability", "replicated", "memory")],
            "lite": [("durability", "replicated", "disk")],
            "redis": [("durability", "replicated", "memory")],
        },
    ),
    (
        "rates need declared capacity",
        needs(read_rps=100),
        ALL,
        "redis",
        {"mem": [("read_rps", 100, None)], "lite": [("read_rps", 100, None)]},
    ),
    (
        "latency target",
        needs(latency_p99_ms=5, read_rps=10),
        [PG, REDIS],
        "redis",
        {"pg": [("latency_p99_ms", 5, 10)]},
    ),
    (
        "large items",
        needs(item_bytes_p99=2 << 20),
        [SQLITE, DYNAMO, PG],
        "pg",
        {"lite": [("item_bytes_p99", 2 << 20, 1 << 20)], "dynamo": [("item_bytes_p99", 2 << 20, 400_000)]},
    ),
    (
        "strong reads, transactions and ttl",
        needs(consistency="strong", transactions=True, ttl_seconds=60, durability="replicated"),
        [DYNAMO, PG],
        "pg",
        {
            "dynamo": [
                ("ttl_seconds", 60, False),
                ("consistency", "strong", "eventual"),
                ("transactions", True, False),
            ]
        },
    ),
    (
        "timeseries needs a TimeSeries store",
        needs(access_pattern="timeseries"),
        [MEMORY, SQLITE, REDIS],
        "redis",
        {
            "mem": [("access_pattern", "timeseries", "no timeseries")],
            "lite": [("access_pattern", "timeseries", "no timeseries")],
        },
    ),
    (
        "nothing fits: every store's reasons",
        needs(write_rps=30_000, durability="replicated", latency_p99_ms=15),
        [REDIS, PG],
        None,
        {
            "redis": [("write_rps", 30_000, 20_000), ("durability", "replicated", "memory")],
            "pg": [("write_rps", 30_000, 2_000)],
        },
    ),
    (
        "total bytes",
        needs(total_bytes=100 << 30),
        [REDIS, DYNAMO, PG],
        "pg",
        {"redis": [("total_bytes", 100 << 30, 8 << 30)], "dynamo": [("total_bytes", 100 << 30, None)]},
    ),
]


@pytest.mark.parametrize(
    ("wanted", "stores", "chosen", "reasons"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_the_planner_chooses_the_first_store_meeting_every_need(
    wanted: NeedsConfig,
    stores: list[StoreOffer],
    chosen: str | None,
    reasons: dict[str, list[tuple[str, Any, Any]]],
) -> None:
    decision = plan(wanted, stores)
    assert decision.store == chosen
    got = {s.store: [(f.need, f.wanted, f.has) for f in s.fails] for s in decision.refused}
    assert got == reasons


PG_BIG = StoreOffer(
    "pg-big",
    "postgres",
    PG.capabilities,
    capacity(read_rps=50_000, write_rps=20_000, latency_p99_ms=10, durability="replicated"),
)
NATS = StoreOffer("nats", "nats", Capabilities(), capacity(read_rps=10_000, write_rps=10_000))

#: (case, preferred engine, needs, stores, chosen, every refused store's fails)
ENGINE_CASES: list[
    tuple[str, str, NeedsConfig, list[StoreOffer], str | None, dict[str, list[tuple[str, Any, Any]]]]
] = [
    (
        "the first store of the engine",
        "postgres",
        needs(),
        ALL,
        "pg",
        {
            "mem": [("backend", "postgres", "memory")],
            "lite": [("backend", "postgres", "sqlite")],
            "redis": [("backend", "postgres", "redis")],
        },
    ),
    (
        "postgresql is postgres",
        "postgresql",
        needs(),
        [REDIS, PG],
        "pg",
        {"redis": [("backend", "postgresql", "redis")]},
    ),
    (
        "case does not matter",
        "Redis",
        needs(),
        [PG, REDIS],
        "redis",
        {"pg": [("backend", "Redis", "postgres")]},
    ),
    (
        "a store of the engine that fails a need is passed over for the next one",
        "postgres",
        needs(write_rps=3_000),
        [REDIS, PG, PG_BIG],
        "pg-big",
        {"redis": [("backend", "postgres", "redis")], "pg": [("write_rps", 3_000, 2_000)]},
    ),
    (
        "no store of the engine: each store says which engine it is",
        "postgres",
        needs(),
        [MEMORY, REDIS],
        None,
        {"mem": [("backend", "postgres", "memory")], "redis": [("backend", "postgres", "redis")]},
    ),
    (
        "a store of another engine meeting every need is not chosen",
        "redis",
        needs(durability="replicated"),
        [PG, REDIS],
        None,
        {"pg": [("backend", "redis", "postgres")], "redis": [("durability", "replicated", "memory")]},
    ),
    (
        "every failed need of a store of another engine is listed",
        "dynamodb",
        needs(consistency="strong", read_rps=20_000),
        [NATS, DYNAMO],
        None,
        {
            "nats": [("backend", "dynamodb", "nats"), ("read_rps", 20_000, 10_000)],
            "dynamo": [("consistency", "strong", "eventual")],
        },
    ),
    (
        "sqlite",
        "sqlite",
        needs(durability="disk"),
        ALL,
        "lite",
        {"mem": [("backend", "sqlite", "memory"), ("durability", "disk", "memory")]},
    ),
    ("memory", "memory", needs(), [SQLITE, MEMORY], "mem", {"lite": [("backend", "memory", "sqlite")]}),
    ("nats", "nats", needs(read_rps=100), [REDIS, NATS], "nats", {"redis": [("backend", "nats", "redis")]}),
]


@pytest.mark.parametrize(
    ("backend", "wanted", "stores", "chosen", "reasons"),
    [c[1:] for c in ENGINE_CASES],
    ids=[c[0] for c in ENGINE_CASES],
)
def test_a_preferred_engine_is_chosen_among_the_stores_meeting_every_need(
    backend: str,
    wanted: NeedsConfig,
    stores: list[StoreOffer],
    chosen: str | None,
    reasons: dict[str, list[tuple[str, Any, Any]]],
) -> None:
    decision = plan(wanted, stores, backend=backend)
    assert decision.store == chosen
    got = {s.store: [(f.need, f.wanted, f.has) for f in s.fails] for s in decision.refused}
    assert got == reasons


def test_an_engine_preference_and_a_named_store_both_hold() -> None:
    assert plan(needs(), ALL, only="pg", backend="postgres").store == "pg"
    decision = plan(needs(), ALL, only="redis", backend="postgres")
    assert decision.store is None
    assert msgspec.to_builtins(decision.refused) == [
        {"store": "redis", "fails": [{"need": "backend", "wanted": "postgres", "has": "redis"}]}
    ]


def test_placed_namespaces_use_up_room_and_the_last_fit_is_exact() -> None:
    full = replace(PG, placed=(needs(write_rps=1_500), needs(write_rps=400, read_rps=4_000)))
    assert full.room("write_rps") == 100 and full.room("read_rps") == 1_000
    assert plan(needs(write_rps=100), [full]).store == "pg"
    decision = plan(needs(write_rps=100.5, read_rps=1_001), [full])
    assert decision.store is None
    assert [(f.need, f.wanted, f.has) for f in decision.refused[0].fails] == [
        ("read_rps", 1_001, 1_000),
        ("write_rps", 100.5, 100),
    ]


def test_a_named_store_is_the_only_one_considered_and_still_checked() -> None:
    assert plan(needs(), ALL, only="pg").store == "pg"
    decision = plan(needs(read_rps=10), ALL, only="mem")
    assert decision.store is None
    assert [s.store for s in decision.refused] == ["mem"]
    assert plan(needs(), ALL, only="absent").store is None


def test_a_namespace_max_value_bytes_must_fit_the_store() -> None:
    fails = check_needs(needs(), DYNAMO, max_value_bytes=1 << 20)
    assert [(f.need, f.wanted, f.has) for f in fails] == [("max_value_bytes", 1 << 20, 400_000)]
    assert check_needs(needs(), PG, max_value_bytes=1 << 20) == []


def test_declared_durability_overrides_the_backends_own() -> None:
    lite = replace(SQLITE, capacity=capacity(durability="replicated"))
    assert plan(needs(durability="replicated"), [lite]).store == "lite"


def test_reasons_encode_as_the_documented_json() -> None:
    decision = plan(needs(read_rps=100), [MEMORY])
    assert msgspec.json.decode(msgspec.json.encode(decision.refused)) == [
        {"store": "mem", "fails": [{"need": "read_rps", "wanted": 100, "has": None}]}
    ]


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"read_rps": 0}, "read_rps"),
        ({"write_rps": -3}, "write_rps"),
        ({"latency_p99_ms": float("inf")}, "latency_p99_ms"),
        ({"ttl_seconds": float("nan")}, "ttl_seconds"),
        ({"total_bytes": 0}, "total_bytes"),
        ({"item_bytes_p99": -1}, "item_bytes_p99"),
    ],
)
def test_needs_must_be_positive(fields: dict[str, Any], problem: str) -> None:
    assert [p[0] for p in needs_problems(needs(**fields))] == [problem]
    assert needs_problems(needs(read_rps=1, total_bytes=1)) == []
