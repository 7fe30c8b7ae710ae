"""``AsyncSqliteStore``: the SQLite store for async code, over aiosqlite."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from types import TracebackType
from typing import Any

import aiosqlite
from typing_extensions import Self

from ...checkpoint.sqlite import _sql as saver_sql
from ...errors import ThreadlineError
from .. import _sql
from .._sqlstore import SqlStore
from . import drive, prepare

__all__ = ["AsyncSqliteStore"]


class AsyncSqliteStore(SqlStore):
    """:class:`~threadline.store.sqlite.SqliteStore` for ``await``: same tables and options.

    Each batch runs as one job in aiosqlite's worker thread. ``from_conn_string`` returns the
    store at once; its connection opens on first use. Use ``async with`` or ``await
    store.aclose()``.
    """

    def __init__(
        self,
        conn: aiosqlite.Connection,
        *,
        auto_setup: bool = True,
        busy_timeout: float = 30.0,
        **options: Any,
    ) -> None:
        if not isinstance(conn, aiosqlite.Connection):
            raise TypeError(
                f"AsyncSqliteStore needs an aiosqlite.Connection, got {type(conn).__name__}"
            )
        super().__init__(**options)
        self.conn = conn
        self._flavor = _sql.SqliteFlavor()
        self._settings = saver_sql.Settings.make("NORMAL", busy_timeout, auto_setup)
        self._ready = False
        self._owns_conn = False
        self._opened = False
        self._closed = False
        self._open_lock = asyncio.Lock()

    @classmethod
    def from_conn_string(cls, conn_string: str | os.PathLike[str], **options: Any) -> Self:
        """A store over ``conn_string``; nothing opens until first use."""
        target = os.fspath(conn_string)
        conn = aiosqlite.connect(
            target,
            timeout=float(options.get("busy_timeout", 30.0)),
            isolation_level=None,
            uri=target.startswith("file:"),
        )
        store = cls(conn, **options)
        store._owns_conn = True
        return store

    async def __aenter__(self) -> Self:
        await self._prepare(False)
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def setup(self) -> None:
        """Create or migrate the store's tables (``await store.setup()``)."""
        await self._prepare(True)

    async def aclose(self) -> None:
        """Stop the sweeper and close the connection if the store opened it."""
        await self.astop_ttl_sweeper()
        if self._owns_conn and not self._closed:
            self._closed = True
            if self._opened:
                await self.conn.close()

    async def _prepare(self, force: bool) -> None:
        async with self._open_lock:
            if self._ready and not force:
                return
            if self._closed:
                raise ThreadlineError("this AsyncSqliteStore was closed; create a new one")
            if self._owns_conn and not self._opened:
                await self.conn
                self._opened = True
            await self._in_thread(prepare, self._settings, force)
            self._ready = True

    async def _in_thread(self, fn: Any, *args: Any) -> Any:
        conn: sqlite3.Connection | None = self.conn._connection
        if conn is None:
            raise ThreadlineError(
                "the aiosqlite connection is not open: pass a connection you awaited, or use"
                " from_conn_string()"
            )
        return await self.conn._execute(fn, conn, *args)  # type: ignore[no-untyped-call]

    async def _arun(self, proc: _sql.Proc, write: bool) -> Any:
        if not self._ready:
            await self._prepare(False)
        return await self._in_thread(drive, proc, write)
