"""prism.v1.KeyValue over a real gRPC server: the pipeline's answers as gRPC statuses."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from grpc_helpers import StalledBackend, api_key, base_config, serving

import prism
from prism.grpc._gen.prism.v1 import keyvalue_pb2 as pb
from prism.grpc._gen.prism.v1 import keyvalue_pb2_grpc as stubs


def auth(name: str = "writer") -> tuple[tuple[str, str], ...]:
    return (("x-api-key", api_key(name)),)


async def test_put_get_delete_round_trip() -> None:
    async with serving() as s:
        kv = stubs.KeyValueStub(s.channel)
        put = await kv.Put(
            pb.PutRequest(namespace="plain", put=pb.PutOp(key="a", value=b"1")), metadata=auth()
        )
        assert put.etag and not put.existed
        got = await kv.Get(pb.GetRequest(namespace="plain", key="a"), metadata=auth())
        assert (got.item.key, got.item.value, got.item.etag) == ("a", b"1", put.etag)
        assert not got.item.HasField("expires_at")
        again = await kv.Put(
            pb.PutRequest(namespace="plain", put=pb.PutOp(key="a", value=b"2", ttl_seconds=60)),
            metadata=auth(),
        )
        assert again.existed
        got = await kv.Get(pb.GetRequest(namespace="plain", key="a"), metadata=auth())
        assert got.item.value == b"2" and got.item.HasField("expires_at")
        deleted = await kv.Delete(
            pb.DeleteRequest(namespace="plain", delete=pb.DeleteOp(key="a")), metadata=auth()
        )
        assert deleted.existed
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await kv.Get(pb.GetRequest(namespace="plain", key="a"), metadata=auth())
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
        assert ("prism-error-code", "KEY_NOT_FOUND") in tuple(missing.value.trailing_metadata() or ())


@pytest.mark.parametrize(
    ("metadata", "request_", "code", "error"),
    [
        (
            (),
            pb.GetRequest(namespace="plain", key="a"),
            grpc.StatusCode.UNAUTHENTICATED,
            "MISSING_CREDENTIALS",
        ),
        (
            (("authorization", "Bearer nope-nope-nope"),),
            pb.GetRequest(namespace="plain", key="a"),
            grpc.StatusCode.UNAUTHENTICATED,
            "INVALID_CREDENTIALS",
        ),
        (
            auth(),
            pb.GetRequest(namespace="nowhere", key="a"),
            grpc.StatusCode.NOT_FOUND,
            "NAMESPACE_NOT_FOUND",
        ),
        (auth(), pb.GetRequest(namespace="plain", key=""), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_KEY"),
    ],
)
async def test_refusals_are_statuses(
    metadata: tuple[tuple[str, str], ...], request_: pb.GetRequest, code: grpc.StatusCode, error: str
) -> None:
    async with serving() as s:
        kv = stubs.KeyValueStub(s.channel)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await kv.Get(request_, metadata=metadata)
        assert refused.value.code() == code
        trailers = dict(refused.value.trailing_metadata() or ())
        assert trailers["prism-error-code"] == error, refused.value.details()


async def test_bearer_token_and_permission_denied() -> None:
    async with serving() as s:
        kv = stubs.KeyValueStub(s.channel)
        bearer = (("authorization", f"Bearer {api_key('reader')}"),)
        with pytest.raises(grpc.aio.AioRpcError) as denied:
            await kv.Put(pb.PutRequest(namespace="plain", put=pb.PutOp(key="a", value=b"1")), metadata=bearer)
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await kv.Get(pb.GetRequest(namespace="plain", key="a"), metadata=bearer)
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND


async def test_failed_condition_is_failed_precondition() -> None:
    async with serving() as s:
        kv = stubs.KeyValueStub(s.channel)
        await kv.Put(pb.PutRequest(namespace="plain", put=pb.PutOp(key="a", value=b"1")), metadata=auth())
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await kv.Put(
                pb.PutRequest(namespace="plain", put=pb.PutOp(key="a", value=b"2", if_absent=True)),
                metadata=auth(),
            )
        assert failed.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await kv.Transact(
                pb.TransactRequest(
                    namespace="plain",
                    ops=[
                        pb.TransactOp(put=pb.PutOp(key="b", value=b"x")),
                        pb.TransactOp(delete=pb.DeleteOp(key="a", if_match="stale")),
                    ],
                ),
                metadata=auth(),
            )
        assert failed.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "'a'" in (failed.value.details() or "")
        found = await kv.GetMany(pb.GetManyRequest(namespace="plain", keys=["a", "b"]), metadata=auth())
        assert [(i.key, i.found) for i in found.items] == [("a", True), ("b", False)]


async def test_rate_limited_calls_carry_retry_info() -> None:
    config = base_config(limits={"rate": 1, "burst": 1})
    async with serving(config) as s:
        kv = stubs.KeyValueStub(s.channel)
        request = pb.GetManyRequest(namespace="plain", keys=["a"])
        await kv.GetMany(request, metadata=auth())
        with pytest.raises(grpc.aio.AioRpcError) as limited:
            await kv.GetMany(request, metadata=auth())
        assert limited.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        trailers = dict(limited.value.trailing_metadata() or ())
        status = status_pb2.Status.FromString(trailers["grpc-status-details-bin"])
        info = error_details_pb2.RetryInfo()
        assert status.details[0].Unpack(info)
        assert info.retry_delay.seconds >= 1


async def test_idempotency_token_applies_a_write_once() -> None:
    async with serving() as s:
        kv = stubs.KeyValueStub(s.channel)
        token = pb.IdempotencyToken(generation_time_ms=1_700_000_000_000, token="t-1")
        request = pb.PutRequest(namespace="plain", put=pb.PutOp(key="a", value=b"1"), idempotency=token)
        first = await kv.Put(request, metadata=auth())
        await kv.Put(pb.PutRequest(namespace="plain", put=pb.PutOp(key="a", value=b"other")), metadata=auth())
        replayed = await kv.Put(request, metadata=auth())
        assert replayed == first
        got = await kv.Get(pb.GetRequest(namespace="plain", key="a"), metadata=auth())
        assert got.item.value == b"other"


async def test_tenants_see_their_own_entries() -> None:
    async with serving() as s:
        kv = stubs.KeyValueStub(s.channel)
        await kv.Put(
            pb.PutRequest(namespace="orders", put=pb.PutOp(key="o", value=b"acme")), metadata=auth("acme")
        )
        with pytest.raises(grpc.aio.AioRpcError) as other:
            await kv.Get(pb.GetRequest(namespace="orders", key="o"), metadata=auth("writer"))
        assert other.value.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.PERMISSION_DENIED)


async def test_scan_and_record_items() -> None:
    async with serving() as s:
        kv = stubs.KeyValueStub(s.channel)
        await kv.PutMany(
            pb.PutManyRequest(namespace="plain", puts=[pb.PutOp(key=f"k{i}", value=b"v") for i in range(5)]),
            metadata=auth(),
        )
        page = await kv.Scan(pb.ScanRequest(namespace="plain", prefix="k", limit=3), metadata=auth())
        assert list(page.keys) == ["k0", "k1", "k2"] and page.next_page_token
        rest = await kv.Scan(
            pb.ScanRequest(namespace="plain", prefix="k", page_token=page.next_page_token), metadata=auth()
        )
        assert list(rest.keys) == ["k3", "k4"] and not rest.next_page_token
        written = await kv.PutItems(
            pb.PutItemsRequest(
                namespace="plain", record="r", items=[pb.PutOp(key=k, value=k.encode() * 10) for k in "abc"]
            ),
            metadata=auth(),
        )
        assert all(r.ok and r.etag for r in written.results)
        capped = await kv.GetItems(
            pb.GetItemsRequest(namespace="plain", record="r", page_size_bytes=15), metadata=auth()
        )
        assert [i.key for i in capped.items] == ["a"] and capped.next_page_token
        ranged = await kv.GetItems(
            pb.GetItemsRequest(namespace="plain", record="r", start="b"), metadata=auth()
        )
        assert [i.key for i in ranged.items] == ["b", "c"]
        deleted = await kv.DeleteItems(
            pb.DeleteItemsRequest(namespace="plain", record="r", keys=pb.KeyList(keys=["a", "zz"])),
            metadata=auth(),
        )
        assert deleted.deleted == 1


async def test_prism_backend_retries_refused_writes_only_with_tokens() -> None:
    config = base_config(limits={"rate": 20, "burst": 1})
    async with serving(config) as s:
        url = f"prism://127.0.0.1:{s.port}?max_retries=20&retry_base=0.05&retry_cap=0.1"
        async with prism.connect(url, token=api_key("writer")) as store:
            ns = store.namespace("plain")
            for i in range(3):
                await ns.put(f"k{i}", b"v")  # the bucket is empty after the first: retried
            assert [(await ns.get(f"k{i}")) is not None for i in range(3)] == [True] * 3
        async with prism.connect(f"{url}&retry_writes=false", token=api_key("writer")) as store:
            ns = store.namespace("plain")
            with pytest.raises(prism.BackendUnavailable, match="RESOURCE_EXHAUSTED"):
                for i in range(3):
                    await ns.put(f"n{i}", b"v")


async def test_prism_backend_deadline_reaches_the_gateway() -> None:
    config = base_config(stores={"main": {"url": "memory://", "backend": "grpc_helpers:StalledBackend"}})
    async with serving(config) as s:
        before = StalledBackend.cancelled
        url = f"prism://127.0.0.1:{s.port}?operation_timeout=0.5"
        async with prism.connect(url, token=api_key("writer")) as store:
            with pytest.raises(prism.Timeout):
                await store.namespace("plain").put("k", b"v")
        for _ in range(100):
            if StalledBackend.cancelled > before:
                break
            await asyncio.sleep(0.05)
        # The gateway stopped the write when the caller's deadline passed, not at its own request timeout.
        assert StalledBackend.cancelled == before + 1
