"""Procedures that read and rewrite stored values in place: re-encryption and copy_thread's
re-binding of encrypted values to their new thread (see :mod:`threadline.checkpoint.binding`).

Pages go by primary key (by ``seq`` for checkpoints), so each costs an index range scan.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..binding import COLUMNS, Rebind, StoredValue
from ._sql import _CHECKPOINT_COLUMNS, Proc, Step, _checkpoint_row, copy_thread, id_text

_FIRST = {
    "threads.metadata": "SELECT metadata FROM threads WHERE thread_id = ?1 AND ?2 IS NULL"
    " AND metadata IS NOT NULL LIMIT ?3",
    "checkpoints": f"SELECT {_CHECKPOINT_COLUMNS} FROM checkpoints c WHERE c.thread_id = ?1"
    " AND c.seq > coalesce(?2, -1) ORDER BY c.seq LIMIT ?3",
    "versions.data": "SELECT channel, writer, base, data FROM versions WHERE thread_id = ?1"
    " AND (channel, writer) > (coalesce(?2, ''), coalesce(?4, x'')) ORDER BY channel, writer"
    " LIMIT ?3",
    "writes.data": "SELECT ns, checkpoint_id, task_id, idx, channel, data FROM writes"
    " WHERE thread_id = ?1 AND (ns, checkpoint_id, task_id, idx)"
    " > (coalesce(?2, ''), coalesce(?4, x''), coalesce(?5, ''), coalesce(?6, -1))"
    " ORDER BY ns, checkpoint_id, task_id, idx LIMIT ?3",
}

_UPDATE = {
    "threads.metadata": "UPDATE threads SET metadata = ? WHERE thread_id = ? AND metadata = ?"
    " RETURNING 1",
    "checkpoints.metadata": "UPDATE checkpoints SET metadata = ? WHERE thread_id = ?"
    " AND checkpoint_id = ? AND metadata = ? RETURNING 1",
    "checkpoints.tasks": "UPDATE checkpoints SET tasks = ? WHERE thread_id = ?"
    " AND checkpoint_id = ? AND tasks = ? RETURNING 1",
    "versions.data": "UPDATE versions SET data = ? WHERE thread_id = ? AND channel = ?"
    " AND writer = ? AND data = ? RETURNING 1",
    "writes.data": "UPDATE writes SET data = ? WHERE thread_id = ? AND ns = ?"
    " AND checkpoint_id = ? AND task_id = ? AND idx = ? AND data = ? RETURNING 1",
}


def thread_page(after: str | None, limit: int) -> Proc[list[str]]:
    rows = yield Step(
        "SELECT thread_id FROM threads WHERE thread_id > coalesce(?, '')"
        " ORDER BY thread_id LIMIT ?",
        (after, limit),
    )
    return [r[0] for r in rows]


def stored_page(
    column: str, thread_id: str, after: tuple[Any, ...] | None, limit: int
) -> Proc[list[StoredValue]]:
    """A page of the thread's values in ``column``, after the key ``after``."""
    table = "checkpoints" if column.startswith("checkpoints.") else column
    if table == "threads.metadata":
        params: tuple[Any, ...] = (thread_id, None if after is None else 1, limit)
    elif table == "checkpoints":
        params = (thread_id, None if after is None else after[0], limit)
    elif after is None:
        params = (thread_id, None, limit, None, None, None)
    else:
        params = (thread_id, after[0], limit, *after[1:])
    if table == "versions.data":
        params = params[:4]
    rows = yield Step(_FIRST[table], params)
    if table == "threads.metadata":
        return [StoredValue(column, (1,), r[0]) for r in rows]
    if table == "checkpoints":
        field = column.partition(".")[2]
        out = []
        for r in rows:
            row = _checkpoint_row(thread_id, r)
            out.append(StoredValue(column, (row.seq, r[0]), getattr(row, field), row))
        return out
    if table == "versions.data":
        return [
            StoredValue(
                column,
                (channel, writer),
                data,
                (channel, id_text(writer), None if base is None else id_text(base)),
            )
            for channel, writer, base, data in rows
        ]
    return [
        StoredValue(
            column,
            (ns, checkpoint_id, task_id, idx),
            data,
            (ns, id_text(checkpoint_id), task_id, idx, channel),
        )
        for ns, checkpoint_id, task_id, idx, channel, data in rows
    ]


def replace_stored(thread_id: str, updates: Sequence[tuple[StoredValue, bytes]]) -> Proc[int]:
    """Rewrite each value that still holds what was read. Run with ``write=True``."""
    done = 0
    for value, new in updates:
        column = value.column
        if column == "threads.metadata":
            key: tuple[Any, ...] = ()
        elif column.startswith("checkpoints."):
            key = (value.key[1],)
        else:
            key = value.key
        rows = yield Step(_UPDATE[column], (new, thread_id, *key, value.data))
        done += len(rows)
    return done


def rebind_thread(thread_id: str, rebind: Rebind, page: int = 500) -> Proc[None]:
    """Re-encrypt every value of a copied thread for its new thread id (same transaction)."""
    for column in COLUMNS:
        after: tuple[Any, ...] | None = None
        while True:
            values = yield from stored_page(column, thread_id, after, page)
            updates = []
            for value in values:
                new = rebind(value)
                if new is not None:
                    updates.append((value, new))
            if updates:
                yield from replace_stored(thread_id, updates)
            if len(values) < page:
                break
            after = values[-1].key


def copy_thread_rebound(source: str, target: str, rebind: Rebind | None) -> Proc[None]:
    """``copy_thread``, then (with encryption) re-bind the copy's values to ``target``."""
    yield from copy_thread(source, target)
    if rebind is not None:
        yield from rebind_thread(target, rebind)
