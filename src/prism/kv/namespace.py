"""A namespace handle: the KeyValue API over one backend namespace."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from datetime import timedelta
from time import perf_counter
from typing import TYPE_CHECKING, Literal

from opentelemetry import trace as _trace

from prism.backends.base import NOT_NOW, NotNow, reads_now
from prism.errors import InvalidArgument, PreconditionFailed, PrismError, StoreClosed, Unsupported
from prism.kv.feed import DEFAULT_POLL_INTERVAL, DEFAULT_WATCH_BATCH, ChangeFeed
from prism.kv.instrument import Series, tracing_enabled
from prism.kv.tokens import decode_token, encode_token
from prism.kv.validation import (
    SHORT_ID,
    check_content_type,
    check_id,
    check_item_key,
    check_limit,
    check_value,
    expiry,
    new_etag,
)
from prism.model import Change, Delete, Item, Page, Put, StoredWrite, WriteOutcome, WriteResult

if TYPE_CHECKING:
    from prism.backends.base import Backend
    from prism.kv.store import Store

__all__ = ["Consistency", "Namespace"]

Consistency = Literal["eventual", "strong"]

#: Largest ``limit`` of one scan or record page.
MAX_PAGE_LIMIT = 1000
#: Most keys or ops in one batch call.
MAX_BATCH = 1000


def _consistent(consistency: str, backend: Backend) -> bool:
    if consistency == "eventual":
        return False
    if consistency == "strong":
        if not backend.capabilities.consistent_reads:
            raise Unsupported(f"the {backend.name} backend has no strongly consistent reads")
        return True
    raise InvalidArgument(f"consistency must be 'eventual' or 'strong', got {consistency!r}")


class Namespace:
    """Reads and writes within one namespace of a store.

    Flat entries are records with the single item key ""; ``put_items``/``get_items``
    address the items of a record. Every call is validated first (bad input writes
    nothing) and instrumented once here for all backends.
    """

    __slots__ = (
        "_backend",
        "_get_series",
        "_inst",
        "_reads_now",
        "_store",
        "default_ttl",
        "max_value_bytes",
        "name",
    )

    def __init__(
        self,
        store: Store,
        name: str,
        *,
        max_value_bytes: int,
        default_ttl: float | None = None,
        backend: Backend | None = None,
    ) -> None:
        self._store = store
        # A cached namespace reads and writes through its tier (prism.kv.cache), else the store's backend.
        self._backend = store.backend if backend is None else backend
        self._inst = store.instrumentation
        self._get_series: Series | None = None
        self._reads_now = reads_now(self._backend)
        self.name = name
        self.max_value_bytes = max_value_bytes
        self.default_ttl = default_ttl

    def __repr__(self) -> str:
        return f"<Namespace {self.name!r} on {self._backend.name}>"

    def _check_open(self) -> None:
        if not self._store.is_open:
            raise StoreClosed(self._store.state_message())

    # -- flat entries -------------------------------------------------------------

    async def get(self, key: str, *, consistency: Consistency = "eventual") -> Item | None:
        """The live entry at ``key`` (None when missing or expired)."""
        item = self._get_now(key, consistency)
        if item is NOT_NOW:
            item = await self._get_waiting(key, consistency)
        return item

    async def exists(self, key: str, *, consistency: Consistency = "eventual") -> bool:
        return await self.get(key, consistency=consistency) is not None

    # The two steps of get; the blocking twin runs the first itself.

    def _get_now(self, key: str, consistency: str) -> Item | NotNow | None:
        """Check a get and, on a backend that answers in the calling thread, read and count it.

        NOT_NOW, with nothing counted, when the backend has to wait (or reads only
        through ``get``) or a trace span is wanted: ``_get_waiting`` then reads.
        """
        if type(key) is not str or not key.isascii() or not 0 < len(key) <= SHORT_ID or "\x00" in key:
            check_id(key)  # the full rule, for what the quick test above cannot pass at once
        if not self._store.is_open:
            raise StoreClosed(self._store.state_message())
        consistent = False if consistency == "eventual" else _consistent(consistency, self._backend)
        if not self._reads_now or _trace._TRACER_PROVIDER is not None:  # tracing_enabled(), inline
            return NOT_NOW
        series = self._get_series
        if series is None:
            series = self._get_series = self._inst.series(self.name, "get")
        start = perf_counter()
        try:
            item = self._backend.get_now(self.name, key, "", consistent)
        except BaseException as exc:
            next(series.started)
            series.observe(perf_counter() - start, exc)
            raise
        if item is NOT_NOW:
            return item
        # Started and finished at once: the call never left this thread.
        next(series.started)
        if item is None:
            series.read(perf_counter() - start, False)
            return None
        series.read(perf_counter() - start, True)
        return item if item.key == key else item.with_key(key)

    async def _get_waiting(self, key: str, consistency: str) -> Item | None:
        """The read through the backend's coroutine, counted and traced (``key`` checked already)."""
        consistent = consistency != "eventual"
        if tracing_enabled():
            with self._inst.op(self.name, "get") as op:
                item = await self._backend.get(self.name, key, "", consistent=consistent)
                op.hits, op.misses = (0, 1) if item is None else (1, 0)
        else:
            series = self._get_series
            if series is None:
                series = self._get_series = self._inst.series(self.name, "get")
            next(series.started)
            start = perf_counter()
            try:
                item = await self._backend.get(self.name, key, "", consistent=consistent)
            except BaseException as exc:
                series.observe(perf_counter() - start, exc)
                raise
            series.read(perf_counter() - start, item is not None)
        if item is None or item.key == key:
            return item
        return item.with_key(key)

    async def put(
        self,
        key: str,
        value: bytes,
        *,
        ttl: float | timedelta | None = None,
        content_type: str | None = None,
        if_match: str | None = None,
        if_absent: bool = False,
    ) -> str:
        """Store ``value`` at ``key`` and return its new etag.

        Raises PreconditionFailed when ``if_match`` differs from the live etag or
        ``if_absent`` finds a live entry. A put without ttl clears an earlier ttl.
        """
        result = await self.put_result(Put(key, value, ttl, content_type, if_match, if_absent))
        if result.error is not None:
            raise result.error
        assert result.etag is not None
        return result.etag

    async def put_result(self, put: Put, record: str | None = None) -> WriteResult:
        """One put as a WriteResult (``existed`` tells created from replaced); raises only on bad input."""
        write = self._stored_put(put, time.time(), record)
        self._check_open()
        with self._inst.op(self.name, "put") as op:
            (outcome,) = await self._backend.write(self.name, (write,))
            result = _result(put.key, write, outcome)
            op.failure = result.error
        return result

    async def delete(self, key: str, *, if_match: str | None = None) -> bool:
        """Delete ``key``; True when a live entry was deleted, False when there was none.

        Raises PreconditionFailed when ``if_match`` is given and differs.
        """
        result = await self.delete_result(Delete(key, if_match))
        if result.error is not None:
            raise result.error
        return result.existed is True

    async def delete_result(self, delete: Delete) -> WriteResult:
        write = self._stored_delete(delete)
        self._check_open()
        with self._inst.op(self.name, "delete") as op:
            (outcome,) = await self._backend.write(self.name, (write,))
            result = _result(delete.key, write, outcome)
            op.failure = result.error
        return result

    # -- batches ------------------------------------------------------------------

    async def get_many(
        self, keys: Sequence[str], *, consistency: Consistency = "eventual"
    ) -> list[Item | None]:
        """One entry per requested key, in request order (None where missing)."""
        keys = list(keys)
        _check_batch(keys)
        for key in keys:
            check_id(key)
        self._check_open()
        with self._inst.op(self.name, "get_many", len(keys)) as op:
            found = await self._backend.get_many(
                self.name, [(k, "") for k in keys], consistent=_consistent(consistency, self._backend)
            )
            out: list[Item | None] = []
            for key, item in zip(keys, found, strict=True):
                out.append(item if item is None or item.key == key else item.with_key(key))
            op.hits = sum(1 for i in out if i is not None)
            op.misses = len(out) - op.hits
            return out

    async def put_many(self, puts: Iterable[Put], *, existed: bool = True) -> list[WriteResult]:
        """Independent puts: one WriteResult per put, in order; a failed condition fails only its key.

        ``existed=False`` asks nothing about the replaced items: every result's
        ``existed`` is None, and a backend that has to read items to tell (DynamoDB)
        reads none for the unconditional puts.
        """
        if type(existed) is not bool:
            raise InvalidArgument(f"existed must be a bool, got {existed!r}")
        puts = list(puts)
        _check_batch(puts)
        now = time.time()
        writes = [self._stored_put(_as_put(p), now) for p in puts]
        if not existed:
            for write in writes:
                write.blind = write.if_match is None and not write.if_absent
        results = await self._write_batch("put_many", [p.key for p in puts], writes)
        if existed:
            return results
        return [WriteResult(r.key, r.ok, r.etag, r.error, None) for r in results]

    async def delete_many(self, deletes: Iterable[str | Delete]) -> list[WriteResult]:
        """Independent deletes (keys or Delete ops): one WriteResult per op, in order."""
        ops = [Delete(d) if isinstance(d, str) else d for d in deletes]
        _check_batch(ops)
        writes = [self._stored_delete(_as_delete(d)) for d in ops]
        return await self._write_batch("delete_many", [d.key for d in ops], writes)

    async def _write_batch(self, name: str, keys: list[str], writes: list[StoredWrite]) -> list[WriteResult]:
        self._check_open()
        if not writes:
            return []
        with self._inst.op(self.name, name, len(writes)):
            outcomes = await self._backend.write(self.name, writes)
        return [_result(k, w, o) for k, w, o in zip(keys, writes, outcomes, strict=True)]

    async def transact(self, ops: Iterable[Put | Delete]) -> list[WriteResult]:
        """Apply puts and deletes in order, all or nothing.

        Raises PreconditionFailed (nothing applied) when a condition fails, and
        Unsupported on a backend without atomic multi-key writes.
        """
        ops = list(ops)
        _check_batch(ops)
        caps = self._backend.capabilities
        if not caps.transactions:
            raise Unsupported(f"the {self._backend.name} backend has no atomic multi-key transactions")
        if caps.max_transaction_ops is not None and len(ops) > caps.max_transaction_ops:
            raise InvalidArgument(
                f"a transaction on {self._backend.name} holds at most {caps.max_transaction_ops} ops, "
                f"got {len(ops)}"
            )
        now = time.time()
        writes: list[StoredWrite] = []
        for op in ops:
            if isinstance(op, Put):
                writes.append(self._stored_put(op, now))
            elif isinstance(op, Delete):
                writes.append(self._stored_delete(op))
            else:
                raise InvalidArgument(f"transact takes Put and Delete ops, got {type(op).__name__}")
        self._check_open()
        if not writes:
            return []
        with self._inst.op(self.name, "transact", len(writes)):
            outcomes = await self._backend.transact(self.name, writes)
            if not all(o.ok for o in outcomes):
                # Nothing was applied: the first failed condition (or error) says why.
                raise _transaction_error(writes, outcomes)
        return [_result(o.key, w, out) for o, w, out in zip(ops, writes, outcomes, strict=True)]

    # -- listing ------------------------------------------------------------------

    async def scan(self, prefix: str = "", *, limit: int = 100, page_token: str | None = None) -> Page[str]:
        """One page of keys (record ids) starting with ``prefix``, in code-point order.

        Pages resume strictly after the last key returned, so keys inserted or deleted
        between pages never make a key appear twice or an untouched key go missing.
        """
        if type(prefix) is not str:
            raise InvalidArgument("prefix must be a str")
        if prefix:
            check_id(prefix, "prefix")
        check_limit(limit, MAX_PAGE_LIMIT)
        after = decode_token(page_token, "scan", prefix)
        if not self._backend.capabilities.prefix_scan:
            raise Unsupported(
                self._backend.scan_unsupported or f"the {self._backend.name} backend cannot list keys"
            )
        self._check_open()
        with self._inst.op(self.name, "scan"):
            keys = await self._backend.scan(self.name, prefix, after, limit + 1)
        if len(keys) > limit:
            keys = keys[:limit]
            return Page(keys, encode_token("scan", prefix, keys[-1]))
        return Page(keys, None)

    # -- change feed --------------------------------------------------------------

    def watch(
        self,
        prefix: str = "",
        *,
        after: str | None = None,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        batch_size: int = DEFAULT_WATCH_BATCH,
    ) -> ChangeFeed:
        """The changes of keys starting with ``prefix``: ``async for change in ns.watch():``.

        Each ``prism.Change`` is delivered at least once, in commit order per key.
        ``after`` resumes after a change's ``cursor``; without it the feed starts with
        the first change after it starts. A cursor older than the feed's retained
        window raises CursorExpired (never a silent gap); a backend without a change
        feed raises Unsupported. ``poll_interval`` is the seconds between asks when
        nothing is new, ``batch_size`` the most changes read at once.
        """
        if type(prefix) is not str:
            raise InvalidArgument("prefix must be a str")
        if prefix:
            check_id(prefix, "prefix")
        if after is not None and (type(after) is not str or not after):
            raise InvalidArgument("after must be a non-empty change-feed cursor string")
        if type(poll_interval) not in (int, float) or not 0 < poll_interval <= 60:
            raise InvalidArgument(f"poll_interval must be > 0 and <= 60 seconds, got {poll_interval!r}")
        check_limit(batch_size, MAX_PAGE_LIMIT, "batch_size")
        if not self._backend.capabilities.watch:
            # A cached namespace's tier wraps the store's backend, which tells how it was opened.
            opened = self._store.backend
            if type(opened).feed_opt_in and not opened.feed:
                raise Unsupported(
                    f"this {self._backend.name} store keeps no change feed: start the store with feed=true"
                )
            raise Unsupported(f"the {self._backend.name} backend has no change feed")
        self._check_open()
        return ChangeFeed(self, prefix, after, float(poll_interval), batch_size)

    async def _read_changes(self, prefix: str, after: str | None, limit: int) -> tuple[list[Change], str]:
        """One read of the change feed (see ``Backend.read_changes``), counted as ``watch``."""
        self._check_open()
        with self._inst.op(self.name, "watch"):
            return await self._backend.read_changes(self.name, prefix, after, limit)

    async def _wait_for_changes(self, seconds: float, after: str | None = None) -> None:
        """Wait until a change after the cursor ``after`` may have been committed (or ``seconds``)."""
        await self._backend.wait_for_changes(self.name, seconds, after)

    # -- records ------------------------------------------------------------------

    async def put_items(self, record: str, items: Iterable[Put]) -> list[WriteResult]:
        """Write items of one record, each on its own (conditions per item)."""
        check_id(record, "record id")
        puts = list(items)
        _check_batch(puts)
        now = time.time()
        writes = [self._stored_put(_as_put(p), now, record) for p in puts]
        return await self._write_batch("put_items", [p.key for p in puts], writes)

    async def get_items(
        self,
        record: str,
        *,
        start: str | None = None,
        end: str | None = None,
        keys: Sequence[str] | None = None,
        limit: int = 100,
        page_size_bytes: int | None = None,
        page_token: str | None = None,
        consistency: Consistency = "eventual",
    ) -> Page[Item]:
        """Items of ``record`` ordered by item key: start inclusive, end exclusive.

        With ``keys``, exactly those items (missing ones left out). A page holds at
        most ``limit`` items and, with ``page_size_bytes``, stops before the values
        would pass that many bytes (always at least one item).
        """
        check_id(record, "record id")
        check_limit(limit, MAX_PAGE_LIMIT)
        if page_size_bytes is not None:
            check_limit(page_size_bytes, 1 << 40, "page_size_bytes")
        consistent = _consistent(consistency, self._backend)
        if keys is not None:
            return await self._get_listed_items(record, list(keys), consistent)
        for bound in (start, end):
            if bound is not None:
                check_item_key(bound)
        if not self._backend.capabilities.range_reads:
            raise Unsupported(f"the {self._backend.name} backend has no range reads")
        scope = f"{record}\x00{start or ''}\x00{'' if end is None else end}"
        after = decode_token(page_token, "items", scope)
        self._check_open()
        with self._inst.op(self.name, "get_items") as op:
            found = await self._backend.get_range(
                self.name, record, start, end, after, limit + 1, consistent=consistent
            )
            op.hits = len(found)
        more = len(found) > limit
        page = found[:limit]
        if page_size_bytes is not None:
            total = 0
            for i, item in enumerate(page):
                total += len(item.value)
                if total > page_size_bytes and i > 0:
                    page = page[:i]
                    more = True
                    break
        token = encode_token("items", scope, page[-1].key) if more and page else None
        return Page(page, token)

    async def _get_listed_items(self, record: str, keys: list[str], consistent: bool) -> Page[Item]:
        _check_batch(keys)
        for key in keys:
            check_item_key(key)
        self._check_open()
        with self._inst.op(self.name, "get_items", len(keys)):
            found = await self._backend.get_many(
                self.name, [(record, k) for k in keys], consistent=consistent
            )
        return Page(
            [i if i.key == k else i.with_key(k) for k, i in zip(keys, found, strict=True) if i is not None]
        )

    async def delete_items(
        self,
        record: str,
        *,
        start: str | None = None,
        end: str | None = None,
        keys: Sequence[str] | None = None,
    ) -> int:
        """Delete items of ``record`` (the whole record when no range or keys); how many were live."""
        check_id(record, "record id")
        if keys is not None:
            writes = [StoredWrite(record, check_item_key(k), None) for k in keys]
            _check_batch(writes)
            results = await self._write_batch("delete_items", list(keys), writes)
            return sum(1 for r in results if r.existed)
        for bound in (start, end):
            if bound is not None:
                check_item_key(bound)
        self._check_open()
        with self._inst.op(self.name, "delete_items"):
            return await self._backend.delete_range(self.name, record, start, end)

    # -- building writes ----------------------------------------------------------

    def _stored_put(self, put: Put, now: float, record: str | None = None) -> StoredWrite:
        rid = put.key
        if record is None:
            if type(rid) is not str or not rid.isascii() or not 0 < len(rid) <= SHORT_ID or "\x00" in rid:
                check_id(rid)  # the full rule, for what the quick test cannot pass at once
            key = ""
        else:
            rid, key = record, check_item_key(put.key)
        value = put.value
        if type(value) is not bytes or len(value) > self.max_value_bytes:
            value = check_value(value, self.max_value_bytes, put.key)
        if put.ttl is None and self.default_ttl is None:
            expires_at = None
        else:
            expires_at = expiry(put.ttl, self.default_ttl, now)
            if not self._backend.capabilities.ttl:
                raise Unsupported(f"the {self._backend.name} backend has no TTL")
        if put.if_match is not None or put.if_absent:
            if put.if_match is not None and put.if_absent:
                raise InvalidArgument(f"{put.key!r}: if_match and if_absent cannot both be set")
            _check_etag(put.if_match)
            if not self._backend.capabilities.etag:
                raise Unsupported(f"the {self._backend.name} backend has no conditional writes")
        content_type = put.content_type
        if content_type is not None:
            check_content_type(content_type)
        return StoredWrite(
            rid, key, value, new_etag(), expires_at, content_type, now, put.if_match, bool(put.if_absent)
        )

    def _stored_delete(self, delete: Delete) -> StoredWrite:
        _check_etag(delete.if_match)
        if delete.if_match is not None and not self._backend.capabilities.etag:
            raise Unsupported(f"the {self._backend.name} backend has no conditional writes")
        return StoredWrite(check_id(delete.key), "", None, if_match=delete.if_match)


def _check_etag(etag: object) -> None:
    if etag is not None and (type(etag) is not str or not etag):
        raise InvalidArgument("if_match must be a non-empty etag string")


def _check_batch(ops: Sequence[object]) -> None:
    if len(ops) > MAX_BATCH:
        raise InvalidArgument(f"a batch holds at most {MAX_BATCH} entries, got {len(ops)}")


def _as_put(op: object) -> Put:
    if not isinstance(op, Put):
        raise InvalidArgument(f"expected prism.Put, got {type(op).__name__}")
    return op


def _as_delete(op: object) -> Delete:
    if not isinstance(op, Delete):
        raise InvalidArgument(f"expected a key or prism.Delete, got {type(op).__name__}")
    return op


def _result(key: str, write: StoredWrite, outcome: WriteOutcome) -> WriteResult:
    if outcome.ok:
        return WriteResult(key, True, write.etag or None, None, outcome.existed)
    error = outcome.error or precondition_failed(write, outcome.existed)
    return WriteResult(key, False, None, error, outcome.existed)


def precondition_failed(write: StoredWrite, existed: bool) -> PreconditionFailed:
    """The one PreconditionFailed every backend's failed condition becomes.

    ``'ID': already exists`` for an ``if_absent`` that found a live item, else
    ``'ID': etag does not match`` (an item of a record is named ``'ID' item 'KEY'``).
    """
    where = repr(write.record) if not write.key else f"{write.record!r} item {write.key!r}"
    reason = "already exists" if write.if_absent and existed else "etag does not match"
    return PreconditionFailed(f"{where}: {reason}", key=write.record)


def _transaction_error(writes: Sequence[StoredWrite], outcomes: Sequence[WriteOutcome]) -> PrismError:
    """What a transaction that applied nothing raises: its first failed condition, else its first error."""
    for write, outcome in zip(writes, outcomes, strict=True):
        if outcome.condition_failed:
            return precondition_failed(write, outcome.existed)
    errors = [o.error for o in outcomes if o.error is not None]
    return errors[0] if errors else PrismError("the transaction was not applied")
