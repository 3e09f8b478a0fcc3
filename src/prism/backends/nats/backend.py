"""The NATS JetStream KV backend: buckets per namespace, revision compare-and-set, Prism-side TTL."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import replace
from typing import Any, ClassVar, TypeVar

import msgspec
import msgspec.structs
import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js import api

from prism.backends._feed import feed_capabilities, feed_settings
from prism.backends._retry import NetworkSettings, call_with_retry
from prism.backends.base import Backend
from prism.backends.nats import chunks
from prism.backends.nats.connection import (
    EXPECTED_LAST_SEQ,
    KV_OPERATION,
    APIErrorBody,
    Connection,
    ConnectOptions,
    Listed,
    ListingGap,
    NoReply,
    NoResponders,
    is_deleted,
)
from prism.backends.nats.features import MAX_BATCH_MESSAGES, OLDEST, ServerFeatures
from prism.backends.nats.feed import read_feed
from prism.backends.nats.layout import (
    EXPIRED_HEADER,
    Bucket,
    Envelope,
    bucket_name,
    decode_envelope,
    decode_item,
    decode_record,
    is_chunk_key,
    record_tokens,
    scan_tokens,
    split_key,
)
from prism.backends.nats.listings import Listing, ListingCache
from prism.backends.nats.options import (
    DEFAULT_MAX_PAYLOAD,
    MESSAGE_OVERHEAD,
    STORAGE,
    NatsOptions,
    parse_url,
)
from prism.backends.nats.transactions import run_transaction
from prism.backends.nats.writes import (
    ABSENT,
    KeyQueue,
    Known,
    RevisionCache,
    Transient,
    WriteBatch,
    WriteOne,
    api_error,
)
from prism.backends.urls import mask_url
from prism.errors import (
    BackendTimeout,
    BackendUnavailable,
    InvalidArgument,
    PrismError,
    Unsupported,
    ValueTooLarge,
)
from prism.model import DEFAULT_MAX_VALUE_BYTES, Capabilities, Change, Item, StoredWrite, WriteOutcome

__all__ = ["NatsBackend"]

R = TypeVar("R")
log = logging.getLogger("prism.backends.nats")

_STREAM_NOT_FOUND = 10059
_NO_MESSAGE = 10037
_STREAM_NAME_IN_USE = 10058
#: Most requests one call pipelines at once (range reads, deletes of a range).
PIPELINE_CHUNK = 256
#: Most subjects of one batched direct get (the server refuses more, ADR-31).
MULTI_GET_SUBJECTS = 1024
#: Most bytes one batched direct get returns; the keys it did not reach are read one by one.
MULTI_GET_MAX_BYTES = 8 * 1024 * 1024
#: Most expired items one listing replaces with tombstones in passing.
PURGE_PER_LISTING = 256


def max_value_bytes(max_payload: int) -> int:
    """The largest value: what fits one message inline, and at least Prism's default limit in chunks."""
    return max(DEFAULT_MAX_VALUE_BYTES, max_payload - MESSAGE_OVERHEAD)


class _StoredMessage(msgspec.Struct):
    subject: str = ""
    seq: int = 0
    hdrs: bytes = b""
    data: bytes = b""


class _MessageReply(msgspec.Struct):
    message: _StoredMessage | None = None
    error: APIErrorBody | None = None


_message_reply = msgspec.json.Decoder(_MessageReply)


class _StreamInfoReply(msgspec.Struct):
    created: str = ""
    error: APIErrorBody | None = None


_stream_info_reply = msgspec.json.Decoder(_StreamInfoReply)
_json = msgspec.json.Encoder()


def _is_transient(exc: BaseException) -> bool:
    return isinstance(exc, NoReply) or _is_transient_unsent(exc)


def _is_transient_unsent(exc: BaseException) -> bool:
    """Transient, and surely not applied (NoReply is not: the request may have been)."""
    return isinstance(
        exc,
        NoResponders
        | ListingGap
        | Transient
        | nats.errors.NoRespondersError
        | nats.errors.OutboundBufferLimitError
        | nats.errors.ConnectionReconnectingError
        | nats.errors.StaleConnectionError
        | nats.js.errors.ServiceUnavailableError
        | ConnectionError,
    )


def _unconditional(ops: Sequence[StoredWrite]) -> bool:
    """Whether sending ``ops`` again is safe: no op has a condition its first attempt could fail."""
    return all(op.if_match is None and not op.if_absent for op in ops)


def _record_of(key: str) -> str | None:
    """The record id of a KV key Prism wrote (None: a chunk or a foreign key)."""
    if is_chunk_key(key):
        return None
    try:
        return decode_record(split_key(key)[0])
    except ValueError:
        return None


def _item_of(key: str) -> str | None:
    """The item key of a KV key of one record's listing (None: a foreign key)."""
    try:
        return decode_item(split_key(key)[1])
    except ValueError:
        return None


def _item(key: str, env: Envelope | None, now: float) -> Item | None:
    """The live item an envelope holds (None when there is none or it expired)."""
    if env is None or not env.live(now):
        return None
    return Item(key, env.value, env.etag, env.expires_at, env.content_type, env.updated_at)


def _parse_headers(raw: bytes) -> dict[str, str]:
    """Headers of a stored message as the message-get API returns them (a ``NATS/1.0`` block)."""
    out: dict[str, str] = {}
    for line in raw.decode("utf-8", "replace").split("\r\n")[1:]:
        name, sep, value = line.partition(":")
        if sep:
            out[name.strip()] = value.strip()
    return out


def _direct_message(subject: str, msg: Msg) -> tuple[int, dict[str, str] | None, bytes] | None:
    """Sequence, headers and payload of a direct get's reply; None when the subject has no message."""
    headers = msg.headers
    if headers is None:
        raise BackendUnavailable(f"nats direct get of {subject[:80]!r}: a reply without headers")
    status = headers.get("Status")
    if status is not None:
        if status == "404":
            return None
        raise Transient(f"direct get of {subject[:80]!r} answered {status} {headers.get('Description')}")
    return int(headers["Nats-Sequence"]), headers, msg.data


def _api_message(subject: str, msg: Msg) -> tuple[int, dict[str, str] | None, bytes] | None:
    """Sequence, headers and payload of a message-get API reply; None when the subject has no message."""
    reply = _message_reply.decode(msg.data)
    if reply.error is not None:
        err = reply.error
        if err.err_code == _NO_MESSAGE:
            return None
        if err.err_code == _STREAM_NOT_FOUND:
            raise NoResponders(subject)
        raise api_error("message get", err.code, err.err_code, err.description)
    stored = reply.message
    if stored is None:
        raise BackendUnavailable(f"nats message get of {subject[:80]!r}: an empty reply")
    return stored.seq, _parse_headers(stored.hdrs) if stored.hdrs else None, stored.data


class NatsBackend(Backend):
    """Prism on NATS JetStream KV (``prism.backends.nats`` documents the layout and options)."""

    name: ClassVar[str] = "nats"
    timeseries_unsupported: ClassVar[str] = (
        "JetStream KV buckets cannot read a series' events in time order or drop a time slice whole, "
        "and a stream per series would cost a consumer per read"
    )
    capabilities = Capabilities(
        ttl=True,
        etag=True,
        transactions=True,
        max_transaction_ops=MAX_BATCH_MESSAGES,
        range_reads=True,
        prefix_scan=True,
        consistent_reads=True,
        max_value_bytes=max_value_bytes(DEFAULT_MAX_PAYLOAD),
        multi_process=True,
        watch=True,
    )
    feed_opt_in: ClassVar[bool] = True

    def __init__(self, url: str, settings: NetworkSettings, options: NatsOptions) -> None:
        self.url = url
        self.settings = settings
        self.options = options
        self.capabilities = feed_capabilities(
            replace(self.capabilities, max_value_bytes=max_value_bytes(options.max_payload)), options.feed
        )
        #: Whether the buckets this store uses keep a change feed (``feed=true``), and its window.
        self.feed = options.feed
        self.feed_retention, self.feed_max_changes = feed_settings(
            options.feed, options.feed_retention, options.feed_max_changes
        )
        self._describe = mask_url(url)
        connect = ConnectOptions(
            url,
            settings.connect_timeout,
            settings.operation_timeout,
            options.reconnect_wait,
            options.ping_interval,
            options.reply_timeout,
        )
        self._conn = Connection(connect, self._describe)
        self._buckets: dict[str, Bucket] = {}
        self._bucket_locks: dict[str, asyncio.Lock] = {}
        #: When each namespace's stream was created, to notice one deleted and created again.
        self._born: dict[str, object] = {}
        self._revisions = RevisionCache(options.revision_cache)
        self._listings = ListingCache(options.listing_cache, options.listing_max_age)
        self._turns = KeyQueue()
        self._open = False
        #: What the connected server can do (the oldest supported server's until connected).
        self.features = OLDEST

    def __repr__(self) -> str:
        return f"<NatsBackend {self._describe}>"

    @classmethod
    def from_url(cls, url: str, **options: Any) -> NatsBackend:
        """``nats://[user:password@]host[:port][?option=value...]`` (options: see the module docstring)."""
        base, settings, nats_options = parse_url(url, options)
        return cls(base, settings, nats_options)

    # -- lifecycle ----------------------------------------------------------------

    async def open(self) -> None:
        """Connect within ``connect_timeout``; BackendUnavailable when the server cannot be reached."""
        timeout = self.settings.connect_timeout
        try:
            async with asyncio.timeout(timeout):
                await self._conn.open()
        except TimeoutError as exc:
            last = f" (last error: {self._conn.last_error})" if self._conn.last_error else ""
            raise BackendTimeout(
                f"cannot connect to {self._describe} within {timeout} s{last}", cause=exc
            ) from exc
        except (nats.errors.Error, OSError) as exc:
            raise BackendUnavailable(
                f"cannot connect to {self._describe}: {type(exc).__name__}: {exc}", cause=exc
            ) from exc
        accepted = self._conn.nc.max_payload
        if accepted < self.options.max_payload:
            await self._conn.close()
            raise InvalidArgument(
                f"max_payload={self.options.max_payload} but {self._describe} accepts messages of at most "
                f"{accepted} bytes: lower the option or raise the server's max_payload"
            )
        version = self._conn.nc.connected_server_version
        self.features = ServerFeatures.of(version.major, version.minor, version.patch)
        self.capabilities = replace(self.capabilities, transactions=self.features.atomic_batch)
        self._open = True

    async def close(self) -> None:
        self._open = False
        await self._conn.close()

    async def health(self) -> dict[str, Any]:
        """Server version, JetStream account usage and the time of one API round trip."""

        async def probe() -> dict[str, Any]:
            start = time.perf_counter()
            info = await self._conn.js.account_info()
            latency = time.perf_counter() - start
            nc = self._conn.nc
            version = nc.connected_server_version
            return {
                "url": self._describe,
                "server_version": f"{version.major}.{version.minor}.{version.patch}",
                "latency_ms": round(latency * 1000, 3),
                "max_payload": nc.max_payload,
                "streams": info.streams,
                "consumers": info.consumers,
                "storage_bytes": info.storage,
                "memory_bytes": info.memory,
            }

        return await self._call(probe, "health probe")

    @property
    def connection(self) -> Connection:
        """The one client connection of this store (its queue and pub/sub ride on it too)."""
        return self._conn

    async def call(self, op: Callable[[], Awaitable[R]], describe: str, *, blocks_for: float = 0.0) -> R:
        """Run ``op`` on this store's connection with its deadline, retries and error mapping.

        ``blocks_for`` extends the deadline for a call that waits on the server by design.
        """
        return await self._call(op, describe, blocks_for=blocks_for)

    async def _call(
        self,
        op: Callable[[], Awaitable[R]],
        describe: str,
        ns: str | None = None,
        *,
        blocks_for: float = 0.0,
        resend: bool = True,
    ) -> R:
        """Run ``op`` under the deadline and retry policy; every driver error leaves as a PrismError.

        When nothing answers for namespace ``ns``'s bucket, the retry looks the bucket up again.
        A request left unanswered (NoReply: its server or the stream's leader went away)
        is sent again only when ``resend`` says that is safe: not for a conditional
        write, which its own first attempt could then make fail.
        """
        if not self._open:
            raise BackendUnavailable(f"nats {describe}: the connection to {self._describe} is not open")

        async def attempt() -> R:
            try:
                return await op()
            except NoResponders:
                if ns is not None:
                    self._forget_bucket(ns)
                raise
            except nats.errors.TimeoutError as exc:
                # A JetStream API call unanswered (a TimeoutError, which the deadline must not
                # take for its own): like any request without a reply.
                raise NoReply(f"no reply to a JetStream API call: {exc}") from exc

        try:
            settings = self.settings
            if blocks_for > 0:
                settings = replace(settings, operation_timeout=settings.operation_timeout + blocks_for)
            return await call_with_retry(
                settings,
                attempt,
                is_transient=_is_transient if resend else _is_transient_unsent,
                describe=f"nats {describe}",
                engine="nats",
            )
        except BackendUnavailable as exc:
            if ns is not None and isinstance(exc.__cause__, TimeoutError):
                # Requests to a deleted stream's API go unanswered: check the bucket next time.
                self._forget_bucket(ns)
            raise
        except PrismError:
            raise
        except nats.errors.MaxPayloadError as exc:
            raise ValueTooLarge(f"nats {describe}: the message is over the server's max_payload") from exc
        except NoReply as exc:
            raise BackendUnavailable(
                f"nats {describe}: sent, but {exc}, so it may or may not have been applied", cause=exc
            ) from exc
        except Exception as exc:
            raise BackendUnavailable(f"nats {describe}: {type(exc).__name__}: {exc}", cause=exc) from exc

    # -- buckets ------------------------------------------------------------------

    async def _bucket(self, ns: str, create: bool) -> Bucket | None:
        """The namespace's bucket, created when ``create``; None when it does not exist."""
        bucket = self._buckets.get(ns)
        if bucket is not None:
            return bucket
        async with self._bucket_locks.setdefault(ns, asyncio.Lock()):
            bucket = self._buckets.get(ns)
            if bucket is not None:
                return bucket
            name = bucket_name(ns)
            try:
                info = await self._conn.js.stream_info(f"KV_{name}")
            except nats.js.errors.NotFoundError:
                if not create:
                    return None
                info = await self._create_bucket(name)
            if self._born.setdefault(ns, info.created) != info.created:
                # A new stream under the old name: its revisions restarted, so no remembered one holds.
                self._revisions.clear()
                self._born[ns] = info.created
            config = await self._upgraded(info.config)
            if self.feed and (config.max_msgs_per_subject or 1) == 1:
                config = await self._with_history(config)
            fed = (config.max_msgs_per_subject or 1) != 1
            # Direct gets of a replicated bucket may be answered by a replica behind its leader.
            direct = bool(config.allow_direct) and (
                (config.num_replicas or 1) == 1 or self.options.replica_reads
            )
            bucket = self._buckets[ns] = Bucket.named(
                name,
                direct,
                # Per-message TTL would bring back a key's previous revision: Prism keeps TTL itself.
                ttl=self.features.message_ttl and bool(config.allow_msg_ttl) and not fed,
                atomic=self.features.atomic_batch and bool(config.allow_atomic),
                feed=fed,
            )
            return bucket

    async def _with_history(self, config: api.StreamConfig) -> api.StreamConfig:
        """An existing bucket given the history of a change feed (as it was when the update is refused)."""
        try:
            new = replace(config, max_msgs_per_subject=self.options.feed_history)
            return (await self._conn.js.update_stream(new)).config
        except nats.js.errors.APIError as exc:
            log.warning("nats: cannot give bucket %s the history of a change feed: %s", config.name, exc)
            return config

    async def _upgraded(self, config: api.StreamConfig) -> api.StreamConfig:
        """A bucket made on an older server, given what this server adds (per-message TTL, atomic batches).

        Both can be turned on for an existing stream; when the update is refused (a
        permission, a stream in a mixed-version cluster) the bucket is used as it is.
        """
        want_ttl = self.features.message_ttl and not config.allow_msg_ttl
        want_atomic = self.features.atomic_batch and not config.allow_atomic
        if not (want_ttl or want_atomic):
            return config
        new = replace(
            config,
            allow_msg_ttl=True if self.features.message_ttl else config.allow_msg_ttl,
            allow_atomic=True if self.features.atomic_batch else config.allow_atomic,
        )
        try:
            return (await self._conn.js.update_stream(new)).config
        except nats.js.errors.APIError as exc:
            log.warning("nats: cannot enable per-message TTL / atomic batches on %s: %s", config.name, exc)
            return config

    async def _create_bucket(self, name: str) -> api.StreamInfo:
        """The namespace's KV bucket: history 1, direct gets, and what the server adds beside."""
        js = self._conn.js
        features = self.features
        config = api.StreamConfig(
            name=f"KV_{name}",
            subjects=[f"$KV.{name}.>"],
            allow_direct=True,
            allow_rollup_hdrs=True,
            deny_delete=True,
            discard=api.DiscardPolicy.NEW,
            duplicate_window=120.0,
            max_consumers=-1,
            max_msgs=-1,
            max_msgs_per_subject=self.options.feed_history if self.feed else 1,
            num_replicas=self.options.replicas,
            storage=STORAGE[self.options.storage],
            allow_msg_ttl=True if features.message_ttl else None,
            allow_atomic=True if features.atomic_batch else None,
        )
        try:
            await js.add_stream(config)
        except nats.js.errors.BadRequestError as exc:
            # Created meanwhile by another client, maybe with other settings: use it as it is.
            if exc.err_code != _STREAM_NAME_IN_USE:
                raise
        return await js.stream_info(f"KV_{name}")

    def _forget_bucket(self, ns: str) -> None:
        """The bucket may have vanished (deleted behind the store's back): look it up on the next call."""
        self._buckets.pop(ns, None)

    # -- change feed --------------------------------------------------------------

    async def read_changes(
        self, ns: str, prefix: str, after: str | None, limit: int
    ) -> tuple[list[Change], str]:
        """The changes of ``ns`` from its bucket's feed stream (``prism.backends.nats.feed``)."""

        async def op() -> tuple[list[Change], str]:
            bucket = await self._bucket(ns, create=True)
            assert bucket is not None
            if not bucket.feed:
                raise Unsupported(
                    f"the bucket of namespace {ns!r} keeps no history of its keys, so no change feed, "
                    "and the server refused to give it one"
                )
            return await read_feed(
                self._conn, bucket, prefix, after, limit, self.feed_max_changes, self.feed_retention
            )

        return await self._call(op, f"watch of {ns!r}", ns)

    # -- reads --------------------------------------------------------------------

    async def _fetch(
        self, bucket: Bucket, subjects: Sequence[str], consistent: bool
    ) -> list[tuple[int, Envelope | None]]:
        """Revision and envelope (None: no item) of each subject's last message, pipelined.

        Direct gets (served by any replica) for eventual reads; the stream leader's API for strong ones.
        """
        if bucket.direct and not consistent:
            if self.features.batch_get and len(subjects) > 1:
                return await self._fetch_batched(bucket, subjects)
            direct = f"$JS.API.DIRECT.GET.{bucket.stream}."
            msgs = await self._conn.request_many([(direct + s, b"", None) for s in subjects])
            return [self._direct_reply(s, m) for s, m in zip(subjects, msgs, strict=True)]
        api_subject = f"$JS.API.STREAM.MSG.GET.{bucket.stream}"
        msgs = await self._conn.request_many(
            [(api_subject, _json.encode({"last_by_subj": s}), None) for s in subjects]
        )
        return [self._api_reply(s, m) for s, m in zip(subjects, msgs, strict=True)]

    async def _fetch_batched(
        self, bucket: Bucket, subjects: Sequence[str]
    ) -> list[tuple[int, Envelope | None]]:
        """``_fetch`` of an eventual read as batched direct gets (``multi_last``, 2.11+), 1,024 subjects each.

        Subjects a batch did not reach (``MULTI_GET_MAX_BYTES`` ended it early) are read one by one.
        """
        request = f"$JS.API.DIRECT.GET.{bucket.stream}"
        found: dict[str, tuple[int, Envelope | None]] = {}
        unique = list(dict.fromkeys(subjects))
        for start in range(0, len(unique), MULTI_GET_SUBJECTS):
            part = unique[start : start + MULTI_GET_SUBJECTS]
            ask = {"multi_last": part, "max_bytes": MULTI_GET_MAX_BYTES}
            replies = await self._conn.request_stream(request, _json.encode(ask))
            *messages, end = replies
            status = end.headers.get("Status") if end.headers is not None else None
            if status not in ("204", "404"):
                description = end.headers.get("Description") if end.headers is not None else None
                raise Transient(f"batched direct get from {bucket.stream} answered {status} {description}")
            for msg in messages:
                headers = msg.headers or {}
                subject = headers.get("Nats-Subject")
                if subject is None or "Status" in headers:
                    raise BackendUnavailable(
                        f"nats batched direct get from {bucket.stream}: a malformed reply"
                    )
                found[subject] = self._entry(subject, int(headers["Nats-Sequence"]), headers, msg.data)
            if status == "204" and int((end.headers or {}).get("Nats-Num-Pending", "0") or 0) > 0:
                rest = [s for s in part if s not in found]
                direct = f"$JS.API.DIRECT.GET.{bucket.stream}."
                msgs = await self._conn.request_many([(direct + s, b"", None) for s in rest])
                found.update((s, self._direct_reply(s, m)) for s, m in zip(rest, msgs, strict=True))
        out = []
        for subject in subjects:
            got = found.get(subject)
            if got is None:
                self._revisions.put(subject, ABSENT)
                got = (0, None)
            out.append(got)
        return out

    async def _read_states(self, bucket: Bucket, subjects: list[str]) -> list[Known]:
        """The state of each key, for writes that found no usable hint."""
        out = []
        for rev, env in await self._fetch(bucket, subjects, False):
            out.append(
                Known(rev, None, None) if env is None else Known(rev, env.etag, env.expires_at, env.chunked)
            )
        return out

    def _direct_reply(self, subject: str, msg: Msg) -> tuple[int, Envelope | None]:
        stored = _direct_message(subject, msg)
        if stored is None:
            self._revisions.put(subject, ABSENT)
            return 0, None
        return self._entry(subject, *stored)

    def _api_reply(self, subject: str, msg: Msg) -> tuple[int, Envelope | None]:
        stored = _api_message(subject, msg)
        if stored is None:
            self._revisions.put(subject, ABSENT)
            return 0, None
        return self._entry(subject, *stored)

    def _entry(
        self, subject: str, rev: int, headers: dict[str, str] | None, data: bytes
    ) -> tuple[int, Envelope | None]:
        if is_deleted(headers):
            self._revisions.put(subject, Known(rev, None, None))
            return rev, None
        envelope = decode_envelope(data, subject)
        self._revisions.put(subject, Known(rev, envelope.etag, envelope.expires_at, envelope.chunked))
        return rev, envelope

    async def _chunk_data(self, bucket: Bucket, subjects: list[str], consistent: bool) -> list[bytes | None]:
        """The payload of each chunk subject's message (None: not there), pipelined."""
        if bucket.direct and not consistent:
            direct = f"$JS.API.DIRECT.GET.{bucket.stream}."
            msgs = await self._conn.request_many([(direct + s, b"", None) for s in subjects])
            found = [_direct_message(s, m) for s, m in zip(subjects, msgs, strict=True)]
        else:
            api_subject = f"$JS.API.STREAM.MSG.GET.{bucket.stream}"
            msgs = await self._conn.request_many(
                [(api_subject, _json.encode({"last_by_subj": s}), None) for s in subjects]
            )
            found = [_api_message(s, m) for s, m in zip(subjects, msgs, strict=True)]
        return [None if f is None else f[2] for f in found]

    async def _with_values(
        self, bucket: Bucket, fetched: list[tuple[str, int, Envelope | None]], consistent: bool, now: float
    ) -> list[tuple[int, Envelope | None]]:
        """``fetched`` (subject, revision, envelope) with the value of every live chunked item loaded.

        Chunks of all the items come in one pipelined round trip. An item whose chunks are
        gone was replaced meanwhile: its manifest is read again from the stream leader and
        followed, until a complete value or no item is found.
        """
        out = [(rev, env) for _, rev, env in fetched]
        todo: dict[int, tuple[str, int, Envelope]] = {
            i: (subject, rev, env)
            for i, (subject, rev, env) in enumerate(fetched)
            if env is not None and env.chunked and env.live(now)
        }
        while todo:
            wanted = [
                s
                for subject, _, env in todo.values()
                for s in chunks.chunk_subjects(bucket.chunk_root(subject), env.version, env.chunks)
            ]
            data = await self._chunk_data(bucket, wanted, consistent)
            again: dict[int, tuple[str, int, Envelope]] = {}
            offset = 0
            for i, (subject, rev, env) in todo.items():
                value = chunks.assemble(env, data[offset : offset + env.chunks], subject)
                offset += env.chunks
                if value is not None:
                    out[i] = (rev, msgspec.structs.replace(env, value=value))
                else:
                    again[i] = (subject, rev, env)
            todo = {}
            if not again:
                break
            fresh = await self._fetch(bucket, [subject for subject, _, _ in again.values()], True)
            for (i, (subject, rev, env)), (new_rev, new_env) in zip(again.items(), fresh, strict=True):
                if new_rev == rev and not consistent:
                    todo[i] = (subject, rev, env)  # a replica behind the leader: ask the leader
                elif new_rev == rev:
                    # The same manifest without its chunks: purged after another client found it expired.
                    if env.expires_at is None:
                        raise BackendUnavailable(
                            f"nats item {subject[:80]!r} names chunks of version {env.version} "
                            "that are missing"
                        )
                    out[i] = (rev, None)
                elif new_env is not None and new_env.chunked and new_env.live(now):
                    todo[i] = (subject, new_rev, new_env)
                else:
                    out[i] = (new_rev, new_env)
            consistent = True
        return out

    async def _purge_expired(self, bucket: Bucket, subject: str, rev: int, chunked: bool) -> None:
        """Replace an expired item by a tombstone, only if it is still that revision (chunks go too).

        Nothing to do on a bucket with per-message TTL: the server removes the item itself.
        The tombstone says the item expired (the change feed's ``expire``).
        """
        self._revisions.forget(subject)
        if bucket.ttl:
            return
        await self._conn.publish_unacked(
            subject, {KV_OPERATION: "DEL", EXPECTED_LAST_SEQ: str(rev), EXPIRED_HEADER: "1"}
        )
        if chunked:
            # Chunks below an item's revision are its own or dead ones (prism.backends.nats.chunks).
            await chunks.purge_before(self._conn, bucket, bucket.chunk_root(subject), rev)

    async def _items(
        self, bucket: Bucket, keyed: Sequence[tuple[str, str]], consistent: bool
    ) -> list[Item | None]:
        """The live item for each (item key, subject); expired ones are purged in passing."""
        subjects = [s for _, s in keyed]
        fetched = await self._fetch(bucket, subjects, consistent)
        now = time.time()
        if any(env is not None and env.chunked for _, env in fetched):
            triples = [(s, rev, env) for s, (rev, env) in zip(subjects, fetched, strict=True)]
            fetched = await self._with_values(bucket, triples, consistent, now)
        out: list[Item | None] = []
        for (key, subject), (rev, env) in zip(keyed, fetched, strict=True):
            if env is not None and not env.live(now):
                await self._purge_expired(bucket, subject, rev, env.chunked)
            out.append(_item(key, env, now))
        return out

    async def get(self, ns: str, record: str, key: str, *, consistent: bool = False) -> Item | None:
        async def op() -> Item | None:
            bucket = self._buckets.get(ns) or await self._bucket(ns, create=False)
            if bucket is None:
                return None
            subject = bucket.subject(record, key)
            if bucket.direct and not consistent:
                msg = await self._conn.request(f"$JS.API.DIRECT.GET.{bucket.stream}.{subject}")
                rev, env = self._direct_reply(subject, msg)
            else:
                ((rev, env),) = await self._fetch(bucket, (subject,), consistent)
            now = time.time()
            if env is not None and env.chunked:
                ((rev, env),) = await self._with_values(bucket, [(subject, rev, env)], consistent, now)
            if env is not None and not env.live(now):
                await self._purge_expired(bucket, subject, rev, env.chunked)
            return _item(key, env, now)

        return await self._call(op, f"get from {ns!r}", ns)

    async def get_many(
        self, ns: str, addresses: Sequence[tuple[str, str]], *, consistent: bool = False
    ) -> list[Item | None]:
        """Every address in one pipelined round trip (duplicates read once)."""
        if not addresses:
            return []

        async def op() -> list[Item | None]:
            bucket = await self._bucket(ns, create=False)
            if bucket is None:
                return [None] * len(addresses)
            unique = list(dict.fromkeys(addresses))
            items = await self._items(bucket, [(k, bucket.subject(r, k)) for r, k in unique], consistent)
            if len(unique) == len(addresses):
                return items
            found = dict(zip(unique, items, strict=True))
            return [found[a] for a in addresses]

        return await self._call(op, f"get_many from {ns!r}", ns)

    # -- writes -------------------------------------------------------------------

    async def write(self, ns: str, ops: Sequence[StoredWrite]) -> list[WriteOutcome]:
        """Each op by compare-and-set on its key's revision; ops on one key apply in order."""
        if not ops:
            return []
        batch = WriteOne(ops[0]) if len(ops) == 1 else WriteBatch(ops)
        async with self._turns.turn([(ns, op.record, op.key) for op in ops]):
            await self._call(lambda: self._run(ns, batch), f"write to {ns!r}", ns, resend=_unconditional(ops))
        return batch.finished()

    async def _run(self, ns: str, batch: WriteOne | WriteBatch) -> None:
        bucket = await self._bucket(ns, create=batch.creates)
        if bucket is None:
            batch.settle_without_bucket()
            return
        await batch.run(bucket, self._conn, self._revisions, self._read_states, self.settings.backoff)

    async def transact(self, ns: str, ops: Sequence[StoredWrite]) -> list[WriteOutcome]:
        """All ops or none, as one atomic batch publish (``prism.backends.nats.transactions``)."""
        if not ops:
            return []
        if not self.features.atomic_batch:
            raise Unsupported(
                f"the nats backend has no atomic multi-key transactions on nats-server {self.features.label} "
                "(2.12 or newer has atomic batch publish)"
            )

        async def op() -> list[WriteOutcome]:
            bucket = await self._bucket(ns, create=any(o.value is not None for o in ops))
            if bucket is None:
                bucket = await self._bucket(ns, create=True)
                assert bucket is not None
            if not bucket.atomic:
                raise Unsupported(
                    f"the bucket of namespace {ns!r} does not allow atomic batch publish and cannot be "
                    "changed to (stream option allow_atomic)"
                )
            return await run_transaction(
                self._conn, bucket, ops, self._revisions, self._read_strong, self.settings.backoff
            )

        async with self._turns.turn([(ns, o.record, o.key) for o in ops]):
            return await self._call(op, f"transact on {ns!r}", ns, resend=_unconditional(ops))

    async def _read_strong(self, bucket: Bucket, subjects: list[str]) -> list[Known]:
        """The state of each key, from the stream leader."""
        return [
            Known(rev, None, None) if env is None else Known(rev, env.etag, env.expires_at, env.chunked)
            for rev, env in await self._fetch(bucket, subjects, True)
        ]

    # -- listings -----------------------------------------------------------------

    async def _listing(
        self, ns: str, bucket: Bucket, filter_subject: str, name_of: Callable[[str], str | None]
    ) -> Listing | None:
        """The keys under ``filter_subject`` as of now: a kept listing caught up, or a new one.

        None when the bucket is gone (``prism.backends.nats.listings`` explains the cache).
        """
        # The stream's creation time tells a listing of a bucket deleted and made again meanwhile
        # (by another client) from a current one: its sequences would not carry over.
        born = await self._stream_created(bucket.stream)
        listing = None if born is None else self._listings.get(bucket.stream, filter_subject, born)
        if listing is not None:
            async with listing.lock:
                changed = await self._conn.list_keys(
                    bucket.stream, bucket.prefix, filter_subject, listing.seq
                )
                if changed is not None:
                    listing.apply(changed)
                    return listing
        elif born is not None:
            listed = await self._conn.list_keys(bucket.stream, bucket.prefix, filter_subject)
            if listed is not None:
                listing = Listing(name_of, born)
                listing.apply(listed)
                self._listings.put(bucket.stream, filter_subject, listing)
                return listing
        self._forget_bucket(ns)
        self._listings.forget(bucket.stream)
        return None

    async def _stream_created(self, stream: str) -> str | None:
        """When the stream was created (None: it does not exist), from one stream-info request."""
        reply = _stream_info_reply.decode((await self._conn.request(f"$JS.API.STREAM.INFO.{stream}")).data)
        if reply.error is not None:
            if reply.error.err_code == _STREAM_NOT_FOUND:
                return None
            raise api_error("stream info", reply.error.code, reply.error.err_code, reply.error.description)
        return reply.created

    async def _purge_met(self, bucket: Bucket, expired: list[Listed]) -> None:
        """Replace expired items a listing met by tombstones (a few per call; old servers only)."""
        if bucket.ttl:
            return
        for entry in expired[:PURGE_PER_LISTING]:
            await self._purge_expired(bucket, bucket.prefix + entry.key, entry.seq, entry.chunked)

    async def scan(self, ns: str, prefix: str, after: str | None, limit: int) -> list[str]:
        """Record ids in order from the kept listing of the prefix's whole 6-byte chunks, caught up."""

        async def op() -> list[str]:
            bucket = await self._bucket(ns, create=False)
            if bucket is None:
                return []
            head = scan_tokens(prefix)
            listing = await self._listing(
                ns, bucket, bucket.prefix + (f"{head}.>" if head else ">"), _record_of
            )
            if listing is None:
                return []
            now = time.time()
            ids: list[str] = []
            expired: list[Listed] = []
            for record, members in listing.after(after, start=prefix):
                if not record.startswith(prefix):
                    break
                live = False
                for entry in members.values():
                    if entry.live(now):
                        live = True
                    elif len(expired) < PURGE_PER_LISTING:
                        expired.append(entry)
                if live:
                    ids.append(record)
                    if len(ids) >= limit:
                        break
            await self._purge_met(bucket, expired)
            return ids

        return await self._call(op, f"scan of {ns!r}", ns)

    async def _record_keys(
        self, ns: str, bucket: Bucket, record: str, start: str | None, after: str | None = None
    ) -> Iterator[tuple[str, Listed]] | None:
        """The record's keys from ``start`` (and after ``after``) whose last message is not a tombstone.

        In key order, from the kept listing of the record caught up; None when the bucket is gone.
        """
        listing = await self._listing(ns, bucket, f"{bucket.prefix}{record_tokens(record)}.*", _item_of)
        if listing is None:
            return None
        return ((key, entry) for key, members in listing.after(after, start) for entry in members.values())

    async def get_range(
        self,
        ns: str,
        record: str,
        start: str | None,
        end: str | None,
        after: str | None,
        limit: int,
        *,
        consistent: bool = False,
    ) -> list[Item]:
        """The record's live keys in order from its kept listing, then the first ``limit`` items fetched."""

        async def op() -> list[Item]:
            bucket = await self._bucket(ns, create=False)
            if bucket is None:
                return []
            keys = await self._record_keys(ns, bucket, record, start, after)
            if keys is None:
                return []
            now = time.time()
            out: list[Item] = []
            expired: list[Listed] = []
            ended = False
            while not ended and len(out) < limit:
                chunk: list[tuple[str, str]] = []
                want = min(limit - len(out), PIPELINE_CHUNK)
                for key, entry in keys:
                    if end is not None and key >= end:
                        ended = True
                        break
                    if entry.live(now):
                        chunk.append((key, bucket.prefix + entry.key))
                        if len(chunk) >= want:
                            break
                    elif len(expired) < PURGE_PER_LISTING:
                        expired.append(entry)
                else:
                    ended = True
                if chunk:
                    out.extend(i for i in await self._items(bucket, chunk, consistent) if i is not None)
            await self._purge_met(bucket, expired)
            return out

        return await self._call(op, f"get_items from {ns!r}", ns)

    async def delete_range(self, ns: str, record: str, start: str | None, end: str | None) -> int:
        """Tombstone each listed key by compare-and-set on its listed revision (not atomic as a whole)."""

        deleted = 0  # kept across retries: a retry lists only what is still there

        async def op() -> int:
            nonlocal deleted
            bucket = await self._bucket(ns, create=False)
            if bucket is None:
                return deleted
            keys = await self._record_keys(ns, bucket, record, start)
            if keys is None:
                return deleted
            targets = list(itertools.takewhile(lambda pair: end is None or pair[0] < end, keys))
            for offset in range(0, len(targets), PIPELINE_CHUNK):
                chunk = targets[offset : offset + PIPELINE_CHUNK]
                # The listing saw an item at each revision; its etag is not needed to delete it.
                seed = {bucket.prefix + e.key: Known(e.seq, "", e.expires_at, e.chunked) for _, e in chunk}
                batch = WriteBatch([StoredWrite(record, key, None) for key, _ in chunk], seed)
                async with self._turns.turn((ns, record, key) for key, _ in chunk):
                    await batch.run(
                        bucket, self._conn, self._revisions, self._read_states, self.settings.backoff
                    )
                deleted += sum(1 for o in batch.finished() if o.existed)
            return deleted

        # Not resent when unanswered: a second attempt would count none of what the first deleted.
        return await self._call(op, f"delete_items from {ns!r}", ns, resend=False)
