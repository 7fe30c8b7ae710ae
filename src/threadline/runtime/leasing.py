"""A run's writer lease of its thread: taken before its first commit, renewed while it runs,
released by its last commit (or at its end).

Only one run writes a thread at a time; a second one waits for the lease (``on_busy="wait"``,
bounded by ``lease_timeout``) or raises :class:`~threadline.errors.ThreadBusyError`
(``on_busy="raise"``). Every commit of the holder checks the lease's epoch in its own
transaction (fencing), so a run frozen past its lease's expiry cannot write after another run
took over.

Costs nothing per step on an uncontended thread: a run with new input and ``durability="sync"``
takes the lease in the transaction of its input checkpoint (``LeaseOp("acquire")``), steps
renew it in theirs, and a step that leaves no next task releases it in its commit. Only runs
that may run a node before committing (resumes, ``invoke(None)``, other durabilities, sends
with an ``idempotency_key``) take it with a round trip of its own first.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from typing import Any

from ..checkpoint.base import BaseCheckpointSaver
from ..checkpoint.lease import Lease, LeaseOp, check_lease_timeout, check_on_busy
from ..checkpoint.types import CheckpointDraft, RunnableConfig, make_config
from .procedures import Procedure

__all__ = ["RunLease", "commit_lease", "idempotency_key", "input_landed"]


class RunLease:
    """The lease one root run holds (child runs of its tasks write under it too)."""

    def __init__(self, saver: BaseCheckpointSaver, thread_id: str, config: RunnableConfig):
        configurable: Mapping[str, Any] = config.get("configurable") or {}
        on_busy = configurable.get("on_busy")
        timeout = configurable.get("lease_timeout")
        self.on_busy = None if on_busy is None else check_on_busy(on_busy)
        self.timeout = None if timeout is None else check_lease_timeout(timeout)
        self.saver = saver
        self.lease: Lease = saver.new_lease(thread_id)
        self._task: asyncio.Task[None] | None = None

    def acquire(self) -> Procedure[None]:
        """Take the lease, waiting as the call's or the saver's ``on_busy`` says."""
        yield (
            "acquire_lease",
            (self.lease,),
            {"on_busy": self.on_busy, "timeout": self.timeout},
        )

    def started(self) -> None:
        """The run's first commit landed: keep the lease alive from a thread of the saver's."""
        if self.lease.held:
            self.saver.lease_renewer().add(self.lease)

    def astarted(self) -> None:
        """Async runs renew from the saver's renewer thread too when the saver can renew
        without its event loop (the async PostgreSQL saver, on a connection of its own);
        otherwise from a task of their loop (the async SQLite saver)."""
        if not self.lease.held:
            return
        renewer = self.saver.blocking_lease_renewer()
        if renewer is not None:
            renewer.add(self.lease)
        elif self._task is None:
            self._task = asyncio.ensure_future(_renew_loop(self.saver, self.lease))

    def end(self) -> None:
        self.saver.lease_renewer().discard(self.lease)
        if self.lease.held:
            self.saver.release_lease(self.lease)

    async def aend(self) -> None:
        renewer = self.saver.blocking_lease_renewer()
        if renewer is not None:
            renewer.discard(self.lease)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self.lease.held:
            await self.saver.arelease_lease(self.lease)


async def _renew_loop(saver: BaseCheckpointSaver, lease: Lease) -> None:
    while lease.held:
        await asyncio.sleep(lease.ttl / 3)
        try:
            if not await saver.arenew_lease(lease):
                return  # lost: the next commit is fenced and says so
        except Exception:
            continue


def commit_lease(lease: Lease | None, owns: bool, draft: CheckpointDraft) -> LeaseOp | None:
    """What a run's commit does with its lease.

    The owner takes it with its first commit if it does not hold it yet, and releases it with a
    commit that leaves no next task (the run ends there). A child run only writes under it.
    """
    if lease is None:
        return None
    if not lease.held:
        return LeaseOp("acquire", lease) if owns else None
    if owns and not draft.tasks:
        return LeaseOp("release", lease)
    return LeaseOp("hold", lease)


def idempotency_key(config: RunnableConfig) -> str | None:
    """The ``idempotency_key`` of a call's ``configurable``, if any (a non-empty string)."""
    configurable = config.get("configurable") or {}
    key = configurable.get("idempotency_key")
    if key is None:
        return None
    if not isinstance(key, str) or not key:
        raise ValueError(
            f"idempotency_key must be a non-empty string, got {key!r}; e.g. str(uuid.uuid4())"
            " made once per message and reused on each retry of it"
        )
    return key


def input_landed(thread_id: str, ns: str, key: str) -> Procedure[bool]:
    """Whether an input sent with ``key`` is already stored in the thread (under the lease)."""
    found = yield (
        "list_first",
        (make_config(thread_id, ns, ""),),
        {"filter": {"idempotency_key": key, "source": "input"}},
    )
    return found is not None
