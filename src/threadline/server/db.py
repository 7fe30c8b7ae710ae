"""The server's own tables (threads, runs, run events) on SQLite or PostgreSQL.

The runs table is the queue: HTTP handlers insert runs, workers claim them. The SQL is written
once with ``?`` placeholders; the PostgreSQL connector rewrites them to ``%s``. One running run
per thread is enforced by a partial unique index, so it holds across replicas.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Sequence
from typing import Any, Protocol

__all__ = ["SCHEMA", "Database", "Tx", "json_contains", "open_database"]

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
    # Assistants: the current version of each, and every version it ever had.
    """CREATE TABLE IF NOT EXISTS tl_assistants (
        assistant_id TEXT PRIMARY KEY, graph_id TEXT NOT NULL, name TEXT NOT NULL,
        description TEXT, config TEXT NOT NULL, context TEXT NOT NULL, metadata TEXT NOT NULL,
        version INTEGER NOT NULL, created_at TEXT NOT NULL, updated_at TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS tl_assistants_graph ON tl_assistants (graph_id, created_at)",
    """CREATE TABLE IF NOT EXISTS tl_assistant_versions (
        assistant_id TEXT NOT NULL, version INTEGER NOT NULL, graph_id TEXT NOT NULL,
        name TEXT NOT NULL, description TEXT, config TEXT NOT NULL, context TEXT NOT NULL,
        metadata TEXT NOT NULL, created_at TEXT NOT NULL, PRIMARY KEY (assistant_id, version))""",
    # A thread's time to live: its own table, so tl_threads needs no ALTER on either database.
    """CREATE TABLE IF NOT EXISTS tl_thread_ttl (
        thread_id TEXT PRIMARY KEY, strategy TEXT NOT NULL, minutes DOUBLE PRECISION NOT NULL,
        expires_at DOUBLE PRECISION NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS tl_thread_ttl_expiry ON tl_thread_ttl (expires_at)",
]


def json_contains(document: Any, wanted: Any) -> bool:
    """Whether JSON ``document`` contains ``wanted``, as PostgreSQL's ``jsonb @>`` decides."""
    if isinstance(wanted, dict):
        return isinstance(document, dict) and all(
            k in document and json_contains(document[k], v) for k, v in wanted.items()
        )
    if isinstance(wanted, list):
        return isinstance(document, list) and all(
            any(json_contains(d, w) for d in document) for w in wanted
        )
    if isinstance(wanted, bool) or isinstance(document, bool):
        return type(wanted) is type(document) and wanted == document
    if isinstance(wanted, (int, float)) and isinstance(document, (int, float)):
        return wanted == document
    return type(wanted) is type(document) and wanted == document


def sqlite_json_contains(document: str | None, wanted: str | None) -> int:
    """SQLite's ``tl_json_contains(column, ?)``: :func:`json_contains` on JSON texts."""
    if document is None or wanted is None:
        return 0
    try:
        return int(json_contains(json.loads(document), json.loads(wanted)))
    except ValueError:  # not JSON: contains nothing
        return 0


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
            await self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield _SqliteTx(self._conn)
            except BaseException:
                await self._conn.execute("ROLLBACK")
                raise
            await self._conn.execute("COMMIT")

    async def close(self) -> None:
        await self._conn.close()


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
        # JSON containment (PostgreSQL's jsonb @>) for metadata and values filters.
        await conn.create_function("tl_json_contains", 2, sqlite_json_contains, deterministic=True)
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
