"""Rewriting stored rows behind a saver's back, per backend, as an attacker with database
access (or a buggy tool) would: for tests of what readers do with rows threadline never
writes. Each function takes the saver and its :class:`backends.Backend`."""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

from backends import Backend, postgres_url


def _blob(checkpoint_id: str | None) -> bytes | None:
    return None if checkpoint_id is None else uuid.UUID(checkpoint_id).bytes


async def set_base(
    saver: Any, backend: Backend, thread_id: str, channel: str, writer: str, base: str | None
) -> None:
    """Make version ``(channel, writer)`` of ``thread_id`` a delta on ``base``."""
    name = backend.name
    if name == "memory":
        with saver._lock:
            versions = saver._threads[thread_id].versions
            versions[(channel, writer)] = dataclasses.replace(
                versions[(channel, writer)], base=base
            )
        return
    if name in ("sqlite", "aiosqlite"):
        query = "UPDATE versions SET base = ? WHERE thread_id = ? AND channel = ? AND writer = ?"
        params = (_blob(base), thread_id, channel, _blob(writer))
        if name == "sqlite":
            with saver._lock:
                assert saver.conn.execute(query, params).rowcount == 1
        else:
            cur = await saver.conn.execute(query, params)
            assert cur.rowcount == 1
        return
    import psycopg
    from psycopg import sql

    statement = sql.SQL(
        "UPDATE {} SET base = %s::uuid WHERE thread_id = %s AND channel = %s AND writer = %s"
    ).format(sql.Identifier(saver.schema, "threadline_versions"))
    with psycopg.connect(postgres_url(), autocommit=True) as conn:
        cur = conn.execute(statement, (base, thread_id, channel, writer))
        assert cur.rowcount == 1


def forget_process_state(saver: Any) -> None:
    """Drop what this process remembers (decoded values, heads): reads then see only rows,
    as another process or this one after a restart would."""
    saver._cache.clear()
    with saver._heads_lock:
        saver._heads.clear()
