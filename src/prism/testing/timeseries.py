"""The TimeSeries conformance suite, and a hypothesis state machine against a model.

Run it on a backend that declares ``capabilities.timeseries`` by subclassing and
providing the ``store_url`` fixture (and, optionally, ``store_options``)::

    from prism.testing.timeseries import TimeSeriesSuite

    class TestMyTimeSeries(TimeSeriesSuite):
        @pytest.fixture
        def store_url(self, my_server) -> str:
            return my_server.url

Each test works in a fresh, uniquely named namespace, so the suite never wipes data
and can share one server. Everything goes through the public API only.
"""

from __future__ import annotations

import asyncio
import inspect
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, rule, run_state_machine_as_test

import prism
from prism.errors import InvalidArgument, InvalidKey, PreconditionFailed, Unsupported
from prism.kv.store import Store
from prism.model import Event, EventPage
from prism.testing.plugin import async_fixture
from prism.testing.stateful import STEP_TIMEOUT, LoopBridge
from prism.timeseries import TimeSeries

__all__ = ["TimeSeriesMachine", "TimeSeriesSuite", "check_timeseries_against_model"]

#: Most pages one listing may take before the suite decides the pages never end.
MAX_PAGES = 1000
#: How long an event past a one-second retention may stay visible (slice, retention and clock slack).
RETENTION_GRACE = 6.0
#: Pause between two looks while waiting for retention.
POLL_INTERVAL = 0.1

SPECIAL_IDS = ("😀", "a/b", "a.b", "*", "a:b", "{x}", "%20", "ключ", "\uffff", "x" * 1024)


def _now() -> datetime:
    # Whole milliseconds: a time every engine stores exactly.
    return datetime.now(UTC).replace(microsecond=datetime.now(UTC).microsecond // 1000 * 1000)


async def read_all(ts: TimeSeries, series: str, **options: Any) -> list[Event]:
    """Every event of a read, page after page."""
    events: list[Event] = []
    token: str | None = None
    for _ in range(MAX_PAGES):
        page = await ts.read(series, page_token=token, **options)
        events.extend(page.events)
        token = page.next_page_token
        if token is None:
            return events
    pytest.fail(f"read {series!r} returned more than {MAX_PAGES} pages")


def _ids(events: list[Event] | EventPage) -> list[str]:
    return [e.id for e in events]


class TimeSeriesSuite:
    """Black-box tests of the TimeSeries contract; subclass and provide ``store_url``."""

    #: Random programs the stateful test runs against the model.
    stateful_examples = 25
    #: Most steps in one program.
    stateful_steps = 25
    #: Whether two stores opened on ``store_url`` see the same data (not so for ``memory://``).
    stores_share_data = True

    @pytest.fixture
    def store_options(self) -> dict[str, Any]:
        return {}

    @async_fixture
    async def store(self, store_url: str, store_options: dict[str, Any]) -> AsyncIterator[Store]:
        async with prism.connect(store_url, **store_options) as store:
            if not store.capabilities.timeseries:
                pytest.skip(f"the {store.backend.name} backend does not declare timeseries")
            yield store

    @pytest.fixture
    def ts(self, store: Store) -> TimeSeries:
        return store.timeseries(f"tsconf-{uuid.uuid4().hex[:12]}")

    # -- writes and reads -------------------------------------------------------------

    async def test_events_read_back_newest_first_or_oldest_first(self, ts: TimeSeries) -> None:
        t = _now()
        events = [
            Event(time=t - timedelta(seconds=3), id="c", value=b"3"),
            Event(time=t - timedelta(seconds=1), id="a", value=b"1", content_type="text/plain"),
            Event(time=t - timedelta(seconds=2), id="b", value=b"\x00\xff"),
            Event(time=t - timedelta(seconds=1), id="a", key="k2", value=b"1b"),
            Event(time=t - timedelta(seconds=1), id="b", value=b"1c"),
        ]
        results = await ts.write("s", events)
        assert [(r.id, r.key, r.ok, r.existed) for r in results] == [
            (e.id, e.key, True, False) for e in events
        ]
        newest = await ts.read("s")
        assert [(e.id, e.key) for e in newest.events] == [
            ("b", ""),
            ("a", "k2"),
            ("a", ""),
            ("b", ""),
            ("c", ""),
        ]
        assert newest.next_page_token is None
        oldest = await ts.read("s", newest_first=False)
        assert oldest.events == newest.events[::-1]
        first = newest.events[2]
        assert first == Event(time=t - timedelta(seconds=1), id="a", value=b"1", content_type="text/plain")
        assert first.time.tzinfo is not None and first.time.utcoffset() == timedelta(0)

    async def test_times_keep_their_microseconds(self, ts: TimeSeries) -> None:
        t = datetime.now(UTC)
        other_zone = (t - timedelta(microseconds=1)).astimezone(datetime.now().astimezone().tzinfo)
        await ts.write("s", [Event(time=t, id="a", value=b""), Event(time=other_zone, id="b", value=b"")])
        got = await ts.read("s")
        assert [(e.time, e.id) for e in got.events] == [(t, "a"), (t - timedelta(microseconds=1), "b")]

    async def test_ranges_are_half_open(self, ts: TimeSeries) -> None:
        t = _now() - timedelta(seconds=10)
        await ts.write("s", [Event(time=t + timedelta(seconds=i), id=f"e{i}", value=b"") for i in range(5)])
        got = await ts.read("s", start=t + timedelta(seconds=1), end=t + timedelta(seconds=3))
        assert _ids(got) == ["e2", "e1"]
        assert _ids(await ts.read("s", start=t + timedelta(seconds=3))) == ["e4", "e3"]
        assert _ids(await ts.read("s", end=t + timedelta(seconds=1))) == ["e0"]
        assert _ids(await ts.read("s", start=t, end=t)) == []

    async def test_series_are_separate(self, store: Store, ts: TimeSeries) -> None:
        t = _now()
        await ts.write("a", [Event(time=t, id="1", value=b"a")])
        await ts.write("ab", [Event(time=t, id="1", value=b"ab")])
        other = store.timeseries(f"tsconf-{uuid.uuid4().hex[:12]}")
        await other.write("a", [Event(time=t, id="1", value=b"other")])
        assert [e.value for e in (await ts.read("a")).events] == [b"a"]
        assert [e.value for e in (await ts.read("ab")).events] == [b"ab"]
        assert [e.value for e in (await other.read("a")).events] == [b"other"]
        assert (await ts.read("nothing")).events == []

    async def test_special_ids_keys_and_series_round_trip(self, ts: TimeSeries) -> None:
        t = _now()
        limit = ts.max_identity_bytes
        names = [n for n in SPECIAL_IDS if limit is None or 2 * len(n.encode()) <= limit]
        events = [Event(time=t, id=name, key=name, value=name.encode()) for name in names]
        events.append(Event(time=t, id="x" * 1024, value=b"longest id"))
        if limit is not None:
            with pytest.raises(InvalidKey, match="together"):
                await ts.write("s", [Event(time=t, id="x" * limit, key="k", value=b"")])
            events[-1] = Event(time=t, id="x" * (limit - 1), key="k", value=b"longest id")
        for series in SPECIAL_IDS[:4]:
            await ts.write(series, events)
            got = await ts.read(series, newest_first=False)
            assert [(e.id, e.key, e.value) for e in got.events] == sorted(
                (e.id, e.key, e.value) for e in events
            )

    # -- immutability ------------------------------------------------------------------

    async def test_writes_are_idempotent_and_events_immutable(self, ts: TimeSeries) -> None:
        t = _now()
        event = Event(time=t, id="e", value=b"v", content_type="text/plain")
        assert (await ts.write("s", [event]))[0].existed is False
        again = await ts.write("s", [event])
        assert again[0].ok and again[0].existed and again[0].error is None
        changed = await ts.write(
            "s",
            [
                Event(time=t, id="e", value=b"other", content_type="text/plain"),
                Event(time=t, id="e", value=b"v"),  # the content type is part of the event
                Event(time=t, id="f", value=b"new"),
            ],
        )
        assert [r.ok for r in changed] == [False, False, True]
        for result in changed[:2]:
            assert isinstance(result.error, PreconditionFailed) and "immutable" in str(result.error)
        got = await ts.read("s", newest_first=False)
        assert [(e.id, e.value, e.content_type) for e in got.events] == [
            ("e", b"v", "text/plain"),
            ("f", b"new", None),
        ]

    async def test_repeats_within_one_write(self, ts: TimeSeries) -> None:
        t = _now()
        results = await ts.write(
            "s",
            [
                Event(time=t, id="e", value=b"1"),
                Event(time=t, id="e", value=b"1"),
                Event(time=t, id="e", value=b"2"),
            ],
        )
        assert [(r.ok, r.existed) for r in results] == [(True, False), (True, True), (False, True)]
        assert [e.value for e in (await ts.read("s")).events] == [b"1"]

    # -- pages ---------------------------------------------------------------------------

    async def test_pages_cover_the_range_once(self, ts: TimeSeries) -> None:
        t = _now() - timedelta(seconds=60)
        await ts.write(
            "s", [Event(time=t + timedelta(seconds=i // 3), id=f"e{i:02}", value=b"") for i in range(25)]
        )
        for newest_first in (True, False):
            pages: list[list[str]] = []
            token: str | None = None
            while True:
                page = await ts.read("s", limit=7, newest_first=newest_first, page_token=token)
                pages.append(_ids(page))
                token = page.next_page_token
                if token is None:
                    break
            assert [len(p) for p in pages] == [7, 7, 7, 4]
            expected = [f"e{i:02}" for i in range(25)]
            assert [i for p in pages for i in p] == (expected[::-1] if newest_first else expected)

    async def test_exact_last_page_has_no_token(self, ts: TimeSeries) -> None:
        t = _now()
        await ts.write("s", [Event(time=t - timedelta(seconds=i), id=f"e{i}", value=b"") for i in range(4)])
        first = await ts.read("s", limit=2)
        second = await ts.read("s", limit=2, page_token=first.next_page_token)
        assert _ids(first) + _ids(second) == ["e0", "e1", "e2", "e3"] and second.next_page_token is None

    async def test_pages_stay_correct_while_events_arrive(self, ts: TimeSeries) -> None:
        t = _now() - timedelta(seconds=100)
        await ts.write(
            "s", [Event(time=t + timedelta(seconds=2 * i), id=f"e{i:02}", value=b"") for i in range(20)]
        )
        seen: list[str] = []
        token: str | None = None
        round_ = 0
        while True:
            page = await ts.read("s", limit=5, newest_first=False, page_token=token)
            seen.extend(_ids(page))
            token = page.next_page_token
            if token is None:
                break
            round_ += 1
            # Events land before the cursor, after it, and between pages' events.
            await ts.write(
                "s",
                [
                    Event(time=t + timedelta(seconds=1), id=f"old{round_}", value=b""),
                    Event(time=t + timedelta(seconds=39), id=f"late{round_}", value=b""),
                ],
            )
        originals = [s for s in seen if s.startswith("e")]
        assert originals == [f"e{i:02}" for i in range(20)]
        assert len(seen) == len(set(seen))
        assert not any(s.startswith("old") for s in seen)

    async def test_pages_stop_at_a_byte_cap(self, ts: TimeSeries) -> None:
        t = _now()
        await ts.write(
            "s", [Event(time=t - timedelta(seconds=i), id=f"e{i}", value=b"x" * 100) for i in range(5)]
        )
        page = await ts.read("s", page_size_bytes=250)
        assert _ids(page) == ["e0", "e1"] and page.next_page_token is not None
        one = await ts.read("s", page_size_bytes=1)
        assert _ids(one) == ["e0"]
        assert _ids(await read_all(ts, "s", page_size_bytes=250)) == [f"e{i}" for i in range(5)]

    async def test_tokens_belong_to_their_query(self, ts: TimeSeries) -> None:
        t = _now()
        await ts.write("s", [Event(time=t - timedelta(seconds=i), id=f"e{i}", value=b"") for i in range(3)])
        token = (await ts.read("s", limit=1)).next_page_token
        assert token is not None
        for call in (
            ts.read("s", limit=1, newest_first=False, page_token=token),
            ts.read("other", limit=1, page_token=token),
            ts.read("s", limit=1, start=t - timedelta(seconds=10), page_token=token),
            ts.read("s", page_token="not-a-token"),
        ):
            with pytest.raises(InvalidArgument, match="page_token"):
                await call

    # -- deletes, retention and the accept window --------------------------------------------

    async def test_delete_series(self, ts: TimeSeries) -> None:
        t = _now()
        for series in ("doomed", "kept"):
            await ts.write(series, [Event(time=t - timedelta(hours=i), id="e", value=b"") for i in range(3)])
        await ts.delete_series("doomed")
        await ts.delete_series("never-written")
        assert (await ts.read("doomed")).events == []
        assert len((await ts.read("kept")).events) == 3
        await ts.write("doomed", [Event(time=t, id="e", value=b"again")])
        assert [e.value for e in (await ts.read("doomed")).events] == [b"again"]

    async def test_retention_hides_then_drops_old_slices(self, store: Store) -> None:
        ts = store.timeseries(f"tsconf-{uuid.uuid4().hex[:12]}", slice_seconds=1, retention_seconds=1)
        await ts.write("s", [Event(time=_now(), id="old", value=b"")])
        assert _ids(await ts.read("s")) == ["old"]
        deadline = time.monotonic() + RETENTION_GRACE
        while _ids(await ts.read("s")) == ["old"]:
            if time.monotonic() > deadline:
                pytest.fail(
                    f"an event was still read {RETENTION_GRACE} s after its slice left a 1 s retention"
                )
            await asyncio.sleep(POLL_INTERVAL)
        await ts.write("s", [Event(time=_now(), id="new", value=b"")])
        await ts.drop_expired()
        assert _ids(await ts.read("s")) == ["new"]
        with pytest.raises(InvalidArgument, match="older than"):
            await ts.write("s", [Event(time=_now() - timedelta(seconds=5), id="late", value=b"")])

    async def test_accept_window_refuses_the_whole_write(self, store: Store) -> None:
        ts = store.timeseries(
            f"tsconf-{uuid.uuid4().hex[:12]}", accept_window_seconds=60, future_skew_seconds=5
        )
        t = _now()
        ok = Event(time=t, id="ok", value=b"")
        for bad in (
            Event(time=t - timedelta(seconds=120), id="old", value=b""),
            Event(time=t + timedelta(seconds=60), id="future", value=b""),
        ):
            with pytest.raises(InvalidArgument, match=r"events\[1\]\.time"):
                await ts.write("s", [ok, bad])
        assert (await ts.read("s")).events == []
        await ts.write("s", [ok, Event(time=t - timedelta(seconds=30), id="recent", value=b"")])
        assert _ids(await ts.read("s")) == ["ok", "recent"]

    # -- buffered writes ---------------------------------------------------------------

    async def test_write_nowait_is_written_by_flush(self, ts: TimeSeries) -> None:
        t = _now()
        await ts.write_nowait(
            "s", [Event(time=t - timedelta(seconds=i), id=f"e{i}", value=b"") for i in range(3)]
        )
        await ts.write_nowait("other", [Event(time=t, id="x", value=b"")])
        await ts.flush()
        assert _ids(await ts.read("s")) == ["e0", "e1", "e2"]
        assert _ids(await ts.read("other")) == ["x"]
        with pytest.raises(InvalidArgument):
            await ts.write_nowait("s", [Event(time=t.replace(tzinfo=None), id="naive", value=b"")])

    async def test_close_writes_out_the_buffer(self, store_url: str, store_options: dict[str, Any]) -> None:
        name = f"tsconf-{uuid.uuid4().hex[:12]}"
        if not self.stores_share_data:
            pytest.skip(f"{store_url} keeps nothing past its store")
        async with prism.connect(store_url, **store_options) as store:
            await store.timeseries(name).write_nowait("s", [Event(time=_now(), id="buffered", value=b"")])
        async with prism.connect(store_url, **store_options) as store:
            assert _ids(await store.timeseries(name).read("s")) == ["buffered"]

    async def test_a_namespace_keeps_its_slice_length(
        self, store: Store, store_url: str, store_options: dict[str, Any]
    ) -> None:
        name = f"tsconf-{uuid.uuid4().hex[:12]}"
        await store.timeseries(name, slice_seconds=60).write("s", [Event(time=_now(), id="e", value=b"")])
        if not self.stores_share_data:
            pytest.skip(f"{store_url} keeps nothing past its store")
        async with prism.connect(store_url, **store_options) as other:
            with pytest.raises(InvalidArgument, match="slice_seconds=60"):
                await other.timeseries(name, slice_seconds=3600).read("s")
            assert _ids(await other.timeseries(name + "-x", slice_seconds=3600).read("s")) == []
        async with prism.connect(store_url, **store_options) as other:
            assert _ids(await other.timeseries(name, slice_seconds=60).read("s")) == ["e"]

    # -- bad input ------------------------------------------------------------------------

    async def test_bad_input_is_refused_and_writes_nothing(self, ts: TimeSeries) -> None:
        t = _now()
        ok = Event(time=t, id="ok", value=b"")
        bad_events: list[object] = [
            Event(time=t.replace(tzinfo=None), id="naive", value=b""),
            Event(time=t, id="", value=b""),
            Event(time=t, id="a\x00b", value=b""),
            Event(time=t, id="e", key="k\x00", value=b""),
            Event(time=t, id="e", value="text"),  # type: ignore[arg-type]
            Event(time=t, id="e", value=b"", content_type=""),
            {"time": t, "id": "dict", "value": b""},
            Event(time=1700000000, id="epoch", value=b""),  # type: ignore[arg-type]
        ]
        for bad in bad_events:
            with pytest.raises(InvalidArgument):
                await ts.write("s", [ok, bad])  # type: ignore[list-item]
        with pytest.raises(InvalidArgument):
            await ts.write("s", ok)  # type: ignore[arg-type]
        with pytest.raises(InvalidArgument, match="at most"):
            await ts.write("s", [Event(time=t, id=f"e{i}", value=b"") for i in range(1001)])
        for series in ("", "a\x00", 42):
            with pytest.raises(InvalidKey):
                await ts.write(series, [ok])  # type: ignore[arg-type]
        assert (await ts.read("s")).events == []
        for options in (
            {"limit": 0},
            {"limit": 1001},
            {"start": t, "end": t - timedelta(seconds=1)},
            {"start": t.replace(tzinfo=None)},
            {"end": "2024-01-01"},
            {"newest_first": "yes"},
            {"page_size_bytes": 0},
        ):
            with pytest.raises(InvalidArgument):
                await ts.read("s", **options)

    async def test_namespace_settings_are_checked(self, store: Store) -> None:
        name = f"tsconf-{uuid.uuid4().hex[:12]}"
        for options in (
            {"slice_seconds": 0},
            {"slice_seconds": 1.5},
            {"retention_seconds": -1},
            {"accept_window_seconds": float("nan")},
            {"future_skew_seconds": -1},
        ):
            with pytest.raises(InvalidArgument):
                store.timeseries(name, **options)
        store.timeseries(name, slice_seconds=60)
        with pytest.raises(InvalidArgument, match="other settings"):
            store.timeseries(name, slice_seconds=120)
        assert store.timeseries(name, slice_seconds=60).settings.slice_seconds == 60

    async def test_a_closed_store_refuses_calls(self, store_url: str, store_options: dict[str, Any]) -> None:
        store = await prism.connect(store_url, **store_options)
        ts = store.timeseries("closed")
        await store.close()
        with pytest.raises(prism.StoreClosed):
            await ts.read("s")

    # -- model-based --------------------------------------------------------------

    async def test_stateful_against_model(self, store: Store) -> None:
        await check_timeseries_against_model(
            store, max_examples=self.stateful_examples, step_count=self.stateful_steps
        )


def check_unsupported(store: Store) -> None:
    """A backend without TimeSeries refuses ``store.timeseries`` with Unsupported and its reason."""
    assert not store.capabilities.timeseries
    with pytest.raises(Unsupported, match="no TimeSeries"):
        store.timeseries("anything")


# -- the model ---------------------------------------------------------------------------

#: Few, overlapping names so that programs collide on identities.
SERIES = ("a", "ab", "😀")
EVENT_IDS = ("e", "e1", "f", "😀")
EVENT_KEYS = ("", "k", "k2")
#: Offsets in microseconds from the program's base time: equal, adjacent and distant times.
OFFSETS = (0, 1, 2, 1_000_000, 3_600_000_000, 3_600_000_001, 7_200_000_000)

_events = st.lists(
    st.tuples(
        st.sampled_from(OFFSETS),
        st.sampled_from(EVENT_IDS),
        st.sampled_from(EVENT_KEYS),
        st.sampled_from((b"", b"v", b"w", b"\x00")),
        st.sampled_from((None, "text/plain")),
    ),
    min_size=1,
    max_size=8,
)
_bounds = st.none() | st.sampled_from(OFFSETS)


@dataclass(frozen=True)
class _Stored:
    value: bytes
    content_type: str | None


class TimeSeriesMachine(RuleBasedStateMachine):
    """A TimeSeries namespace and a dict model, driven by the same random program."""

    bridge: ClassVar[LoopBridge]

    def __init__(self) -> None:
        super().__init__()
        self.ts = self.bridge.store.timeseries(f"tsmodel-{uuid.uuid4().hex[:12]}")
        # Three hours back, so that every offset stays in the past.
        self.base = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=3)
        self.model: dict[str, dict[tuple[int, str, str], _Stored]] = {}

    def _time(self, offset: int) -> datetime:
        return self.base + timedelta(microseconds=offset)

    @rule(series=st.sampled_from(SERIES), events=_events)
    def write(self, series: str, events: list[tuple[int, str, str, bytes, str | None]]) -> None:
        batch = [Event(time=self._time(o), id=i, key=k, value=v, content_type=c) for o, i, k, v, c in events]
        results = self.bridge.run(self.ts.write(series, batch))
        stored = self.model.setdefault(series, {})
        for (offset, event_id, key, value, ctype), result in zip(events, results, strict=True):
            identity = (offset, event_id, key)
            found = stored.get(identity)
            if found is None:
                stored[identity] = _Stored(value, ctype)
                assert result.ok and not result.existed, f"write {identity}: {result}"
            elif found == _Stored(value, ctype):
                assert result.ok and result.existed, f"rewrite {identity}: {result}"
            else:
                assert not result.ok and isinstance(result.error, PreconditionFailed), (
                    f"conflict {identity}: {result}"
                )

    @rule(
        series=st.sampled_from(SERIES),
        start=_bounds,
        end=_bounds,
        newest_first=st.booleans(),
        limit=st.integers(1, 5),
    )
    def read(self, series: str, start: int | None, end: int | None, newest_first: bool, limit: int) -> None:
        if start is not None and end is not None and end < start:
            start, end = end, start
        got: list[Event] = []
        token: str | None = None
        for _ in range(MAX_PAGES):
            page = self.bridge.run(
                self.ts.read(
                    series,
                    start=None if start is None else self._time(start),
                    end=None if end is None else self._time(end),
                    newest_first=newest_first,
                    limit=limit,
                    page_token=token,
                )
            )
            assert len(page.events) <= limit
            got.extend(page.events)
            token = page.next_page_token
            if token is None:
                break
        expected = sorted(
            (
                (identity, stored)
                for identity, stored in self.model.get(series, {}).items()
                if (start is None or identity[0] >= start) and (end is None or identity[0] < end)
            ),
            key=lambda pair: pair[0],
            reverse=newest_first,
        )
        assert [(e.time, e.id, e.key, e.value, e.content_type) for e in got] == [
            (self._time(o), i, k, s.value, s.content_type) for (o, i, k), s in expected
        ]

    @rule(series=st.sampled_from(SERIES))
    def delete_series(self, series: str) -> None:
        self.bridge.run(self.ts.delete_series(series))
        self.model.pop(series, None)

    def teardown(self) -> None:
        for series in self.model:
            self.bridge.run(self.ts.delete_series(series))


async def check_timeseries_against_model(
    store: Store, *, max_examples: int = 25, step_count: int = 25, step_timeout: float = STEP_TIMEOUT
) -> None:
    """Run random programs on a TimeSeries namespace of ``store`` and on the model."""
    bridge = LoopBridge(store, asyncio.get_running_loop(), step_timeout)
    machine = type("BoundTimeSeriesMachine", (TimeSeriesMachine,), {"bridge": bridge})
    run_settings = settings(
        max_examples=max_examples,
        stateful_step_count=step_count,
        deadline=None,
        database=None,
        phases=[p for p in Phase if p is not Phase.shrink],
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )
    await asyncio.to_thread(run_state_machine_as_test, machine, settings=run_settings)


for _name, _test in list(vars(TimeSeriesSuite).items()):
    if _name.startswith("test_") and inspect.iscoroutinefunction(_test):
        setattr(TimeSeriesSuite, _name, pytest.mark.asyncio(_test))
