"""The table Prism needs: checked on open, created on request (with its index and TTL)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from botocore.exceptions import ClientError

from prism.backends.dynamodb.calls import Calls, error_code
from prism.backends.dynamodb.feed import FEED_VIEW_TYPE, FEED_VIEW_TYPES
from prism.backends.dynamodb.layout import EXPIRES, INDEX_NAME, NS, PK, RID, SK, TTL_ATTRIBUTE
from prism.errors import BackendUnavailable, InvalidArgument

__all__ = ["TABLE_POLL_INTERVAL", "ensure_table", "table_definition"]

#: Seconds between two looks at a table that is being created.
TABLE_POLL_INTERVAL = 0.2


def table_definition(table: str, feed: bool = False) -> dict[str, Any]:
    """CreateTable parameters: on-demand billing, (pk, sk) keys, the ns -> rid index, and with
    ``feed`` a stream of the new images (the change feed)."""
    definition = _definition(table)
    if feed:
        definition["StreamSpecification"] = {"StreamEnabled": True, "StreamViewType": FEED_VIEW_TYPE}
    return definition


def _definition(table: str) -> dict[str, Any]:
    return {
        "TableName": table,
        "BillingMode": "PAY_PER_REQUEST",
        "AttributeDefinitions": [{"AttributeName": a, "AttributeType": "S"} for a in (PK, SK, NS, RID)],
        "KeySchema": [{"AttributeName": PK, "KeyType": "HASH"}, {"AttributeName": SK, "KeyType": "RANGE"}],
        "GlobalSecondaryIndexes": [
            {
                "IndexName": INDEX_NAME,
                "KeySchema": [
                    {"AttributeName": NS, "KeyType": "HASH"},
                    {"AttributeName": RID, "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "INCLUDE", "NonKeyAttributes": [EXPIRES]},
            }
        ],
    }


def _is(exc: BackendUnavailable, code: str) -> bool:
    return isinstance(exc.cause, ClientError) and error_code(exc.cause) == code


def _ready(table: dict[str, Any]) -> bool:
    indexes = table.get("GlobalSecondaryIndexes") or []
    return table.get("TableStatus") == "ACTIVE" and all(
        i.get("IndexStatus", "ACTIVE") == "ACTIVE" for i in indexes
    )


def _check_layout(table: dict[str, Any]) -> None:
    keys = {k["AttributeName"]: k["KeyType"] for k in table.get("KeySchema", [])}
    index = next(
        (i for i in table.get("GlobalSecondaryIndexes") or [] if i.get("IndexName") == INDEX_NAME), None
    )
    index_keys = (
        {} if index is None else {k["AttributeName"]: k["KeyType"] for k in index.get("KeySchema", [])}
    )
    if keys != {PK: "HASH", SK: "RANGE"} or index_keys != {NS: "HASH", RID: "RANGE"}:
        raise InvalidArgument(
            f"DynamoDB table {table.get('TableName')!r} does not have Prism's layout (keys pk/sk and the "
            f"{INDEX_NAME!r} index on ns/rid); name another table, or a new one with create_table=true"
        )


async def ensure_table(calls: Calls, *, create: bool, ready_timeout: float, feed: bool = False) -> str | None:
    """Check that the table exists with Prism's layout; with ``create``, make it (and enable its TTL).

    With ``feed``, the table's stream ARN, its stream turned on when ``create`` allows it;
    None when the table has no stream the feed can read (and ``create`` is off).
    """
    name = calls.table
    try:
        table = (await calls.call("describe_table", {"TableName": name}))["Table"]
    except BackendUnavailable as exc:
        if not (create and _is(exc, "ResourceNotFoundException")):
            raise
        try:
            await calls.call("create_table", table_definition(name, feed))
        except BackendUnavailable as create_exc:
            if not _is(create_exc, "ResourceInUseException"):  # another store is creating it
                raise
        table = await _wait_until_ready(calls, ready_timeout)
    _check_layout(table)
    if not _ready(table):
        table = await _wait_until_ready(calls, ready_timeout)
    if create:
        ttl = (await calls.call("describe_time_to_live", {"TableName": name}))["TimeToLiveDescription"]
        if ttl.get("TimeToLiveStatus") not in ("ENABLED", "ENABLING"):
            await calls.call(
                "update_time_to_live",
                {
                    "TableName": name,
                    "TimeToLiveSpecification": {"Enabled": True, "AttributeName": TTL_ATTRIBUTE},
                },
            )
    if not feed:
        return None
    return await _feed_stream(calls, table, create=create, ready_timeout=ready_timeout)


async def _feed_stream(
    calls: Calls, table: dict[str, Any], *, create: bool, ready_timeout: float
) -> str | None:
    """The ARN of the table's stream for the change feed; turned on with ``create`` when it is off."""
    spec = table.get("StreamSpecification") or {}
    if spec.get("StreamEnabled"):
        view = spec.get("StreamViewType")
        if view not in FEED_VIEW_TYPES:
            raise InvalidArgument(
                f"DynamoDB table {calls.table!r} has a {view} stream; the change feed needs "
                f"{' or '.join(FEED_VIEW_TYPES)} (the etag of each change): change the table's stream"
            )
        arn = table.get("LatestStreamArn")
        return arn if isinstance(arn, str) else None
    if not create:
        return None
    await calls.call(
        "update_table",
        {
            "TableName": calls.table,
            "StreamSpecification": {"StreamEnabled": True, "StreamViewType": FEED_VIEW_TYPE},
        },
    )
    table = await _wait_until_ready(calls, ready_timeout)
    arn = table.get("LatestStreamArn")
    return arn if isinstance(arn, str) else None


async def _wait_until_ready(calls: Calls, ready_timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + ready_timeout
    while True:
        try:
            table: dict[str, Any] = (await calls.call("describe_table", {"TableName": calls.table}))["Table"]
        except BackendUnavailable as exc:
            if not _is(exc, "ResourceNotFoundException"):
                raise
            table = {}
        if _ready(table):
            return table
        if time.monotonic() > deadline:
            raise BackendUnavailable(
                f"DynamoDB table {calls.table!r} was not ACTIVE within {ready_timeout} s"
            )
        await asyncio.sleep(TABLE_POLL_INTERVAL)
