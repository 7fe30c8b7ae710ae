"""``Runtime``: what a node gets for its ``runtime`` parameter (LangGraph's ``Runtime``).

It bundles the run's static ``context`` (``invoke(..., context=...)``), the graph's ``store``,
the node's ``stream_writer`` and facts about the running task (``execution_info``). A node
asks for it with a parameter named ``runtime`` (or annotated ``Runtime[...]``), or calls
:func:`get_runtime` while it runs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Generic, Protocol, TypeVar

__all__ = ["BaseUser", "ExecutionInfo", "RunControl", "Runtime", "ServerInfo", "get_runtime"]

ContextT = TypeVar("ContextT")


def _no_op_writer(_chunk: Any) -> None:
    """The stream writer of a runtime made outside a run: writes go nowhere."""


def _no_op_heartbeat() -> None:
    """Progress signal for idle timeouts; threadline has none to feed yet."""


@dataclass(frozen=True, kw_only=True, slots=True)
class ExecutionInfo:
    """Read-only facts about the running task."""

    checkpoint_id: str
    checkpoint_ns: str
    task_id: str
    thread_id: str | None = None
    run_id: str | None = None
    node_attempt: int = 1
    node_first_attempt_time: float | None = None

    def patch(self, **overrides: Any) -> ExecutionInfo:
        """A copy with the given fields replaced."""
        return replace(self, **overrides)


class BaseUser(Protocol):
    """An authenticated user, as a server passes it in ``ServerInfo.user``."""

    @property
    def is_authenticated(self) -> bool: ...

    @property
    def display_name(self) -> str: ...

    @property
    def identity(self) -> str: ...

    @property
    def permissions(self) -> Sequence[str]: ...

    def __getitem__(self, key: str) -> Any: ...

    def __contains__(self, key: object) -> bool: ...

    def __iter__(self) -> Iterator[str]: ...


@dataclass(frozen=True, kw_only=True, slots=True)
class ServerInfo:
    """What a server running the graph tells its nodes (None when no server runs it)."""

    assistant_id: str
    graph_id: str
    user: BaseUser | None = None


class RunControl:
    """A run-scoped request to stop at the next step boundary ("drain"), safe from any thread.

    threadline's runtime does not act on it yet; a node may read ``runtime.drain_requested``.
    """

    __slots__ = ("_reason",)

    def __init__(self) -> None:
        self._reason: str | None = None

    def request_drain(self, reason: str = "shutdown") -> None:
        self._reason = reason

    @property
    def drain_requested(self) -> bool:
        return self._reason is not None

    @property
    def drain_reason(self) -> str | None:
        return self._reason


@dataclass(frozen=True, kw_only=True, slots=True)
class Runtime(Generic[ContextT]):
    """Run-scoped context and utilities for a node.

    Attributes:
        context: the value passed as ``invoke(..., context=...)`` (a dict given for a
            dataclass or pydantic ``context_schema`` is turned into an instance of it).
        store: the store passed to ``compile(store=...)``, or None.
        stream_writer: writes a chunk to ``stream_mode="custom"``.
        previous: the previous return value of an entrypoint (functional API); None in graphs.
        execution_info: the running task's checkpoint, namespace, task id and attempt.
    """

    context: ContextT = field(default=None)  # type: ignore[assignment]
    store: Any = None
    stream_writer: Callable[[Any], None] = _no_op_writer
    heartbeat: Callable[[], None] = _no_op_heartbeat
    previous: Any = None
    execution_info: ExecutionInfo | None = None
    server_info: ServerInfo | None = None
    control: RunControl | None = None

    def merge(self, other: Runtime[ContextT]) -> Runtime[ContextT]:
        """``other``'s values where it has them, this runtime's elsewhere."""
        return Runtime(
            context=other.context if other.context is not None else self.context,
            store=other.store if other.store is not None else self.store,
            stream_writer=self.stream_writer
            if other.stream_writer is _no_op_writer
            else other.stream_writer,
            heartbeat=self.heartbeat if other.heartbeat is _no_op_heartbeat else other.heartbeat,
            previous=self.previous if other.previous is None else other.previous,
            execution_info=other.execution_info or self.execution_info,
            server_info=other.server_info or self.server_info,
            control=other.control or self.control,
        )

    def override(self, **overrides: Any) -> Runtime[ContextT]:
        """A copy with the given fields replaced."""
        return replace(self, **overrides)

    def patch_execution_info(self, **overrides: Any) -> Runtime[ContextT]:
        """A copy whose ``execution_info`` has the given fields replaced."""
        if self.execution_info is None:
            raise RuntimeError("this runtime has no execution_info to patch")
        return replace(self, execution_info=self.execution_info.patch(**overrides))

    @property
    def drain_requested(self) -> bool:
        """Whether the run was asked to stop at the next step (never, in threadline yet)."""
        return self.control is not None and self.control.drain_requested

    @property
    def drain_reason(self) -> str | None:
        return None if self.control is None else self.control.drain_reason


def coerce_context(schema: Any, context: Any) -> Any:
    """A dict given for a dataclass or pydantic ``context_schema`` becomes an instance of it."""
    if context is None or schema is None or not isinstance(context, dict):
        return context
    if dataclasses.is_dataclass(schema) or callable(getattr(schema, "model_validate", None)):
        return schema(**context)
    return context


def get_runtime(context_schema: type[ContextT] | None = None) -> Runtime[ContextT]:
    """The running node's :class:`Runtime` (``context_schema`` only helps type checkers)."""
    from .context import current_task

    runtime: Runtime[ContextT] = current_task("get_runtime()").runtime()
    return runtime
