"""Firing crons: every replica looks for due crons each second and queues their runs.

Any replica may fire a cron (firing only inserts a run; workers anywhere execute it), and a
due time fires once across replicas: :func:`~threadline.server.crons.claim` decides which
replica gets it. A replica that dies between claiming a time and queueing its run loses that
one firing (at most once, never twice); the cron goes on at its next due time.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Sequence
from typing import Any

from . import runs as q
from .assistants import assistant_for_run
from .crons import Cron, claim, due_crons
from .db import Database

__all__ = ["Scheduler"]

log = logging.getLogger("threadline.server")


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
        for cron in await due_crons(self.db, now):
            due = await claim(self.db, cron, now)
            if due is None:
                continue  # another replica fired it
            try:
                run_id = await self._fire(cron, due)
            except Exception:
                log.exception("cron %s failed to queue its run", cron.cron_id)
                continue
            if run_id is not None:
                fired.append(run_id)
        return fired

    async def _fire(self, cron: Cron, due: float) -> str | None:
        assistant = await assistant_for_run(self.db, cron.assistant_id, self.graph_ids)
        if assistant is None:
            log.warning("cron %s: assistant %s is gone; skipped", cron.cron_id, cron.assistant_id)
            return None
        options: dict[str, Any] = dict(cron.payload)
        strategy = options.pop("multitask_strategy", None) or "enqueue"
        try:
            run, _cancelled, _claimed = await q.create_run(
                self.db,
                thread_id=cron.thread_id or str(uuid.uuid4()),
                assistant_id=assistant.assistant_id,
                graph_id=assistant.graph_id,
                kwargs=assistant.run_kwargs(options),
                metadata={**cron.metadata, "cron_id": cron.cron_id},
                strategy=strategy,
                create_thread=cron.thread_id is None,
                # One id per due time: should two replicas ever both fire it, one insert fails.
                run_id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"cron:{cron.cron_id}:{due!r}")),
                thread_ttl=self.thread_ttl,
            )
        except q.RunConflict as exc:
            log.warning("cron %s skipped a run: %s", cron.cron_id, exc)
            return None
        except q.ThreadMissing:
            # Its thread was deleted: the cron goes with it, as LangGraph's cascade does.
            await self.db.execute("DELETE FROM tl_crons WHERE cron_id = ?", (cron.cron_id,))
            log.info("cron %s deleted: its thread %s is gone", cron.cron_id, cron.thread_id)
            return None
        return str(run["run_id"])

    async def _loop(self) -> None:
        while True:
            try:
                await self.fire_due()
            except Exception:
                log.exception("firing crons failed")
            await asyncio.sleep(self.interval)
