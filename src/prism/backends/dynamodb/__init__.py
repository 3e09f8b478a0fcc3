"""``dynamodb://TABLE``: one DynamoDB table, through one long-lived aiobotocore client.

**URL and options** (query parameters or keyword arguments of ``prism.connect``):
``region`` (else ``AWS_DEFAULT_REGION``/config), ``endpoint`` (e.g. ``http://127.0.0.1:8000``
for a local server), ``profile`` (a named AWS profile), ``create_table`` (``true``
creates the table on open, with its index and TTL; default ``false``),
``max_connections`` (HTTP connection pool, default 128), ``table_ready_timeout``
(seconds to wait for a new table, default 60), ``blind_batch_puts`` (default
``false``; see *Semantics*), ``scan_index`` (default ``true``; ``false`` writes items
without the keys of the ``prism_records`` index: a new key costs one write unit
instead of two, and ``scan`` raises Unsupported; set it alike on every store of a
namespace, since an item written by such a store is missing from the others'
scans), ``feed`` (``false``; with ``feed_retention``, at most
86400 s, and ``feed_poll_interval``, 0.25 s: the change feed on the table's DynamoDB
Stream, ``prism.backends.dynamodb.feed``), and the network settings shared by
the server backends: ``connect_timeout`` (2 s), ``operation_timeout`` (5 s per
operation, retries included), ``max_retries`` (5), ``retry_base`` (0.02 s) and
``retry_cap`` (0.5 s). Credentials never go in the URL: they come from the standard
AWS chain (environment, ``~/.aws``, instance or task role). Example:
``dynamodb://prism?region=us-east-1&endpoint=http://127.0.0.1:8000&create_table=true``.

**Layout.** One table holds every namespace. The partition key ``pk`` is the
namespace and record id, the sort key ``sk`` the item key (``""`` is stored as
``"\\x01"``, since DynamoDB refuses empty keys). Each item carries its etag, its
update time, its content type and, with a ttl, its expiry: ``x`` in exact epoch
seconds for Prism's checks, and ``t`` rounded up to whole seconds, the table's TTL
attribute. The global secondary index ``prism_records``
(``ns`` -> ``rid``, projecting ``x``) lists record ids in code-point order for scans.
Values up to 390,000 bytes live in the item; larger ones (up to 4 MiB) are split into
chunk items under a fresh version, and the item becomes a manifest switched to that
version with its condition, so a reader never sees a partial or mixed value; the
chunks of the replaced version are deleted after the switch.

**Semantics.** Etags, ``if_match`` and ``if_absent`` are ConditionExpressions that
treat an expired item as absent, and every read, scan and condition filters expired
items (DynamoDB's TTL deletes them up to days later). ``consistency="strong"`` reads
with ConsistentRead. A single write is one PutItem/DeleteItem that returns the old
item, so ``existed`` is exact. Batches (``put_many``, ``delete_many``, ``put_items``)
send conditional and large writes one by one and the rest with BatchWriteItem in
groups of 25, after one consistent BatchGetItem that tells ``existed`` (as of that read)
and finds replaced chunked values; unprocessed items are resent with backoff until
the operation deadline, then reported per key as ``BackendUnavailable``. A
``put_many(..., existed=False)`` reads nothing: each of its unconditional puts is a
PutItem that returns the old item (no read units; it finds replaced chunked values
itself), the same write units as a BatchWriteItem of the same items but one request
per key. With
``blind_batch_puts=true`` the unconditional puts of a batch skip that read, one round
trip less, and report ``existed=False``; the store then refuses values over 390,000
bytes, so that it never writes a chunked value (deletes still read first, their
``existed`` stays exact). Set it on every store of a table that holds no chunked
values: a blind put that replaces one leaves its chunk items unreferenced.
``get_many`` is BatchGetItem in groups of 100, deduplicated. ``transact`` is one
TransactWriteItems (at most 100 ops; several ops on one key collapse to their final
effect, each conditioned on the state read at the start, and replanned if that
state changed). Throttling, 5xx answers and lost connections are retried with
capped exponential backoff and jitter inside the operation deadline; an unreachable
endpoint raises ``BackendUnavailable`` within it.

**Limits.** Scans read the index, which DynamoDB keeps eventually consistent: a record
written a moment ago may be missing from a scan (``get`` with ``consistency="strong"``
is not affected). Namespace and record id together take at most 2048 UTF-8 bytes, and
an item key starting with U+0001 at most 1023. A process that dies between writing a
large value's chunks and switching its manifest leaves unreferenced chunk items
(removed by TTL when the value had one); so can an unconditional batch write racing a
concurrent large write to the same key.
"""

from prism.backends.dynamodb.backend import DynamoDBBackend

__all__ = ["DynamoDBBackend"]
