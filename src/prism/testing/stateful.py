"""A hypothesis state machine that drives a store and a plain-dict model side by side.

Every rule performs one public-API call on the store and the same operation on the
model, then compares what the store answered with what the model predicts: values,
etags, content types, whether a ttl is set, condition failures, listings and counts.
It runs against any open store, so every backend shares one definition of "correct"::

    await check_against_model(store)

The machine runs in a worker thread (hypothesis drives it synchronously) and sends
each call to the caller's event loop, so it uses the caller's connections as they are.
Items get either no ttl or a long one: timing is the conformance suite's business.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, precondition, rule, run_state_machine_as_test

from prism.errors import PreconditionFailed
from prism.kv.namespace import Namespace
from prism.kv.store import Store
from prism.model import Delete, Item, Put, WriteResult

__all__ = [
    "DEFAULT_MAX_EXAMPLES",
    "DEFAULT_STEP_COUNT",
    "STEP_TIMEOUT",
    "KeyValueMachine",
    "check_against_model",
]

R = TypeVar("R")

#: Seconds one store call may take before the run fails (a hung backend must not hang the suite).
STEP_TIMEOUT = 30.0
#: Random programs tried per run.
DEFAULT_MAX_EXAMPLES = 40
#: Most steps in one program.
DEFAULT_STEP_COUNT = 30
#: The long ttl given to some writes: never reached during a run, but reported as expires_at.
LONG_TTL = 3600

# Few, overlapping names so that programs collide on keys; they include characters that
# glob, subject and path syntaxes treat specially, and ones outside the BMP.
RECORDS = ("a", "ab", "a.b", "a*", "b c", "😀")
ITEM_KEYS = ("", "x", "xy", "y", "\uffff", "😀")
PREFIXES = ("", "a", "a.", "a*", "b", "z")
STALE_ETAG = "etag-that-was-never-issued"

_records = st.sampled_from(RECORDS)
_item_keys = st.sampled_from(ITEM_KEYS)
_bounds = st.none() | _item_keys
_values = st.binary(max_size=24)
_content_types = st.sampled_from((None, "text/plain", "application/json"))
_ttls = st.sampled_from((None, LONG_TTL))
#: How a write is conditioned: not at all, on the live etag, on an outdated etag, or on absence.
_conditions = st.sampled_from(("none", "current", "stale", "absent"))
_delete_conditions = st.sampled_from(("none", "current", "stale"))


@dataclass(frozen=True)
class _Stored:
    value: bytes
    etag: str
    content_type: str | None
    has_ttl: bool


class LoopBridge:
    """Runs coroutines on an event loop owned by another thread and waits for their results."""

    def __init__(self, store: Store, loop: asyncio.AbstractEventLoop, timeout: float = STEP_TIMEOUT) -> None:
        self.store = store
        self.loop = loop
        self.timeout = timeout

    def run(self, coro: Coroutine[Any, Any, R]) -> R:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(self.timeout)


class KeyValueMachine(RuleBasedStateMachine):
    """The store under test and the model, driven by the same random program.

    Bind it to a store with :func:`check_against_model`; each program works in a new
    namespace and deletes what it wrote when it ends.
    """

    bridge: ClassVar[LoopBridge]

    def __init__(self) -> None:
        super().__init__()
        store = self.bridge.store
        self.caps = store.capabilities
        self.ns: Namespace = store.namespace(f"model-{uuid.uuid4().hex[:12]}")
        self.model: dict[str, dict[str, _Stored]] = {}
        self.replaced: list[str] = [STALE_ETAG]
        self.touched: set[str] = set()

    # -- the model ----------------------------------------------------------------

    def _current(self, record: str, key: str) -> _Stored | None:
        return self.model.get(record, {}).get(key)

    def _condition(self, record: str, key: str, condition: str) -> tuple[str | None, bool, bool]:
        """(if_match, if_absent, expected to hold) for a condition on (record, key)."""
        current = self._current(record, key)
        self.touched.add(record)
        if not self.caps.etag:  # no conditional writes at all
            condition = "none"
        if condition == "current":
            return (current.etag, False, True) if current else (self.replaced[-1], False, False)
        if condition == "stale":
            return self.replaced[-1], False, False
        if condition == "absent":
            return None, True, current is None
        return None, False, True

    def _store(self, record: str, key: str, stored: _Stored | None) -> None:
        current = self._current(record, key)
        self.touched.add(record)
        if current is not None:
            self.replaced.append(current.etag)
        if stored is not None and self.caps.etag:
            assert stored.etag and stored.etag not in self.replaced, f"{record!r}/{key!r}: etag reused"
        if stored is not None:
            self.model.setdefault(record, {})[key] = stored
        elif current is not None:
            del self.model[record][key]
            if not self.model[record]:
                del self.model[record]

    def _check_item(self, got: Item | None, record: str, key: str, where: str) -> None:
        want = self._current(record, key)
        if want is None:
            assert got is None, f"{where}: {record!r}/{key!r} should be absent, got {got!r}"
            return
        assert got is not None, f"{where}: {record!r}/{key!r} should hold {want.value!r}, got nothing"
        assert got.value == want.value, f"{where}: {record!r}/{key!r} value {got.value!r} != {want.value!r}"
        assert got.content_type == want.content_type, f"{where}: {record!r}/{key!r} content_type"
        assert (got.expires_at is not None) == want.has_ttl, f"{where}: {record!r}/{key!r} expires_at"
        if self.caps.etag:
            assert got.etag == want.etag, f"{where}: {record!r}/{key!r} etag {got.etag!r} != {want.etag!r}"

    def _check_result(self, result: WriteResult, ok: bool, where: str) -> None:
        assert result.ok == ok, f"{where}: {result.key!r} ok={result.ok}, expected {ok} ({result.error!r})"
        if not ok:
            assert isinstance(result.error, PreconditionFailed), f"{where}: {result.error!r}"

    # -- flat entries -------------------------------------------------------------

    @rule(record=_records, value=_values, content_type=_content_types, ttl=_ttls, condition=_conditions)
    def put(
        self, record: str, value: bytes, content_type: str | None, ttl: int | None, condition: str
    ) -> None:
        ttl = ttl if self.caps.ttl else None
        if_match, if_absent, holds = self._condition(record, "", condition)
        call = self.ns.put(
            record, value, ttl=ttl, content_type=content_type, if_match=if_match, if_absent=if_absent
        )
        if not holds:
            try:
                self.bridge.run(call)
            except PreconditionFailed:
                return
            raise AssertionError(f"put {record!r} with condition {condition!r} should have failed")
        etag = self.bridge.run(call)
        self._store(record, "", _Stored(value, etag, content_type, ttl is not None))

    @rule(record=_records, condition=_delete_conditions)
    def delete(self, record: str, condition: str) -> None:
        if_match, _, holds = self._condition(record, "", condition)
        call = self.ns.delete(record, if_match=if_match)
        if not holds:
            try:
                self.bridge.run(call)
            except PreconditionFailed:
                return
            raise AssertionError(f"delete {record!r} with condition {condition!r} should have failed")
        existed = self.bridge.run(call)
        assert existed == (self._current(record, "") is not None), f"delete {record!r} returned {existed}"
        self._store(record, "", None)

    @rule(record=_records)
    def get(self, record: str) -> None:
        self._check_item(self.bridge.run(self.ns.get(record)), record, "", "get")
        assert self.bridge.run(self.ns.exists(record)) == (self._current(record, "") is not None)

    @rule(records=st.lists(_records, max_size=6))
    def get_many(self, records: list[str]) -> None:
        got = self.bridge.run(self.ns.get_many(records))
        assert len(got) == len(records)
        for record, item in zip(records, got, strict=True):
            self._check_item(item, record, "", "get_many")

    # -- batches ------------------------------------------------------------------

    @rule(
        ops=st.lists(st.tuples(_records, _values, _ttls, _conditions), max_size=5, unique_by=lambda op: op[0])
    )
    def put_many(self, ops: list[tuple[str, bytes, int | None, str]]) -> None:
        puts, expected = [], []
        for record, value, ttl, condition in ops:
            if_match, if_absent, holds = self._condition(record, "", condition)
            puts.append(
                Put(record, value, ttl=ttl if self.caps.ttl else None, if_match=if_match, if_absent=if_absent)
            )
            expected.append(holds)
        results = self.bridge.run(self.ns.put_many(puts))
        assert [r.key for r in results] == [p.key for p in puts]
        for put, result, holds in zip(puts, results, expected, strict=True):
            self._check_result(result, holds, "put_many")
            if holds:
                assert result.etag is not None
                self._store(put.key, "", _Stored(put.value, result.etag, None, put.ttl is not None))

    @rule(ops=st.lists(st.tuples(_records, _delete_conditions), max_size=5, unique_by=lambda op: op[0]))
    def delete_many(self, ops: list[tuple[str, str]]) -> None:
        deletes, expected = [], []
        for record, condition in ops:
            if_match, _, holds = self._condition(record, "", condition)
            deletes.append(Delete(record, if_match))
            expected.append(holds)
        results = self.bridge.run(self.ns.delete_many(deletes))
        for delete, result, holds in zip(deletes, results, expected, strict=True):
            self._check_result(result, holds, "delete_many")
            if holds:
                assert result.existed == (self._current(delete.key, "") is not None), "delete_many existed"
                self._store(delete.key, "", None)

    @precondition(lambda self: self.caps.transactions)
    @rule(
        ops=st.lists(
            st.tuples(_records, st.none() | _values, _conditions),
            min_size=1,
            max_size=4,
            unique_by=lambda o: o[0],
        )
    )
    def transact(self, ops: list[tuple[str, bytes | None, str]]) -> None:
        batch: list[Put | Delete] = []
        holds_all = True
        for record, value, condition in ops:
            if value is None and condition == "absent":
                condition = "none"
            if_match, if_absent, holds = self._condition(record, "", condition)
            holds_all = holds_all and holds
            batch.append(
                Delete(record, if_match)
                if value is None
                else Put(record, value, None, None, if_match, if_absent)
            )
        if not holds_all:
            try:
                self.bridge.run(self.ns.transact(batch))
            except PreconditionFailed:
                return
            raise AssertionError("a transaction with a failing condition was applied")
        results = self.bridge.run(self.ns.transact(batch))
        for op, result in zip(batch, results, strict=True):
            self._check_result(result, True, "transact")
            if isinstance(op, Put):
                assert result.etag is not None
                self._store(op.key, "", _Stored(op.value, result.etag, None, False))
            else:
                self._store(op.key, "", None)

    # -- listing and records ------------------------------------------------------

    @precondition(lambda self: self.caps.prefix_scan)
    @rule(prefix=st.sampled_from(PREFIXES), limit=st.integers(1, 4))
    def scan(self, prefix: str, limit: int) -> None:
        keys: list[str] = []
        token: str | None = None
        for _ in range(len(RECORDS) + 2):
            page = self.bridge.run(self.ns.scan(prefix, limit=limit, page_token=token))
            assert len(page.keys) <= limit
            keys.extend(page.keys)
            token = page.next_page_token
            if token is None:
                break
        else:
            raise AssertionError(f"scan {prefix!r} kept returning pages: {keys}")
        want = sorted(r for r in self.model if r.startswith(prefix))
        assert keys == want, f"scan {prefix!r}: {keys} != {want}"

    @rule(
        record=_records,
        items=st.lists(st.tuples(_item_keys, _values, _conditions), max_size=4, unique_by=lambda i: i[0]),
    )
    def put_items(self, record: str, items: list[tuple[str, bytes, str]]) -> None:
        puts, expected = [], []
        for key, value, condition in items:
            if_match, if_absent, holds = self._condition(record, key, condition)
            puts.append(Put(key, value, if_match=if_match, if_absent=if_absent))
            expected.append(holds)
        results = self.bridge.run(self.ns.put_items(record, puts))
        for put, result, holds in zip(puts, results, expected, strict=True):
            self._check_result(result, holds, "put_items")
            if holds:
                assert result.etag is not None
                self._store(record, put.key, _Stored(put.value, result.etag, None, False))

    @precondition(lambda self: self.caps.range_reads)
    @rule(record=_records, start=_bounds, end=_bounds, limit=st.integers(1, 4))
    def get_items(self, record: str, start: str | None, end: str | None, limit: int) -> None:
        got: list[Item] = []
        token: str | None = None
        for _ in range(len(ITEM_KEYS) + 2):
            page = self.bridge.run(
                self.ns.get_items(record, start=start, end=end, limit=limit, page_token=token)
            )
            assert len(page.items) <= limit
            got.extend(page.items)
            token = page.next_page_token
            if token is None:
                break
        else:
            raise AssertionError(f"get_items {record!r} kept returning pages: {got}")
        want = _in_range(self.model.get(record, {}), start, end)
        assert [i.key for i in got] == want, f"get_items {record!r} [{start!r}, {end!r}): {got}"
        for item in got:
            self._check_item(item, record, item.key, "get_items")

    @rule(record=_records, keys=st.lists(_item_keys, max_size=4, unique=True))
    def get_listed_items(self, record: str, keys: list[str]) -> None:
        page = self.bridge.run(self.ns.get_items(record, keys=keys))
        stored = self.model.get(record, {})
        assert [i.key for i in page.items] == [k for k in keys if k in stored]
        for item in page.items:
            self._check_item(item, record, item.key, "get_items(keys=)")

    @precondition(lambda self: self.caps.range_reads)
    @rule(record=_records, start=_bounds, end=_bounds)
    def delete_items(self, record: str, start: str | None, end: str | None) -> None:
        doomed = _in_range(self.model.get(record, {}), start, end)
        deleted = self.bridge.run(self.ns.delete_items(record, start=start, end=end))
        assert deleted == len(doomed), f"delete_items {record!r} [{start!r}, {end!r}) -> {deleted}"
        for key in doomed:
            self._store(record, key, None)

    def teardown(self) -> None:
        """Compare every address written once more, then remove what the program wrote."""
        for record in sorted(self.touched):
            listed = self.bridge.run(self.ns.get_items(record, keys=list(ITEM_KEYS)))
            assert [i.key for i in listed.items] == [k for k in ITEM_KEYS if k in self.model.get(record, {})]
            for item in listed.items:
                self._check_item(item, record, item.key, "final state")
            self.bridge.run(self.ns.delete_items(record, keys=list(ITEM_KEYS)))


def _in_range(items: dict[str, _Stored], start: str | None, end: str | None) -> list[str]:
    return sorted(k for k in items if (start is None or k >= start) and (end is None or k < end))


async def check_against_model(
    store: Store,
    *,
    max_examples: int = DEFAULT_MAX_EXAMPLES,
    step_count: int = DEFAULT_STEP_COUNT,
    step_timeout: float = STEP_TIMEOUT,
    shrink: bool = False,
) -> None:
    """Run random programs on ``store`` and on the model; raise at the first disagreement.

    The failing program is printed as the steps to replay. With ``shrink`` hypothesis
    first shortens it, which makes it easier to read but can take minutes (thousands
    of replays), longer than a test timeout; so it is off unless asked for.
    """
    bridge = LoopBridge(store, asyncio.get_running_loop(), step_timeout)
    machine = type("BoundKeyValueMachine", (KeyValueMachine,), {"bridge": bridge})
    run_settings = settings(
        max_examples=max_examples,
        stateful_step_count=step_count,
        deadline=None,
        database=None,
        phases=list(Phase) if shrink else [p for p in Phase if p is not Phase.shrink],
        # The machine is built per program from its own namespace; fixtures are never reused in it.
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )
    await asyncio.to_thread(run_state_machine_as_test, machine, settings=run_settings)
