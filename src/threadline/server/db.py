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

from .connections import Connections
from .notify import CHANNEL, Notifier

__all__ = ["PG_FUNCTIONS", "SCHEMA", "Database", "Tx", "json_contains", "open_database"]

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
        created_at TEXT NOT NULL, updated_at TEXT NOT NULL,
        live_events INTEGER NOT NULL DEFAULT 1)""",
    "CREATE INDEX IF NOT EXISTS tl_runs_queue ON tl_runs (status, enqueued)",
    "CREATE INDEX IF NOT EXISTS tl_runs_thread ON tl_runs (thread_id, enqueued)",
    """CREATE UNIQUE INDEX IF NOT EXISTS tl_runs_one_running
        ON tl_runs (thread_id) WHERE status = 'running'""",
    """CREATE TABLE IF NOT EXISTS tl_run_events (
        run_id TEXT NOT NULL, seq INTEGER NOT NULL, event TEXT NOT NULL, data TEXT NOT NULL,
        PRIMARY KEY (run_id, seq))""",
    """CREATE TABLE IF NOT EXISTS tl_maintenance (
        name TEXT PRIMARY KEY, owner TEXT, next_at DOUBLE PRECISION NOT NULL)""",
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
    # A thread's own stream events (state updates), by time in microseconds: thread_events.py.
    """CREATE TABLE IF NOT EXISTS tl_thread_events (
        thread_id TEXT NOT NULL, at BIGINT NOT NULL, event TEXT NOT NULL, data TEXT NOT NULL,
        PRIMARY KEY (thread_id, at))""",
    # Crons: a run's options and a schedule; next_run_date (epoch seconds) is when it is next
    # due, the one column replicas race for (crons.py).
    """CREATE TABLE IF NOT EXISTS tl_crons (
        cron_id TEXT PRIMARY KEY, assistant_id TEXT NOT NULL, thread_id TEXT,
        schedule TEXT NOT NULL, timezone TEXT, payload TEXT NOT NULL, metadata TEXT NOT NULL,
        on_run_completed TEXT, end_time DOUBLE PRECISION, enabled INTEGER NOT NULL,
        next_run_date DOUBLE PRECISION, created_at TEXT NOT NULL, updated_at TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS tl_crons_due ON tl_crons (next_run_date)",
]


# PostgreSQL only: the two transactions every run makes, as functions. A transaction from
# psycopg costs ~0.5 ms of the server's CPU (BEGIN, statements, COMMIT through the pipeline);
# one call of a function ~0.09 ms. Each statement inside takes a new snapshot, so what a
# statement sees after taking a lock is what was committed before it got the lock, as in
# runs.py's SQLite transactions. Named by version: replicas of an older release keep theirs.
PG_FUNCTIONS = [
    """CREATE OR REPLACE FUNCTION tl_create_run_v1(
        p_run_id text, p_thread_id text, p_assistant_id text, p_graph_id text, p_kwargs text,
        p_metadata text, p_strategy text, p_create_thread boolean, p_live integer,
        p_due double precision, p_delayed boolean, p_now text, p_owner text,
        p_lease_until double precision, p_ttl_strategy text, p_ttl_minutes double precision,
        p_channel text, p_origin text)
    RETURNS TABLE (o_run_id text, o_thread_id text, o_assistant_id text, o_graph_id text,
        o_status text, o_kwargs text, o_metadata text, o_strategy text, o_attempt integer,
        o_created_at text, o_updated_at text, o_result text, o_live integer,
        o_cancelled text[])
    LANGUAGE plpgsql AS $$
    DECLARE
        v_inflight text[];
        v_claimed boolean;
        v_created boolean;
    BEGIN
        -- The thread row's lock first: runs of one thread are created one after another.
        UPDATE tl_threads SET updated_at = p_now, status = 'busy',
            graph_id = COALESCE(graph_id, p_graph_id) WHERE thread_id = p_thread_id;
        IF NOT FOUND THEN
            IF NOT p_create_thread THEN
                RAISE EXCEPTION '%', p_thread_id USING ERRCODE = 'TL404';
            END IF;
            -- Another run may be creating it too: whoever inserts it first, both go on.
            INSERT INTO tl_threads AS t (thread_id, metadata, status, graph_id, created_at,
                updated_at) VALUES (p_thread_id, '{}', 'busy', p_graph_id, p_now, p_now)
            ON CONFLICT (thread_id) DO UPDATE SET updated_at = p_now, status = 'busy',
                graph_id = COALESCE(t.graph_id, p_graph_id)
            RETURNING xmax = 0 INTO v_created;
            IF v_created AND p_ttl_minutes IS NOT NULL THEN  -- the config's default TTL
                INSERT INTO tl_thread_ttl (thread_id, strategy, minutes, expires_at)
                VALUES (p_thread_id, p_ttl_strategy, p_ttl_minutes,
                    extract(epoch FROM clock_timestamp()) + p_ttl_minutes * 60)
                ON CONFLICT (thread_id) DO NOTHING;
            END IF;
        END IF;
        SELECT COALESCE(array_agg(r.run_id ORDER BY r.enqueued), '{}') INTO v_inflight
            FROM tl_runs r WHERE r.thread_id = p_thread_id
            AND r.status IN ('pending', 'running');
        IF cardinality(v_inflight) > 0 AND p_strategy = 'reject' THEN
            RAISE EXCEPTION '%', v_inflight[1] USING ERRCODE = 'TL409';
        END IF;
        o_cancelled := '{}';
        IF cardinality(v_inflight) > 0 AND p_strategy IN ('interrupt', 'rollback') THEN
            UPDATE tl_runs SET cancel = p_strategy, updated_at = p_now
                WHERE run_id = ANY (v_inflight);
            UPDATE tl_runs SET status = 'interrupted'
                WHERE run_id = ANY (v_inflight) AND status = 'pending';
            PERFORM pg_notify(p_channel, p_origin || '|' || k)
                FROM unnest(v_inflight) AS x(id),
                LATERAL (VALUES ('cancel:' || x.id || ':' || p_strategy), ('run:' || x.id)) AS n(k);
            o_cancelled := v_inflight;
        END IF;
        v_claimed := p_owner IS NOT NULL AND cardinality(v_inflight) = 0 AND NOT p_delayed;
        INSERT INTO tl_runs (run_id, thread_id, assistant_id, graph_id, status, kwargs,
            metadata, multitask_strategy, attempt, enqueued, created_at, updated_at,
            live_events, owner, lease_until)
        VALUES (p_run_id, p_thread_id, p_assistant_id, p_graph_id,
            CASE WHEN v_claimed THEN 'running' ELSE 'pending' END, p_kwargs, p_metadata,
            p_strategy, CASE WHEN v_claimed THEN 1 ELSE 0 END, p_due, p_now, p_now, p_live,
            CASE WHEN v_claimed THEN p_owner END, CASE WHEN v_claimed THEN p_lease_until END)
        RETURNING tl_runs.run_id, tl_runs.thread_id, tl_runs.assistant_id, tl_runs.graph_id,
            tl_runs.status, tl_runs.kwargs, tl_runs.metadata, tl_runs.multitask_strategy,
            tl_runs.attempt, tl_runs.created_at, tl_runs.updated_at, tl_runs.result,
            tl_runs.live_events
        INTO o_run_id, o_thread_id, o_assistant_id, o_graph_id, o_status, o_kwargs,
            o_metadata, o_strategy, o_attempt, o_created_at, o_updated_at, o_result, o_live;
        IF NOT v_claimed THEN
            PERFORM pg_notify(p_channel, p_origin || '|'
                || CASE WHEN p_delayed THEN 'due:' || p_due::text ELSE 'queue' END);
        END IF;
        RETURN NEXT;
    END $$""",
    """CREATE OR REPLACE FUNCTION tl_finish_run_v1(
        p_run_id text, p_thread_id text, p_owner text, p_status text, p_result text,
        p_now text, p_graph_id text, p_thread_status text, p_values text, p_interrupts text,
        p_seqs integer[], p_events text[], p_data text[], p_delete boolean, p_channel text,
        p_origin text)
    RETURNS text
    LANGUAGE plpgsql AS $$
    DECLARE
        v_status text;
    BEGIN
        IF cardinality(p_seqs) > 0 THEN
            INSERT INTO tl_run_events (run_id, seq, event, data)
                SELECT p_run_id, u.s, u.e, u.d FROM unnest(p_seqs, p_events, p_data) AS u(s, e, d)
                ON CONFLICT (run_id, seq) DO NOTHING;
        END IF;
        -- The thread row before the run's (the order creating a run takes them in), so a run
        -- queued behind this one meanwhile is seen below.
        PERFORM 1 FROM tl_threads WHERE thread_id = p_thread_id FOR UPDATE;
        IF p_delete THEN  -- rolled back: the run goes with its events, as one change
            DELETE FROM tl_runs
                WHERE run_id = p_run_id AND owner = p_owner AND status = 'running';
            IF NOT FOUND THEN
                RETURN NULL;  -- not this worker's any more
            END IF;
            DELETE FROM tl_run_events WHERE run_id = p_run_id;
        ELSE
            UPDATE tl_runs SET status = p_status, result = p_result, updated_at = p_now,
                owner = NULL WHERE run_id = p_run_id AND owner = p_owner AND status = 'running';
            IF NOT FOUND THEN  -- not this worker's any more
                IF cardinality(p_seqs) > 0 THEN
                    PERFORM pg_notify(p_channel, p_origin || '|events:' || p_run_id);
                END IF;
                RETURN NULL;
            END IF;
        END IF;
        -- Followers of the run's events listen for run:<id> too: one announcement for both.
        PERFORM pg_notify(p_channel, p_origin || '|run:' || p_run_id);
        UPDATE tl_threads SET status = CASE WHEN EXISTS (SELECT 1 FROM tl_runs
                WHERE thread_id = p_thread_id AND status = 'pending') THEN 'busy'
                ELSE p_thread_status END,
            updated_at = p_now, graph_id = p_graph_id,
            "values" = CASE WHEN p_values IS NULL THEN "values" ELSE p_values END,
            interrupts = CASE WHEN p_values IS NULL THEN interrupts ELSE p_interrupts END
            WHERE thread_id = p_thread_id RETURNING status INTO v_status;
        IF v_status = 'busy' THEN
            PERFORM pg_notify(p_channel, p_origin || '|queue');
        END IF;
        RETURN COALESCE(v_status, '');
    END $$""",
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
    """A transaction: statements that commit together, and the keys to announce once they do."""

    kind: str  # the database's: "sqlite" or "postgres"

    async def execute(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...

    def publish(self, key: str) -> None:
        """Announce ``key`` (see :mod:`~threadline.server.notify`) when the transaction commits."""

    def wake(self, key: str) -> None:
        """Wake this replica's waiters of ``key`` when the transaction commits, announcing it
        to no other replica: for a key a statement of the transaction announced itself (a
        ``pg_notify`` in a function of the schema, delivered when the transaction commits)."""


class Database(Protocol):
    """A connector: single statements, transactions, and announcements of changes."""

    kind: str
    notifier: Notifier

    async def execute(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...

    async def change(self, sql: str, args: Sequence[Any], *keys: str) -> None:
        """Run one INSERT/UPDATE/DELETE (no RETURNING) and announce ``keys`` once it commits."""

    def transaction(self) -> contextlib.AbstractAsyncContextManager[Tx]: ...

    async def publish(self, *keys: str) -> None:
        """Announce ``keys`` now, here and to the other replicas."""

    async def close(self) -> None: ...


class _SqliteTx:
    kind = "sqlite"

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.keys: list[str] = []

    async def execute(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        async with self.conn.execute(sql, tuple(args)) as cur:
            return [tuple(r) for r in await cur.fetchall()]

    def publish(self, key: str) -> None:
        self.keys.append(key)

    def wake(self, key: str) -> None:
        self.keys.append(key)  # one replica per SQLite file: announcing is waking


class SqliteDatabase:
    """One aiosqlite connection; transactions are ``BEGIN IMMEDIATE`` (one writer).

    One replica per SQLite file, so announcements stay in this process.
    """

    kind = "sqlite"

    def __init__(self, conn: Any) -> None:
        self._conn = conn
        self._lock = asyncio.Lock()
        self.notifier = Notifier()

    async def execute(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        # Autocommit: one statement is its own transaction.
        async with self._lock, self._conn.execute(sql, tuple(args)) as cur:
            return [tuple(r) for r in await cur.fetchall()]

    async def change(self, sql: str, args: Sequence[Any], *keys: str) -> None:
        await self.execute(sql, args)
        await self.publish(*keys)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Tx]:
        tx = _SqliteTx(self._conn)
        async with self._lock:
            try:
                await _to_the_end(self._conn.execute("BEGIN IMMEDIATE"))
                yield tx
            except BaseException:
                if self._conn.in_transaction:
                    await _to_the_end(self._conn.execute("ROLLBACK"))
                raise
            await _to_the_end(self._conn.execute("COMMIT"))
        await self.publish(*tx.keys)

    async def publish(self, *keys: str) -> None:
        for key in dict.fromkeys(keys):
            self.notifier.wake(key)

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
    kind = "postgres"

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.keys: list[str] = []
        self.local: list[str] = []

    async def execute(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        # No arguments, no placeholders: the DDL's own % signs stay as they are.
        cur = await self.conn.execute(sql.replace("?", "%s"), tuple(args) or None)
        if not _returns_rows(sql):
            return []  # in a pipeline: sent with the next statement that is read
        return [tuple(r) for r in await cur.fetchall()]

    def publish(self, key: str) -> None:
        self.keys.append(key)

    def wake(self, key: str) -> None:
        self.local.append(key)


def _returns_rows(sql: str) -> bool:
    upper = sql.lstrip().upper()
    if upper.startswith(("CREATE", "ALTER", "DROP")):  # DDL (a function's body may say RETURNING)
        return False
    return upper.startswith(("SELECT", "WITH")) or " RETURNING " in upper


_NOTIFY = "SELECT pg_notify(%s, p) FROM unnest(%s::text[]) AS p"


class PostgresDatabase:
    """A psycopg pool of autocommit connections: a single statement is one round trip.

    Announcements go out with ``NOTIFY`` inside the transaction, so other replicas hear of a
    change only once it is committed; this replica's waiters are woken after the commit.
    """

    kind = "postgres"

    def __init__(self, pool: Any, notifier: Notifier) -> None:
        self._pool = pool
        self.notifier = notifier

    async def execute(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        async with self._pool.connection() as conn:
            cur = await conn.execute(sql.replace("?", "%s"), tuple(args))
            if cur.description is None:
                return []
            return [tuple(r) for r in await cur.fetchall()]

    async def change(self, sql: str, args: Sequence[Any], *keys: str) -> None:
        if not keys:
            await self.execute(sql, args)
            return
        # One statement: a data-modifying CTE runs even though nothing reads it, and its
        # NOTIFY is delivered when the statement commits.
        unique = list(dict.fromkeys(keys))
        payloads = [self.notifier.payload(k) for k in unique]
        wrapped = f"WITH _change AS ({sql.replace('?', '%s')}) {_NOTIFY}"
        async with self._pool.connection() as conn:
            await conn.execute(wrapped, (*args, CHANNEL, payloads))
        for key in unique:
            self.notifier.wake(key)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Tx]:
        async with self._pool.connection() as conn, conn.pipeline():
            # Pipeline mode: BEGIN, statements whose results are not read yet, NOTIFY and
            # COMMIT share network writes (each write to PostgreSQL is a costly syscall).
            tx = _PostgresTx(conn)
            async with conn.transaction():
                yield tx
                if tx.keys:
                    payloads = [self.notifier.payload(k) for k in dict.fromkeys(tx.keys)]
                    await conn.execute(_NOTIFY, (CHANNEL, payloads))
        for key in dict.fromkeys([*tx.keys, *tx.local]):
            self.notifier.wake(key)

    async def publish(self, *keys: str) -> None:
        if not keys:
            return
        unique = list(dict.fromkeys(keys))
        async with self._pool.connection() as conn:
            await conn.execute(_NOTIFY, (CHANNEL, [self.notifier.payload(k) for k in unique]))
        for key in unique:
            self.notifier.wake(key)

    async def close(self) -> None:
        await self.notifier.close()
        await self._pool.close()


async def open_database(target: str | Connections) -> Database:
    """Connect to the server's database and create its tables if missing.

    ``target``: a URL, ``sqlite:///path.db`` or ``postgresql://...``, or
    :class:`~threadline.server.connections.Connections` for the pool size, a direct URL to
    ``LISTEN`` on and prepared statements. Safe when several replicas start at once
    (PostgreSQL: the DDL runs under a transaction-scoped advisory lock, so also through a
    transaction-mode pooler).
    """
    connections = target if isinstance(target, Connections) else Connections(target)
    url = connections.url
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
    if connections.is_postgres:
        from psycopg_pool import AsyncConnectionPool

        pool = AsyncConnectionPool(
            url,
            min_size=connections.min_table_connections,
            max_size=connections.pool_size,
            open=False,
            kwargs=connections.table_connection_kwargs(),
        )
        await pool.open(wait=True)
        notifier = Notifier()
        notifier.listen(connections.listen)
        db = PostgresDatabase(pool, notifier)
        async with db.transaction() as tx:
            await tx.execute("SELECT pg_advisory_xact_lock(7212026)")
            for statement in [*SCHEMA, *PG_FUNCTIONS]:
                await tx.execute(statement)
        return db
    raise ValueError(
        f"unsupported database URL {url!r}: use sqlite:///path/to/file.db or postgresql://..."
    )
