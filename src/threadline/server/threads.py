"""Threads as rows: creating, deleting, copying and pruning them, and their time to live.

A thread's TTL lives in ``tl_thread_ttl`` (strategy, minutes, expiry). Every replica sweeps
expired threads once per interval; each expired row is claimed by one replica in the
transaction that acts on it, so replicas never sweep the same thread twice. A thread with a
run in flight is left for a later sweep.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import time
from collections.abc import Sequence
from typing import Any

from ..errors import ThreadNotFoundError
from .db import Database, Tx
from .http import ApiError
from .wire import now_iso

__all__ = [
    "OWN_TABLES",
    "THREAD_FIELDS",
    "THREAD_SORTS",
    "THREAD_STATUSES",
    "TTL_STRATEGIES",
    "copy_thread",
    "delete_threads",
    "insert_thread",
    "prune_threads",
    "set_ttl",
    "sweep_expired",
    "ttl_json",
    "ttl_of",
]

log = logging.getLogger("threadline.server")

OWN_TABLES = ("tl_thread_ttl", "tl_thread_events", "tl_threads")
"""The tables of a thread's own rows (its runs aside), in the order they are deleted."""
TTL_STRATEGIES = ("delete", "keep_latest")
MAX_TTL_MINUTES = 100 * 365 * 24 * 60
THREAD_STATUSES = ("idle", "busy", "interrupted", "error")
THREAD_SORTS = ("thread_id", "status", "created_at", "updated_at")
THREAD_FIELDS = (
    "thread_id", "created_at", "updated_at", "metadata", "status", "values", "interrupts",
)  # fmt: skip


def ttl_of(value: Any) -> tuple[str, float] | None:
    """``(strategy, minutes)`` of a request's ``ttl`` (minutes, or ``{"ttl", "strategy"}``)."""
    if value is None:
        return None
    strategy: Any = "delete"
    if isinstance(value, dict):
        unknown = set(value) - {"ttl", "strategy"}
        if unknown:
            raise ApiError(422, f"ttl takes the keys 'ttl' and 'strategy', not {sorted(unknown)}")
        strategy = value.get("strategy") or "delete"
        value = value.get("ttl")
    if strategy not in TTL_STRATEGIES:
        raise ApiError(422, f"ttl strategy must be one of {list(TTL_STRATEGIES)}, got {strategy!r}")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ApiError(422, f"ttl must be a positive number of minutes, got {value!r}")
    if value > MAX_TTL_MINUTES:
        raise ApiError(
            422, f"ttl must be at most {MAX_TTL_MINUTES} minutes (100 years), got {value}"
        )
    return str(strategy), float(value)


async def set_ttl(tx: Tx, thread_id: str, ttl: tuple[str, float]) -> None:
    """Give the thread ``ttl`` from now (replacing any it had)."""
    strategy, minutes = ttl
    await tx.execute("DELETE FROM tl_thread_ttl WHERE thread_id = ?", (thread_id,))
    await tx.execute(
        "INSERT INTO tl_thread_ttl (thread_id, strategy, minutes, expires_at) VALUES (?, ?, ?, ?)",
        (thread_id, strategy, minutes, time.time() + minutes * 60),
    )


async def ttl_json(db: Database, thread_id: str) -> dict[str, Any] | None:
    """The thread's TTL as ``{"strategy", "ttl" (minutes), "expires_at"}``, or None."""
    rows = await db.execute(
        "SELECT strategy, minutes, expires_at FROM tl_thread_ttl WHERE thread_id = ?", (thread_id,)
    )
    if not rows:
        return None
    strategy, minutes, expires = rows[0]
    at = dt.datetime.fromtimestamp(float(expires), dt.timezone.utc).isoformat()
    return {"strategy": strategy, "ttl": float(minutes), "expires_at": at}


async def insert_thread(
    db: Database,
    thread_id: str,
    metadata: dict[str, Any],
    *,
    graph_id: str | None = None,
    ttl: tuple[str, float] | None = None,
    copy_of: tuple[Any, ...] | None = None,
) -> bool:
    """Store a new thread (with its TTL); False if the id is taken. ``copy_of`` is the
    ``(status, values, interrupts)`` of the thread it copies."""
    now = now_iso()
    status, values, interrupts = copy_of or ("idle", None, None)
    async with db.transaction() as tx:
        rows = await tx.execute(
            'INSERT INTO tl_threads (thread_id, metadata, status, "values", interrupts,'
            " graph_id, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (thread_id) DO NOTHING RETURNING thread_id",
            (thread_id, json.dumps(metadata), status, values, interrupts, graph_id, now, now),
        )
        if rows and ttl is not None:
            await set_ttl(tx, thread_id, ttl)
    return bool(rows)


async def _delete_rows(tx: Tx, thread_ids: Sequence[str]) -> None:
    marks = ", ".join("?" * len(thread_ids))
    await tx.execute(
        "DELETE FROM tl_run_events WHERE run_id IN"
        f" (SELECT run_id FROM tl_runs WHERE thread_id IN ({marks}))",
        thread_ids,
    )
    for table in ("tl_runs", *OWN_TABLES):
        await tx.execute(f"DELETE FROM {table} WHERE thread_id IN ({marks})", thread_ids)


async def delete_threads(db: Database, checkpointer: Any, thread_ids: Sequence[str]) -> int:
    """Delete threads with their runs, events, TTL and checkpoints; how many existed."""
    if not thread_ids:
        return 0
    marks = ", ".join("?" * len(thread_ids))
    async with db.transaction() as tx:
        found = await tx.execute(
            f"SELECT thread_id FROM tl_threads WHERE thread_id IN ({marks})", thread_ids
        )
        await _delete_rows(tx, thread_ids)
    for thread_id in thread_ids:
        await checkpointer.adelete_thread(thread_id)
    return len(found)


async def copy_thread(
    db: Database,
    checkpointer: Any,
    source: str,
    target: str,
    *,
    ttl: tuple[str, float] | None = None,
) -> None:
    """A new thread ``target`` with ``source``'s metadata, status, values and checkpoints
    (and ``ttl``, not the source's)."""
    rows = await db.execute(
        'SELECT metadata, status, "values", interrupts, graph_id FROM tl_threads'
        " WHERE thread_id = ?",
        (source,),
    )
    if not rows:
        raise ApiError(404, f"thread {source} not found")
    metadata, status, values, interrupts, graph_id = rows[0]
    # Checkpoints first: if copying them fails, no half-made thread row is left behind.
    with contextlib.suppress(ThreadNotFoundError):  # never run: nothing to copy
        await checkpointer.acopy_thread(source, target)
    status = "idle" if status == "busy" else status  # the copy has no run in flight
    await insert_thread(
        db, target, json.loads(metadata), graph_id=graph_id, ttl=ttl,
        copy_of=(status, values, interrupts),
    )  # fmt: skip


async def prune_threads(
    db: Database, checkpointer: Any, thread_ids: Sequence[str], strategy: str
) -> int:
    """``delete``: delete the threads. ``keep_latest``: keep each thread and its latest
    checkpoint only. Returns how many of the threads existed."""
    if strategy == "delete":
        return await delete_threads(db, checkpointer, thread_ids)
    marks = ", ".join("?" * len(thread_ids))
    found = [
        r[0]
        for r in await db.execute(
            f"SELECT thread_id FROM tl_threads WHERE thread_id IN ({marks})", thread_ids
        )
    ]
    if found:
        await checkpointer.aprune(found, keep_last=1)
    return len(found)


def _expired(strategy: str, now: float, limit: int | None) -> tuple[str, list[Any]]:
    """The ``WHERE`` of the expired TTL rows of ``strategy`` whose thread has no run in
    flight, the ``limit`` that expired first (None: all), and its arguments."""
    where = (
        "expires_at <= ? AND strategy = ? AND NOT EXISTS (SELECT 1 FROM tl_runs r"
        " WHERE r.thread_id = tl_thread_ttl.thread_id AND r.status IN ('pending', 'running'))"
    )
    if limit is None:
        return where, [now, strategy]
    # The outer conditions stay: a row another replica changed meanwhile is checked again.
    first = f"SELECT thread_id FROM tl_thread_ttl WHERE {where} ORDER BY expires_at LIMIT ?"
    return f"{where} AND thread_id IN ({first})", [now, strategy, now, strategy, limit]


async def sweep_expired(db: Database, checkpointer: Any, *, limit: int | None = None) -> int:
    """Act on expired threads without a run in flight, at most ``limit`` of them (the first
    expired; None: all); how many were swept."""
    now = time.time()
    where, args = _expired("delete", now, limit)
    async with db.transaction() as tx:
        doomed = [
            r[0]
            for r in await tx.execute(
                f"DELETE FROM tl_thread_ttl WHERE {where} RETURNING thread_id", args
            )
        ]
        if doomed:
            await _delete_rows(tx, doomed)
    for thread_id in doomed:
        await checkpointer.adelete_thread(thread_id)
    left = None if limit is None else limit - len(doomed)
    if left is not None and left <= 0:
        return len(doomed)
    # keep_latest: claimed by moving the expiry one TTL on; pruned again when it next runs out.
    where, args = _expired("keep_latest", now, left)
    pruned = [
        r[0]
        for r in await db.execute(
            f"UPDATE tl_thread_ttl SET expires_at = ? + minutes * 60 WHERE {where}"
            " RETURNING thread_id",
            (now, *args),
        )
    ]
    if pruned:
        await checkpointer.aprune(pruned, keep_last=1)
    return len(doomed) + len(pruned)
