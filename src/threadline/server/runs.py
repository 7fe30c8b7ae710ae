"""Runs as rows: creating them (with the double-texting strategy), claiming, events, outcomes.

Every function takes the :class:`~threadline.server.db.Database` and does its work in one
transaction, so the rules hold across replicas sharing the database.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from .db import Database
from .wire import now_iso

__all__ = [
    "MULTITASK_STRATEGIES",
    "RunConflict",
    "append_event",
    "cancel_run",
    "claim_run",
    "create_run",
    "ensure_thread",
    "finish_run",
    "next_due",
    "read_events",
    "renew_leases",
    "requeue_expired",
    "run_json",
    "settle_thread",
    "thread_json",
]

MULTITASK_STRATEGIES = ("reject", "enqueue", "interrupt", "rollback")
TERMINAL = ("success", "error", "timeout", "interrupted")
RUN_COLUMNS = (
    "run_id, thread_id, assistant_id, graph_id, status, kwargs, metadata, multitask_strategy,"
    " attempt, created_at, updated_at, result"
)
THREAD_COLUMNS = 'thread_id, metadata, status, "values", interrupts, created_at, updated_at'


class RunConflict(Exception):
    """The thread is busy and the run's strategy is ``reject`` (HTTP 409)."""


def run_json(row: tuple[Any, ...]) -> dict[str, Any]:
    """A runs row as the API's ``Run``."""
    return {
        "run_id": row[0],
        "thread_id": row[1],
        "assistant_id": row[2],
        "status": row[4],
        "kwargs": json.loads(row[5]),
        "metadata": json.loads(row[6]),
        "multitask_strategy": row[7],
        "created_at": row[9],
        "updated_at": row[10],
    }


def thread_json(row: tuple[Any, ...]) -> dict[str, Any]:
    """A threads row as the API's ``Thread``."""
    return {
        "thread_id": row[0],
        "metadata": json.loads(row[1]),
        "status": row[2],
        "values": json.loads(row[3]) if row[3] else None,
        "interrupts": json.loads(row[4]) if row[4] else {},
        "created_at": row[5],
        "updated_at": row[6],
    }


async def ensure_thread(
    db: Database, thread_id: str, metadata: dict[str, Any], if_exists: str = "do_nothing"
) -> tuple[dict[str, Any], bool]:
    """The thread's row, created if missing; ``(thread, created)``."""
    now = now_iso()
    async with db.transaction() as tx:
        rows = await tx.execute(
            f"SELECT {THREAD_COLUMNS} FROM tl_threads WHERE thread_id = ?", (thread_id,)
        )
        if rows:
            return thread_json(rows[0]), False
        await tx.execute(
            "INSERT INTO tl_threads (thread_id, metadata, status, created_at, updated_at)"
            " VALUES (?, ?, 'idle', ?, ?)",
            (thread_id, json.dumps(metadata), now, now),
        )
        rows = await tx.execute(
            f"SELECT {THREAD_COLUMNS} FROM tl_threads WHERE thread_id = ?", (thread_id,)
        )
        return thread_json(rows[0]), True


async def create_run(
    db: Database,
    *,
    thread_id: str,
    assistant_id: str,
    graph_id: str,
    kwargs: dict[str, Any],
    metadata: dict[str, Any],
    strategy: str,
    delay: float = 0.0,
) -> tuple[dict[str, Any], list[str]]:
    """Queue a run on the thread, applying ``strategy`` if the thread has runs in flight.

    ``delay`` (``after_seconds``): no worker claims the run before then; its place in the
    thread's FIFO is its due time, as if it had been sent then.
    Returns the run and the ids of runs it asked to cancel (``interrupt``/``rollback``).
    Raises :class:`RunConflict` for ``reject`` on a busy thread, storing nothing.
    """
    run_id = str(uuid.uuid4())
    now = now_iso()
    async with db.transaction() as tx:
        # Takes the thread row's lock (PostgreSQL) before looking at its runs. The graph is
        # the thread's from its first run on, so its state can be read while that run goes.
        await tx.execute(
            "UPDATE tl_threads SET updated_at = ?, status = 'busy',"
            " graph_id = COALESCE(graph_id, ?) WHERE thread_id = ?",
            (now, graph_id, thread_id),
        )
        inflight = [
            r[0]
            for r in await tx.execute(
                "SELECT run_id FROM tl_runs WHERE thread_id = ? AND status IN"
                " ('pending', 'running')",
                (thread_id,),
            )
        ]
        if inflight and strategy == "reject":
            raise RunConflict(
                f"thread {thread_id} is busy with run {inflight[0]}; use multitask_strategy"
                " 'enqueue', 'interrupt' or 'rollback' to send it anyway"
            )
        cancelled: list[str] = []
        if inflight and strategy in ("interrupt", "rollback"):
            for other in inflight:
                await tx.execute(
                    "UPDATE tl_runs SET cancel = ?, updated_at = ? WHERE run_id = ?",
                    (strategy, now, other),
                )
                await tx.execute(
                    "UPDATE tl_runs SET status = 'interrupted', updated_at = ?"
                    " WHERE run_id = ? AND status = 'pending'",
                    (now, other),
                )
            cancelled = inflight
        await tx.execute(
            "INSERT INTO tl_runs (run_id, thread_id, assistant_id, graph_id, status, kwargs,"
            " metadata, multitask_strategy, attempt, enqueued, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, 'pending', ?, ?, ?, 0, ?, ?, ?)",
            (
                run_id, thread_id, assistant_id, graph_id, json.dumps(kwargs),
                json.dumps(metadata), strategy, time.time() + delay, now, now,
            ),
        )  # fmt: skip
        rows = await tx.execute(f"SELECT {RUN_COLUMNS} FROM tl_runs WHERE run_id = ?", (run_id,))
    return run_json(rows[0]), cancelled


async def claim_run(db: Database, owner: str, lease: float) -> tuple[Any, ...] | None:
    """Claim the oldest due pending run whose thread has no running run, or None."""
    try:
        async with db.transaction() as tx:
            rows = await tx.execute(
                "UPDATE tl_runs SET status = 'running', owner = ?, attempt = attempt + 1,"
                " lease_until = ?, updated_at = ? WHERE run_id = ("
                " SELECT r.run_id FROM tl_runs r WHERE r.status = 'pending' AND r.enqueued <= ?"
                " AND NOT EXISTS ("
                "  SELECT 1 FROM tl_runs o WHERE o.thread_id = r.thread_id"
                "  AND (o.status = 'running' OR (o.status = 'pending'"
                "   AND o.enqueued < r.enqueued)))"
                " ORDER BY r.enqueued LIMIT 1) AND status = 'pending'"
                f" RETURNING {RUN_COLUMNS}",
                (owner, time.time() + lease, now_iso(), time.time()),
            )
    except Exception as exc:  # the partial unique index: another replica won the thread
        if "unique" in str(exc).lower() or "duplicate" in str(exc).lower():
            return None
        raise
    return rows[0] if rows else None


async def next_due(db: Database) -> float | None:
    """Seconds until the next delayed (``after_seconds``) run is due, or None if there is none.

    A claim loop that sleeps until notified must also wake then: nothing notifies a due run.
    """
    rows = await db.execute(
        "SELECT MIN(enqueued) FROM tl_runs WHERE status = 'pending' AND enqueued > ?",
        (time.time(),),
    )
    if not rows or rows[0][0] is None:
        return None
    return max(0.0, float(rows[0][0]) - time.time())


async def renew_leases(db: Database, owner: str, lease: float) -> list[str]:
    """Extend the leases of this owner's running runs; return those asked to cancel."""
    async with db.transaction() as tx:
        await tx.execute(
            "UPDATE tl_runs SET lease_until = ? WHERE owner = ? AND status = 'running'",
            (time.time() + lease, owner),
        )
        rows = await tx.execute(
            "SELECT run_id, cancel FROM tl_runs WHERE owner = ? AND status = 'running'"
            " AND cancel IS NOT NULL",
            (owner,),
        )
    return [f"{r[0]}:{r[1]}" for r in rows]


async def requeue_expired(db: Database) -> int:
    """Hand back runs whose worker's lease ran out (a replica died): they run again."""
    rows = await db.execute(
        "UPDATE tl_runs SET status = 'pending', owner = NULL WHERE status = 'running'"
        " AND lease_until < ? RETURNING run_id",
        (time.time(),),
    )
    return len(rows)


async def append_event(db: Database, run_id: str, seq: int, event: str, data: Any) -> None:
    """Store one stream event of a run."""
    await db.execute(
        "INSERT INTO tl_run_events (run_id, seq, event, data) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (run_id, seq) DO NOTHING",
        (run_id, seq, event, json.dumps(data)),
    )


async def read_events(db: Database, run_id: str, after: int) -> list[tuple[int, str, str]]:
    """A run's events after sequence number ``after``: ``(seq, event, data_json)``."""
    rows = await db.execute(
        "SELECT seq, event, data FROM tl_run_events WHERE run_id = ? AND seq > ? ORDER BY seq",
        (run_id, after),
    )
    return [(int(r[0]), str(r[1]), str(r[2])) for r in rows]


async def finish_run(
    db: Database,
    run: tuple[Any, ...],
    owner: str,
    *,
    status: str,
    result: Any,
    thread_status: str,
    values: Any = None,
    interrupts: Any = None,
) -> None:
    """Record a run's outcome and its thread's new status, if this worker still owns it."""
    now = now_iso()
    run_id, thread_id = run[0], run[1]
    async with db.transaction() as tx:
        owned = await tx.execute(
            "UPDATE tl_runs SET status = ?, result = ?, updated_at = ?, owner = NULL"
            " WHERE run_id = ? AND owner = ? AND status = 'running' RETURNING run_id",
            (status, json.dumps(result), now, run_id, owner),
        )
        if not owned:
            return
        waiting = await tx.execute(
            "SELECT 1 FROM tl_runs WHERE thread_id = ? AND status = 'pending' LIMIT 1",
            (thread_id,),
        )
        sets = "status = ?, updated_at = ?, graph_id = ?"
        args: list[Any] = ["busy" if waiting else thread_status, now, run[3]]
        if values is not None:
            sets += ', "values" = ?, interrupts = ?'
            args += [json.dumps(values), json.dumps(interrupts or {})]
        await tx.execute(f"UPDATE tl_threads SET {sets} WHERE thread_id = ?", (*args, thread_id))


async def settle_thread(db: Database, thread_id: str) -> None:
    """A ``busy`` thread with no run in flight any more (its runs were cancelled) is idle."""
    await db.execute(
        "UPDATE tl_threads SET status = 'idle', updated_at = ? WHERE thread_id = ?"
        " AND status = 'busy' AND NOT EXISTS (SELECT 1 FROM tl_runs WHERE thread_id = ?"
        " AND status IN ('pending', 'running'))",
        (now_iso(), thread_id, thread_id),
    )


async def cancel_run(db: Database, run_id: str, action: str) -> tuple[str, bool] | None:
    """Ask a run to stop: ``(thread_id, was_pending)``, or None if there is no such run.

    A pending run stops here (``rollback`` deletes it: it wrote nothing); a running one is
    flagged, and its worker stops it (told at once if local, else by its heartbeat).
    """
    now = now_iso()
    async with db.transaction() as tx:
        rows = await tx.execute(
            "UPDATE tl_runs SET cancel = ?, updated_at = ? WHERE run_id = ?"
            " AND status IN ('pending', 'running') RETURNING thread_id, status",
            (action, now, run_id),
        )
        if not rows:
            found = await tx.execute("SELECT thread_id FROM tl_runs WHERE run_id = ?", (run_id,))
            return (str(found[0][0]), False) if found else None
        thread_id, status = str(rows[0][0]), rows[0][1]
        if status == "pending":
            if action == "rollback":
                await tx.execute("DELETE FROM tl_run_events WHERE run_id = ?", (run_id,))
                await tx.execute("DELETE FROM tl_runs WHERE run_id = ?", (run_id,))
            else:
                await tx.execute(
                    "UPDATE tl_runs SET status = 'interrupted' WHERE run_id = ?", (run_id,)
                )
    if status == "pending":
        await settle_thread(db, thread_id)
    return thread_id, status == "pending"
