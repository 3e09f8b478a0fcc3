"""NATS JetStream KV through Prism beside the raw nats-py KeyValue API, in one run (method: bench._network).

Starts its own ``nats-server -js`` (``prism.testing.servers.nats``), or uses
``PRISM_TEST_NATS_URL``. The raw side does the same work with nats-py's ``KeyValue``
on a bucket of the same configuration: ``kv.get`` / ``kv.put``, and 100 of them under
``asyncio.gather`` for the batches. Every call of a round has keys of its own.
Because every Prism write is a compare-and-set on the key's revision (for etags and
``existed``), the puts are also timed as raw compare-and-sets (``kv.update(key,
value, last=revision)``), the floor for that design.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import nats
from nats.js.kv import KeyValue

from bench._network import BATCH, MICROS_PER_KEY, OPS, VALUE, Baseline, Calls, Keys, NetworkBench, table
from prism.testing.servers.nats import NatsServer

#: Single-key calls per round and side.
SINGLE_CALLS = 1536
#: Batch calls per round and side.
BATCH_CALLS = 64
#: The raw buckets, configured as Prism's (one revision kept, direct gets).
RAW_BUCKETS = ("raw_bench", "raw_cas_bench")


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
    server = "a local `nats-server -js` from `prism.testing.servers.nats` (file storage)"
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
        "The last columns time the raw compare-and-set, `kv.update(key, value, last=revision)`.",
    )

    def start_server(self) -> NatsServer:
        return NatsServer.local()

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
