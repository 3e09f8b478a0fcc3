"""Request record writes made at the same time share store calls, each with its own condition."""

from __future__ import annotations

import asyncio

import msgspec
from prometheus_client import REGISTRY

from prism.errors import PreconditionFailed
from prism.kv.store import connect
from prism.streaming.config import parse_config
from prism.streaming.requests import RequestRecord, RequestStatus, RequestStore, Versioned, new_request_id


def _calls(namespace: str, op: str) -> float:
    labels = {"namespace": namespace, "op": op, "backend": "redis", "outcome": "ok"}
    return REGISTRY.get_sample_value("prism_kv_operations_total", labels) or 0.0


async def test_concurrent_record_writes_share_store_calls(redis_url: str) -> None:
    config = parse_config(
        {"namespace_prefix": "rw" + new_request_id("t", "u", None)[1:9], "record_batch": 16}
    )
    async with connect(redis_url) as store:
        requests = RequestStore(store, config)
        created = [
            await requests.create(
                RequestRecord(
                    request_id=new_request_id("t", "u", None),
                    action="delay",
                    payload=msgspec.Raw(b"{}"),
                    user="u",
                    tenant="t",
                )
            )
            for _ in range(60)
        ]
        ns = requests.records.name
        before = _calls(ns, "put") + _calls(ns, "put_many")

        async def take(current: Versioned) -> Versioned:
            new = msgspec.structs.replace(current.record, status=RequestStatus.PROCESSING, attempts=1)
            return await requests.replace(current, new)

        stale = created[7]
        written = await asyncio.gather(*(take(c) for c in created))
        calls = _calls(ns, "put") + _calls(ns, "put_many") - before
        assert all(w.record.status == RequestStatus.PROCESSING for w in written)
        assert [(await requests.get(c.record.request_id)).etag for c in created] == [w.etag for w in written]  # type: ignore[union-attr]
        # 60 writes in far fewer calls: one alone, then batches of at most 16.
        assert 1 + 60 / 16 <= calls < 60

        # A stale write in a batch fails alone; the others of its batch are written.
        fresh = written[:5]

        async def advance(current: Versioned) -> Versioned:
            return await requests.replace(current, msgspec.structs.replace(current.record, seq=1))

        results = await asyncio.gather(*(advance(c) for c in fresh), take(stale), return_exceptions=True)
        assert isinstance(results[-1], PreconditionFailed)
        assert [r.record.seq for r in results[:-1]] == [1] * 5  # type: ignore[union-attr]


async def test_the_event_log_keeps_one_entry_per_chunk_and_its_window() -> None:
    """Events are copied in chunks of the tail's size; a replay reads them back in order, each once."""
    from prism.streaming.eventlog import TAIL_EVENTS, EventLog

    config = parse_config({"event_log_size": 40})
    async with connect("memory://") as store:
        log = EventLog(store, config)
        rid = new_request_id("t", "u", None)
        events = [(seq, b'{"seq":%d}' % seq) for seq in range(1, 5 * TAIL_EVENTS + 1)]
        for at in range(0, len(events), TAIL_EVENTS):
            await log.copy(rid, events[at : at + TAIL_EVENTS])
        page = await log.ns.scan(rid + "/")
        # 80 events in 5 chunks; those wholly older than the last 40 events are deleted.
        assert page.keys == [log.key(rid, first) for first in (33, 49, 65)]
        assert await log.read(rid, 0, 80) == events[40:]
        assert await log.read(rid, 50, 60) == events[50:60]
        # Copying a chunk again (a crash before the record dropped it from its tail) changes nothing.
        await log.copy(rid, events[64:80])
        assert await log.read(rid, 62, 80) == events[62:80]
