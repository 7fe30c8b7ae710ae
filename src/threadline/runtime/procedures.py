"""Saver-facing procedures written once, run by a sync or an async driver.

A procedure is a generator that yields ``(method, args, kwargs)`` calls on the checkpointer and
receives their results. :func:`drive` runs it with the sync methods, :func:`adrive` with their
``a``-prefixed async twins.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import Any, TypeVar

from ..checkpoint.base import BaseCheckpointSaver
from ..checkpoint.types import CheckpointTuple, make_config
from ..errors import CheckpointNotFoundError

T = TypeVar("T")
Call = tuple[str, tuple[Any, ...], dict[str, Any]]
Procedure = Generator[Call, Any, T]


def drive(proc: Procedure[T], saver: BaseCheckpointSaver) -> T:
    """Run a procedure against the saver's sync methods."""
    try:
        call = next(proc)
        while True:
            method, args, kwargs = call
            try:
                result = getattr(saver, method)(*args, **kwargs)
            except Exception as exc:
                call = proc.throw(exc)
            else:
                call = proc.send(result)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


async def adrive(proc: Procedure[T], saver: BaseCheckpointSaver) -> T:
    """Run a procedure against the saver's async methods."""
    try:
        call = next(proc)
        while True:
            method, args, kwargs = call
            try:
                result = await getattr(saver, "a" + method)(*args, **kwargs)
            except Exception as exc:
                call = proc.throw(exc)
            else:
                call = proc.send(result)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


@dataclass
class Opened:
    """Where a run or an update starts: a checkpoint (or none), and the thread's head.

    ``cached``: the head is the one this process last saved, not read back (it may be stale).
    """

    loaded: CheckpointTuple | None
    head: str | None
    is_head: bool
    cached: bool = False


def open_thread(
    thread_id: str,
    ns: str,
    checkpoint_id: str | None,
    *,
    optimistic: bool = False,
    replay: bool = False,
) -> Procedure[Opened]:
    """Load the checkpoint a config names.

    A ``checkpoint_id`` of another thread forks it into ``thread_id`` when that thread is new;
    when the thread was already forked from it, the thread's head is used. ``optimistic``:
    start from the head this process last saved, if it knows one (see ``cached_head``).
    ``replay``: a run continues from there; from an input checkpoint that means from the step
    its input went to (the input is stored there, not twice).
    """
    if checkpoint_id is None:
        if optimistic:
            cached = yield ("cached_head", (thread_id, ns), {})
            if cached is not None:
                return Opened(cached, cached.checkpoint.id, True, cached=True)
        head = yield ("load", (thread_id, ns, None), {"shared": True, "task_writes_only": True})
        return Opened(head, None if head is None else head.checkpoint.id, True)
    try:
        loaded = yield (
            "load",
            (thread_id, ns, checkpoint_id),
            {"shared": True, "task_writes_only": True},
        )
    except CheckpointNotFoundError:
        located = yield ("locate", (checkpoint_id,), {})
        if located is None:
            raise
        src_thread, src_ns = located
        head = yield ("load", (thread_id, ns, None), {"shared": True, "task_writes_only": True})
        if head is None:
            source = make_config(src_thread, src_ns, checkpoint_id)
            yield ("fork", (source, thread_id), {})
            head = yield ("load", (thread_id, ns, None), {"shared": True, "task_writes_only": True})
            return Opened(head, head.checkpoint.id, True)
        forked = yield (
            "list_first",
            (make_config(thread_id, ns, head.checkpoint.id),),
            {"filter": {"source": "fork"}},
        )
        origin = None if forked is None else forked.metadata.get("forked_from", {})
        if origin and origin.get("checkpoint_id") == checkpoint_id:
            return Opened(head, head.checkpoint.id, True)
        raise CheckpointNotFoundError(
            f"checkpoint {checkpoint_id!r} belongs to thread {src_thread!r}, not {thread_id!r},"
            f" and {thread_id!r} already exists. To branch from it, name a new thread id"
        ) from None
    head_id = yield ("head_id", (thread_id, ns), {})
    if replay and loaded.checkpoint.id != head_id and _is_input(loaded):
        child_id = yield ("child_id", (thread_id, ns, loaded.checkpoint), {})
        if child_id is not None:
            loaded = yield (
                "load",
                (thread_id, ns, child_id),
                {"shared": True, "task_writes_only": True},
            )
    return Opened(loaded, head_id, loaded.checkpoint.id == head_id)


def _is_input(loaded: CheckpointTuple) -> bool:
    tasks = loaded.checkpoint.tasks
    return len(tasks) == 1 and tasks[0].get("name") == "__start__"
