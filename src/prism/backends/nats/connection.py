"""One long-lived NATS connection: requests multiplexed on one inbox, and key listings.

Every request of a store goes out on one client connection and its reply comes back
through one wildcard inbox subscription, matched to a future by a counter token, so
thousands of concurrent calls share the socket without a pool to exhaust. Listings
run an ephemeral push consumer (last message per subject, headers only, flow
controlled) and stop at the message the server marks as the last one pending.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import msgspec
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api

from prism.backends.nats.layout import CHUNKS_HEADER, EXPIRES_HEADER
from prism.backends.nats.options import server_urls
from prism.errors import StoreClosed

__all__ = [
    "APIErrorBody",
    "Connection",
    "Listed",
    "ListingGap",
    "NoReply",
    "NoResponders",
    "PubAck",
    "decode_puback",
]

log = logging.getLogger("prism.backends.nats")
R = TypeVar("R")

KV_OPERATION = "KV-Operation"
EXPECTED_LAST_SEQ = "Nats-Expected-Last-Subject-Sequence"
_DELETED = frozenset({"DEL", "PURGE"})
#: Seconds between the server's heartbeats on a listing consumer (flow control needs them).
LISTING_HEARTBEAT = 2.0
#: Seconds an abandoned listing consumer lives on the server before it is removed.
LISTING_INACTIVE_THRESHOLD = 10.0
#: Listing consumers made at most per listing until one lands on the stream's leader.
LISTING_PLACEMENTS = 30
#: Bytes of payload a pipelined batch queues before it lets the client write them out.
PIPELINE_FLUSH_BYTES = 1024 * 1024


class NoResponders(Exception):
    """Nothing listens on the subject: the bucket's stream is missing or JetStream is not ready."""


class NoReply(Exception):
    """A request went out but no reply came: the connection dropped, or whoever had to answer
    (a stream's leader) went away. A write may or may not have been applied."""


class ListingGap(Exception):
    """A listing consumer skipped a delivery; the listing is incomplete and is run again."""


class APIErrorBody(msgspec.Struct):
    """The ``error`` object of a JetStream API reply."""

    code: int = 0
    err_code: int = 0
    description: str = ""


class PubAck(msgspec.Struct):
    """The reply of a JetStream publish: the new sequence or an error."""

    seq: int = 0
    error: APIErrorBody | None = None


_puback = msgspec.json.Decoder(PubAck)
#: (subject, payload, headers) of one request.
Request = tuple[str, bytes, dict[str, str] | None]


def decode_puback(data: bytes) -> PubAck:
    """The acknowledgement of a JetStream publish (an API error reply decodes too)."""
    return _puback.decode(data)


@dataclass(slots=True)
class Listed:
    """One key of a listing: its subject suffix, stream sequence, and state from its headers."""

    key: str
    seq: int
    deleted: bool
    expires_at: float | None
    #: Whether the message is the manifest of a chunked value.
    chunked: bool = False

    def live(self, now: float) -> bool:
        return not self.deleted and (self.expires_at is None or self.expires_at > now)


def parse_expiry(headers: dict[str, str] | None) -> float | None:
    raw = None if headers is None else headers.get(EXPIRES_HEADER)
    if raw is None:
        return None
    try:
        return float(raw)
    except ValueError:
        return None


def is_deleted(headers: dict[str, str] | None) -> bool:
    return headers is not None and headers.get(KV_OPERATION) in _DELETED


def is_chunked(headers: dict[str, str] | None) -> bool:
    return headers is not None and CHUNKS_HEADER in headers


@dataclass(frozen=True, slots=True)
class ConnectOptions:
    """What the client connection needs (seconds)."""

    url: str
    connect_timeout: float
    request_timeout: float
    reconnect_wait: float
    ping_interval: float
    #: Seconds a request waits for its reply before NoReply.
    reply_timeout: float = 5.0


class Connection:
    """The store's client, its JetStream context, and the reply inbox its requests share."""

    def __init__(self, options: ConnectOptions, describe_url: str) -> None:
        self._options = options
        self._describe_url = describe_url
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._inbox = ""
        self._waiting: dict[str, asyncio.Future[Msg]] = {}
        #: Requests answered by several messages: the replies so far, and the future of the whole.
        self._streams: dict[str, tuple[list[Msg], asyncio.Future[list[Msg]]]] = {}
        self._tokens = itertools.count(1)
        self._closing = False
        #: Streams seen with a single copy: a listing consumer of theirs needs no placement check.
        self._single_copy: set[str] = set()
        #: The driver's latest complaint (connection refused, authorization...), for error messages.
        self.last_error: str | None = None

    @property
    def nc(self) -> Client:
        assert self._nc is not None, "the NATS connection is not open"
        return self._nc

    @property
    def js(self) -> JetStreamContext:
        assert self._js is not None, "the NATS connection is not open"
        return self._js

    async def open(self) -> None:
        """Connect (the caller bounds the time) and subscribe the reply inbox."""
        self._closing = False
        nc = Client()
        o = self._options
        try:
            await nc.connect(
                server_urls(o.url),
                connect_timeout=max(1, round(o.connect_timeout)),
                reconnect_time_wait=o.reconnect_wait,  # type: ignore[arg-type]
                max_reconnect_attempts=-1,
                ping_interval=o.ping_interval,  # type: ignore[arg-type]
                # No buffering while disconnected: calls fail fast instead of replaying later.
                pending_size=0,
                skip_subject_validation=True,
                error_cb=self._on_error,
                disconnected_cb=self._on_disconnected,
                reconnected_cb=self._on_reconnected,
            )
            inbox = nc.new_inbox() + "."
            await nc.subscribe(inbox + "*", cb=self._on_reply, pending_bytes_limit=0)
        except BaseException:
            await _close_quietly(nc)
            raise
        self._nc, self._inbox = nc, inbox
        # A JetStream API call unanswered within reply_timeout (its leader went away) is
        # retried like any request, within the operation's deadline.
        self._js = nc.jetstream(timeout=min(o.request_timeout, o.reply_timeout))

    async def close(self) -> None:
        self._closing = True
        nc, self._nc, self._js = self._nc, None, None
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(StoreClosed("the store was closed while this call waited for NATS"))
        self._waiting.clear()
        for _, whole in self._streams.values():
            if not whole.done():
                whole.set_exception(StoreClosed("the store was closed while this call waited for NATS"))
        self._streams.clear()
        if nc is not None:
            await _close_quietly(nc)

    async def _on_error(self, exc: Exception) -> None:
        self.last_error = f"{type(exc).__name__}: {exc}"
        log.debug("nats %s: %s: %s", self._describe_url, type(exc).__name__, exc)

    async def _on_disconnected(self) -> None:
        if self._closing:
            return
        log.warning("nats %s: disconnected; reconnecting in the background", self._describe_url)
        # Replies to what was sent before cannot come any more: fail the waits now.
        lost = NoReply(f"the connection to {self._describe_url} dropped before the reply came")
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(lost)
        for _, whole in self._streams.values():
            if not whole.done():
                whole.set_exception(lost)

    async def _on_reconnected(self) -> None:
        log.warning("nats %s: reconnected", self._describe_url)

    async def _on_reply(self, msg: Msg) -> None:
        token = msg.subject[len(self._inbox) :]
        future = self._waiting.pop(token, None)
        if future is not None:
            if not future.done():
                future.set_result(msg)
            return
        stream = self._streams.get(token)
        if stream is not None:
            replies, whole = stream
            replies.append(msg)
            if msg.headers is not None and "Status" in msg.headers and not whole.done():
                del self._streams[token]
                whole.set_result(replies)

    async def request_stream(self, subject: str, payload: bytes) -> list[Msg]:
        """One request answered by several messages, up to and including one with a status header.

        For batched direct gets: the messages, then an end-of-batch status (204), or only
        a status (404: nothing found). The caller owns the deadline.
        """
        token = str(next(self._tokens))
        whole: asyncio.Future[list[Msg]] = asyncio.get_running_loop().create_future()
        self._streams[token] = ([], whole)
        try:
            await self.nc.publish(subject, payload, reply=self._inbox + token)
            replies = await self._answer(whole)
        finally:
            self._streams.pop(token, None)
        last = replies[-1]
        if not last.data and last.headers is not None and last.headers.get("Status") == "503":
            raise NoResponders(last.subject)
        return replies

    async def request_many(self, requests: Sequence[Request]) -> list[Msg]:
        """Send every request, then wait for every reply, in order (the caller owns the deadline).

        The requests are pipelined on the one connection: no task per request, one
        round trip for the whole batch. NoResponders when a subject has no listener.
        """
        nc, loop, inbox = self.nc, asyncio.get_running_loop(), self._inbox
        waiting = self._waiting
        started: list[tuple[str, asyncio.Future[Msg]]] = []
        unflushed = 0
        try:
            for subject, payload, headers in requests:
                token = str(next(self._tokens))
                future: asyncio.Future[Msg] = loop.create_future()
                waiting[token] = future
                started.append((token, future))
                await nc.publish(subject, payload, reply=inbox + token, headers=headers)
                unflushed += len(payload)
                if unflushed > PIPELINE_FLUSH_BYTES:
                    # Let the client's flusher write (and feel the socket's back-pressure) before more.
                    unflushed = 0
                    await asyncio.sleep(0)
            replies = await self._answers(started)
        finally:
            for token, _ in started:
                waiting.pop(token, None)
        for msg in replies:
            if not msg.data and msg.headers is not None and msg.headers.get("Status") == "503":
                raise NoResponders(msg.subject)
        return replies

    async def request(self, subject: str, payload: bytes = b"", headers: dict[str, str] | None = None) -> Msg:
        """One request and its reply (the caller owns the deadline): ``request_many`` of one, inlined."""
        token = str(next(self._tokens))
        future: asyncio.Future[Msg] = asyncio.get_running_loop().create_future()
        self._waiting[token] = future
        try:
            await self.nc.publish(subject, payload, reply=self._inbox + token, headers=headers)
            msg = await self._answer(future)
        finally:
            self._waiting.pop(token, None)
        if not msg.data and msg.headers is not None and msg.headers.get("Status") == "503":
            raise NoResponders(msg.subject)
        return msg

    async def publish_batch(
        self, messages: Sequence[tuple[str, bytes, dict[str, str]]], batch_id: str
    ) -> Msg:
        """Publish ``messages`` as one atomic batch (ADR-50); the commit's reply (a pub ack) is returned.

        The first and the last message ask for a reply (the first's is empty unless the
        batch is refused at once); those between are sent without one. The caller owns
        the deadline.
        """
        nc, loop, inbox = self.nc, asyncio.get_running_loop(), self._inbox
        last = len(messages)
        started: list[tuple[str, asyncio.Future[Msg]]] = []
        try:
            for n, (subject, payload, headers) in enumerate(messages, 1):
                batch = {**headers, "Nats-Batch-Id": batch_id, "Nats-Batch-Sequence": str(n)}
                if n == last:
                    batch["Nats-Batch-Commit"] = "1"
                reply = ""
                if n == 1 or n == last:
                    token = str(next(self._tokens))
                    future: asyncio.Future[Msg] = loop.create_future()
                    self._waiting[token] = future
                    started.append((token, future))
                    reply = inbox + token
                await nc.publish(subject, payload, reply=reply, headers=batch)
            replies = await self._answers(started)
        finally:
            for token, _ in started:
                self._waiting.pop(token, None)
        for msg in replies:
            if not msg.data and msg.headers is not None and msg.headers.get("Status") == "503":
                raise NoResponders(msg.subject)
        first = replies[0]
        if first.data and len(replies) > 1 and decode_puback(first.data).error is not None:
            return first  # refused at its first message (the commit's reply then says the same or less)
        return replies[-1]

    async def _answer(self, future: asyncio.Future[R]) -> R:
        """The reply ``future`` brings, within ``reply_timeout`` (else NoReply)."""
        if future.done():
            return future.result()
        try:
            async with asyncio.timeout(self._options.reply_timeout):
                return await future
        except TimeoutError:
            raise NoReply(f"no reply within {self._options.reply_timeout} s (reply_timeout)") from None

    async def _answers(self, started: list[tuple[str, asyncio.Future[Msg]]]) -> list[Msg]:
        """Every reply of a pipelined batch, within ``reply_timeout`` of the last request sent."""
        if all(future.done() for _, future in started):
            return [future.result() for _, future in started]
        try:
            async with asyncio.timeout(self._options.reply_timeout):
                return [await future for _, future in started]
        except TimeoutError:
            raise NoReply(f"no reply within {self._options.reply_timeout} s (reply_timeout)") from None

    async def publish_unacked(self, subject: str, headers: dict[str, str] | None = None) -> None:
        """Best-effort housekeeping publish (nobody waits for it; failures are ignored)."""
        nc = self._nc
        if nc is None or not nc.is_connected:
            return
        try:
            await nc.publish(subject, b"", headers=headers)
        except nats.errors.Error as exc:
            log.debug("nats housekeeping publish dropped: %s", exc)

    async def request_unawaited(self, subject: str, payload: bytes) -> None:
        """Best-effort housekeeping request: the reply comes back to the inbox and is dropped."""
        nc = self._nc
        if nc is None or not nc.is_connected:
            return
        try:
            await nc.publish(subject, payload, reply=f"{self._inbox}x{next(self._tokens)}")
        except nats.errors.Error as exc:
            log.debug("nats housekeeping request dropped: %s", exc)

    async def list_keys(
        self, stream: str, prefix: str, filter_subject: str, after_seq: int | None = None
    ) -> list[Listed] | None:
        """The last message of every subject matching ``filter_subject`` (headers only), by sequence.

        With ``after_seq``, every matching message stored after that stream sequence
        instead (what changed since a listing). None when the stream does not exist.
        The caller owns the deadline.
        """
        nc, js = self.nc, self.js
        out: list[Listed] = []
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        expected = 1
        cut = len(prefix)

        async def on_msg(msg: Msg) -> None:
            nonlocal expected
            if done.done():
                return
            reply = msg.reply
            if not reply.startswith("$JS.ACK."):
                if reply and msg.headers is not None and msg.headers.get("Status") == "100":
                    await nc.publish(reply)  # flow control: tell the server to keep sending
                return
            tokens = reply.split(".")
            fields = tokens[2:9] if len(tokens) == 9 else tokens[4:11]
            sseq, dseq, pending = int(fields[3]), int(fields[4]), int(fields[6])
            if dseq != expected:
                done.set_exception(ListingGap(f"listing of {stream} skipped from {expected} to {dseq}"))
                return
            expected += 1
            headers = msg.headers
            out.append(
                Listed(
                    msg.subject[cut:], sseq, is_deleted(headers), parse_expiry(headers), is_chunked(headers)
                )
            )
            if pending == 0:
                done.set_result(None)

        # The consumer is made before anything listens on its inbox, so it delivers nothing
        # until it is known to sit on the stream's leader (see _on_leader).
        inbox = nc.new_inbox()
        sub: Any = None
        info: api.ConsumerInfo | None = None
        try:
            config = api.ConsumerConfig(
                deliver_subject=inbox,
                deliver_policy=api.DeliverPolicy.LAST_PER_SUBJECT
                if after_seq is None
                else api.DeliverPolicy.BY_START_SEQUENCE,
                opt_start_seq=None if after_seq is None else after_seq + 1,
                ack_policy=api.AckPolicy.NONE,
                filter_subject=filter_subject,
                headers_only=True,
                flow_control=True,
                idle_heartbeat=LISTING_HEARTBEAT,
                inactive_threshold=LISTING_INACTIVE_THRESHOLD,
                mem_storage=True,
                num_replicas=1,
            )
            leader: list[str | None] = []  # the stream's leader, once asked
            for _ in range(LISTING_PLACEMENTS):
                try:
                    info = await js.add_consumer(stream, config)
                except nats.js.errors.NotFoundError:
                    return None
                if await self._on_leader(stream, info, leader):
                    break
                await self.publish_unacked(f"$JS.API.CONSUMER.DELETE.{stream}.{info.name}")
                info = None
                inbox = nc.new_inbox()
                config = replace(config, deliver_subject=inbox)
            else:
                raise ListingGap(f"no listing consumer of {stream} was placed on its leader")
            delivered = info.delivered.consumer_seq if info.delivered is not None else 0
            if not info.num_pending and not delivered:
                return out
            sub = await nc.subscribe(inbox, cb=on_msg, pending_bytes_limit=0)
            await done
            return out
        finally:
            if sub is not None:
                await _unsubscribe_quietly(sub)
            if not done.done():
                done.cancel()
            elif not done.cancelled():
                done.exception()  # retrieved, so a gap seen after an early exit is not reported as lost
            if info is not None:
                await self.publish_unacked(f"$JS.API.CONSUMER.DELETE.{stream}.{info.name}")

    async def _on_leader(self, stream: str, info: api.ConsumerInfo, leader: list[str | None]) -> bool:
        """Whether a listing consumer reads the stream's leader, which has every acknowledged write.

        A consumer with one replica is placed on any server holding a copy of the
        stream, and reads that server's copy, which may lag the leader by the latest
        writes. On one server, and for a stream with one copy, it always does.
        """
        placed = info.cluster.leader if info.cluster is not None else None
        if not placed or stream in self._single_copy:
            return True
        if not leader:
            cluster = (await self.js.stream_info(stream)).cluster
            if cluster is None or not cluster.replicas:
                self._single_copy.add(stream)
                return True
            leader.append(cluster.leader)
        return leader[0] == placed


async def _close_quietly(nc: Client) -> None:
    try:
        await nc.close()
    except (nats.errors.Error, OSError) as exc:
        log.debug("nats close: %s", exc)


async def _unsubscribe_quietly(sub: Any) -> None:
    try:
        await sub.unsubscribe()
    except (nats.errors.Error, OSError) as exc:
        log.debug("nats unsubscribe: %s", exc)
