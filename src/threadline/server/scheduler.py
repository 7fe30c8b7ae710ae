"""Firing crons: every replica looks for due crons each second and queues their runs.

Any replica may fire a cron (firing only inserts a run; workers anywhere execute it), and a
due time fires exactly once across replicas. The replica claims the time
(:func:`~threadline.server.crons.claim`, a conditional ``UPDATE`` of ``next_run_date``) and
inserts its run in one transaction: both commit or neither does. A replica that dies or fails
in between leaves the time unclaimed, and the next tick (of any replica) fires it. While one
replica's transaction is open, the cron's row is locked; another replica's claim does not wait
for it (PostgreSQL's ``SKIP LOCKED``) but passes the cron by, and its next tick finds the time
taken, or takes it if the first rolled back. The run's id is derived
from the cron and the due time as a second guard: a time whose run exists is taken as fired.

When the transaction fails, what happens next depends on whether trying again can help:

- The database refused the run (:class:`~threadline.server.runs.RunConflict`: the thread is
  busy under ``reject``), or the cron's assistant is gone: the time is claimed on its own, so
  that firing is skipped, with a warning. :class:`~threadline.server.runs.ThreadMissing`: the
  cron is deleted, as its thread was.
- A failure that may pass by itself (:func:`transient`: the connection lost, the database
  unreachable or shutting down, a deadlock, a serialization failure, a timeout): the time stays
  unclaimed and is tried again next tick, with a warning each time, up to
  :data:`TRANSIENT_RETRIES` tries per due time on one replica. A failure that repeats that
  often while the database answers the scheduler's other reads is taken as permanent.
- Anything else (a payload no run can be made of, a constraint or trigger refusing the row, a
  bug) would fail the same way every tick: the time is claimed on its own and the error logged
  once, by the replica whose claim wins. The cron fires again at its next due time.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import sys
import time
import uuid
from collections.abc import Sequence
from typing import Any

from . import runs as q
from .assistants import assistant_for_run
from .crons import Cron, claim, due_crons, iso
from .db import Database

__all__ = ["TRANSIENT_RETRIES", "Scheduler", "transient"]

log = logging.getLogger("threadline.server")

#: Transient failures of one due time on one replica before it is given up (claimed alone).
TRANSIENT_RETRIES = 10


class _Unrunnable(Exception):
    """The cron cannot fire now (its assistant is gone): skip this due time."""


def transient(exc: BaseException) -> bool:
    """Whether ``exc`` may pass by itself, so firing again later may succeed.

    The network or the operating system (``OSError``, timeouts), PostgreSQL's
    ``OperationalError`` (a lost connection, a shutdown, a deadlock or serialization failure, a
    lock or statement timeout, the pool's timeout) except its class 54 (a program limit: a value
    too large, which the same value hits again) and SQLite's ``OperationalError`` (the database
    locked, an I/O error).
    """
    if isinstance(exc, (OSError, TimeoutError, sqlite3.OperationalError)):
        return True
    psycopg = sys.modules.get("psycopg")  # imported if PostgreSQL is in use
    if psycopg is not None and isinstance(exc, psycopg.OperationalError):
        return not str(getattr(exc, "sqlstate", None) or "").startswith("54")
    return False


class Scheduler:
    """Queues the runs of due crons, every ``interval`` seconds, in the background.

    ``graph_ids``: the served graphs (a cron whose assistant's graph is not served is skipped);
    ``thread_ttl``: the config's default TTL, given to a stateless cron's new thread.
    """

    def __init__(
        self,
        db: Database,
        graph_ids: Sequence[str],
        thread_ttl: tuple[str, float] | None = None,
        interval: float = 1.0,
    ) -> None:
        self.db = db
        self.graph_ids = list(graph_ids)
        self.thread_ttl = thread_ttl
        self.interval = interval
        self._task: asyncio.Task[None] | None = None
        # (cron id, due time) -> transient failures so far, for the times still due.
        self._failures: dict[tuple[str, float | None], int] = {}

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def fire_due(self) -> list[str]:
        """Queue a run for every cron due now whose due time this replica claims; their ids."""
        now = time.time()
        fired = []
        due = await due_crons(self.db, now)
        for cron in due:
            run_id = await self._fire(cron, now)
            if run_id is not None:
                fired.append(run_id)
        still = {(c.cron_id, c.next_run_date) for c in due}
        self._failures = {k: n for k, n in self._failures.items() if k in still}
        return fired

    async def _fire(self, cron: Cron, now: float) -> str | None:
        """Fire ``cron``'s due time if this replica wins it (the run's id), or decide what the
        failure to do so means (see the module's docstring)."""
        key = (cron.cron_id, cron.next_run_date)
        try:
            run_id = await self._queue(cron, now)
        except (q.RunConflict, _Unrunnable) as exc:
            await self._skip(cron, now, logging.WARNING, str(exc))
            return None
        except q.ThreadMissing:
            # Its thread was deleted: the cron goes with it, as LangGraph's cascade does.
            await self._delete(cron)
            return None
        except Exception as exc:
            if transient(exc):
                failures = self._failures[key] = self._failures.get(key, 0) + 1
                if failures < TRANSIENT_RETRIES:
                    log.warning(
                        "cron %s: queueing its run due at %s failed (%s: %s); trying again"
                        " next tick", cron.cron_id, iso(cron.next_run_date),
                        type(exc).__name__, exc,
                    )  # fmt: skip
                    return None
            await self._skip(
                cron, now, logging.ERROR, "its run cannot be queued (not retried)", exc_info=exc
            )
            return None
        self._failures.pop(key, None)
        return run_id

    async def _queue(self, cron: Cron, now: float) -> str | None:
        """Claim ``cron``'s due time and queue its run in one transaction: the run's id, or
        None if the time was not this replica's to fire (or its run exists already)."""
        due = cron.next_run_date
        assistant = await assistant_for_run(self.db, cron.assistant_id, self.graph_ids)
        if assistant is None:
            raise _Unrunnable(f"its assistant {cron.assistant_id} is gone")
        options: dict[str, Any] = dict(cron.payload)
        strategy = options.pop("multitask_strategy", None) or "enqueue"
        kwargs = assistant.run_kwargs(options)
        # One id per due time: should the time ever be claimed twice, its run is found.
        run_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"cron:{cron.cron_id}:{due!r}"))
        async with self.db.transaction() as tx:
            if await claim(tx, cron, now) is None:
                return None  # another replica fired it, or the cron changed
            if await tx.execute("SELECT 1 FROM tl_runs WHERE run_id = ?", (run_id,)):
                log.info("cron %s: its run due at %s exists already", cron.cron_id, iso(due))
                return None
            await q.create_run(
                self.db,
                thread_id=cron.thread_id or str(uuid.uuid4()),
                assistant_id=assistant.assistant_id,
                graph_id=assistant.graph_id,
                kwargs=kwargs,
                metadata={**cron.metadata, "cron_id": cron.cron_id},
                strategy=strategy,
                create_thread=cron.thread_id is None,
                run_id=run_id,
                thread_ttl=self.thread_ttl,
                tx=tx,
            )
        return run_id

    async def _skip(
        self, cron: Cron, now: float, level: int, why: str, exc_info: BaseException | None = None
    ) -> None:
        """Claim the due time without a run, and log why it was skipped if this replica's claim
        won (so once per due time across replicas)."""
        try:
            won = await claim(self.db, cron, now)
        except Exception as exc:  # tried again next tick
            log.warning("cron %s: could not skip its due time: %s", cron.cron_id, exc)
            return
        if won is not None:
            log.log(
                level, "cron %s: due time %s skipped: %s", cron.cron_id, iso(won), why,
                exc_info=exc_info,
            )  # fmt: skip

    async def _delete(self, cron: Cron) -> None:
        try:
            gone = await self.db.execute(
                "DELETE FROM tl_crons WHERE cron_id = ? RETURNING cron_id", (cron.cron_id,)
            )
        except Exception as exc:  # tried again next tick
            log.warning("cron %s: could not delete it: %s", cron.cron_id, exc)
            return
        if gone:
            log.info("cron %s deleted: its thread %s is gone", cron.cron_id, cron.thread_id)

    async def _loop(self) -> None:
        while True:
            try:
                await self.fire_due()
            except Exception:
                log.exception("firing crons failed")
            await asyncio.sleep(self.interval)
