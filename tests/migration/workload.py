"""Concurrent writers with a model of what each acknowledged, and the check of a store against it."""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from typing import Literal

from prism.kv.namespace import Namespace
from prism.model import Put

#: Slack around an expiry time before the check insists the item is there or gone.
EXPIRY_SLACK = 1.0
#: Short ttl of the writers' expiring puts: they expire while the migration runs.
SHORT_TTL = 1.0


@dataclass
class Expected:
    """The last acknowledged state of one address; ``value`` None means deleted."""

    value: bytes | None
    etag: str | None = None
    content_type: str | None = None
    #: Bounds of the expiry time (the call's start and end plus the ttl).
    expires: tuple[float, float] | None = None


@dataclass
class Model:
    entries: dict[tuple[str, str], Expected] = field(default_factory=dict)

    def put(
        self,
        record: str,
        key: str,
        value: bytes,
        etag: str | None,
        *,
        ttl: float | None = None,
        started: float = 0.0,
        content_type: str | None = None,
    ) -> None:
        expires = None if ttl is None else (started + ttl, time.time() + ttl)
        self.entries[(record, key)] = Expected(value, etag, content_type, expires)


class Writer:
    """One of the concurrent writers: puts, conditional puts, deletes, ttl puts and record item writes.

    Each writer owns its keys (``w{n}-k*`` entries, ``w{n}-r*`` records), so the last
    acknowledged state of every key is well defined.
    """

    def __init__(
        self, ns: Namespace, n: int, model: Model, *, keys: int = 12, records: int = 4, pause: float = 0.0
    ) -> None:
        self.ns = ns
        self.n = n
        self.model = model
        self.keys = [f"w{n}-k{j}" for j in range(keys)]
        self.records = [f"w{n}-r{j}" for j in range(records)]
        self.pause = pause
        self.rng = random.Random(n)
        self.ops = 0
        self.conditional = 0

    async def seed(self) -> None:
        for key in self.keys[: len(self.keys) // 2]:
            etag = await self.ns.put(key, f"seed-{key}".encode(), content_type="text/plain")
            self.model.put(key, "", f"seed-{key}".encode(), etag, content_type="text/plain")
        for record in self.records[: len(self.records) // 2]:
            await self._put_items(record)

    async def _put_items(self, record: str) -> None:
        v = self.ops
        puts = [Put("b", b"b%d" % v), Put("a", b"a%d" % v, content_type="text/plain"), Put("c", b"c%d" % v)]
        results = await self.ns.put_items(record, puts)
        for put, result in zip(puts, results, strict=True):
            assert result.ok, result
            self.model.put(record, put.key, put.value, result.etag, content_type=put.content_type)

    async def step(self) -> None:
        self.ops += 1
        rng = self.rng
        key = rng.choice(self.keys)
        current = self.model.entries.get((key, ""))
        kind = rng.choice(("put", "conditional", "delete", "ttl", "items", "delete_items"))
        value = f"{key}-{self.ops}".encode()
        started = time.time()
        if kind == "put":
            etag = await self.ns.put(key, value)
            self.model.put(key, "", value, etag)
        elif (
            kind == "conditional"
            and current is not None
            and current.value is not None
            and current.expires is None
        ):
            etag = await self.ns.put(key, value, if_match=current.etag, content_type="application/x-c")
            self.conditional += 1
            self.model.put(key, "", value, etag, content_type="application/x-c")
        elif kind == "delete":
            await self.ns.delete(key)
            self.model.entries[(key, "")] = Expected(None)
        elif kind == "ttl":
            ttl = rng.choice((SHORT_TTL, 300.0))
            etag = await self.ns.put(key, value, ttl=ttl)
            self.model.put(key, "", value, etag, ttl=ttl, started=started)
        elif kind == "items":
            await self._put_items(rng.choice(self.records))
        elif kind == "delete_items":
            record = rng.choice(self.records)
            await self.ns.delete_items(record, keys=["b"])
            self.model.entries[(record, "b")] = Expected(None)
        else:
            # A conditional put with nothing to match: create it only if absent.
            if current is None or current.value is None:
                etag = await self.ns.put(key, value, if_absent=True)
            else:
                etag = await self.ns.put(key, value)
            self.model.put(key, "", value, etag)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.step()
            await asyncio.sleep(self.pause)


async def check_store(
    ns: Namespace, model: Model, *, fill: dict[str, Expected], strong: bool = False
) -> dict[str, int]:
    """Assert that ``ns`` holds exactly the model's last acknowledged states; counts of what was checked."""
    now = time.time()
    consistency: Literal["strong", "eventual"] = "strong" if strong else "eventual"
    counts = {"present": 0, "deleted": 0, "expired": 0}
    expected_records: set[str] = set()
    entries = {**model.entries, **{(k, ""): e for k, e in fill.items()}}
    for (record, key), want in sorted(entries.items()):
        if key:
            page = await ns.get_items(record, keys=[key], consistency=consistency)
            got = page.items[0] if page.items else None
        else:
            got = await ns.get(record, consistency=consistency)
        where = f"{record}/{key}" if key else record
        if want.value is None:
            assert got is None, f"{where} was deleted but is back: {got!r}"
            counts["deleted"] += 1
            continue
        if want.expires is not None and want.expires[1] + EXPIRY_SLACK < now:
            assert got is None, f"{where} expired but is back: {got!r}"
            counts["expired"] += 1
            continue
        if want.expires is not None and want.expires[0] - EXPIRY_SLACK < now:
            continue  # expiring right now: either answer is right
        assert got is not None, f"{where}: an acknowledged write is lost"
        assert (got.value, got.etag, got.content_type) == (want.value, want.etag, want.content_type), where
        if want.expires is not None:
            assert got.expires_at is not None
            lo, hi = want.expires
            assert lo - 0.01 <= got.expires_at.timestamp() <= hi + 0.01, (where, got.expires_at, want.expires)
        else:
            assert got.expires_at is None, where
        counts["present"] += 1
        expected_records.add(record)
    # Nothing else is there: no deleted or expired key came back, no stray key appeared.
    token = None
    seen: set[str] = set()
    while True:
        ids = await ns.scan(limit=1000, page_token=token)
        seen.update(ids.keys)
        token = ids.next_page_token
        if token is None:
            break
    stray = seen - expected_records
    for record in sorted(stray):
        items = (await ns.get_items(record)).items
        live = [i for i in items if not _expiring(entries.get((record, i.key)), now)]
        assert not live, f"{record} holds items no acknowledged write left there: {live!r}"
    return counts


def _expiring(want: Expected | None, now: float) -> bool:
    return want is not None and want.expires is not None and want.expires[0] - EXPIRY_SLACK < now
