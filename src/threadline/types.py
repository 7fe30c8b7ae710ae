"""Public types: snapshots, retry policies, and the human-in-the-loop primitives."""

from __future__ import annotations

import random
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Generic, Literal, NamedTuple, TypeVar, Union, overload

from typing_extensions import TypeVar as DefaultTypeVar

from .checkpoint.base import BaseCheckpointSaver
from .checkpoint.types import RunnableConfig

__all__ = [
    "All",
    "CachePolicy",
    "Command",
    "Durability",
    "Interrupt",
    "Overwrite",
    "RetryPolicy",
    "Send",
    "StateSnapshot",
    "StateTask",
    "StreamMode",
    "TimeoutPolicy",
    "interrupt",
]

StreamMode = Literal["values", "updates", "checkpoints", "tasks", "debug", "messages", "custom"]
Durability = Literal["sync", "async", "exit"]
All = Literal["*"]

N = TypeVar("N", bound=Hashable)
ResponseT = DefaultTypeVar("ResponseT", default=Any)


@dataclass(frozen=True, slots=True)
class Interrupt(Generic[ResponseT]):
    """A pause requested by ``interrupt(value)``; answer it with ``Command(resume=...)``.

    ``response_schema`` is the JSON Schema of the answer expected, when the node gave one
    (``interrupt(value, response_schema=...)``), else None. ``Interrupt[Decision]`` names the
    answer's type for type checkers; a pending interrupt always holds the JSON Schema dict.
    """

    value: Any
    id: str
    response_schema: type[ResponseT] | dict[str, Any] | None = field(
        default=None, kw_only=True, hash=False
    )


@dataclass(frozen=True, slots=True)
class Send:
    """Run ``node`` with ``arg`` as its input in the next step (once per ``Send``)."""

    node: str
    arg: Any


try:  # a tool returning a Command: langchain-core passes ToolOutputMixin results through as is
    from langchain_core.messages.tool import ToolOutputMixin as _ToolOutput
except ImportError:  # without langchain-core there are no tools to return one

    class _ToolOutput:  # type: ignore[no-redef]
        pass


@dataclass(frozen=True)
class Command(Generic[N], _ToolOutput):
    """Resume a paused thread, write state, or route, from a node's return or as input.

    Args:
        update: state update applied as the node's (or, as input, the caller's) write.
        goto: node name(s) or ``Send`` objects to run next.
        resume: the answer to pending ``interrupt()`` calls, or ``{interrupt_id: answer}``.
    """

    update: Any = None
    goto: str | Send | Sequence[str | Send] = ()
    resume: Any = None
    graph: str | None = None

    PARENT = "__parent__"


class StateTask(NamedTuple):
    """A task of a checkpoint: the node to run, and why it has not finished."""

    id: str
    name: str
    path: tuple[Any, ...]
    error: BaseException | None = None
    interrupts: tuple[Interrupt, ...] = ()
    state: Any = None
    result: Any = None


class StateSnapshot(NamedTuple):
    """A thread's state at one checkpoint, as ``get_state`` returns it."""

    values: Any
    next: tuple[str, ...]
    config: RunnableConfig
    metadata: dict[str, Any] | None
    created_at: str | None
    parent_config: RunnableConfig | None
    tasks: tuple[StateTask, ...]
    interrupts: tuple[Interrupt, ...] = ()


_NO_RETRY = (
    ValueError,
    TypeError,
    ArithmeticError,
    ImportError,
    LookupError,
    NameError,
    SyntaxError,
    RuntimeError,
    ReferenceError,
    StopIteration,
    StopAsyncIteration,
    AssertionError,
    AttributeError,
    NotImplementedError,
)


def default_retry_on(exc: Exception) -> bool:
    """Retry transient failures (I/O, timeouts, custom errors), not programming errors."""
    return not isinstance(exc, _NO_RETRY) or isinstance(exc, ConnectionError)


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry a failing node.

    The wait before attempt ``n + 1`` is ``initial_interval * backoff_factor ** (n - 1)``,
    capped at ``max_interval``, times a random factor in [1, 1.5) when ``jitter`` is on.
    """

    max_attempts: int = 3
    initial_interval: float = 0.5
    backoff_factor: float = 2.0
    max_interval: float = 128.0
    jitter: bool = True
    retry_on: type[Exception] | Sequence[type[Exception]] | Callable[[Exception], bool] = field(
        default=default_retry_on
    )

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(
                f"RetryPolicy.max_attempts must be at least 1, got {self.max_attempts}"
            )
        if self.initial_interval < 0 or self.max_interval < 0 or self.backoff_factor < 1:
            raise ValueError(
                "RetryPolicy intervals must be >= 0 and backoff_factor >= 1, got"
                f" initial_interval={self.initial_interval}, max_interval={self.max_interval},"
                f" backoff_factor={self.backoff_factor}"
            )

    def should_retry(self, exc: Exception) -> bool:
        rule = self.retry_on
        if isinstance(rule, type):
            return isinstance(exc, rule)
        if isinstance(rule, Sequence):
            return isinstance(exc, tuple(rule))
        return bool(rule(exc))

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        wait = min(self.max_interval, self.initial_interval * self.backoff_factor ** (attempt - 1))
        return wait * (1 + random.random() / 2) if self.jitter else wait


@overload
def interrupt(value: Any, *, response_schema: type[ResponseT]) -> ResponseT: ...


@overload
def interrupt(value: Any, *, response_schema: dict[str, Any] | None = None) -> Any: ...


def interrupt(value: Any, *, response_schema: type[Any] | dict[str, Any] | None = None) -> Any:
    """Pause the run here and hand ``value`` to the caller.

    The first time, this raises to stop the run (a checkpoint records the pause). When the
    thread is resumed with ``Command(resume=answer)``, the node runs again from its start and
    this call returns ``answer``. Several calls in one node are answered in order.

    ``response_schema`` describes the answer expected, for clients to render a form: a JSON
    Schema dict (shown as it is; answers are not checked), or a pydantic model, ``TypedDict``
    or dataclass (needs pydantic), shown as its JSON Schema and used to validate the answer:
    this call then returns the validated object. An answer that does not match raises
    ``pydantic.ValidationError`` out of the run (``threadline.errors.is_invalid_resume`` tells
    it apart) and is not saved: the thread stays paused here, to be answered again.
    """
    from .runtime.context import current_task

    return current_task("interrupt()").interrupt(value, response_schema)


def _default_cache_key(*args: Any, **kwargs: Any) -> str:
    """A node's input as a cache key: its serialized form, hashed."""
    from .cache.base import default_cache_key

    return default_cache_key(*args, **kwargs)


KeyFuncT = TypeVar("KeyFuncT", bound=Callable[..., "str | bytes"])


@dataclass(frozen=True, kw_only=True, slots=True)
class CachePolicy(Generic[KeyFuncT]):
    """Reuse a node's result for the same input: ``add_node(..., cache_policy=...)``.

    Needs ``compile(cache=InMemoryCache())``. ``key_func(state)`` names an entry (by default
    a hash of the serialized input); ``ttl`` is its lifetime in seconds (None: forever).
    """

    key_func: KeyFuncT = _default_cache_key  # type: ignore[assignment]
    ttl: int | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class TimeoutPolicy:
    """A time limit per attempt of an async ``@task`` or ``@entrypoint`` (their ``timeout=``).

    ``run_timeout``: seconds (or a ``timedelta``) an attempt may run before it is cancelled
    with ``NodeTimeoutError`` (retryable). ``idle_timeout`` and ``refresh_on`` are LangGraph's
    limit on time without progress; threadline has no heartbeats yet and refuses an
    ``idle_timeout``. ``add_node(timeout=...)`` is not implemented (docs/compat.md).
    """

    run_timeout: float | timedelta | None = None
    idle_timeout: float | timedelta | None = None
    refresh_on: Literal["auto", "heartbeat"] = "auto"


@dataclass(slots=True)
class Overwrite:
    """Write ``value`` to a reducer key as it is, bypassing the reducer.

    ``{"items": Overwrite(["b"])}`` replaces the list instead of appending. Two overwrites of
    one key in one step are an error.
    """

    value: Any
    type: Literal["__overwrite__"] = "__overwrite__"


# ---------------------------------------------------------------------- LangGraph's other names

__all__ += [
    "Checkpointer",
    "PregelTask",
    "StateUpdate",
    "StreamWriter",
    "ensure_valid_checkpointer",
]

#: What ``stream_mode="custom"`` consumers receive from: ``writer(chunk)`` inside a node.
StreamWriter = Callable[[Any], None]

#: LangGraph's name for a task of a snapshot (``StateSnapshot.tasks``).
PregelTask = StateTask


class StateUpdate(NamedTuple):
    """One update of ``bulk_update_state``: the values, as which node, for which task."""

    values: dict[str, Any] | None
    as_node: str | None = None
    task_id: str | None = None


#: What ``compile(checkpointer=...)`` takes: a saver; ``None`` (inherit the parent graph's when
#: run as a subgraph); ``True`` (a subgraph with its own history); ``False`` (none at all).
Checkpointer = Union[None, bool, BaseCheckpointSaver]  # noqa: UP007 (a runtime alias on 3.10)


def ensure_valid_checkpointer(checkpointer: Any) -> Any:
    """``checkpointer`` if it is a saver, True, False or None; else a TypeError saying why."""
    if checkpointer is None or checkpointer is True or checkpointer is False:
        return checkpointer
    if isinstance(checkpointer, BaseCheckpointSaver):
        return checkpointer
    raise TypeError(
        f"invalid checkpointer: {type(checkpointer).__name__}. Pass a saver (InMemorySaver,"
        " SqliteSaver, PostgresSaver, their async twins), True, False or None"
    )
