"""Runs as rows: creating them (with the double-texting strategy), claiming, events, outcomes.

Every function takes the :class:`~threadline.server.db.Database` and does its work in one
transaction, so the rules hold across replicas sharing the database (:func:`create_run` can
also do its work in a transaction of its caller's). On PostgreSQL the two every run makes,
creating and finishing it, are one call each of a function of the schema
(``db.PG_FUNCTIONS``), the same steps as the SQLite transactions written beside their callers.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from .db import Database, Tx
from .notify import CHANNEL
from .threads import set_ttl
from .wire import now_iso

__all__ = [
    "MULTITASK_STRATEGIES",
    "RunConflict",
    "ThreadMissing",
    "append_events",
    "cancel_run",
    "claim_runs",
    "create_run",
    "delete_run",
    "finish_run",
    "hand_back",
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
    " attempt, created_at, updated_at, result, live_events"
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


class ThreadMissing(LookupError):
    """The run's thread does not exist and the run did not ask to create it (HTTP 404)."""


async def create_run(
    db: Database,
    *,
    thread_id: str,
    assistant_id: str,
    graph_id: str,
    kwargs: dict[str, Any],
    metadata: dict[str, Any],
    strategy: str,
    create_thread: bool = False,
    run_id: str | None = None,
    live_events: bool = True,
    delay: float = 0.0,
    owner: str | None = None,
    lease: float = 10.0,
    thread_ttl: tuple[str, float] | None = None,
    tx: Tx | None = None,
) -> tuple[dict[str, Any], list[str], tuple[Any, ...] | None]:
    """Queue a run on the thread, applying ``strategy`` if the thread has runs in flight.

    ``thread_ttl`` (``(strategy, minutes)``, the config's default): given to the thread if
    this run creates it (``create_thread``).

    With ``owner`` (a worker with a free slot, on the creating replica) a run that could start
    at once (an idle thread, no delay) is created already claimed by it: no queue round trip,
    and its outcome is this replica's own. Returns the run, the ids of runs it asked to cancel
    (``interrupt``/``rollback``) and, when claimed so, its row for the worker to execute.

    ``delay`` (``after_seconds``): no worker claims the run before then; its place in the
    thread's FIFO is its due time, as if it had been sent then.
    Raises :class:`RunConflict` for ``reject`` on a busy thread, storing nothing, and
    :class:`ThreadMissing` if the thread does not exist unless ``create_thread``. ``run_id``
    lets the caller subscribe to the run's announcements before it exists. Without
    ``live_events`` (a ``runs.wait``: nobody follows it live) the worker stores the run's
    events with its outcome, in one statement, instead of as they happen.

    ``tx`` (a transaction of ``db``): create the run in it, so that the run commits with the
    caller's own statements or not at all; its announcements go out when ``tx`` commits. A
    refusal (:class:`RunConflict`, :class:`ThreadMissing`) then leaves ``tx`` with half its
    work done (on PostgreSQL, aborted): let the exception leave the transaction, which rolls
    it back. Without ``tx`` the run is created in a transaction of its own.
    """
    run_id = run_id or str(uuid.uuid4())
    now = now_iso()
    due = time.time() + delay
    if db.kind == "postgres":
        return await _create_run_pg(
            db, tx, run_id=run_id, thread_id=thread_id, assistant_id=assistant_id,
            graph_id=graph_id, kwargs=kwargs, metadata=metadata, strategy=strategy,
            create_thread=create_thread, live_events=live_events, due=due, delayed=delay > 0,
            now=now, owner=owner, lease=lease, thread_ttl=thread_ttl,
        )  # fmt: skip
    async with _within(db, tx) as tx:
        # The thread row first, then its runs (the order tl_create_run_v1 keeps). The graph is
        # the thread's from its first run on, so its state can be read while that run goes.
        found = await tx.execute(
            "UPDATE tl_threads SET updated_at = ?, status = 'busy',"
            " graph_id = COALESCE(graph_id, ?) WHERE thread_id = ? RETURNING thread_id",
            (now, graph_id, thread_id),
        )
        if not found:
            if not create_thread:
                raise _missing(thread_id)
            await tx.execute(
                "INSERT INTO tl_threads (thread_id, metadata, status, graph_id, created_at,"
                " updated_at) VALUES (?, '{}', 'busy', ?, ?, ?)",
                (thread_id, graph_id, now, now),
            )
            if thread_ttl is not None:
                await set_ttl(tx, thread_id, thread_ttl)
        inflight = [
            r[0]
            for r in await tx.execute(
                "SELECT run_id FROM tl_runs WHERE thread_id = ? AND status IN"
                " ('pending', 'running')",
                (thread_id,),
            )
        ]
        if inflight and strategy == "reject":
            raise _busy(thread_id, inflight[0])
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
                tx.publish(f"cancel:{other}:{strategy}")
                tx.publish(f"run:{other}")
            cancelled = inflight
        # The thread row's lock is held and nothing is in flight: no one else can claim it.
        claimed = owner is not None and not inflight and delay <= 0
        rows = await tx.execute(
            "INSERT INTO tl_runs (run_id, thread_id, assistant_id, graph_id, status, kwargs,"
            " metadata, multitask_strategy, attempt, enqueued, created_at, updated_at,"
            " live_events, owner, lease_until) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            f" RETURNING {RUN_COLUMNS}",
            (
                run_id, thread_id, assistant_id, graph_id,
                "running" if claimed else "pending", json.dumps(kwargs), json.dumps(metadata),
                strategy, 1 if claimed else 0, due, now, now, int(live_events),
                owner if claimed else None, time.time() + lease if claimed else None,
            ),
        )  # fmt: skip
        if not claimed:
            # A delayed run is announced with its due time: nothing happens when it is due.
            tx.publish(f"due:{due}" if delay > 0 else "queue")
    return run_json(rows[0]), cancelled, rows[0] if claimed else None


@contextlib.asynccontextmanager
async def _within(db: Database, tx: Tx | None) -> AsyncIterator[Tx]:
    """``tx`` if the caller has one, else a new transaction of ``db``."""
    if tx is not None:
        yield tx
        return
    async with db.transaction() as own:
        yield own


def _missing(thread_id: str) -> ThreadMissing:
    return ThreadMissing(f"thread {thread_id} not found; pass if_not_exists='create'")


def _busy(thread_id: str, run_id: str) -> RunConflict:
    return RunConflict(
        f"thread {thread_id} is busy with run {run_id}; use multitask_strategy"
        " 'enqueue', 'interrupt' or 'rollback' to send it anyway"
    )


async def _create_run_pg(
    db: Database,
    tx: Tx | None,
    *,
    run_id: str,
    thread_id: str,
    assistant_id: str,
    graph_id: str,
    kwargs: dict[str, Any],
    metadata: dict[str, Any],
    strategy: str,
    create_thread: bool,
    live_events: bool,
    due: float,
    delayed: bool,
    now: str,
    owner: str | None,
    lease: float,
    thread_ttl: tuple[str, float] | None,
) -> tuple[dict[str, Any], list[str], tuple[Any, ...] | None]:
    """:func:`create_run` on PostgreSQL: the same steps in one call of ``tl_create_run_v1``
    (in ``tx`` if given, else a transaction of its own)."""
    try:
        rows = await (tx or db).execute(
            "SELECT * FROM tl_create_run_v1(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                run_id, thread_id, assistant_id, graph_id, json.dumps(kwargs),
                json.dumps(metadata), strategy, create_thread, int(live_events), due, delayed,
                now, owner, time.time() + lease, *(thread_ttl or (None, None)), CHANNEL,
                db.notifier.origin,
            ),
        )  # fmt: skip
    except Exception as exc:
        code = getattr(exc, "sqlstate", None)
        if code == "TL404":
            raise _missing(thread_id) from None
        if code == "TL409":  # the message is the id of the run in flight
            diag = getattr(exc, "diag", None)
            raise _busy(thread_id, str(getattr(diag, "message_primary", "?"))) from None
        raise
    row = rows[0]
    cancelled = list(row[13])
    # The function announced these to the other replicas (delivered when it commits): only
    # this replica's waiters are left, woken once the run is committed.
    wake = db.notifier.wake if tx is None else tx.wake
    for other in cancelled:
        wake(f"cancel:{other}:{strategy}")
        wake(f"run:{other}")
    claimed = row[4] == "running"
    if not claimed:
        wake(f"due:{due}" if delayed else "queue")
    return run_json(row), cancelled, row[:13] if claimed else None


async def claim_runs(db: Database, owner: str, lease: float, limit: int) -> list[tuple[Any, ...]]:
    """Claim up to ``limit`` of the oldest due pending runs whose threads have no running run.

    One statement, so fewer than ``limit`` runs back means the queue held no more (then).
    """
    now = time.time()
    try:
        return await db.execute(
            "UPDATE tl_runs SET status = 'running', owner = ?, attempt = attempt + 1,"
            " lease_until = ?, updated_at = ? WHERE run_id IN ("
            " SELECT r.run_id FROM tl_runs r WHERE r.status = 'pending' AND r.enqueued <= ?"
            " AND NOT EXISTS ("
            "  SELECT 1 FROM tl_runs o WHERE o.thread_id = r.thread_id"
            "  AND (o.status = 'running' OR (o.status = 'pending'"
            "   AND o.enqueued < r.enqueued)))"
            " ORDER BY r.enqueued LIMIT ?) AND status = 'pending'"
            f" RETURNING {RUN_COLUMNS}",
            (owner, now + lease, now_iso(), now, limit),
        )
    except Exception as exc:  # the partial unique index: another replica won a thread
        if "unique" in str(exc).lower() or "duplicate" in str(exc).lower():
            return []
        raise


async def renew_leases(db: Database, owner: str, lease: float) -> list[tuple[str, str]]:
    """Extend the leases of this owner's running runs; ``(run_id, action)`` of those asked to
    cancel."""
    rows = await db.execute(
        "UPDATE tl_runs SET lease_until = ? WHERE owner = ? AND status = 'running'"
        " RETURNING run_id, cancel",
        (time.time() + lease, owner),
    )
    return [(str(r[0]), str(r[1])) for r in rows if r[1] is not None]


async def requeue_expired(db: Database) -> int:
    """Hand back runs whose worker's lease ran out (a replica died): they run again."""
    rows = await db.execute(
        "UPDATE tl_runs SET status = 'pending', owner = NULL WHERE status = 'running'"
        " AND lease_until < ? RETURNING run_id",
        (time.time(),),
    )
    if rows:
        await db.publish("queue")
    return len(rows)


async def hand_back(db: Database, run_id: str, owner: str) -> None:
    """Put a run this worker still owns back in the queue, for another worker to continue."""
    await db.change(
        "UPDATE tl_runs SET status = 'pending', owner = NULL WHERE run_id = ? AND owner = ?",
        (run_id, owner),
        "queue",
    )


async def append_events(db: Database, run_id: str, events: list[tuple[int, str, str]]) -> None:
    """Store stream events of a run, ``(seq, event, data_json)``, and announce them."""
    if events:
        await db.change(*_insert_events(run_id, events), f"events:{run_id}")


def _insert_events(run_id: str, events: list[tuple[int, str, str]]) -> tuple[str, list[Any]]:
    values = ", ".join(["(?, ?, ?, ?)"] * len(events))
    args = [x for seq, event, data in events for x in (run_id, seq, event, data)]
    sql = f"INSERT INTO tl_run_events (run_id, seq, event, data) VALUES {values}"
    return sql + " ON CONFLICT (run_id, seq) DO NOTHING", args


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
    events: list[tuple[int, str, str]] | None = None,
    delete: bool = False,
) -> bool:
    """Record a run's outcome and its thread's new status, if this worker still owns it
    (whether it did). ``events`` not yet stored are stored in the same transaction.

    ``delete`` (a rolled-back run): the run and its events are deleted instead, in the same
    transaction as the thread's new status, so a waiter woken by it finds the run gone.
    """
    now = now_iso()
    run_id, thread_id = run[0], run[1]
    if db.kind == "postgres":
        return await _finish_run_pg(
            db, run, owner, status=status, result=result, thread_status=thread_status,
            values=values, interrupts=interrupts, events=[] if delete else events or [],
            now=now, delete=delete,
        )  # fmt: skip
    async with db.transaction() as tx:
        if events and not delete:
            await tx.execute(*_insert_events(run_id, events))
            tx.publish(f"events:{run_id}")
        if delete:
            owned = await tx.execute(
                "DELETE FROM tl_runs WHERE run_id = ? AND owner = ? AND status = 'running'"
                " RETURNING run_id",
                (run_id, owner),
            )
            if owned:
                await tx.execute("DELETE FROM tl_run_events WHERE run_id = ?", (run_id,))
        else:
            owned = await tx.execute(
                "UPDATE tl_runs SET status = ?, result = ?, updated_at = ?, owner = NULL"
                " WHERE run_id = ? AND owner = ? AND status = 'running' RETURNING run_id",
                (status, json.dumps(result), now, run_id, owner),
            )
        if not owned:
            return False
        tx.publish(f"run:{run_id}")
        # Busy while runs wait behind this one; they may now be claimed.
        sets = (
            "status = CASE WHEN EXISTS (SELECT 1 FROM tl_runs WHERE thread_id = ?"
            " AND status = 'pending') THEN 'busy' ELSE ? END, updated_at = ?, graph_id = ?"
        )
        args: list[Any] = [thread_id, thread_status, now, run[3]]
        if values is not None:
            sets += ', "values" = ?, interrupts = ?'
            args += [json.dumps(values), json.dumps(interrupts or {})]
        rows = await tx.execute(
            f"UPDATE tl_threads SET {sets} WHERE thread_id = ? RETURNING status",
            (*args, thread_id),
        )
        if rows and rows[0][0] == "busy":
            tx.publish("queue")
    return True


async def _finish_run_pg(
    db: Database,
    run: tuple[Any, ...],
    owner: str,
    *,
    status: str,
    result: Any,
    thread_status: str,
    values: Any,
    interrupts: Any,
    events: list[tuple[int, str, str]],
    now: str,
    delete: bool,
) -> bool:
    """:func:`finish_run` on PostgreSQL: the same steps in one call of ``tl_finish_run_v1``."""
    run_id = run[0]
    rows = await db.execute(
        "SELECT tl_finish_run_v1(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?::integer[], ?::text[],"
        " ?::text[], ?, ?, ?)",
        (
            run_id, run[1], owner, status, json.dumps(result), now, run[3], thread_status,
            None if values is None else json.dumps(values),
            None if values is None else json.dumps(interrupts or {}),
            [e[0] for e in events], [e[1] for e in events], [e[2] for e in events], delete,
            CHANNEL, db.notifier.origin,
        ),
    )  # fmt: skip
    thread = rows[0][0]
    if thread is None:  # not this worker's run any more
        if events:
            db.notifier.wake(f"events:{run_id}")
        return False
    db.notifier.wake(f"run:{run_id}")  # its events' followers listen for it too
    if thread == "busy":
        db.notifier.wake("queue")
    return True


async def settle_thread(db: Database, thread_id: str) -> None:
    """A ``busy`` thread with no run in flight any more (its runs were cancelled) is idle."""
    await db.execute(
        "UPDATE tl_threads SET status = 'idle', updated_at = ? WHERE thread_id = ?"
        " AND status = 'busy' AND NOT EXISTS (SELECT 1 FROM tl_runs WHERE thread_id = ?"
        " AND status IN ('pending', 'running'))",
        (now_iso(), thread_id, thread_id),
    )


async def delete_run(tx: Tx, run_id: str) -> None:
    """Delete a run with its events; its waiters are told (it then reads as gone)."""
    await tx.execute("DELETE FROM tl_run_events WHERE run_id = ?", (run_id,))
    await tx.execute("DELETE FROM tl_runs WHERE run_id = ?", (run_id,))
    tx.publish(f"run:{run_id}")


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
        tx.publish(f"cancel:{run_id}:{action}")
        tx.publish(f"run:{run_id}")
        if status == "pending":
            if action == "rollback":
                await delete_run(tx, run_id)
            else:
                await tx.execute(
                    "UPDATE tl_runs SET status = 'interrupted' WHERE run_id = ?", (run_id,)
                )
    if status == "pending":
        await settle_thread(db, thread_id)
    return thread_id, status == "pending"
