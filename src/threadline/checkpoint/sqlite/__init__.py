"""SQLite checkpointers: :class:`SqliteSaver` here, ``AsyncSqliteSaver`` in :mod:`.aio`.

Both run the same procedures from :mod:`._sql`; they differ only in how a procedure reaches the
connection (under a lock here, in aiosqlite's worker thread there).
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, TypeVar

from typing_extensions import Self

from ..base import BaseCheckpointSaver, validate_filter, validate_thread_id
from ..binding import StoredValue
from ..lease import Lease, LeaseOp, LeaseState
from ..serde import Serializer
from ..types import CheckpointRow, ThreadInfo, VersionRow, WriteKeys, WriteRow
from . import _sql, _values

__all__ = ["SqliteSaver"]

T = TypeVar("T")


def connect(path: str | os.PathLike[str], busy_timeout: float) -> sqlite3.Connection:
    """A connection the saver owns: autocommit (the saver begins its own transactions) and
    usable from any thread (the saver serializes access with a lock)."""
    target = os.fspath(path)
    return sqlite3.connect(
        target,
        timeout=busy_timeout,
        isolation_level=None,
        check_same_thread=False,
        uri=target.startswith("file:"),
    )


class SqliteSaver(BaseCheckpointSaver):
    """Checkpointer storing threads in a SQLite database file.

    ``SqliteSaver.from_conn_string("checkpoints.db")`` opens (and owns) a connection; use the
    result directly and ``close()`` it, or as ``with SqliteSaver.from_conn_string(...) as
    saver:``, which closes it on exit. ``SqliteSaver(conn)`` uses your ``sqlite3.Connection``
    and never closes it: open it with ``check_same_thread=False`` if the saver may be called
    from other threads (the engine runs sync nodes on a thread pool), leave its
    ``text_factory`` at ``str`` (any ``row_factory`` is fine: the saver's cursors return
    tuples), and keep it to the saver, which runs its own ``BEGIN IMMEDIATE`` transactions on
    it.

    Calls from several threads are serialized by a lock. Several processes may share one file:
    every commit runs in ``BEGIN IMMEDIATE``, so the writer-lease check and the
    compare-and-swap of a thread's head are atomic across processes: two runs on one thread
    take turns (see ``lease_ttl``, ``on_busy`` and ``lease_timeout`` in
    :class:`~threadline.checkpoint.base.BaseCheckpointSaver`).

    Args:
        conn: the connection to use.
        serde, ttl, auto_sweep, cache_bytes, snapshot_ratio: as for
            :class:`~threadline.checkpoint.base.BaseCheckpointSaver`.
        auto_setup: create or migrate the schema on first use (default). With ``False`` a
            database without the current schema raises
            :class:`~threadline.errors.SchemaMissingError` until :meth:`setup` is called.
        synchronous: SQLite's ``PRAGMA synchronous``. The database runs in WAL mode, where
            ``"NORMAL"`` (default) never corrupts the file but may lose the last commits on a
            power loss or OS crash (not on a process crash); ``"FULL"`` syncs every commit to
            disk and survives power loss, at the cost of an fsync per step.
        busy_timeout: seconds to wait for another connection's write lock before failing with
            ``sqlite3.OperationalError: database is locked``.
    """

    async_twin = "AsyncSqliteSaver"

    def __init__(
        self,
        conn: sqlite3.Connection,
        *,
        serde: Serializer | None = None,
        ttl: float | None = None,
        auto_setup: bool = True,
        auto_sweep: bool = True,
        synchronous: str = "NORMAL",
        busy_timeout: float = 30.0,
        **options: Any,
    ) -> None:
        if not isinstance(conn, sqlite3.Connection):
            raise TypeError(
                f"SqliteSaver needs a sqlite3.Connection, got {type(conn).__name__}; for an"
                " aiosqlite connection use threadline.checkpoint.sqlite.aio.AsyncSqliteSaver"
            )
        if getattr(conn, "autocommit", None) is False:
            raise ValueError(
                "SqliteSaver runs its own transactions: open the connection with the default"
                " autocommit setting (or isolation_level=None), not autocommit=False"
            )
        super().__init__(serde=serde, ttl=ttl, auto_sweep=auto_sweep, **options)
        self.conn = conn
        self._settings = _sql.Settings.make(synchronous, busy_timeout, auto_setup)
        self._lock = threading.RLock()
        self._ready = False
        self._owns_conn = False

    @classmethod
    def from_conn_string(cls, conn_string: str | os.PathLike[str], **options: Any) -> Self:
        """Open ``conn_string`` (a file path, ``":memory:"`` or a ``file:`` URI).

        The result is the saver: use it directly and ``close()`` it, or in a ``with`` block
        that closes it. ``options`` are the constructor's keyword arguments.
        """
        conn = connect(conn_string, float(options.get("busy_timeout", 30.0)))
        try:
            saver = cls(conn, **options)
        except BaseException:
            conn.close()
            raise
        saver._owns_conn = True
        return saver

    def close(self) -> None:
        """Close the connection if the saver opened it (``from_conn_string``)."""
        if self._owns_conn:
            with self._lock:
                self.conn.close()

    def setup(self) -> None:
        """Create or migrate the schema. Idempotent; safe when several processes call it."""
        with self._lock:
            _sql.prepare(self.conn, self._settings, force_setup=True)
            self._ready = True

    def _run(self, proc: _sql.Proc[T], write: bool = False) -> T:
        with self._lock:
            if not self._ready:
                _sql.prepare(self.conn, self._settings, force_setup=False)
                self._ready = True
            return _sql.drive(self.conn, proc, write)

    # ------------------------------------------------------------------ primitives

    def _read_checkpoint(
        self, thread_id: str, ns: str, checkpoint_id: str | None
    ) -> CheckpointRow | None:
        return self._run(_sql.read_checkpoint(thread_id, ns, checkpoint_id))

    def _read_versions(self, thread_id: str, wanted: set[tuple[str, str]]) -> list[VersionRow]:
        return self._run(_sql.read_versions(thread_id, wanted))

    def _read_writes(self, thread_id: str, ns: str, checkpoint_id: str) -> list[WriteRow]:
        return self._run(_sql.read_writes(thread_id, ns, checkpoint_id))

    def _read_writes_many(
        self, thread_id: str, keys: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], list[WriteRow]]:
        return self._run(_sql.read_writes_many(thread_id, keys))

    def _locate_checkpoint(self, checkpoint_id: str) -> tuple[str, str] | None:
        return self._run(_sql.locate_checkpoint(checkpoint_id))

    def _iter_checkpoints(
        self, thread_id: str, ns: str | None, before_seq: int | None
    ) -> Iterator[list[CheckpointRow]]:
        cursor: int | None = before_seq
        while True:
            batch = self._run(_sql.checkpoint_page(thread_id, ns, cursor))
            if batch:
                yield batch
            cursor = _sql.next_page(batch)
            if cursor is None:
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
        proc = _sql.commit(row, versions, expected_head, thread_metadata, expires_at, lease)
        return self._run(proc, write=True)

    def _commit_writes(
        self,
        thread_id: str,
        ns: str,
        checkpoint_id: str,
        rows: Sequence[WriteRow],
        expected_head: str | None,
        lease: Lease | None = None,
    ) -> None:
        proc = _sql.commit_writes(thread_id, ns, checkpoint_id, rows, expected_head, lease)
        self._run(proc, write=True)

    def _lease_acquire(self, thread_id: str, owner: str, ttl: float) -> LeaseState:
        return self._run(_sql.lease_acquire(thread_id, owner, ttl), write=True)

    def _lease_renew(self, thread_id: str, epoch: int, ttl: float, release: bool) -> float | None:
        return self._run(_sql.lease_renew(thread_id, epoch, ttl, release), write=True)

    # ------------------------------------------------------------------ thread operations

    def delete_thread(self, thread_id: str) -> None:
        self._run(_sql.delete_thread(thread_id), write=True)

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        validate_thread_id(target_thread_id)
        rebind = self._rebinder(source_thread_id, target_thread_id)
        proc = _values.copy_thread_rebound(source_thread_id, target_thread_id, rebind)
        self._run(proc, write=True)

    def list_threads(
        self,
        *,
        filter: Mapping[str, Any] | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[ThreadInfo]:
        wanted = validate_filter(filter)
        return self._run(_sql.list_threads(wanted, limit, offset, self._load_thread_metadata))

    def prune(self, thread_ids: Sequence[str], *, keep_last: int) -> int:
        _sql.check_prune_args(thread_ids, keep_last)
        return self._run(_sql.prune(thread_ids, keep_last), write=True)

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
        proc = _sql.rewind(
            thread_id, ns, checkpoint_id, expected_head, lease, expires_at, keep_writes
        )
        return self._run(proc, write=True)

    def sweep_expired(self) -> int:
        return self._run(_sql.sweep_expired(time.time()), write=True)

    # ------------------------------------------------------------------ re-encryption

    def _thread_page(self, after: str | None, limit: int) -> list[str]:
        return self._run(_values.thread_page(after, limit))

    def _stored_page(
        self, column: str, thread_id: str, after: tuple[Any, ...] | None, limit: int
    ) -> list[StoredValue]:
        return self._run(_values.stored_page(column, thread_id, after, limit))

    def _replace_stored(self, thread_id: str, updates: Sequence[tuple[StoredValue, bytes]]) -> int:
        return self._run(_values.replace_stored(thread_id, updates), write=True)
