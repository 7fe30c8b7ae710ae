"""PostgreSQL checkpointer (blocking). The async twin is in :mod:`.aio`.

Needs ``threadline[postgres]`` (psycopg 3 and psycopg_pool)::

    from threadline.checkpoint.postgres import PostgresSaver

    with PostgresSaver.from_conn_string("postgresql://user@host/db") as saver:
        app = builder.compile(checkpointer=saver)

    saver = PostgresSaver.from_conn_string(url)   # or without `with`: call saver.close() at the end
    saver = PostgresSaver(pool)                   # your ConnectionPool (or one Connection)

Every SQL statement and every step of every operation is shared with the async saver
(:mod:`._core`); this class only runs them on a blocking connection.
"""

from __future__ import annotations

import threading
from collections.abc import Generator, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar

import psycopg
from psycopg_pool import ConnectionPool
from typing_extensions import Self

from ..binding import StoredValue
from ..lease import Lease, LeaseOp, LeaseState
from ..types import CheckpointRow, ThreadInfo, VersionRow, WriteKeys, WriteRow
from . import _values
from ._batch import COMMIT_MANY, CommitQueue, Pending, adapt_connection, batchable, settle_batch
from ._core import Call, PostgresCore, Proc, _Broken, as_id_list, drive, is_broken

__all__ = ["PostgresSaver"]

T = TypeVar("T")


SYNCHRONOUS_COMMIT = ("on", "off", "local", "remote_write", "remote_apply")


def connection_kwargs(prepare: bool, synchronous_commit: str | None = None) -> dict[str, Any]:
    """Connection options the savers' own pools use.

    ``synchronous_commit="off"`` makes each commit return before its WAL reaches disk: an
    application crash loses nothing committed, a database server crash may lose the last few
    hundred milliseconds of commits (never part of one). None keeps the server's setting.
    """
    kwargs: dict[str, Any] = {"autocommit": True, "prepare_threshold": 5 if prepare else None}
    if synchronous_commit is not None:
        if synchronous_commit not in SYNCHRONOUS_COMMIT:
            raise ValueError(
                f"synchronous_commit must be None or one of {', '.join(SYNCHRONOUS_COMMIT)},"
                f" got {synchronous_commit!r}"
            )
        kwargs["options"] = f"-c synchronous_commit={synchronous_commit}"
    return kwargs


class PostgresSaver(PostgresCore):
    """Stores threads in PostgreSQL through psycopg 3, for ``invoke``/``stream``.

    Args:
        conn_or_pool: a :class:`psycopg_pool.ConnectionPool` (recommended: each operation
            borrows a connection for just that operation, so many Python threads share one
            saver, and a connection that broke is replaced) or one :class:`psycopg.Connection`
            (operations then take turns on it). Connections should be in autocommit mode; on
            one that is not, each operation runs in its own transaction.
        schema: the PostgreSQL schema holding the tables (created by :meth:`setup`).
        auto_setup: create or migrate the schema on first use. With ``False`` a missing or
            outdated schema raises :class:`~threadline.errors.SchemaMissingError`.
        prepare: use server-side prepared statements (each prepared on a connection's first
            use of it). Pass ``False`` behind PgBouncer in transaction pooling mode.
        group_commit: commits of concurrent runs (to different threads) that queue while
            others are in flight go together in one statement (each still checks its own
            head). A lone run's commit is never delayed. ``False`` sends each on its own.
        serde, ttl, auto_sweep, cache_bytes, snapshot_ratio: see
            :class:`~threadline.checkpoint.base.BaseCheckpointSaver`.
    """

    async_twin = "AsyncPostgresSaver (threadline.checkpoint.postgres.aio)"

    def __init__(
        self,
        conn_or_pool: psycopg.Connection[Any] | ConnectionPool[Any],
        *,
        schema: str = "public",
        auto_setup: bool = True,
        prepare: bool = True,
        group_commit: bool = True,
        **options: Any,
    ) -> None:
        if isinstance(conn_or_pool, ConnectionPool):
            self._pool: ConnectionPool[Any] | None = conn_or_pool
            self._conn: psycopg.Connection[Any] | None = None
        elif isinstance(conn_or_pool, psycopg.Connection):
            self._pool, self._conn = None, conn_or_pool
        else:
            raise TypeError(
                f"PostgresSaver needs a psycopg.Connection or a psycopg_pool.ConnectionPool, got"
                f" {type(conn_or_pool).__name__}; for an AsyncConnection or AsyncConnectionPool"
                " use AsyncPostgresSaver from threadline.checkpoint.postgres.aio, and for a URL"
                " use PostgresSaver.from_conn_string(url)"
            )
        super().__init__(schema=schema, auto_setup=auto_setup, prepare=prepare, **options)
        self._conn_lock = threading.Lock()
        self._setup_lock = threading.Lock()
        self._owned_pool: ConnectionPool[Any] | None = None
        self.group_commit = group_commit
        self._commits = CommitQueue()
        self._commits_changed = threading.Condition()
        self._commit_many = self._q.render(COMMIT_MANY)

    @classmethod
    def from_conn_string(
        cls,
        conn_string: str,
        *,
        pool_min_size: int = 1,
        pool_max_size: int = 10,
        pool_timeout: float = 30.0,
        synchronous_commit: str | None = None,
        **options: Any,
    ) -> Self:
        """A saver over a new connection pool to ``conn_string``, closed with the saver.

        Use it as a context manager (``with PostgresSaver.from_conn_string(url) as saver``) or
        keep the result and call :meth:`close` when done. ``synchronous_commit`` sets that
        PostgreSQL option on the pool's connections (see :func:`connection_kwargs`). Other
        keyword arguments are the saver's options.
        """
        pool: ConnectionPool[Any] = ConnectionPool(
            conn_string,
            min_size=pool_min_size,
            max_size=pool_max_size,
            timeout=pool_timeout,
            kwargs=connection_kwargs(options.get("prepare", True), synchronous_commit),
            open=False,
            name="threadline",
        )
        try:
            pool.open(wait=True, timeout=pool_timeout)
            saver = cls(pool, **options)
        except BaseException:
            pool.close()
            raise
        saver._owned_pool = pool
        return saver

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the pool :meth:`from_conn_string` opened. A pool or connection you passed in
        stays open: it is yours."""
        if self._owned_pool is not None:
            self._owned_pool.close()

    # ------------------------------------------------------------------ driver

    def _drive(self, conn: psycopg.Connection[Any], proc: Proc[T], tx: bool) -> T:
        adapt_connection(conn)  # for group commit's arrays
        if tx or not conn.autocommit:
            with conn.transaction():
                return drive(conn, proc, self._prepare_arg)
        return drive(conn, proc, self._prepare_arg)

    def _attempt(self, proc: Proc[T], tx: bool) -> T:
        pool = self._pool
        if pool is None:
            assert self._conn is not None
            with self._conn_lock:
                return self._drive(self._conn, proc, tx)
        # getconn/putconn rather than pool.connection(): no context-manager layers, and no
        # COMMIT call on exit (connections are in autocommit mode, or _drive ran a transaction).
        conn = pool.getconn()
        try:
            return self._drive(conn, proc, tx)
        except psycopg.OperationalError as exc:
            if is_broken(conn):
                raise _Broken(exc) from exc
            raise
        finally:
            pool.putconn(conn)

    def _run(self, call: Call[T], *, ready: bool = True) -> T:
        if ready and not self._ready:
            self._ensure_ready()
        try:
            return self._attempt(call.proc(), call.tx)
        except _Broken as broken:
            first = broken.error
        if not call.retry and call.recover is None:
            raise first
        # A server restart or a network cut kills every idle connection too: have the pool test
        # them all and replace the dead ones, then try once more.
        assert self._pool is not None
        self._pool.check()
        try:
            if call.recover is not None:
                done = self._attempt(call.recover(), False)
                if done is not None:
                    return done
            return self._attempt(call.proc(), call.tx)
        except _Broken as broken:
            raise broken.error from first

    def _ensure_ready(self) -> None:
        with self._setup_lock:
            if self._ready:
                return
            if self._needs_setup(self._run(self._c_schema_version(), ready=False)):
                self._run(self._c_setup(), ready=False)
            self._ready = True

    def setup(self) -> None:
        """Create the schema and tables, or migrate them; safe to call from many processes."""
        with self._setup_lock:
            self._run(self._c_setup(), ready=False)
            self._ready = True

    # ------------------------------------------------------------------ primitives

    def _read_checkpoint(
        self, thread_id: str, ns: str, checkpoint_id: str | None
    ) -> CheckpointRow | None:
        return self._run(self._c_read_checkpoint(thread_id, ns, checkpoint_id))

    def _read_versions(self, thread_id: str, wanted: set[tuple[str, str]]) -> list[VersionRow]:
        return self._run(self._c_read_versions(thread_id, wanted))

    def _locate_checkpoint(self, checkpoint_id: str) -> tuple[str, str] | None:
        return self._run(self._c_locate(checkpoint_id))

    def _read_writes(self, thread_id: str, ns: str, checkpoint_id: str) -> list[WriteRow]:
        return self._run(self._c_read_writes(thread_id, ns, checkpoint_id))

    def _read_writes_many(
        self, thread_id: str, keys: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], list[WriteRow]]:
        return self._run(self._c_read_writes_many(thread_id, keys))

    def _iter_checkpoints(
        self, thread_id: str, ns: str | None, before_seq: int | None
    ) -> Iterator[list[CheckpointRow]]:
        while True:
            batch = self._run(self._c_page(thread_id, ns, before_seq))
            if batch:
                yield batch
            before_seq = self._next_page(batch)
            if before_seq is None:
                return

    def _commit(
        self,
        row: CheckpointRow,
        versions: Sequence[VersionRow],
        expected_head: str | None,
        thread_metadata: bytes | None,
        expires_at: float | None,
        lease: LeaseOp | None = None,
    ) -> int:
        # A head no checkpoint could have goes alone: it only fails, and would fail a batch;
        # so does a commit that takes or checks a lease (once per run: not worth batching),
        # and one that must lock the checkpoint it builds on (see _commits_alone).
        if not batchable(self.group_commit, expected_head, lease) or self._commits_alone(
            row, versions, expected_head
        ):
            return self._run(
                self._c_commit(row, versions, expected_head, thread_metadata, expires_at, lease)
            )
        pending = Pending((row, versions, expected_head, thread_metadata, expires_at, lease))
        queue, changed = self._commits, self._commits_changed
        with changed:
            queue.waiting.append(pending)
            while not queue.can_send and not pending.done:
                changed.wait()
            if pending.done:
                return pending.result()
            queue.in_flight += 1
        # This thread sends batches until its own commit is settled, then hands over.
        try:
            while True:
                with changed:
                    batch = [] if pending.done else queue.take()
                    if not batch:  # settled, or in a batch another thread is sending
                        while not pending.done:
                            changed.wait()
                        break
                try:
                    self._settle(settle_batch(self, self._commit_many, batch))
                except BaseException as exc:  # interrupted: the batch's other waiters learn it
                    for other in batch:
                        if not other.done:
                            other.settle(0, exc)
                    raise
                with changed:
                    changed.notify_all()
        finally:
            with changed:
                queue.in_flight -= 1
                changed.notify_all()
        return pending.result()

    def _settle(self, proc: Generator[Call[Any], Any, None]) -> None:
        """Run a procedure over saver calls (see :func:`._batch.settle_batch`)."""
        try:
            call = next(proc)
            while True:
                try:
                    result = self._run(call)
                except Exception as exc:
                    call = proc.throw(exc)
                else:
                    call = proc.send(result)
        except StopIteration:
            return

    def _commit_writes(
        self,
        thread_id: str,
        ns: str,
        checkpoint_id: str,
        rows: Sequence[WriteRow],
        expected_head: str | None,
        lease: Lease | None = None,
    ) -> None:
        self._run(self._c_commit_writes(thread_id, ns, checkpoint_id, rows, expected_head, lease))

    def _lease_acquire(self, thread_id: str, owner: str, ttl: float) -> LeaseState:
        return self._run(self._c_lease_acquire(thread_id, owner, ttl))

    def _lease_renew(self, thread_id: str, epoch: int, ttl: float, release: bool) -> float | None:
        return self._run(self._c_lease_renew(thread_id, epoch, ttl, release))

    # ------------------------------------------------------------------ thread operations

    def delete_thread(self, thread_id: str) -> None:
        self._run(self._c_delete_thread(thread_id))

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        self._run(self._c_copy_thread(source_thread_id, target_thread_id))

    def list_threads(
        self,
        *,
        filter: Mapping[str, Any] | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[ThreadInfo]:
        return self._run(self._c_list_threads(filter, limit, offset))

    def prune(self, thread_ids: Sequence[str], *, keep_last: int) -> int:
        self._check_keep_last(keep_last)
        return sum(self._run(self._c_prune(t, keep_last)) for t in as_id_list(thread_ids))

    def sweep_expired(self) -> int:
        return self._run(self._c_sweep_expired())

    def _rewind(
        self,
        thread_id: str,
        ns: str,
        checkpoint_id: str,
        expected_head: str | None,
        lease: LeaseOp | None,
        expires_at: float | None,
        keep_writes: WriteKeys | None,
    ) -> int | None:
        return self._run(
            self._c_rewind(
                thread_id, ns, checkpoint_id, expected_head, lease, expires_at, keep_writes
            )
        )

    # ------------------------------------------------------------------ re-encryption

    def _thread_page(self, after: str | None, limit: int) -> list[str]:
        return self._run(_values.c_thread_page(self._value_statements(), after, limit))

    def _stored_page(
        self, column: str, thread_id: str, after: tuple[Any, ...] | None, limit: int
    ) -> list[StoredValue]:
        qv = self._value_statements()
        return self._run(_values.c_stored_page(qv, column, thread_id, after, limit))

    def _replace_stored(self, thread_id: str, updates: Sequence[tuple[StoredValue, bytes]]) -> int:
        qv = self._value_statements()
        return self._run(_values.c_replace_stored(qv, thread_id, updates))
