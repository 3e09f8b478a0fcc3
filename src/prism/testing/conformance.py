"""The conformance suite: black-box tests that every backend must pass.

Run it on a backend by subclassing and providing the ``store_url`` fixture (and,
optionally, ``store_options``)::

    from prism.testing.conformance import ConformanceSuite

    class TestMyBackend(ConformanceSuite):
        @pytest.fixture
        def store_url(self, my_server) -> str:
            return my_server.url

Each test works in a fresh, uniquely named namespace, so the suite never wipes data
and can share one server. Tests of features the backend's capabilities exclude skip,
naming the capability; where the contract says an excluded feature must raise
``Unsupported``, the suite checks that instead. Everything goes through the public
API only, so a third-party backend runs exactly what Prism's own backends run.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import math
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import prism
from prism.backends.base import restore_op
from prism.errors import InvalidArgument, InvalidKey, PreconditionFailed, Unsupported, ValueTooLarge
from prism.kv.namespace import Namespace
from prism.kv.store import Store
from prism.model import Delete, Item, Put
from prism.testing.plugin import async_fixture

__all__ = ["ConformanceSuite"]

MiB = 1024 * 1024
#: How long past its ttl an expired item may still be visible (the contract's bound).
EXPIRY_GRACE = 1.0
#: The ttl of items the suite waits out: short, so the suite stays fast.
SHORT_TTL = 0.5
#: Pause between two looks while waiting for an item to expire.
POLL_INTERVAL = 0.05
#: Tasks run at once by the concurrency tests.
CONCURRENT_TASKS = 100
#: Attempts of one conditional increment before the concurrency test gives up.
MAX_CAS_ATTEMPTS = 1000
#: Longest random pause after a lost conditional increment (as a real client backs off).
CAS_BACKOFF = 0.01
#: Most pages one listing may take before the suite decides the pages never end.
MAX_PAGES = 1000
#: Slack allowed between a reported expires_at and the one computed around the call.
CLOCK_SLACK = 2.0
#: Times the large-value test rewrites one key while readers read it.
LARGE_REWRITES = 8
#: The ttl of the large values the suite waits out (moving 4 MiB takes longer than SHORT_TTL).
LARGE_TTL = 2.0

ALL_BYTES = bytes(range(256))
SPECIAL_KEYS = (
    "😀",
    "emoji 😀 and spaces",
    " leading and trailing ",
    "a/b/c",
    "/leading/slash/",
    "a.b.c",
    ".",
    "..",
    "*",
    "a*b",
    ">",
    "a.>",
    "'single'",
    '"double"',
    "back\\slash",
    "tab\tand\nnewline",
    "ключ",
    "中文键",
    "%20 ?q=1&x#frag",
    "a:b:c",
    "{braces}[brackets](parens)",
    "\uffff",
    "\ue000",
    "x" * 1024,
    "😀" * 256,
    "é" * 512,
)
INVALID_KEYS: tuple[object, ...] = (
    "",
    "a\x00b",
    "x" * 1025,
    "é" * 512 + "x",
    "😀" * 256 + "x",
    "\ud800",
    b"bytes-key",
    42,
    None,
)
INVALID_TTLS: tuple[object, ...] = (
    0,
    -1,
    -0.5,
    math.nan,
    math.inf,
    -math.inf,
    "5",
    True,
    False,
    timedelta(0),
    timedelta(seconds=-1),
)


def _require(store: Store, capability: str) -> None:
    if not getattr(store.capabilities, capability):
        pytest.skip(f"the {store.backend.name} backend does not declare {capability}")


def _require_values_of(store: Store, ns: Namespace, size: int) -> None:
    """Skip, naming the declared limit, when the backend does not store values of ``size`` bytes."""
    declared = store.capabilities.max_value_bytes
    if declared < size:
        pytest.skip(f"the {store.backend.name} backend declares max_value_bytes={declared}, below {size} B")
    if ns.max_value_bytes < size:
        pytest.skip(f"the store was opened with max_value_bytes={ns.max_value_bytes}, below {size} B")


def _large_value(size: int, seed: int) -> bytes:
    """``size`` pseudo-random bytes: a value with a chunk missing, repeated or swapped never matches."""
    return random.Random(seed).randbytes(size)


async def _scan_all(ns: Namespace, prefix: str = "", limit: int = 1000) -> list[str]:
    keys: list[str] = []
    token: str | None = None
    for _ in range(MAX_PAGES):
        page = await ns.scan(prefix, limit=limit, page_token=token)
        assert len(page.keys) <= limit
        keys.extend(page.keys)
        token = page.next_page_token
        if token is None:
            return keys
    pytest.fail(f"scan {prefix!r} returned more than {MAX_PAGES} pages: {keys[:20]}...")


async def _items_all(ns: Namespace, record: str, **options: Any) -> tuple[list[Item], int]:
    """Every item of a range read, and the number of pages it took."""
    items: list[Item] = []
    token: str | None = None
    for pages in range(1, MAX_PAGES + 1):
        page = await ns.get_items(record, page_token=token, **options)
        items.extend(page.items)
        token = page.next_page_token
        if token is None:
            return items, pages
    pytest.fail(f"get_items {record!r} returned more than {MAX_PAGES} pages")


async def _until(check: Callable[[], Awaitable[bool]], deadline: float, what: str) -> None:
    """Poll ``check`` until it holds, failing once ``deadline`` (time.monotonic) has passed."""
    while not await check():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} was still visible {EXPIRY_GRACE} s after its ttl")
        await asyncio.sleep(POLL_INTERVAL)


async def _assert_empty(store: Store, ns: Namespace, probes: list[str]) -> None:
    """Nothing was written: no key is listed, and none of ``probes`` reads back."""
    if store.capabilities.prefix_scan:
        assert await _scan_all(ns) == []
    assert await ns.get_many(probes) == [None] * len(probes)


def _calls_with_key(store: Store, ns: Namespace, bad: Any) -> list[Callable[[], Awaitable[object]]]:
    """Every write and read that takes a key, each given ``bad`` where a key goes."""
    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: ns.put(bad, b"v"),
        lambda: ns.get(bad),
        lambda: ns.delete(bad),
        lambda: ns.exists(bad),
        lambda: ns.get_many(["ok", bad]),
        lambda: ns.put_many([Put("ok", b"v"), Put(bad, b"v")]),
        lambda: ns.delete_many(["ok", Delete(bad)]),
        lambda: ns.put_items(bad, [Put("ok", b"v")]),
        lambda: ns.get_items(bad, keys=["ok"]),
        lambda: ns.delete_items(bad),
    ]
    if bad != "":  # "" is the flat entry's item key, valid inside a record
        calls.append(lambda: ns.put_items("rec", [Put("ok", b"v"), Put(bad, b"v")]))
        calls.append(lambda: ns.get_items("rec", keys=["ok", bad]))
        calls.append(lambda: ns.delete_items("rec", keys=["ok", bad]))
    if store.capabilities.transactions:
        calls.append(lambda: ns.transact([Put("ok", b"v"), Delete(bad)]))
    return calls


def _close_to(when: datetime | None, expected: float) -> bool:
    return when is not None and when.tzinfo is not None and abs(when.timestamp() - expected) <= CLOCK_SLACK


class ConformanceSuite:
    """Subclass with a ``store_url`` fixture to run every contract test on a backend.

    The model-based test's size can be tuned per backend with the class attributes
    below (a slow remote backend may want fewer programs).
    """

    #: Random programs the stateful test runs against the model.
    stateful_examples = 40
    #: Most steps in one program.
    stateful_steps = 30
    #: Shorten a failing program before printing it (slow: minutes, not seconds).
    stateful_shrink = False

    @pytest.fixture
    def store_options(self) -> dict[str, Any]:
        return {}

    @async_fixture
    async def store(self, store_url: str, store_options: dict[str, Any]) -> AsyncIterator[Store]:
        async with prism.connect(store_url, **store_options) as store:
            yield store

    @pytest.fixture
    def ns(self, store: Store) -> Namespace:
        return store.namespace(f"conf-{uuid.uuid4().hex[:12]}")

    # -- values -------------------------------------------------------------------

    async def test_bytes_round_trip_exactly(self, ns: Namespace) -> None:
        values = {
            "all": ALL_BYTES * 4 + ALL_BYTES[::-1],
            "nul": b"\x00",
            "trailing-nul": b"abc\x00\x00",
            "high": b"\xff" * 64,
            "not-utf8": b"\xc3\x28\xa0\xa1\xe2\x28\xa1",
            "crlf": b"line\r\nline\r\n",
        }
        for key, value in values.items():
            await ns.put(key, value)
        for key, value in values.items():
            item = await ns.get(key)
            assert item is not None and type(item.value) is bytes and item.value == value, key
        got = await ns.get_many(list(values))
        assert [i.value if i else None for i in got] == list(values.values())

    async def test_str_json_and_empty_values(self, ns: Namespace) -> None:
        text = "héllo wörld 😀 中文".encode()
        doc = json.dumps({"name": "Ada", "tags": ["x", "y"], "n": 1.5, "nested": {"ok": True}}).encode()
        await ns.put("text", text, content_type="text/plain; charset=utf-8")
        await ns.put("doc", doc, content_type="application/json")
        await ns.put("empty", b"")
        text_item, doc_item, empty_item = await ns.get_many(["text", "doc", "empty"])
        assert text_item is not None and text_item.value.decode() == "héllo wörld 😀 中文"
        assert doc_item is not None and json.loads(doc_item.value) == json.loads(doc)
        assert empty_item is not None and empty_item.value == b"", "an empty value is a value, not a miss"
        assert await ns.exists("empty")

    async def test_one_mib_values(self, store: Store, ns: Namespace) -> None:
        _require_values_of(store, ns, MiB)
        big = (ALL_BYTES * (MiB // 256))[:MiB]
        other = big[::-1]
        await ns.put("big", big)
        results = await ns.put_many([Put("big2", other), Put("big3", big)])
        assert all(r.ok for r in results)
        got = await ns.get_many(["big", "big2", "big3"])
        assert [i.value if i else None for i in got] == [big, other, big]

    async def test_four_mib_values(self, store: Store, ns: Namespace) -> None:
        _require_values_of(store, ns, 4 * MiB)
        big, other = _large_value(4 * MiB, 1), _large_value(4 * MiB, 2)
        await ns.put("big", big, content_type="application/octet-stream")
        item = await ns.get("big")
        assert item is not None and item.value == big and item.content_type == "application/octet-stream"
        results = await ns.put_many([Put("big2", other), Put("small", b"s"), Put("big", other)])
        assert [(r.ok, r.existed) for r in results] == [(True, False), (True, False), (True, True)]
        got = await ns.get_many(["big", "small", "big2", "missing"])
        assert [i.value if i else None for i in got] == [other, b"s", other, None]
        await ns.put("big", b"small now")
        assert (item := await ns.get("big")) is not None and item.value == b"small now"
        await ns.put("big", big)
        assert (item := await ns.get("big")) is not None and item.value == big
        await ns.put_items("rec", [Put("a", big), Put("b", b"b"), Put("c", other)])
        by_keys = await ns.get_items("rec", keys=["c", "a"])
        assert [(i.key, i.value) for i in by_keys.items] == [("c", other), ("a", big)]
        if store.capabilities.range_reads:
            items, _ = await _items_all(ns, "rec")
            assert [(i.key, i.value) for i in items] == [("a", big), ("b", b"b"), ("c", other)]
        if store.capabilities.prefix_scan:
            assert await _scan_all(ns) == ["big", "big2", "rec", "small"]
        assert await ns.delete("big") and not await ns.exists("big")
        assert await ns.delete_items("rec", keys=["a", "c"]) == 2
        assert await ns.get_many(["big"]) == [None]
        assert [i.key for i in (await ns.get_items("rec", keys=["a", "b", "c"])).items] == ["b"]

    async def test_large_values_keep_conditions(self, store: Store, ns: Namespace) -> None:
        _require(store, "etag")
        _require_values_of(store, ns, 4 * MiB)
        first, second = _large_value(4 * MiB, 3), _large_value(4 * MiB - 1, 4)
        etag = await ns.put("k", first, if_absent=True)
        with pytest.raises(PreconditionFailed):
            await ns.put("k", second, if_absent=True)
        with pytest.raises(PreconditionFailed):
            await ns.put("k", second, if_match="not-the-etag")
        with pytest.raises(PreconditionFailed):
            await ns.delete("k", if_match="not-the-etag")
        assert (item := await ns.get("k")) is not None and (item.value, item.etag) == (first, etag)
        new_etag = await ns.put("k", second, if_match=etag)
        results = await ns.put_many([Put("k", first, if_match=etag), Put("other", first, if_absent=True)])
        assert [r.ok for r in results] == [False, True]
        assert (item := await ns.get("k")) is not None and (item.value, item.etag) == (second, new_etag)
        with pytest.raises(PreconditionFailed):
            await ns.delete("k", if_match=etag)
        assert await ns.delete("k", if_match=new_etag)
        assert await ns.get("k") is None
        assert (other := await ns.get("other")) is not None and other.value == first

    async def test_large_values_expire(self, store: Store, ns: Namespace) -> None:
        _require(store, "ttl")
        _require_values_of(store, ns, 4 * MiB)
        big = _large_value(4 * MiB, 5)
        await ns.put_items("rec", [Put("gone", big, ttl=LARGE_TTL), Put("kept", big)])
        start = time.time()
        await ns.put("gone", big, ttl=LARGE_TTL)
        deadline = time.monotonic() + LARGE_TTL + EXPIRY_GRACE
        item = await ns.get("gone")
        assert item is not None and item.value == big and _close_to(item.expires_at, start + LARGE_TTL)
        while True:
            # Moving 4 MiB takes a while: only a look that began after the bound may fail.
            began = time.monotonic()
            page = await ns.get_items("rec", keys=["gone", "kept"])
            if await ns.get("gone") is None and [i.key for i in page.items] == ["kept"]:
                break
            if began > deadline:
                pytest.fail(f"a large value was still visible {EXPIRY_GRACE} s after its ttl")
            await asyncio.sleep(POLL_INTERVAL)
        assert not await ns.exists("gone")
        page = await ns.get_items("rec", keys=["gone", "kept"])
        assert [(i.key, i.value) for i in page.items] == [("kept", big)]
        if store.capabilities.etag:
            assert await ns.put("gone", b"again", if_absent=True)

    async def test_readers_see_whole_large_values(self, store: Store, ns: Namespace) -> None:
        _require_values_of(store, ns, 2 * MiB)
        values = [_large_value(2 * MiB, seed) for seed in (6, 7)]
        await ns.put("k", values[0])
        writing = True
        reads = 0

        async def write() -> None:
            nonlocal writing
            try:
                for n in range(1, LARGE_REWRITES + 1):
                    await ns.put("k", values[n % 2])
                    await asyncio.sleep(0)
            finally:
                writing = False

        async def read() -> None:
            nonlocal reads
            while True:
                still_writing = writing
                got = await ns.get("k") if reads % 2 else (await ns.get_many(["k"]))[0]
                assert got is not None and got.value in values, "a torn or partial value"
                reads += 1
                if not still_writing:
                    return
                await asyncio.sleep(0)  # a backend that never waits would not let the writer run

        await asyncio.gather(write(), *(read() for _ in range(3)))
        assert (item := await ns.get("k")) is not None and item.value == values[LARGE_REWRITES % 2]

    async def test_value_at_declared_limit(self, store: Store, ns: Namespace) -> None:
        limit = ns.max_value_bytes
        await ns.put("at-limit", b"v" * limit)
        item = await ns.get("at-limit")
        assert item is not None and len(item.value) == limit
        with pytest.raises(ValueTooLarge):
            await ns.put("over-limit", b"v" * (limit + 1))
        assert await ns.get("over-limit") is None

    async def test_overwrite_replaces_value_and_metadata(self, store: Store, ns: Namespace) -> None:
        ttl = 3600 if store.capabilities.ttl else None
        first = await ns.put("k", b"one", content_type="text/plain", ttl=ttl)
        second = await ns.put("k", b"two")
        item = await ns.get("k")
        assert item is not None and item.value == b"two"
        assert item.content_type is None and item.expires_at is None
        if store.capabilities.etag:
            assert item.etag == second != first

    # -- keys ---------------------------------------------------------------------

    async def test_special_character_keys(self, store: Store, ns: Namespace) -> None:
        for key in SPECIAL_KEYS:
            await ns.put(key, key.encode())
        for key in SPECIAL_KEYS:
            item = await ns.get(key)
            assert item is not None and item.key == key and item.value == key.encode(), key
        got = await ns.get_many(list(SPECIAL_KEYS))
        assert [i.key if i else None for i in got] == list(SPECIAL_KEYS)
        if store.capabilities.prefix_scan:
            assert await _scan_all(ns) == sorted(SPECIAL_KEYS)
        for key in SPECIAL_KEYS:
            assert await ns.delete(key), key
        assert await ns.get_many(list(SPECIAL_KEYS)) == [None] * len(SPECIAL_KEYS)

    async def test_invalid_keys_are_rejected_and_write_nothing(self, store: Store, ns: Namespace) -> None:
        for bad in INVALID_KEYS:
            for call in _calls_with_key(store, ns, bad):
                with pytest.raises(InvalidKey):
                    await call()
        await _assert_empty(store, ns, ["ok", "rec"])
        assert (await ns.get_items("rec", keys=["ok"])).items == []

    async def test_scan_prefix_with_pattern_characters(self, store: Store, ns: Namespace) -> None:
        _require(store, "prefix_scan")
        keys = ["a*1", "ab", "a?c", "a[b]", "a.b", "a.b.c", "a>b", "a%", "a_", "a\\x", "a/b"]
        await ns.put_many([Put(k, b"v") for k in keys])
        expected = {
            "a*": ["a*1"],
            "a?": ["a?c"],
            "a[": ["a[b]"],
            "a.": ["a.b", "a.b.c"],
            "a>": ["a>b"],
            "a%": ["a%"],
            "a_": ["a_"],
            "a\\": ["a\\x"],
            "a/": ["a/b"],
            "a": sorted(keys),
            "b": [],
        }
        for prefix, want in expected.items():
            assert await _scan_all(ns, prefix) == want, prefix

    # -- basic operations ---------------------------------------------------------

    async def test_missing_keys(self, ns: Namespace) -> None:
        assert await ns.get("missing") is None
        assert await ns.exists("missing") is False
        assert await ns.delete("missing") is False
        (result,) = await ns.delete_many(["missing"])
        assert result.ok and not result.existed
        assert (await ns.get_items("missing", keys=["", "x"])).items == []
        assert await ns.delete_items("missing") == 0

    async def test_exists_follows_writes(self, ns: Namespace) -> None:
        assert not await ns.exists("k")
        await ns.put("k", b"v")
        assert await ns.exists("k")
        assert await ns.delete("k") is True
        assert not await ns.exists("k")
        assert await ns.delete("k") is False

    async def test_get_many_keeps_request_order_missing_and_duplicates(self, ns: Namespace) -> None:
        await ns.put_many([Put("a", b"A"), Put("b", b"B")])
        got = await ns.get_many(["b", "missing", "a", "b", "other"])
        assert [(i.key, i.value) if i else None for i in got] == [
            ("b", b"B"),
            None,
            ("a", b"A"),
            ("b", b"B"),
            None,
        ]
        assert await ns.get_many([]) == []

    async def test_put_many_without_existed(self, store: Store, ns: Namespace) -> None:
        await ns.put("old", b"0")
        puts = [Put("old", b"1"), Put("new", b"2"), Put("new", b"3")]
        results = await ns.put_many(puts, existed=False)
        assert [(r.key, r.ok, r.existed) for r in results] == [(p.key, True, None) for p in puts]
        got = await ns.get_many(["old", "new"])
        assert [i.value if i else None for i in got] == [b"1", b"3"], "repeats apply in order"
        if store.capabilities.etag:
            assert got[0] is not None and got[0].etag == results[0].etag
            await ns.put("taken", b"t")
            guarded_puts = [Put("taken", b"u", if_absent=True), Put("free", b"f")]
            guarded = await ns.put_many(guarded_puts, existed=False)
            assert [(r.ok, r.existed) for r in guarded] == [(False, None), (True, None)]
            assert isinstance(guarded[0].error, PreconditionFailed)
            assert (item := await ns.get("taken")) is not None and item.value == b"t"
        with pytest.raises(InvalidArgument, match="existed"):
            await ns.put_many([Put("k", b"v")], existed="no")  # type: ignore[arg-type]
        assert await ns.get("k") is None, "a refused batch wrote nothing"

    async def test_put_many_and_delete_many(self, store: Store, ns: Namespace) -> None:
        keys = [f"k{i:03d}" for i in range(50)]
        results = await ns.put_many([Put(k, k.encode()) for k in keys])
        assert [r.key for r in results] == keys and all(r.ok and not r.existed for r in results)
        got = await ns.get_many(keys)
        assert [i.value if i else None for i in got] == [k.encode() for k in keys]
        if store.capabilities.etag:
            assert [i.etag if i else None for i in got] == [r.etag for r in results]
        again = await ns.put_many([Put(k, b"x") for k in keys[:10]])
        assert all(r.ok and r.existed for r in again)
        deleted = await ns.delete_many([*keys[:25], "never-there"])
        assert [r.key for r in deleted] == [*keys[:25], "never-there"]
        assert all(r.ok for r in deleted) and [r.existed for r in deleted] == [True] * 25 + [False]
        left = await ns.get_many(keys)
        assert [i is not None for i in left] == [False] * 25 + [True] * 25
        assert await ns.put_many([]) == [] and await ns.delete_many([]) == []

    async def test_namespaces_are_isolated(self, store: Store, ns: Namespace) -> None:
        other = store.namespace(f"{ns.name}-other")
        await ns.put("k", b"mine")
        await other.put("k", b"theirs")
        await other.put_items("rec", [Put("i", b"theirs")])
        assert (item := await ns.get("k")) is not None and item.value == b"mine"
        assert await ns.delete_items("rec") == 0
        if store.capabilities.prefix_scan:
            assert await _scan_all(ns) == ["k"]
        assert await ns.delete("k")
        assert (item := await other.get("k")) is not None and item.value == b"theirs"
        assert len((await other.get_items("rec", keys=["i"])).items) == 1
        await other.delete_items("rec")
        await other.delete("k")

    async def test_flat_entry_is_the_records_empty_item_key(self, ns: Namespace) -> None:
        await ns.put("rec", b"flat")
        await ns.put_items("rec", [Put("line", b"item")])
        page = await ns.get_items("rec", keys=["", "line"])
        assert [(i.key, i.value) for i in page.items] == [("", b"flat"), ("line", b"item")]
        await ns.put_items("rec", [Put("", b"via items")])
        assert (item := await ns.get("rec")) is not None and item.value == b"via items"
        assert await ns.delete("rec")
        assert [i.key for i in (await ns.get_items("rec", keys=["", "line"])).items] == ["line"]

    async def test_content_type_round_trip(self, store: Store, ns: Namespace) -> None:
        await ns.put("json", b"{}", content_type="application/json; charset=utf-8")
        await ns.put("plain", b"x")
        await ns.put_items("rec", [Put("i", b"1", content_type="text/csv")])
        json_item, plain = await ns.get_many(["json", "plain"])
        assert json_item is not None and json_item.content_type == "application/json; charset=utf-8"
        assert plain is not None and plain.content_type is None
        (listed,) = (await ns.get_items("rec", keys=["i"])).items
        assert listed.content_type == "text/csv"
        if store.capabilities.range_reads:
            (ranged,) = (await ns.get_items("rec")).items
            assert ranged.content_type == "text/csv"

    # -- etags and conditions -----------------------------------------------------

    async def test_etag_on_every_read(self, store: Store, ns: Namespace) -> None:
        _require(store, "etag")
        etag = await ns.put("k", b"v")
        (item_result,) = await ns.put_items("rec", [Put("i", b"v")])
        assert etag and isinstance(etag, str) and item_result.etag
        assert (item := await ns.get("k")) is not None and item.etag == etag
        assert [i.etag if i else None for i in await ns.get_many(["k"])] == [etag]
        assert [i.etag for i in (await ns.get_items("rec", keys=["i"])).items] == [item_result.etag]
        if store.capabilities.range_reads:
            assert [i.etag for i in (await ns.get_items("rec")).items] == [item_result.etag]

    async def test_etag_changes_on_every_write(self, store: Store, ns: Namespace) -> None:
        _require(store, "etag")
        etags = [await ns.put("k", b"same"), await ns.put("k", b"same")]
        etags.append((await ns.put_many([Put("k", b"same")]))[0].etag or "")
        etags.append((await ns.put_items("k", [Put("", b"same")]))[0].etag or "")
        etags.append(await ns.put("k", b"same", if_match=etags[-1]))
        if store.capabilities.transactions:
            etags.append((await ns.transact([Put("k", b"same")]))[0].etag or "")
        assert all(etags) and len(set(etags)) == len(etags), etags
        assert (item := await ns.get("k")) is not None and item.etag == etags[-1]

    async def test_restore_items_keeps_etags_times_and_order(self, store: Store, ns: Namespace) -> None:
        if not store.capabilities.restore:
            with pytest.raises(Unsupported, match="etag"):
                await store.backend.restore_items(ns.name, "r", [Item("k", b"v", "e1")])
            return
        _require(store, "etag")
        await ns.put("flat", b"\x00flat", ttl=60, content_type="application/x-flat")
        await ns.put_items(
            "rec", [Put("b", b"2"), Put("a", b"1", content_type="text/plain"), Put("c", b"3", ttl=90)]
        )
        copy = store.namespace(f"{ns.name}-copy")
        flat = await ns.get("flat")
        items = (await ns.get_items("rec")).items
        assert flat is not None and [i.key for i in items] == ["a", "b", "c"]
        outcomes = await store.backend.restore_items(copy.name, "flat", [flat.with_key("")])
        outcomes += await store.backend.restore_items(copy.name, "rec", items)
        assert all(o.ok for o in outcomes), outcomes
        copied = await copy.get("flat")
        copied_items = (await copy.get_items("rec")).items
        for before, after in [(flat, copied), *zip(items, copied_items, strict=True)]:
            assert after is not None
            assert (after.key, after.value, after.etag, after.content_type) == (
                before.key,
                before.value,
                before.etag,
                before.content_type,
            )
            for was, now in ((before.expires_at, after.expires_at), (before.updated_at, after.updated_at)):
                assert (was is None) == (now is None), (was, now)
                if was is not None and now is not None:
                    assert abs((was - now).total_seconds()) < 0.001, (was, now)
        # An etag read from the original matches the copy.
        assert await copy.put("flat", b"next", if_match=flat.etag)
        with pytest.raises(PreconditionFailed):
            await copy.put("flat", b"again", if_match=flat.etag)

    async def test_restore_ops_honour_conditions_and_expiry(self, store: Store, ns: Namespace) -> None:
        _require(store, "restore")
        _require(store, "etag")
        etag = await ns.put("k", b"v1")
        newer = Item("k", b"v2", "restored-etag", None, "text/plain", time.time())
        outcomes = await store.backend.write(
            ns.name,
            [
                restore_op("k", newer.with_key(""), if_absent=True),
                restore_op("k", newer.with_key(""), if_match="nope"),
            ],
        )
        assert [(o.ok, o.condition_failed) for o in outcomes] == [(False, True), (False, True)]
        (done,) = await store.backend.write(ns.name, [restore_op("k", newer.with_key(""), if_match=etag)])
        assert done.ok and done.existed
        got = await ns.get("k")
        assert got is not None and (got.value, got.etag, got.content_type) == (
            b"v2",
            "restored-etag",
            "text/plain",
        )
        if store.capabilities.ttl:
            gone = Item("", b"old", "expired-etag", time.time() - 5, None, time.time() - 10)
            await store.backend.restore_items(ns.name, "expired", [gone])
            assert await ns.get("expired") is None
            assert await ns.put("expired", b"fresh", if_absent=True)

    async def test_if_match(self, store: Store, ns: Namespace) -> None:
        _require(store, "etag")
        etag = await ns.put("k", b"v1")
        with pytest.raises(PreconditionFailed):
            await ns.put("k", b"bad", if_match="not-the-etag")
        with pytest.raises(PreconditionFailed):
            await ns.delete("k", if_match="not-the-etag")
        with pytest.raises(PreconditionFailed):
            await ns.put("missing", b"v", if_match=etag)
        with pytest.raises(PreconditionFailed):
            await ns.delete("missing", if_match=etag)
        assert (item := await ns.get("k")) is not None and (item.value, item.etag) == (b"v1", etag)
        assert await ns.get("missing") is None
        etag2 = await ns.put("k", b"v2", if_match=etag)
        with pytest.raises(PreconditionFailed):
            await ns.put("k", b"stale", if_match=etag)
        assert await ns.delete("k", if_match=etag2) is True
        assert await ns.get("k") is None

    async def test_a_failed_condition_reads_the_same_on_every_backend(
        self, store: Store, ns: Namespace
    ) -> None:
        _require(store, "etag")
        etag = await ns.put("k", b"v1")
        await ns.put_items("rec", [Put("i", b"1")])
        mismatch, exists = "'k': etag does not match", "'k': already exists"
        calls = [
            (ns.put("k", b"bad", if_match="not-the-etag"), mismatch),
            (ns.delete("k", if_match="not-the-etag"), mismatch),
            (ns.put("k", b"again", if_absent=True), exists),
            (ns.put("missing", b"v", if_match=etag), "'missing': etag does not match"),
        ]
        for call, message in calls:
            with pytest.raises(PreconditionFailed) as info:
                await call
            assert (str(info.value), info.value.key, info.value.code) == (
                message,
                message.split("'")[1],
                "PRECONDITION_FAILED",
            )
        bad, _ = await ns.put_many([Put("k", b"x", if_absent=True), Put("other", b"y")])
        assert isinstance(bad.error, PreconditionFailed) and (str(bad.error), bad.error.key) == (exists, "k")
        (item,) = await ns.put_items("rec", [Put("i", b"2", if_absent=True)])
        assert isinstance(item.error, PreconditionFailed)
        assert (str(item.error), item.error.key) == ("'rec' item 'i': already exists", "rec")

    async def test_bulk_put_fails_only_the_key_whose_etag_is_wrong(self, store: Store, ns: Namespace) -> None:
        _require(store, "etag")
        etag_a = await ns.put("a", b"a1")
        etag_b = await ns.put("b", b"b1")
        bad, good = await ns.put_many(
            [Put("a", b"a2", if_match="not-the-etag"), Put("b", b"b2", if_match=etag_b)]
        )
        assert not bad.ok and isinstance(bad.error, PreconditionFailed) and bad.etag is None
        assert good.ok and good.error is None and good.etag not in (None, etag_b)
        a, b = await ns.get_many(["a", "b"])
        assert a is not None and (a.value, a.etag) == (b"a1", etag_a)
        assert b is not None and (b.value, b.etag) == (b"b2", good.etag)
        d_bad, d_good = await ns.delete_many([Delete("a", "not-the-etag"), Delete("b", good.etag)])
        assert not d_bad.ok and isinstance(d_bad.error, PreconditionFailed) and d_good.ok and d_good.existed
        assert [i is not None for i in await ns.get_many(["a", "b"])] == [True, False]

    async def test_if_absent(self, store: Store, ns: Namespace) -> None:
        _require(store, "etag")
        etag = await ns.put("k", b"first", if_absent=True)
        with pytest.raises(PreconditionFailed):
            await ns.put("k", b"second", if_absent=True)
        assert (item := await ns.get("k")) is not None and (item.value, item.etag) == (b"first", etag)
        assert await ns.delete("k")
        await ns.put("k", b"after delete", if_absent=True)
        results = await ns.put_many([Put("k", b"x", if_absent=True), Put("new", b"y", if_absent=True)])
        assert [r.ok for r in results] == [False, True]
        assert isinstance(results[0].error, PreconditionFailed)
        (item_result,) = await ns.put_items("rec", [Put("i", b"1", if_absent=True)])
        (again,) = await ns.put_items("rec", [Put("i", b"2", if_absent=True)])
        assert item_result.ok and not again.ok
        assert [i.value for i in (await ns.get_items("rec", keys=["i"])).items] == [b"1"]

    # -- ttl ----------------------------------------------------------------------

    async def test_expired_items_vanish_from_every_read(self, store: Store, ns: Namespace) -> None:
        _require(store, "ttl")
        start = time.time()
        await ns.put("t:gone", b"v", ttl=SHORT_TTL)
        await ns.put("t:kept", b"v")
        await ns.put_items("t:rec", [Put("a", b"1", ttl=SHORT_TTL), Put("b", b"2")])
        await ns.put_items("t:all", [Put("a", b"1", ttl=SHORT_TTL)])
        deadline = time.monotonic() + SHORT_TTL + EXPIRY_GRACE - (time.time() - start)
        gone = await ns.get("t:gone")
        assert gone is not None and _close_to(gone.expires_at, start + SHORT_TTL), "readable before its ttl"

        async def get_gone() -> bool:
            return await ns.get("t:gone") is None

        async def exists_gone() -> bool:
            return not await ns.exists("t:gone")

        async def many_gone() -> bool:
            return [i is not None for i in await ns.get_many(["t:gone", "t:kept"])] == [False, True]

        async def items_gone() -> bool:
            return [i.key for i in (await ns.get_items("t:rec", keys=["a", "b"])).items] == ["b"]

        async def range_gone() -> bool:
            return [i.key for i in (await ns.get_items("t:rec")).items] == ["b"]

        async def scan_gone() -> bool:
            return await _scan_all(ns, "t:") == ["t:kept", "t:rec"]

        async def all_gone() -> bool:
            # Written just after t:gone, so it may outlive it by as much.
            return not (await ns.get_items("t:all", keys=["a"])).items

        checks = [get_gone, exists_gone, many_gone, items_gone, all_gone]
        checks += [range_gone] if store.capabilities.range_reads else []
        checks += [scan_gone] if store.capabilities.prefix_scan else []
        for check in checks:
            await _until(check, deadline, check.__name__)
        assert await ns.delete("t:gone") is False, "deleting an expired item deletes nothing live"
        assert await ns.delete_items("t:all") == 0

    async def test_put_without_ttl_clears_it(self, store: Store, ns: Namespace) -> None:
        _require(store, "ttl")
        start = time.monotonic()
        await ns.put("k", b"v", ttl=SHORT_TTL)
        await ns.put_items("rec", [Put("i", b"v", ttl=SHORT_TTL)])
        await ns.put("k", b"v2")
        await ns.put_items("rec", [Put("i", b"v2")])
        assert (item := await ns.get("k")) is not None and item.expires_at is None
        await asyncio.sleep(max(0.0, start + SHORT_TTL + 0.3 - time.monotonic()))
        assert (item := await ns.get("k")) is not None and item.value == b"v2"
        assert [i.value for i in (await ns.get_items("rec", keys=["i"])).items] == [b"v2"]

    async def test_expires_at_is_reported(self, store: Store, ns: Namespace) -> None:
        _require(store, "ttl")
        now = time.time()
        await ns.put("int", b"v", ttl=60)
        await ns.put("float", b"v", ttl=90.5)
        await ns.put("delta", b"v", ttl=timedelta(minutes=2))
        await ns.put_many([Put("batch", b"v", ttl=30)])
        await ns.put_items("rec", [Put("i", b"v", ttl=45)])
        await ns.put("none", b"v")
        got = await ns.get_many(["int", "float", "delta", "batch", "none"])
        expected = [now + 60, now + 90.5, now + 120, now + 30]
        for item, want in zip(got, expected, strict=False):
            assert item is not None and _close_to(item.expires_at, want), (item, want)
            assert item.expires_at is not None and item.expires_at.utcoffset() == timedelta(0)
        assert got[-1] is not None and got[-1].expires_at is None
        (listed,) = (await ns.get_items("rec", keys=["i"])).items
        assert _close_to(listed.expires_at, now + 45)
        assert (single := await ns.get("int")) is not None and _close_to(single.expires_at, now + 60)
        assert single.expires_at is not None and single.expires_at > datetime.now(UTC)

    async def test_if_absent_after_expiry(self, store: Store, ns: Namespace) -> None:
        _require(store, "ttl")
        _require(store, "etag")
        await ns.put("k", b"old", ttl=SHORT_TTL)
        deadline = time.monotonic() + SHORT_TTL + EXPIRY_GRACE

        async def created() -> bool:
            try:
                await ns.put("k", b"new", if_absent=True)
            except PreconditionFailed:
                return False
            return True

        await _until(created, deadline, "an expired item (to if_absent)")
        assert (item := await ns.get("k")) is not None and item.value == b"new" and item.expires_at is None

    async def test_invalid_ttl_is_rejected_and_writes_nothing(self, store: Store, ns: Namespace) -> None:
        for bad in INVALID_TTLS:
            with pytest.raises(InvalidArgument):
                await ns.put("k", b"v", ttl=bad)  # type: ignore[arg-type]
            with pytest.raises(InvalidArgument):
                await ns.put_many([Put("ok", b"v"), Put("k", b"v", ttl=bad)])  # type: ignore[arg-type]
            with pytest.raises(InvalidArgument):
                await ns.put_items("rec", [Put("ok", b"v"), Put("i", b"v", ttl=bad)])  # type: ignore[arg-type]
            if store.capabilities.transactions:
                with pytest.raises(InvalidArgument):
                    await ns.transact([Put("ok", b"v"), Put("k", b"v", ttl=bad)])  # type: ignore[arg-type]
        await _assert_empty(store, ns, ["k", "ok", "rec"])

    async def test_conditions_unsupported_raise(self, store: Store, ns: Namespace) -> None:
        if store.capabilities.etag:
            pytest.skip(f"the {store.backend.name} backend declares etag (conditional writes)")
        etag = await ns.put("k", b"v")
        for call in (
            lambda: ns.put("k", b"x", if_match=etag),
            lambda: ns.put("new", b"x", if_absent=True),
            lambda: ns.delete("k", if_match=etag),
            lambda: ns.put_many([Put("new", b"x"), Put("k", b"x", if_match=etag)]),
            lambda: ns.delete_many([Delete("k", etag)]),
            lambda: ns.put_items("rec", [Put("i", b"x", if_absent=True)]),
        ):
            with pytest.raises(Unsupported):
                await call()
        assert [i.value if i else None for i in await ns.get_many(["k", "new"])] == [b"v", None]
        assert (await ns.get_items("rec", keys=["i"])).items == []

    async def test_ttl_unsupported_raises(self, store: Store, ns: Namespace) -> None:
        if store.capabilities.ttl:
            pytest.skip(f"the {store.backend.name} backend declares ttl")
        with pytest.raises(Unsupported):
            await ns.put("k", b"v", ttl=60)
        await _assert_empty(store, ns, ["k"])

    # -- transactions -------------------------------------------------------------

    async def test_transact_applies_ops_in_order(self, store: Store, ns: Namespace) -> None:
        _require(store, "transactions")
        await ns.put("k1", b"old")
        results = await ns.transact([Delete("k1"), Put("k2", b"v"), Delete("k2"), Put("k3", b"v3")])
        assert [r.key for r in results] == ["k1", "k2", "k2", "k3"] and all(r.ok for r in results)
        k1, k2, k3 = await ns.get_many(["k1", "k2", "k3"])
        assert k1 is None and k2 is None and k3 is not None and k3.value == b"v3"
        if store.capabilities.etag:
            assert k3.etag == results[3].etag
        assert await ns.transact([]) == []

    async def test_transact_with_a_failed_condition_applies_nothing(
        self, store: Store, ns: Namespace
    ) -> None:
        _require(store, "transactions")
        _require(store, "etag")
        etag_a = await ns.put("a", b"a1")
        etag_b = await ns.put("b", b"b1")
        failing: list[list[Put | Delete]] = [
            [Put("c", b"c"), Delete("b"), Put("a", b"a2", if_absent=True)],
            [Put("c", b"c"), Put("a", b"a2", if_match="not-the-etag"), Delete("b")],
            [Delete("a"), Delete("b", if_match="not-the-etag")],
            [Put("c", b"c"), Delete("missing", if_match=etag_a)],
        ]
        messages = [
            "'a': already exists",
            "'a': etag does not match",
            "'b': etag does not match",
            "'missing': etag does not match",
        ]
        for ops, message in zip(failing, messages, strict=True):
            with pytest.raises(PreconditionFailed) as info:
                await ns.transact(ops)
            assert (str(info.value), info.value.key) == (message, message.split("'")[1]), ops
            a, b, c = await ns.get_many(["a", "b", "c"])
            assert a is not None and (a.value, a.etag) == (b"a1", etag_a), ops
            assert b is not None and (b.value, b.etag) == (b"b1", etag_b) and c is None, ops
        await ns.transact(
            [Put("c", b"c", if_absent=True), Put("a", b"a2", if_match=etag_a), Delete("b", etag_b)]
        )
        got = await ns.get_many(["a", "b", "c"])
        assert [i.value if i else None for i in got] == [b"a2", None, b"c"]

    async def test_transact_unsupported_raises_and_writes_nothing(self, store: Store, ns: Namespace) -> None:
        if store.capabilities.transactions:
            pytest.skip(f"the {store.backend.name} backend declares transactions")
        with pytest.raises(Unsupported):
            await ns.transact([Put("a", b"v"), Delete("b")])
        await _assert_empty(store, ns, ["a"])

    # -- records ------------------------------------------------------------------

    async def test_get_items_orders_by_code_point(self, store: Store, ns: Namespace) -> None:
        _require(store, "range_reads")
        keys = ["b", "a", "", "aa", "A", "a b", "a/b", "é", "😀", "\uffff", "\ue000", "z", "0"]
        results = await ns.put_items("rec", [Put(k, k.encode()) for k in keys])
        assert [r.key for r in results] == keys and all(r.ok for r in results)
        items, _ = await _items_all(ns, "rec")
        assert [i.key for i in items] == sorted(keys)
        assert all(i.value == i.key.encode() for i in items)

    async def test_get_items_range_limit_and_tokens(self, store: Store, ns: Namespace) -> None:
        _require(store, "range_reads")
        keys = [f"line:{i:03d}" for i in range(25)]
        await ns.put_items("order", [Put(k, b"x") for k in [*keys, "aaa", "line;", "zzz"]])
        page = await ns.get_items("order", start="line:", end="line;")
        assert [i.key for i in page.items] == keys and page.next_page_token is None
        page = await ns.get_items("order", start="line:005", end="line:010")
        assert [i.key for i in page.items] == keys[5:10], "start inclusive, end exclusive"
        items, pages = await _items_all(ns, "order", start="line:", end="line;", limit=10)
        assert [i.key for i in items] == keys and pages == 3
        first = await ns.get_items("order", limit=1)
        assert [i.key for i in first.items] == ["aaa"] and first.next_page_token is not None
        assert (await ns.get_items("order", start="line;", end="line:")).items == []
        assert (await ns.get_items("order", start="m")).items[0].key == "zzz"

    async def test_get_items_page_size_bytes(self, store: Store, ns: Namespace) -> None:
        _require(store, "range_reads")
        await ns.put_items("rec", [Put(f"i{n}", bytes([n]) * 100) for n in range(7)])
        await ns.put_items("rec", [Put("j", b"j" * 1000)])
        page = await ns.get_items("rec", page_size_bytes=250)
        assert [i.key for i in page.items] == ["i0", "i1"] and page.next_page_token is not None
        items, pages = await _items_all(ns, "rec", page_size_bytes=250)
        assert [i.key for i in items] == [*[f"i{n}" for n in range(7)], "j"] and pages == 5
        big = await ns.get_items("rec", start="j", page_size_bytes=10)
        assert [i.key for i in big.items] == ["j"], "a page holds at least one item"
        items, _ = await _items_all(ns, "rec", limit=3, page_size_bytes=10_000)
        assert len(items) == 8

    async def test_get_items_by_keys(self, ns: Namespace) -> None:
        await ns.put_items("rec", [Put(k, k.encode()) for k in ["a", "b", "c"]])
        page = await ns.get_items("rec", keys=["c", "missing", "a"])
        assert [(i.key, i.value) for i in page.items] == [("c", b"c"), ("a", b"a")]
        assert page.next_page_token is None

    async def test_delete_items(self, store: Store, ns: Namespace) -> None:
        keys = [f"k{i}" for i in range(6)]
        await ns.put_items("rec", [Put(k, b"v") for k in keys])
        await ns.put_items("other", [Put("k1", b"v")])
        assert await ns.delete_items("rec", keys=["k0", "missing"]) == 1
        if store.capabilities.range_reads:
            assert await ns.delete_items("rec", start="k2", end="k4") == 2
            assert [i.key for i in (await ns.get_items("rec")).items] == ["k1", "k4", "k5"]
            assert await ns.delete_items("rec", start="k5") == 1
            assert await ns.delete_items("rec") == 2
        else:
            assert await ns.delete_items("rec", keys=keys) == 5
        assert (await ns.get_items("rec", keys=keys)).items == []
        if store.capabilities.prefix_scan:
            assert await _scan_all(ns) == ["other"], "an emptied record is no longer listed"
        assert len((await ns.get_items("other", keys=["k1"])).items) == 1

    # -- scans --------------------------------------------------------------------

    async def test_scan_order_prefix_and_pages(self, store: Store, ns: Namespace) -> None:
        _require(store, "prefix_scan")
        assert await ns.scan() == prism.Page([], None)
        inside = ["user:", *[f"user:{i:03d}" for i in range(23)], "user:é", "user:😀"]
        await ns.put_many([Put(k, b"v") for k in [*inside, "user", "usera", "users:1", "a"]])
        await ns.put_items("user:rec", [Put("item", b"v")])
        want = sorted([*inside, "user:rec"])
        keys: list[str] = []
        token: str | None = None
        sizes: list[int] = []
        while len(sizes) < MAX_PAGES:
            page = await ns.scan("user:", limit=7, page_token=token)
            sizes.append(len(page.keys))
            keys.extend(page.keys)
            token = page.next_page_token
            if token is None:
                break
        assert keys == want
        assert sizes == [7] * (len(want) // 7) + [len(want) % 7], "full pages until the last"
        assert await _scan_all(ns) == sorted([*want, "user", "usera", "users:1", "a"])

    async def test_scan_pages_stay_correct_while_keys_change(self, store: Store, ns: Namespace) -> None:
        _require(store, "prefix_scan")
        initial = [f"s:{i:03d}" for i in range(0, 80, 2)]
        await ns.put_many([Put(k, b"v") for k in [*initial, "s", "t:000"]])
        removed_ahead: set[str] = set()
        removed: set[str] = set()
        seen: list[str] = []
        token: str | None = None
        for turn in range(1, MAX_PAGES + 1):
            page = await ns.scan("s:", limit=4, page_token=token)
            seen.extend(page.keys)
            token = page.next_page_token
            if token is None:
                break
            cursor = page.keys[-1]
            await ns.put(f"s:{2 * turn - 1:03d}", b"new behind")
            await ns.put(f"s:{81 - 2 * turn:03d}", b"new ahead")
            ahead = [k for k in initial if k > cursor and k not in removed]
            if len(ahead) > 2:
                await ns.delete(ahead[-1])
                removed_ahead.add(ahead[-1])
                removed.add(ahead[-1])
            if seen[0] not in removed:
                await ns.delete(seen[0])
                removed.add(seen[0])
        assert len(seen) == len(set(seen)), "a key appeared twice"
        assert seen == sorted(seen) and all(k.startswith("s:") for k in seen)
        missed = (set(initial) - removed) - set(seen)
        assert not missed, f"keys that existed throughout were missed: {sorted(missed)}"
        if store.capabilities.consistent_reads:
            assert not removed_ahead & set(seen), "a key deleted before its page was listed"

    # -- concurrency --------------------------------------------------------------

    async def test_concurrent_tasks_lose_no_acknowledged_write(self, store: Store, ns: Namespace) -> None:
        acked: dict[str, bytes] = {}
        shared: dict[bytes, str] = {}
        etags = store.capabilities.etag
        rounds = 3

        async def worker(n: int) -> None:
            own = f"own:{n}"
            for r in range(rounds):
                value = f"{n}:{r}".encode()
                etag = await ns.put(own, value)
                await asyncio.sleep(0)
                item = await ns.get(own)
                assert item is not None and item.value == value
                assert item.etag == etag or not etags
                acked[own] = value
                shared_value = f"shared:{n}:{r}".encode()
                shared[shared_value] = await ns.put("shared", shared_value)
                seen = await ns.get("shared")
                assert seen is not None and seen.value.startswith(b"shared:"), "a torn or foreign value"

        await asyncio.gather(*(worker(n) for n in range(CONCURRENT_TASKS)))
        final = await ns.get_many(list(acked))
        assert [i.value if i else None for i in final] == list(acked.values())
        assert all(v.endswith(f":{rounds - 1}".encode()) for v in acked.values())
        last = await ns.get("shared")
        assert last is not None and last.value in shared
        assert shared[last.value] == last.etag or not etags

    async def test_concurrent_conditional_increments_are_exact(self, store: Store, ns: Namespace) -> None:
        _require(store, "etag")
        await ns.put("counter", b"0")
        conflicts = 0

        async def increment() -> None:
            nonlocal conflicts
            for _ in range(MAX_CAS_ATTEMPTS):
                item = await ns.get("counter")
                assert item is not None
                await asyncio.sleep(0)
                try:
                    await ns.put("counter", str(int(item.value) + 1).encode(), if_match=item.etag)
                    return
                except PreconditionFailed:
                    conflicts += 1
                    await asyncio.sleep(random.uniform(0, CAS_BACKOFF))
            pytest.fail(f"no increment succeeded in {MAX_CAS_ATTEMPTS} attempts")

        await asyncio.gather(*(increment() for _ in range(CONCURRENT_TASKS)))
        assert (item := await ns.get("counter")) is not None and int(item.value) == CONCURRENT_TASKS
        assert conflicts > 0, "the tasks never overlapped, so the test proved nothing"

    # -- model-based --------------------------------------------------------------

    async def test_stateful_against_model(self, store: Store) -> None:
        from prism.testing.stateful import check_against_model

        await check_against_model(
            store,
            max_examples=self.stateful_examples,
            step_count=self.stateful_steps,
            shrink=self.stateful_shrink,
        )


# The suite's tests are coroutines: marked, they run in pytest-asyncio's strict mode too
# (a subclass's own synchronous tests stay unmarked).
for _name, _test in list(vars(ConformanceSuite).items()):
    if _name.startswith("test_") and inspect.iscoroutinefunction(_test):
        setattr(ConformanceSuite, _name, pytest.mark.asyncio(_test))
