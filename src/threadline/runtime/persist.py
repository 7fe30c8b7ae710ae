"""Carrying out a run's saves in order, by compare-and-swap on the thread's head.

``durability="sync"`` saves before the next step starts; ``"async"`` saves in the background
while the next step runs (a crash can lose the last step or two, which then rerun on resume);
``"exit"`` saves only when the run stops (a crash loses the whole run's progress).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Mapping
from typing import Any

from ..checkpoint.base import BaseCheckpointSaver
from ..checkpoint.types import VersionRef
from .core import SaveCheckpoint, SaveOp, SaveWrites


class _Head:
    """The head this run expects, and the refs of the checkpoint it last saved."""

    def __init__(
        self,
        saver: BaseCheckpointSaver,
        thread_id: str,
        ns: str,
        head: str | None,
        refs: Mapping[str, VersionRef],
        thread_metadata: dict[str, Any] | None,
    ) -> None:
        self.saver = saver
        self.thread_id = thread_id
        self.ns = ns
        self.head = head
        self.refs = refs
        self.thread_metadata = thread_metadata

    def put(self, op: SaveCheckpoint) -> None:
        self._base(op)
        saved = self.saver.put(
            self.thread_id,
            self.ns,
            op.draft,
            expected_head=self.head,
            thread_metadata=self.thread_metadata,
            before=op.before,
        )
        self.head, self.refs = saved.id, saved.refs

    async def aput(self, op: SaveCheckpoint) -> None:
        self._base(op)
        saved = await self.saver.aput(
            self.thread_id,
            self.ns,
            op.draft,
            expected_head=self.head,
            thread_metadata=self.thread_metadata,
            before=op.before,
        )
        self.head, self.refs = saved.id, saved.refs

    def _base(self, op: SaveCheckpoint) -> None:
        # An input checkpoint changes no channel: it and the step after it build on the
        # checkpoint saved before.
        op.draft.base_refs = self.refs
        if op.before is not None:
            op.before.base_refs = self.refs

    def put_writes(self, op: SaveWrites) -> None:
        self.saver.put_writes(
            self.thread_id,
            self.ns,
            op.checkpoint_id,
            op.task_id,
            op.writes,
            expected_head=self.head,
            first_idx=op.first_idx,
        )

    async def aput_writes(self, op: SaveWrites) -> None:
        await self.saver.aput_writes(
            self.thread_id,
            self.ns,
            op.checkpoint_id,
            op.task_id,
            op.writes,
            expected_head=self.head,
            first_idx=op.first_idx,
        )


class Persister(_Head):
    """Sync saves; with ``background=True`` they run on one worker thread, in order."""

    def __init__(self, *args: Any, background: bool = False) -> None:
        super().__init__(*args)
        self._pool = concurrent.futures.ThreadPoolExecutor(1) if background else None
        self._pending: list[concurrent.futures.Future[None]] = []

    def submit(self, ops: list[SaveOp]) -> None:
        if not ops:
            return
        if self._pool is None:
            self._run(ops)
            return
        self._raise_failed()
        self._pending.append(self._pool.submit(self._run, ops))

    def _run(self, ops: list[SaveOp]) -> None:
        for op in ops:
            if isinstance(op, SaveCheckpoint):
                self.put(op)
            else:
                self.put_writes(op)

    def _raise_failed(self) -> None:
        still = []
        for f in self._pending:
            if f.done():
                f.result()
            else:
                still.append(f)
        self._pending = still

    def flush(self) -> None:
        pending, self._pending = self._pending, []
        for f in pending:
            f.result()

    def close(self) -> None:
        try:
            self.flush()
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True)


class AsyncPersister(_Head):
    """Async saves; with ``background=True`` they run as a chain of tasks, in order."""

    def __init__(self, *args: Any, background: bool = False) -> None:
        super().__init__(*args)
        self._background = background
        self._last: asyncio.Task[None] | None = None

    async def submit(self, ops: list[SaveOp]) -> None:
        if not ops:
            return
        if not self._background:
            await self._run(ops)
            return
        if self._last is not None and self._last.done():
            self._last.result()
        self._last = asyncio.ensure_future(self._after(self._last, ops))

    async def _after(self, previous: asyncio.Task[None] | None, ops: list[SaveOp]) -> None:
        if previous is not None:
            await previous
        await self._run(ops)

    async def _run(self, ops: list[SaveOp]) -> None:
        for op in ops:
            if isinstance(op, SaveCheckpoint):
                await self.aput(op)
            else:
                await self.aput_writes(op)

    async def flush(self) -> None:
        last, self._last = self._last, None
        if last is not None:
            await last

    async def close(self) -> None:
        await self.flush()
