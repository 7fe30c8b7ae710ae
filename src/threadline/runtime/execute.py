"""Running one task: call the node (with retries), then its routers. Sync and async twins."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable, Mapping
from typing import Any

from ..checkpoint.types import RunnableConfig
from ..errors import GraphInterrupt, ThreadlineError
from ..graph.spec import NodeSpec
from .context import ParentLink, TaskContext, enter, leave
from .core import RunCore, Task

Emit = Callable[[str, Any], None]


def _context(
    task: Task, config: RunnableConfig, emit: Emit, parent: ParentLink | None
) -> TaskContext:
    return TaskContext(
        task_id=task.id,
        node=task.name,
        config=config,
        answers=list(task.answers),
        interrupts=list(task.interrupts),
        emit=lambda chunk: emit("custom", chunk),
        parent=parent,
    )


def _call_args(
    node: NodeSpec, state: Any, ctx: TaskContext
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    args: tuple[Any, ...] = (state, ctx.config) if node.takes_config else (state,)
    kwargs = {"writer": ctx.emit} if node.takes_writer else {}
    return args, kwargs


def _retry_delay(node: NodeSpec, attempt: int, exc: Exception) -> float | None:
    """Seconds to wait before another attempt, or None to give up."""
    policy = node.retry
    if policy is None or attempt >= policy.max_attempts or not policy.should_retry(exc):
        return None
    return policy.delay(attempt)


def _no_sync(what: str) -> ThreadlineError:
    return ThreadlineError(f"{what} is async; run the graph with ainvoke()/astream()")


def _child_input(node: NodeSpec, state: Any) -> Any:
    """A subgraph node gets the parent's state, limited to the keys its own schema has."""
    channels = node.subgraph.schema.channels
    if isinstance(state, Mapping) and channels:
        return {k: v for k, v in state.items() if k in channels}
    return state


def _child_changes(state: Any, output: Any) -> dict[str, Any]:
    """What a subgraph changed, as writes: appended tails of lists, other changed values."""
    before = dict(state) if isinstance(state, Mapping) else dict(getattr(state, "__dict__", {}))
    after = dict(output) if isinstance(output, Mapping) else dict(getattr(output, "__dict__", {}))
    after.pop("__interrupt__", None)
    writes: dict[str, Any] = {}
    for key, value in after.items():
        old = before.get(key, _ABSENT)
        if old is _ABSENT:
            writes[key] = value
        elif type(old) is list and type(value) is list and value[: len(old)] == old:
            if len(value) > len(old):
                writes[key] = value[len(old) :]
        elif old is not value and old != value:
            writes[key] = value
    return writes


_ABSENT: Any = object()


def _record_interrupt(task: Task, exc: GraphInterrupt) -> None:
    task.interrupts = [*task.interrupts[: len(task.answers)], *exc.interrupts]
    # A subgraph that paused before/after one of its nodes raises without a question: the
    # task is unfinished, and invoke(None, config) on the parent goes on inside the subgraph.
    task.paused = not exc.interrupts


def run_task(
    core: RunCore, task: Task, config: RunnableConfig, emit: Emit, parent: ParentLink | None
) -> None:
    """Run ``task`` to an outcome recorded on it: done, error or interrupts."""
    node = core.spec.nodes[task.name]
    ctx = _context(task, config, emit, parent)
    token = enter(ctx)
    try:
        attempt = 0
        while True:
            attempt += 1
            ctx.calls = ctx.child_calls = 0
            state = core.task_input(task)
            try:
                if node.subgraph is not None:
                    child_in = _child_input(node, state)
                    returned = _child_changes(child_in, node.subgraph.invoke(child_in, config))
                else:
                    if node.is_async:
                        raise _no_sync(f"node {task.name!r}")
                    args, kwargs = _call_args(node, state, ctx)
                    returned = node.fn(*args, **kwargs)
                    if inspect.isawaitable(returned):
                        _close(returned)
                        raise _no_sync(f"node {task.name!r}")
                core.node_result(task, node, returned, state)
                for branch in core.spec.branches.get(task.name, []):
                    view = core.branch_view(task)
                    result = (
                        branch.router(view, config) if branch.takes_config else branch.router(view)
                    )
                    if inspect.isawaitable(result):
                        _close(result)
                        raise _no_sync(f"the router after {task.name!r}")
                    task.routes += branch.resolve(result)
                task.done = True
                return
            except GraphInterrupt as exc:
                _record_interrupt(task, exc)
                return
            except Exception as exc:
                delay = _retry_delay(node, attempt, exc)
                if delay is None:
                    task.error = exc
                    return
                time.sleep(delay)
    finally:
        leave(token)


async def arun_task(
    core: RunCore, task: Task, config: RunnableConfig, emit: Emit, parent: ParentLink | None
) -> None:
    """Async :func:`run_task`: async nodes are awaited, sync ones run in a worker thread."""
    node = core.spec.nodes[task.name]
    ctx = _context(task, config, emit, parent)
    token = enter(ctx)
    try:
        attempt = 0
        while True:
            attempt += 1
            ctx.calls = ctx.child_calls = 0
            state = core.task_input(task)
            try:
                if node.subgraph is not None:
                    child_in = _child_input(node, state)
                    output = await node.subgraph.ainvoke(child_in, config)
                    returned = _child_changes(child_in, output)
                else:
                    args, kwargs = _call_args(node, state, ctx)
                    if node.is_async:
                        returned = await node.fn(*args, **kwargs)
                    else:
                        # to_thread copies the context: interrupt() and the writer work there.
                        returned = await asyncio.to_thread(node.fn, *args, **kwargs)
                        if inspect.isawaitable(returned):
                            returned = await returned
                core.node_result(task, node, returned, state)
                for branch in core.spec.branches.get(task.name, []):
                    view = core.branch_view(task)
                    result = (
                        branch.router(view, config) if branch.takes_config else branch.router(view)
                    )
                    if inspect.isawaitable(result):
                        result = await result
                    task.routes += branch.resolve(result)
                task.done = True
                return
            except GraphInterrupt as exc:
                _record_interrupt(task, exc)
                return
            except Exception as exc:
                delay = _retry_delay(node, attempt, exc)
                if delay is None:
                    task.error = exc
                    return
                await asyncio.sleep(delay)
    finally:
        leave(token)


def _close(awaitable: Any) -> None:
    close = getattr(awaitable, "close", None)
    if close is not None:
        close()
