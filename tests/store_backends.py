"""The store backends every store test runs against, and a driver for sync and async stores.

Each factory is an async context manager yielding a fresh, isolated store built with the given
options (``index=``, ``ttl=``, ``serde=``). :class:`StoreDriver` lets one ``async`` test body
call ``await d.put(...)`` on any of them: sync stores are called directly, async ones through
their ``a*`` methods.
"""

from __future__ import annotations

import contextlib
import inspect
import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from backends import _drop_postgres_schema, _postgres_schema, postgres_url_or_skip

from threadline.store.base import BaseStore
from threadline.store.memory import InMemoryStore
from threadline.store.sqlite import SqliteStore
from threadline.store.sqlite.aio import AsyncSqliteStore

__all__ = ["STORE_BACKENDS", "StoreBackend", "StoreDriver", "letter_embed"]


@contextlib.asynccontextmanager
async def _memory(**options: Any) -> AsyncIterator[BaseStore]:
    yield InMemoryStore(**options)


@contextlib.asynccontextmanager
async def _sqlite(**options: Any) -> AsyncIterator[BaseStore]:
    with (
        tempfile.TemporaryDirectory() as tmp,
        SqliteStore.from_conn_string(f"{tmp}/store.db", **options) as store,
    ):
        yield store


@contextlib.asynccontextmanager
async def _aiosqlite(**options: Any) -> AsyncIterator[BaseStore]:
    with tempfile.TemporaryDirectory() as tmp:
        async with AsyncSqliteStore.from_conn_string(f"{tmp}/store.db", **options) as store:
            yield store


@contextlib.asynccontextmanager
async def _postgres(**options: Any) -> AsyncIterator[BaseStore]:
    from threadline.store.postgres import PostgresStore

    url = postgres_url_or_skip()
    schema = _postgres_schema()
    try:
        with PostgresStore.from_conn_string(url, schema=schema, pool_max_size=4, **options) as s:
            yield s
    finally:
        _drop_postgres_schema(url, schema)


@contextlib.asynccontextmanager
async def _apostgres(**options: Any) -> AsyncIterator[BaseStore]:
    from threadline.store.postgres.aio import AsyncPostgresStore

    url = postgres_url_or_skip()
    schema = _postgres_schema()
    try:
        async with AsyncPostgresStore.from_conn_string(
            url, schema=schema, pool_max_size=4, **options
        ) as s:
            yield s
    finally:
        _drop_postgres_schema(url, schema)


@dataclass(frozen=True)
class StoreBackend:
    name: str
    is_async: bool
    factory: Callable[..., Any]
    postgres: bool = False

    def param(self) -> Any:
        marks = [pytest.mark.postgres] if self.postgres else []
        return pytest.param(self, id=self.name, marks=marks)


STORE_BACKENDS = [
    StoreBackend("memory", False, _memory),
    StoreBackend("memory-async", True, _memory),
    StoreBackend("sqlite", False, _sqlite),
    StoreBackend("aiosqlite", True, _aiosqlite),
    StoreBackend("postgres", False, _postgres, postgres=True),
    StoreBackend("postgres-async", True, _apostgres, postgres=True),
]


class StoreDriver:
    """``await d.put(...)``, ``await d.search(...)``: one test body for every store."""

    def __init__(self, store: BaseStore, is_async: bool) -> None:
        self.store = store
        self.is_async = is_async

    def __getattr__(self, name: str) -> Callable[..., Any]:
        async def call(*args: Any, **kwargs: Any) -> Any:
            if self.is_async:
                result = getattr(self.store, "a" + name)(*args, **kwargs)
                return await result if inspect.isawaitable(result) else result
            return getattr(self.store, name)(*args, **kwargs)

        return call


def letter_embed(texts: Any) -> list[list[float]]:
    """A deterministic embedding: how often each letter a-z occurs (26 dimensions)."""
    out = []
    for text in texts:
        v = [0.0] * 26
        for ch in str(text).lower():
            if "a" <= ch <= "z":
                v[ord(ch) - 97] += 1.0
        out.append(v)
    return out
