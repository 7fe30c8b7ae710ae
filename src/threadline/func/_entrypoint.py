"""``@entrypoint``: a function run as a one-node graph, checkpointed like any graph.

The graph's state has three keys: the input of the latest run (``__input__``), the function's
return value (``__return__``, what ``invoke`` and ``get_state().values`` give), and the value
saved for the next run's ``previous`` parameter (``__previous__``). Each run saves LangGraph's
two checkpoints: the input (step -1 on a new thread) and the step that ran the function.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from .._copy import private_copy
from ..checkpoint.base import BaseCheckpointSaver
from ..checkpoint.types import RunnableConfig
from ..graph.schema import StateSchema
from ..graph.spec import END, START, GraphSpec, NodeSpec
from ..runtime.compiled import CompiledStateGraph
from ..runtime.context import current_task
from ..runtime.core import RunCore, Task
from ..runtime.handle import RunHandle
from ..runtime.task_events import task_start
from ..runtime.tasks import timeout_seconds, with_timeout
from ..types import CachePolicy, Command, RetryPolicy

__all__ = ["Entrypoint", "entrypoint"]

INPUT = "__input__"
RETURN = "__return__"
PREVIOUS = "__previous__"
_INJECTED = ("config", "previous", "runtime", "store", "writer")

R = TypeVar("R")
S = TypeVar("S")


class _Schema(StateSchema):
    """An entrypoint's state, shown to callers as the function's return value."""

    def __init__(self) -> None:
        super().__init__(dict)

    def output(self, values: Mapping[str, Any]) -> Any:
        return private_copy(values.get(RETURN))


class entrypoint:
    """Turn a function of one input into a durable workflow (``langgraph.func.entrypoint``).

    The function may also take, by name: ``previous`` (what the thread's last run saved),
    ``config``, ``writer`` (``stream_mode="custom"``), ``store`` and ``runtime``. Inside it,
    ``@task`` calls run in parallel and their results are checkpointed as they finish, and
    ``interrupt()`` pauses the run. Return ``entrypoint.final(value=..., save=...)`` to save
    something other than what the caller gets.
    """

    @dataclass(frozen=True)
    class final(Generic[R, S]):
        """Return ``value`` to the caller and save ``save`` as the next run's ``previous``."""

        value: R
        save: S

    def __init__(
        self,
        checkpointer: BaseCheckpointSaver | None = None,
        store: Any = None,
        cache: Any = None,
        context_schema: type[Any] | None = None,
        cache_policy: Any = None,
        retry_policy: RetryPolicy | Sequence[RetryPolicy] | None = None,
        timeout: Any = None,
    ) -> None:
        self.timeout = timeout
        self.checkpointer = checkpointer
        self.store = store
        self.cache = cache
        self.context_schema = context_schema
        self.cache_policy = cache_policy
        self.retry_policy = retry_policy

    def __call__(self, func: Callable[..., Any]) -> Entrypoint:
        return Entrypoint(func, self)


class Entrypoint(CompiledStateGraph):
    """A compiled entrypoint: ``invoke``/``stream``/``get_state``/... as on a graph."""

    _input_values = False

    def __init__(self, func: Callable[..., Any], options: entrypoint) -> None:
        if inspect.isgeneratorfunction(func) or inspect.isasyncgenfunction(func):
            raise NotImplementedError(
                f"entrypoint {getattr(func, '__name__', func)!r} is a generator; generators are"
                " not supported in the functional API. Return a value, and stream with the"
                " `writer` parameter"
            )
        params = list(inspect.signature(func).parameters.values())
        if not params:
            raise ValueError(
                f"entrypoint function {func.__name__!r} must take at least one parameter, its"
                " input (use a dict to pass several values)"
            )
        is_async = inspect.iscoroutinefunction(func)
        what = f"entrypoint {func.__name__!r}"
        timeout = timeout_seconds(options.timeout, what, is_async=is_async)
        policy: RetryPolicy | tuple[RetryPolicy, ...] | None = None
        if isinstance(options.retry_policy, RetryPolicy):
            policy = options.retry_policy
        elif options.retry_policy is not None:  # several: the first that retries the error
            policy = tuple(options.retry_policy) or None
        name = func.__name__
        node = NodeSpec(
            name=name,
            fn=self._async_node if is_async else self._node,
            is_async=is_async,
            takes_config=True,
            takes_writer=False,
            retry=policy,
            destinations=None,
            cache_policy=_input_cache_policy(func, options.cache_policy),
        )
        spec = GraphSpec(nodes={name: node}, edges={START: [name], name: [END]}, input_step=False)
        super().__init__(
            schema=_Schema(),
            spec=spec,
            checkpointer=options.checkpointer,
            interrupt_before=(),
            interrupt_after=(),
            name=name,
            store=options.store,
            cache=options.cache,
            context_schema=options.context_schema,
        )
        self.func = func
        self.cache_policy = options.cache_policy
        self.timeout = timeout
        self._injected = [p.name for p in params[1:] if p.name in _INJECTED]
        self.__doc__ = func.__doc__
        self.__wrapped__ = func

    # ------------------------------------------------------------------ the node
    # The graph runtime does the rest as for any node: the run's context, store and cache
    # (RunScope), retries, and the cache policy (keyed by the function's input).

    def _node(self, state: Mapping[str, Any], config: RunnableConfig) -> dict[str, Any]:
        kwargs = self._kwargs(state, config)
        return _writes(self.func(state.get(INPUT), **kwargs))

    async def _async_node(self, state: Mapping[str, Any], config: RunnableConfig) -> dict[str, Any]:
        call = self._acall(state.get(INPUT), self._kwargs(state, config))
        return _writes(await with_timeout(call, self.timeout, f"entrypoint {self.name!r}"))

    async def _acall(self, value: Any, kwargs: dict[str, Any]) -> Any:
        value = self.func(value, **kwargs)
        while inspect.isawaitable(value):  # a coroutine, or e.g. an asyncio.gather of tasks
            value = await value
        return value

    def _kwargs(self, state: Mapping[str, Any], config: RunnableConfig) -> dict[str, Any]:
        ctx = current_task(f"entrypoint {self.name!r}")
        ctx.previous = state.get(PREVIOUS)  # runtime.previous, for get_runtime() and tasks too
        if not self._injected:
            return {}
        offered = {
            "config": lambda: config,
            "previous": lambda: ctx.previous,
            "writer": lambda: ctx.emit,
            "store": lambda: ctx.run_scope.store,
            "runtime": ctx.runtime,
        }
        return {name: offered[name]() for name in self._injected}

    # ------------------------------------------------------------------ how runs look

    def _update_of(self, task: Task) -> dict[str, Any]:
        if task.cached:
            return {task.name: dict(task.writes).get(RETURN), "__metadata__": {"cached": True}}
        return {task.name: dict(task.writes).get(RETURN)}

    def _task_start(self, task: Task, node_input: Any, config: RunnableConfig) -> dict[str, Any]:
        # As LangGraph shows an entrypoint: its input, started by the run's.
        return task_start(task.id, task.name, node_input.get(INPUT), ("__start__",), config)

    def _task_result(self, task: Task) -> dict[str, Any]:
        chunk = super()._task_result(task)
        if task.done:
            chunk["result"] = {"__end__": dict(task.writes).get(RETURN)}
        return chunk

    def _shows_step(self, core: RunCore) -> bool:
        return True  # the function returned (None is a return value too)

    @property
    def _every_key(self) -> bool:
        return False  # "values" shows the return value, not the channels it is kept in

    def _result(self, core: RunCore) -> Any:
        if core.interrupts:
            return {"__interrupt__": list(core.interrupts)}
        return core.output()

    # ------------------------------------------------------------------ the public calls

    def invoke(
        self,
        input: Any,
        config: RunnableConfig | None = None,
        *,
        context: Any = None,
        **kwargs: Any,
    ) -> Any:
        """Run the function (or resume it with ``Command(resume=...)``, or continue it with
        ``None``) and return its return value (``{"__interrupt__": [...]}`` when paused)."""
        return super().invoke(_input(input), config, context=context, **kwargs)

    async def ainvoke(
        self,
        input: Any,
        config: RunnableConfig | None = None,
        *,
        context: Any = None,
        **kwargs: Any,
    ) -> Any:
        """Async :meth:`invoke`."""
        return await super().ainvoke(_input(input), config, context=context, **kwargs)

    def stream(
        self,
        input: Any,
        config: RunnableConfig | None = None,
        *,
        stream_mode: str | Sequence[str] | None = None,
        context: Any = None,
        **kwargs: Any,
    ) -> Iterator[Any]:
        """Run it, yielding ``{task_name: result}`` as tasks finish and ``{name: return}`` at
        the end (``stream_mode="updates"``, the default), or other modes as graphs do."""
        return super().stream(
            _input(input),
            config,
            context=context,
            stream_mode=stream_mode or "updates",
            **kwargs,
        )

    def astream(
        self,
        input: Any,
        config: RunnableConfig | None = None,
        *,
        stream_mode: str | Sequence[str] | None = None,
        context: Any = None,
        **kwargs: Any,
    ) -> AsyncIterator[Any]:
        """Async :meth:`stream`."""
        return super().astream(
            _input(input),
            config,
            context=context,
            stream_mode=stream_mode or "updates",
            **kwargs,
        )

    def astart(
        self,
        input: Any,
        config: RunnableConfig | None = None,
        *,
        stream_mode: str | Sequence[str] | None = None,
        **kwargs: Any,
    ) -> RunHandle:
        """A background run (:meth:`CompiledStateGraph.astart`, what the server runs): the
        function's input as :meth:`invoke` takes it."""
        return super().astart(_input(input), config, stream_mode=stream_mode or "updates", **kwargs)

    def update_state(
        self, config: RunnableConfig, values: Any, as_node: str | None = None
    ) -> RunnableConfig:
        """Save ``values`` as if the function had returned it (the next run's ``previous``)."""
        return super().update_state(config, _saved(values), as_node or self.name)

    async def aupdate_state(
        self, config: RunnableConfig, values: Any, as_node: str | None = None
    ) -> RunnableConfig:
        """Async :meth:`update_state`."""
        return await super().aupdate_state(config, _saved(values), as_node or self.name)


def _writes(value: Any) -> dict[str, Any]:
    if isinstance(value, entrypoint.final):
        return {RETURN: value.value, PREVIOUS: value.save}
    return {RETURN: value, PREVIOUS: value}


def _saved(value: Any) -> dict[str, Any]:
    return _writes(value)


def _input(value: Any) -> Any:
    """The function's input as a state update; ``None`` and ``Command`` keep their meaning."""
    if value is None or isinstance(value, Command):
        return value
    return {INPUT: value}


def _input_cache_policy(func: Callable[..., Any], policy: Any) -> CachePolicy[Any] | None:
    """The node's cache policy: the user's ``key_func`` of the function's input, prefixed by
    the function's name (entrypoints share the node function, so its name is not enough)."""
    if policy is None:
        return None
    ident = f"{func.__module__}.{func.__qualname__}"
    key_func = policy.key_func

    def key(state: Mapping[str, Any]) -> str:
        raw = key_func(state.get(INPUT))
        return f"{ident}:{raw.hex() if isinstance(raw, bytes) else raw}"

    return CachePolicy(key_func=key, ttl=policy.ttl)
