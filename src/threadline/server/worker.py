"""Workers: claim queued runs, execute them on the server's checkpointer, publish events.

Each replica runs up to ``workers`` runs at once. Workers sleep until the queue is announced
(:mod:`~threadline.server.notify`) and re-check on a slow timer. A heartbeat renews the leases
of this replica's runs, hands back runs whose worker died (expired leases) and delivers cancels
whose announcement was missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ..checkpoint.jsonable import to_jsonable
from ..errors import is_invalid_resume
from ..runtime.handle import RunHandle
from ..types import Command
from . import lifecycle as life
from . import runs as q
from .db import Database
from .graphs import GraphRegistry
from .streaming import API_STREAM_MODES, EventEncoder, graph_modes
from .wire import interrupts_json

__all__ = ["Outcome", "Worker"]

log = logging.getLogger("threadline.server")
RECHECK_SECONDS = 1.0
"""How long a worker sleeps without an announcement before looking at the queue anyway."""


@dataclass
class Outcome:
    """A run's result, handed to a waiter of the replica that executed it (no read back)."""

    ready: bool = False
    value: Any = None


class Worker:
    """The run executor of one replica."""

    def __init__(
        self, db: Database, graphs: GraphRegistry, *, workers: int = 4, lease: float = 10.0
    ) -> None:
        self.db = db
        self.graphs = graphs
        self.workers = workers
        self.lease = lease
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._slot_free = asyncio.Event()
        self._running: dict[str, asyncio.Task[None]] = {}
        self._cancels: dict[str, str] = {}
        self._live: set[str] = set()  # runs inside their graph: what a cancel interrupts
        self._handles: dict[str, RunHandle] = {}  # runs started in their graph
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[None]] = set()  # webhooks being sent
        self._next_due = 0.0  # when the earliest delayed run announced to this replica is due
        self._reserved = 0  # slots held by handlers creating runs this worker may take
        self._handovers: dict[str, list[Outcome]] = {}  # runs handlers here wait for
        self._stopping = False

    def start(self) -> None:
        self.db.notifier.on("cancel", self._cancel_announced)
        self.db.notifier.on("due", self._due_announced)
        self._tasks.append(asyncio.create_task(self._heartbeat()))
        if self.workers > 0:
            self._tasks.append(asyncio.create_task(self._claim_loop()))

    async def stop(self, grace: float = 10.0) -> None:
        """Stop claiming; let running runs finish for ``grace`` seconds, then hand them back."""
        self._stopping = True
        heartbeat, *claiming = self._tasks or [asyncio.create_task(asyncio.sleep(0))]
        for task in claiming:
            task.cancel()
        # The heartbeat keeps renewing the leases of the runs still finishing here.
        if self._running:
            await asyncio.wait(list(self._running.values()), timeout=grace)
        for run_id, task in list(self._running.items()):
            self._cancels[run_id] = "handback"
            task.cancel()
        if self._running:
            await asyncio.wait(list(self._running.values()), timeout=5)
        heartbeat.cancel()
        if self._background:  # webhooks of runs that just ended
            await asyncio.wait(list(self._background), timeout=2)

    @contextlib.contextmanager
    def handing_over(self, run_id: str) -> Iterator[Outcome]:
        """While the block runs, the outcome of ``run_id``, if this replica records it, is put
        in the :class:`Outcome` yielded (set before the run's announcement is heard)."""
        box = Outcome()
        boxes = self._handovers.setdefault(run_id, [])
        boxes.append(box)
        try:
            yield box
        finally:
            boxes.remove(box)
            if not boxes:
                self._handovers.pop(run_id, None)

    def _hand_over(self, run_id: str, value: Any) -> None:
        for box in self._handovers.get(run_id, ()):
            box.ready, box.value = True, value

    def reserve(self) -> bool:
        """Hold a free slot for a run being created here; :meth:`adopt` or :meth:`release` it."""
        if self._stopping or len(self._running) + self._reserved >= self.workers:
            return False
        self._reserved += 1
        return True

    def release(self) -> None:
        """Give back a slot :meth:`reserve` held (the run was queued instead)."""
        self._reserved -= 1
        self._slot_free.set()

    def adopt(self, run: tuple[Any, ...]) -> None:
        """Execute a run created already claimed by this worker, in the slot reserved for it."""
        self._reserved -= 1
        self._start(run)

    def _start(self, run: tuple[Any, ...]) -> None:
        task = asyncio.create_task(self._execute(run))
        self._running[run[0]] = task
        task.add_done_callback(self._forget(run[0]))

    def _due_announced(self, rest: str) -> None:
        due = float(rest)
        if self._next_due <= time.time() or due < self._next_due:
            self._next_due = due
        self.db.notifier.wake("queue")  # the claim loop recomputes how long it may sleep

    def _cancel_announced(self, rest: str) -> None:
        run_id, _, action = rest.partition(":")
        self.cancel_local(run_id, action or "interrupt")

    def cancel_local(self, run_id: str, action: str) -> bool:
        """Cancel a run this replica executes, now."""
        task = self._running.get(run_id)
        if task is None:
            return False
        self._cancels[run_id] = action
        if run_id in self._live:  # else it is stopped before it starts, or has finished
            task.cancel()
        return True

    async def _claim_loop(self) -> None:
        with self.db.notifier.subscribe("queue") as queued:
            while not self._stopping:
                if len(self._running) + self._reserved >= self.workers:
                    self._slot_free.clear()
                    await self._slot_free.wait()
                    continue
                queued.clear()  # before claiming: a run queued meanwhile wakes the next wait
                free = self.workers - len(self._running) - self._reserved
                try:
                    claimed = await q.claim_runs(self.db, self.owner, self.lease, free)
                except Exception:
                    log.exception("claiming runs failed")
                    claimed = []
                for run in claimed:
                    self._start(run)
                if len(claimed) < free:  # the queue is empty: sleep until a run is announced
                    pause = RECHECK_SECONDS
                    until_due = self._next_due - time.time()
                    if until_due > 0:  # or a delayed one is due
                        pause = min(pause, until_due + 0.001)
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(queued.wait(), pause)

    def _forget(self, run_id: str) -> Any:
        def forget(_task: Any) -> None:
            self._running.pop(run_id, None)
            self._cancels.pop(run_id, None)
            self._handles.pop(run_id, None)
            self._slot_free.set()

        return forget

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.lease / 4)
            try:
                for run_id, action in await q.renew_leases(self.db, self.owner, self.lease):
                    self.cancel_local(run_id, action)
                await q.requeue_expired(self.db)
            except Exception:
                log.exception("heartbeat failed")

    async def _execute(self, run: tuple[Any, ...]) -> None:
        run_id, thread_id = run[0], run[1]
        kwargs = json.loads(run[5])
        start = 0
        if run[8] > 1:  # a retry appends after the events of the earlier attempts
            existing = await q.read_events(self.db, run_id, -1)
            start = existing[-1][0] + 1 if existing else 0
        events = EventWriter(self.db, run_id, start, live=bool(run[12]))
        events.emit("metadata", {"run_id": run_id, "attempt": run[8]})
        config = self._config(run, kwargs)
        graph = self.graphs.get(run[3], config)
        thread_config = {"configurable": {"thread_id": thread_id}}
        try:
            handle = await self._stream_unless_cancelled(graph, run, kwargs, config, events.emit)
            await events.flush()
        except asyncio.CancelledError:
            action = self._cancels.pop(run_id, "interrupt")
            if action == "handback":
                await events.flush(store=True)
                await q.hand_back(self.db, run_id, self.owner)
                return
            await events.flush()
            values, interrupts, thread_status = None, None, "idle"
            # Restored while the run still holds the thread, so no other run starts meanwhile.
            stopped = self._handles.get(run_id)
            started = None if stopped is None else stopped.started_from
            if action == "rollback" and await life.restore_before(
                graph, thread_id, run_id, started
            ):
                restored = await graph.aget_state(thread_config)
                values, interrupts, thread_status = _thread_row_of(restored)
            await q.finish_run(
                self.db, run, self.owner, status="interrupted", result=None,
                thread_status=thread_status, values=values, interrupts=interrupts,
                events=events.unstored(), delete=action == "rollback",
            )  # fmt: skip
            await self._completed(graph, run, kwargs)
            return
        except Exception as exc:
            error = {"error": type(exc).__name__, "message": str(exc)}
            events.emit("error", error)
            await events.flush()
            failed = {"__error__": error}
            values, by_task, thread_status = None, None, "error"
            stopped = self._handles.get(run_id)
            if is_invalid_resume(exc) and stopped is not None:
                # The answer was rejected and withdrawn: the run failed, but the thread is
                # still paused on the same interrupt. Its row says so, as its state does.
                try:
                    snapshot = await stopped.state()
                except Exception:  # the run still ends, its thread marked "error"
                    log.exception("run %s: reading the state it left failed", run_id)
                else:
                    if snapshot.interrupts:
                        values, by_task, thread_status = _thread_row_of(snapshot)
            if await q.finish_run(
                self.db, run, self.owner, status="error", result=failed,
                thread_status=thread_status, values=values, interrupts=by_task,
                events=events.unstored(),
            ):  # fmt: skip
                self._hand_over(run_id, failed)
            await self._completed(graph, run, kwargs)
            return
        # The state the run left, not the head: reading the head would tell the saver this
        # process's commit is still the head, and a replica taking turns on the thread with
        # another would then start its next run from a stale head and fail its first commit.
        snapshot = await handle.state()
        values, by_task, status = _thread_row_of(snapshot)
        # As the run's output carries them in LangGraph (and in the stream's events): every
        # field of the Interrupt, "response_schema" null when the graph gave none.
        pending = [to_jsonable(i) for i in snapshot.interrupts]
        result = dict(values) if isinstance(values, dict) else values
        if pending and isinstance(result, dict):
            result["__interrupt__"] = pending
        if await q.finish_run(
            self.db, run, self.owner, status="success", result=result, thread_status=status,
            values=values, interrupts=by_task, events=events.unstored(),
        ):  # fmt: skip
            self._hand_over(run_id, result)
        await self._completed(graph, run, kwargs)

    async def _completed(self, graph: Any, run: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """After a run ended: its webhook (in the background) and its temporary thread."""
        try:
            if kwargs.get("webhook"):
                rows = await self.db.execute(
                    f"SELECT {q.RUN_COLUMNS} FROM tl_runs WHERE run_id = ?", (run[0],)
                )
                payload = q.run_json(rows[0]) if rows else {"run_id": run[0], "status": "deleted"}
                if rows:
                    payload["values"] = json.loads(rows[0][11]) if rows[0][11] else None
                task = asyncio.create_task(life.post_webhook(kwargs["webhook"], payload))
                self._background.add(task)
                task.add_done_callback(self._background.discard)
            if kwargs.get("on_completion") == "delete":
                await life.delete_thread(self.db, graph.checkpointer, run[1])
        except Exception:
            log.exception("run %s: after-run steps failed", run[0])

    async def _stream_unless_cancelled(
        self, graph: Any, run: tuple[Any, ...], kwargs: dict[str, Any], config: Any, emit: Any
    ) -> RunHandle:
        """:meth:`_stream`, the only part a cancel interrupts: one that came while the run
        was being set up stops it here, instead of breaking the setup (or the bookkeeping
        after), which would leave the run ``running`` for good."""
        self._live.add(run[0])
        try:
            if run[0] in self._cancels:
                raise asyncio.CancelledError
            return await self._stream(graph, run, kwargs, config, emit)
        finally:
            self._live.discard(run[0])

    async def _resumed_already(self, graph: Any, run: tuple[Any, ...]) -> bool:
        """Whether an earlier attempt of this run already committed a checkpoint."""
        snapshot = await graph.aget_state({"configurable": {"thread_id": run[1]}})
        return bool(snapshot.metadata and snapshot.metadata.get("run_id") == run[0])

    def _config(self, run: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        config = dict(kwargs.get("config") or {})
        configurable = dict(config.get("configurable") or {})
        configurable.update(thread_id=run[1], run_id=run[0], assistant_id=run[2], graph_id=run[3])
        if kwargs.get("checkpoint_id"):
            configurable["checkpoint_id"] = kwargs["checkpoint_id"]
        config["configurable"] = configurable
        config["metadata"] = {**(config.get("metadata") or {}), **json.loads(run[6])}
        config["metadata"].update(run_id=run[0], thread_id=run[1], assistant_id=run[2])
        return config

    async def _stream(
        self, graph: Any, run: tuple[Any, ...], kwargs: dict[str, Any], config: Any, emit: Any
    ) -> RunHandle:
        """Run the graph, emitting its events; its handle, for the state it left."""
        command = kwargs.get("command")
        graph_input: Any = kwargs.get("input")
        if run[8] > 1 and await self._resumed_already(graph, run):
            # A retried run (its replica died) whose earlier attempt committed a checkpoint
            # continues from the thread's head instead of sending its input again. One read
            # of the head, only on retries: the runs table keeps the thread to this run.
            command, graph_input = None, None
            config["configurable"].pop("checkpoint_id", None)
        if command:
            graph_input = Command(
                resume=command.get("resume"),
                update=command.get("update"),
                goto=command.get("goto") or (),
            )
        requested = kwargs.get("stream_mode") or ["values"]
        if isinstance(requested, str):
            requested = [requested]
        requested = [m for m in requested if m in API_STREAM_MODES] or ["values"]
        encoder = EventEncoder(requested)
        options: dict[str, Any] = {
            "stream_mode": graph_modes(requested),
            "subgraphs": bool(kwargs.get("stream_subgraphs")),
        }
        for key in ("interrupt_before", "interrupt_after", "context", "durability"):
            if kwargs.get(key) is not None:
                options[key] = kwargs[key]
        handle: RunHandle = graph.astart(graph_input, config, **options)
        self._handles[run[0]] = handle
        async with contextlib.aclosing(handle.events()) as events:  # cancelled with the run
            async for ev in events:
                for event, data in encoder.encode(ev.namespace, ev.mode, ev.data):
                    emit(event, data)
        return handle


def _thread_row_of(snapshot: Any) -> tuple[Any, dict[str, Any], str]:
    """What a thread's row keeps of its state: values, interrupts by task and status."""
    by_task = {t.id: interrupts_json(t.interrupts) for t in snapshot.tasks if t.interrupts}
    return to_jsonable(snapshot.values), by_task, "interrupted" if snapshot.next else "idle"


class EventWriter:
    """A run's stream events, numbered and stored in order, many per statement.

    Live (someone may follow the run): :meth:`emit` never waits; while one batch is being
    written the next accumulates, so a fast graph costs a few inserts per run, not one per
    event, and a slow one still shows each event as soon as it happens. Not live (a
    ``runs.wait``): events are kept until the run ends and stored with its outcome.
    """

    def __init__(self, db: Database, run_id: str, start: int, *, live: bool = True) -> None:
        self.db = db
        self.run_id = run_id
        self.live = live
        self._seq = start
        self._pending: list[tuple[int, str, str]] = []
        self._writing: asyncio.Task[None] | None = None

    def emit(self, event: str, data: Any) -> None:
        """Queue one event; live, it is written by the running batch's successor."""
        self._pending.append((self._seq, event, json.dumps(to_jsonable(data))))
        self._seq += 1
        if self.live and (self._writing is None or self._writing.done()):
            self._writing = asyncio.create_task(self._write())

    async def _write(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            await q.append_events(self.db, self.run_id, batch)

    async def flush(self, *, store: bool = False) -> None:
        """Wait until every live event emitted so far is stored (raising what storing raised);
        ``store``: also store the kept ones now."""
        if store and self._pending and (self._writing is None or self._writing.done()):
            self._writing = asyncio.create_task(self._write())
        while self._writing is not None:
            writing = self._writing
            await asyncio.shield(writing)
            if writing is self._writing:
                self._writing = None

    def unstored(self) -> list[tuple[int, str, str]]:
        """The events not stored yet (to store with the outcome); they count as stored now."""
        pending, self._pending = self._pending, []
        return pending
