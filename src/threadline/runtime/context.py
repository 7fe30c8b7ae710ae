"""What a running node can reach: its interrupts, its stream writer, its config."""

from __future__ import annotations

import contextvars
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..checkpoint.types import RunnableConfig
from ..errors import GraphInterrupt, ThreadlineError
from ..types import Interrupt

__all__ = ["TaskContext", "current_task", "get_config", "get_stream_writer"]

_current: contextvars.ContextVar[TaskContext | None] = contextvars.ContextVar(
    "threadline_task", default=None
)


def interrupt_id(task_id: str, index: int) -> str:
    """Stable across reruns of the task: the same call site gets the same id."""
    return hashlib.sha256(f"{task_id}:{index}".encode()).hexdigest()[:32]


@dataclass
class ParentLink:
    """What a graph invoked inside a running task inherits from it."""

    saver: Any
    thread_id: str
    ns: str
    durability: str
    modes: tuple[str, ...]
    subgraphs: bool
    emit: Callable[[str, Any, tuple[str, ...]], None]
    sink: Any = None  # saves the results of @task calls now (the run's save_call/asave_call)


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
    task: Any = None  # the core's Task this context runs (its finished @task calls)
    scope: Any = None  # the @task calls made under this context (runtime.tasks.CallScope)
    emit_event: Callable[[str, Any], None] | None = None  # the run's events, any stream mode
    loop: Any = None  # the event loop of an async run (where async @task calls go)

    def interrupt(self, value: Any) -> Any:
        # Answers are matched by id, not position: a call site's id is fixed by its order
        # among this context's interrupts, and interrupts of @task calls (own contexts, own
        # ids) or of subgraphs may have been answered in between.
        asked = interrupt_id(self.task_id, self.calls)
        self.calls += 1
        for earlier, answer in zip(self.interrupts, self.answers):
            if earlier.id == asked:
                return answer
        pending = Interrupt(value=value, id=asked)
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


def enter(ctx: TaskContext) -> contextvars.Token[TaskContext | None]:
    return _current.set(ctx)


def leave(token: contextvars.Token[TaskContext | None]) -> None:
    _current.reset(token)
