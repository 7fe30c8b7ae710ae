"""Every public error threadline raises. All derive from :class:`ThreadlineError`.

Each message says what happened, which thread or checkpoint it concerns, and how to fix it.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Sequence
from typing import Any

__all__ = [
    "CheckpointConflictError",
    "CheckpointNotFoundError",
    "CorruptCheckpointError",
    "EmptyInputError",
    "GraphInterrupt",
    "GraphRecursionError",
    "GraphValidationError",
    "InvalidNamespaceError",
    "InvalidUpdateError",
    "NoCheckpointerError",
    "NodeTimeoutError",
    "ParentCommand",
    "SchemaMissingError",
    "SchemaVersionError",
    "SerializationError",
    "ThreadNotFoundError",
    "ThreadlineError",
]


class ThreadlineError(Exception):
    """Base class of every error threadline raises on purpose."""


class GraphValidationError(ThreadlineError, ValueError):
    """The graph is malformed: raised by ``compile()`` and the builder methods."""


class InvalidUpdateError(ThreadlineError, ValueError):
    """A node or a caller wrote something the state schema does not allow."""


class GraphRecursionError(ThreadlineError, RecursionError):
    """The run took more supersteps than ``recursion_limit`` allows."""


class EmptyInputError(ThreadlineError, ValueError):
    """``invoke(None, config)`` on a thread that has nothing to continue."""


class NoCheckpointerError(ThreadlineError, ValueError):
    """A persistence feature was used on a graph compiled without a checkpointer."""


class CheckpointNotFoundError(ThreadlineError, LookupError):
    """A ``checkpoint_id`` that the thread does not hold."""


class ThreadNotFoundError(ThreadlineError, LookupError):
    """A thread id that the checkpointer does not hold."""


class CheckpointConflictError(ThreadlineError):
    """Another writer moved the thread's head first; nothing of this step was stored.

    Reload the thread (``get_state``) and decide whether to run again.
    """

    def __init__(self, message: str, *, thread_id: str, expected: str | None, actual: str | None):
        super().__init__(message)
        self.thread_id = thread_id
        self.expected = expected
        self.actual = actual


class SerializationError(ThreadlineError, TypeError):
    """A value cannot be encoded (or decoded) by the serializer."""


class CorruptCheckpointError(ThreadlineError):
    """Stored bytes that do not decode, or rows of an unknown format version."""


class SchemaVersionError(CorruptCheckpointError):
    """The database was set up or migrated by a newer threadline than this one: upgrade."""


class SchemaMissingError(ThreadlineError):
    """The database has no threadline schema and the saver was told not to create it."""


class GraphBubbleUp(ThreadlineError):
    """Control flow that travels up out of a node as an exception (an interrupt, a command for
    the parent graph); the runtime handles it. Code that catches exceptions around a graph run
    inside a node should let these through."""


class GraphInterrupt(GraphBubbleUp):
    """Raised inside a node by ``interrupt()`` to pause the run. Not an error for callers.

    ``interrupts`` holds the :class:`threadline.types.Interrupt` values waiting for answers.
    """

    def __init__(self, interrupts: Sequence[Any] = ()) -> None:
        super().__init__(f"paused for {len(interrupts)} interrupt(s)")
        self.interrupts = list(interrupts)


class ParentCommand(GraphBubbleUp):
    """Raised out of a subgraph whose node returned ``Command(graph=Command.PARENT)``: the
    parent task takes ``command`` (its ``graph`` cleared) as what its node returned. Not an
    error for callers; a node function that runs a graph itself should let it through."""

    def __init__(self, command: Any) -> None:
        super().__init__("a subgraph node routed its parent graph")
        self.command = command


# ---------------------------------------------------------------------- LangGraph's other names

__all__ += [
    "EmptyChannelError",
    "ErrorCode",
    "GraphBubbleUp",
    "NodeCancelledError",
    "NodeInterrupt",
    "create_error_message",
]


class NodeInterrupt(GraphInterrupt):
    """Raised by a node to pause the run with ``value`` (LangGraph's older form; prefer
    ``interrupt(value)``, which also returns the answer when the thread is resumed).

    The node runs again from its start on resume, so it raises again unless its input changed.
    """

    def __init__(self, value: Any, id: str | None = None) -> None:
        from .types import Interrupt

        super().__init__([Interrupt(value=value, id=id if id is not None else uuid.uuid4().hex)])


class EmptyChannelError(ThreadlineError, LookupError):
    """A state key that has no value yet was read."""


class NodeCancelledError(ThreadlineError):
    """A node's own code raised ``asyncio.CancelledError`` (not a cancellation of the run)."""

    def __init__(self, node: str, message: str | None = None) -> None:
        super().__init__(message or f"node {node!r} raised asyncio.CancelledError")
        self.node = node


class ErrorCode(enum.Enum):
    """LangGraph's troubleshooting codes, for :func:`create_error_message`."""

    GRAPH_RECURSION_LIMIT = "GRAPH_RECURSION_LIMIT"
    INVALID_CONCURRENT_GRAPH_UPDATE = "INVALID_CONCURRENT_GRAPH_UPDATE"
    INVALID_GRAPH_NODE_RETURN_VALUE = "INVALID_GRAPH_NODE_RETURN_VALUE"
    MULTIPLE_SUBGRAPHS = "MULTIPLE_SUBGRAPHS"
    INVALID_CHAT_HISTORY = "INVALID_CHAT_HISTORY"


def create_error_message(*, message: str, error_code: ErrorCode) -> str:
    """``message`` followed by the troubleshooting page of ``error_code`` in LangGraph's docs."""
    return (
        f"{message}\nFor troubleshooting, visit: "
        f"https://docs.langchain.com/oss/python/langgraph/errors/{error_code.value}"
    )


class NodeTimeoutError(ThreadlineError):
    """An attempt of an async task (or entrypoint) ran past its ``timeout``. Retryable: not a
    built-in ``TimeoutError``, so the default ``RetryPolicy`` retries it."""


class InvalidNamespaceError(ThreadlineError, ValueError):
    """A Store namespace is malformed (empty, a label that is not a non-empty string, or a
    label containing '.' or NUL)."""
