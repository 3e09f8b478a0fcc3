"""The guarantees of a live migration, each against real servers, on three pairs of stores.

Eight writers keep writing through the migrating namespace (puts, conditional puts,
deletes, ttl puts, record item writes) while the backfill, the verify and the cutover
run; afterwards the target must hold exactly the last acknowledged state of every
key, with its etag, content type and expiry.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from prometheus_client import REGISTRY

import prism
from prism.migration import MigrationRefused, MigrationSettings
from prism.model import Put

from .workload import SHORT_TTL, Expected, Model, Writer, check_store

#: Fast polling, small pages: phase changes and checkpoints happen often in a short test.
SETTINGS = MigrationSettings(poll_interval=0.1, page_size=40)
WRITERS = 8


def _sizes(target: str) -> tuple[int, float, float]:
    """(filler entries, backfill rps, pause between a writer's ops): moto serves one request at a time."""
    if target.startswith("dynamodb"):
        return 120, 300.0, 0.02
    return 400, 500.0, 0.002


async def test_no_acknowledged_write_is_lost_across_the_whole_migration(
    pair: tuple[str, str], namespace: str
) -> None:
    source, target = pair
    fill_count, rps, pause = _sizes(target)
    model = Model()
    fill: dict[str, Expected] = {}
    async with prism.migrate(source, target, namespace, settings=SETTINGS) as m:
        ns = m.namespace_handle()
        writers = [Writer(ns, n, model, pause=pause) for n in range(WRITERS)]
        for writer in writers:
            await writer.seed()
        puts = [
            Put(
                f"fill-{i:04d}",
                b"x%d" % i,
                ttl=(SHORT_TTL if i % 10 == 0 else None),
                content_type="text/plain",
            )
            for i in range(fill_count)
        ]
        started = time.time()
        for i in range(0, len(puts), 100):
            for put, result in zip(puts[i : i + 100], await ns.put_many(puts[i : i + 100]), strict=True):
                ttl = put.ttl if isinstance(put.ttl, float) else None
                fill[put.key] = Expected(
                    put.value,
                    result.etag,
                    "text/plain",
                    None if ttl is None else (started + ttl, time.time() + ttl),
                )
        probe = await ns.put("probe", b"before")

        status = await m.start()
        assert status["phase"] == "shadowing"
        stop = asyncio.Event()
        tasks = [asyncio.create_task(w.run(stop)) for w in writers]
        try:
            status = await m.backfill(rps=rps)
            assert status["phase"] == "backfilled" and status["backfill"]["done"]
            status = await m.verify()
            assert status["phase"] == "verified", status
            status = await m.cutover()
            assert (status["phase"], status["primary"]) == ("cut_over", m.target_name)
            await asyncio.sleep(0.5)  # the writers go on against the new primary
        finally:
            stop.set()
            await asyncio.gather(*tasks)
        # An etag read before the cutover still matches after it.
        probe = await ns.put("probe", b"after", if_match=probe)
        model.put("probe", "", b"after", probe)
        assert sum(w.conditional for w in writers) > 0
        status = await m.complete()
        assert status["phase"] == "complete" and status["shadow"]["failed"] == 0
    await asyncio.sleep(SHORT_TTL + 1.0)  # every short ttl has passed: those keys must stay expired
    async with prism.connect(target) as store:
        counts = await check_store(
            store.namespace(namespace), model, fill=fill, strong=store.capabilities.consistent_reads
        )
    assert counts["present"] > fill_count * 0.8 and counts["deleted"] > 0 and counts["expired"] > 0, counts


async def test_phases_refuse_what_they_do_not_allow(sqlite_url: str, redis: str, namespace: str) -> None:
    async with prism.migrate(sqlite_url, redis, namespace, settings=SETTINGS) as m:
        with pytest.raises(MigrationRefused, match="no migration"):
            await m.status()
        await m.start()
        with pytest.raises(MigrationRefused, match="already running"):
            await m.start()
        with pytest.raises(MigrationRefused, match="clean verify first"):
            await m.cutover()
        with pytest.raises(MigrationRefused, match="not allowed in phase shadowing"):
            await m.complete()
        await m.namespace_handle().put("k", b"v")
        await m.backfill()
        await m.verify()
        await m.cutover()
        with pytest.raises(MigrationRefused, match="roll back first"):
            await m.abort()
        status = await m.rollback()
        assert (status["phase"], status["primary"]) == ("verified", m.source_name)
        status = await m.abort()
        assert status["phase"] == "aborted"
        # Abort leaves the target's data in place, and a new migration may start.
        async with prism.connect(redis) as store:
            assert (await store.namespace(namespace).get("k")) is not None
        assert (await m.start())["phase"] == "shadowing"


async def test_backfill_progress_is_exported_as_metrics(sqlite_url: str, redis: str, namespace: str) -> None:
    async with prism.connect(sqlite_url) as store:
        await store.namespace(namespace).put_many([Put(f"k{i}", b"v") for i in range(5)])

    def sample(name: str) -> float:
        return REGISTRY.get_sample_value(name, {"namespace": namespace}) or 0.0

    running_seen: list[float] = []
    async with prism.migrate(sqlite_url, redis, namespace, settings=SETTINGS) as m:
        await m.start()
        before = sample("prism_migration_backfill_items_total")
        status = await m.backfill(
            progress=lambda _: running_seen.append(sample("prism_migration_backfill_running"))
        )
    assert status["backfill"]["copied"] == 5
    assert sample("prism_migration_backfill_items_total") == before + 5
    assert running_seen and set(running_seen) == {1.0}
    assert sample("prism_migration_backfill_running") == 0.0
