"""What a running node can reach: its interrupts, its stream writer, its config."""

from __future__ import annotations

import contextvars
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..checkpoint.types import RunnableConfig
from ..errors import GraphInterrupt, ThreadlineError
from ..types import Interrupt
from .response_schema import response_schema as _response_schema
from .runtime_context import ExecutionInfo, Runtime
from .stored_format import interrupt_id

__all__ = [
    "RunScope",
    "TaskContext",
    "current_task",
    "get_config",
    "get_store",
    "get_stream_writer",
]

_current: contextvars.ContextVar[TaskContext | None] = contextvars.ContextVar(
    "threadline_task", default=None
)


@dataclass
class ParentLink:
    """What a graph invoked inside a running task inherits from it."""

    saver: Any  # None: the parent keeps no checkpoints, nor does the child
    thread_id: str | None
    ns: str
    durability: str
    modes: tuple[str, ...]
    subgraphs: bool
    emit: Callable[[str, Any, tuple[str, ...]], None]
    lease: Any = None  # the thread's writer lease the parent run holds: children write under it
    messages: Any = None  # the run's MessagesStream, when it streams messages
    sink: Any = None  # saves the results of @task calls now (the run's save_call/asave_call)
    # Reports a @task call's start and end to stream modes tasks/debug: ``(kind, payload)``,
    # kind "task" or "task_result". None when the run streams neither (nothing is computed).
    task_event: Callable[[str, dict[str, Any]], None] | None = None


@dataclass(frozen=True, slots=True)
class RunScope:
    """What every task of one run shares: the run's context, the graph's store and cache."""

    context: Any = None
    store: Any = None
    cache: Any = None


NO_SCOPE = RunScope()


@dataclass
class TaskContext:
    task_id: str
    node: str
    config: RunnableConfig
    answers: list[Any]
    interrupts: list[Interrupt]
    emit: Callable[[Any], None]
    parent: ParentLink | None = None
    calls: int = 0
    child_calls: int = 0
    raised: list[Interrupt] = field(default_factory=list)
    run_scope: RunScope = NO_SCOPE  # the run's context, store and cache
    attempt: int = 1
    first_attempt_time: float | None = None
    previous: Any = None  # an entrypoint's previous saved value (Runtime.previous)
    task: Any = None  # the core's Task this context runs (its finished @task calls)
    scope: Any = None  # the @task calls made under this context (runtime.tasks.CallScope)
    emit_event: Callable[[str, Any], None] | None = None  # the run's events, any stream mode
    loop: Any = None  # the event loop of an async run (where async @task calls go)

    def runtime(self) -> Runtime[Any]:
        """A :class:`Runtime` for this task (made on request: most nodes never ask)."""
        configurable = self.config.get("configurable") or {}
        info = ExecutionInfo(
            checkpoint_id=configurable.get("checkpoint_id") or "",
            checkpoint_ns=configurable.get("checkpoint_ns") or "",
            task_id=self.task_id,
            thread_id=configurable.get("thread_id"),
            run_id=None if self.config.get("run_id") is None else str(self.config["run_id"]),
            node_attempt=self.attempt,
            node_first_attempt_time=self.first_attempt_time or time.time(),
        )
        return Runtime(
            context=self.run_scope.context,
            store=self.run_scope.store,
            stream_writer=self.emit,
            previous=self.previous,
            execution_info=info,
        )

    def interrupt(self, value: Any, response_schema: Any = None) -> Any:
        # Answers are matched by id, not position: a call site's id is fixed by its order
        # among this context's interrupts, and interrupts of @task calls (own contexts, own
        # ids) or of subgraphs may have been answered in between.
        schema = _response_schema(response_schema)
        asked = interrupt_id(self.task_id, self.calls)
        self.calls += 1
        for earlier, answer in zip(self.interrupts, self.answers):
            if earlier.id == asked:
                # An answer the schema rejects raises, marked with ``asked``: the runtime then
                # withdraws it, and the thread stays paused on this interrupt.
                return schema.check(answer, asked)
        pending = Interrupt(value=value, id=asked, response_schema=schema.json)
        self.raised.append(pending)
        raise GraphInterrupt([pending])

    def restart(self) -> None:
        """A new attempt of the task: call sites count from the start again."""
        self.calls = self.child_calls = 0
        if self.scope is not None:
            self.scope.count = 0

    def child_ns(self) -> str:
        """The namespace of the next graph this task invokes (stable across reruns)."""
        k = self.child_calls
        self.child_calls += 1
        own = f"{self.node}:{self.task_id}" + (f":{k}" if k else "")
        parent_ns = self.parent.ns if self.parent is not None else ""
        return f"{parent_ns}|{own}" if parent_ns else own

    def child_resume(self) -> dict[str, Any] | None:
        """An answer to pass down: the task was resumed and its last interrupt is answered."""
        if self.interrupts and len(self.answers) >= len(self.interrupts):
            return {self.interrupts[-1].id: self.answers[len(self.interrupts) - 1]}
        return None


def running_task() -> TaskContext | None:
    """The task running in this context, if any."""
    return _current.get()


def current_task(what: str) -> TaskContext:
    ctx = _current.get()
    if ctx is None:
        raise ThreadlineError(f"{what} can only be called inside a node while a graph runs")
    return ctx


def get_stream_writer() -> Callable[[Any], None]:
    """The running node's writer for ``stream_mode="custom"`` (a no-op when nobody listens)."""
    return current_task("get_stream_writer()").emit


def get_config() -> RunnableConfig:
    """The running node's config."""
    return current_task("get_config()").config


def get_store() -> Any:
    """The store of the running graph (``compile(store=...)``)."""
    store = current_task("get_store()").run_scope.store
    if store is None:
        raise ThreadlineError(
            "get_store() was called in a node of a graph compiled without a store; pass one"
            " to compile(), e.g. builder.compile(store=InMemoryStore())"
        )
    return store


def enter(ctx: TaskContext) -> contextvars.Token[TaskContext | None]:
    return _current.set(ctx)


def leave(token: contextvars.Token[TaskContext | None]) -> None:
    _current.reset(token)
