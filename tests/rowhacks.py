"""Rewriting stored rows behind a saver's back, per backend, as an attacker with database
access (or a buggy tool) would: for tests of what readers do with rows threadline never
writes. Each function takes the saver and its :class:`backends.Backend`. And reading every
key stored for a thread (:func:`stored_keys`), for tests of what maintenance leaves behind."""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass
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


@dataclass
class StoredKeys:
    """The keys of everything stored for one thread: checkpoints ``{id: ns}``, heads
    ``{ns: id}``, versions ``{(channel, writer): base}`` and pending writes
    ``{(ns, checkpoint_id, task_id, idx)}``."""

    checkpoints: dict[str, str]
    heads: dict[str, str]
    versions: dict[tuple[str, str], str | None]
    writes: set[tuple[str, str, str, int]]


def _text(blob: Any) -> Any:
    return str(uuid.UUID(bytes=blob)) if isinstance(blob, bytes) else blob


_SQLITE_KEYS = (
    "SELECT checkpoint_id, ns FROM checkpoints WHERE thread_id = ?",
    "SELECT ns, checkpoint_id FROM heads WHERE thread_id = ?",
    "SELECT channel, writer, base FROM versions WHERE thread_id = ?",
    "SELECT ns, checkpoint_id, task_id, idx FROM writes WHERE thread_id = ?",
)

_POSTGRES_KEYS = (
    "SELECT id::text, ns FROM {checkpoints} WHERE thread_id = %s",
    "SELECT ns, head::text FROM {heads} WHERE thread_id = %s",
    "SELECT channel, writer::text, base::text FROM {versions} WHERE thread_id = %s",
    "SELECT ns, checkpoint_id::text, task_id, idx FROM {writes} WHERE thread_id = %s",
)


async def stored_keys(saver: Any, backend: Backend, thread_id: str) -> StoredKeys:
    """Every key the backend stores for ``thread_id``, read from its rows."""
    name = backend.name
    if name == "memory":
        with saver._lock:
            t = saver._threads.get(thread_id)
            if t is None:
                return StoredKeys({}, {}, {}, set())
            return StoredKeys(
                {cid: row.ns for cid, row in t.checkpoints.items()},
                dict(t.heads),
                {key: v.base for key, v in t.versions.items()},
                {(ns, cid, task, idx) for (ns, cid), b in t.writes.items() for task, idx in b},
            )
    if name == "sqlite":
        with saver._lock:
            tables = [saver.conn.execute(q, (thread_id,)).fetchall() for q in _SQLITE_KEYS]
    elif name == "aiosqlite":
        tables = []
        for q in _SQLITE_KEYS:
            async with saver.conn.execute(q, (thread_id,)) as cur:
                tables.append(list(await cur.fetchall()))
    else:
        import psycopg
        from psycopg import sql

        with psycopg.connect(postgres_url(), autocommit=True) as conn:
            tables = []
            for q in _POSTGRES_KEYS:
                names = {
                    t: sql.Identifier(saver.schema, f"threadline_{t}")
                    for t in ("checkpoints", "heads", "versions", "writes")
                }
                tables.append(conn.execute(sql.SQL(q).format(**names), (thread_id,)).fetchall())
    checkpoints, heads, versions, writes = tables
    return StoredKeys(
        {_text(c): ns for c, ns in checkpoints},
        {ns: _text(c) for ns, c in heads},
        {(ch, _text(w)): _text(b) for ch, w, b in versions},
        {(ns, _text(c), task, idx) for ns, c, task, idx in writes},
    )
