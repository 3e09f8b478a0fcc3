"""The table's DDL and every SQL statement of the PostgreSQL backend, built once per table name."""

from __future__ import annotations

import re

from prism.errors import InvalidArgument

__all__ = [
    "BATCH_UNIFORM",
    "DEFAULT_TABLE",
    "Statements",
    "bucket_ddl",
    "bucket_table",
    "ddl",
    "feed_channel",
    "feed_ddl",
    "feed_drop_ddl",
    "feed_ns_floor_ddl",
    "feed_table",
    "prefix_end",
]

DEFAULT_TABLE = "prism_kv"
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,50}")

_LIVE = "(expires_at IS NULL OR expires_at > now())"
_COLUMNS = "value, etag, expires_at, content_type, updated_at"
_PK = "namespace = $1 AND record = $2 AND key = $3"
_VALUES = "($1, $2, $3, $4, $5, to_timestamp($6::float8), $7, to_timestamp($8::float8))"
_SET = (
    "value = EXCLUDED.value, etag = EXCLUDED.etag, expires_at = EXCLUDED.expires_at, "
    "content_type = EXCLUDED.content_type, updated_at = EXCLUDED.updated_at"
)
_INSERT = "(namespace, record, key, value, etag, expires_at, content_type, updated_at)"
#: Columns of a batch upsert that are often one value for every row (a flat batch has key "",
#: a batch is stamped with one updated_at): each is sent once when uniform, as an array otherwise.
BATCH_UNIFORM = ("key", "expires_at", "content_type", "updated_at")
_BATCH_PARAMS = ((5, "text"), (6, "float8"), (7, "text"), (8, "float8"))


def _quote_table(table: str) -> tuple[str, str]:
    """The quoted (schema-qualified) table name and the bare name, or InvalidArgument."""
    parts = table.split(".") if isinstance(table, str) else []
    if not 1 <= len(parts) <= 2 or not all(_IDENT.fullmatch(p) for p in parts):
        raise InvalidArgument(
            f"table must be NAME or SCHEMA.NAME of letters, digits and _ (at most 51 each), got {table!r}"
        )
    return ".".join(f'"{p}"' for p in parts), parts[-1]


def ddl(table: str = DEFAULT_TABLE) -> str:
    """The SQL that creates ``table`` and its expiry index (idempotent), for operators to run."""
    quoted, bare = _quote_table(table)
    return (
        f"CREATE TABLE IF NOT EXISTS {quoted} (\n"
        '    namespace    text COLLATE "C" NOT NULL,\n'
        '    record       text COLLATE "C" NOT NULL,\n'
        '    key          text COLLATE "C" NOT NULL,\n'
        "    value        bytea NOT NULL,\n"
        "    etag         text NOT NULL,\n"
        "    expires_at   timestamptz,\n"
        "    content_type text,\n"
        "    updated_at   timestamptz NOT NULL,\n"
        "    PRIMARY KEY (namespace, record, key)\n"
        ");\n"
        f'CREATE INDEX IF NOT EXISTS "{bare}_expires_at" ON {quoted} (expires_at) '
        "WHERE expires_at IS NOT NULL;\n"
    )


def bucket_table(table: str = DEFAULT_TABLE) -> str:
    """The table of shared token buckets that goes with ``table`` (``prism_kv_buckets``)."""
    _quote_table(table)
    return f"{table}_buckets"


def bucket_ddl(table: str = DEFAULT_TABLE) -> str:
    """The SQL that creates the token-bucket table of ``table`` (idempotent), for operators to run."""
    quoted, _ = _quote_table(bucket_table(table))
    return (
        f"CREATE TABLE IF NOT EXISTS {quoted} (\n"
        '    name    text COLLATE "C" PRIMARY KEY,\n'
        "    tokens  float8 NOT NULL,\n"
        "    stamp   float8 NOT NULL,   -- server epoch seconds of the last refill\n"
        "    granted boolean NOT NULL   -- whether the last call took a token\n"
        ");\n"
    )


def feed_table(table: str = DEFAULT_TABLE) -> str:
    """The change-feed table that goes with ``table`` (``prism_kv_changes``)."""
    _quote_table(table)
    return f"{table}_changes"


def feed_channel(table: str = DEFAULT_TABLE) -> str:
    """The NOTIFY channel that wakes the watchers of ``table`` (the payload is the namespace)."""
    _quote_table(table)
    return f"prism_feed:{table}"


def feed_ddl(table: str = DEFAULT_TABLE) -> str:
    """The SQL that creates the change feed of ``table`` (idempotent), for operators to run.

    A deferred constraint trigger logs every row change at commit, in the writing
    transaction, numbered by a sequence (no lock: concurrent commits do not queue).
    Numbers are taken in the order of each key's commits (a key's next writer waits
    for its row lock), but across keys a change may commit after a higher-numbered
    one; readers therefore deliver only up to a number below which nothing can still
    commit (see ``PostgresBackend.read_changes``), so a reader that has seen change N
    has seen every change before it. Feeds created before kept a per-table lock at
    commit instead; running this SQL again replaces their trigger function.
    """
    quoted, bare = _quote_table(table)
    changes, changes_bare = _quote_table(feed_table(table))
    floor, _ = _quote_table(f"{feed_table(table)}_floor")
    seq, _ = _quote_table(f"{feed_table(table)}_seq")
    fn, _ = _quote_table(f"{table}_feed")
    expired = "OLD.expires_at IS NOT NULL AND OLD.expires_at <= now()"
    return (
        f"CREATE SEQUENCE IF NOT EXISTS {seq};\n"
        f"CREATE TABLE IF NOT EXISTS {changes} (\n"
        "    seq       bigint PRIMARY KEY,\n"
        '    namespace text COLLATE "C" NOT NULL,\n'
        '    record    text COLLATE "C" NOT NULL,\n'
        '    key       text COLLATE "C" NOT NULL,\n'
        "    op        text NOT NULL,\n"
        "    etag      text,\n"
        "    at        timestamptz NOT NULL\n"
        ");\n"
        f'CREATE INDEX IF NOT EXISTS "{changes_bare}_ns" ON {changes} (namespace, seq);\n'
        f"CREATE TABLE IF NOT EXISTS {floor} (id int PRIMARY KEY CHECK (id = 1), floor bigint NOT NULL);\n"
        f"INSERT INTO {floor} (id, floor) VALUES (1, 0) ON CONFLICT DO NOTHING;\n"
        + feed_ns_floor_ddl(table)
        + f"CREATE OR REPLACE FUNCTION {fn}() RETURNS trigger LANGUAGE plpgsql AS $feed$\n"
        "BEGIN\n"
        "    IF TG_OP = 'DELETE' THEN\n"
        f"        PERFORM pg_notify('{feed_channel(table)}', OLD.namespace);\n"
        f"        INSERT INTO {changes} VALUES (nextval('{seq}'), OLD.namespace, OLD.record, OLD.key,\n"
        f"            CASE WHEN {expired} THEN 'expire' ELSE 'delete' END,\n"
        f"            CASE WHEN {expired} THEN OLD.etag END,\n"
        f"            CASE WHEN {expired} THEN OLD.expires_at ELSE clock_timestamp() END);\n"
        "    ELSE\n"
        f"        PERFORM pg_notify('{feed_channel(table)}', NEW.namespace);\n"
        f"        INSERT INTO {changes} VALUES (nextval('{seq}'), NEW.namespace, NEW.record, NEW.key,\n"
        "            'put', NEW.etag, clock_timestamp());\n"
        "    END IF;\n"
        "    RETURN NULL;\n"
        "END\n"
        "$feed$;\n"
        f'DROP TRIGGER IF EXISTS "{bare}_feed" ON {quoted};\n'
        f'CREATE CONSTRAINT TRIGGER "{bare}_feed" AFTER INSERT OR UPDATE OR DELETE ON {quoted}\n'
        f"    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION {fn}();\n"
    )


def feed_ns_floor_ddl(table: str = DEFAULT_TABLE) -> str:
    """The SQL that creates the floors of the namespaces given a feed retention of their own."""
    ns_floor, _ = _quote_table(f"{feed_table(table)}_ns_floor")
    return (
        f"CREATE TABLE IF NOT EXISTS {ns_floor} "
        '(namespace text COLLATE "C" PRIMARY KEY, floor bigint NOT NULL);\n'
    )


def feed_drop_ddl(table: str = DEFAULT_TABLE) -> str:
    """The SQL that removes the change feed of ``table`` (its trigger, function and log).

    A table whose feed was created by a ``feed=true`` store keeps logging every write
    until this is run, whatever later stores are opened with.
    """
    quoted, bare = _quote_table(table)
    changes, _ = _quote_table(feed_table(table))
    floor, _ = _quote_table(f"{feed_table(table)}_floor")
    ns_floor, _ = _quote_table(f"{feed_table(table)}_ns_floor")
    seq, _ = _quote_table(f"{feed_table(table)}_seq")
    fn, _ = _quote_table(f"{table}_feed")
    return (
        f'DROP TRIGGER IF EXISTS "{bare}_feed" ON {quoted};\n'
        f"DROP FUNCTION IF EXISTS {fn}();\n"
        f"DROP TABLE IF EXISTS {changes};\n"
        f"DROP TABLE IF EXISTS {floor};\n"
        f"DROP TABLE IF EXISTS {ns_floor};\n"
        f"DROP SEQUENCE IF EXISTS {seq};\n"
    )


class Statements:
    """Every SQL statement the backend runs on one table (static text, so prepared once per connection)."""

    def __init__(self, table: str) -> None:
        t, _ = _quote_table(table)
        self.table = t
        self.get = f"SELECT {_COLUMNS} FROM {t} WHERE {_PK} AND {_LIVE}"
        # Batch lookups: one row per requested address in request order (NULLs where nothing
        # live is stored), each found by one unique-key index probe whatever the planner's
        # statistics say (a LATERAL ... LIMIT 1 subquery is never flattened into a join).
        self.get_flat = _lookup(t, "unnest($2::text[])", "record", "i.record", "''")
        self.get_keys = _lookup(t, "unnest($3::text[])", "key", "$2", "i.key")
        self.get_pairs = _lookup(t, "unnest($2::text[], $3::text[])", "record, key", "i.record", "i.key")
        # An unconditional put is "insert, or replace a live row" (xmax = 0: inserted, so
        # nothing live existed) and, when that finds an expired row, "replace it if still expired"
        # (insert_if_absent); the row's lock makes each answer exact under concurrency.
        self.upsert = (
            f"INSERT INTO {t} AS t {_INSERT} VALUES {_VALUES} "
            f"ON CONFLICT (namespace, record, key) DO UPDATE SET {_SET} "
            "WHERE t.expires_at IS NULL OR t.expires_at > now() RETURNING t.xmax = 0"
        )
        self.insert_if_absent = (
            f"INSERT INTO {t} AS t {_INSERT} VALUES {_VALUES} "
            f"ON CONFLICT (namespace, record, key) DO UPDATE SET {_SET} "
            "WHERE t.expires_at IS NOT NULL AND t.expires_at <= now() RETURNING true"
        )
        self.update_if_match = (
            f"UPDATE {t} SET value = $4, etag = $5, expires_at = to_timestamp($6::float8), "
            "content_type = $7, updated_at = to_timestamp($8::float8) "
            f"WHERE {_PK} AND etag = $9 AND {_LIVE} RETURNING true"
        )
        self.delete = f"DELETE FROM {t} WHERE {_PK} RETURNING {_LIVE}"
        self.delete_if_match = f"DELETE FROM {t} WHERE {_PK} AND etag = $4 AND {_LIVE} RETURNING true"
        self.live = f"SELECT true FROM {t} WHERE {_PK} AND {_LIVE}"
        self.live_for_update = f"SELECT {_LIVE} FROM {t} WHERE {_PK} FOR UPDATE"
        #: Batch upserts by which of BATCH_UNIFORM are one value for the whole batch (bit i set:
        #: column i is passed once instead of as an array).
        self.upsert_many = {mask: _upsert_many(t, mask) for mask in range(1 << len(BATCH_UNIFORM))}
        # Rows are locked in the arrays' order (sorted by the caller), then deleted.
        self.delete_many = (
            "WITH doomed AS (SELECT x.record, x.key FROM unnest($2::text[], $3::text[]) AS i(record, key) "
            f"CROSS JOIN LATERAL (SELECT t.record, t.key FROM {t} t WHERE t.namespace = $1 "
            "AND t.record = i.record AND t.key = i.key LIMIT 1 FOR UPDATE) x) "
            f"DELETE FROM {t} t USING doomed d WHERE t.namespace = $1 AND t.record = d.record "
            "AND t.key = d.key RETURNING t.record, t.key, t.expires_at IS NULL OR t.expires_at > now()"
        )
        self.purge = (
            f"DELETE FROM {t} WHERE ctid = ANY(ARRAY(SELECT ctid FROM {t} WHERE expires_at <= now() "
            "LIMIT $1 FOR UPDATE SKIP LOCKED)) AND expires_at <= now()"
        )
        self.prepare = "SELECT current_setting('server_encoding'), to_regclass($1) IS NOT NULL"
        c, _ = _quote_table(feed_table(table))
        f, _ = _quote_table(f"{feed_table(table)}_floor")
        self.changes = c
        self.feed_head = f"SELECT coalesce(max(seq), 0) FROM {c}"
        seq, _ = _quote_table(f"{feed_table(table)}_seq")
        self.feed_sequence = seq
        # The newest number handed out, then (the subquery's row comes first) a transaction id
        # given in this statement's own transaction: every id given before the number was read
        # is below it. The snapshot below is taken by a later statement.
        self.feed_number_and_bound = (
            "SELECT n, pg_current_xact_id()::text::bigint FROM "
            f"(SELECT coalesce(pg_sequence_last_value('{seq}'::regclass), 0) AS n OFFSET 0) s"
        )
        # The transactions in progress now (xmin:xmax:xip,...), and the newest logged change.
        self.feed_snapshot = f"SELECT pg_current_snapshot()::text, coalesce(max(seq), 0) FROM {c}"
        self.feed_read = {
            bounded: f"SELECT seq, record, key, op, etag, extract(epoch FROM at)::float8 FROM {c} "
            "WHERE namespace = $1 AND seq > $2 AND seq <= $3 AND record >= $4"
            f"{' AND record < $6' if bounded else ''} ORDER BY seq LIMIT $5"
            for bounded in (False, True)
        }
        # The newest change to discard by age, among the oldest $1 (the newest change always stays).
        # Namespaces given a feed retention of their own are listed in the ns_floor table
        # with the newest of their changes discarded; the shared trim leaves them alone.
        n, _ = _quote_table(f"{feed_table(table)}_ns_floor")
        self.feed_ns_floors = n
        own = f"namespace NOT IN (SELECT namespace FROM {n})"
        self.feed_aged = (
            f"SELECT max(seq) FROM (SELECT seq, at FROM {c} WHERE {own} ORDER BY seq LIMIT $1) s "
            "WHERE at < now() - make_interval(secs => $2::float8)"
        )
        self.feed_trim = f"DELETE FROM {c} WHERE seq <= $1 AND {own}"
        self.feed_raise_floor = f"UPDATE {f} SET floor = greatest(floor, $1) WHERE id = 1"
        self.feed_ns_floor = (
            f"SELECT coalesce((SELECT floor FROM {n} WHERE namespace = $1), "
            f"(SELECT floor FROM {f} WHERE id = 1))"
        )
        self.feed_ns_register = (
            f"INSERT INTO {n} (namespace, floor) SELECT $1, floor FROM {f} WHERE id = 1 "
            "ON CONFLICT DO NOTHING"
        )
        self.feed_ns_list = f"SELECT namespace FROM {n}"
        self.feed_ns_beyond = f"SELECT seq FROM {c} WHERE namespace = $1 ORDER BY seq DESC OFFSET $2 LIMIT 1"
        self.feed_ns_aged = (
            f"SELECT max(seq) FROM (SELECT seq, at FROM {c} WHERE namespace = $1 ORDER BY seq LIMIT $2) s "
            "WHERE at < now() - make_interval(secs => $3::float8)"
        )
        self.feed_ns_trim = f"DELETE FROM {c} WHERE namespace = $1 AND seq <= $2"
        self.feed_ns_raise_floor = f"UPDATE {n} SET floor = greatest(floor, $2) WHERE namespace = $1"
        b, _ = _quote_table(bucket_table(table))
        self.buckets = b
        # One token from a shared bucket in one statement: the row lock of the upsert makes
        # concurrent takers queue, the refill is timed by the server's clock (never backwards),
        # and a new bucket starts full (burst) minus the token taken. $1 name, $2 rate, $3 burst.
        self.take_token = (
            f"INSERT INTO {b} AS b (name, tokens, stamp, granted) "
            "VALUES ($1, $3::float8 - 1, extract(epoch FROM clock_timestamp())::float8, true) "
            "ON CONFLICT (name) DO UPDATE SET (tokens, stamp, granted) = ("
            "SELECT CASE WHEN l.level >= 1 THEN l.level - 1 ELSE l.level END, l.now, l.level >= 1 "
            "FROM (SELECT least($3::float8, b.tokens + greatest(0, EXCLUDED.stamp - b.stamp) * $2::float8)"
            " AS level, greatest(b.stamp, EXCLUDED.stamp) AS now) AS l) "
            "RETURNING granted, tokens"
        )
        # Range statements: lower bound inclusive (>=) or after a cursor (>), upper bound or none.
        self.scan: dict[tuple[bool, bool], str] = {}
        self.range: dict[tuple[bool, bool], str] = {}
        for after in (False, True):
            for bounded in (False, True):
                op = ">" if after else ">="
                self.scan[after, bounded] = (
                    f"SELECT DISTINCT record FROM {t} WHERE namespace = $1 AND record {op} $2"
                    f"{' AND record < $4' if bounded else ''} AND {_LIVE} ORDER BY record LIMIT $3"
                )
                self.range[after, bounded] = (
                    f"SELECT key, {_COLUMNS} FROM {t} WHERE namespace = $1 AND record = $2 AND key {op} $3"
                    f"{' AND key < $5' if bounded else ''} AND {_LIVE} ORDER BY key LIMIT $4"
                )
        self.delete_range: dict[bool, str] = {
            bounded: f"WITH gone AS (DELETE FROM {t} WHERE namespace = $1 AND record = $2 AND key >= $3"
            f"{' AND key < $4' if bounded else ''} RETURNING expires_at) "
            f"SELECT count(*) FROM gone WHERE {_LIVE}"
            for bounded in (False, True)
        }


def _lookup(t: str, source: str, names: str, record: str, key: str) -> str:
    return (
        f"SELECT x.* FROM {source} WITH ORDINALITY AS i({names}, n) LEFT JOIN LATERAL "
        f"(SELECT {_COLUMNS} FROM {t} t WHERE t.namespace = $1 AND t.record = {record} "
        f"AND t.key = {key} AND {_LIVE} LIMIT 1) x ON true ORDER BY i.n"
    )


def _upsert_many(t: str, uniform: int) -> str:
    """``upsert`` over rows given as arrays, in the arrays' order (the caller sorts them by key:
    the order every writer locks in, so concurrent batches never deadlock).

    Answers one row: ``inserted`` for each row written, and the written rows' records and
    keys, in one (unspecified) order, so no sort is needed. Rows whose stored item has
    expired are not written; the caller finds them missing and replaces them with
    ``insert_if_absent``.
    """
    arrays = ["$2::text[]", "$3::bytea[]", "$4::text[]"]
    names = ["record", "value", "etag"]
    column: dict[str, str] = {}
    for bit, (name, (number, kind)) in enumerate(zip(BATCH_UNIFORM, _BATCH_PARAMS, strict=True)):
        if uniform & (1 << bit):
            column[name] = f"${number}::{kind}"
        else:
            arrays.append(f"${number}::{kind}[]")
            names.append(name)
            column[name] = f"i.{name}"
    return (
        f"WITH w AS (INSERT INTO {t} AS t {_INSERT} "
        f"SELECT $1, i.record, {column['key']}, i.value, i.etag, to_timestamp({column['expires_at']}), "
        f"{column['content_type']}, to_timestamp({column['updated_at']}) "
        f"FROM unnest({', '.join(arrays)}) AS i({', '.join(names)}) "
        f"ON CONFLICT (namespace, record, key) DO UPDATE SET {_SET} "
        "WHERE t.expires_at IS NULL OR t.expires_at > now() "
        "RETURNING t.record, t.key, t.xmax = 0 AS inserted) "
        "SELECT array_agg(inserted), array_agg(record), array_agg(key) FROM w"
    )


def prefix_end(prefix: str) -> str | None:
    """The smallest string greater than every string starting with ``prefix`` (None: no bound)."""
    while prefix:
        last = ord(prefix[-1])
        if last < 0x10FFFF:
            nxt = 0xE000 if 0xD800 <= last + 1 <= 0xDFFF else last + 1  # skip the surrogates
            return prefix[:-1] + chr(nxt)
        prefix = prefix[:-1]
    return None
