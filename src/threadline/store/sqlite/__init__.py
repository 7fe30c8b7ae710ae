"""SQLite stores: :class:`SqliteStore` here, :class:`AsyncSqliteStore` in :mod:`.aio`.

They may share a database file with the SQLite checkpointers (their tables are separate and
versioned on their own); connections are configured the same way (WAL, busy timeout).
"""

from __future__ import annotations

import os
import sqlite3
import threading
from types import TracebackType
from typing import Any

from typing_extensions import Self

from ...checkpoint.sqlite import _sql as saver_sql
from ...checkpoint.sqlite import connect
from ...errors import SchemaMissingError
from .. import _sql
from .._sqlstore import SqlStore

__all__ = ["AsyncSqliteStore", "SqliteStore"]

_EXISTS = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?"
_EXISTS_PARAMS = ("threadline_store_migrations",)


def drive(conn: sqlite3.Connection, proc: _sql.Proc, write: bool) -> Any:
    """Run ``proc`` on ``conn``; when ``write``, as one ``BEGIN IMMEDIATE`` transaction."""
    cur = conn.cursor()
    cur.row_factory = None
    try:
        if write:
            cur.execute("BEGIN IMMEDIATE")
        rows: Any = None
        while True:
            try:
                step = proc.send(rows)
            except StopIteration as stop:
                result = stop.value
                break
            if step.many:
                cur.executemany(step.sql, step.params)
                rows = []
            else:
                rows = cur.execute(step.sql, step.params).fetchall()
        if write:
            conn.commit()
        return result
    except BaseException:
        if write and conn.in_transaction:
            conn.rollback()
        raise
    finally:
        proc.close()
        cur.close()


def prepare(conn: sqlite3.Connection, settings: Any, force: bool) -> None:
    """Configure the connection as the savers do, then create or check the store's tables."""
    saver_sql._configure_patiently(conn, settings)
    flavor = _sql.SqliteFlavor()
    if not force:
        version = drive(conn, _sql.schema_version(flavor, _EXISTS, _EXISTS_PARAMS), False)
        if version == len(flavor.migrations):
            return
        if not settings.auto_setup:
            raise SchemaMissingError(
                "the SQLite database has no up-to-date threadline store tables and the store"
                " was created with auto_setup=False; call store.setup() once"
            )
    drive(conn, flavor.setup(), True)


class SqliteStore(SqlStore):
    """A :class:`~threadline.store.base.BaseStore` in a SQLite file.

    ``SqliteStore.from_conn_string("memory.db")`` opens (and owns) a connection: use the result
    directly and ``close()`` it, or ``with SqliteStore.from_conn_string(...) as store:``.
    ``SqliteStore(conn)`` uses your ``sqlite3.Connection`` (opened with
    ``check_same_thread=False`` if several threads use the store) and never closes it.

    Args:
        index: semantic search settings (see :class:`~threadline.store.base.IndexConfig`).
        ttl: time-to-live settings (see :class:`~threadline.store.base.TTLConfig`).
        serde: the serializer for values (default: threadline's MessagePack serializer).
        auto_setup: create the tables on first use (default). With ``False``, call
            :meth:`setup` first.
        busy_timeout: seconds to wait for another connection's write lock.
    """

    def __init__(
        self,
        conn: sqlite3.Connection,
        *,
        auto_setup: bool = True,
        busy_timeout: float = 30.0,
        **options: Any,
    ) -> None:
        if not isinstance(conn, sqlite3.Connection):
            raise TypeError(
                f"SqliteStore needs a sqlite3.Connection, got {type(conn).__name__}; for"
                " aiosqlite use threadline.store.sqlite.aio.AsyncSqliteStore"
            )
        super().__init__(**options)
        self.conn = conn
        self._flavor = _sql.SqliteFlavor()
        self._settings = saver_sql.Settings.make("NORMAL", busy_timeout, auto_setup)
        self._lock = threading.RLock()
        self._ready = False
        self._owns_conn = False

    @classmethod
    def from_conn_string(cls, conn_string: str | os.PathLike[str], **options: Any) -> Self:
        """Open ``conn_string`` (a path, ``":memory:"`` or a ``file:`` URI)."""
        conn = connect(conn_string, float(options.get("busy_timeout", 30.0)))
        try:
            store = cls(conn, **options)
        except BaseException:
            conn.close()
            raise
        store._owns_conn = True
        return store

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def setup(self) -> None:
        """Create or migrate the store's tables. Idempotent; safe across processes."""
        with self._lock:
            prepare(self.conn, self._settings, True)
            self._ready = True

    def close(self) -> None:
        """Stop the sweeper and close the connection if the store opened it."""
        self.stop_ttl_sweeper()
        if self._owns_conn:
            with self._lock:
                self.conn.close()

    def _run(self, proc: _sql.Proc, write: bool) -> Any:
        with self._lock:
            if not self._ready:
                prepare(self.conn, self._settings, False)
                self._ready = True
            return drive(self.conn, proc, write)


def __getattr__(name: str) -> Any:
    if name == "AsyncSqliteStore":
        from .aio import AsyncSqliteStore

        return AsyncSqliteStore
    raise AttributeError(name)
