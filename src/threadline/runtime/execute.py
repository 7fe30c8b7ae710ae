"""Running one task: call the node (with retries), then its routers. Sync and async twins."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from typing import Any

from ..checkpoint.types import RunnableConfig
from ..errors import GraphInterrupt, ThreadlineError
from ..graph.spec import NodeSpec
from .context import TaskContext, enter, leave
from .core import RunCore, Task

Emit = Callable[[str, Any], None]


def _context(core: RunCore, task: Task, config: RunnableConfig, emit: Emit) -> TaskContext:
    return TaskContext(
        task_id=task.id,
        node=task.name,
        config=config,
        answers=list(task.answers),
        emit=lambda chunk: emit("custom", chunk),
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


def run_task(core: RunCore, task: Task, config: RunnableConfig, emit: Emit) -> None:
    """Run ``task`` to an outcome recorded on it: done, error or interrupts."""
    node = core.spec.nodes[task.name]
    ctx = _context(core, task, config, emit)
    token = enter(ctx)
    try:
        attempt = 0
        while True:
            attempt += 1
            ctx.calls = 0
            state = core.task_input(task)
            try:
                if node.subgraph is not None:
                    returned = node.subgraph.invoke(state, _child_config(config, task))
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
            except GraphInterrupt:
                task.interrupts = [*task.interrupts[: len(task.answers)], *ctx.raised[-1:]]
                return
            except Exception as exc:
                delay = _retry_delay(node, attempt, exc)
                if delay is None:
                    task.error = exc
                    return
                time.sleep(delay)
    finally:
        leave(token)


async def arun_task(core: RunCore, task: Task, config: RunnableConfig, emit: Emit) -> None:
    """Async :func:`run_task`: async nodes are awaited, sync ones run in a worker thread."""
    node = core.spec.nodes[task.name]
    ctx = _context(core, task, config, emit)
    token = enter(ctx)
    try:
        attempt = 0
        while True:
            attempt += 1
            ctx.calls = 0
            state = core.task_input(task)
            try:
                if node.subgraph is not None:
                    returned = await node.subgraph.ainvoke(state, _child_config(config, task))
                else:
                    args, kwargs = _call_args(node, state, ctx)
                    if node.is_async:
                        returned = await node.fn(*args, **kwargs)
                    else:
                        returned = await _in_thread(node.fn, *args, **kwargs)
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
            except GraphInterrupt:
                task.interrupts = [*task.interrupts[: len(task.answers)], *ctx.raised[-1:]]
                return
            except Exception as exc:
                delay = _retry_delay(node, attempt, exc)
                if delay is None:
                    task.error = exc
                    return
                await asyncio.sleep(delay)
    finally:
        leave(token)


async def _in_thread(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    # to_thread copies the context, so interrupt() and the stream writer work in sync nodes.
    return await asyncio.to_thread(fn, *args, **kwargs)


def _close(awaitable: Any) -> None:
    close = getattr(awaitable, "close", None)
    if close is not None:
        close()


def _child_config(config: RunnableConfig, task: Task) -> RunnableConfig:
    configurable = dict(config.get("configurable") or {})
    parent_ns = configurable.get("checkpoint_ns") or ""
    child = f"{task.name}:{task.id}"
    configurable["checkpoint_ns"] = f"{parent_ns}|{child}" if parent_ns else child
    configurable.pop("checkpoint_id", None)
    return {**config, "configurable": configurable}
