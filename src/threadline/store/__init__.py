"""Long-term memory across threads: the Store (LangGraph's ``langgraph.store`` API).

- :mod:`threadline.store.base`: :class:`~threadline.store.base.BaseStore`, items and operations.
- :mod:`threadline.store.memory`: ``InMemoryStore``.
- :mod:`threadline.store.sqlite`: ``SqliteStore`` and (:mod:`.sqlite.aio`) ``AsyncSqliteStore``.
- :mod:`threadline.store.postgres`: ``PostgresStore`` and (:mod:`.postgres.aio`)
  ``AsyncPostgresStore``.
"""
