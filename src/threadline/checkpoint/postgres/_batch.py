"""Group commit: concurrent commits to different threads travel in one statement.

Each commit on its own costs a round trip, a transaction (with ``synchronous_commit`` on, a
WAL flush) and psycopg's per-statement work, which is most of a step when many runs share one
saver. So commits queue up, and while one batch is in flight the next one gathers: it goes as
one statement in which every commit still moves its own thread's head by compare-and-swap, so
a commit that loses its race fails alone. A commit that finds nothing in flight goes at once,
by the one-commit statement: a lone run waits for no one.

The queue and the statement are here, written once; each saver drives them with its own kind
of waiting (:class:`~threadline.checkpoint.postgres.PostgresSaver` with a condition variable,
the async saver with futures).
"""

from __future__ import annotations

import asyncio
import struct
import weakref
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import pq
from psycopg.adapt import Dumper

from ..lease import LeaseOp
from ..types import CheckpointRow, VersionRow
from ._core import Call, Op, PostgresCore, Proc, _id_bytes, _pack_refs, is_id

__all__ = [
    "COMMIT_MANY",
    "CommitArgs",
    "CommitQueue",
    "Pending",
    "adapt_connection",
    "batchable",
    "settle_batch",
]

MAX_BATCH = 16
"""Commits per statement at most: enough to amortize, small enough to keep latency flat."""

MAX_IN_FLIGHT = 3
"""Batches in flight at once per saver: one on the server while the next one gathers and the
runs whose commits came back go on, so the server and the process both stay busy."""

CommitArgs = tuple[
    CheckpointRow, Sequence[VersionRow], str | None, bytes | None, float | None, LeaseOp | None
]
"""``_commit``'s arguments: row, versions, expected head (None: a new head), thread metadata,
expiry, lease."""

_LEASE_MODE = {None: 0, "hold": 2, "release": 3}


def batchable(group_commit: bool, expected_head: str | None, lease: LeaseOp | None) -> bool:
    """Whether a commit may join a batch: a holder's commits (fenced, renewing or releasing
    its lease) do; one that takes or checks a lease, or that can only fail, goes alone."""
    if not group_commit or (expected_head is not None and not is_id(expected_head)):
        return False
    return lease is None or lease.mode in ("hold", "release")


@dataclass(slots=True)
class Pending:
    """One queued commit and, once its batch is settled, its outcome."""

    args: CommitArgs
    future: asyncio.Future[int] | None = None  # the async saver's caller awaits it
    done: bool = False
    seq: int = 0
    error: BaseException | None = None

    @property
    def thread_id(self) -> str:
        return self.args[0].thread_id

    def settle(self, seq: int, error: BaseException | None = None) -> None:
        self.done, self.seq, self.error = True, seq, error
        future = self.future
        if future is not None and not future.done():  # done: its caller was cancelled
            if error is None:
                future.set_result(seq)
            else:
                future.set_exception(error)

    def result(self) -> int:
        if self.error is not None:
            raise self.error
        return self.seq


@dataclass
class CommitQueue:
    """Commits waiting for a batch, oldest first."""

    waiting: list[Pending] = field(default_factory=list)
    in_flight: int = 0  # batches being sent: at MAX_IN_FLIGHT, newcomers wait for the next

    @property
    def can_send(self) -> bool:
        return self.in_flight < MAX_IN_FLIGHT

    def take(self) -> list[Pending]:
        """The next batch: the oldest commits, at most one per thread (each batch bumps a
        thread's counter once) and at most :data:`MAX_BATCH`."""
        batch: list[Pending] = []
        rest: list[Pending] = []
        threads: set[str] = set()
        for pending in self.waiting:
            if len(batch) < MAX_BATCH and pending.thread_id not in threads:
                threads.add(pending.thread_id)
                batch.append(pending)
            else:
                rest.append(pending)
        self.waiting = rest
        return batch


# Every commit of the batch in arrays, numbered by ``i``; versions point at their commit by
# ``i``. A commit with an expected head moves it only from there (under READ COMMITTED one
# racing another process's re-checks against the row that process wrote); one without creates
# the head, unless it exists. A commit of a lease holder (``lepoch``) goes only while its epoch
# holds the lease (the row locked, as the one-commit statement does) and renews it, or releases
# it (``lmode`` 3) once it landed. Only commits that won bump or create their thread and store
# their rows; the statement returns their ``i``. A batch holds one commit per thread, so no row
# is touched twice.
COMMIT_MANY = """
WITH c AS (
    SELECT * FROM unnest(
        %(i)s::int4[], %(tid)s::text[], %(ns)s::text[], %(id)s::uuid[], %(expected)s::uuid[],
        %(now)s::float8[], %(exp)s::float8[], %(meta)s::bytea[], %(parent)s::uuid[],
        %(step)s::int8[], %(source)s::text[], %(cmeta)s::bytea[], %(tasks)s::bytea[],
        %(refs)s::bytea[], %(lepoch)s::int8[], %(lmode)s::int4[], %(lttl)s::float8[],
        %(n)s::int4[], %(bid)s::uuid[], %(bparent)s::uuid[], %(bstep)s::int8[],
        %(bsource)s::text[], %(bcmeta)s::bytea[], %(btasks)s::bytea[], %(brefs)s::bytea[]
    ) AS c(i, tid, ns, id, expected, now, exp, meta, parent, step, source, cmeta, tasks, refs,
        lepoch, lmode, lttl, n, bid, bparent, bstep, bsource, bcmeta, btasks, brefs)
), fence AS (
    SELECT c.i FROM c JOIN {leases} l
        ON l.thread_id = c.tid AND l.epoch = c.lepoch AND l.owner IS NOT NULL
    WHERE c.lepoch IS NOT NULL
    FOR UPDATE OF l
), moved AS (
    UPDATE {heads} h SET head = c.id
    FROM c
    WHERE c.expected IS NOT NULL
        AND h.thread_id = c.tid AND h.ns = c.ns AND h.head = c.expected
        AND (c.lepoch IS NULL OR c.i IN (SELECT i FROM fence))
    RETURNING c.i
), created AS (
    INSERT INTO {heads} (thread_id, ns, head)
    SELECT c.tid, c.ns, c.id FROM c
    WHERE c.expected IS NULL AND (c.lepoch IS NULL OR c.i IN (SELECT i FROM fence))
    ON CONFLICT (thread_id, ns) DO NOTHING
    RETURNING thread_id
), bumped AS (
    UPDATE {threads} t SET seq = t.seq + c.n, updated_at = c.now, expires_at = c.exp,
        metadata = COALESCE(c.meta, t.metadata)
    FROM moved JOIN c ON c.i = moved.i
    WHERE t.thread_id = c.tid
    RETURNING c.i, t.seq
), born AS (
    INSERT INTO {threads} AS t (thread_id, created_at, updated_at, expires_at, metadata, seq)
    SELECT c.tid, c.now, c.now, c.exp, c.meta, c.n
    FROM created JOIN c ON c.tid = created.thread_id AND c.expected IS NULL
    ON CONFLICT (thread_id) DO UPDATE SET seq = t.seq + excluded.seq,
        updated_at = excluded.updated_at,
        expires_at = excluded.expires_at, metadata = COALESCE(excluded.metadata, t.metadata)
    RETURNING t.thread_id, t.seq
), thr AS (
    SELECT i, seq FROM bumped
    UNION ALL
    SELECT c.i, born.seq FROM born JOIN c ON c.tid = born.thread_id AND c.expected IS NULL
), cp AS (
    INSERT INTO {checkpoints}
        (thread_id, id, ns, parent_id, seq, step, source, created_at, metadata, tasks, refs)
    SELECT c.tid, c.id, c.ns, c.parent, thr.seq, c.step, c.source, c.now, c.cmeta, c.tasks,
        c.refs
    FROM thr JOIN c ON c.i = thr.i
    UNION ALL  -- the input checkpoints committed with them, one sequence number before
    SELECT c.tid, c.bid, c.ns, c.bparent, thr.seq - 1, c.bstep, c.bsource, c.now, c.bcmeta,
        c.btasks, c.brefs
    FROM thr JOIN c ON c.i = thr.i
    WHERE c.bid IS NOT NULL
), ver AS (
    INSERT INTO {versions} (thread_id, channel, writer, base, data)
    SELECT c.tid, v.channel, v.writer, v.base, v.data
    FROM unnest(
        %(vi)s::int4[], %(vchannel)s::text[], %(vwriter)s::uuid[], %(vbase)s::uuid[],
        %(vdata)s::bytea[]
    ) AS v(i, channel, writer, base, data)
    JOIN thr ON thr.i = v.i JOIN c ON c.i = v.i
), renewed AS (
    UPDATE {leases} l SET
        expires_at = CASE WHEN c.lmode = 3 THEN 0
            ELSE extract(epoch FROM clock_timestamp())::float8 + c.lttl END,
        owner = CASE WHEN c.lmode = 3 THEN NULL ELSE l.owner END
    FROM thr JOIN c ON c.i = thr.i
    WHERE c.lepoch IS NOT NULL AND l.thread_id = c.tid
)
SELECT i, seq FROM thr
"""


# ---------------------------------------------------------------------- array parameters
# psycopg adapts a list element by element in Python, which made array dumping a fifth of a
# busy process's time. The batch's arrays are few and of known types, so they are built here,
# straight in PostgreSQL's binary array format, and sent as they are.


class PackedArray(bytes):
    """A one-dimensional array already in PostgreSQL's binary format. It is sent with no type
    (oid 0): the statement's cast (``%(x)s::int4[]``) gives the server its type."""

    __slots__ = ()


class _PackedArrayDumper(Dumper):
    format = pq.Format.BINARY

    def dump(self, obj: Any) -> bytes:
        return bytes(obj)


_adapted: weakref.WeakSet[Any] = weakref.WeakSet()


def adapt_connection(conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> None:
    """Teach ``conn`` to send :class:`PackedArray` (once per connection)."""
    if conn not in _adapted:
        conn.adapters.register_dumper(PackedArray, _PackedArrayDumper)
        _adapted.add(conn)


_HEADER = struct.Struct("!iiiii")  # dimensions, has nulls, element type, length, lower bound
_LENGTH = struct.Struct("!i")
_NULL = _LENGTH.pack(-1)
_INT4, _INT8, _FLOAT8 = struct.Struct("!i"), struct.Struct("!q"), struct.Struct("!d")
_OIDS = {"int4": 23, "int8": 20, "float8": 701, "text": 25, "bytea": 17, "uuid": 2950}


def _element(kind: str) -> Callable[[Any], bytes]:
    if kind == "int4":
        return lambda v: _INT4.pack(v)
    if kind == "int8":
        return lambda v: _INT8.pack(v)
    if kind == "float8":
        return lambda v: _FLOAT8.pack(v)
    if kind == "text":
        return lambda v: v.encode()
    if kind == "uuid":
        return _id_bytes
    return bytes  # bytea


def pack_array(kind: str, values: Sequence[Any]) -> PackedArray:
    """``values`` (None for NULL) as a binary array of ``kind``."""
    oid = _OIDS[kind]
    if not values:
        return PackedArray(struct.pack("!iii", 0, 0, oid))
    encode = _element(kind)
    parts = [b""]
    has_null = 0
    for value in values:
        if value is None:
            has_null = 1
            parts.append(_NULL)
        else:
            data = encode(value)
            parts.append(_LENGTH.pack(len(data)))
            parts.append(data)
    parts[0] = _HEADER.pack(1, has_null, oid, len(values), 1)
    return PackedArray(b"".join(parts))


_COMMIT_COLUMNS = (
    ("i", "int4"), ("tid", "text"), ("ns", "text"), ("id", "uuid"), ("expected", "uuid"),
    ("now", "float8"), ("exp", "float8"), ("meta", "bytea"), ("parent", "uuid"),
    ("step", "int8"), ("source", "text"), ("cmeta", "bytea"), ("tasks", "bytea"),
    ("refs", "bytea"), ("lepoch", "int8"), ("lmode", "int4"), ("lttl", "float8"),
    ("n", "int4"), ("bid", "uuid"), ("bparent", "uuid"), ("bstep", "int8"),
    ("bsource", "text"), ("bcmeta", "bytea"), ("btasks", "bytea"), ("brefs", "bytea"),
)  # fmt: skip
_VERSION_COLUMNS = (
    ("vi", "int4"), ("vchannel", "text"), ("vwriter", "uuid"), ("vbase", "uuid"),
    ("vdata", "bytea"),
)  # fmt: skip


def commit_many_params(batch: Sequence[CommitArgs]) -> dict[str, PackedArray]:
    """The parameters of :data:`COMMIT_MANY` for ``batch``: one array per column."""
    commits: list[tuple[Any, ...]] = []
    versions: list[tuple[Any, ...]] = []
    for i, (row, rows, expected, meta, expires_at, lease) in enumerate(batch):
        head = (i, row.thread_id, row.ns, row.id, expected, row.created_at, expires_at, meta)
        refs = _pack_refs(row.refs, row.id)
        held = (
            (None, 0, None)
            if lease is None
            else (lease.lease.epoch, _LEASE_MODE[lease.mode], lease.lease.ttl)
        )
        own = (row.parent_id, row.step, row.source, row.metadata, row.tasks, refs)
        b = row.before
        before = (
            (1, None, None, None, None, None, None, None)
            if b is None
            else (
                2,
                b.id,
                b.parent_id,
                b.step,
                b.source,
                b.metadata,
                b.tasks,
                _pack_refs(b.refs, b.id),
            )
        )
        commits.append((*head, *own, *held, *before))
        versions.extend((i, v.channel, v.writer, v.base, v.data) for v in rows)
    params = {
        key: pack_array(kind, column) for (key, kind), column in zip(_COMMIT_COLUMNS, zip(*commits))
    }
    for j, (key, kind) in enumerate(_VERSION_COLUMNS):
        params[key] = pack_array(kind, [v[j] for v in versions])
    return params


def commit_many_call(statement: bytes, batch: Sequence[CommitArgs]) -> Call[dict[int, int]]:
    """One statement committing ``batch``: ``{index in batch: seq}`` of the commits that landed.

    Not retried: if the connection breaks, the caller settles each commit alone, asking first
    whether it landed.
    """
    params = commit_many_params(batch)

    def proc() -> Proc[dict[int, int]]:
        rows = yield Op(statement, params)
        return {int(i): int(seq) for i, seq in rows}

    return Call(proc, retry=False)


def settle_batch(
    core: PostgresCore, statement: bytes, batch: list[Pending]
) -> Generator[Call[Any], Any, None]:
    """Commit ``batch`` and settle each of its commits: a procedure over saver calls (it
    yields a :class:`Call`, the saver runs it and sends back the result or throws its error).

    A batch of one goes by the one-commit statement. A commit that lost its compare-and-swap
    is run alone, which reports the conflict with the head it found. If the batch statement
    failed, each commit is run alone, first asking whether it landed (when the connection
    broke, the batch may have committed).
    """
    landed: dict[int, int] | None = {}
    if len(batch) > 1:
        try:
            landed = yield commit_many_call(statement, [p.args for p in batch])
        except Exception:
            landed = None
    for i, pending in enumerate(batch):
        if landed is not None and i in landed:
            pending.settle(landed[i])
            continue
        call = core._c_commit(*pending.args)
        try:
            seq = None
            if landed is None and call.recover is not None:
                seq = yield Call(call.recover)
            if seq is None:
                seq = yield call
            pending.settle(seq)
        except Exception as exc:
            pending.settle(0, exc)
