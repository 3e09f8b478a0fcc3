"""``nats://``: Prism on NATS JetStream key-value buckets (nats-py; nats-server 2.9 or newer, ``-js``).

URL: ``nats://[user:password@ | token@]host[:port][?option=value&...]``. Options, as
query parameters or keyword arguments of ``prism.connect`` (keywords win):

* ``connect_timeout`` (2 s), ``operation_timeout`` (5 s per call), ``max_retries`` (5),
  ``retry_base`` (0.02 s), ``retry_cap`` (0.5 s): transient failures (no responders,
  connection down, JetStream busy) are retried with capped exponential backoff and
  full jitter inside the call's deadline, then raise ``BackendUnavailable``.
* ``storage`` (``file`` or ``memory``) and ``replicas`` (1 to 5): how the buckets this
  store creates are stored.
* ``reconnect_wait`` (1 s): pause between reconnect attempts. The client reconnects
  forever in the background; calls made while it is down fail fast instead of being
  queued and replayed later.
* ``ping_interval`` (20 s): client pings that detect a dead connection.
* ``revision_cache`` (50,000 keys): the last revision seen per key, so a write
  compares-and-sets in one round trip; a stale entry only costs a re-read.
* ``max_payload`` (1 MiB): the server's ``max_payload``. A value of up to this minus
  1 KiB is stored in one message; a larger one in chunks of that size (below). The
  store refuses to open when the server accepts less. The largest value is 4 MiB
  (Prism's default limit), or this minus 1 KiB when that is more.

Layout: one KV bucket per namespace (``prism_<name>``, or an encoded name, created on
the first write with history 1 and direct gets), one key per item: the record id's
UTF-8 bytes in 6-byte URL-safe base64 tokens, then a token for the item key (details
in ``prism.backends.nats.layout``). Each message holds a msgpack envelope of etag,
expiry, content type, update time and value; the expiry is repeated in a header.

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
TTL kept by Prism (the 2.9 server has no per-key TTL: expired items are absent for
reads, scans and conditions, and are replaced by tombstones when a read or a listing
meets them), strong reads from the stream leader (eventual ones use direct gets),
batches pipelined on the one connection.

Not supported: multi-key transactions (``transact`` raises ``Unsupported``);
``delete_items`` over a range is not atomic as a whole (each key is deleted by
compare-and-set). A bucket deleted behind the store's back makes the first read of
it wait out ``operation_timeout`` (the server does not answer for a missing stream);
the next call finds it gone.

Cost: ``scan`` lists, headers only, every key of the namespace under the prefix's
whole 6-byte chunks (a short or empty prefix lists the whole bucket) on every page,
so it is linear in the size of the namespace, tombstones (and, for a listing of the
whole bucket, the chunks of large values) included; ``get_items`` over
a range lists the record's keys the same way, then fetches only the page it returns.
Deleted keys leave a small tombstone each, as in NATS KV.
"""

from prism.backends.nats.backend import NatsBackend
from prism.backends.nats.options import NatsOptions

__all__ = ["NatsBackend", "NatsOptions"]
