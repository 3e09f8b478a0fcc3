"""DynamoDB engine: a Queue whose messages are items leased by conditional updates.

It opens its own client from the store URL (``dynamodb://TABLE?endpoint=...&region=...``;
credentials come from the AWS environment, never the URL) and keeps messages in the
table ``<TABLE>-queue`` (created on first use when missing), one item per message::

    pk = <queue name>    sk = <enqueue time>-<random>    (so a Query reads them oldest first)
    data (B), visible_at (N, epoch seconds), deliveries (N), token (S, while leased)

A lease is one ``UpdateItem`` that sets a new ``visible_at`` and ``token`` only if the
item is visible (``visible_at <= now``): of two consumers racing for a message,
exactly one wins. Heartbeat, ack and release are conditional on the token, so a
consumer whose lease expired and was taken over changes nothing. Consumers poll
(there is no push), every ``POLL_SECONDS`` while waiting. Times are the consumers'
clocks; keep them in sync (NTP) as for any lease.

DynamoDB has no fan-out, so its PubSub is the in-process one (see
:mod:`prism.patterns`); several replicas need a ``pubsub_url`` on another engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from aiobotocore.session import AioSession
from botocore.exceptions import BotoCoreError, ClientError

from prism.backends.messaging import Lease, Queue, check_seconds
from prism.errors import BackendUnavailable, InvalidArgument

__all__ = ["DynamoDBQueue"]

#: Seconds between two polls of a waiting lease.
POLL_SECONDS = 0.25
#: Items read per Query page when looking for visible messages.
QUERY_PAGE = 100
#: Query pages read per lease attempt (leased and delayed messages are skipped over).
MAX_PAGES = 10
#: Seconds to wait for a created table to become ACTIVE.
TABLE_READY_TIMEOUT = 60.0
_CONDITION_FAILED = "ConditionalCheckFailedException"


def _parse(url: str) -> tuple[str, str | None, str | None, str | None]:
    """(table, endpoint, region, profile) from a ``dynamodb://TABLE?...`` URL."""
    parts = urlsplit(url)
    if "@" in parts.netloc:
        raise InvalidArgument("dynamodb:// URLs hold no credentials: they come from the AWS environment")
    table = unquote(parts.netloc)
    if not 3 <= len(table) <= 249:
        raise InvalidArgument(f"DynamoDB table names are 3-249 characters here, got {table!r}")
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    return table, query.get("endpoint"), query.get("region"), query.get("profile")


def _unavailable(what: str, exc: BaseException) -> BackendUnavailable:
    return BackendUnavailable(f"dynamodb queue {what} failed: {type(exc).__name__}: {exc}", cause=exc)


def _failed_condition(exc: ClientError) -> bool:
    return str(exc.response.get("Error", {}).get("Code")) == _CONDITION_FAILED


class DynamoDBQueue(Queue):
    """A Queue on the ``<TABLE>-queue`` table (see the module docstring)."""

    engine = "dynamodb"

    def __init__(self, name: str, url: str) -> None:
        super().__init__(name)
        table, self._endpoint, self._region, self._profile = _parse(url)
        self._table = f"{table}-queue"
        self._stack: contextlib.AsyncExitStack | None = None

    @classmethod
    def from_url(cls, url: str, name: str, *, store: Any = None, **options: Any) -> DynamoDBQueue:
        if options:
            raise InvalidArgument(f"the dynamodb queue takes no options, got {sorted(options)}")
        return cls(name, url)

    async def _open(self) -> None:
        self._stack = contextlib.AsyncExitStack()
        try:
            session = AioSession(profile=self._profile)
            self._client: Any = await self._stack.enter_async_context(
                session.create_client("dynamodb", region_name=self._region, endpoint_url=self._endpoint)
            )
            await self._ensure_table()
        except (ClientError, BotoCoreError) as exc:
            await self._stack.aclose()
            raise _unavailable("setup", exc) from exc

    async def _ensure_table(self) -> None:
        try:
            await self._client.describe_table(TableName=self._table)
            return
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ResourceNotFoundException":
                raise
        try:
            await self._client.create_table(
                TableName=self._table,
                KeySchema=[
                    {"AttributeName": "pk", "KeyType": "HASH"},
                    {"AttributeName": "sk", "KeyType": "RANGE"},
                ],
                AttributeDefinitions=[
                    {"AttributeName": "pk", "AttributeType": "S"},
                    {"AttributeName": "sk", "AttributeType": "S"},
                ],
                BillingMode="PAY_PER_REQUEST",
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ResourceInUseException":
                raise
        deadline = time.monotonic() + TABLE_READY_TIMEOUT
        while True:
            described = await self._client.describe_table(TableName=self._table)
            if described["Table"].get("TableStatus") == "ACTIVE":
                return
            if time.monotonic() > deadline:
                raise BackendUnavailable(f"table {self._table} did not become ACTIVE")
            await asyncio.sleep(POLL_SECONDS)

    async def _close(self) -> None:
        if self._stack is not None:
            await self._stack.aclose()

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
        try:
            await self._client.put_item(TableName=self._table, Item=item)
        except (ClientError, BotoCoreError) as exc:
            raise _unavailable("enqueue", exc) from exc
        return message_id

    async def _visible(self, now: float, limit: int) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        start: dict[str, Any] | None = None
        for _ in range(MAX_PAGES):
            kwargs: dict[str, Any] = {
                "TableName": self._table,
                "KeyConditionExpression": "pk = :q",
                "FilterExpression": "visible_at <= :now",
                "ExpressionAttributeValues": {":q": {"S": self.name}, ":now": {"N": repr(now)}},
                "ConsistentRead": True,
                "Limit": QUERY_PAGE,
            }
            if start is not None:
                kwargs["ExclusiveStartKey"] = start
            page = await self._client.query(**kwargs)
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
                updated = await self._client.update_item(
                    TableName=self._table,
                    Key={"pk": item["pk"], "sk": item["sk"]},
                    UpdateExpression="SET visible_at = :until, #t = :tok ADD deliveries :one",
                    ConditionExpression="attribute_exists(pk) AND visible_at <= :now",
                    ExpressionAttributeNames={"#t": "token"},
                    ExpressionAttributeValues={
                        ":until": {"N": repr(now + lease_seconds)},
                        ":tok": {"S": token},
                        ":one": {"N": "1"},
                        ":now": {"N": repr(now)},
                    },
                    ReturnValues="ALL_NEW",
                )
            except ClientError as exc:
                if _failed_condition(exc):
                    continue  # another consumer took it first
                raise
            attrs = updated["Attributes"]
            leases.append(Lease(item["sk"]["S"], attrs["data"]["B"], int(attrs["deliveries"]["N"]), token))
        return leases

    async def lease(self, max_messages: int, lease_seconds: float, wait: float) -> list[Lease]:
        lease_seconds = check_seconds(lease_seconds, "lease_seconds", positive=True)
        deadline = time.monotonic() + check_seconds(wait, "wait")
        if max_messages < 1:
            raise InvalidArgument("max_messages must be >= 1")
        while True:
            self._check_open()
            try:
                leases = await self._take(max_messages, lease_seconds)
            except (ClientError, BotoCoreError) as exc:
                raise _unavailable("lease", exc) from exc
            remaining = deadline - time.monotonic()
            if leases or remaining <= 0:
                return leases
            await asyncio.sleep(min(POLL_SECONDS, remaining))

    async def _conditional(self, what: str, lease: Lease, **kwargs: Any) -> bool:
        self._check_open()
        values = {":tok": {"S": lease.handle}, **kwargs.pop("values", {})}
        try:
            await kwargs.pop("call")(
                TableName=self._table,
                Key=self._key(lease.message_id),
                ConditionExpression="#t = :tok",
                ExpressionAttributeNames={"#t": "token"},
                ExpressionAttributeValues=values,
                **kwargs,
            )
        except ClientError as exc:
            if _failed_condition(exc):
                return False
            raise _unavailable(what, exc) from exc
        except BotoCoreError as exc:
            raise _unavailable(what, exc) from exc
        return True

    async def heartbeat(self, lease: Lease, lease_seconds: float) -> bool:
        lease_seconds = check_seconds(lease_seconds, "lease_seconds", positive=True)
        return await self._conditional(
            "heartbeat",
            lease,
            call=self._client.update_item,
            UpdateExpression="SET visible_at = :until",
            values={":until": {"N": repr(time.time() + lease_seconds)}},
        )

    async def ack(self, lease: Lease) -> None:
        await self._conditional("ack", lease, call=self._client.delete_item)

    async def release(self, lease: Lease, delay: float = 0.0) -> None:
        delay = check_seconds(delay, "delay")
        await self._conditional(
            "release",
            lease,
            call=self._client.update_item,
            UpdateExpression="SET visible_at = :at REMOVE #t",
            values={":at": {"N": repr(time.time() + delay)}},
        )

    async def depth(self) -> int:
        self._check_open()
        total = 0
        start: dict[str, Any] | None = None
        try:
            while True:
                kwargs: dict[str, Any] = {
                    "TableName": self._table,
                    "KeyConditionExpression": "pk = :q",
                    "ExpressionAttributeValues": {":q": {"S": self.name}},
                    "Select": "COUNT",
                    "ConsistentRead": True,
                }
                if start is not None:
                    kwargs["ExclusiveStartKey"] = start
                page = await self._client.query(**kwargs)
                total += int(page.get("Count", 0))
                start = page.get("LastEvaluatedKey")
                if start is None:
                    return total
        except (ClientError, BotoCoreError) as exc:
            raise _unavailable("depth", exc) from exc
