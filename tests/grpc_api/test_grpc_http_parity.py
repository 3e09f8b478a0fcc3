"""HTTP and gRPC give the same answers for the same calls: one scenario, driven through both transports.

Each driver turns a call into a normalized answer: ``("ok", payload)`` or
``("error", code)``, the problem code, with the gRPC status checked against the
HTTP status it maps from. Etags differ between two fresh gateways, so a scenario
refers to the last etag it saw as ``LAST``.
"""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable
from typing import Any, Protocol
from urllib.parse import quote

import grpc
import httpx
import pytest
from grpc import aio
from grpc_helpers import api_key, serving

from prism.grpc._gen.prism.v1 import keyvalue_pb2 as pb
from prism.grpc._gen.prism.v1 import keyvalue_pb2_grpc as stubs
from prism.grpc.server import STATUS_CODES

LAST = "<last etag>"
Answer = tuple[str, Any]


class Driver(Protocol):
    last_etag: str

    async def put(
        self,
        ns: str,
        key: str,
        value: bytes,
        *,
        who: str = ...,
        if_match: str | None = ...,
        if_absent: bool = ...,
    ) -> Answer: ...
    async def get(self, ns: str, key: str, *, who: str = ...) -> Answer: ...
    async def delete(self, ns: str, key: str, *, who: str = ..., if_match: str | None = ...) -> Answer: ...
    async def get_many(self, ns: str, keys: list[str], *, who: str = ...) -> Answer: ...
    async def transact(self, ns: str, ops: list[tuple[str, str, bytes | None, str | None]]) -> Answer: ...
    async def scan(self, ns: str, prefix: str, limit: int) -> Answer: ...
    async def items(self, ns: str, record: str, puts: list[tuple[str, bytes]], start: str) -> Answer: ...


class HttpDriver:
    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client
        self.last_etag = ""
        self.statuses: list[int] = []

    def _etag(self, etag: str | None) -> str | None:
        return self.last_etag if etag == LAST else etag

    async def _send(self, method: str, path: str, who: str, **kwargs: Any) -> httpx.Response | Answer:
        headers = {"x-api-key": api_key(who), **kwargs.pop("headers", {})}
        response = await self.client.request(method, path, headers=headers, **kwargs)
        self.statuses.append(response.status_code)
        if response.status_code >= 400:
            return ("error", response.json()["code"])
        return response

    async def put(
        self,
        ns: str,
        key: str,
        value: bytes,
        *,
        who: str = "writer",
        if_match: str | None = None,
        if_absent: bool = False,
    ) -> Answer:
        headers = {}
        if if_match is not None:
            headers["if-match"] = f'"{self._etag(if_match)}"'
        if if_absent:
            headers["if-none-match"] = "*"
        answer = await self._send(
            "PUT", f"/v1/kv/{ns}/{quote(key, safe='')}", who, content=value, headers=headers
        )
        if isinstance(answer, tuple):
            return answer
        self.last_etag = answer.headers["etag"].strip('"')
        return ("ok", "replaced" if answer.status_code == 200 else "created")

    async def get(self, ns: str, key: str, *, who: str = "writer") -> Answer:
        answer = await self._send("GET", f"/v1/kv/{ns}/{quote(key, safe='')}", who)
        if isinstance(answer, tuple):
            return answer
        return ("ok", answer.content)

    async def delete(self, ns: str, key: str, *, who: str = "writer", if_match: str | None = None) -> Answer:
        headers = {} if if_match is None else {"if-match": f'"{self._etag(if_match)}"'}
        answer = await self._send("DELETE", f"/v1/kv/{ns}/{quote(key, safe='')}", who, headers=headers)
        return answer if isinstance(answer, tuple) else ("ok", None)

    async def get_many(self, ns: str, keys: list[str], *, who: str = "writer") -> Answer:
        answer = await self._send("POST", f"/v1/kv/{ns}/_bulk/get", who, json={"keys": keys})
        if isinstance(answer, tuple):
            return answer
        items = answer.json()["items"]
        return (
            "ok",
            [(i["key"], i["found"], base64.b64decode(i["value"]) if i["found"] else b"") for i in items],
        )

    async def transact(self, ns: str, ops: list[tuple[str, str, bytes | None, str | None]]) -> Answer:
        body = [
            {"op": op, "key": key, "if_match": self._etag(if_match)}
            | ({"value": base64.b64encode(value).decode()} if value is not None else {})
            for op, key, value, if_match in ops
        ]
        answer = await self._send("POST", f"/v1/kv/{ns}/_transact", "writer", json={"ops": body})
        if isinstance(answer, tuple):
            return answer
        return ("ok", [(r["key"], r["ok"]) for r in answer.json()["results"]])

    async def scan(self, ns: str, prefix: str, limit: int) -> Answer:
        answer = await self._send("GET", f"/v1/kv/{ns}", "writer", params={"prefix": prefix, "limit": limit})
        if isinstance(answer, tuple):
            return answer
        page = answer.json()
        return ("ok", (page["keys"], page["next_page_token"] is not None))

    async def items(self, ns: str, record: str, puts: list[tuple[str, bytes]], start: str) -> Answer:
        body = {"items": [{"key": k, "value": base64.b64encode(v).decode()} for k, v in puts]}
        answer = await self._send("PUT", f"/v1/records/{ns}/{record}", "writer", json=body)
        if isinstance(answer, tuple):
            return answer
        answer = await self._send("GET", f"/v1/records/{ns}/{record}", "writer", params={"start": start})
        if isinstance(answer, tuple):
            return answer
        return ("ok", [(i["key"], base64.b64decode(i["value"])) for i in answer.json()["items"]])


class GrpcDriver:
    def __init__(self, channel: aio.Channel) -> None:
        self.kv = stubs.KeyValueStub(channel)
        self.last_etag = ""
        self.codes: list[grpc.StatusCode] = []

    def _etag(self, etag: str | None) -> str | None:
        return self.last_etag if etag == LAST else etag

    async def _call(self, method: Callable[..., Awaitable[Any]], request: Any, who: str) -> Any:
        try:
            answer = await method(request, metadata=(("x-api-key", api_key(who)),))
        except aio.AioRpcError as exc:
            self.codes.append(exc.code())
            return ("error", dict(exc.trailing_metadata() or ())["prism-error-code"])
        self.codes.append(grpc.StatusCode.OK)
        return answer

    async def put(
        self,
        ns: str,
        key: str,
        value: bytes,
        *,
        who: str = "writer",
        if_match: str | None = None,
        if_absent: bool = False,
    ) -> Answer:
        op = pb.PutOp(key=key, value=value, if_absent=if_absent)
        if if_match is not None:
            op.if_match = self._etag(if_match) or ""
        answer = await self._call(self.kv.Put, pb.PutRequest(namespace=ns, put=op), who)
        if isinstance(answer, tuple):
            return answer
        self.last_etag = answer.etag
        return ("ok", "replaced" if answer.existed else "created")

    async def get(self, ns: str, key: str, *, who: str = "writer") -> Answer:
        answer = await self._call(self.kv.Get, pb.GetRequest(namespace=ns, key=key), who)
        return answer if isinstance(answer, tuple) else ("ok", answer.item.value)

    async def delete(self, ns: str, key: str, *, who: str = "writer", if_match: str | None = None) -> Answer:
        op = pb.DeleteOp(key=key)
        if if_match is not None:
            op.if_match = self._etag(if_match) or ""
        answer = await self._call(self.kv.Delete, pb.DeleteRequest(namespace=ns, delete=op), who)
        return answer if isinstance(answer, tuple) else ("ok", None)

    async def get_many(self, ns: str, keys: list[str], *, who: str = "writer") -> Answer:
        answer = await self._call(self.kv.GetMany, pb.GetManyRequest(namespace=ns, keys=keys), who)
        if isinstance(answer, tuple):
            return answer
        return ("ok", [(i.key, i.found, i.value) for i in answer.items])

    async def transact(self, ns: str, ops: list[tuple[str, str, bytes | None, str | None]]) -> Answer:
        request = pb.TransactRequest(namespace=ns)
        for op, key, value, if_match in ops:
            etag = self._etag(if_match)
            if op == "put":
                put = pb.PutOp(key=key, value=value or b"")
                if etag is not None:
                    put.if_match = etag
                request.ops.add(put=put)
            else:
                delete = pb.DeleteOp(key=key)
                if etag is not None:
                    delete.if_match = etag
                request.ops.add(delete=delete)
        answer = await self._call(self.kv.Transact, request, "writer")
        return answer if isinstance(answer, tuple) else ("ok", [(r.key, r.ok) for r in answer.results])

    async def scan(self, ns: str, prefix: str, limit: int) -> Answer:
        answer = await self._call(
            self.kv.Scan, pb.ScanRequest(namespace=ns, prefix=prefix, limit=limit), "writer"
        )
        return (
            answer if isinstance(answer, tuple) else ("ok", (list(answer.keys), bool(answer.next_page_token)))
        )

    async def items(self, ns: str, record: str, puts: list[tuple[str, bytes]], start: str) -> Answer:
        ops = [pb.PutOp(key=k, value=v) for k, v in puts]
        answer = await self._call(
            self.kv.PutItems, pb.PutItemsRequest(namespace=ns, record=record, items=ops), "writer"
        )
        if isinstance(answer, tuple):
            return answer
        answer = await self._call(
            self.kv.GetItems, pb.GetItemsRequest(namespace=ns, record=record, start=start), "writer"
        )
        return answer if isinstance(answer, tuple) else ("ok", [(i.key, i.value) for i in answer.items])


Scenario = Callable[[Driver], Awaitable[list[Answer]]]


async def _crud(d: Driver) -> list[Answer]:
    return [
        await d.get("plain", "a"),
        await d.put("plain", "a", b"1"),
        await d.put("plain", "a", b"2"),
        await d.get("plain", "a"),
        await d.delete("plain", "a"),
        await d.delete("plain", "a"),
        await d.get("plain", "a"),
    ]


async def _conditions(d: Driver) -> list[Answer]:
    return [
        await d.put("plain", "c", b"1", if_absent=True),
        await d.put("plain", "c", b"2", if_absent=True),
        await d.put("plain", "c", b"3", if_match="stale"),
        await d.put("plain", "c", b"4", if_match=LAST),
        await d.delete("plain", "c", if_match="stale"),
        await d.delete("plain", "c", if_match=LAST),
        await d.get("plain", "c"),
    ]


async def _refusals(d: Driver) -> list[Answer]:
    return [
        await d.get("nowhere", "a"),
        await d.put("plain", "a", b"1", who="reader"),
        await d.put("small", "a", b"x" * 64),
        await d.get("plain", "bad\x00key"),
    ]


async def _batches(d: Driver) -> list[Answer]:
    return [
        await d.put("plain", "b1", b"1"),
        await d.get_many("plain", ["b1", "b2"]),
        await d.transact("plain", [("put", "b2", b"2", None), ("delete", "b1", None, "stale")]),
        await d.transact("plain", [("put", "b2", b"2", None), ("delete", "b1", None, None)]),
        await d.get_many("plain", ["b1", "b2"]),
        await d.scan("plain", "b", 1),
        await d.scan("plain", "", 10),
    ]


async def _tenants_and_records(d: Driver) -> list[Answer]:
    return [
        await d.put("orders", "o", b"acme", who="acme"),
        await d.get("orders", "o", who="acme"),
        await d.get("orders", "o", who="writer"),
        await d.items("plain", "r", [("x", b"1"), ("y", b"2"), ("z", b"3")], "y"),
    ]


@pytest.mark.parametrize("scenario", [_crud, _conditions, _refusals, _batches, _tenants_and_records])
async def test_http_and_grpc_answer_alike(scenario: Scenario) -> None:
    async with serving() as over_http:
        http = HttpDriver(over_http.http)
        http_answers = await scenario(http)
    async with serving() as over_grpc:
        rpc = GrpcDriver(over_grpc.channel)
        grpc_answers = await scenario(rpc)
    assert grpc_answers == http_answers
    assert len(http.statuses) == len(rpc.codes)
    for status, code in zip(http.statuses, rpc.codes, strict=True):
        assert code == (grpc.StatusCode.OK if status < 400 else STATUS_CODES[status]), (status, code)
