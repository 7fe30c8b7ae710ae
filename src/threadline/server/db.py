"""The server's own tables (threads, runs, run events) on SQLite or PostgreSQL.

The runs table is the queue: HTTP handlers insert runs, workers claim them. The SQL is written
once with ``?`` placeholders; the PostgreSQL connector rewrites them to ``%s``. One running run
per thread is enforced by a partial unique index, so it holds across replicas.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any, Protocol

__all__ = ["SCHEMA", "Database", "Tx", "open_database"]

SCHEMA = [
    """CREATE TABLE IF NOT EXISTS tl_threads (
        thread_id TEXT PRIMARY KEY, metadata TEXT NOT NULL, status TEXT NOT NULL,
        "values" TEXT, interrupts TEXT, graph_id TEXT,
        created_at TEXT NOT NULL, updated_at TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS tl_runs (
        run_id TEXT PRIMARY KEY, thread_id TEXT NOT NULL, assistant_id TEXT NOT NULL,
        graph_id TEXT NOT NULL, status TEXT NOT NULL, kwargs TEXT NOT NULL,
        metadata TEXT NOT NULL, multitask_strategy TEXT NOT NULL, owner TEXT,
        attempt INTEGER NOT NULL DEFAULT 0, lease_until DOUBLE PRECISION, cancel TEXT,
        result TEXT, enqueued DOUBLE PRECISION NOT NULL,
        created_at TEXT NOT NULL, updated_at TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS tl_runs_queue ON tl_runs (status, enqueued)",
    "CREATE INDEX IF NOT EXISTS tl_runs_thread ON tl_runs (thread_id, enqueued)",
    """CREATE UNIQUE INDEX IF NOT EXISTS tl_runs_one_running
        ON tl_runs (thread_id) WHERE status = 'running'""",
    """CREATE TABLE IF NOT EXISTS tl_run_events (
        run_id TEXT NOT NULL, seq INTEGER NOT NULL, event TEXT NOT NULL, data TEXT NOT NULL,
        PRIMARY KEY (run_id, seq))""",
]


class Tx(Protocol):
    """A transaction: statements that commit together."""

    async def execute(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...


class Database(Protocol):
    """A connector: single statements, transactions, and a wake-up on changes."""

    kind: str

    async def execute(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...

    def transaction(self) -> contextlib.AbstractAsyncContextManager[Tx]: ...

    async def close(self) -> None: ...


class _SqliteTx:
    def __init__(self, conn: Any) -> None:
        self.conn = conn

    async def execute(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        async with self.conn.execute(sql, tuple(args)) as cur:
            return [tuple(r) for r in await cur.fetchall()]


class SqliteDatabase:
    """One aiosqlite connection; transactions are ``BEGIN IMMEDIATE`` (one writer)."""

    kind = "sqlite"

    def __init__(self, conn: Any) -> None:
        self._conn = conn
        self._lock = asyncio.Lock()

    async def execute(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        async with self.transaction() as tx:
            return await tx.execute(sql, args)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Tx]:
        async with self._lock:
            try:
                await _to_the_end(self._conn.execute("BEGIN IMMEDIATE"))
                yield _SqliteTx(self._conn)
            except BaseException:
                if self._conn.in_transaction:
                    await _to_the_end(self._conn.execute("ROLLBACK"))
                raise
            await _to_the_end(self._conn.execute("COMMIT"))

    async def close(self) -> None:
        await self._conn.close()


async def _to_the_end(statement: Any) -> None:
    """Await ``statement`` even while this task is being cancelled, then re-raise the cancel.

    A streaming response whose client went away is cancelled mid-transaction, and anyio
    cancels every await after that: an unfinished ROLLBACK would leave the connection in a
    transaction (holding SQLite's write lock) for everyone after.
    """
    task = asyncio.ensure_future(statement)
    cancelled = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.cancelled():
                raise
            cancelled = True
    task.result()
    if cancelled:
        raise asyncio.CancelledError


class _PostgresTx:
    def __init__(self, conn: Any) -> None:
        self.conn = conn

    async def execute(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        cur = await self.conn.execute(sql.replace("?", "%s"), tuple(args))
        if cur.description is None:
            return []
        return [tuple(r) for r in await cur.fetchall()]


class PostgresDatabase:
    """A psycopg connection pool; each transaction on a connection of its own."""

    kind = "postgres"

    def __init__(self, pool: Any) -> None:
        self._pool = pool

    async def execute(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        async with self.transaction() as tx:
            return await tx.execute(sql, args)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Tx]:
        async with self._pool.connection() as conn, conn.transaction():
            yield _PostgresTx(conn)

    async def close(self) -> None:
        await self._pool.close()


async def open_database(url: str) -> Database:
    """Connect to the server's database and create its tables if missing.

    ``sqlite:///path.db`` or ``postgresql://...``. Safe when several replicas start at once
    (PostgreSQL: the DDL runs under an advisory lock).
    """
    db: Database
    if url.startswith("sqlite:"):
        import aiosqlite

        path = url.split("sqlite:///", 1)[1] if url.startswith("sqlite:///") else url[7:]
        conn = await aiosqlite.connect(path or ":memory:", isolation_level=None)
        await conn.execute("PRAGMA journal_mode=WAL")
        await conn.execute("PRAGMA busy_timeout=10000")
        db = SqliteDatabase(conn)
        for statement in SCHEMA:
            await db.execute(statement)
        return db
    if url.startswith(("postgresql:", "postgres:")):
        from psycopg_pool import AsyncConnectionPool

        pool = AsyncConnectionPool(url, min_size=1, max_size=10, open=False)
        await pool.open(wait=True)
        db = PostgresDatabase(pool)
        async with db.transaction() as tx:
            await tx.execute("SELECT pg_advisory_xact_lock(7212026)")
            for statement in SCHEMA:
                await tx.execute(statement)
        return db
    raise ValueError(
        f"unsupported database URL {url!r}: use sqlite:///path/to/file.db or postgresql://..."
    )
