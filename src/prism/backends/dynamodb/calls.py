"""Requests to DynamoDB under Prism's deadlines and retries, with errors mapped at the boundary.

Every request runs through ``call_with_retry``: throttling, 5xx answers and connection
failures are retried with capped exponential backoff and jitter inside the operation's
deadline; what is left becomes a ``prism.errors`` exception. Two driver outcomes are
answers rather than failures and leave as private exceptions for the backend to read:
a failed condition (``ConditionFailed``, with the item as it was) and a transaction
cancelled by a condition (``TransactionCancelled``). Batch helpers resend
UnprocessedKeys/UnprocessedItems with backoff until the deadline.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from botocore.exceptions import (
    ClientError,
    HTTPClientError,
    NoCredentialsError,
    NoRegionError,
    ParamValidationError,
    PartialCredentialsError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from prism.backends._retry import NetworkSettings, call_with_retry
from prism.backends.dynamodb.layout import PK, SK, Attrs
from prism.errors import BackendTimeout, BackendUnavailable, InvalidArgument, PrismError

__all__ = [
    "MAX_BATCH_GET",
    "MAX_BATCH_WRITE",
    "MAX_REQUEST_BYTES",
    "Calls",
    "ConditionFailed",
    "TransactionCancelled",
    "request_bytes",
]

#: DynamoDB's limits on one BatchGetItem and one BatchWriteItem request.
MAX_BATCH_GET = 100
MAX_BATCH_WRITE = 25

#: Largest request body a write sends, about: aiohttp warns (an error under
#: ``-W error``) about bodies over 1 MiB, and this keeps clear of it.
MAX_REQUEST_BYTES = 900_000
#: What one item's keys and metadata may add to a request, at most.
KEY_OVERHEAD_BYTES = 4_000

#: Error codes that mean "try again later".
TRANSIENT_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "RequestLimitExceeded",
        "InternalServerError",
        "InternalFailure",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "TransactionConflictException",
        "TransactionInProgressException",
        "LimitExceededException",
    }
)
#: Cancellation reasons of a transaction that a retry may clear.
TRANSIENT_REASONS = frozenset(
    {
        "None",
        "TransactionConflict",
        "ThrottlingError",
        "ProvisionedThroughputExceeded",
        "RequestLimitExceeded",
    }
)
CREDENTIAL_CODES = frozenset(
    {
        "UnrecognizedClientException",
        "InvalidSignatureException",
        "AccessDeniedException",
        "ExpiredTokenException",
        "MissingAuthenticationTokenException",
        "IncompleteSignatureException",
    }
)


class ConditionFailed(Exception):
    """A ConditionExpression did not hold; ``old`` is the item as it was (or None)."""

    def __init__(self, old: Attrs | None) -> None:
        super().__init__("conditional check failed")
        self.old = old


class TransactionCancelled(Exception):
    """TransactWriteItems was cancelled because a condition failed; ``reasons`` per item."""

    def __init__(self, reasons: list[str]) -> None:
        super().__init__(f"transaction cancelled: {reasons}")
        self.reasons = reasons


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _reasons(exc: ClientError) -> list[str]:
    return [str(r.get("Code") or "None") for r in exc.response.get("CancellationReasons", [])]


def is_transient(exc: BaseException) -> bool:
    """True for failures a later attempt may not see: throttling, 5xx, lost connections."""
    if isinstance(exc, ClientError):
        code = error_code(exc)
        if code in TRANSIENT_CODES:
            return True
        if code == "TransactionCanceledException":
            return set(_reasons(exc)) <= TRANSIENT_REASONS
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return isinstance(status, int) and status >= 500
    return isinstance(exc, BotoConnectionError | HTTPClientError | OSError)


def map_error(exc: BaseException, what: str, table: str) -> PrismError:
    """The Prism error for a driver exception that was not retried away."""
    if isinstance(exc, ClientError):
        code = error_code(exc)
        message = exc.response.get("Error", {}).get("Message", "") or str(exc)
        if code == "ResourceNotFoundException":
            return BackendUnavailable(
                f"{what}: table {table!r} (or its index) does not exist; "
                "open the store with create_table=true to create it",
                cause=exc,
            )
        if code == "ValidationException":
            return InvalidArgument(f"{what}: DynamoDB refused the request: {message}")
        if code in CREDENTIAL_CODES:
            return BackendUnavailable(f"{what}: AWS refused the credentials ({code})", cause=exc)
        return BackendUnavailable(f"{what}: {code or type(exc).__name__}: {message}", cause=exc)
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return BackendUnavailable(
            f"{what}: no usable AWS credentials; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
            "a profile, or an instance role",
            cause=exc,
        )
    if isinstance(exc, NoRegionError):
        return InvalidArgument(f"{what}: no AWS region; pass ?region=... or set AWS_DEFAULT_REGION")
    if isinstance(exc, ParamValidationError):
        return InvalidArgument(f"{what}: {exc}")
    return BackendUnavailable(f"{what}: {type(exc).__name__}: {exc}", cause=exc)


class Calls:
    """The store's one client, its table and its network settings, with retrying requests."""

    __slots__ = ("client", "settings", "table")

    def __init__(self, client: Any, table: str, settings: NetworkSettings) -> None:
        self.client = client
        self.table = table
        self.settings = settings

    def deadline(self) -> float:
        """A monotonic deadline one operation timeout from now."""
        return time.monotonic() + self.settings.operation_timeout

    def _bounded(self, deadline: float | None, what: str) -> NetworkSettings:
        if deadline is None:
            return self.settings
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise BackendTimeout(f"{what}: no answer within {self.settings.operation_timeout} s")
        return replace(self.settings, operation_timeout=remaining)

    async def call(self, operation: str, params: dict[str, Any], deadline: float | None = None) -> Any:
        """One request (``operation`` is the client's method name, e.g. ``"get_item"``).

        Raises ConditionFailed / TransactionCancelled for failed conditions and a
        PrismError for everything else.
        """
        what = f"DynamoDB {operation}"
        method = getattr(self.client, operation)

        async def once() -> Any:
            try:
                return await method(**params)
            except ClientError as exc:
                code = error_code(exc)
                if code == "ConditionalCheckFailedException":
                    raise ConditionFailed(exc.response.get("Item")) from exc
                if code == "TransactionCanceledException":
                    reasons = _reasons(exc)
                    if "ConditionalCheckFailed" in reasons:
                        raise TransactionCancelled(reasons) from exc
                raise

        try:
            return await call_with_retry(
                self._bounded(deadline, what),
                once,
                is_transient=is_transient,
                describe=what,
                engine="dynamodb",
            )
        except (PrismError, ConditionFailed, TransactionCancelled):
            raise
        except Exception as exc:
            raise map_error(exc, what, self.table) from exc

    async def batch_get(
        self,
        keys: Sequence[Attrs],
        *,
        consistent: bool,
        projection: str | None = None,
        deadline: float | None = None,
    ) -> dict[tuple[str, str], Attrs]:
        """The items found at ``keys`` (distinct), by (pk, sk); unprocessed keys are retried."""
        deadline = self.deadline() if deadline is None else deadline
        found: dict[tuple[str, str], Attrs] = {}
        batches = [keys[i : i + MAX_BATCH_GET] for i in range(0, len(keys), MAX_BATCH_GET)]
        if len(batches) == 1:
            await self._batch_get_one(batches[0], consistent, projection, deadline, found)
        elif batches:
            await asyncio.gather(
                *(self._batch_get_one(b, consistent, projection, deadline, found) for b in batches)
            )
        return found

    async def _batch_get_one(
        self,
        keys: Sequence[Attrs],
        consistent: bool,
        projection: str | None,
        deadline: float,
        found: dict[tuple[str, str], Attrs],
    ) -> None:
        request: dict[str, Any] = {"Keys": list(keys), "ConsistentRead": consistent}
        if projection is not None:
            request["ProjectionExpression"] = projection
        attempt = 0
        while True:
            response = await self.call("batch_get_item", {"RequestItems": {self.table: request}}, deadline)
            for attrs in response.get("Responses", {}).get(self.table, ()):
                found[attrs[PK]["S"], attrs[SK]["S"]] = attrs
            left = response.get("UnprocessedKeys", {}).get(self.table)
            if not left or not left.get("Keys"):
                return
            request = {**request, "Keys": left["Keys"]}
            await self.pause(
                attempt,
                deadline,
                f"{len(left['Keys'])} keys of a BatchGetItem stayed unprocessed (throttled)",
            )
            attempt += 1

    async def batch_write(
        self, requests: Sequence[dict[str, Any]], deadline: float | None = None
    ) -> dict[int, PrismError]:
        """Send PutRequest/DeleteRequest entries (distinct keys) in batches of 25.

        Returns the errors of the entries that were not applied, by index: one that
        stayed unprocessed until the deadline, or whose batch failed, is reported,
        never dropped.
        """
        deadline = self.deadline() if deadline is None else deadline
        failed: dict[int, PrismError] = {}
        await asyncio.gather(
            *(self._batch_write_one(requests, span, deadline, failed) for span in _spans(requests))
        )
        return failed

    async def _batch_write_one(
        self, requests: Sequence[dict[str, Any]], span: range, deadline: float, failed: dict[int, PrismError]
    ) -> None:
        pending = {_request_key(requests[i]): i for i in span}
        batch = [requests[i] for i in span]
        attempt = 0
        while True:
            try:
                response = await self.call(
                    "batch_write_item", {"RequestItems": {self.table: batch}}, deadline
                )
            except PrismError as exc:
                for i in pending.values():
                    failed[i] = exc
                return
            batch = response.get("UnprocessedItems", {}).get(self.table) or []
            if not batch:
                return
            pending = {k: pending[k] for k in map(_request_key, batch)}
            try:
                await self.pause(
                    attempt,
                    deadline,
                    f"{len(batch)} writes of a BatchWriteItem stayed unprocessed (throttled)",
                )
            except PrismError as exc:
                for i in pending.values():
                    failed[i] = exc
                return
            attempt += 1

    async def pause(self, attempt: int, deadline: float, what: str) -> None:
        """Back off before retry ``attempt``, or raise BackendTimeout if the deadline would pass."""
        pause = self.settings.backoff(attempt)
        if time.monotonic() + pause >= deadline:
            raise BackendTimeout(f"DynamoDB: {what} within {self.settings.operation_timeout} s")
        await asyncio.sleep(pause)


def request_bytes(body: Attrs) -> int:
    """About how many bytes ``body`` (an item or key) takes in a JSON request: binary goes as base64."""
    size = KEY_OVERHEAD_BYTES
    for value in body.values():
        binary = value.get("B")
        if binary is not None:
            size += len(binary) * 4 // 3
    return size


def _spans(requests: Sequence[dict[str, Any]]) -> list[range]:
    """Consecutive groups of at most 25 requests and about MAX_REQUEST_BYTES."""
    spans: list[range] = []
    first, size = 0, 0
    for i, request in enumerate(requests):
        body = request.get("PutRequest", {}).get("Item") or request["DeleteRequest"]["Key"]
        grown = size + request_bytes(body)
        if i > first and (i - first == MAX_BATCH_WRITE or grown > MAX_REQUEST_BYTES):
            spans.append(range(first, i))
            first, grown = i, request_bytes(body)
        size = grown
    if first < len(requests):
        spans.append(range(first, len(requests)))
    return spans


def _request_key(request: dict[str, Any]) -> tuple[str, str]:
    body = request.get("PutRequest", {}).get("Item") or request["DeleteRequest"]["Key"]
    return body[PK]["S"], body[SK]["S"]
