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
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .compiled import CompiledStateGraph

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

    def __init__(
        self,
        graph: CompiledStateGraph,
        input: Any,
        config: Any,
        *,
        stream_mode: Sequence[str],
        subgraphs: bool = True,
        max_buffered: int = 1000,
        **options: Any,
    ) -> None:
        self.graph = graph
        self.config = config
        self.subgraphs = subgraphs
        self._queue: asyncio.Queue[Any] = asyncio.Queue(max_buffered)
        self._consumed = False
        self._task = asyncio.get_running_loop().create_task(
            self._run(input, config, list(stream_mode), options)
        )

    async def _run(
        self, input: Any, config: Any, modes: list[str], options: dict[str, Any]
    ) -> None:
        seq = 0
        nested = self.subgraphs
        stream = self.graph.astream(input, config, stream_mode=modes, subgraphs=nested, **options)
        async for item in stream:
            namespace, mode, data = item if nested else ((), *item)
            await self._queue.put(RunEvent(seq, mode, tuple(namespace), data))
            seq += 1

    async def events(self) -> AsyncIterator[RunEvent]:
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
