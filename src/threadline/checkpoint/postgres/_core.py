"""What the sync and async PostgreSQL savers share: every primitive, written once.

Each operation is a *procedure*: a generator that yields :class:`Op` (a statement and its
parameters) and receives the statement's rows, then returns the result. It does no I/O, so
:class:`~threadline.checkpoint.postgres.PostgresSaver` and
:class:`~threadline.checkpoint.postgres.aio.AsyncPostgresSaver` each drive the same procedures
with a few lines of blocking or ``await``-ing code (:func:`drive` / ``adrive``).

A procedure comes wrapped in a :class:`Call` that tells the driver how to run it: in a
transaction or as a single autocommitted statement, and what to do when the connection breaks
mid-way (run it again on a fresh connection, first ask whether it already happened, or give up).

Checkpoint ids live in ``uuid`` columns (see :mod:`._sql`). Only the canonical form
:func:`~threadline.checkpoint.types.new_checkpoint_id` makes is ever bound (:func:`is_id`):
an id given from outside in any other form (``"nope"``, or a UUID spelled in upper case) was
never stored, so it is treated as the unknown id it is, without asking the database, whose
cast would reject it. An id about to be stored in another form is a ``ValueError``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import msgpack
import psycopg
from psycopg import errors as pg_errors
from psycopg import pq
from psycopg.rows import tuple_row

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
    validate_filter,
    versions_written,
)
from ..base import validate_thread_id as _validate_thread_id
from ..encoding import chain_rows_cap
from ..lease import Lease, LeaseOp, LeaseState, busy_error, lease_lost
from ..types import (
    CheckpointRow,
    ThreadInfo,
    VersionRef,
    VersionRow,
    WriteKeys,
    WriteRow,
    to_datetime,
)
from ._sql import INLINE_ROWS, MIGRATIONS, Migration, Statements, version_params, write_params

__all__ = [
    "PAGE_SIZE",
    "Call",
    "Op",
    "PostgresCore",
    "Proc",
    "as_id_list",
    "drive",
    "has_rows",
    "is_broken",
    "is_id",
    "translate",
]

T = TypeVar("T")

PAGE_SIZE = 100
"""Checkpoints per page when listing a thread (keyset pagination on ``seq``)."""

_THREAD_PAGE = 500

PRUNE_BATCH = 500
"""Rows one statement of a prune deletes at most: each batch is a short transaction."""
_NO_SEQ = 1 << 62  # "before" for the first page: larger than any seq


@dataclass(frozen=True, slots=True)
class Op:
    """One statement for the driver to run; the procedure receives its rows (``[]`` if none)."""

    query: bytes
    params: Sequence[Any] | Mapping[str, Any] | None = None


Rows = list[tuple[Any, ...]]
Proc = Generator[Op, Rows, T]


@dataclass(frozen=True)
class Call(Generic[T]):
    """A procedure plus how to run it.

    ``tx``: run inside one transaction (single-statement procedures need none: a statement is
    atomic on its own, and that saves the BEGIN/COMMIT round trips).
    ``retry``: the procedure is idempotent; if the connection breaks, run it again once on a
    fresh one (pools only).
    ``recover``: for a commit, whose outcome is unknown when the connection breaks mid-way: a
    procedure that finds out whether it landed (returns its result) or not (returns ``None``,
    and the commit, protected by its compare-and-swap, is run again once).
    """

    proc: Callable[[], Proc[T]]
    tx: bool = False
    retry: bool = True
    recover: Callable[[], Proc[T | None]] | None = None


class _Broken(Exception):
    """The pooled connection died under an operation (carries the original error)."""

    def __init__(self, error: psycopg.OperationalError) -> None:
        super().__init__(str(error))
        self.error = error


def drive(conn: psycopg.Connection[Any], proc: Proc[T], prepare: bool) -> T:
    """Run ``proc`` on ``conn``: the blocking driver (the async one mirrors it line by line)."""
    cur = conn.cursor(row_factory=tuple_row)
    try:
        op = next(proc)
        while True:
            try:
                cur.execute(op.query, op.params, prepare=prepare, binary=True)
                rows = cur.fetchall() if has_rows(cur) else []
            except psycopg.Error as exc:
                op = proc.throw(translate(exc))
            else:
                op = proc.send(rows)
    except StopIteration as stop:
        result: T = stop.value
        return result
    finally:
        proc.close()
        cur.close()


def has_rows(cur: psycopg.Cursor[Any] | psycopg.AsyncCursor[Any]) -> bool:
    """Whether the statement just run returned rows (cheaper than ``cur.description``, which
    builds a Column object per column)."""
    result = cur.pgresult
    return result is not None and result.status == pq.ExecStatus.TUPLES_OK


def translate(exc: psycopg.Error) -> BaseException:
    """Turn a database error into the library error it means, or return it unchanged."""
    if isinstance(exc, pg_errors.UndefinedTable | pg_errors.InvalidSchemaName):
        return SchemaMissingError(
            f"the threadline tables are missing from the database ({exc.diag.message_primary});"
            " call saver.setup() (or construct the saver with auto_setup=True) to create them"
        )
    return exc


def is_broken(conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> bool:
    return bool(conn.broken or conn.closed)


# The one spelling of a UUID the ``uuid`` columns give back (``::text``), and the one
# new_checkpoint_id() makes: an id in this form matches exactly the rows it would match as text.
_CANONICAL_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def is_id(checkpoint_id: object) -> bool:
    """Whether ``checkpoint_id`` can be bound to a ``uuid`` column: a canonical UUID string.

    Anything else names no stored checkpoint (none could be stored under it).
    """
    return type(checkpoint_id) is str and _CANONICAL_ID.fullmatch(checkpoint_id) is not None


def _not_storable(what: str, value: object) -> ValueError:
    return ValueError(
        f"the PostgreSQL savers store checkpoint ids as UUIDs in canonical form (as"
        f" new_checkpoint_id() makes them); {what} is {value!r}"
    )


def _id_bytes(checkpoint_id: str) -> bytes:
    if not is_id(checkpoint_id):
        raise _not_storable("a channel reference's writer", checkpoint_id)
    return bytes.fromhex(checkpoint_id.replace("-", ""))


def _id_text(raw: bytes) -> str:
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _pack_refs(refs: Mapping[str, VersionRef], checkpoint_id: str | None = None) -> bytes:
    """msgpack ``{channel: [writer, snapshot_bytes, chain_bytes]}``. A writer is its 16 bytes,
    or nil when it is ``checkpoint_id`` itself (the writer of every channel its step changed)."""
    packed: bytes = msgpack.packb(
        {
            name: [
                None if ref.writer == checkpoint_id else _id_bytes(ref.writer),
                ref.snapshot_bytes,
                ref.chain_bytes,
            ]
            for name, ref in refs.items()
        }
    )
    return packed


def _before_params(before: CheckpointRow | None) -> dict[str, Any]:
    """The parameters of the row committed before a commit's own (None when there is none)."""
    if before is None:
        return dict.fromkeys(_BEFORE_KEYS, None) | {"n": 1}
    return {
        "n": 2,
        "bid": before.id,
        "bparent": before.parent_id,
        "bstep": before.step,
        "bsource": before.source,
        "bcmeta": before.metadata,
        "btasks": before.tasks,
        "brefs": _pack_refs(before.refs, before.id),
    }


_BEFORE_KEYS = ("bid", "bparent", "bstep", "bsource", "bcmeta", "btasks", "brefs")


def _unpack_refs(data: bytes, thread_id: str, checkpoint_id: str) -> dict[str, VersionRef]:
    try:
        refs = {}
        for name, (writer, snapshot, chain) in msgpack.unpackb(data, raw=False).items():
            if writer is None:
                writer = checkpoint_id
            elif type(writer) is bytes and len(writer) == 16:
                writer = _id_text(writer)
            else:
                raise ValueError(f"bad writer {writer!r} for channel {name!r}")
            refs[str(name)] = VersionRef(writer, int(snapshot), int(chain))
        return refs
    except Exception as exc:
        raise CorruptCheckpointError(
            f"the channel references of checkpoint {checkpoint_id} of thread {thread_id!r} do"
            f" not decode ({type(exc).__name__}: {exc}); the row was altered outside threadline"
        ) from exc


def _unstorable(row: CheckpointRow, versions: Sequence[VersionRow]) -> ValueError | None:
    """Why ``row`` and ``versions`` cannot be stored, if an id of theirs is not a UUID."""
    if not is_id(row.id):
        return _not_storable("the checkpoint id", row.id)
    if row.parent_id is not None and not is_id(row.parent_id):
        return _not_storable("the parent id", row.parent_id)
    for name, ref in row.refs.items():
        if ref.writer != row.id and not is_id(ref.writer):
            return _not_storable(f"the writer of channel {name!r}", ref.writer)
    for v in versions:
        if v.writer != row.id and not is_id(v.writer):
            return _not_storable(f"the writer of a version of {v.channel!r}", v.writer)
        if v.base is not None and not is_id(v.base):
            return _not_storable(f"the base of a version of {v.channel!r}", v.base)
    return None


def checkpoint_row(thread_id: str, r: tuple[Any, ...]) -> CheckpointRow:
    """A :class:`CheckpointRow` from the columns ``_sql._CKPT_COLS`` selects."""
    ns, cid, parent, seq, step, source, created, meta, tasks, refs = r[:10]
    return CheckpointRow(
        thread_id=thread_id,
        ns=ns,
        id=cid,
        parent_id=parent,
        seq=seq,
        step=step,
        source=source,
        created_at=created,
        metadata=meta,
        tasks=tasks,
        refs=_unpack_refs(refs, thread_id, cid),
    )


class PostgresCore(BaseCheckpointSaver):
    """The sans-IO part of both PostgreSQL savers: options, schema checks and procedures."""

    #: The schema versions this code knows, in order (a subclass may append its own).
    migrations: tuple[Migration, ...] = MIGRATIONS

    def __init__(
        self,
        *,
        schema: str = "public",
        auto_setup: bool = True,
        prepare: bool = True,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        self._q = Statements(schema, self.migrations)
        self.schema = self._q.schema
        self.auto_setup = auto_setup
        self.prepare = prepare
        self._ready = False

    @property
    def _prepare_arg(self) -> bool:
        # True: prepared on a connection's first use of it. Waiting for psycopg's threshold (5
        # uses per connection) had the server parse and plan the commit anew, on each of a
        # pool's connections, for its first uses. False: never (PgBouncer).
        return self.prepare

    # ------------------------------------------------------------------ setup

    def _version(self) -> Proc[int | None]:
        """The applied schema version, or None when there is no threadline schema."""
        q = self._q
        if not (yield Op(q.migrations_exist, (self.schema,))):
            return None
        rows = yield Op(q.schema_version)
        return int(rows[0][0])

    def _c_schema_version(self) -> Call[int | None]:
        return Call(self._version)

    def _needs_setup(self, version: int | None) -> bool:
        """Whether setup must run, given the schema version found; raises if it must not."""
        latest = self._q.latest_version
        if version is not None and version > latest:
            raise self._too_new(version)
        if version == latest:
            return False
        if not self.auto_setup:
            what = "has no threadline tables" if version is None else f"is at version {version}"
            raise SchemaMissingError(
                f"schema {self.schema!r} {what} and this saver was created with"
                f" auto_setup=False; call saver.setup() once (it creates or migrates the"
                f" tables to version {latest}), or pass auto_setup=True"
            )
        return True

    def _too_new(self, version: int) -> SchemaVersionError:
        return SchemaVersionError(
            f"schema {self.schema!r} is at threadline schema version {version}, newer than this"
            f" threadline knows (up to {self._q.latest_version}): it was migrated by a newer"
            " release."
            " Upgrade threadline (pip install -U threadline) in this process"
        )

    def _c_setup(self) -> Call[None]:
        """Create the schema or migrate it to the latest version, under an advisory lock.

        An up-to-date schema is left alone without taking the lock or needing any CREATE
        privilege, so roles that may only read and write can call it too.
        """
        q = self._q

        def proc() -> Proc[None]:
            current = yield from self._version()
            if current == q.latest_version:
                return
            # Serialize setups of this schema across processes; re-read under the lock.
            yield Op(q.setup_lock, (q.lock_key,))
            if not (yield Op(q.schema_exists, (self.schema,))):
                yield Op(q.create_schema)
            yield Op(q.create_migrations)
            rows = yield Op(q.schema_version)
            current = int(rows[0][0])
            if current > q.latest_version:
                raise self._too_new(current)
            for version in range(current + 1, q.latest_version + 1):
                for statement in q.migrations[version]:
                    yield Op(statement)
                yield Op(q.record_version, (version,))

        return Call(proc, tx=True)

    # ------------------------------------------------------------------ primitives

    def _c_read_checkpoint(
        self, thread_id: str, ns: str, checkpoint_id: str | None
    ) -> Call[CheckpointRow | None]:
        q = self._q

        def proc() -> Proc[CheckpointRow | None]:
            if checkpoint_id is None:
                rows = yield Op(q.read_head, (thread_id, ns))
            elif not is_id(checkpoint_id):
                return None  # not a UUID: stored nowhere
            else:
                rows = yield Op(q.read_checkpoint, (thread_id, checkpoint_id, ns))
            if rows and rows[0][1] is None:
                raise missing_head_error(thread_id, ns, rows[0][-1])
            return checkpoint_row(thread_id, rows[0]) if rows else None

        return Call(proc)

    def _c_locate(self, checkpoint_id: str) -> Call[tuple[str, str] | None]:
        q = self._q

        def proc() -> Proc[tuple[str, str] | None]:
            if not is_id(checkpoint_id):
                return None
            rows = yield Op(q.locate, (checkpoint_id,))
            return (rows[0][0], rows[0][1]) if rows else None

        return Call(proc)

    def _c_read_versions(
        self, thread_id: str, wanted: set[tuple[str, str]]
    ) -> Call[list[VersionRow]]:
        q = self._q
        params = {
            "tid": thread_id,
            "channels": [c for c, _ in wanted],
            "writers": [w for _, w in wanted],
            "cap": chain_rows_cap(wanted),
        }

        def proc() -> Proc[list[VersionRow]]:
            rows = yield Op(q.read_versions, params)
            return [VersionRow(c, w, b, d) for c, w, b, d in rows]

        return Call(proc)

    def _c_read_writes(self, thread_id: str, ns: str, checkpoint_id: str) -> Call[list[WriteRow]]:
        q = self._q

        def proc() -> Proc[list[WriteRow]]:
            if not is_id(checkpoint_id):
                return []
            rows = yield Op(q.read_writes, (thread_id, ns, checkpoint_id))
            return [WriteRow(t, i, c, d) for t, i, c, d in rows]

        return Call(proc)

    def _c_read_writes_many(
        self, thread_id: str, keys: Sequence[tuple[str, str]]
    ) -> Call[dict[tuple[str, str], list[WriteRow]]]:
        """Pending writes of a page of checkpoints, in one query."""
        q = self._q
        wanted = set(keys)
        namespaces = sorted({ns for ns, _ in keys})
        ids = sorted({checkpoint_id for _, checkpoint_id in keys if is_id(checkpoint_id)})

        def proc() -> Proc[dict[tuple[str, str], list[WriteRow]]]:
            out: dict[tuple[str, str], list[WriteRow]] = {key: [] for key in keys}
            if not ids:
                return out
            rows = yield Op(q.read_writes_many, (thread_id, namespaces, ids))
            for ns, checkpoint_id, t, i, c, d in rows:
                if (ns, checkpoint_id) in wanted:
                    out[(ns, checkpoint_id)].append(WriteRow(t, i, c, d))
            return out

        return Call(proc)

    def _c_page(
        self, thread_id: str, ns: str | None, before_seq: int | None
    ) -> Call[list[CheckpointRow]]:
        """One page of checkpoints, newest first, with ``seq < before_seq``."""
        q = self._q
        before = _NO_SEQ if before_seq is None else before_seq

        def proc() -> Proc[list[CheckpointRow]]:
            if ns is None:
                rows = yield Op(q.page_all, (thread_id, before, PAGE_SIZE))
            else:
                rows = yield Op(q.page_ns, (thread_id, ns, before, PAGE_SIZE))
            return [checkpoint_row(thread_id, r) for r in rows]

        return Call(proc)

    @staticmethod
    def _next_page(batch: list[CheckpointRow]) -> int | None:
        """The ``before_seq`` of the page after ``batch``, or None when it was the last."""
        return batch[-1].seq if len(batch) == PAGE_SIZE else None

    def _c_commit(
        self,
        row: CheckpointRow,
        versions: Sequence[VersionRow],
        expected_head: str | None,
        thread_metadata: bytes | None,
        expires_at: float | None,
        lease: LeaseOp | None = None,
    ) -> Call[int]:
        """The whole commit is one statement: one round trip, atomic, nothing stored on conflict
        (but a lease an "acquire" took stays taken).

        Ids that cannot be stored make the call raise ``ValueError`` when run (not here: a
        group commit builds calls for others' commits too). An expected head that is not a UUID
        is no head at all: a conflict, found without trying.
        """
        q = self._q
        error = _unstorable(row, versions)
        params: dict[str, Any] = {}
        if error is None:
            params = {
                "tid": row.thread_id,
                "ns": row.ns,
                "id": row.id,
                "expected": expected_head,
                "now": row.created_at,
                "exp": expires_at,
                "meta": thread_metadata,
                "parent": row.parent_id,
                "step": row.step,
                "source": row.source,
                "cmeta": row.metadata,
                "tasks": row.tasks,
                "refs": _pack_refs(row.refs, row.id),
                **_before_params(row.before),
            }
            if lease is not None:
                params["lowner"] = lease.lease.owner
                params["lttl"] = lease.lease.ttl
                params["lepoch"] = lease.lease.epoch
            version_params([(v.channel, v.writer, v.base, v.data) for v in versions], params)
        mode = "none" if lease is None else lease.mode
        statement = q.commit(expected_head is None, min(len(versions), INLINE_ROWS + 1), mode)
        possible = expected_head is None or is_id(expected_head)
        base = None if error is not None else borrowed_base(row, versions, expected_head)

        def proc() -> Proc[int]:
            if error is not None:
                raise error
            if possible and base is not None:  # in a transaction (see _sql.LOCK_BASE)
                yield Op(q.lock_head, (row.thread_id, row.ns))
                if not (yield Op(q.lock_base, (row.thread_id, base))):
                    raise base_gone_error(row.thread_id, row)
            if possible:
                rows = yield Op(statement, params)
                seq, epoch, expires = rows[0]
                if lease is not None and epoch is not None:
                    _update_lease(lease, epoch, expires)
                if seq is not None:
                    return int(seq)
                if lease is not None and epoch is None:
                    yield from self._lease_failed(row.thread_id, lease)
            head = yield Op(q.head, (row.thread_id, row.ns))
            raise conflict_error(row.thread_id, expected_head, head[0][0] if head else None)

        def recover() -> Proc[int | None]:
            # The connection broke during the commit: did it land? The checkpoint id is new,
            # so its row exists only if this very commit went through.
            if error is not None:
                return None  # it cannot have: proc raises the error
            rows = yield Op(q.checkpoint_seq, (row.thread_id, row.id))
            if not rows:
                return None
            if lease is not None and lease.mode == "acquire":
                found = yield Op(q.lease, (row.thread_id,))
                if found and found[0][0] == lease.lease.owner:
                    _update_lease(lease, found[0][1], found[0][2])
            return int(rows[0][0])

        return Call(proc, tx=base is not None, retry=False, recover=recover)

    @staticmethod
    def _commits_alone(
        row: CheckpointRow, versions: Sequence[VersionRow], expected_head: str | None
    ) -> bool:
        """Whether a commit must not join a group commit: one whose expected head no
        checkpoint could have (it only fails, and would fail the batch), or one that must
        lock its base checkpoint first (see :func:`~threadline.checkpoint.base.borrowed_base`).
        """
        if expected_head is not None and not is_id(expected_head):
            return True
        return borrowed_base(row, versions, expected_head) is not None

    def _lease_failed(self, thread_id: str, op: LeaseOp) -> Proc[None]:
        """Raise what the lease part of a failed commit means: busy, or fenced off."""
        if op.mode in ("hold", "release"):
            raise lease_lost(thread_id, op.lease.epoch)
        rows = yield Op(self._q.lease, (thread_id,))
        state = LeaseState(False, rows[0][1], rows[0][0], rows[0][2]) if rows else None
        raise busy_error(thread_id, state, None)

    def _c_lease_acquire(self, thread_id: str, owner: str, ttl: float) -> Call[LeaseState]:
        q = self._q
        params = {"tid": thread_id, "owner": owner, "ttl": ttl}

        def proc() -> Proc[LeaseState]:
            rows = yield Op(q.lease_acquire, params)
            if not rows:  # another writer inserted the row meanwhile: it holds the lease
                return LeaseState(False, None, None, None)
            acquired, epoch, holder, expires = rows[0]
            return LeaseState(bool(acquired), int(epoch), holder, float(expires))

        return Call(proc, retry=False)

    def _c_lease_renew(
        self, thread_id: str, epoch: int, ttl: float, release: bool
    ) -> Call[float | None]:
        q = self._q
        params = {"tid": thread_id, "epoch": epoch, "ttl": ttl, "release": release}

        def proc() -> Proc[float | None]:
            rows = yield Op(q.lease_renew, params)
            return float(rows[0][0]) if rows else None

        return Call(proc)  # idempotent

    def _c_commit_writes(
        self,
        thread_id: str,
        ns: str,
        checkpoint_id: str,
        rows: Sequence[WriteRow],
        expected_head: str | None,
        lease: Lease | None = None,
    ) -> Call[None]:
        q = self._q
        known = is_id(checkpoint_id)
        params: dict[str, Any] = {
            "tid": thread_id,
            "ns": ns,
            "cid": checkpoint_id if known else None,  # NULL: matches no checkpoint
            "expected": expected_head,
            "lepoch": None if lease is None else lease.epoch,
        }
        variants = q.commit_writes if lease is None else q.commit_writes_fenced
        if known:
            write_params([(w.task_id, w.idx, w.channel, w.data) for w in rows], params)
            statement = variants[min(len(rows), INLINE_ROWS + 1)]
        else:
            statement = variants[0]  # nothing to insert: only the checks

        def proc() -> Proc[None]:
            if expected_head is not None and not is_id(expected_head):
                # Not a UUID, so not the head: a conflict, as the statement would find.
                head = yield Op(q.head, (thread_id, ns))
                raise conflict_error(thread_id, expected_head, head[0][0] if head else None)
            result = yield Op(statement, params)
            head, thread_exists, checkpoint_exists, leased = result[0]
            if not leased:
                raise lease_lost(thread_id, None if lease is None else lease.epoch)
            if not thread_exists or head != expected_head:
                raise conflict_error(thread_id, expected_head, head)
            if not checkpoint_exists:
                raise self._not_found(thread_id, ns, checkpoint_id)

        return Call(proc)  # idempotent: rows already stored are ignored

    # ------------------------------------------------------------------ thread operations

    def _c_delete_thread(self, thread_id: str) -> Call[None]:
        q = self._q

        def proc() -> Proc[None]:
            yield Op(q.delete_heads, ([thread_id],))
            yield Op(q.delete_rest, {"tids": [thread_id]})

        return Call(proc, tx=True)

    def _c_copy_thread(self, source: str, target: str) -> Call[None]:
        _validate_thread_id(target)
        q = self._q
        params = {"src": source, "dst": target, "now": time.time()}

        def proc() -> Proc[None]:
            rows = yield Op(q.threads_exist, params)
            source_exists, target_exists = rows[0]
            if not source_exists:
                raise ThreadNotFoundError(
                    f"cannot copy thread {source!r}: it does not exist; list_threads() shows"
                    " the threads stored"
                )
            if target_exists:
                raise _target_exists(target)
            try:
                yield Op(q.copy_thread, params)
            except pg_errors.UniqueViolation:
                raise _target_exists(target) from None
            rebind = self._rebinder(source, target)
            if rebind is not None:  # encrypted values are bound to their thread
                from ._values import rebind_thread

                yield from rebind_thread(self._value_statements(), target, rebind)

        return Call(proc, tx=True, retry=False)

    def _value_statements(self) -> Any:
        """The statements of :mod:`._values` for this schema (rendered on first use)."""
        found = self.__dict__.get("_qv")
        if found is None:
            from ._values import ValueStatements

            found = self.__dict__["_qv"] = ValueStatements(self._q)
        return found

    def _c_list_threads(
        self, filter: Mapping[str, Any] | None, limit: int | None, offset: int
    ) -> Call[list[ThreadInfo]]:
        wanted = validate_filter(filter)
        if offset < 0:
            raise ValueError(f"offset must be >= 0, got {offset!r}")
        if limit is not None and limit < 0:
            raise ValueError(f"limit must be >= 0 or None, got {limit!r}")
        q = self._q

        def proc() -> Proc[list[ThreadInfo]]:
            if limit == 0:
                return []
            if not wanted:
                rows = yield Op(q.list_threads, (limit, offset))
                return [self._thread_info(r) for r in rows]
            # Metadata may be encrypted: filter after decoding, a page at a time.
            out: list[ThreadInfo] = []
            skip = offset
            after: tuple[float, str] = (float("inf"), "")
            while True:
                rows = yield Op(q.list_threads_after, (*after, _THREAD_PAGE))
                for r in rows:
                    info = self._thread_info(r)
                    if not metadata_matches(info.metadata, wanted):
                        continue
                    if skip:
                        skip -= 1
                        continue
                    out.append(info)
                    if limit is not None and len(out) >= limit:
                        return out
                if len(rows) < _THREAD_PAGE:
                    return out
                after = (rows[-1][4], rows[-1][0])

        return Call(proc)

    def _thread_info(self, r: tuple[Any, ...]) -> ThreadInfo:
        thread_id, head, meta, created, updated, expires = r
        metadata = self._load_thread_metadata(thread_id, meta)
        return ThreadInfo(
            thread_id=thread_id,
            head_id=head,
            metadata=metadata,
            created_at=to_datetime(created, f"thread {thread_id!r}"),
            updated_at=to_datetime(updated, f"thread {thread_id!r}"),
            expires_at=None if expires is None else to_datetime(expires, f"thread {thread_id!r}"),
        )

    def _c_prune(self, thread_id: str, keep_last: int) -> Call[int]:
        """Prune one thread in batches of :data:`PRUNE_BATCH`, each statement its own short
        transaction (see ``_sql.PRUNE_CUTOFFS``): a turn running meanwhile never waits for it.

        First the checkpoints below each namespace's cutoff go, with their pending writes;
        then the versions those checkpoints wrote that no remaining checkpoint reaches. Safe
        against concurrent commits: one that builds on a deleted checkpoint stores nothing
        (see :func:`~threadline.checkpoint.base.borrowed_base`), and every other one refers
        only to versions reached from checkpoints that remain, whose refs are read after the
        deletions. Interrupted, it leaves only unreferenced versions behind, which the next
        prune cannot see (they are harmless: never read, removed with the thread).
        """
        q = self._q

        def proc() -> Proc[int]:
            removed = 0
            written: set[tuple[str, str]] = set()  # the versions deleted checkpoints wrote
            for ns, cutoff in (yield Op(q.prune_cutoffs, {"tid": thread_id, "keep": keep_last})):
                params = {"tid": thread_id, "ns": ns, "cutoff": cutoff, "batch": PRUNE_BATCH}
                while True:
                    rows = yield Op(q.prune_checkpoints, params)
                    removed += len(rows)
                    for checkpoint_id, packed in rows:
                        unpacked = _unpack_refs(packed, thread_id, checkpoint_id)
                        written |= versions_written(checkpoint_id, unpacked)
                    if len(rows) < PRUNE_BATCH:
                        break
            if not written:
                return removed
            refs: set[tuple[str, str]] = set()
            after = -1
            while True:
                page = yield Op(
                    q.remaining_refs, {"tid": thread_id, "after": after, "batch": PRUNE_BATCH}
                )
                for checkpoint_id, packed, _ in page:
                    for name, ref in _unpack_refs(packed, thread_id, checkpoint_id).items():
                        refs.add((name, ref.writer))
                if len(page) < PRUNE_BATCH:
                    break
                after = page[-1][2]
            if refs:
                walk = {
                    "tid": thread_id,
                    "channels": [c for c, _ in refs],
                    "writers": [w for _, w in refs],
                }
                for channel, writer in (yield Op(q.live_versions, walk)):
                    written.discard((channel, writer))
            doomed = sorted(written)
            for start in range(0, len(doomed), PRUNE_BATCH):
                batch = doomed[start : start + PRUNE_BATCH]
                yield Op(
                    q.prune_versions,
                    {
                        "tid": thread_id,
                        "channels": [c for c, _ in batch],
                        "writers": [w for _, w in batch],
                    },
                )
            return removed

        return Call(proc)

    def _c_rewind(
        self,
        thread_id: str,
        ns: str,
        checkpoint_id: str,
        expected_head: str | None,
        lease: LeaseOp | None,
        expires_at: float | None,
        keep_writes: WriteKeys | None,
    ) -> Call[int | None]:
        """One transaction (see ``_sql.REWIND_*`` for its locks). Not retried when the
        connection breaks: it may have landed, and then the retry would not be the same."""
        q = self._q

        def proc() -> Proc[int | None]:
            if not is_id(checkpoint_id):
                return None  # not a UUID: stored nowhere
            if lease is not None:
                yield from self._rewind_lease(thread_id, lease)
            yield Op(q.lock_heads, ([thread_id],))
            found = yield Op(q.rewind_target, (thread_id, checkpoint_id, ns))
            if not found:
                return None
            head = yield Op(q.head, (thread_id, ns))
            actual = head[0][0] if head else None
            if expected_head is not None and actual != expected_head:
                raise conflict_error(thread_id, expected_head, actual)
            # The thread's row after its heads, as commits lock them; a commit that created
            # a namespace meanwhile has then landed, and its checkpoint is seen below.
            yield Op(q.rewind_touch, (time.time(), expires_at, thread_id))
            if keep_writes is not None:
                kept = sorted(keep_writes)
                yield Op(
                    q.rewind_target_writes,
                    {
                        "tid": thread_id,
                        "ns": ns,
                        "id": checkpoint_id,
                        "tasks": [t for t, _ in kept],
                        "idxs": [i for _, i in kept],
                    },
                )
            gone = yield Op(q.rewind_checkpoints, (thread_id, found[0][0]))
            written: set[tuple[str, str]] = set()
            for gone_id, _, packed in gone:
                written |= versions_written(gone_id, _unpack_refs(packed, thread_id, gone_id))
            namespaces = sorted({ns} | {r[1] for r in gone})
            if gone:
                rows = {"tid": thread_id, "namespaces": [r[1] for r in gone]}
                yield Op(q.rewind_writes, rows | {"ids": [r[0] for r in gone]})
            if written:
                keys = sorted(written)
                yield Op(
                    q.prune_versions,
                    {
                        "tid": thread_id,
                        "channels": [c for c, _ in keys],
                        "writers": [w for _, w in keys],
                    },
                )
            heads = {"tid": thread_id, "namespaces": namespaces}
            yield Op(q.rewind_empty_heads, heads)
            yield Op(q.rewind_heads, heads)
            if lease is not None:
                yield from self._rewind_renew(thread_id, lease)
            return len(gone)

        return Call(proc, tx=True, retry=False)

    def _rewind_lease(self, thread_id: str, op: LeaseOp) -> Proc[None]:
        """The lease part of a rewind, first: nobody holds the lease ("check"), or
        ``op.lease`` still does (its row locked until :meth:`_rewind_renew`)."""
        q = self._q
        if op.mode == "check":
            rows = yield Op(q.rewind_lease_busy, (thread_id,))
            if rows:
                owner, epoch, expires = rows[0]
                raise busy_error(thread_id, LeaseState(False, epoch, owner, expires), None)
        elif not (yield Op(q.rewind_lease_held, (thread_id, op.lease.epoch))):
            raise lease_lost(thread_id, op.lease.epoch)

    def _rewind_renew(self, thread_id: str, op: LeaseOp) -> Proc[None]:
        """The lease part of a rewind, last: renew the holder's lease, or release it."""
        if op.mode == "check":
            return
        release = op.mode == "release"
        params = {"tid": thread_id, "epoch": op.lease.epoch, "ttl": op.lease.ttl}
        rows = yield Op(self._q.lease_renew, params | {"release": release})
        if not release:
            op.lease.expires_at = float(rows[0][0])

    @staticmethod
    def _check_keep_last(keep_last: int) -> None:
        if not isinstance(keep_last, int) or keep_last < 1:
            raise ValueError(f"keep_last must be at least 1 (the head), got {keep_last!r}")

    def _c_sweep_expired(self) -> Call[int]:
        q = self._q

        def proc() -> Proc[int]:
            now = time.time()
            candidates = [r[0] for r in (yield Op(q.expired, (now,)))]
            if not candidates:
                return 0
            # Heads first (the lock order commits use), then re-check expiry under the locks:
            # a commit that just refreshed expires_at keeps its thread.
            yield Op(q.lock_heads, (candidates,))
            dead = [r[0] for r in (yield Op(q.delete_expired, (candidates, now)))]
            if dead:
                yield Op(q.delete_thread_rows, {"tids": dead})
            return len(dead)

        return Call(proc, tx=True)


def _update_lease(op: LeaseOp, epoch: int, expires: float | None) -> None:
    if op.mode == "acquire":
        op.lease.epoch, op.lease.released = int(epoch), False
    if expires is not None and op.mode != "release":
        op.lease.expires_at = float(expires)


def _target_exists(target: str) -> ThreadlineError:
    return ThreadlineError(
        f"cannot copy into thread {target!r}: it already exists; pick a new thread id or"
        " delete_thread() it first"
    )


def as_id_list(ids: Iterable[str]) -> list[str]:
    """``ids`` as a list, refusing a lone string (which would iterate its characters)."""
    if isinstance(ids, str):
        raise TypeError(f"thread_ids must be a sequence of thread ids, not a string ({ids!r})")
    return list(ids)
