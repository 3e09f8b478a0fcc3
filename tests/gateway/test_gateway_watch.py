"""``GET /v1/kv/{ns}/_watch``: the change feed as Server-Sent Events, through the one pipeline."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from gateway_helpers import ENV, api_keys_config, build_app, headers
from serve_helpers import serving

from prism.gateway.config import ConfigError, parse_config
from prism.streaming.app import UVICORN_OPTIONS
from prism.testing.servers._base import ServerUnavailable, free_port, require_or_skip
from prism.testing.servers.postgres import INSTALL_HINT, PostgresServer, postgres_url

#: Seconds a test waits for an event it expects.
WAIT = 10.0


class Event:
    """One SSE event as a client sees it: its fields, and the comment lines before it."""

    def __init__(self) -> None:
        self.id: str | None = None
        self.event: str | None = None
        self.data: list[str] = []
        self.comments: list[str] = []
        self.retry: str | None = None

    @property
    def json(self) -> Any:
        return json.loads("\n".join(self.data))

    def __repr__(self) -> str:
        return f"<Event id={self.id} event={self.event} data={self.data} comments={self.comments}>"


class EventReader:
    """Reads the events of a streamed response one at a time (with a timeout each)."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._lines = response.aiter_lines()

    async def next(self, within: float = WAIT) -> Event:
        async with asyncio.timeout(within):
            event = Event()
            async for line in self._lines:
                if line == "":
                    if event.id is None and event.event is None and not event.data and not event.comments:
                        continue
                    return event
                name, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if name == "":
                    event.comments.append(value)
                elif name == "id":
                    event.id = value
                elif name == "event":
                    event.event = value
                elif name == "data":
                    event.data.append(value)
                elif name == "retry":
                    event.retry = value
            raise EOFError("the stream ended")

    async def change(self, within: float = WAIT) -> Event:
        """The next event that is not a heartbeat or a cursor update."""
        while True:
            event = await self.next(within)
            if event.event is not None:
                return event

    async def ended(self, within: float = WAIT) -> bool:
        """True when the stream ends (after only heartbeats) within ``within`` seconds of each line."""
        try:
            while True:
                event = await self.next(within)
                assert event.event is None, f"unexpected {event}"
        except EOFError:
            return True


@contextlib.asynccontextmanager
async def watching(
    client: httpx.AsyncClient, ns: str, who: str = "writer", **params: Any
) -> AsyncIterator[EventReader]:
    """A watch stream of ``ns`` opened by ``who``, once its opening frame (``retry:``/``id:``) arrived."""
    extra = params.pop("headers", {})
    async with client.stream(
        "GET", f"/v1/kv/{ns}/_watch", params=params, headers={**headers(who), **extra}
    ) as response:
        assert response.status_code == 200, (await response.aread()).decode()
        assert response.headers["content-type"] == "text/event-stream"
        reader = EventReader(response)
        opening = await reader.next()
        assert opening.retry is not None and opening.id, opening
        reader.start = opening.id  # type: ignore[attr-defined]
        yield reader


@contextlib.asynccontextmanager
async def gateway(config: dict[str, Any]) -> AsyncIterator[httpx.AsyncClient]:
    """``config`` served by uvicorn in this process (streamed responses need a real server)."""
    app = build_app(config)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", **UVICORN_OPTIONS)
    )
    task = asyncio.create_task(server.serve())
    for _ in range(1000):
        if server.started or task.done():
            break
        await asyncio.sleep(0.01)
    if task.done():
        task.result()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=WAIT) as client:
            yield client
    finally:
        server.should_exit = True
        await task


def watch_config(store: str, **extra: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "stores": {"main": store},
        "auth": {"api_keys": api_keys_config()},
        "pii_keys": {"active": "k1", "keys": [{"id": "k1", "env": "PRISM_TEST_PII_K1"}]},
        "namespaces": [
            {"name": "plain"},
            {"name": "orders", "tenant_scoped": True},
            {"name": "people", "pii": {"fields": ["email"], "encrypt": True}},
        ],
        "audit": {"sink": "none"},
        "server": {"access_log": False},
        "streaming": {"enabled": False},
    }
    config.update(extra)
    return config


@pytest.fixture
def fed(tmp_path: Path) -> str:
    """A SQLite store with its change feed on."""
    return f"sqlite:///{tmp_path / 'fed.db'}?feed=true"


async def test_each_change_is_one_event_with_its_cursor_as_id(fed: str) -> None:
    async with gateway(watch_config(fed)) as c, watching(c, "plain") as events:
        put = await c.put("/v1/kv/plain/user:1", content=b"ann", headers=headers("writer"))
        assert put.status_code == 201
        deleted = await c.delete("/v1/kv/plain/user:1", headers=headers("writer"))
        assert deleted.status_code == 204

        first = await events.change()
        assert first.event == "put"
        data = first.json
        assert data["key"] == "user:1"
        assert data["op"] == "put"
        assert data["etag"] == put.headers["etag"].strip('"')
        assert data["cursor"] == first.id
        assert data["updated_at"]
        assert "item_key" not in data and "value" not in data

        second = await events.change()
        assert (second.event, second.json["key"], second.json["etag"]) == ("delete", "user:1", None)
        assert second.id != first.id


async def test_items_of_a_record_carry_their_item_key(fed: str) -> None:
    async with gateway(watch_config(fed)) as c, watching(c, "plain") as events:
        items = [{"key": "line-1", "value": "MQ=="}, {"key": "line-2", "value": "Mg=="}]
        r = await c.put("/v1/records/plain/order-7", json={"items": items}, headers=headers("writer"))
        assert r.status_code == 200, r.text
        got = [(await events.change()).json for _ in range(2)]
        assert sorted((e["key"], e["item_key"], e["op"]) for e in got) == [
            ("order-7", "line-1", "put"),
            ("order-7", "line-2", "put"),
        ]


async def test_last_event_id_and_after_resume_after_that_change(fed: str) -> None:
    async with gateway(watch_config(fed)) as c:
        async with watching(c, "plain") as events:
            for key in ("a", "b"):
                await c.put(f"/v1/kv/plain/{key}", content=b"1", headers=headers("writer"))
            seen = await events.change()
            assert seen.json["key"] == "a"
        # Written while nobody watches: a resumed stream still delivers it.
        await c.put("/v1/kv/plain/c", content=b"1", headers=headers("writer"))
        async with watching(c, "plain", headers={"Last-Event-ID": seen.id}) as resumed:
            assert [(await resumed.change()).json["key"] for _ in range(2)] == ["b", "c"]
        async with watching(c, "plain", after=seen.id) as resumed:
            assert (await resumed.change()).json["key"] == "b"
        # Last-Event-ID (what EventSource sends on reconnect) wins over the after= of the URL.
        async with watching(c, "plain", after="0", headers={"Last-Event-ID": seen.id}) as resumed:
            assert (await resumed.change()).json["key"] == "b"


async def test_the_opening_id_resumes_a_stream_that_saw_no_change(fed: str) -> None:
    async with gateway(watch_config(fed)) as c:
        async with watching(c, "plain") as events:
            start = events.start  # type: ignore[attr-defined]
        await c.put("/v1/kv/plain/later", content=b"1", headers=headers("writer"))
        async with watching(c, "plain", headers={"Last-Event-ID": start}) as resumed:
            assert (await resumed.change()).json["key"] == "later"


async def test_prefix_selects_keys(fed: str) -> None:
    async with gateway(watch_config(fed)) as c, watching(c, "plain", prefix="user:") as events:
        for key in ("order:1", "user:1", "order:2", "user:2"):
            await c.put(f"/v1/kv/plain/{key}", content=b"1", headers=headers("writer"))
        assert [(await events.change()).json["key"] for _ in range(2)] == ["user:1", "user:2"]


async def test_tenants_see_only_their_own_changes_without_a_tenant_prefix(fed: str) -> None:
    async with (
        gateway(watch_config(fed)) as c,
        watching(c, "orders", "acme") as acme,
        watching(c, "orders", "globex") as globex,
    ):
        put_g = await c.put("/v1/kv/orders/k", content=b"globex's", headers=headers("globex"))
        put_a = await c.put("/v1/kv/orders/k", content=b"acme's", headers=headers("acme"))
        await c.put("/v1/kv/orders/only-globex", content=b"x", headers=headers("globex"))
        await c.put("/v1/kv/orders/end", content=b"x", headers=headers("acme"))

        got = [(await acme.change()).json for _ in range(2)]
        assert [e["key"] for e in got] == ["k", "end"]
        assert got[0]["etag"] == put_a.headers["etag"].strip('"')
        got_g = [(await globex.change()).json for _ in range(2)]
        assert [(e["key"], e["etag"]) for e in got_g] == [
            ("k", put_g.headers["etag"].strip('"')),
            ("only-globex", got_g[1]["etag"]),
        ]
        # Nothing else arrives on either stream (heartbeats only).
        for stream in (acme, globex):
            with pytest.raises(TimeoutError):
                await stream.change(within=0.5)


async def test_a_namespace_without_a_feed_is_a_409_naming_the_option() -> None:
    async with gateway(watch_config("memory://")) as c:
        r = await c.get("/v1/kv/plain/_watch", headers=headers("writer"))
        assert r.status_code == 409
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["code"] == "FEED_NOT_ENABLED"
        assert "feed=true" in r.json()["detail"]
        assert "main" in r.json()["detail"]


async def test_a_cursor_older_than_the_window_is_a_410(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'small.db'}?feed=true&feed_max_changes=3&purge_interval=0.05"
    async with gateway(watch_config(store)) as c:
        async with watching(c, "plain") as events:
            await c.put("/v1/kv/plain/first", content=b"1", headers=headers("writer"))
            first = await events.change()
        for i in range(20):
            await c.put(f"/v1/kv/plain/k{i}", content=b"1", headers=headers("writer"))
        deadline = time.monotonic() + WAIT
        while True:
            # SQLite trims its feed while writing (every purge_interval): one more write, then try.
            await c.put("/v1/kv/plain/trim", content=b"1", headers=headers("writer"))
            # Until the feed is trimmed, the stream opens (and is left at once).
            params = {"after": first.id}
            async with c.stream("GET", "/v1/kv/plain/_watch", params=params, headers=headers("writer")) as r:
                if r.status_code != 200 or time.monotonic() > deadline:
                    problem = json.loads(await r.aread())
                    break
            await asyncio.sleep(0.1)
        assert r.status_code == 410, problem
        assert problem["code"] == "CURSOR_EXPIRED"
        assert problem["detail"].startswith("after:") and "retained window" in problem["detail"]

        r = await c.get("/v1/kv/plain/_watch", headers=headers("writer", **{"Last-Event-ID": "not-a-cursor"}))
        assert r.status_code == 400
        assert r.json()["code"] == "INVALID_CURSOR"
        assert r.json()["detail"].startswith("Last-Event-ID:")


async def test_watching_is_a_read_of_the_namespace(fed: str) -> None:
    async with gateway(watch_config(fed)) as c:
        assert (await c.get("/v1/kv/plain/_watch")).status_code == 401
        assert (await c.get("/v1/kv/plain/_watch", headers=headers("nobody"))).status_code == 403
        assert (await c.get("/v1/kv/nope/_watch", headers=headers("writer"))).status_code == 404
        async with watching(c, "plain", "reader"):
            pass
        # An event stream may carry its credential as ?token= (EventSource cannot set headers) ...
        async with c.stream("GET", "/v1/kv/plain/_watch", params={"token": "key-reader"}) as r:
            assert r.status_code == 200
        # ... but only one credential, and a plain read still refuses ?token=.
        r = await c.get("/v1/kv/plain/_watch", params={"token": "key-reader"}, headers=headers("reader"))
        assert (r.status_code, r.json()["code"]) == (401, "AMBIGUOUS_CREDENTIALS")
        r = await c.get("/v1/kv/plain/some-key", params={"token": "key-reader"})
        assert (r.status_code, r.json()["code"]) == (401, "QUERY_TOKEN_NOT_ALLOWED")
        r = await c.get("/v1/kv/plain/_watch", params={"prefix": "bad\x00"}, headers=headers("reader"))
        assert r.status_code == 400 and "prefix" in r.json()["detail"]


async def test_each_stream_is_audited_once_when_it_opens(fed: str, tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    config = watch_config(fed, audit={"sink": "file", "path": str(log), "flush_interval": 0.01})
    async with gateway(config) as c:
        async with watching(c, "plain", "reader") as events:
            for i in range(3):
                await c.put(f"/v1/kv/plain/k{i}", content=b"1", headers=headers("writer"))
            for _ in range(3):
                await events.change()
        await c.get("/v1/kv/plain/_watch", headers=headers("nobody"))
        deadline = time.monotonic() + WAIT
        while True:
            lines = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
            watches = [e for e in lines if e["operation"] == "watch"]
            if len(watches) >= 2 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
    assert [(e["principal"], e["status"], e["namespace"]) for e in watches] == [
        ("reader", 200, "plain"),
        ("nobody", 403, "plain"),
    ]


async def test_heartbeats_and_the_ends_of_a_stream(fed: str) -> None:
    config = watch_config(fed, watch={"heartbeat_interval": 0.1, "max_duration": 1.0, "idle_timeout": 60})
    async with gateway(config) as c, watching(c, "plain") as events:
        beat = await events.next()
        assert beat.event is None and beat.comments == ["keep-alive"]
        started = time.monotonic()
        end = await events.change(within=5)
        assert end.event == "reconnect" and end.id is None
        assert end.json["reason"] == "max_duration"
        assert 0.5 < time.monotonic() - started < 3
        assert await events.ended()
    config = watch_config(fed, watch={"heartbeat_interval": 0.1, "idle_timeout": 0.6})
    async with gateway(config) as c, watching(c, "plain") as events:
        await asyncio.sleep(0.3)
        await c.put("/v1/kv/plain/keeps-it-alive", content=b"1", headers=headers("writer"))
        assert (await events.change()).event == "put"
        changed = time.monotonic()
        end = await events.change(within=5)
        assert end.event == "reconnect" and end.json["reason"] == "idle"
        assert time.monotonic() - changed >= 0.4


async def test_heartbeats_carry_the_cursor_past_changes_outside_the_prefix(fed: str) -> None:
    config = watch_config(fed, watch={"heartbeat_interval": 0.2})
    async with gateway(config) as c, watching(c, "plain", prefix="mine:") as events:
        await c.put("/v1/kv/plain/theirs", content=b"1", headers=headers("writer"))
        deadline = time.monotonic() + WAIT
        while True:
            beat = await events.next()
            assert beat.event is None
            if beat.id is not None or time.monotonic() > deadline:
                break
        assert beat.id is not None and beat.id != events.start  # type: ignore[attr-defined]
        # Resuming from it skips only what the prefix excludes.
        await c.put("/v1/kv/plain/mine:1", content=b"1", headers=headers("writer"))
        async with watching(c, "plain", prefix="mine:", headers={"Last-Event-ID": beat.id}) as resumed:
            assert (await resumed.change()).json["key"] == "mine:1"


async def test_streams_per_principal_are_capped_and_given_back(fed: str) -> None:
    config = watch_config(fed, watch={"max_streams_per_principal": 2})
    async with gateway(config) as c:
        before = await open_streams(c)
        async with watching(c, "plain", "reader"), watching(c, "plain", "reader"):
            assert await open_streams(c) == before + 2
            r = await c.get("/v1/kv/plain/_watch", headers=headers("reader"))
            assert (r.status_code, r.json()["code"]) == (429, "TOO_MANY_STREAMS")
            assert r.headers["retry-after"]
            # Another principal has slots of its own.
            async with watching(c, "plain", "writer"):
                pass
        # The slots come back when the clients go away.
        deadline = time.monotonic() + WAIT
        while True:
            async with c.stream("GET", "/v1/kv/plain/_watch", headers=headers("reader")) as r:
                if r.status_code == 200 or time.monotonic() > deadline:
                    break
            await asyncio.sleep(0.05)
        assert r.status_code == 200
        async with watching(c, "plain", "reader"), watching(c, "plain", "reader"):
            pass
        deadline = time.monotonic() + WAIT
        while True:
            now_open = await open_streams(c)
            if now_open == before or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        assert now_open == before


async def test_head_answers_the_headers_and_gives_the_slot_back(fed: str) -> None:
    config = watch_config(fed, watch={"max_streams_per_principal": 1})
    async with gateway(config) as c:
        for _ in range(3):
            r = await c.head("/v1/kv/plain/_watch", headers=headers("reader"))
            assert r.status_code == 200 and r.content == b""
            assert r.headers["content-type"] == "text/event-stream"
        async with watching(c, "plain", "reader"):
            pass


async def open_streams(c: httpx.AsyncClient) -> float:
    """The ``prism_watch_streams_open`` gauge of the gateway's /metrics."""
    text = (await c.get("/metrics", headers=headers("admin"))).text
    (line,) = [line for line in text.splitlines() if line.startswith("prism_watch_streams_open ")]
    return float(line.split()[1])


async def test_values_are_not_carried_so_pii_never_is(fed: str) -> None:
    async with gateway(watch_config(fed)) as c, watching(c, "people", "reader") as events:
        body = json.dumps({"email": "ann@example.com", "n": 1}).encode()
        await c.put("/v1/kv/people/ann", content=body, headers=headers("writer"))
        event = await events.change()
        assert event.json["key"] == "ann"
        assert "ann@example.com" not in "\n".join(event.data)
        assert "value" not in event.json


async def test_the_route_is_in_openapi(fed: str) -> None:
    async with gateway(watch_config(fed)) as c:
        doc = (await c.get("/openapi.json", headers=headers("admin"))).json()
    op = doc["paths"]["/v1/kv/{ns}/_watch"]["get"]
    assert op["operationId"] == "watchKeys"
    assert {"200", "409", "410", "429"} <= set(op["responses"])
    assert "text/event-stream" in op["responses"]["200"]["content"]
    assert "ChangeEvent" in doc["components"]["schemas"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("heartbeat_interval", 0),
        ("idle_timeout", -1),
        ("max_duration", 0),
        ("max_streams_per_principal", 0),
        ("batch_size", 5000),
        ("poll_interval", 120),
    ],
)
def test_bad_watch_settings_name_the_field(field: str, value: float) -> None:
    with pytest.raises(ConfigError, match=rf"\$\.watch\.{field}"):
        parse_config(watch_config("memory://", watch={field: value}), source="t.yaml", env=ENV)


# -- real processes ---------------------------------------------------------------------------


def served_config(store: str, **extra: Any) -> dict[str, Any]:
    """``watch_config`` without PII (whose key comes from this process's environment)."""
    config = watch_config(store, **extra)
    del config["pii_keys"]
    config["namespaces"] = [ns for ns in config["namespaces"] if "pii" not in ns]
    return config


def sse_lines(url: str, *, timeout: float = WAIT, **request: Any) -> Iterator[str]:
    with httpx.stream("GET", url, timeout=timeout, **request) as r:
        assert r.status_code == 200, r.read()
        yield from r.iter_lines()


def next_event(lines: Iterator[str], name: str | None = None) -> dict[str, str]:
    """The next event (named ``name`` when given) of a line iterator, as a field -> value mapping."""
    fields: dict[str, str] = {}
    for line in lines:
        if line == "":
            if "event" in fields and (name is None or fields["event"] == name):
                return fields
            fields = {}
            continue
        key, _, value = line.partition(":")
        if key:
            fields[key] = value.removeprefix(" ")
    raise EOFError("the stream ended")


def test_shutdown_ends_streams_with_a_reconnect_event(tmp_path: Path) -> None:
    config = served_config(f"sqlite:///{tmp_path / 'fed.db'}?feed=true", server={"shutdown_timeout": 20})
    with serving(tmp_path, config) as served:
        lines = sse_lines(f"{served.url}/v1/kv/plain/_watch", headers=headers("reader"))
        next(lines)  # the opening frame is on its way: the stream is open
        httpx.put(f"{served.url}/v1/kv/plain/a", content=b"1", headers=headers("writer"))
        put = next_event(lines)
        stopped = time.monotonic()
        served.proc.send_signal(signal.SIGTERM)
        end = next_event(lines)
        assert end["event"] == "reconnect" and "id" not in end
        assert json.loads(end["data"])["reason"] == "shutdown"
        served.proc.wait(timeout=15)
        # Drained, not waited out: well inside the 20 s shutdown budget.
        assert time.monotonic() - stopped < 8
        assert served.proc.returncode == 0, served.stderr()
    assert put["event"] == "put"


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    url, server = postgres_url()
    try:
        yield url
    finally:
        if server is not None:
            server.close()


def test_a_change_through_one_gateway_reaches_a_watcher_on_another(tmp_path: Path, pg_url: str) -> None:
    sep = "&" if "?" in pg_url else "?"
    config = served_config(f"{pg_url}{sep}feed=true")
    config["namespaces"] = [{"name": f"shared{free_port()}"}]
    ns = config["namespaces"][0]["name"]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with serving(tmp_path / "a", config) as a, serving(tmp_path / "b", config) as b:
        lines = sse_lines(f"{b.url}/v1/kv/{ns}/_watch", headers=headers("reader"))
        next(lines)
        written = []
        for i in range(5):
            r = httpx.put(f"{a.url}/v1/kv/{ns}/k{i}", content=b"v", headers=headers("writer"))
            assert r.status_code == 201
            written.append((f"k{i}", r.headers["etag"].strip('"')))
        got = []
        for _ in range(5):
            data = json.loads(next_event(lines, "put")["data"])
            got.append((data["key"], data["etag"]))
        assert got == written


@pytest.fixture
def own_pg() -> Iterator[PostgresServer]:
    """A PostgreSQL server of this test's own, to stop and start again."""
    try:
        server = PostgresServer.launch()
    except ServerUnavailable as exc:
        require_or_skip("postgres", f"{exc} ({INSTALL_HINT})")
    try:
        yield server
    finally:
        server.close()


async def test_a_store_stopped_mid_stream_ends_it_with_a_problem_and_a_resume_misses_nothing(
    own_pg: PostgresServer,
) -> None:
    sep = "&" if "?" in own_pg.url else "?"
    async with gateway(watch_config(f"{own_pg.url}{sep}feed=true")) as c:
        async with watching(c, "plain") as events:
            await c.put("/v1/kv/plain/before", content=b"1", headers=headers("writer"))
            before = await events.change()
            assert before.json["key"] == "before"
            await asyncio.to_thread(own_pg.stop)
            end = await events.change(within=60)
            assert end.event == "problem", end
            problem = end.json
            assert (problem["status"], problem["code"]) == (503, "BACKEND_UNAVAILABLE")
            assert await events.ended()
        await asyncio.to_thread(own_pg.start)
        deadline = time.monotonic() + 30
        while (await c.put("/v1/kv/plain/after", content=b"1", headers=headers("writer"))).status_code >= 500:
            assert time.monotonic() < deadline, "the store did not come back"
            await asyncio.sleep(0.2)
        async with watching(c, "plain", headers={"Last-Event-ID": before.id}) as resumed:
            assert (await resumed.change()).json["key"] == "after"


async def test_watching_works_beside_a_control_store(pg_url: str) -> None:
    # With a control store every namespace is served ready to migrate: its feed is still the store's.
    sep = "&" if "?" in pg_url else "?"
    ns = f"beside{free_port()}"
    config = watch_config(f"{pg_url}{sep}feed=true", control={"store": "main"})
    config["namespaces"] = [{"name": ns}]
    async with gateway(config) as c, watching(c, ns) as events:
        put = await c.put(f"/v1/kv/{ns}/k", content=b"v", headers=headers("writer"))
        assert put.status_code == 201, put.text
        seen = await events.change()
        assert (seen.event, seen.json["key"]) == ("put", "k")
        assert seen.json["etag"] == put.headers["etag"].strip('"')


async def test_an_app_whose_lifespan_runs_again_serves_watch_requests_again() -> None:
    app = build_app(watch_config("memory://"))
    for _ in range(2):
        port = free_port()
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", **UVICORN_OPTIONS)
        )
        task = asyncio.create_task(server.serve())
        for _ in range(1000):
            if server.started or task.done():
                break
            await asyncio.sleep(0.01)
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=WAIT) as c:
                r = await c.get("/v1/kv/plain/_watch", headers=headers("reader"))
            # No feed on this store: refused for that reason, not as a server shutting down.
            assert r.status_code == 409, r.text
            assert r.json()["code"] == "FEED_NOT_ENABLED"
        finally:
            server.should_exit = True
            await task
