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
from ..checkpoint.lease import Lease
from ..checkpoint.types import VersionRef
from ..errors import CheckpointConflictError
from .core import SaveCheckpoint, SaveOp, SaveWrites
from .leasing import commit_lease


class _Head:
    """The head this run expects, and the refs of the checkpoint it last saved.

    ``lease``: the thread's writer lease the run writes under (``owns``: this run took it, and
    its commits take, renew and release it; a child run only writes under its parent's).
    """

    def __init__(
        self,
        saver: BaseCheckpointSaver,
        thread_id: str,
        ns: str,
        head: str | None,
        refs: Mapping[str, VersionRef],
        thread_metadata: dict[str, Any] | None,
        lease: Lease | None = None,
        owns: bool = False,
    ) -> None:
        self.saver = saver
        self.thread_id = thread_id
        self.ns = ns
        self.head = head
        self.refs = refs
        self.thread_metadata = thread_metadata
        self.lease = lease
        self.owns = owns
        self.stored: list[str] = []  # checkpoints this run committed, oldest first
        self.input_id: str | None = None
        self.input_span = 0  # checkpoints the input took: itself, and step 0 if with it

    def put(self, op: SaveCheckpoint) -> None:
        self._base(op)
        try:
            saved = self.saver.put(
                self.thread_id,
                self.ns,
                op.draft,
                expected_head=self.head,
                thread_metadata=self.thread_metadata,
                lease=commit_lease(self.lease, self.owns, op.draft),
                before=op.before,
            )
        except CheckpointConflictError as exc:
            raise self._what_was_stored(exc) from None
        self._saved(op, saved.id, saved.refs)

    async def aput(self, op: SaveCheckpoint) -> None:
        self._base(op)
        try:
            saved = await self.saver.aput(
                self.thread_id,
                self.ns,
                op.draft,
                expected_head=self.head,
                thread_metadata=self.thread_metadata,
                lease=commit_lease(self.lease, self.owns, op.draft),
                before=op.before,
            )
        except CheckpointConflictError as exc:
            raise self._what_was_stored(exc) from None
        self._saved(op, saved.id, saved.refs)

    def _saved(
        self, op: SaveCheckpoint, checkpoint_id: str, refs: Mapping[str, VersionRef]
    ) -> None:
        self.head, self.refs = checkpoint_id, refs
        if op.before is not None and op.before.id is not None:  # committed with its step 0
            self.stored.append(op.before.id)
            self.input_id, self.input_span = op.before.id, 2
        self.stored.append(checkpoint_id)
        if op.draft.source == "input":
            self.input_id, self.input_span = checkpoint_id, 1

    def _what_was_stored(self, exc: CheckpointConflictError) -> CheckpointConflictError:
        """Say exactly what this run had stored before the commit that failed (item 11)."""
        exc.stored = tuple(self.stored)
        exc.input_checkpoint_id = self.input_id
        if not self.stored:
            what = "This run stored nothing, so running it again is safe."
        else:
            steps = len(self.stored) - (self.input_span if self.input_id is not None else 0)
            parts = []
            if self.input_id is not None:
                parts.append(f"its input as checkpoint {self.input_id}")
            if steps:
                parts.append(f"{steps} step(s), the last as checkpoint {self.stored[-1]}")
            what = (
                f"This run had already stored {' and '.join(parts)}: sending the same input"
                " again would apply it twice. Continue with invoke(None, config) instead, or"
                " send inputs with {'configurable': {'idempotency_key': KEY}} so a retry of one"
                " that landed is not applied again."
            )
        if exc.args and what not in str(exc.args[0]):
            exc.args = (f"{exc.args[0]} {what}", *exc.args[1:])
        return exc

    def _base(self, op: SaveCheckpoint) -> None:
        # An input checkpoint changes no channel: it and the step after it build on the
        # checkpoint saved before.
        op.draft.base_refs = self.refs
        if op.before is not None:
            op.before.base_refs = self.refs

    def put_writes(self, op: SaveWrites) -> None:
        try:
            self.saver.put_writes(
                self.thread_id,
                self.ns,
                op.checkpoint_id,
                op.task_id,
                op.writes,
                expected_head=self.head,
                first_idx=op.first_idx,
                lease=self.lease,
            )
        except CheckpointConflictError as exc:
            raise self._what_was_stored(exc) from None

    async def aput_writes(self, op: SaveWrites) -> None:
        try:
            await self.saver.aput_writes(
                self.thread_id,
                self.ns,
                op.checkpoint_id,
                op.task_id,
                op.writes,
                expected_head=self.head,
                first_idx=op.first_idx,
                lease=self.lease,
            )
        except CheckpointConflictError as exc:
            raise self._what_was_stored(exc) from None


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
