"""A namespace's change-feed retention from the config file: ``namespaces[].feed``."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from gateway_helpers import build_app, client_for, full_config, headers

import prism
from prism.gateway.config import ConfigError
from prism.gateway.tenancy import physical_namespace


def _config(tmp_path: Path, store: str) -> dict[str, object]:
    return full_config(
        tmp_path,
        stores={"main": store},
        namespaces=[
            {"name": "events", "feed": {"max_changes": 3}},
            {"name": "orders", "tenant_scoped": True, "feed": {"max_changes": 3, "retention_seconds": 600}},
            {"name": "plain"},
        ],
    )


async def test_namespaces_keep_the_feed_retention_of_the_config(tmp_path: Path) -> None:
    shared = f"gwfeed{uuid.uuid4().hex[:8]}"
    config = _config(tmp_path, f"memory://{shared}?feed=true")
    # A store on the same data sees the changes the gateway's writes logged and trimmed.
    with prism.connect_sync(f"memory://{shared}?feed=true") as seen:
        starts = {
            name: seen.namespace(name).watch().start()
            for name in ("events", "plain", physical_namespace("orders", "acme"))
        }
        async with client_for(config) as client:
            for i in range(10):
                for ns in ("events", "plain", "orders"):
                    r = await client.put(f"/v1/kv/{ns}/k{i}", content=b"x", headers=headers("acme"))
                    assert r.status_code in (200, 201), r.text
        for name in ("events", physical_namespace("orders", "acme")):
            with pytest.raises(prism.CursorExpired):
                next(seen.namespace(name).watch(after=starts[name]))
        feed = seen.namespace("plain").watch(after=starts["plain"])
        assert [next(feed).key for _ in range(10)] == [f"k{i}" for i in range(10)]


@pytest.mark.parametrize(
    ("feed", "path"),
    [
        ({"max_changes": 0}, "$.namespaces[0].feed.max_changes"),
        ({"retention_seconds": -1}, "$.namespaces[0].feed.retention_seconds"),
        ({"retention_seconds": 60, "unknown": 1}, "$.namespaces[0].feed"),
    ],
)
def test_a_bad_feed_retention_names_its_field(tmp_path: Path, feed: dict[str, object], path: str) -> None:
    config = full_config(tmp_path, namespaces=[{"name": "events", "feed": feed}])
    with pytest.raises(ConfigError) as info:
        build_app(config)
    assert info.value.path == path


@pytest.mark.parametrize("tenant_scoped", [False, True])
def test_a_feed_retention_on_a_store_without_a_feed_is_refused(tmp_path: Path, tenant_scoped: bool) -> None:
    config = full_config(
        tmp_path,
        stores={"main": "memory://"},
        namespaces=[{"name": "events", "tenant_scoped": tenant_scoped, "feed": {"max_changes": 5}}],
    )
    with pytest.raises(ConfigError, match="feed=true") as info:
        build_app(config)
    assert info.value.path == "$.namespaces[0].feed"


def test_a_timeseries_namespace_has_no_feed(tmp_path: Path) -> None:
    config = full_config(
        tmp_path, namespaces=[{"name": "metrics", "kind": "timeseries", "feed": {"max_changes": 5}}]
    )
    with pytest.raises(ConfigError, match="kind: kv") as info:
        build_app(config)
    assert info.value.path == "$.namespaces[0].feed"
