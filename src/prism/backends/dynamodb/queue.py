"""DynamoDB engine: a Queue whose messages are items leased by conditional updates.

It reads the same URL and options as the DynamoDB store (``dynamodb://TABLE?endpoint=
...&region=...``, ``connect_timeout``, ``operation_timeout``, retries,
``max_connections``; credentials come from the AWS environment, never the URL) and
sends every request through a ``DynamoDBBackend``'s client with its deadlines,
retries and error mapping: given an open store on the same URL (and no options of its
own) that store's client, otherwise one of its own. Messages live in the table
``<TABLE>-queue`` (created on first use when missing), one item per message::

    pk = <queue name>    sk = <enqueue time>-<random>    (so a Query reads them oldest first)
    data (B), visible_at (N, epoch seconds), deliveries (N), token (S, while leased)

A lease is one ``UpdateItem`` that sets a new ``visible_at`` and ``token`` only if the
item is visible (``visible_at <= now``): of two consumers racing for a message,
exactly one wins. Heartbeat, ack and release are conditional on the token, so a
consumer whose lease expired and was taken over changes nothing. Consumers poll
(there is no push), every ``POLL_SECONDS`` while waiting. Times are the consumers'
clocks; keep them in sync (NTP) as for any lease.

DynamoDB has no fan-out, so its PubSub is the in-process one (see
:mod:`prism.backends.embedded`); several replicas need a ``pubsub_url`` on another engine.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any
from urllib.parse import urlsplit

from prism.backends.dynamodb.backend import DynamoDBBackend
from prism.backends.dynamodb.calls import Calls, ConditionFailed
from prism.backends.messaging import Lease, Queue, check_seconds
from prism.errors import BackendUnavailable, InvalidArgument

__all__ = ["DynamoDBQueue", "shared_backend"]

#: Seconds between two polls of a waiting lease.
POLL_SECONDS = 0.25
#: Items read per Query page when looking for visible messages.
QUERY_PAGE = 100
#: Query pages read per lease attempt (leased and delayed messages are skipped over).
MAX_PAGES = 10


def shared_backend(url: str, store: Any, options: dict[str, Any]) -> tuple[DynamoDBBackend, bool]:
    """The DynamoDB backend to run on, and whether this object owns it.

    ``store``'s backend is shared when it has the same table, region, endpoint and
    profile and the URL carries no options of its own (or the same as the store's);
    otherwise a backend is built from ``url`` and ``options`` (validated like a
    store's), of which only the client is opened.
    """
    own = DynamoDBBackend.from_url(url, **options)
    backend = getattr(store, "backend", None)
    if not isinstance(backend, DynamoDBBackend):
        return own, True
    mine, theirs = own.options, backend.options
    same_place = (mine.table, mine.region, mine.endpoint, mine.profile) == (
        theirs.table,
        theirs.region,
        theirs.endpoint,
        theirs.profile,
    )
    plain = not options and not urlsplit(url).query
    if mine == theirs or (same_place and plain):
        return backend, False
    return own, True


def _code(exc: BackendUnavailable) -> str:
    cause = exc.cause
    response = getattr(cause, "response", None)
    return str(response.get("Error", {}).get("Code")) if isinstance(response, dict) else ""


class DynamoDBQueue(Queue):
    """A Queue on the ``<TABLE>-queue`` table (see the module docstring)."""

    engine = "dynamodb"

    def __init__(self, name: str, backend: DynamoDBBackend, owns: bool = True) -> None:
        super().__init__(name)
        self._backend = backend
        self._owns = owns
        self._table = f"{backend.options.table}-queue"

    def __repr__(self) -> str:
        return f"<DynamoDBQueue {self.name!r} table {self._table!r} {self._state.value}>"

    @classmethod
    def from_url(cls, url: str, name: str, *, store: Any = None, **options: Any) -> DynamoDBQueue:
        """A queue on ``dynamodb://TABLE`` with the DynamoDB store's options."""
        return cls(name, *shared_backend(url, store, options))

    async def _open(self) -> None:
        if self._owns:
            await self._backend.open_client(self._ensure_table)
        else:
            await self._ensure_table(self._backend.calls)

    async def _call(self, operation: str, params: dict[str, Any]) -> Any:
        return await self._backend.calls.call(operation, {"TableName": self._table, **params})

    async def _ensure_table(self, calls: Calls) -> None:
        try:
            await calls.call("describe_table", {"TableName": self._table})
            return
        except BackendUnavailable as exc:
            if _code(exc) != "ResourceNotFoundException":
                raise
        try:
            await calls.call("create_table", {
                "TableName": self._table,
                "KeySchema": [
                    {"AttributeName": "pk", "KeyType": "HASH"},
                    {"AttributeName": "sk", "KeyType": "RANGE"},
                ],
                "AttributeDefinitions": [
                    {"AttributeName": "pk", "AttributeType": "S"},
                    {"AttributeName": "sk", "AttributeType": "S"},
                ],
                "BillingMode": "PAY_PER_REQUEST",
            })  # fmt: skip
        except BackendUnavailable as exc:
            if _code(exc) != "ResourceInUseException":  # another process is creating it
                raise
        ready_timeout = self._backend.options.table_ready_timeout
        deadline = time.monotonic() + ready_timeout
        while True:
            described = await calls.call("describe_table", {"TableName": self._table})
            if described["Table"].get("TableStatus") == "ACTIVE":
                return
            if time.monotonic() > deadline:
                raise BackendUnavailable(
                    f"table {self._table} did not become ACTIVE within {ready_timeout} s"
                )
            await asyncio.sleep(POLL_SECONDS)

    async def _close(self) -> None:
        if self._owns:
            await self._backend.close()

    def _key(self, message_id: str) -> dict[str, Any]:
        return {"pk": {"S": self.name}, "sk": {"S": message_id}}

    async def enqueue(self, data: bytes, *, delay: float = 0.0) -> str:
        delay = check_seconds(delay, "delay")
        if not isinstance(data, bytes):
            raise InvalidArgument(f"a message is bytes, got {type(data).__name__}")
        self._check_open()
        message_id = f"{time.time_ns():020d}-{os.urandom(4).hex()}"
        item = {
            **self._key(message_id),
            "data": {"B": data},
            "visible_at": {"N": repr(time.time() + delay)},
            "deliveries": {"N": "0"},
        }
        # A resend after a lost reply writes the same item again: no duplicate.
        await self._call("put_item", {"Item": item})
        return message_id

    async def _visible(self, now: float, limit: int) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        start: dict[str, Any] | None = None
        for _ in range(MAX_PAGES):
            kwargs: dict[str, Any] = {
                "KeyConditionExpression": "pk = :q",
                "FilterExpression": "visible_at <= :now",
                "ExpressionAttributeValues": {":q": {"S": self.name}, ":now": {"N": repr(now)}},
                "ConsistentRead": True,
                "Limit": QUERY_PAGE,
            }
            if start is not None:
                kwargs["ExclusiveStartKey"] = start
            page = await self._call("query", kwargs)
            found.extend(page.get("Items", []))
            start = page.get("LastEvaluatedKey")
            if len(found) >= limit or start is None:
                break
        return found

    async def _take(self, max_messages: int, lease_seconds: float) -> list[Lease]:
        now = time.time()
        leases: list[Lease] = []
        for item in await self._visible(now, max_messages * 2):
            if len(leases) >= max_messages:
                break
            token = os.urandom(12).hex()
            try:
                updated = await self._call("update_item", {
                    "Key": {"pk": item["pk"], "sk": item["sk"]},
                    "UpdateExpression": "SET visible_at = :until, #t = :tok ADD deliveries :one",
                    "ConditionExpression": "attribute_exists(pk) AND visible_at <= :now",
                    "ExpressionAttributeNames": {"#t": "token"},
                    "ExpressionAttributeValues": {
                        ":until": {"N": repr(now + lease_seconds)},
                        ":tok": {"S": token},
                        ":one": {"N": "1"},
                        ":now": {"N": repr(now)},
                    },
                    "ReturnValues": "ALL_NEW",
                })  # fmt: skip
            except ConditionFailed:
                continue  # another consumer took it first
            attrs = updated["Attributes"]
            leases.append(Lease(item["sk"]["S"], attrs["data"]["B"], int(attrs["deliveries"]["N"]), token))
        return leases

    async def lease(self, max_messages: int, lease_seconds: float, wait: float) -> list[Lease]:
        lease_seconds = check_seconds(lease_seconds, "lease_seconds", positive=True)
        deadline = time.monotonic() + check_seconds(wait, "wait")
        if isinstance(max_messages, bool) or not isinstance(max_messages, int) or max_messages < 1:
            raise InvalidArgument(f"max_messages must be an integer >= 1, got {max_messages!r}")
        while True:
            self._check_open()
            leases = await self._take(max_messages, lease_seconds)
            remaining = deadline - time.monotonic()
            if leases or remaining <= 0:
                return leases
            await asyncio.sleep(min(POLL_SECONDS, remaining))

    async def _conditional(self, operation: str, lease: Lease, **params: Any) -> bool:
        """Whether ``operation`` applied while the lease's token still held (resending it is harmless)."""
        self._check_open()
        values = {":tok": {"S": lease.handle}, **params.pop("values", {})}
        try:
            await self._call(operation, {
                "Key": self._key(lease.message_id),
                "ConditionExpression": "#t = :tok",
                "ExpressionAttributeNames": {"#t": "token"},
                "ExpressionAttributeValues": values,
                **params,
            })  # fmt: skip
        except ConditionFailed:
            return False
        return True

    async def heartbeat(self, lease: Lease, lease_seconds: float) -> bool:
        lease_seconds = check_seconds(lease_seconds, "lease_seconds", positive=True)
        return await self._conditional(
            "update_item",
            lease,
            UpdateExpression="SET visible_at = :until",
            values={":until": {"N": repr(time.time() + lease_seconds)}},
        )

    async def ack(self, lease: Lease) -> None:
        await self._conditional("delete_item", lease)

    async def release(self, lease: Lease, delay: float = 0.0) -> None:
        delay = check_seconds(delay, "delay")
        await self._conditional(
            "update_item",
            lease,
            UpdateExpression="SET visible_at = :at REMOVE #t",
            values={":at": {"N": repr(time.time() + delay)}},
        )

    async def depth(self) -> int:
        self._check_open()
        total = 0
        start: dict[str, Any] | None = None
        while True:
            kwargs: dict[str, Any] = {
                "KeyConditionExpression": "pk = :q",
                "ExpressionAttributeValues": {":q": {"S": self.name}},
                "Select": "COUNT",
                "ConsistentRead": True,
            }
            if start is not None:
                kwargs["ExclusiveStartKey"] = start
            page = await self._call("query", kwargs)
            total += int(page.get("Count", 0))
            start = page.get("LastEvaluatedKey")
            if start is None:
                return total
