"""Promotion of a PostgreSQL streaming replica while the primary is killed under a write load.

The store's URL lists both servers with ``target_session_attrs=read-write``. A write
load logs every acknowledged write; the primary is killed with SIGKILL; calls fail
fast with BackendUnavailable while no server accepts writes; the replica is promoted;
the same store reconnects to it (no restart) and every acknowledged write is there.
The primary commits with ``synchronous_commit = remote_apply`` to its replica, which
is what makes an acknowledged write survive the loss of the primary.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

import prism
from prism.errors import BackendUnavailable
from prism.testing.failover import WriteLoad
from prism.testing.servers._base import ServerUnavailable, require_or_skip
from prism.testing.servers.postgres import USER, PostgresServer

PRIMARY = {"synchronous_commit": "remote_apply", "synchronous_standby_names": "'*'"}
REPLICA = {"synchronous_standby_names": "''"}
#: Short deadlines, so that a call to the dead primary fails fast.
FAST: dict[str, Any] = {"connect_timeout": 0.5, "operation_timeout": 1.0, "max_retries": 3, "retry_cap": 0.1}


@pytest.fixture
def pair() -> Iterator[tuple[PostgresServer, PostgresServer]]:
    try:
        primary = PostgresServer.launch(settings=PRIMARY)
    except ServerUnavailable as exc:
        require_or_skip("postgres", str(exc))
    try:
        replica = PostgresServer.replica_of(primary, REPLICA)
    except BaseException:
        primary.close()
        raise
    try:
        yield primary, replica
    finally:
        replica.close()
        primary.close()


async def test_promoting_the_replica_loses_no_acknowledged_write_and_the_store_follows(
    pair: tuple[PostgresServer, PostgresServer],
) -> None:
    primary, replica = pair
    url = (
        f"postgresql://{USER}@127.0.0.1:{primary.port},127.0.0.1:{replica.port}/postgres"
        "?target_session_attrs=read-write"
    )
    async with prism.connect(url, **FAST) as store:
        ns = store.namespace(f"promote-{uuid.uuid4().hex[:8]}")
        async with WriteLoad(ns) as load:
            await asyncio.sleep(0.5)
            killed_at = time.monotonic()
            await asyncio.to_thread(primary.kill)
            await asyncio.sleep(0.3)
            started = time.monotonic()
            with pytest.raises(BackendUnavailable):
                await ns.put("during", b"x")
            took = time.monotonic() - started
            assert took < FAST["operation_timeout"] + 0.5, f"a call to no primary took {took:.2f} s"
            await asyncio.to_thread(replica.promote)
            promoted_at = time.monotonic()
            await asyncio.sleep(1.5)
        lost = await load.lost()
        assert lost == [], f"lost {len(lost)} of {len(load.acked)} acknowledged writes"
        assert all(isinstance(exc, BackendUnavailable) for _, exc in load.errors)
        assert load.acked_after(promoted_at), "the same store wrote to the promoted replica"
        assert load.errors, "writes failed while there was no primary"
        print(
            f"\npostgres promotion: {len(load.acked)} writes acknowledged, {len(lost)} lost, "
            f"{len(load.errors)} BackendUnavailable, {promoted_at - killed_at:.2f} s without a primary"
        )
