"""``AsyncPostgresStore``: the PostgreSQL store for async code."""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool
from typing_extensions import Self

from ...checkpoint.postgres import connection_kwargs
from .. import _sql
from .._sqlstore import SqlStore
from . import EXISTS, cursor_of, missing

__all__ = ["AsyncPostgresStore"]


async def adrive(
    conn: psycopg.AsyncConnection[Any], proc: _sql.Proc, prepare: bool, cur: Any
) -> Any:
    """:func:`threadline.store.postgres.drive` with ``await``."""
    try:
        step = next(proc)
        while True:
            if step.many:
                await cur.executemany(step.sql, step.params, returning=False)
                rows: Any = []
            else:
                await cur.execute(step.sql, step.params, prepare=prepare)
                rows = await cur.fetchall() if cur.pgresult and cur.pgresult.status == 2 else []
            step = proc.send(rows)
    except StopIteration as stop:
        return stop.value
    finally:
        proc.close()


class AsyncPostgresStore(SqlStore):
    """:class:`~threadline.store.postgres.PostgresStore` for ``await``: same tables, options."""

    def __init__(
        self,
        conn_or_pool: psycopg.AsyncConnection[Any] | AsyncConnectionPool[Any],
        *,
        schema: str = "public",
        auto_setup: bool = True,
        prepare: bool = True,
        **options: Any,
    ) -> None:
        if not isinstance(conn_or_pool, psycopg.AsyncConnection | AsyncConnectionPool):
            raise TypeError(
                "AsyncPostgresStore needs a psycopg.AsyncConnection or an AsyncConnectionPool,"
                f" got {type(conn_or_pool).__name__}"
            )
        super().__init__(**options)
        self._flavor = _sql.PostgresFlavor(schema)
        self.schema = schema
        self.auto_setup = auto_setup
        self.prepare = prepare
        self._target = conn_or_pool
        self._lock = asyncio.Lock()
        self._ready = False
        self._owned: AsyncConnectionPool[Any] | None = None

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
        """A store over a new pool to ``conn_string`` (opened on first use); use
        ``async with`` or ``await store.aclose()``. ``synchronous_commit`` as for
        :meth:`PostgresStore.from_conn_string`."""
        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            conn_string,
            min_size=pool_min_size,
            max_size=pool_max_size,
            kwargs=connection_kwargs(options.get("prepare", True), synchronous_commit),
            open=False,
            name="threadline-store",
        )
        store = cls(pool, **options)
        store._owned = pool
        return store

    async def __aenter__(self) -> Self:
        await self._ensure_open()
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop the sweeper and close the pool if the store opened it."""
        await self.astop_ttl_sweeper()
        if self._owned is not None:
            await self._owned.close()

    async def _ensure_open(self) -> None:
        if self._owned is not None and self._owned.closed:
            await self._owned.open(wait=True)

    async def setup(self) -> None:
        """Create or migrate the store's tables (``await store.setup()``)."""
        await self._execute(self._flavor.setup(), True)
        self._ready = True

    async def _execute(self, proc: _sql.Proc, write: bool) -> Any:
        await self._ensure_open()
        if isinstance(self._target, AsyncConnectionPool):
            async with self._target.connection() as conn:
                return await self._on(conn, proc, write, cursor_of(conn))
        async with self._lock:
            return await self._on(self._target, proc, write, cursor_of(self._target, self))

    async def _on(
        self, conn: psycopg.AsyncConnection[Any], proc: _sql.Proc, write: bool, cur: Any
    ) -> Any:
        if write or not conn.autocommit:
            async with conn.transaction():
                return await adrive(conn, proc, self.prepare, cur)
        return await adrive(conn, proc, self.prepare, cur)

    async def _arun(self, proc: _sql.Proc, write: bool) -> Any:
        if not self._ready:
            version = await self._execute(
                _sql.schema_version(self._flavor, EXISTS, (self.schema,)), False
            )
            if version != len(self._flavor.migrations):
                if not self.auto_setup:
                    raise missing(self.schema)
                await self.setup()
            self._ready = True
        return await self._execute(proc, write)
