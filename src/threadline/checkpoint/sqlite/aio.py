"""``AsyncSqliteSaver``: the SQLite checkpointer for ``ainvoke`` / ``astream``, over aiosqlite."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any, TypeVar

import aiosqlite
from typing_extensions import Self

from ...errors import ThreadlineError
from ..base import BaseCheckpointSaver, validate_filter, validate_thread_id
from ..binding import StoredValue
from ..lease import Lease, LeaseOp, LeaseState
from ..serde import Serializer
from ..types import CheckpointRow, ThreadInfo, VersionRow, WriteKeys, WriteRow
from . import _sql, _values

__all__ = ["AsyncSqliteSaver"]

T = TypeVar("T")


class AsyncSqliteSaver(BaseCheckpointSaver):
    """Async checkpointer storing threads in a SQLite database file, through aiosqlite.

    Same storage, options and guarantees as :class:`~threadline.checkpoint.sqlite.SqliteSaver`
    (see there for ``synchronous``, ``busy_timeout``, ``auto_setup`` and multi-process use),
    driven through the ``a*`` methods. Each primitive runs as one job in aiosqlite's worker
    thread: one hop per call, and a transaction is never left open by a cancelled task nor
    interleaved with other work on the connection.

    ``AsyncSqliteSaver.from_conn_string("checkpoints.db")`` returns the saver itself at once
    (not a coroutine); its connection opens on first use. Two ways to use it:

    - ``async with AsyncSqliteSaver.from_conn_string(path) as saver:`` opens the connection on
      entry (and sets the schema up, unless ``auto_setup=False``) and closes it on exit;
    - ``saver = AsyncSqliteSaver.from_conn_string(path)``, then use it directly (optionally
      ``await saver.asetup()`` first, to open it and fail early), and ``await saver.aclose()``
      when done: aiosqlite's worker thread keeps the process alive until then.

    ``AsyncSqliteSaver(conn)`` uses your open (awaited) ``aiosqlite.Connection`` and never
    closes it; keep it to the saver, which runs its own ``BEGIN IMMEDIATE`` transactions on it.
    """

    sync_twin = "SqliteSaver"

    def __init__(
        self,
        conn: aiosqlite.Connection,
        *,
        serde: Serializer | None = None,
        ttl: float | None = None,
        auto_setup: bool = True,
        auto_sweep: bool = True,
        synchronous: str = "NORMAL",
        busy_timeout: float = 30.0,
        **options: Any,
    ) -> None:
        if not isinstance(conn, aiosqlite.Connection):
            raise TypeError(
                f"AsyncSqliteSaver needs an aiosqlite.Connection, got {type(conn).__name__};"
                " for a sqlite3 connection use threadline.checkpoint.sqlite.SqliteSaver"
            )
        super().__init__(serde=serde, ttl=ttl, auto_sweep=auto_sweep, **options)
        self.conn = conn
        self._settings = _sql.Settings.make(synchronous, busy_timeout, auto_setup)
        self._ready = False
        self._owns_conn = False
        self._opened = False
        self._closed = False
        self._open_lock = asyncio.Lock()

    @classmethod
    def from_conn_string(cls, conn_string: str | os.PathLike[str], **options: Any) -> Self:
        """A saver over ``conn_string`` (a file path, ``":memory:"`` or a ``file:`` URI).

        Nothing is opened until first use, ``asetup()`` or ``async with``; close it with
        ``aclose()`` or by leaving the ``async with`` block. ``options`` are the constructor's
        keyword arguments.
        """
        target = os.fspath(conn_string)
        conn = aiosqlite.connect(
            target,
            timeout=float(options.get("busy_timeout", 30.0)),
            isolation_level=None,
            uri=target.startswith("file:"),
        )
        saver = cls(conn, **options)
        saver._owns_conn = True
        return saver

    async def __aenter__(self) -> Self:
        try:
            if self._settings.auto_setup:
                await self._aprepare(force_setup=False)  # open, set up, fail early
            else:
                async with self._open_lock:
                    await self._aopen()  # the schema is checked on first use
        except BaseException:
            await self.aclose()  # __aexit__ will not run
            raise
        return self

    async def aclose(self) -> None:
        """Close the connection if the saver opened it (``from_conn_string``)."""
        if self._owns_conn and not self._closed:
            self._closed = True
            self._ready = False
            if self._opened:
                await self.conn.close()

    async def setup(self) -> None:  # type: ignore[override]  # async, as in LangGraph
        """Create or migrate the schema: ``await saver.setup()``. Idempotent; safe when several
        processes call it."""
        await self._aprepare(force_setup=True)

    async def asetup(self) -> None:
        """Alias of :meth:`setup` (``await saver.asetup()``)."""
        await self._aprepare(force_setup=True)

    def close(self) -> None:
        raise self._no_sync()

    async def _aprepare(self, force_setup: bool) -> None:
        async with self._open_lock:
            if self._ready and not force_setup:
                return
            await self._aopen()
            await self._in_thread(_sql.prepare, self._settings, force_setup)
            self._ready = True

    async def _aopen(self) -> None:
        if self._closed:
            raise ThreadlineError(
                "this AsyncSqliteSaver was closed; create a new one with from_conn_string()"
            )
        if self._owns_conn and not self._opened:
            await self.conn
            self._opened = True

    async def _in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(sqlite3_connection, *args)`` as one job in aiosqlite's worker thread."""
        conn: sqlite3.Connection | None = self.conn._connection
        if conn is None:
            raise ThreadlineError(
                "the aiosqlite connection is not open: pass AsyncSqliteSaver a connection you"
                " awaited (await aiosqlite.connect(...)), or use from_conn_string(); a saver"
                " that was closed cannot be used again"
            )
        result: T = await self.conn._execute(fn, conn, *args)  # type: ignore[no-untyped-call]
        return result

    async def _arun(self, proc: _sql.Proc[T], write: bool = False) -> T:
        if not self._ready:
            await self._aprepare(force_setup=False)
        return await self._in_thread(_sql.drive, proc, write)

    # ------------------------------------------------------------------ primitives

    async def _aread_checkpoint(
        self, thread_id: str, ns: str, checkpoint_id: str | None
    ) -> CheckpointRow | None:
        return await self._arun(_sql.read_checkpoint(thread_id, ns, checkpoint_id))

    async def _aread_versions(
        self, thread_id: str, wanted: set[tuple[str, str]]
    ) -> list[VersionRow]:
        return await self._arun(_sql.read_versions(thread_id, wanted))

    async def _aread_writes(self, thread_id: str, ns: str, checkpoint_id: str) -> list[WriteRow]:
        return await self._arun(_sql.read_writes(thread_id, ns, checkpoint_id))

    async def _aread_writes_many(
        self, thread_id: str, keys: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], list[WriteRow]]:
        return await self._arun(_sql.read_writes_many(thread_id, keys))

    async def _alocate_checkpoint(self, checkpoint_id: str) -> tuple[str, str] | None:
        return await self._arun(_sql.locate_checkpoint(checkpoint_id))

    async def _aiter_checkpoints(
        self, thread_id: str, ns: str | None, before_seq: int | None
    ) -> AsyncIterator[list[CheckpointRow]]:
        cursor: int | None = before_seq
        while True:
            batch = await self._arun(_sql.checkpoint_page(thread_id, ns, cursor))
            if batch:
                yield batch
            cursor = _sql.next_page(batch)
            if cursor is None:
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
        proc = _sql.commit(row, versions, expected_head, thread_metadata, expires_at, lease)
        return await self._arun(proc, write=True)

    async def _acommit_writes(
        self,
        thread_id: str,
        ns: str,
        checkpoint_id: str,
        rows: Sequence[WriteRow],
        expected_head: str | None,
        lease: Lease | None = None,
    ) -> None:
        proc = _sql.commit_writes(thread_id, ns, checkpoint_id, rows, expected_head, lease)
        await self._arun(proc, write=True)

    async def _alease_acquire(self, thread_id: str, owner: str, ttl: float) -> LeaseState:
        return await self._arun(_sql.lease_acquire(thread_id, owner, ttl), write=True)

    async def _alease_renew(
        self, thread_id: str, epoch: int, ttl: float, release: bool
    ) -> float | None:
        return await self._arun(_sql.lease_renew(thread_id, epoch, ttl, release), write=True)

    # ------------------------------------------------------------------ thread operations

    async def adelete_thread(self, thread_id: str) -> None:
        await self._arun(_sql.delete_thread(thread_id), write=True)

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        validate_thread_id(target_thread_id)
        rebind = self._rebinder(source_thread_id, target_thread_id)
        proc = _values.copy_thread_rebound(source_thread_id, target_thread_id, rebind)
        await self._arun(proc, write=True)

    async def alist_threads(
        self,
        *,
        filter: Mapping[str, Any] | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[ThreadInfo]:
        wanted = validate_filter(filter)
        return await self._arun(
            _sql.list_threads(wanted, limit, offset, self._load_thread_metadata)
        )

    async def aprune(self, thread_ids: Sequence[str], *, keep_last: int) -> int:
        _sql.check_prune_args(thread_ids, keep_last)
        return await self._arun(_sql.prune(thread_ids, keep_last), write=True)

    async def asweep_expired(self) -> int:
        return await self._arun(_sql.sweep_expired(time.time()), write=True)

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
        proc = _sql.rewind(
            thread_id, ns, checkpoint_id, expected_head, lease, expires_at, keep_writes
        )
        return await self._arun(proc, write=True)

    # ------------------------------------------------------------------ re-encryption

    async def _athread_page(self, after: str | None, limit: int) -> list[str]:
        return await self._arun(_values.thread_page(after, limit))

    async def _astored_page(
        self, column: str, thread_id: str, after: tuple[Any, ...] | None, limit: int
    ) -> list[StoredValue]:
        return await self._arun(_values.stored_page(column, thread_id, after, limit))

    async def _areplace_stored(
        self, thread_id: str, updates: Sequence[tuple[StoredValue, bytes]]
    ) -> int:
        return await self._arun(_values.replace_stored(thread_id, updates), write=True)
