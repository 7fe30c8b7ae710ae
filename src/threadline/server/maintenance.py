"""Housekeeping that runs once per deployment per interval, whichever replica gets to it.

Sweeps (expired store items, expired threads) must not run inside a user's commit, nor on every
replica at once. Each job has a row in ``tl_maintenance`` holding when it is next due; a replica
takes a job's turn with one conditional ``UPDATE`` (the first to move ``next_at`` forward wins),
so among N replicas each job runs about once per interval, and still runs while any replica is up.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from .db import Database

__all__ = ["Job", "Maintenance", "take_turn"]

log = logging.getLogger("threadline.server")


@dataclass(frozen=True)
class Job:
    """One housekeeping task: ``run()`` every ``interval`` seconds across the deployment."""

    name: str
    interval: float
    run: Callable[[], Awaitable[object]]


async def take_turn(db: Database, name: str, interval: float, owner: str) -> bool:
    """Whether this replica runs job ``name`` now; if so, the next turn is ``interval`` away."""
    now = time.time()
    await db.execute(
        "INSERT INTO tl_maintenance (name, owner, next_at) VALUES (?, NULL, 0)"
        " ON CONFLICT (name) DO NOTHING",
        (name,),
    )
    won = await db.execute(
        "UPDATE tl_maintenance SET next_at = ?, owner = ? WHERE name = ? AND next_at <= ?"
        " RETURNING name",
        (now + interval, owner, name, now),
    )
    return bool(won)


class Maintenance:
    """Runs ``jobs`` in the background of one replica, each when it is this replica's turn."""

    def __init__(self, db: Database, owner: str, jobs: list[Job]) -> None:
        self.db = db
        self.owner = owner
        self.jobs = jobs
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.jobs:
            self._task = asyncio.create_task(self._loop())

    async def run_due(self) -> list[str]:
        """Run every job whose turn this replica takes now; the names of those run."""
        ran = []
        for job in self.jobs:
            if await take_turn(self.db, job.name, job.interval, self.owner):
                try:
                    await job.run()
                except Exception:
                    log.exception("maintenance job %s failed", job.name)
                ran.append(job.name)
        return ran

    async def _loop(self) -> None:
        # Check a few times per shortest interval, so a dead replica's turn is taken soon.
        pause = max(0.05, min(job.interval for job in self.jobs) / 4)
        while True:
            try:
                await self.run_due()
            except Exception:
                log.exception("maintenance failed")
            await asyncio.sleep(pause)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
