"""Long-term memory across threads: the Store (LangGraph's ``langgraph.store`` API).

- :mod:`threadline.store.base`: :class:`~threadline.store.base.BaseStore`, items and operations.
- :mod:`threadline.store.memory`: ``InMemoryStore``.
- :mod:`threadline.store.sqlite`: ``SqliteStore`` and (:mod:`.sqlite.aio`) ``AsyncSqliteStore``.
- :mod:`threadline.store.postgres`: ``PostgresStore`` and (:mod:`.postgres.aio`)
  ``AsyncPostgresStore``.
"""

from __future__ import annotations

from typing import Any

from ..checkpoint.url import split_url
from .base import BaseStore

__all__ = ["BaseStore", "from_url"]


def from_url(url: str, *, aio: bool = False, **options: Any) -> BaseStore:
    """Create a store from a URL, as :func:`threadline.checkpoint.from_url` does a checkpointer.

    ``memory://``, ``sqlite:///memory.db`` or ``postgresql://user@host/db``; ``aio=True`` gives
    the async twin. ``options``: the store's keywords (``index=``, ``ttl=``, ``serde=``,
    ``schema=``, ``pool_max_size=`` ...).
    """
    kind, target = split_url(url, "store")
    if kind == "memory":
        from .memory import InMemoryStore

        return InMemoryStore(**options)
    if kind == "sqlite":
        if aio:
            from .sqlite.aio import AsyncSqliteStore

            return AsyncSqliteStore.from_conn_string(target, **options)
        from .sqlite import SqliteStore

        return SqliteStore.from_conn_string(target, **options)
    if aio:
        from .postgres.aio import AsyncPostgresStore

        return AsyncPostgresStore.from_conn_string(target, **options)
    from .postgres import PostgresStore

    return PostgresStore.from_conn_string(target, **options)
