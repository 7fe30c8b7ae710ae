"""Schema, migrations, statements and procedures shared by the sync and async SQLite savers.

Every primitive is written once, as a *procedure*: a generator that yields :class:`Step`\\ s (a
statement and its parameters) and receives each statement's rows back. :func:`drive` runs a
procedure to completion on a plain :class:`sqlite3.Connection`, inside ``BEGIN IMMEDIATE`` when
it writes. :class:`~threadline.checkpoint.sqlite.SqliteSaver` calls it under a lock;
:class:`~threadline.checkpoint.sqlite.aio.AsyncSqliteSaver` calls the very same function in
aiosqlite's worker thread, so a primitive costs one hop to that thread, and a transaction can
never interleave with other work on the connection nor be left half-open by a cancelled task.

Checkpoint ids are stored as their 16 bytes, not as 36 characters of text: they fill several
columns and index keys, where the text form cost 3.5% of the benchmark's file. Procedures
convert at their boundary (:func:`id_key`, :func:`id_blob`, :func:`id_text`), so rows and
everything above them see the canonical string ids.
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar

from ...errors import (
    CorruptCheckpointError,
    SchemaMissingError,
    SchemaVersionError,
    ThreadlineError,
    ThreadNotFoundError,
)
from ..base import (
    BaseCheckpointSaver,
    base_gone_error,
    borrowed_base,
    conflict_error,
    metadata_matches,
    missing_head_error,
    versions_written,
)
from ..encoding import chain_rows_cap
from ..lease import Lease, LeaseOp, LeaseRow, LeaseState, busy_error, lease_lost, take
from ..types import (
    CheckpointRow,
    ThreadInfo,
    VersionRef,
    VersionRow,
    WriteKeys,
    WriteRow,
    to_datetime,
)

T = TypeVar("T")

#: Checkpoints per page when streaming a thread's history (keyset pagination on ``seq``).
PAGE = 100
#: Threads per page when ``list_threads`` filters on decoded metadata.
THREAD_PAGE = 500
#: Oldest SQLite with everything used here (``RETURNING``, upsert, window functions, JSON).
MIN_SQLITE = (3, 35, 0)
SYNCHRONOUS_MODES = ("OFF", "NORMAL", "FULL", "EXTRA")

_NO_SEQ = (1 << 63) - 1  # "before" bound meaning "no bound"


class Step(NamedTuple):
    """One statement of a procedure. ``many``: ``params`` is a list of rows (executemany)."""

    sql: str
    params: Any = ()
    many: bool = False


Rows = list[tuple[Any, ...]]
Proc = Generator[Step, Rows, T]


def drive(conn: sqlite3.Connection, proc: Proc[T], write: bool) -> T:
    """Run ``proc`` on ``conn``; when ``write``, as one ``BEGIN IMMEDIATE`` transaction.

    Used by both savers (the async one runs it in aiosqlite's thread). Rolls back on any error.
    """
    cur = conn.cursor()
    cur.row_factory = None  # plain tuples, whatever the connection's row_factory
    try:
        if write:
            cur.execute("BEGIN IMMEDIATE")  # the write lock, before reading what we compare
        rows: Any = None
        while True:
            try:
                step = proc.send(rows)
            except StopIteration as stop:
                result: T = stop.value
                break
            if step.many:
                cur.executemany(step.sql, step.params)
                rows = []
            else:
                rows = cur.execute(step.sql, step.params).fetchall()
        if write:
            conn.commit()
        return result
    except LeaseKept as kept:
        conn.commit()  # the lease taken stays taken; nothing else was written
        raise kept.error from None
    except BaseException:
        if write and conn.in_transaction:
            conn.rollback()
        raise
    finally:
        proc.close()
        cur.close()


# ---------------------------------------------------------------------- schema and migrations

MIGRATIONS_TABLE = """
CREATE TABLE IF NOT EXISTS threadline_migrations (
    version INTEGER PRIMARY KEY,
    applied_at REAL NOT NULL
)"""

_V1 = (
    # One row per thread. seq counts commits across all namespaces.
    """CREATE TABLE threads (
        thread_id TEXT NOT NULL PRIMARY KEY,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        expires_at REAL,
        seq INTEGER NOT NULL,
        metadata BLOB
    ) WITHOUT ROWID""",
    "CREATE INDEX threads_by_updated ON threads (updated_at)",
    "CREATE INDEX threads_by_expiry ON threads (expires_at) WHERE expires_at IS NOT NULL",
    # The checkpoint "latest" means, per (thread, namespace): moved only by compare-and-swap.
    # Every checkpoint id (checkpoint_id, parent_id, writer, base) is a UUID's 16 bytes.
    """CREATE TABLE heads (
        thread_id TEXT NOT NULL,
        ns TEXT NOT NULL,
        checkpoint_id BLOB NOT NULL,
        PRIMARY KEY (thread_id, ns)
    ) WITHOUT ROWID""",
    # refs: JSON {channel: [writer, snapshot_bytes, chain_bytes]}, readable by SQL (prune);
    # writer is hex(writer) (32 characters, what SQL's hex() gives), or "" for the checkpoint
    # itself (most channels a step writes): see encode_refs.
    # Two b-trees besides the table, to keep a commit's page writes few: the key starts with
    # checkpoint_id so it also finds the thread holding an id (forks across threads); the
    # index serves history pages per namespace, and every by-thread scan or delete.
    """CREATE TABLE checkpoints (
        thread_id TEXT NOT NULL,
        checkpoint_id BLOB NOT NULL,
        ns TEXT NOT NULL,
        parent_id BLOB,
        seq INTEGER NOT NULL,
        step INTEGER NOT NULL,
        source TEXT NOT NULL,
        created_at REAL NOT NULL,
        refs TEXT NOT NULL,
        metadata BLOB NOT NULL,
        tasks BLOB NOT NULL,
        PRIMARY KEY (checkpoint_id, thread_id)
    )""",
    "CREATE INDEX checkpoints_by_seq ON checkpoints (thread_id, ns, seq)",
    # Immutable channel versions: a snapshot (base NULL) or a delta on (channel, base).
    # data last, so reading base never touches a large value's overflow pages.
    """CREATE TABLE versions (
        thread_id TEXT NOT NULL,
        channel TEXT NOT NULL,
        writer BLOB NOT NULL,
        base BLOB,
        data BLOB NOT NULL,
        PRIMARY KEY (thread_id, channel, writer)
    )""",
    # task_id stays text: pending writes rarely outlive their step, so it weighs little.
    """CREATE TABLE writes (
        thread_id TEXT NOT NULL,
        ns TEXT NOT NULL,
        checkpoint_id BLOB NOT NULL,
        task_id TEXT NOT NULL,
        idx INTEGER NOT NULL,
        channel TEXT NOT NULL,
        data BLOB NOT NULL,
        PRIMARY KEY (thread_id, ns, checkpoint_id, task_id, idx)
    )""",
)

_V2 = (
    # Writer leases (see checkpoint/lease.py): one row per thread that ever had one; kept when
    # released (owner NULL) and when the thread is deleted, so epochs only grow.
    """CREATE TABLE leases (
        thread_id TEXT NOT NULL PRIMARY KEY,
        epoch INTEGER NOT NULL,
        expires_at REAL NOT NULL,
        owner TEXT
    ) WITHOUT ROWID""",
)

#: Ordered ``(version, statements)``; append a new entry to change the schema. Each migration
#: runs in the same ``BEGIN IMMEDIATE`` transaction that records it.
MIGRATIONS: tuple[tuple[int, tuple[str, ...]], ...] = ((1, _V1), (2, _V2))
SCHEMA_VERSION = MIGRATIONS[-1][0]


@dataclass(frozen=True)
class Settings:
    """Connection settings and setup policy, validated once at construction."""

    synchronous: str
    busy_timeout_ms: int
    auto_setup: bool

    @classmethod
    def make(cls, synchronous: str, busy_timeout: float, auto_setup: bool) -> Settings:
        mode = str(synchronous).upper()
        if mode not in SYNCHRONOUS_MODES:
            raise ValueError(
                f"synchronous must be one of {', '.join(SYNCHRONOUS_MODES)}, got {synchronous!r}"
            )
        if busy_timeout < 0:
            raise ValueError(f"busy_timeout must be >= 0 seconds, got {busy_timeout!r}")
        return cls(mode, int(busy_timeout * 1000), auto_setup)


PAGE_SIZE = 8192


def _configure(settings: Settings) -> Proc[None]:
    yield Step(f"PRAGMA busy_timeout = {settings.busy_timeout_ms}")
    rows = yield Step("PRAGMA journal_mode")
    if rows[0][0].lower() not in ("wal", "memory"):
        # Before a new file gets its first page: 8 KiB pages hold seven ~1 KiB delta rows
        # where 4 KiB pages hold three (6% smaller files). A no-op on an existing database.
        yield Step(f"PRAGMA page_size = {PAGE_SIZE}")
        yield Step("PRAGMA journal_mode = WAL")  # persistent: once per database file
    yield Step(f"PRAGMA synchronous = {settings.synchronous}")


def _configure_patiently(conn: sqlite3.Connection, settings: Settings) -> None:
    """Run :func:`_configure`, retrying "database is locked" until ``busy_timeout``.

    Switching a new file to WAL needs an exclusive lock, and SQLite reports a competing
    switch (several processes opening a new file at once) as busy without calling the busy
    handler; so wait here instead.
    """
    deadline = time.monotonic() + settings.busy_timeout_ms / 1000
    delay = 0.001
    while True:
        try:
            drive(conn, _configure(settings), write=False)
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def _schema_version() -> Proc[int | None]:
    rows = yield Step(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'threadline_migrations'"
    )
    if not rows:
        return None
    rows = yield Step("SELECT coalesce(max(version), 0) FROM threadline_migrations")
    return int(rows[0][0])


def _migrate() -> Proc[int]:
    yield Step(MIGRATIONS_TABLE)
    rows = yield Step("SELECT coalesce(max(version), 0) FROM threadline_migrations")
    current = int(rows[0][0])
    _check_not_newer(current)
    for version, statements in MIGRATIONS:
        if version <= current:
            continue
        for sql in statements:
            yield Step(sql)
        yield Step(
            "INSERT INTO threadline_migrations (version, applied_at) VALUES (?, ?)",
            (version, time.time()),
        )
    return SCHEMA_VERSION


def _check_not_newer(version: int) -> None:
    if version > SCHEMA_VERSION:
        raise SchemaVersionError(
            f"this SQLite database has threadline schema version {version}, newer than the"
            f" version {SCHEMA_VERSION} this threadline knows; a newer threadline wrote it."
            " Upgrade threadline to open it (never downgrade a database in use)."
        )


def prepare(conn: sqlite3.Connection, settings: Settings, force_setup: bool) -> None:
    """Configure the connection, then check the schema, creating or migrating it if allowed.

    ``force_setup`` (an explicit ``setup()``) migrates even with ``auto_setup=False``.
    """
    if sqlite3.sqlite_version_info < MIN_SQLITE:
        raise ThreadlineError(
            f"threadline needs SQLite >= {'.'.join(map(str, MIN_SQLITE))}, but Python's sqlite3"
            f" module uses SQLite {sqlite3.sqlite_version}; use a Python built with a newer"
            " SQLite"
        )
    if conn.in_transaction:
        raise ThreadlineError(
            "the SQLite connection given to the saver has an open transaction; commit it"
            " first, and give the saver a connection of its own"
        )
    _configure_patiently(conn, settings)
    if not force_setup:
        version = drive(conn, _schema_version(), write=False)
        if version == SCHEMA_VERSION:
            return
        if version is not None:
            _check_not_newer(version)
        if not settings.auto_setup:
            found = "no threadline schema" if version is None else f"schema version {version}"
            raise SchemaMissingError(
                f"the SQLite database has {found}, and this threadline needs version"
                f" {SCHEMA_VERSION}; the saver was created with auto_setup=False, so call"
                " saver.setup() (await saver.asetup()) once to create or migrate it"
            )
    drive(conn, _migrate(), write=True)


# ---------------------------------------------------------------------- row conversion

# The form new_checkpoint_id() makes. Only it maps to bytes, so that the mapping is one-to-one
# and an id matches exactly the rows it matched as text (an upper-case spelling does not).
_CANONICAL_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_HEX_ID = re.compile(r"[0-9A-F]{32}")


def id_key(checkpoint_id: str) -> bytes | None:
    """The stored form of an id given from outside, to look rows up with.

    None when it is not a canonical UUID: bound as NULL it equals nothing, so such an id is
    not found, like any unknown id (never a ValueError, never another row).
    """
    if isinstance(checkpoint_id, str) and _CANONICAL_ID.fullmatch(checkpoint_id):
        return bytes.fromhex(checkpoint_id.replace("-", ""))
    return None


def id_blob(checkpoint_id: str) -> bytes:
    """The stored form of an id about to be stored: only a UUID has one."""
    key = id_key(checkpoint_id)
    if key is None:
        raise ValueError(
            f"the SQLite savers store checkpoint ids as UUIDs (see new_checkpoint_id()), got"
            f" {checkpoint_id!r}"
        )
    return key


def id_text(blob: bytes) -> str:
    """The canonical string of a stored id."""
    h = blob.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def encode_refs(refs: Mapping[str, VersionRef], checkpoint_id: str) -> str:
    """JSON refs of checkpoint ``checkpoint_id``. A writer is its 32 upper-case hex digits,
    which prune compares with ``hex(versions.writer)``; the checkpoint's own id, the writer of
    every channel its step changed, is "" (34 bytes less a channel)."""
    out = {}
    for name, r in refs.items():
        writer = "" if r.writer == checkpoint_id else id_blob(r.writer).hex().upper()
        out[name] = [writer, r.snapshot_bytes, r.chain_bytes]
    return json.dumps(out, separators=(",", ":"), ensure_ascii=False)


def decode_refs(thread_id: str, checkpoint_id: str, text: Any) -> dict[str, VersionRef]:
    try:
        data = json.loads(text)
        refs = {}
        for name, (writer, snapshot, chain) in data.items():
            if type(writer) is not str or type(snapshot) is not int or type(chain) is not int:
                raise ValueError(f"bad reference for channel {name!r}")
            if writer == "":
                writer = checkpoint_id
            elif _HEX_ID.fullmatch(writer):
                writer = id_text(bytes.fromhex(writer))
            else:
                raise ValueError(f"bad writer {writer!r} for channel {name!r}")
            refs[name] = VersionRef(writer, snapshot, chain)
        return refs
    except Exception as exc:
        raise CorruptCheckpointError(
            f"the channel references of thread {thread_id!r}, checkpoint {checkpoint_id} do not"
            f" decode ({type(exc).__name__}: {exc}); the row was changed outside threadline."
            " Restore the database from a backup, or delete_thread() the thread"
        ) from exc


_CHECKPOINT_COLUMNS = (
    "c.checkpoint_id, c.ns, c.parent_id, c.seq, c.step, c.source, c.created_at, c.metadata,"
    " c.tasks, c.refs"
)


def _checkpoint_row(thread_id: str, r: tuple[Any, ...]) -> CheckpointRow:
    checkpoint_id = id_text(r[0])
    return CheckpointRow(
        thread_id=thread_id,
        ns=r[1],
        id=checkpoint_id,
        parent_id=None if r[2] is None else id_text(r[2]),
        seq=r[3],
        step=r[4],
        source=r[5],
        created_at=r[6],
        metadata=r[7],
        tasks=r[8],
        refs=decode_refs(thread_id, checkpoint_id, r[9]),
    )


# ---------------------------------------------------------------------- primitives: reads

# LEFT JOIN: a head naming a checkpoint that is not stored is corrupt, not an empty thread.
_HEAD_CHECKPOINT = f"""
SELECT {_CHECKPOINT_COLUMNS}, h.checkpoint_id FROM heads h
LEFT JOIN checkpoints c ON c.thread_id = h.thread_id AND c.checkpoint_id = h.checkpoint_id
WHERE h.thread_id = ? AND h.ns = ?"""

_GET_CHECKPOINT = f"""
SELECT {_CHECKPOINT_COLUMNS} FROM checkpoints c
WHERE c.thread_id = ? AND c.checkpoint_id = ? AND c.ns = ?"""


def read_checkpoint(
    thread_id: str, ns: str, checkpoint_id: str | None
) -> Proc[CheckpointRow | None]:
    if checkpoint_id is None:
        rows = yield Step(_HEAD_CHECKPOINT, (thread_id, ns))
    else:
        rows = yield Step(_GET_CHECKPOINT, (thread_id, id_key(checkpoint_id), ns))
    if rows and rows[0][0] is None:
        head = rows[0][-1]
        raise missing_head_error(thread_id, ns, id_text(head) if type(head) is bytes else head)
    return _checkpoint_row(thread_id, rows[0]) if rows else None


# Walk each wanted version's base chain back to its snapshot: keys only (UNION dedups shared
# chains), then fetch each row's data once. The wanted keys are a JSON array of channels and
# their writers' bytes end to end (?3): JSON cannot carry bytes, and SQLite < 3.41 has no
# unhex(); one parameter of each keeps the statement the same for any number of keys. UNION
# ends a cycle of bases; LIMIT (?4, encoding.chain_rows_cap) bounds an endless chain, which
# the reader then refuses.
_READ_VERSIONS = """
WITH RECURSIVE chain(channel, writer) AS (
    SELECT value, substr(?3, 16 * key + 1, 16) FROM json_each(?2)
    UNION
    SELECT v.channel, v.base FROM chain CROSS JOIN versions v
    WHERE v.thread_id = ?1 AND v.channel = chain.channel AND v.writer = chain.writer
      AND v.base IS NOT NULL
    LIMIT ?4
)
SELECT v.channel, v.writer, v.base, v.data FROM chain CROSS JOIN versions v
WHERE v.thread_id = ?1 AND v.channel = chain.channel AND v.writer = chain.writer"""


def read_versions(thread_id: str, wanted: Iterable[tuple[str, str]]) -> Proc[list[VersionRow]]:
    pairs = list(wanted)
    channels = json.dumps([c for c, _ in pairs], separators=(",", ":"), ensure_ascii=False)
    writers = b"".join(id_blob(w) for _, w in pairs)  # from stored refs: always UUIDs
    rows = yield Step(_READ_VERSIONS, (thread_id, channels, writers, chain_rows_cap(pairs)))
    return [
        VersionRow(r[0], id_text(r[1]), None if r[2] is None else id_text(r[2]), r[3]) for r in rows
    ]


_READ_WRITES = """
SELECT task_id, idx, channel, data FROM writes
WHERE thread_id = ? AND ns = ? AND checkpoint_id = ?"""


def read_writes(thread_id: str, ns: str, checkpoint_id: str) -> Proc[list[WriteRow]]:
    rows = yield Step(_READ_WRITES, (thread_id, ns, id_key(checkpoint_id)))
    return [WriteRow(r[0], r[1], r[2], r[3]) for r in rows]


# Keys as in _READ_VERSIONS: a JSON array of namespaces (?1), the ids' bytes end to end (?3).
# CROSS JOIN keeps the keys outside: one index search each, not a scan of the thread's writes.
_READ_WRITES_MANY = """
SELECT w.ns, w.checkpoint_id, w.task_id, w.idx, w.channel, w.data
FROM json_each(?1) AS k
CROSS JOIN writes w ON w.thread_id = ?2
 AND w.ns = k.value AND w.checkpoint_id = substr(?3, 16 * k.key + 1, 16)"""


def read_writes_many(
    thread_id: str, keys: Sequence[tuple[str, str]]
) -> Proc[dict[tuple[str, str], list[WriteRow]]]:
    """Pending writes of a page of checkpoints, in one query."""
    namespaces = json.dumps([ns for ns, _ in keys], separators=(",", ":"), ensure_ascii=False)
    ids = b"".join(id_blob(cid) for _, cid in keys)  # ids of stored rows: always UUIDs
    rows = yield Step(_READ_WRITES_MANY, (namespaces, thread_id, ids))
    out: dict[tuple[str, str], list[WriteRow]] = {(ns, cid): [] for ns, cid in keys}
    for ns, checkpoint_id, task_id, idx, channel, data in rows:
        out[(ns, id_text(checkpoint_id))].append(WriteRow(task_id, idx, channel, data))
    return out


# Ids are unique except for copy_thread's copies: prefer the first stored (the original).
_LOCATE = """
SELECT thread_id, ns FROM checkpoints WHERE checkpoint_id = ? ORDER BY rowid LIMIT 1"""


def locate_checkpoint(checkpoint_id: str) -> Proc[tuple[str, str] | None]:
    rows = yield Step(_LOCATE, (id_key(checkpoint_id),))
    return (rows[0][0], rows[0][1]) if rows else None


_PAGE_NS = f"""
SELECT {_CHECKPOINT_COLUMNS} FROM checkpoints c
WHERE c.thread_id = ? AND c.ns = ? AND c.seq < ? ORDER BY c.seq DESC LIMIT {PAGE}"""

# All namespaces (no caller needs it today): sorts the thread's rows for each page.
_PAGE_ALL = f"""
SELECT {_CHECKPOINT_COLUMNS} FROM checkpoints c
WHERE c.thread_id = ? AND c.seq < ? ORDER BY c.seq DESC LIMIT {PAGE}"""


def checkpoint_page(
    thread_id: str, ns: str | None, before_seq: int | None
) -> Proc[list[CheckpointRow]]:
    """One page of checkpoints, newest first, with ``seq < before_seq``."""
    before = _NO_SEQ if before_seq is None else before_seq
    if ns is None:
        rows = yield Step(_PAGE_ALL, (thread_id, before))
    else:
        rows = yield Step(_PAGE_NS, (thread_id, ns, before))
    return [_checkpoint_row(thread_id, r) for r in rows]


def next_page(batch: list[CheckpointRow]) -> int | None:
    """The ``before_seq`` of the page after ``batch``, or None when ``batch`` was the last."""
    return batch[-1].seq if len(batch) == PAGE else None


# ---------------------------------------------------------------------- primitives: commits

_GET_HEAD = "SELECT checkpoint_id FROM heads WHERE thread_id = ? AND ns = ?"

_BUMP_THREAD = """
INSERT INTO threads (thread_id, created_at, updated_at, expires_at, seq, metadata)
VALUES (?1, ?2, ?2, ?3, 1, ?4)
ON CONFLICT (thread_id) DO UPDATE SET
    seq = seq + 1,
    updated_at = excluded.updated_at,
    expires_at = excluded.expires_at,
    metadata = coalesce(excluded.metadata, metadata)
RETURNING seq"""

_INSERT_CHECKPOINT = """
INSERT INTO checkpoints
    (thread_id, checkpoint_id, ns, parent_id, seq, step, source, created_at, refs, metadata, tasks)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"""

_INSERT_VERSION = (
    "INSERT INTO versions (thread_id, channel, writer, base, data) VALUES (?, ?, ?, ?, ?)"
)

_CHECKPOINT_EXISTS = "SELECT 1 FROM checkpoints WHERE thread_id = ? AND checkpoint_id = ?"

_SET_HEAD = """
INSERT INTO heads (thread_id, ns, checkpoint_id) VALUES (?, ?, ?)
ON CONFLICT (thread_id, ns) DO UPDATE SET checkpoint_id = excluded.checkpoint_id"""


# ---------------------------------------------------------------------- leases

_GET_LEASE = "SELECT owner, epoch, expires_at FROM leases WHERE thread_id = ?"

_PUT_LEASE = """
INSERT INTO leases (thread_id, owner, epoch, expires_at) VALUES (?1, ?2, ?3, ?4)
ON CONFLICT (thread_id) DO UPDATE SET
    owner = excluded.owner, epoch = excluded.epoch, expires_at = excluded.expires_at"""


def _read_lease(thread_id: str) -> Proc[LeaseRow | None]:
    rows = yield Step(_GET_LEASE, (thread_id,))
    return LeaseRow(rows[0][0], rows[0][1], rows[0][2]) if rows else None


def lease_acquire(thread_id: str, owner: str, ttl: float) -> Proc[LeaseState]:
    """Take the lease if free. Run with ``write=True`` (it decides under the write lock)."""
    current = yield from _read_lease(thread_id)
    row, state = take(current, owner, ttl, time.time())
    if state.acquired:
        yield Step(_PUT_LEASE, (thread_id, row.owner, row.epoch, row.expires_at))
    return state


def lease_renew(thread_id: str, epoch: int, ttl: float, release: bool) -> Proc[float | None]:
    current = yield from _read_lease(thread_id)
    if current is None or current.owner is None or current.epoch != epoch:
        return None
    owner, expires = (None, 0.0) if release else (current.owner, time.time() + ttl)
    yield Step(_PUT_LEASE, (thread_id, owner, epoch, expires))
    return expires


def _check_lease(thread_id: str, op: LeaseOp, now: float) -> Proc[None]:
    """The lease part of a commit, before its compare-and-swap (same transaction)."""
    current = yield from _read_lease(thread_id)
    if op.mode == "acquire":
        row, state = take(current, op.lease.owner, op.lease.ttl, now)
        if not state.acquired:
            raise busy_error(thread_id, state, None)
        # Kept even if the compare-and-swap fails: the caller rereads and tries again.
        yield Step(_PUT_LEASE, (thread_id, row.owner, row.epoch, row.expires_at))
        op.lease.epoch, op.lease.expires_at, op.lease.released = row.epoch, row.expires_at, False
    elif op.mode == "check":
        if current is not None and current.busy_for("", now):
            state = LeaseState(False, current.epoch, current.owner, current.expires_at)
            raise busy_error(thread_id, state, None)
    elif current is None or current.owner is None or current.epoch != op.lease.epoch:
        raise lease_lost(thread_id, op.lease.epoch)


def _renew_in_commit(thread_id: str, op: LeaseOp, now: float) -> Proc[None]:
    if op.mode == "release":
        yield Step(_PUT_LEASE, (thread_id, None, op.lease.epoch, 0.0))
    elif op.mode == "hold":
        expires = now + op.lease.ttl
        yield Step(_PUT_LEASE, (thread_id, op.lease.owner, op.lease.epoch, expires))
        op.lease.expires_at = expires


class LeaseKept(Exception):
    """Raised out of a commit procedure to commit what it did so far (the lease it took) and
    then raise ``error`` (its compare-and-swap failed)."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


def commit(
    row: CheckpointRow,
    versions: Sequence[VersionRow],
    expected_head: str | None,
    thread_metadata: bytes | None,
    expires_at: float | None,
    lease: LeaseOp | None = None,
) -> Proc[int]:
    """Compare-and-swap the head and add the checkpoint. Run with ``write=True``."""
    tid = row.thread_id
    checkpoint_id = id_blob(row.id)
    now = time.time()
    if lease is not None:
        yield from _check_lease(tid, lease, now)
    rows = yield Step(_GET_HEAD, (tid, row.ns))
    head = id_text(rows[0][0]) if rows else None
    if head != expected_head:
        error = conflict_error(tid, expected_head, head)
        if lease is not None and lease.mode == "acquire":
            raise LeaseKept(error)
        raise error
    base = borrowed_base(row, versions, expected_head)
    if base is not None and not (yield Step(_CHECKPOINT_EXISTS, (tid, id_blob(base)))):
        gone = base_gone_error(tid, row)  # pruned meanwhile (one writer: it cannot be now)
        if lease is not None and lease.mode == "acquire":
            raise LeaseKept(gone)
        raise gone
    if lease is not None:
        yield from _renew_in_commit(tid, lease, now)
    seq = 0
    for one in (row.before, row):  # the input checkpoint, if any, first
        if one is None:
            continue
        rows = yield Step(_BUMP_THREAD, (tid, one.created_at, expires_at, thread_metadata))
        seq = rows[0][0]
        yield Step(
            _INSERT_CHECKPOINT,
            (
                tid,
                id_blob(one.id),
                one.ns,
                None if one.parent_id is None else id_blob(one.parent_id),
                seq,
                one.step,
                one.source,
                one.created_at,
                encode_refs(one.refs, one.id),
                one.metadata,
                one.tasks,
            ),
        )
    if versions:
        yield Step(
            _INSERT_VERSION,
            [
                (
                    tid,
                    v.channel,
                    id_blob(v.writer),
                    None if v.base is None else id_blob(v.base),
                    v.data,
                )
                for v in versions
            ],
            many=True,
        )
    yield Step(_SET_HEAD, (tid, row.ns, checkpoint_id))
    return seq


_WRITES_GUARD = """
SELECT
    (SELECT checkpoint_id FROM heads WHERE thread_id = ?1 AND ns = ?2),
    EXISTS (SELECT 1 FROM threads WHERE thread_id = ?1),
    EXISTS (
        SELECT 1 FROM checkpoints WHERE thread_id = ?1 AND checkpoint_id = ?3 AND ns = ?2
    )"""

_INSERT_WRITE = """
INSERT OR IGNORE INTO writes (thread_id, ns, checkpoint_id, task_id, idx, channel, data)
VALUES (?, ?, ?, ?, ?, ?, ?)"""


def commit_writes(
    thread_id: str,
    ns: str,
    checkpoint_id: str,
    rows: Sequence[WriteRow],
    expected_head: str | None,
    lease: Lease | None = None,
) -> Proc[None]:
    """Add pending writes (first write of a key wins) if the head is still ``expected_head``."""
    if lease is not None:
        yield from _check_lease(thread_id, LeaseOp("hold", lease), time.time())
    key = id_key(checkpoint_id)  # None for a non-UUID: then no checkpoint exists
    found = yield Step(_WRITES_GUARD, (thread_id, ns, key))
    head_blob, thread_exists, checkpoint_exists = found[0]
    head = None if head_blob is None else id_text(head_blob)
    if not thread_exists or head != expected_head:
        raise conflict_error(thread_id, expected_head, head)
    if not checkpoint_exists:  # a checkpoint of another namespace is not found either
        raise BaseCheckpointSaver._not_found(thread_id, ns, checkpoint_id)
    if rows:
        yield Step(
            _INSERT_WRITE,
            [(thread_id, ns, key, w.task_id, w.idx, w.channel, w.data) for w in rows],
            many=True,
        )


# ---------------------------------------------------------------------- thread operations

_TABLES = ("writes", "versions", "checkpoints", "heads", "threads")


def delete_thread(thread_id: str) -> Proc[None]:
    for table in _TABLES:
        yield Step(f"DELETE FROM {table} WHERE thread_id = ?", (thread_id,))


_COPY_THREAD = """
INSERT INTO threads (thread_id, created_at, updated_at, expires_at, seq, metadata)
SELECT ?2, ?3, ?3, expires_at, seq, metadata FROM threads WHERE thread_id = ?1"""

_COPY_ROWS = (
    """INSERT INTO heads (thread_id, ns, checkpoint_id)
    SELECT ?2, ns, checkpoint_id FROM heads WHERE thread_id = ?1""",
    """INSERT INTO checkpoints (thread_id, checkpoint_id, ns, parent_id, seq, step, source,
        created_at, refs, metadata, tasks)
    SELECT ?2, checkpoint_id, ns, parent_id, seq, step, source, created_at, refs, metadata, tasks
    FROM checkpoints WHERE thread_id = ?1""",
    """INSERT INTO versions (thread_id, channel, writer, base, data)
    SELECT ?2, channel, writer, base, data FROM versions WHERE thread_id = ?1""",
    """INSERT INTO writes (thread_id, ns, checkpoint_id, task_id, idx, channel, data)
    SELECT ?2, ns, checkpoint_id, task_id, idx, channel, data FROM writes
    WHERE thread_id = ?1""",
)


def copy_thread(source: str, target: str) -> Proc[None]:
    rows = yield Step(
        "SELECT EXISTS (SELECT 1 FROM threads WHERE thread_id = ?1),"
        " EXISTS (SELECT 1 FROM threads WHERE thread_id = ?2)",
        (source, target),
    )
    source_exists, target_exists = rows[0]
    if not source_exists:
        raise ThreadNotFoundError(
            f"thread {source!r} does not exist; list_threads() shows the stored threads"
        )
    if target_exists:
        raise ThreadlineError(
            f"cannot copy into thread {target!r}: it already exists; pick a new thread id or"
            " delete_thread() it first"
        )
    yield Step(_COPY_THREAD, (source, target, time.time()))
    for sql in _COPY_ROWS:
        yield Step(sql, (source, target))


_LIST_THREADS = """
SELECT t.thread_id, h.checkpoint_id, t.metadata, t.created_at, t.updated_at, t.expires_at
FROM threads t LEFT JOIN heads h ON h.thread_id = t.thread_id AND h.ns = ''
ORDER BY t.updated_at DESC, t.thread_id DESC LIMIT ? OFFSET ?"""

_LIST_THREADS_AFTER = """
SELECT t.thread_id, h.checkpoint_id, t.metadata, t.created_at, t.updated_at, t.expires_at
FROM threads t LEFT JOIN heads h ON h.thread_id = t.thread_id AND h.ns = ''
WHERE (t.updated_at, t.thread_id) < (?, ?)
ORDER BY t.updated_at DESC, t.thread_id DESC LIMIT ?"""

LoadMetadata = Callable[[str, "bytes | None"], dict[str, Any]]
"""Decode a thread's metadata: ``(thread_id, stored bytes or None)``."""


def _thread_info(r: tuple[Any, ...], meta: dict[str, Any]) -> ThreadInfo:
    return ThreadInfo(
        thread_id=r[0],
        head_id=None if r[1] is None else id_text(r[1]),
        metadata=meta,
        created_at=to_datetime(r[3], f"thread {r[0]!r}"),
        updated_at=to_datetime(r[4], f"thread {r[0]!r}"),
        expires_at=None if r[5] is None else to_datetime(r[5], f"thread {r[0]!r}"),
    )


def _thread_metadata(r: tuple[Any, ...], loads: LoadMetadata) -> dict[str, Any]:
    return loads(r[0], r[2])


def list_threads(
    wanted: dict[str, Any], limit: int | None, offset: int, loads: LoadMetadata
) -> Proc[list[ThreadInfo]]:
    """Most recently updated first. Metadata may be encrypted, so filters run on decoded
    metadata in Python, over pages of threads (keyset on ``(updated_at, thread_id)``)."""
    if not wanted:
        rows = yield Step(_LIST_THREADS, (-1 if limit is None else limit, max(offset, 0)))
        return [_thread_info(r, _thread_metadata(r, loads)) for r in rows]
    out: list[ThreadInfo] = []
    skip = max(offset, 0)
    after: tuple[float, str] = (float("inf"), "")
    while limit is None or len(out) < limit:
        rows = yield Step(_LIST_THREADS_AFTER, (*after, THREAD_PAGE))
        for r in rows:
            meta = _thread_metadata(r, loads)
            if not metadata_matches(meta, wanted):
                continue
            if skip:
                skip -= 1
                continue
            out.append(_thread_info(r, meta))
            if limit is not None and len(out) >= limit:
                break
        if len(rows) < THREAD_PAGE:
            break
        after = (rows[-1][4], rows[-1][0])
    return out


_PRUNE_CHECKPOINTS = """
DELETE FROM checkpoints WHERE thread_id = ?1 AND checkpoint_id IN (
    SELECT checkpoint_id FROM (
        SELECT checkpoint_id, row_number() OVER (PARTITION BY ns ORDER BY seq DESC) AS rank
        FROM checkpoints WHERE thread_id = ?1
    ) WHERE rank > ?2
)
RETURNING checkpoint_id"""

_PRUNE_WRITES = """
DELETE FROM writes WHERE thread_id = ?1 AND NOT EXISTS (
    SELECT 1 FROM checkpoints c WHERE c.thread_id = ?1 AND c.checkpoint_id = writes.checkpoint_id
)"""

_BAD_REFS = """
SELECT checkpoint_id, refs FROM checkpoints WHERE thread_id = ?
  AND CASE WHEN json_valid(refs) THEN json_type(refs) != 'object' ELSE 1 END
LIMIT 1"""

# Versions reachable from the remaining checkpoints' refs through base chains survive. refs
# name writers in hex ("" for the checkpoint itself): the thread's versions are matched on
# hex(writer) once (the IN list is indexed), then base chains are walked on the bytes.
_PRUNE_VERSIONS = """
WITH RECURSIVE referenced(channel, writer) AS (
    SELECT r.key, coalesce(nullif(json_extract(r.value, '$[0]'), ''), hex(c.checkpoint_id))
    FROM checkpoints c, json_each(c.refs) r WHERE c.thread_id = ?1
),
live(channel, writer) AS (
    SELECT channel, writer FROM versions
    WHERE thread_id = ?1 AND (channel, hex(writer)) IN (SELECT channel, writer FROM referenced)
    UNION
    SELECT v.channel, v.base FROM live CROSS JOIN versions v
    WHERE v.thread_id = ?1 AND v.channel = live.channel AND v.writer = live.writer
      AND v.base IS NOT NULL
)
DELETE FROM versions
WHERE thread_id = ?1 AND (channel, writer) NOT IN (SELECT channel, writer FROM live)"""


def check_prune_args(thread_ids: Sequence[str], keep_last: int) -> None:
    if keep_last < 1:
        raise ValueError(f"keep_last must be at least 1 (the head), got {keep_last!r}")
    if isinstance(thread_ids, str):
        raise TypeError(
            f"prune() takes a list of thread ids, got the string {thread_ids!r}; pass"
            f" [{thread_ids!r}]"
        )


def prune(thread_ids: Iterable[str], keep_last: int) -> Proc[int]:
    removed = 0
    for thread_id in dict.fromkeys(thread_ids):
        gone = yield Step(_PRUNE_CHECKPOINTS, (thread_id, keep_last))
        if not gone:
            continue
        removed += len(gone)
        yield Step(_PRUNE_WRITES, (thread_id,))
        # Reachability is computed in SQL from the refs: refuse (rolling back) if one is bad.
        bad = yield Step(_BAD_REFS, (thread_id,))
        if bad:  # decode_refs raises CorruptCheckpointError
            decode_refs(thread_id, id_text(bad[0][0]), bad[0][1])
        yield Step(_PRUNE_VERSIONS, (thread_id,))
    return removed


_REWIND_TARGET = "SELECT seq FROM checkpoints WHERE thread_id = ? AND checkpoint_id = ? AND ns = ?"

_REWIND_CHECKPOINTS = """
DELETE FROM checkpoints WHERE thread_id = ? AND seq > ? RETURNING checkpoint_id, ns, refs"""

_DELETE_WRITES_OF = "DELETE FROM writes WHERE thread_id = ? AND ns = ? AND checkpoint_id = ?"

_DELETE_WRITES_BUT = """
DELETE FROM writes WHERE thread_id = ? AND ns = ? AND checkpoint_id = ? AND NOT EXISTS (
    SELECT 1 FROM json_each(?) k
    WHERE json_extract(k.value, '$[0]') = writes.task_id
      AND json_extract(k.value, '$[1]') = writes.idx
)"""

_DELETE_VERSION = "DELETE FROM versions WHERE thread_id = ? AND channel = ? AND writer = ?"

_NEWEST_IN_NS = """
SELECT checkpoint_id FROM checkpoints WHERE thread_id = ? AND ns = ? ORDER BY seq DESC LIMIT 1"""

_DELETE_HEAD = "DELETE FROM heads WHERE thread_id = ? AND ns = ?"

_TOUCH_THREAD = "UPDATE threads SET updated_at = ?, expires_at = ? WHERE thread_id = ?"


def rewind(
    thread_id: str,
    ns: str,
    checkpoint_id: str,
    expected_head: str | None,
    lease: LeaseOp | None,
    expires_at: float | None,
    keep_writes: WriteKeys | None,
) -> Proc[int | None]:
    """Delete what was committed after the checkpoint, and move the heads back (see
    ``BaseCheckpointSaver._rewind``). Run with ``write=True``."""
    now = time.time()
    if lease is not None:
        yield from _check_lease(thread_id, lease, now)
    found = yield Step(_REWIND_TARGET, (thread_id, id_key(checkpoint_id), ns))
    if not found:
        return None
    rows = yield Step(_GET_HEAD, (thread_id, ns))
    head = id_text(rows[0][0]) if rows else None
    if expected_head is not None and head != expected_head:
        raise conflict_error(thread_id, expected_head, head)
    if lease is not None:
        yield from _renew_in_commit(thread_id, lease, now)
    if keep_writes is not None:
        kept = json.dumps(sorted(keep_writes), ensure_ascii=False)
        yield Step(_DELETE_WRITES_BUT, (thread_id, ns, id_key(checkpoint_id), kept))
    gone = yield Step(_REWIND_CHECKPOINTS, (thread_id, found[0][0]))
    written: set[tuple[str, str]] = set()
    for blob, _, refs in gone:
        written |= versions_written(id_text(blob), decode_refs(thread_id, id_text(blob), refs))
    if gone:
        yield Step(_DELETE_WRITES_OF, [(thread_id, r[1], r[0]) for r in gone], many=True)
    if written:
        yield Step(
            _DELETE_VERSION, [(thread_id, c, id_blob(w)) for c, w in sorted(written)], many=True
        )
    for name in sorted({ns} | {r[1] for r in gone}):
        newest = yield Step(_NEWEST_IN_NS, (thread_id, name))
        if newest:
            yield Step(_SET_HEAD, (thread_id, name, newest[0][0]))
        else:
            yield Step(_DELETE_HEAD, (thread_id, name))
    yield Step(_TOUCH_THREAD, (now, expires_at, thread_id))
    return len(gone)


_SWEEP = "DELETE FROM threads WHERE expires_at <= ? RETURNING thread_id"


def sweep_expired(now: float) -> Proc[int]:
    rows = yield Step(_SWEEP, (now,))
    if rows:
        ids = json.dumps([r[0] for r in rows], ensure_ascii=False)
        for table in _TABLES[:-1]:
            yield Step(
                f"DELETE FROM {table} WHERE thread_id IN (SELECT value FROM json_each(?))", (ids,)
            )
    return len(rows)
