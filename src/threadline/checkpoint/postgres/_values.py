"""Calls that read and rewrite stored values in place: re-encryption and copy_thread's
re-binding of encrypted values to their new thread (see :mod:`threadline.checkpoint.binding`).

Pages go by primary key (by ``seq`` for checkpoints): one index range scan each.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..binding import COLUMNS, Rebind, StoredValue
from ._core import Call, Op, Proc, checkpoint_row
from ._sql import _CKPT_COLS, Statements

_PAGES: dict[str, tuple[str, str]] = {
    # (first page, next pages)
    "threads": (
        "SELECT thread_id FROM {threads} ORDER BY thread_id LIMIT %(limit)s",
        "SELECT thread_id FROM {threads} WHERE thread_id > %(a0)s ORDER BY thread_id"
        " LIMIT %(limit)s",
    ),
    "threads.metadata": (
        "SELECT metadata FROM {threads} WHERE thread_id = %(tid)s AND metadata IS NOT NULL",
        "SELECT metadata FROM {threads} WHERE false AND thread_id = %(tid)s",
    ),
    "checkpoints": (
        f"SELECT {_CKPT_COLS} FROM {{checkpoints}} c WHERE c.thread_id = %(tid)s"
        " ORDER BY c.seq LIMIT %(limit)s",
        f"SELECT {_CKPT_COLS} FROM {{checkpoints}} c WHERE c.thread_id = %(tid)s"
        " AND c.seq > %(a0)s::int8 ORDER BY c.seq LIMIT %(limit)s",
    ),
    "versions.data": (
        "SELECT channel, writer::text, base::text, data FROM {versions}"
        " WHERE thread_id = %(tid)s ORDER BY channel, writer LIMIT %(limit)s",
        "SELECT channel, writer::text, base::text, data FROM {versions}"
        " WHERE thread_id = %(tid)s AND (channel, writer) > (%(a0)s::text, %(a1)s::uuid)"
        " ORDER BY channel, writer LIMIT %(limit)s",
    ),
    "writes.data": (
        "SELECT ns, checkpoint_id::text, task_id, idx, channel, data FROM {writes}"
        " WHERE thread_id = %(tid)s ORDER BY ns, checkpoint_id, task_id, idx LIMIT %(limit)s",
        "SELECT ns, checkpoint_id::text, task_id, idx, channel, data FROM {writes}"
        " WHERE thread_id = %(tid)s AND (ns, checkpoint_id, task_id, idx)"
        " > (%(a0)s::text, %(a1)s::uuid, %(a2)s::text, %(a3)s::int4)"
        " ORDER BY ns, checkpoint_id, task_id, idx LIMIT %(limit)s",
    ),
}

_UPDATES = {
    "threads.metadata": "UPDATE {threads} SET metadata = %s WHERE thread_id = %s"
    " AND metadata = %s RETURNING 1",
    "checkpoints.metadata": "UPDATE {checkpoints} SET metadata = %s WHERE thread_id = %s"
    " AND id = %s::uuid AND metadata = %s RETURNING 1",
    "checkpoints.tasks": "UPDATE {checkpoints} SET tasks = %s WHERE thread_id = %s"
    " AND id = %s::uuid AND tasks = %s RETURNING 1",
    "versions.data": "UPDATE {versions} SET data = %s WHERE thread_id = %s"
    " AND channel = %s AND writer = %s::uuid AND data = %s RETURNING 1",
    "writes.data": "UPDATE {writes} SET data = %s WHERE thread_id = %s AND ns = %s"
    " AND checkpoint_id = %s::uuid AND task_id = %s AND idx = %s::int4 AND data = %s"
    " RETURNING 1",
}


class ValueStatements:
    """The statements above, rendered for one schema."""

    def __init__(self, q: Statements) -> None:
        self.pages = {k: (q.render(a), q.render(b)) for k, (a, b) in _PAGES.items()}
        self.updates = {k: q.render(text) for k, text in _UPDATES.items()}


def _params(after: tuple[Any, ...] | None, **extra: Any) -> dict[str, Any]:
    params = dict(extra)
    for i, part in enumerate(after or ()):
        params[f"a{i}"] = part
    return params


def c_thread_page(qv: ValueStatements, after: str | None, limit: int) -> Call[list[str]]:
    query = qv.pages["threads"][after is not None]
    params = _params(None if after is None else (after,), limit=limit)

    def proc() -> Proc[list[str]]:
        rows = yield Op(query, params)
        return [r[0] for r in rows]

    return Call(proc)


def stored_page(
    qv: ValueStatements, column: str, thread_id: str, after: tuple[Any, ...] | None, limit: int
) -> Proc[list[StoredValue]]:
    """A page of the thread's values in ``column``, after the key ``after``."""
    table = "checkpoints" if column.startswith("checkpoints.") else column
    cursor = after[:1] if table == "checkpoints" and after else after
    query = qv.pages[table][after is not None]
    rows = yield Op(query, _params(cursor, tid=thread_id, limit=limit))
    if table == "threads.metadata":
        return [StoredValue(column, (1,), bytes(r[0])) for r in rows]
    if table == "checkpoints":
        field = column.partition(".")[2]
        out = []
        for r in rows:
            row = checkpoint_row(thread_id, r)
            data = bytes(getattr(row, field))
            out.append(StoredValue(column, (row.seq, row.id), data, row))
        return out
    if table == "versions.data":
        return [
            StoredValue(column, (channel, writer), bytes(data), (channel, writer, base))
            for channel, writer, base, data in rows
        ]
    return [
        StoredValue(column, (ns, cid, task_id, idx), bytes(data), (ns, cid, task_id, idx, channel))
        for ns, cid, task_id, idx, channel, data in rows
    ]


def replace_stored(
    qv: ValueStatements, thread_id: str, updates: Sequence[tuple[StoredValue, bytes]]
) -> Proc[int]:
    """Rewrite each value that still holds what was read (run in a transaction)."""
    done = 0
    for value, new in updates:
        column = value.column
        if column == "threads.metadata":
            key: tuple[Any, ...] = ()
        elif column.startswith("checkpoints."):
            key = (value.key[1],)
        else:
            key = value.key
        rows = yield Op(qv.updates[column], (new, thread_id, *key, value.data))
        done += len(rows)
    return done


def c_stored_page(
    qv: ValueStatements, column: str, thread_id: str, after: tuple[Any, ...] | None, limit: int
) -> Call[list[StoredValue]]:
    return Call(lambda: stored_page(qv, column, thread_id, after, limit))


def c_replace_stored(
    qv: ValueStatements, thread_id: str, updates: Sequence[tuple[StoredValue, bytes]]
) -> Call[int]:
    # Retrying is safe: a value already rewritten no longer matches what was read.
    return Call(lambda: replace_stored(qv, thread_id, updates), tx=True)


def rebind_thread(
    qv: ValueStatements, thread_id: str, rebind: Rebind, page: int = 500
) -> Proc[None]:
    """Re-encrypt every value of a copied thread for its new thread id (same transaction)."""
    for column in COLUMNS:
        after: tuple[Any, ...] | None = None
        while True:
            values = yield from stored_page(qv, column, thread_id, after, page)
            updates = []
            for value in values:
                new = rebind(value)
                if new is not None:
                    updates.append((value, new))
            if updates:
                yield from replace_stored(qv, thread_id, updates)
            if len(values) < page:
                break
            after = values[-1].key
