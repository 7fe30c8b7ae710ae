"""Running one task: call the node (with retries), then its routers. Sync and async twins."""

from __future__ import annotations

import asyncio
import inspect
import time
import typing
from collections.abc import Callable, Generator, Mapping
from typing import Any, Literal

from ..checkpoint.types import RunnableConfig
from ..errors import GraphInterrupt, ParentCommand, ThreadlineError
from ..graph.spec import Branch, NodeSpec
from .context import ParentLink, TaskContext, enter, leave
from .core import RunCore, Task
from .retry import retry_delay
from .tasks import aclose_scope, close_scope

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
        task=task,
        emit_event=emit,
    )


def _call_args(
    node: NodeSpec, state: Any, ctx: TaskContext
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    kwargs: dict[str, Any] = {"writer": ctx.emit} if node.takes_writer else {}
    if node.inject:
        for param, what in node.inject:
            kwargs[param] = _injected(node, what, ctx)
    args, by_name = node.config_args(ctx.config)
    kwargs.update(by_name)
    return (state, *args), kwargs


def _injected(node: NodeSpec, what: str, ctx: TaskContext) -> Any:
    if what == "runtime":
        return ctx.runtime()
    if what == "previous":
        return None  # an entrypoint's previous return; graphs have none
    store = ctx.run_scope.store
    if store is None and what == "store":
        raise ThreadlineError(
            f"node {node.name!r} takes a 'store' parameter, but the graph was compiled without"
            " a store; pass one to compile(), e.g. builder.compile(store=InMemoryStore()), or"
            " give the parameter a default of None"
        )
    return store


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


# One task's life, written once: a generator that yields what must be done (call the node,
# call a router, sleep before a retry) and receives the results. run_task and arun_task are
# the sync and async drivers.
_CallNode = tuple[Literal["node"], NodeSpec, Any, TaskContext]
_CallRouter = tuple[Literal["router"], Branch, Any, RunnableConfig]
_Sleep = tuple[Literal["sleep"], float]
_CacheGet = tuple[Literal["cache_get"], Any]
_CacheSet = tuple[Literal["cache_set"], Any, Any, "int | None"]
_Action = _CallNode | _CallRouter | _Sleep | _CacheGet | _CacheSet
_MISS: Any = object()


def _cached_attempts(
    core: RunCore, task: Task, ctx: TaskContext, node: NodeSpec
) -> Generator[_Action, Any, None]:
    """A node with a cache policy: reuse the result stored for its key, or run and store."""
    cache_key = _cache_key(node, core.task_input(task))
    hit = yield ("cache_get", cache_key)
    if hit is not _MISS:  # the same input ran before, within the policy's ttl
        task.writes, task.routes = list(hit[0]), list(hit[1])
        task.done = task.cached = True
        return
    yield from _attempts(core, task, ctx, node)
    if task.done:
        yield ("cache_set", cache_key, (task.writes, task.routes), node.cache_policy.ttl)


def _cache_key(node: NodeSpec, state: Any) -> Any:
    """``((namespace), key)``: per node function, named by the policy's ``key_func``."""
    key = node.cache_policy.key_func(state)
    if isinstance(key, bytes):
        key = key.hex()
    return (cache_namespace(node), str(key))


def cache_namespace(node: NodeSpec) -> tuple[str, ...]:
    """Where a node's cached results are kept (``clear_cache()`` clears it)."""
    fn = node.fn
    ident = f"{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', type(fn).__name__)}"
    return ("__threadline_node__", node.name, ident)


def _attempts(
    core: RunCore, task: Task, ctx: TaskContext, node: NodeSpec
) -> Generator[_Action, Any, None]:
    attempt = 0
    while True:
        attempt += 1
        ctx.restart()
        state = core.task_input(task)
        ctx.attempt = attempt
        if attempt == 1 and node.retry is not None:  # else Runtime takes the time it is made
            ctx.first_attempt_time = time.time()
        try:
            try:
                if node.subgraph is not None:
                    child_in = _child_input(node, state)
                    output = yield ("node", node, child_in, ctx)
                    returned = _child_changes(child_in, output)
                else:
                    returned = yield ("node", node, state, ctx)
            except ParentCommand as routed:  # a graph run by this node routes this graph
                returned = routed.command
            core.node_result(task, node, returned, state)
            for branch in core.spec.branches.get(task.name, []):
                result = yield ("router", branch, core.branch_view(task), ctx.config)
                task.routes += branch.resolve(result)
            task.done = True
            return
        except GraphInterrupt as exc:
            _record_interrupt(task, exc)
            return
        except ParentCommand:
            raise  # this graph's node routes the graph running it: out of this run, up there
        except Exception as exc:
            delay = retry_delay(node.retry, attempt, exc)
            if delay is None:
                task.error = exc
                return
            yield ("sleep", delay)


def _call_node(action: _CallNode) -> Any:
    _, node, state, ctx = action
    if node.subgraph is not None:
        return node.subgraph.invoke(state, ctx.config)
    if node.runnable:
        return typing.cast(Any, node.fn).invoke(state, ctx.config)
    if node.is_async:
        raise _no_sync(f"node {ctx.node!r}")
    args, kwargs = _call_args(node, state, ctx)
    returned = node.fn(*args, **kwargs)
    if inspect.isawaitable(returned):
        _close(returned)
        raise _no_sync(f"node {ctx.node!r}")
    return returned


async def _acall_node(action: _CallNode) -> Any:
    _, node, state, ctx = action
    if node.subgraph is not None:
        return await node.subgraph.ainvoke(state, ctx.config)
    if node.runnable:
        return await typing.cast(Any, node.fn).ainvoke(state, ctx.config)
    args, kwargs = _call_args(node, state, ctx)
    if node.is_async:
        return await node.fn(*args, **kwargs)
    # to_thread copies the context: interrupt() and the stream writer work in sync nodes.
    returned = await asyncio.to_thread(node.fn, *args, **kwargs)
    return await returned if inspect.isawaitable(returned) else returned


def _call_router(action: _CallRouter) -> Any:
    _, branch, view, config = action
    return branch.router(view, config) if branch.takes_config else branch.router(view)


def run_task(
    core: RunCore, task: Task, config: RunnableConfig, emit: Emit, parent: ParentLink | None
) -> None:
    """Run ``task`` to an outcome recorded on it: done, error or interrupts."""
    ctx = _context(task, config, emit, parent)
    ctx.run_scope = core.run_scope
    node = core.spec.nodes[task.name]
    cached = node.cache_policy is not None and core.run_scope.cache is not None
    if cached and node.subgraph is None:
        steps = _cached_attempts(core, task, ctx, node)
    else:
        steps = _attempts(core, task, ctx, node)
    token = enter(ctx)
    try:
        action = next(steps)
        while True:
            try:
                if action[0] == "node":
                    result = _call_node(action)
                elif action[0] == "router":
                    result = _call_router(action)
                    if inspect.isawaitable(result):
                        _close(result)
                        raise _no_sync(f"the router after {task.name!r}")
                elif action[0] == "cache_get":
                    result = core.run_scope.cache.get([action[1]]).get(action[1], _MISS)
                elif action[0] == "cache_set":
                    core.run_scope.cache.set({action[1]: (action[2], action[3])})
                    result = None
                else:
                    time.sleep(action[1])
                    result = None
            except Exception as exc:
                action = steps.throw(exc)
            else:
                action = steps.send(result)
    except StopIteration:
        pass
    finally:
        close_scope(ctx)
        leave(token)


async def arun_task(
    core: RunCore, task: Task, config: RunnableConfig, emit: Emit, parent: ParentLink | None
) -> None:
    """Async :func:`run_task`: async nodes are awaited, sync ones run in a worker thread."""
    ctx = _context(task, config, emit, parent)
    ctx.run_scope = core.run_scope
    ctx.loop = asyncio.get_running_loop()
    node = core.spec.nodes[task.name]
    cached = node.cache_policy is not None and core.run_scope.cache is not None
    if cached and node.subgraph is None:
        steps = _cached_attempts(core, task, ctx, node)
    else:
        steps = _attempts(core, task, ctx, node)
    token = enter(ctx)
    try:
        action = next(steps)
        while True:
            try:
                if action[0] == "node":
                    result = await _acall_node(action)
                elif action[0] == "router":
                    result = _call_router(action)
                    if inspect.isawaitable(result):
                        result = await result
                elif action[0] == "cache_get":
                    found = await core.run_scope.cache.aget([action[1]])
                    result = found.get(action[1], _MISS)
                elif action[0] == "cache_set":
                    await core.run_scope.cache.aset({action[1]: (action[2], action[3])})
                    result = None
                else:
                    await asyncio.sleep(action[1])
                    result = None
            except Exception as exc:
                action = steps.throw(exc)
            else:
                action = steps.send(result)
    except StopIteration:
        pass
    finally:
        if ctx.scope is not None:  # it made @task calls
            await aclose_scope(ctx)
        leave(token)


def _close(awaitable: Any) -> None:
    close = getattr(awaitable, "close", None)
    if close is not None:
        close()
