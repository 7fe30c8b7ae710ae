"""PostgreSQL checkpointer (asyncio). The blocking twin is :class:`..PostgresSaver`.

::

    from threadline.checkpoint.postgres.aio import AsyncPostgresSaver

    async with AsyncPostgresSaver.from_conn_string("postgresql://user@host/db") as saver:
        app = builder.compile(checkpointer=saver)

    saver = AsyncPostgresSaver.from_conn_string(url)  # or without `async with`:
    ...                                              # the pool opens on first use,
    await saver.aclose()                             # and closes here

    saver = AsyncPostgresSaver(pool)                 # your AsyncConnectionPool (or one connection)

``from_conn_string`` is a plain (non-async) call returning the saver, which is itself an async
context manager; its pool is opened lazily by the first operation (or by ``async with``), since
opening needs a running event loop. The procedures it runs are the ones the sync saver runs
(:mod:`._core`); only the driver below differs.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Generator, Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar

import psycopg
from psycopg.rows import tuple_row
from psycopg_pool import AsyncConnectionPool
from typing_extensions import Self

from ..binding import StoredValue
from ..lease import Lease, LeaseOp, LeaseRenewer, LeaseState
from ..types import CheckpointRow, ThreadInfo, VersionRow, WriteKeys, WriteRow
from . import _values, connection_kwargs
from ._batch import COMMIT_MANY, CommitQueue, Pending, adapt_connection, batchable, settle_batch
from ._core import (
    Call,
    PostgresCore,
    Proc,
    _Broken,
    as_id_list,
    drive,
    has_rows,
    is_broken,
    translate,
)

__all__ = ["AsyncPostgresSaver"]

T = TypeVar("T")


async def adrive(conn: psycopg.AsyncConnection[Any], proc: Proc[T], prepare: bool) -> T:
    """Run ``proc`` on ``conn``: :func:`._core.drive` with ``await``."""
    cur = conn.cursor(row_factory=tuple_row)
    try:
        op = next(proc)
        while True:
            try:
                await cur.execute(op.query, op.params, prepare=prepare, binary=True)
                rows = await cur.fetchall() if has_rows(cur) else []
            except psycopg.Error as exc:
                op = proc.throw(translate(exc))
            else:
                op = proc.send(rows)
    except StopIteration as stop:
        result: T = stop.value
        return result
    finally:
        proc.close()
        await cur.close()


class AsyncPostgresSaver(PostgresCore):
    """Stores threads in PostgreSQL through psycopg 3, for ``ainvoke``/``astream``.

    Args:
        conn_or_pool: a :class:`psycopg_pool.AsyncConnectionPool` (recommended: each operation
            borrows a connection for just that operation, so concurrent runs proceed in
            parallel and a broken connection is replaced) or one
            :class:`psycopg.AsyncConnection` (operations then take turns on it).
        schema, auto_setup, prepare, group_commit, serde, ttl, auto_sweep, cache_bytes,
            snapshot_ratio: as for :class:`~threadline.checkpoint.postgres.PostgresSaver`.
    """

    sync_twin = "PostgresSaver (threadline.checkpoint.postgres)"

    def __init__(
        self,
        conn_or_pool: psycopg.AsyncConnection[Any] | AsyncConnectionPool[Any],
        *,
        schema: str = "public",
        auto_setup: bool = True,
        prepare: bool = True,
        group_commit: bool = True,
        **options: Any,
    ) -> None:
        if isinstance(conn_or_pool, AsyncConnectionPool):
            self._pool: AsyncConnectionPool[Any] | None = conn_or_pool
            self._conn: psycopg.AsyncConnection[Any] | None = None
        elif isinstance(conn_or_pool, psycopg.AsyncConnection):
            self._pool, self._conn = None, conn_or_pool
        else:
            raise TypeError(
                "AsyncPostgresSaver needs a psycopg.AsyncConnection or a"
                f" psycopg_pool.AsyncConnectionPool, got {type(conn_or_pool).__name__}; for a"
                " Connection or ConnectionPool use PostgresSaver from"
                " threadline.checkpoint.postgres, and for a URL use"
                " AsyncPostgresSaver.from_conn_string(url)"
            )
        super().__init__(schema=schema, auto_setup=auto_setup, prepare=prepare, **options)
        self._conn_lock = asyncio.Lock()
        self._setup_lock = asyncio.Lock()
        self._owned_pool: AsyncConnectionPool[Any] | None = None
        self._pool_timeout = 30.0
        self.group_commit = group_commit
        self._commits = CommitQueue()
        self._flushers: set[asyncio.Task[None]] = set()  # referenced while they run
        self._commit_many = self._q.render(COMMIT_MANY)
        self._renew_lock = threading.Lock()
        self._renew_conn: psycopg.Connection[Any] | None = None  # the renewer thread's

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

        Not a coroutine: use ``async with AsyncPostgresSaver.from_conn_string(url) as saver``,
        or keep the result (the pool opens on first use) and ``await saver.aclose()`` when done.
        ``synchronous_commit`` as for :meth:`PostgresSaver.from_conn_string`. Other keyword
        arguments are the saver's options.
        """
        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            conn_string,
            min_size=pool_min_size,
            max_size=pool_max_size,
            timeout=pool_timeout,
            kwargs=connection_kwargs(options.get("prepare", True), synchronous_commit),
            open=False,
            name="threadline",
        )
        saver = cls(pool, **options)
        saver._owned_pool = pool
        saver._pool_timeout = pool_timeout
        return saver

    async def __aenter__(self) -> Self:
        await self._open_pool()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the pool :meth:`from_conn_string` opened. A pool or connection you passed in
        stays open: it is yours."""
        if self._owned_pool is not None:
            await self._owned_pool.close()
        with self._renew_lock:
            if self._renew_conn is not None:
                self._renew_conn.close()
                self._renew_conn = None

    async def _open_pool(self) -> None:
        pool = self._owned_pool
        if pool is not None and pool.closed:
            await pool.open(wait=True, timeout=self._pool_timeout)

    # ------------------------------------------------------------------ driver

    async def _drive(self, conn: psycopg.AsyncConnection[Any], proc: Proc[T], tx: bool) -> T:
        adapt_connection(conn)  # for group commit's arrays
        if tx or not conn.autocommit:
            async with conn.transaction():
                return await adrive(conn, proc, self._prepare_arg)
        return await adrive(conn, proc, self._prepare_arg)

    async def _attempt(self, proc: Proc[T], tx: bool) -> T:
        pool = self._pool
        if pool is None:
            assert self._conn is not None
            async with self._conn_lock:
                return await self._drive(self._conn, proc, tx)
        conn = await pool.getconn()
        try:
            return await self._drive(conn, proc, tx)
        except psycopg.OperationalError as exc:
            if is_broken(conn):
                raise _Broken(exc) from exc
            raise
        finally:
            await pool.putconn(conn)

    async def _run(self, call: Call[T], *, ready: bool = True) -> T:
        if ready and not self._ready:
            await self._ensure_ready()
        try:
            return await self._attempt(call.proc(), call.tx)
        except _Broken as broken:
            first = broken.error
        if not call.retry and call.recover is None:
            raise first
        # A server restart or a network cut kills every idle connection too: have the pool test
        # them all and replace the dead ones, then try once more.
        assert self._pool is not None
        await self._pool.check()
        try:
            if call.recover is not None:
                done = await self._attempt(call.recover(), False)
                if done is not None:
                    return done
            return await self._attempt(call.proc(), call.tx)
        except _Broken as broken:
            raise broken.error from first

    async def _ensure_ready(self) -> None:
        async with self._setup_lock:
            if self._ready:
                return
            await self._open_pool()
            if self._needs_setup(await self._run(self._c_schema_version(), ready=False)):
                await self._run(self._c_setup(), ready=False)
            self._ready = True

    async def setup(self) -> None:  # type: ignore[override]  # async, as in LangGraph
        """Create the schema and tables, or migrate them: ``await saver.setup()``. Safe to call
        from many processes."""
        async with self._setup_lock:
            await self._open_pool()
            await self._run(self._c_setup(), ready=False)
            self._ready = True

    async def asetup(self) -> None:
        """Alias of :meth:`setup` (``await saver.asetup()``)."""
        await self.setup()

    # ------------------------------------------------------------------ primitives

    async def _aread_checkpoint(
        self, thread_id: str, ns: str, checkpoint_id: str | None
    ) -> CheckpointRow | None:
        return await self._run(self._c_read_checkpoint(thread_id, ns, checkpoint_id))

    async def _aread_versions(
        self, thread_id: str, wanted: set[tuple[str, str]]
    ) -> list[VersionRow]:
        return await self._run(self._c_read_versions(thread_id, wanted))

    async def _alocate_checkpoint(self, checkpoint_id: str) -> tuple[str, str] | None:
        return await self._run(self._c_locate(checkpoint_id))

    async def _aread_writes(self, thread_id: str, ns: str, checkpoint_id: str) -> list[WriteRow]:
        return await self._run(self._c_read_writes(thread_id, ns, checkpoint_id))

    async def _aread_writes_many(
        self, thread_id: str, keys: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], list[WriteRow]]:
        return await self._run(self._c_read_writes_many(thread_id, keys))

    async def _aiter_checkpoints(
        self, thread_id: str, ns: str | None, before_seq: int | None
    ) -> AsyncIterator[list[CheckpointRow]]:
        while True:
            batch = await self._run(self._c_page(thread_id, ns, before_seq))
            if batch:
                yield batch
            before_seq = self._next_page(batch)
            if before_seq is None:
                return

    async def _acommit(
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
            return await self._run(
                self._c_commit(row, versions, expected_head, thread_metadata, expires_at, lease)
            )
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        args = (row, versions, expected_head, thread_metadata, expires_at, lease)
        queue = self._commits
        queue.waiting.append(Pending(args, future))
        if queue.can_send:
            queue.in_flight += 1
            flusher = asyncio.ensure_future(self._flush_commits())
            self._flushers.add(flusher)
            flusher.add_done_callback(self._flushers.discard)
        return await future

    async def _flush_commits(self) -> None:
        """Send batches until no commit waits (a task, so a cancelled caller stops nothing)."""
        queue = self._commits
        batch: list[Pending] = []
        try:
            while batch := queue.take():
                await self._settle(settle_batch(self, self._commit_many, batch))
        except BaseException:  # cancelled with the loop: nobody will send the rest
            for pending in [*batch, *queue.waiting]:
                if pending.future is not None:
                    pending.future.cancel()
            queue.waiting.clear()
            raise
        finally:
            queue.in_flight -= 1

    async def _settle(self, proc: Generator[Call[Any], Any, None]) -> None:
        """Run a procedure over saver calls (see :func:`._batch.settle_batch`)."""
        try:
            call = next(proc)
            while True:
                try:
                    result = await self._run(call)
                except Exception as exc:
                    call = proc.throw(exc)
                else:
                    call = proc.send(result)
        except StopIteration:
            return

    async def _acommit_writes(
        self,
        thread_id: str,
        ns: str,
        checkpoint_id: str,
        rows: Sequence[WriteRow],
        expected_head: str | None,
        lease: Lease | None = None,
    ) -> None:
        await self._run(
            self._c_commit_writes(thread_id, ns, checkpoint_id, rows, expected_head, lease)
        )

    def _lease_renew(self, thread_id: str, epoch: int, ttl: float, release: bool) -> float | None:
        """Blocking, on a connection of its own: the saver's renewer thread calls it, so a
        run's lease is renewed even while its event loop is blocked. Needs a pool (its
        connection string); with one AsyncConnection, runs renew on their loop instead."""
        conninfo = self._renew_conninfo()
        if conninfo is None:
            raise self._no_sync()
        with self._renew_lock:
            conn = self._renew_conn
            if conn is None or conn.closed or conn.broken:
                conn = self._renew_conn = psycopg.connect(conninfo, autocommit=True)
            try:
                return drive(
                    conn, self._c_lease_renew(thread_id, epoch, ttl, release).proc(), False
                )
            except psycopg.OperationalError:
                conn.close()
                raise

    def blocking_lease_renewer(self) -> LeaseRenewer | None:
        return None if self._renew_conninfo() is None else self.lease_renewer()

    def _renew_conninfo(self) -> str | None:
        conninfo = None if self._pool is None else self._pool.conninfo
        return conninfo if isinstance(conninfo, str) else None

    async def _alease_acquire(self, thread_id: str, owner: str, ttl: float) -> LeaseState:
        return await self._run(self._c_lease_acquire(thread_id, owner, ttl))

    async def _alease_renew(
        self, thread_id: str, epoch: int, ttl: float, release: bool
    ) -> float | None:
        return await self._run(self._c_lease_renew(thread_id, epoch, ttl, release))

    # ------------------------------------------------------------------ thread operations

    async def adelete_thread(self, thread_id: str) -> None:
        await self._run(self._c_delete_thread(thread_id))

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        await self._run(self._c_copy_thread(source_thread_id, target_thread_id))

    async def alist_threads(
        self,
        *,
        filter: Mapping[str, Any] | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[ThreadInfo]:
        return await self._run(self._c_list_threads(filter, limit, offset))

    async def aprune(self, thread_ids: Sequence[str], *, keep_last: int) -> int:
        self._check_keep_last(keep_last)
        removed = 0
        for thread_id in as_id_list(thread_ids):
            removed += await self._run(self._c_prune(thread_id, keep_last))
        return removed

    async def asweep_expired(self) -> int:
        return await self._run(self._c_sweep_expired())

    async def _arewind(
        self,
        thread_id: str,
        ns: str,
        checkpoint_id: str,
        expected_head: str | None,
        lease: LeaseOp | None,
        expires_at: float | None,
        keep_writes: WriteKeys | None,
    ) -> int | None:
        return await self._run(
            self._c_rewind(
                thread_id, ns, checkpoint_id, expected_head, lease, expires_at, keep_writes
            )
        )

    # ------------------------------------------------------------------ re-encryption

    async def _athread_page(self, after: str | None, limit: int) -> list[str]:
        return await self._run(_values.c_thread_page(self._value_statements(), after, limit))

    async def _astored_page(
        self, column: str, thread_id: str, after: tuple[Any, ...] | None, limit: int
    ) -> list[StoredValue]:
        qv = self._value_statements()
        return await self._run(_values.c_stored_page(qv, column, thread_id, after, limit))

    async def _areplace_stored(
        self, thread_id: str, updates: Sequence[tuple[StoredValue, bytes]]
    ) -> int:
        qv = self._value_statements()
        return await self._run(_values.c_replace_stored(qv, thread_id, updates))
