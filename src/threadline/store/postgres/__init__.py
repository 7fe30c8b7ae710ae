"""PostgreSQL stores: :class:`PostgresStore` here, :class:`AsyncPostgresStore` in :mod:`.aio`.

Needs ``threadline[postgres]``. The tables (``threadline_store``, ``threadline_store_vectors``)
live in ``schema`` beside the checkpointers' and are versioned on their own.
"""

from __future__ import annotations

import threading
from types import TracebackType
from typing import Any

import psycopg
from psycopg.rows import tuple_row
from psycopg_pool import ConnectionPool
from typing_extensions import Self, TypedDict

from ...checkpoint.postgres import connection_kwargs
from ...errors import SchemaMissingError
from .. import _sql
from .._sqlstore import SqlStore

__all__ = ["AsyncPostgresStore", "PoolConfig", "PostgresStore"]


class PoolConfig(TypedDict, total=False):
    """Pool settings, as LangGraph's ``PoolConfig``: ``from_conn_string(url, pool_min_size=...,
    pool_max_size=...)`` takes the same values."""

    min_size: int
    max_size: int
    kwargs: dict[str, Any]


EXISTS = (
    "SELECT 1 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid ="
    " c.relnamespace WHERE n.nspname = %s AND c.relname = 'threadline_store_migrations'"
)


def missing(schema: str) -> SchemaMissingError:
    return SchemaMissingError(
        f"schema {schema!r} has no up-to-date threadline store tables and the store was created"
        " with auto_setup=False; call store.setup() once"
    )


_CURSOR_ATTR = "_threadline_store_cursor"


def cursor_of(conn: Any, holder: Any = None) -> Any:
    """The stores' cursor on ``conn`` (sync or async), made on first use and kept.

    A new cursor sets up its adapters and result loaders anew, which costs a get about a
    third of a round trip. A cursor serves one batch at a time: one on a connection a pool
    lent (kept as an attribute of the connection, so that the two are garbage together), or
    one ``holder`` keeps for its own connection under its lock (several stores may share a
    connection, each with its lock, never one cursor).
    """
    owner = conn if holder is None else holder
    cur = getattr(owner, _CURSOR_ATTR, None)
    if cur is None or cur.closed:
        cur = conn.cursor(row_factory=tuple_row)
        setattr(owner, _CURSOR_ATTR, cur)
    return cur


def drive(conn: psycopg.Connection[Any], proc: _sql.Proc, prepare: bool, cur: Any) -> Any:
    """Run ``proc`` on ``conn`` with ``cur`` (:func:`cursor_of`); the async twin in :mod:`.aio`
    mirrors it line by line."""
    try:
        step = next(proc)
        while True:
            if step.many:
                cur.executemany(step.sql, step.params, returning=False)
                rows: Any = []
            else:
                cur.execute(step.sql, step.params, prepare=prepare)
                rows = cur.fetchall() if cur.pgresult and cur.pgresult.status == 2 else []
            step = proc.send(rows)
    except StopIteration as stop:
        return stop.value
    finally:
        proc.close()


class PostgresStore(SqlStore):
    """A :class:`~threadline.store.base.BaseStore` in PostgreSQL, for blocking code.

    Args:
        conn_or_pool: a :class:`psycopg_pool.ConnectionPool` (each batch borrows a connection)
            or one :class:`psycopg.Connection` (batches take turns), in autocommit mode.
        schema: the PostgreSQL schema holding the tables.
        auto_setup: create or migrate the tables on first use (default).
        prepare: use server-side prepared statements; ``False`` behind PgBouncer.
        index, ttl, serde: see :class:`~threadline.store.sqlite.SqliteStore`.
    """

    def __init__(
        self,
        conn_or_pool: psycopg.Connection[Any] | ConnectionPool[Any],
        *,
        schema: str = "public",
        auto_setup: bool = True,
        prepare: bool = True,
        **options: Any,
    ) -> None:
        if not isinstance(conn_or_pool, psycopg.Connection | ConnectionPool):
            raise TypeError(
                "PostgresStore needs a psycopg.Connection or a psycopg_pool.ConnectionPool, got"
                f" {type(conn_or_pool).__name__}; for async ones use"
                " threadline.store.postgres.aio.AsyncPostgresStore, for a URL from_conn_string"
            )
        super().__init__(**options)
        self._flavor = _sql.PostgresFlavor(schema)
        self.schema = schema
        self.auto_setup = auto_setup
        self.prepare = prepare
        self._target = conn_or_pool
        self._lock = threading.Lock()
        self._ready = False
        self._owned: ConnectionPool[Any] | None = None

    @classmethod
    def from_conn_string(
        cls,
        conn_string: str,
        *,
        pool_min_size: int = 1,
        pool_max_size: int = 10,
        synchronous_commit: str | None = None,
        **options: Any,
    ) -> Self:
        """A store over a new connection pool to ``conn_string``, closed with the store.

        ``synchronous_commit`` sets that PostgreSQL option on the pool's connections (None:
        the server's; ``"off"``: a put returns before its commit reaches the disk, several times
        faster, and a database crash may lose the last moments of puts, see
        :func:`~threadline.checkpoint.postgres.connection_kwargs`)."""
        pool: ConnectionPool[Any] = ConnectionPool(
            conn_string,
            min_size=pool_min_size,
            max_size=pool_max_size,
            kwargs=connection_kwargs(options.get("prepare", True), synchronous_commit),
            open=False,
            name="threadline-store",
        )
        pool.open(wait=True)
        try:
            store = cls(pool, **options)
        except BaseException:
            pool.close()
            raise
        store._owned = pool
        return store

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop the sweeper and close the pool if the store opened it."""
        self.stop_ttl_sweeper()
        if self._owned is not None:
            self._owned.close()

    def setup(self) -> None:
        """Create or migrate the store's tables, under an advisory lock (replicas may race)."""
        self._execute(self._flavor.setup(), True)
        self._ready = True

    def _execute(self, proc: _sql.Proc, write: bool) -> Any:
        if isinstance(self._target, ConnectionPool):
            with self._target.connection() as conn:
                return self._on(conn, proc, write, cursor_of(conn))
        with self._lock:
            return self._on(self._target, proc, write, cursor_of(self._target, self))

    def _on(self, conn: psycopg.Connection[Any], proc: _sql.Proc, write: bool, cur: Any) -> Any:
        if write or not conn.autocommit:
            with conn.transaction():
                return drive(conn, proc, self.prepare, cur)
        return drive(conn, proc, self.prepare, cur)

    def _run(self, proc: _sql.Proc, write: bool) -> Any:
        if not self._ready:
            version = self._execute(
                _sql.schema_version(self._flavor, EXISTS, (self.schema,)), False
            )
            if version != len(self._flavor.migrations):
                if not self.auto_setup:
                    raise missing(self.schema)
                self.setup()
            self._ready = True
        return self._execute(proc, write)


def __getattr__(name: str) -> Any:
    if name == "AsyncPostgresStore":
        from .aio import AsyncPostgresStore

        return AsyncPostgresStore
    raise AttributeError(name)
