"""Schema, migrations and every SQL statement of the PostgreSQL checkpointers.

Statements are rendered once per schema (identifiers quoted by :mod:`psycopg.sql`) into bytes,
so psycopg can prepare them server-side and no user string ever becomes SQL. Parameters are
always bound: ``%(name)s`` for text and numbers, ``%(name)b`` (binary) for bytea.

Checkpoint ids are stored as ``uuid`` (16 bytes, where their text takes 37), in every column
and index. They travel as text both ways: bound as ``%s::uuid`` (a text parameter the server
parses; no Python ``UUID`` objects on the hot path) and selected as ``::text``, which gives
back the canonical form :func:`~threadline.checkpoint.types.new_checkpoint_id` makes. An id
that is not a UUID would fail that cast, so :mod:`._core` never binds one: it decides what an
unknown id means before asking (see ``_core.is_id``).

Columns are ordered fixed-width first, the most strictly aligned first (8-byte, then 4-byte,
then ``uuid``, which needs no alignment), then variable-width: no row carries padding. The
indexes of checkpoints and versions fill their pages (fillfactor 100): their keys arrive in
ascending order (time-ordered ids, a thread's ``seq``, a channel's next writer) and are never
updated, so the 10% a B-tree keeps free by default when such a page splits would stay unused.

Tables (all in the saver's schema):

``threadline_threads``      one row per thread: times, metadata, the thread-wide ``seq``.
``threadline_heads``        the head checkpoint of each ``(thread_id, ns)``; moved by CAS.
``threadline_checkpoints``  one row per checkpoint; ``refs`` is msgpack ``{channel: ref}``
                            (see ``_core._pack_refs``: writers as 16 bytes).
``threadline_versions``     immutable channel versions: snapshots and deltas (``base``).
``threadline_writes``       pending writes of tasks, keyed ``(thread, ns, checkpoint, task, idx)``.
``threadline_leases``       the writer lease of each thread: owner, epoch, expiry (server clock).
``threadline_migrations``   the schema versions applied.

Lock order, everywhere: a thread's ``leases`` row before its ``heads`` rows, and those before
its ``threads`` row. A commit moves
the head (locking that row) and then bumps the thread's ``seq``; deletions lock or delete the
heads first, so a commit racing a deletion fails its CAS instead of deadlocking or leaving a
head without its checkpoint.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from psycopg import sql

__all__ = [
    "INLINE_ROWS",
    "LATEST_VERSION",
    "MIGRATIONS",
    "Migration",
    "Statements",
    "validate_schema",
    "version_params",
    "write_params",
]

_SCHEMA = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def validate_schema(schema: object) -> str:
    """Return ``schema`` if it is a plain identifier, else raise a ``ValueError`` saying how."""
    if not isinstance(schema, str) or not _SCHEMA.match(schema):
        raise ValueError(
            f"invalid schema name {schema!r}: use letters, digits and '_', starting with a"
            " letter or '_' (at most 63 characters), e.g. schema='threadline'"
        )
    return schema


@dataclass(frozen=True)
class Migration:
    """One schema version: statements run in order, in one transaction, under the setup lock."""

    version: int
    description: str
    statements: tuple[str, ...]


# Statements use {name} for quoted identifiers (see Statements._names). Versions are numbered
# 1, 2, 3, ... in order. Append new versions; never edit a released one.
MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "threads, heads, checkpoints, versions, writes",
        (
            """CREATE TABLE IF NOT EXISTS {threads} (
                created_at float8 NOT NULL,
                updated_at float8 NOT NULL,
                seq int8 NOT NULL,
                expires_at float8,
                thread_id text PRIMARY KEY,
                metadata bytea
            ) WITH (fillfactor = 70)""",
            """CREATE TABLE IF NOT EXISTS {heads} (
                head uuid NOT NULL,
                thread_id text NOT NULL,
                ns text NOT NULL,
                PRIMARY KEY (thread_id, ns)
            ) WITH (fillfactor = 70)""",
            """CREATE TABLE IF NOT EXISTS {checkpoints} (
                seq int8 NOT NULL,
                step int8 NOT NULL,
                created_at float8 NOT NULL,
                id uuid NOT NULL,
                parent_id uuid,
                thread_id text NOT NULL,
                ns text NOT NULL,
                source text NOT NULL,
                metadata bytea NOT NULL,
                tasks bytea NOT NULL,
                refs bytea NOT NULL,
                PRIMARY KEY (id, thread_id) WITH (fillfactor = 100)
            )""",
            """CREATE INDEX IF NOT EXISTS threadline_checkpoints_ns_seq
                ON {checkpoints} (thread_id, ns, seq) WITH (fillfactor = 100)""",
            """CREATE TABLE IF NOT EXISTS {versions} (
                writer uuid NOT NULL,
                base uuid,
                thread_id text NOT NULL,
                channel text NOT NULL,
                data bytea NOT NULL,
                PRIMARY KEY (thread_id, channel, writer) WITH (fillfactor = 100)
            )""",
            """CREATE TABLE IF NOT EXISTS {writes} (
                idx int4 NOT NULL,
                checkpoint_id uuid NOT NULL,
                thread_id text NOT NULL,
                ns text NOT NULL,
                task_id text NOT NULL,
                channel text NOT NULL,
                data bytea NOT NULL,
                PRIMARY KEY (thread_id, ns, checkpoint_id, task_id, idx)
            )""",
        ),
    ),
    Migration(
        2,
        "writer leases",
        (
            # One row per thread that ever had a lease; kept when released (owner NULL) and
            # when the thread is deleted, so epochs only grow (see checkpoint/lease.py).
            """CREATE TABLE IF NOT EXISTS {leases} (
                epoch int8 NOT NULL,
                expires_at float8 NOT NULL,
                thread_id text PRIMARY KEY,
                owner text
            ) WITH (fillfactor = 70)""",
        ),
    ),
)

LATEST_VERSION = MIGRATIONS[-1].version

_TABLES = {
    "threads": "threadline_threads",
    "heads": "threadline_heads",
    "checkpoints": "threadline_checkpoints",
    "versions": "threadline_versions",
    "writes": "threadline_writes",
    "leases": "threadline_leases",
    "migrations": "threadline_migrations",
}

_CKPT_COLS = (
    "c.ns, c.id::text, c.parent_id::text, c.seq, c.step, c.source, c.created_at, c.metadata,"
    " c.tasks, c.refs"
)
"""The columns :func:`_core.checkpoint_row` converts, in its order (``c`` = checkpoints)."""

_THREAD_COLS = (
    "t.thread_id, h.head::text, t.metadata, t.created_at, t.updated_at, t.expires_at"
    " FROM {threads} t LEFT JOIN {heads} h ON h.thread_id = t.thread_id AND h.ns = ''"
)

# ---------------------------------------------------------------------- hot path

# Rows travel inline as scalar parameters (``VALUES (%(c0)s, ...), ...``) when there are few of
# them, which spares psycopg its comparatively slow array adaptation on the hot path, and as
# arrays (``unnest``) when there are many. Statement text depends only on the row count, so
# each variant is prepared once per connection.
INLINE_ROWS = 8

_VERSION_COLS = ("channel", "writer", "base", "data")
_VERSION_TYPES = ("text", "uuid", "uuid", "bytea")
_WRITE_COLS = ("task_id", "idx", "channel", "data")
_WRITE_TYPES = ("text", "int4", "text", "bytea")


def rows_source(cols: tuple[str, ...], types: tuple[str, ...], n: int) -> str:
    """A FROM item yielding ``n`` rows of ``cols``: inline VALUES for few, unnest for many.

    Parameters are named ``<col>``/``<col><i>``; bytea ones are bound in binary.
    """
    if n <= INLINE_ROWS:
        rows = ", ".join(
            "("
            + ", ".join(
                f"%({c}{i}){'b' if t == 'bytea' else 's'}::{t}" for c, t in zip(cols, types)
            )
            + ")"
            for i in range(n)
        )
        return f"(VALUES {rows}) AS r({', '.join(cols)})"
    arrays = ", ".join(f"%({c}){'b' if t == 'bytea' else 's'}::{t}[]" for c, t in zip(cols, types))
    return f"unnest({arrays}) AS r({', '.join(cols)})"


def row_params(
    cols: tuple[str, ...], rows: list[tuple[object, ...]], params: dict[str, object]
) -> None:
    """Add the parameters :func:`rows_source` names for ``rows`` to ``params``."""
    if len(rows) <= INLINE_ROWS:
        for i, row in enumerate(rows):
            for c, value in zip(cols, row):
                params[f"{c}{i}"] = value
    else:
        for j, c in enumerate(cols):
            params[c] = [row[j] for row in rows]


NOW_DB = "extract(epoch FROM clock_timestamp())::float8"
"""Lease times are the server's clock: every replica then agrees when a lease expired."""

# The lease part of a commit, by LeaseOp mode, as the first CTE (``lease``); the head moves only
# if it yields a row. "acquire" takes a free lease (kept even if the compare-and-swap fails);
# "hold"/"release" lock the row of the holder's epoch (fencing: a takeover bumped it); "check"
# passes only while nobody holds it.
_LEASE_CTE = {
    "acquire": f"""lease AS (
    INSERT INTO {{leases}} AS l (thread_id, owner, epoch, expires_at)
    VALUES (%(tid)s, %(lowner)s, 1, {NOW_DB} + %(lttl)s::float8)
    ON CONFLICT (thread_id) DO UPDATE SET owner = excluded.owner, epoch = l.epoch + 1,
        expires_at = excluded.expires_at
    WHERE l.owner IS NULL OR l.owner = excluded.owner OR l.expires_at <= {NOW_DB}
    RETURNING l.epoch, l.expires_at
), """,
    "hold": """lease AS (
    SELECT epoch, expires_at FROM {leases}
    WHERE thread_id = %(tid)s AND epoch = %(lepoch)s::int8 AND owner IS NOT NULL
    FOR UPDATE
), """,
    "check": f"""lease AS (
    SELECT 0::int8 AS epoch, 0::float8 AS expires_at
    WHERE NOT EXISTS (
        SELECT FROM {{leases}}
        WHERE thread_id = %(tid)s AND owner IS NOT NULL AND expires_at > {NOW_DB}
    )
), """,
}
_LEASE_CTE["release"] = _LEASE_CTE["hold"]

# After the commit landed: renew the holder's lease, or release it.
_LEASE_AFTER = {
    "hold": f"""
, renew AS (
    UPDATE {{leases}} SET expires_at = {NOW_DB} + %(lttl)s::float8
    WHERE thread_id = %(tid)s AND EXISTS (SELECT FROM thr)
    RETURNING expires_at
)""",
    "release": """
, renew AS (
    UPDATE {leases} SET owner = NULL, expires_at = 0
    WHERE thread_id = %(tid)s AND EXISTS (SELECT FROM thr)
    RETURNING expires_at
)""",
}

LEASE_MODES = ("none", "acquire", "hold", "release", "check")


def _commit_tail(n_versions: int, lease: str = "none") -> str:
    versions = (
        ""
        if n_versions == 0
        else f"""
, ver AS (
    INSERT INTO {{versions}} (thread_id, channel, writer, base, data)
    SELECT %(tid)s, r.channel, r.writer, r.base, r.data
    FROM thr, {rows_source(_VERSION_COLS, _VERSION_TYPES, n_versions)}
)"""
    )
    return (
        """
, cp AS (
    INSERT INTO {checkpoints}
        (thread_id, id, ns, parent_id, seq, step, source, created_at, metadata, tasks, refs)
    SELECT %(tid)s, %(id)s::uuid, %(ns)s, %(parent)s::uuid, thr.seq, %(step)s, %(source)s,
        %(now)s::float8, %(cmeta)b::bytea, %(tasks)b::bytea, %(refs)b::bytea
    FROM thr
    UNION ALL
    SELECT %(tid)s, %(bid)s::uuid, %(ns)s, %(bparent)s::uuid, thr.seq - 1, %(bstep)s::int8,
        %(bsource)s::text, %(now)s::float8, %(bcmeta)b::bytea, %(btasks)b::bytea, %(brefs)b::bytea
    FROM thr WHERE %(bid)s::uuid IS NOT NULL
)"""
        + versions
        + _LEASE_AFTER.get(lease, "")
        + _final_select(lease)
    )


def _final_select(lease: str) -> str:
    """One row, always: the new seq (NULL: the head did not move), and the lease's epoch
    (NULL: the lease part failed) and expiry."""
    if lease == "none":
        return "\nSELECT (SELECT seq FROM thr), NULL::int8, NULL::float8\n"
    expires = (
        "(SELECT expires_at FROM renew)"
        if lease in _LEASE_AFTER
        else ("(SELECT expires_at FROM lease)")
    )
    return f"\nSELECT (SELECT seq FROM thr), (SELECT epoch FROM lease), {expires}\n"


# Expected head given: move it by compare-and-swap. Under READ COMMITTED a concurrent writer's
# UPDATE of the same head row makes this one wait, then re-check ``head = expected`` against
# the new row: exactly one of them matches. Everything else is gated on ``cas``.
_COMMIT_MOVE = """
WITH {lease}cas AS (
    UPDATE {heads} SET head = %(id)s::uuid
    WHERE thread_id = %(tid)s AND ns = %(ns)s AND head = %(expected)s::uuid{gate}
    RETURNING 1
), thr AS (
    UPDATE {threads} SET seq = seq + %(n)s::int4, updated_at = %(now)s::float8,
        expires_at = %(exp)s::float8, metadata = COALESCE(%(meta)b::bytea, metadata)
    WHERE thread_id = %(tid)s AND EXISTS (SELECT FROM cas)
    RETURNING seq
)"""

# No expected head: create it; a concurrent creator makes ON CONFLICT skip, so one wins.
_COMMIT_CREATE = """
WITH {lease}cas AS (
    INSERT INTO {heads} (thread_id, ns, head) SELECT %(tid)s, %(ns)s, %(id)s::uuid{where_gate}
    ON CONFLICT (thread_id, ns) DO NOTHING
    RETURNING 1
), thr AS (
    INSERT INTO {threads} AS t (thread_id, created_at, updated_at, expires_at, metadata, seq)
    SELECT %(tid)s, %(now)s::float8, %(now)s::float8, %(exp)s::float8, %(meta)b::bytea,
        %(n)s::int4
    FROM cas
    ON CONFLICT (thread_id) DO UPDATE SET seq = t.seq + excluded.seq,
        updated_at = excluded.updated_at,
        expires_at = excluded.expires_at, metadata = COALESCE(excluded.metadata, t.metadata)
    RETURNING seq
)"""


def commit_sql(create: bool, n_versions: int, lease: str = "none") -> str:
    """The one statement of a commit with ``n_versions`` version rows (``INLINE_ROWS + 1``
    stands for "more": arrays) and the lease part ``lease`` (a :data:`LEASE_MODES`)."""
    head = _COMMIT_CREATE if create else _COMMIT_MOVE
    gated = lease != "none"
    head = (
        head.replace("{lease}", _LEASE_CTE[lease] if gated else "")
        .replace("{gate}", "\n        AND EXISTS (SELECT FROM lease)" if gated else "")
        .replace("{where_gate}", " WHERE EXISTS (SELECT FROM lease)" if gated else "")
    )
    return head + _commit_tail(n_versions, lease)


def version_params(rows: list[tuple[object, ...]], params: dict[str, object]) -> None:
    row_params(_VERSION_COLS, rows, params)


def write_params(rows: list[tuple[object, ...]], params: dict[str, object]) -> None:
    row_params(_WRITE_COLS, rows, params)


def commit_writes_sql(n_rows: int, fenced: bool = False) -> str:
    """Pending writes: the head row is share-locked so no commit moves it until these land.
    ``fenced``: only while the lease of epoch ``%(lepoch)s`` holds (share-locked too)."""
    insert = (
        ""
        if n_rows == 0
        else f"""
, ins AS (
    INSERT INTO {{writes}} (thread_id, ns, checkpoint_id, task_id, idx, channel, data)
    SELECT %(tid)s, %(ns)s, %(cid)s::uuid, r.task_id, r.idx, r.channel, r.data
    FROM chk, {rows_source(_WRITE_COLS, _WRITE_TYPES, n_rows)}
    WHERE chk.thread_exists AND chk.checkpoint_exists AND chk.leased
        AND chk.head IS NOT DISTINCT FROM %(expected)s::uuid
    ON CONFLICT DO NOTHING
)"""
    )
    fence = (
        """
    SELECT 1 FROM {leases}
    WHERE thread_id = %(tid)s AND epoch = %(lepoch)s::int8 AND owner IS NOT NULL FOR SHARE"""
        if fenced
        else "\n    SELECT 1"
    )
    return (
        """
WITH lk AS ("""
        + fence
        + """
), h AS (
    SELECT head FROM {heads} WHERE thread_id = %(tid)s AND ns = %(ns)s FOR SHARE
), chk AS (
    SELECT
        EXISTS (SELECT FROM lk) AS leased,
        (SELECT head FROM h) AS head,
        EXISTS (SELECT FROM {threads} WHERE thread_id = %(tid)s) AS thread_exists,
        EXISTS (
            SELECT FROM {checkpoints}
            WHERE thread_id = %(tid)s AND id = %(cid)s::uuid AND ns = %(ns)s
        ) AS checkpoint_exists
)"""
        + insert
        + """
SELECT head::text, thread_exists, checkpoint_exists, leased FROM chk
"""
    )


HEAD = "SELECT head::text FROM {heads} WHERE thread_id = %s AND ns = %s"

# A commit that builds on a checkpoint other than the head (time travel) runs in a transaction
# that first locks the head row (the order deletions take) and then holds its base checkpoint
# with a key-share lock: a prune deleting it waits for the commit to land (and then sees its
# refs), or deleted it first and the commit finds no row and stores nothing.
LOCK_HEAD = "SELECT FROM {heads} WHERE thread_id = %s AND ns = %s FOR UPDATE"

LOCK_BASE = "SELECT FROM {checkpoints} WHERE thread_id = %s AND id = %s::uuid FOR KEY SHARE"

LEASE = "SELECT owner, epoch, expires_at FROM {leases} WHERE thread_id = %s"

LEASE_ACQUIRE = f"""
WITH got AS (
    INSERT INTO {{leases}} AS l (thread_id, owner, epoch, expires_at)
    VALUES (%(tid)s, %(owner)s, 1, {NOW_DB} + %(ttl)s::float8)
    ON CONFLICT (thread_id) DO UPDATE SET owner = excluded.owner, epoch = l.epoch + 1,
        expires_at = excluded.expires_at
    WHERE l.owner IS NULL OR l.owner = excluded.owner OR l.expires_at <= {NOW_DB}
    RETURNING l.epoch, l.expires_at
)
SELECT true, epoch, %(owner)s::text, expires_at FROM got
UNION ALL
SELECT false, epoch, owner, expires_at FROM {{leases}}
WHERE thread_id = %(tid)s AND NOT EXISTS (SELECT FROM got)
"""

LEASE_RENEW = f"""
UPDATE {{leases}} SET
    expires_at = CASE WHEN %(release)s::bool THEN 0 ELSE {NOW_DB} + %(ttl)s::float8 END,
    owner = CASE WHEN %(release)s::bool THEN NULL ELSE owner END
WHERE thread_id = %(tid)s AND epoch = %(epoch)s::int8 AND owner IS NOT NULL
RETURNING expires_at
"""

CHECKPOINT_SEQ = "SELECT seq FROM {checkpoints} WHERE thread_id = %s AND id = %s::uuid"

# Checkpoint ids are unique per thread; copy_thread keeps them, so the original (the oldest
# thread holding the id) wins. The primary key starts with id, so this is an index lookup.
LOCATE = """
SELECT c.thread_id, c.ns
FROM {checkpoints} c JOIN {threads} t ON t.thread_id = c.thread_id
WHERE c.id = %s::uuid
ORDER BY t.created_at, c.thread_id
LIMIT 1
"""

# LEFT JOIN: a head naming a checkpoint that is not stored is corrupt, not an empty thread.
READ_HEAD = f"""
SELECT {_CKPT_COLS}, h.head::text
FROM {{heads}} h LEFT JOIN {{checkpoints}} c ON c.thread_id = h.thread_id AND c.id = h.head
WHERE h.thread_id = %s AND h.ns = %s
"""

READ_CHECKPOINT = f"""
SELECT {_CKPT_COLS} FROM {{checkpoints}} c WHERE c.thread_id = %s AND c.id = %s::uuid AND c.ns = %s
"""

# Keys first (small rows, deduplicated by UNION, so a cycle of bases ends), then the data of
# each version once; at most %(cap)s keys (a chain longer than any threadline writes is
# refused by the reader). Each step of the walk is a LATERAL lookup with LIMIT 1, which can
# only run as one primary-key probe per key: a generic plan (prepared statements) otherwise
# may join the work table by hash against all of the thread's versions at every step, which
# took minutes for a chain of 14,000 deltas once the table's statistics said it was small
# (as they do after a prune).
_WALK = """
WITH RECURSIVE k(channel, writer) AS (
    SELECT * FROM unnest(%(channels)s::text[], %(writers)s::uuid[])
    UNION
    SELECT b.channel, b.base
    FROM k, LATERAL (
        SELECT v.channel, v.base FROM {versions} v
        WHERE v.thread_id = %(tid)s AND v.channel = k.channel AND v.writer = k.writer
        LIMIT 1
    ) b
    WHERE b.base IS NOT NULL
)"""

READ_VERSIONS = (
    _WALK
    + """
SELECT d.channel, d.writer::text, d.base::text, d.data
FROM (SELECT * FROM k LIMIT %(cap)s) k, LATERAL (
    SELECT v.channel, v.writer, v.base, v.data FROM {versions} v
    WHERE v.thread_id = %(tid)s AND v.channel = k.channel AND v.writer = k.writer
    LIMIT 1
) d
"""
)

READ_WRITES = """
SELECT task_id, idx, channel, data FROM {writes}
WHERE thread_id = %s AND ns = %s AND checkpoint_id = %s::uuid
"""

READ_WRITES_MANY = """
SELECT ns, checkpoint_id::text, task_id, idx, channel, data FROM {writes}
WHERE thread_id = %s AND ns = ANY(%s::text[]) AND checkpoint_id = ANY(%s::uuid[])
"""

PAGE_NS = f"""
SELECT {_CKPT_COLS} FROM {{checkpoints}} c
WHERE c.thread_id = %s AND c.ns = %s AND c.seq < %s
ORDER BY c.seq DESC LIMIT %s
"""

PAGE_ALL = f"""
SELECT {_CKPT_COLS} FROM {{checkpoints}} c
WHERE c.thread_id = %s AND c.seq < %s
ORDER BY c.seq DESC LIMIT %s
"""

# ---------------------------------------------------------------------- thread operations

LOCK_HEADS = "SELECT FROM {heads} WHERE thread_id = ANY(%s::text[]) FOR UPDATE"

DELETE_HEADS = "DELETE FROM {heads} WHERE thread_id = ANY(%s::text[])"

DELETE_REST = """
WITH c AS (DELETE FROM {checkpoints} WHERE thread_id = ANY(%(tids)s::text[])),
v AS (DELETE FROM {versions} WHERE thread_id = ANY(%(tids)s::text[])),
w AS (DELETE FROM {writes} WHERE thread_id = ANY(%(tids)s::text[]))
DELETE FROM {threads} WHERE thread_id = ANY(%(tids)s::text[])
"""

EXPIRED = "SELECT thread_id FROM {threads} WHERE expires_at <= %s::float8"

DELETE_EXPIRED = """
DELETE FROM {threads} WHERE thread_id = ANY(%s::text[]) AND expires_at <= %s::float8
RETURNING thread_id
"""

DELETE_THREAD_ROWS = """
WITH h AS (DELETE FROM {heads} WHERE thread_id = ANY(%(tids)s::text[])),
c AS (DELETE FROM {checkpoints} WHERE thread_id = ANY(%(tids)s::text[])),
v AS (DELETE FROM {versions} WHERE thread_id = ANY(%(tids)s::text[]))
DELETE FROM {writes} WHERE thread_id = ANY(%(tids)s::text[])
"""

THREADS_EXIST = """
SELECT EXISTS (SELECT FROM {threads} WHERE thread_id = %(src)s),
       EXISTS (SELECT FROM {threads} WHERE thread_id = %(dst)s)
"""

# One statement, so every table is copied from the same snapshot.
COPY_THREAD = """
WITH t AS (
    INSERT INTO {threads} (thread_id, created_at, updated_at, expires_at, metadata, seq)
    SELECT %(dst)s, %(now)s::float8, %(now)s::float8, expires_at, metadata, seq
    FROM {threads} WHERE thread_id = %(src)s
    RETURNING 1
), h AS (
    INSERT INTO {heads} (thread_id, ns, head)
    SELECT %(dst)s, ns, head FROM {heads} WHERE thread_id = %(src)s
), c AS (
    INSERT INTO {checkpoints}
        (thread_id, id, ns, parent_id, seq, step, source, created_at, metadata, tasks, refs)
    SELECT %(dst)s, id, ns, parent_id, seq, step, source, created_at, metadata, tasks, refs
    FROM {checkpoints} WHERE thread_id = %(src)s
), v AS (
    INSERT INTO {versions} (thread_id, channel, writer, base, data)
    SELECT %(dst)s, channel, writer, base, data FROM {versions} WHERE thread_id = %(src)s
), w AS (
    INSERT INTO {writes} (thread_id, ns, checkpoint_id, task_id, idx, channel, data)
    SELECT %(dst)s, ns, checkpoint_id, task_id, idx, channel, data
    FROM {writes} WHERE thread_id = %(src)s
)
SELECT count(*) FROM t
"""

LIST_THREADS = f"""
SELECT {_THREAD_COLS}
ORDER BY t.updated_at DESC, t.thread_id DESC
LIMIT %s OFFSET %s
"""

LIST_THREADS_AFTER = f"""
SELECT {_THREAD_COLS}
WHERE (t.updated_at, t.thread_id) < (%s::float8, %s::text)
ORDER BY t.updated_at DESC, t.thread_id DESC
LIMIT %s
"""

# Prune works in batches, each its own short transaction, and never locks the thread's row or
# its heads: a turn running meanwhile commits as usual. A commit that builds on an older
# checkpoint key-share locks it (LOCK_BASE), so a batch deleting that checkpoint waits for the
# commit, or deleted it first and the commit stores nothing. The head is never deleted: it
# ranks first in its namespace.

# Per namespace, the seq of its keep_last-th newest checkpoint: older ones go. Checkpoints
# committed later are newer still, so the cutoffs stay right while prune runs.
PRUNE_CUTOFFS = """
SELECT ns, seq FROM (
    SELECT ns, seq, row_number() OVER (PARTITION BY ns ORDER BY seq DESC) AS rn
    FROM {checkpoints} WHERE thread_id = %(tid)s
) r WHERE rn = %(keep)s
"""

# One batch: the oldest checkpoints below the cutoff, with their pending writes. Never a
# head: a rewind (REWIND_*) may have made an old checkpoint the head since the cutoffs were
# read. The heads are read key-share locked, which waits for a rewind in progress (it holds
# them FOR UPDATE) and then sees the heads it set; commits' head updates do not conflict.
PRUNE_CHECKPOINTS = """
WITH doomed AS (
    SELECT id FROM {checkpoints}
    WHERE thread_id = %(tid)s AND ns = %(ns)s AND seq < %(cutoff)s
      AND id NOT IN (SELECT head FROM {heads} WHERE thread_id = %(tid)s FOR KEY SHARE)
    ORDER BY seq LIMIT %(batch)s
), dc AS (
    DELETE FROM {checkpoints} c USING doomed d
    WHERE c.thread_id = %(tid)s AND c.id = d.id
    RETURNING c.id, c.refs
), dw AS (
    DELETE FROM {writes} w USING dc
    WHERE w.thread_id = %(tid)s AND w.ns = %(ns)s AND w.checkpoint_id = dc.id
)
SELECT id::text, refs FROM dc
"""

# The refs of the checkpoints that remain, read after the batches above: a page at a time.
REMAINING_REFS = """
SELECT id::text, refs, seq FROM {checkpoints}
WHERE thread_id = %(tid)s AND seq > %(after)s ORDER BY seq LIMIT %(batch)s
"""

# Every version the remaining checkpoints' refs reach through base chains (keys only).
LIVE_VERSIONS = (
    _WALK
    + """
SELECT channel, writer::text FROM k
"""
)

# One batch of versions, by key: ones the deleted checkpoints wrote and no remaining one reaches.
PRUNE_VERSIONS = """
DELETE FROM {versions} v
USING unnest(%(channels)s::text[], %(writers)s::uuid[]) AS d(channel, writer)
WHERE v.thread_id = %(tid)s AND v.channel = d.channel AND v.writer = d.writer
"""

# A rewind is one transaction: the lease row (REWIND_LEASE_BUSY, or REWIND_LEASE_HELD for a
# holder, renewed or released by LEASE_RENEW at the end), then every head row of the thread
# (LOCK_HEADS, FOR UPDATE: commits, writes, deletions and prune batches of the thread wait),
# then its row (REWIND_TOUCH), in the order commits take them; then the deletions, and each
# namespace's head moves to its newest checkpoint left.

REWIND_LEASE_BUSY = f"""
SELECT owner, epoch, expires_at FROM {{leases}}
WHERE thread_id = %s AND owner IS NOT NULL AND expires_at > {NOW_DB}
"""

REWIND_LEASE_HELD = """
SELECT FROM {leases} WHERE thread_id = %s AND epoch = %s::int8 AND owner IS NOT NULL FOR UPDATE
"""

REWIND_TOUCH = """
UPDATE {threads} SET updated_at = %s::float8, expires_at = %s::float8 WHERE thread_id = %s
"""

REWIND_TARGET = """
SELECT seq FROM {checkpoints} WHERE thread_id = %s AND id = %s::uuid AND ns = %s
"""

REWIND_CHECKPOINTS = """
DELETE FROM {checkpoints} WHERE thread_id = %s AND seq > %s RETURNING id::text, ns, refs
"""

REWIND_WRITES = """
DELETE FROM {writes} w
USING unnest(%(namespaces)s::text[], %(ids)s::uuid[]) AS d(ns, id)
WHERE w.thread_id = %(tid)s AND w.ns = d.ns AND w.checkpoint_id = d.id
"""

REWIND_TARGET_WRITES = """
DELETE FROM {writes} w
WHERE w.thread_id = %(tid)s AND w.ns = %(ns)s AND w.checkpoint_id = %(id)s::uuid
  AND (w.task_id, w.idx) NOT IN (
    SELECT * FROM unnest(%(tasks)s::text[], %(idxs)s::int4[])
  )
"""

REWIND_EMPTY_HEADS = """
DELETE FROM {heads} h
WHERE h.thread_id = %(tid)s AND h.ns = ANY(%(namespaces)s::text[])
  AND NOT EXISTS (SELECT FROM {checkpoints} c WHERE c.thread_id = h.thread_id AND c.ns = h.ns)
"""

REWIND_HEADS = """
UPDATE {heads} h SET head = (
    SELECT c.id FROM {checkpoints} c
    WHERE c.thread_id = h.thread_id AND c.ns = h.ns ORDER BY c.seq DESC LIMIT 1
)
WHERE h.thread_id = %(tid)s AND h.ns = ANY(%(namespaces)s::text[])
"""

# ---------------------------------------------------------------------- setup

SETUP_LOCK = "SELECT pg_advisory_xact_lock(hashtext(%s))"

CREATE_SCHEMA = "CREATE SCHEMA IF NOT EXISTS {schema}"

CREATE_MIGRATIONS = """
CREATE TABLE IF NOT EXISTS {migrations} (
    version int4 PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""

MIGRATIONS_EXIST = """
SELECT FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %s AND c.relname = 'threadline_migrations'
"""

SCHEMA_EXISTS = "SELECT FROM pg_catalog.pg_namespace WHERE nspname = %s"

SCHEMA_VERSION = "SELECT coalesce(max(version), 0) FROM {migrations}"

RECORD_VERSION = "INSERT INTO {migrations} (version) VALUES (%s)"


class Statements:
    """Every statement above, rendered for one schema."""

    def __init__(self, schema: str, migrations: tuple[Migration, ...] = MIGRATIONS) -> None:
        self.schema = validate_schema(schema)
        if [m.version for m in migrations] != list(range(1, len(migrations) + 1)):
            raise ValueError("migrations must be numbered 1, 2, 3, ... in order")
        names: dict[str, sql.Composable] = {
            key: sql.Identifier(schema, table) for key, table in _TABLES.items()
        }
        names["schema"] = sql.Identifier(schema)
        self._names = names

        def r(text: str) -> bytes:
            return self.render(text)

        # Variants by row count: 0..INLINE_ROWS inline, INLINE_ROWS + 1 for "more" (arrays).
        sizes = range(INLINE_ROWS + 2)
        self.commit_move = [r(commit_sql(False, n)) for n in sizes]
        self.commit_create = [r(commit_sql(True, n)) for n in sizes]
        self.commit_writes = [r(commit_writes_sql(n)) for n in sizes]
        self.commit_writes_fenced = [r(commit_writes_sql(n, True)) for n in sizes]
        self._leased_commits: dict[tuple[bool, int, str], bytes] = {}
        self.head = r(HEAD)
        self.lock_head = r(LOCK_HEAD)
        self.lock_base = r(LOCK_BASE)
        self.lease = r(LEASE)
        self.lease_acquire = r(LEASE_ACQUIRE)
        self.lease_renew = r(LEASE_RENEW)
        self.checkpoint_seq = r(CHECKPOINT_SEQ)
        self.locate = r(LOCATE)
        self.read_head = r(READ_HEAD)
        self.read_checkpoint = r(READ_CHECKPOINT)
        self.read_versions = r(READ_VERSIONS)
        self.read_writes = r(READ_WRITES)
        self.read_writes_many = r(READ_WRITES_MANY)
        self.page_ns = r(PAGE_NS)
        self.page_all = r(PAGE_ALL)
        self.lock_heads = r(LOCK_HEADS)
        self.delete_heads = r(DELETE_HEADS)
        self.delete_rest = r(DELETE_REST)
        self.expired = r(EXPIRED)
        self.delete_expired = r(DELETE_EXPIRED)
        self.delete_thread_rows = r(DELETE_THREAD_ROWS)
        self.threads_exist = r(THREADS_EXIST)
        self.copy_thread = r(COPY_THREAD)
        self.list_threads = r(LIST_THREADS)
        self.list_threads_after = r(LIST_THREADS_AFTER)
        self.prune_cutoffs = r(PRUNE_CUTOFFS)
        self.prune_checkpoints = r(PRUNE_CHECKPOINTS)
        self.remaining_refs = r(REMAINING_REFS)
        self.live_versions = r(LIVE_VERSIONS)
        self.prune_versions = r(PRUNE_VERSIONS)
        self.rewind_lease_busy = r(REWIND_LEASE_BUSY)
        self.rewind_lease_held = r(REWIND_LEASE_HELD)
        self.rewind_touch = r(REWIND_TOUCH)
        self.rewind_target = r(REWIND_TARGET)
        self.rewind_checkpoints = r(REWIND_CHECKPOINTS)
        self.rewind_writes = r(REWIND_WRITES)
        self.rewind_target_writes = r(REWIND_TARGET_WRITES)
        self.rewind_empty_heads = r(REWIND_EMPTY_HEADS)
        self.rewind_heads = r(REWIND_HEADS)
        self.setup_lock = r(SETUP_LOCK)
        self.create_schema = r(CREATE_SCHEMA)
        self.schema_exists = r(SCHEMA_EXISTS)
        self.create_migrations = r(CREATE_MIGRATIONS)
        self.migrations_exist = r(MIGRATIONS_EXIST)
        self.schema_version = r(SCHEMA_VERSION)
        self.record_version = r(RECORD_VERSION)
        self.migrations: dict[int, tuple[bytes, ...]] = {
            m.version: tuple(r(s) for s in m.statements) for m in migrations
        }
        self.latest_version = migrations[-1].version

    def commit(self, create: bool, n_versions: int, lease: str) -> bytes:
        """The commit statement for a row count variant and a lease mode (rendered once)."""
        if lease == "none":
            return (self.commit_create if create else self.commit_move)[n_versions]
        key = (create, n_versions, lease)
        statement = self._leased_commits.get(key)
        if statement is None:
            statement = self._leased_commits[key] = self.render(
                commit_sql(create, n_versions, lease)
            )
        return statement

    def render(self, text: str) -> bytes:
        """``text`` with ``{name}`` replaced by quoted identifiers, as bytes for psycopg."""
        return sql.SQL(text).format(**self._names).as_string(None).encode()

    @property
    def lock_key(self) -> str:
        """The text whose hash names the advisory lock that serializes setup of this schema."""
        return f"threadline.setup:{self.schema}"
