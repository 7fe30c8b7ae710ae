"""A run started in the background: its events typed and numbered, its outcome, a way to stop it.

``graph.astart(input, config, stream_mode=[...])`` returns a :class:`RunHandle`. Its events are
:class:`RunEvent` values with a sequence number that starts at 0 and never skips, so a consumer
can store them, send them as SSE ids and resume after the last one it saw. The run executes in a
task of its own on the caller's event loop; it is not paced by its consumer beyond a bounded
buffer (``max_buffered`` events), so a slow consumer slows the run rather than growing memory.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..checkpoint.types import CheckpointTuple, RunnableConfig
    from ..types import StateSnapshot
    from .compiled import _AsyncRun

__all__ = ["RunEvent", "RunHandle"]


@dataclass(frozen=True)
class RunEvent:
    """One streamed chunk of a run: ``mode`` (``"values"``, ``"updates"``, ...), the subgraph
    ``namespace`` it came from (``()`` for the graph itself) and its ``data``."""

    seq: int
    mode: str
    namespace: tuple[str, ...]
    data: Any


class RunHandle:
    """A run of a compiled graph, executing in the background (see :meth:`~threadline.runtime.
    compiled.CompiledStateGraph.astart`)."""

    def __init__(self, run: _AsyncRun, subgraphs: bool = True, max_buffered: int = 1000) -> None:
        self.subgraphs = subgraphs
        self._execution = run
        self._queue: asyncio.Queue[Any] = asyncio.Queue(max_buffered)
        self._consumed = False
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        seq = 0
        nested = self.subgraphs
        async for item in self._execution:
            namespace, mode, data = item if nested else ((), *item)
            await self._queue.put(RunEvent(seq, mode, tuple(namespace), data))
            seq += 1

    @property
    def checkpoint_config(self) -> RunnableConfig | None:
        """The config of the newest checkpoint the run has committed (``thread_id``,
        ``checkpoint_ns``, ``checkpoint_id``), None while it has committed none.

        :meth:`state` reads the state it names."""
        return self._execution.committed_config()

    @property
    def started_from(self) -> CheckpointTuple | None:
        """The checkpoint the run began from, with the pending writes it had then (what an
        undo of the run keeps: ``saver.rewind(..., keep_writes=...)``); None before the run
        has loaded one, or when the thread had none."""
        return self._execution.started_from

    async def state(self) -> StateSnapshot:
        """The thread's state as the run left it (call it once the run is done): the snapshot
        of the newest checkpoint it committed, whatever ran on the thread after it; the state
        it started from if it committed none. Needs a checkpointer."""
        left = await self._execution.left_state()
        if left is not None:
            return left
        return await self._execution.graph.aget_state(self._execution.config)

    async def events(self) -> AsyncGenerator[RunEvent, None]:
        """The run's events in order, until it ends or is cancelled; raises what the run
        raised. One consumer; closing the iterator early (``contextlib.aclosing``) cancels
        the run."""
        if self._consumed:
            raise RuntimeError("a run's events can be iterated once; keep the RunEvents you need")
        self._consumed = True
        try:
            while True:
                if not self._queue.empty():
                    yield self._queue.get_nowait()
                    continue
                if self._task.done():
                    break
                getting = asyncio.ensure_future(self._queue.get())
                await asyncio.wait({getting, self._task}, return_when=asyncio.FIRST_COMPLETED)
                if getting.done():
                    yield getting.result()
                else:
                    getting.cancel()
            if not self._task.cancelled():
                self._task.result()  # the run's error, if it failed
        finally:
            if not self._task.done():  # the consumer stopped early: so does the run
                self.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task

    def cancel(self) -> None:
        """Stop the run where it is (what it committed stays committed)."""
        self._task.cancel()

    @property
    def done(self) -> bool:
        """Whether the run has ended (finished, failed or been cancelled)."""
        return self._task.done()

    @property
    def cancelled(self) -> bool:
        """Whether the run was stopped by :meth:`cancel`."""
        return self._task.cancelled()

    async def wait(self) -> None:
        """Wait for the run to end, discarding events nobody consumes; raises what it raised."""
        if not self._consumed:
            async for _ in self.events():
                pass
            return
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(self._task)
        if not self._task.cancelled():
            self._task.result()
