"""Every public error threadline raises. All derive from :class:`ThreadlineError`.

Each message says what happened, which thread or checkpoint it concerns, and how to fix it.
Every class also carries a stable ``code`` (snake_case, for programs to match on instead of
messages) and an ``http_status`` hint (404 lookups, 409 conflicts, 422 invalid input, 500
otherwise) that the server answers with; docs/errors.md lists them.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Sequence
from typing import Any, ClassVar

__all__ = [
    "BaseCheckpointGoneError",
    "CheckpointConflictError",
    "CheckpointNotFoundError",
    "CorruptCheckpointError",
    "DecryptionError",
    "EmptyInputError",
    "GraphInterrupt",
    "GraphRecursionError",
    "GraphValidationError",
    "InvalidArgumentError",
    "InvalidNamespaceError",
    "InvalidUpdateError",
    "LeaseLostError",
    "MissingVersionError",
    "NoCheckpointerError",
    "NodeTimeoutError",
    "ParentCommand",
    "ReducerTypeError",
    "SchemaMissingError",
    "SchemaVersionError",
    "SerializationError",
    "ThreadBusyError",
    "ThreadNotFoundError",
    "ThreadlineError",
]


class ThreadlineError(Exception):
    """Base class of every error threadline raises on purpose."""

    code: ClassVar[str] = "threadline_error"
    http_status: ClassVar[int] = 500


class GraphValidationError(ThreadlineError, ValueError):
    """The graph is malformed: raised by ``compile()`` and the builder methods."""

    code: ClassVar[str] = "graph_invalid"
    http_status: ClassVar[int] = 422


class InvalidUpdateError(ThreadlineError, ValueError):
    """A node or a caller wrote something the state schema does not allow."""

    code: ClassVar[str] = "invalid_update"
    http_status: ClassVar[int] = 422


class GraphRecursionError(ThreadlineError, RecursionError):
    """The run took more supersteps than ``recursion_limit`` allows."""

    code: ClassVar[str] = "recursion_limit"
    http_status: ClassVar[int] = 500


class EmptyInputError(ThreadlineError, ValueError):
    """``invoke(None, config)`` on a thread that has nothing to continue."""

    code: ClassVar[str] = "empty_input"
    http_status: ClassVar[int] = 422


class NoCheckpointerError(ThreadlineError, ValueError):
    """A persistence feature was used on a graph compiled without a checkpointer."""

    code: ClassVar[str] = "no_checkpointer"
    http_status: ClassVar[int] = 422


class CheckpointNotFoundError(ThreadlineError, LookupError):
    """A ``checkpoint_id`` that the thread does not hold."""

    code: ClassVar[str] = "checkpoint_not_found"
    http_status: ClassVar[int] = 404


class ThreadNotFoundError(ThreadlineError, LookupError):
    """A thread id that the checkpointer does not hold."""

    code: ClassVar[str] = "thread_not_found"
    http_status: ClassVar[int] = 404


class CheckpointConflictError(ThreadlineError):
    """Another writer moved the thread's head first; nothing of the failed step was stored.

    ``stored`` lists the checkpoints the failing run had committed before (oldest first; empty
    when it stored nothing) and ``input_checkpoint_id`` is the one holding its input, if that
    landed: retrying the same input then applies it twice, unless it is sent with an
    ``idempotency_key`` (see docs/checkpointers.md, "Safe retries").
    """

    code: ClassVar[str] = "checkpoint_conflict"
    http_status: ClassVar[int] = 409

    def __init__(
        self,
        message: str,
        *,
        thread_id: str,
        expected: str | None,
        actual: str | None,
        stored: tuple[str, ...] = (),
        input_checkpoint_id: str | None = None,
    ):
        super().__init__(message)
        self.thread_id = thread_id
        self.expected = expected
        self.actual = actual
        self.stored = stored
        self.input_checkpoint_id = input_checkpoint_id


class BaseCheckpointGoneError(CheckpointConflictError):
    """The checkpoint a commit builds on (its parent, whose channel versions it refers to)
    was pruned or deleted while the step ran; nothing of this step was stored.

    The runtime never shows it: it stores the step again with full values. Callers of
    ``saver.put`` see it when their draft carries no ``values``.
    """

    code: ClassVar[str] = "base_checkpoint_gone"
    http_status: ClassVar[int] = 409


class SerializationError(ThreadlineError, TypeError):
    """A value cannot be encoded (or decoded) by the serializer."""

    code: ClassVar[str] = "serialization_failed"
    http_status: ClassVar[int] = 422


class CorruptCheckpointError(ThreadlineError):
    """Stored bytes that do not decode, or rows of an unknown format version."""

    code: ClassVar[str] = "corrupt_checkpoint"
    http_status: ClassVar[int] = 500


class DecryptionError(CorruptCheckpointError):
    """An encrypted value that does not authenticate: a wrong or missing key, altered bytes, or
    a ciphertext moved from another row, thread, channel or version, or replayed."""

    code: ClassVar[str] = "decryption_failed"
    http_status: ClassVar[int] = 500


class MissingVersionError(CorruptCheckpointError):
    """A checkpoint refers to a channel version that is not stored (rows deleted outside
    threadline; readers first rule out a prune or delete that ran while they read)."""

    code: ClassVar[str] = "missing_version"
    http_status: ClassVar[int] = 500


class SchemaVersionError(CorruptCheckpointError):
    """The database was set up or migrated by a newer threadline than this one: upgrade."""

    code: ClassVar[str] = "schema_too_new"
    http_status: ClassVar[int] = 500


class SchemaMissingError(ThreadlineError):
    """The database has no threadline schema and the saver was told not to create it."""

    code: ClassVar[str] = "schema_missing"
    http_status: ClassVar[int] = 500


class GraphBubbleUp(ThreadlineError):
    """Control flow that travels up out of a node as an exception (an interrupt, a command for
    the parent graph); the runtime handles it. Code that catches exceptions around a graph run
    inside a node should let these through."""

    code: ClassVar[str] = "graph_bubble_up"
    http_status: ClassVar[int] = 500


class GraphInterrupt(GraphBubbleUp):
    """Raised inside a node by ``interrupt()`` to pause the run. Not an error for callers.

    ``interrupts`` holds the :class:`threadline.types.Interrupt` values waiting for answers.
    """

    code: ClassVar[str] = "graph_interrupt"
    http_status: ClassVar[int] = 500

    def __init__(self, interrupts: Sequence[Any] = ()) -> None:
        super().__init__(f"paused for {len(interrupts)} interrupt(s)")
        self.interrupts = list(interrupts)


class ParentCommand(GraphBubbleUp):
    """Raised out of a subgraph whose node returned ``Command(graph=Command.PARENT)``: the
    parent task takes ``command`` (its ``graph`` cleared) as what its node returned. Not an
    error for callers; a node function that runs a graph itself should let it through."""

    code: ClassVar[str] = "parent_command"
    http_status: ClassVar[int] = 500

    def __init__(self, command: Any) -> None:
        super().__init__("a subgraph node routed its parent graph")
        self.command = command


class ThreadBusyError(CheckpointConflictError):
    """Another run holds the thread's writer lease; nothing was stored.

    Raised at once with ``on_busy="raise"``, or after ``lease_timeout`` seconds of waiting with
    ``on_busy="wait"``. ``holder`` is the lease's owner and ``expires_at`` (a Unix time) when
    it runs out unless renewed.
    """

    code: ClassVar[str] = "thread_busy"
    http_status: ClassVar[int] = 409

    def __init__(
        self,
        message: str,
        *,
        thread_id: str,
        holder: str | None,
        expires_at: float | None,
    ) -> None:
        super().__init__(message, thread_id=thread_id, expected=None, actual=None)
        self.holder = holder
        self.expires_at = expires_at


class LeaseLostError(CheckpointConflictError):
    """A commit fenced off: the writer's lease of the thread expired and another writer took
    it over (or it was released). Nothing of this commit was stored."""

    code: ClassVar[str] = "lease_lost"
    http_status: ClassVar[int] = 409

    def __init__(self, message: str, *, thread_id: str, epoch: int | None) -> None:
        super().__init__(message, thread_id=thread_id, expected=None, actual=None)
        self.epoch = epoch


class InvalidArgumentError(ThreadlineError, ValueError):
    """An argument of a checkpointer or graph method has the wrong type or value (a thread
    id, a namespace, a config, a limit); the message says what is accepted."""

    code: ClassVar[str] = "invalid_argument"
    http_status: ClassVar[int] = 422


class ReducerTypeError(InvalidUpdateError, TypeError):
    """A state key's reducer could not combine the current value with a node's update (e.g.
    ``operator.add`` of a list and a str); the message names the key, the writer and both
    types."""

    code: ClassVar[str] = "reducer_type_mismatch"
    http_status: ClassVar[int] = 422


class InvalidNamespaceError(ThreadlineError, ValueError):
    """A Store namespace is malformed (empty, a label that is not a non-empty string, or a
    label containing '.' or NUL)."""

    code: ClassVar[str] = "invalid_namespace"
    http_status: ClassVar[int] = 422


# ---------------------------------------------------------------------- LangGraph's other names

__all__ += [
    "EmptyChannelError",
    "ErrorCode",
    "GraphBubbleUp",
    "NodeCancelledError",
    "NodeInterrupt",
    "create_error_message",
    "is_invalid_resume",
]


class NodeInterrupt(GraphInterrupt):
    """Raised by a node to pause the run with ``value`` (LangGraph's older form; prefer
    ``interrupt(value)``, which also returns the answer when the thread is resumed).

    The node runs again from its start on resume, so it raises again unless its input changed.
    """

    code: ClassVar[str] = "node_interrupt"
    http_status: ClassVar[int] = 500

    def __init__(self, value: Any, id: str | None = None) -> None:
        from .types import Interrupt

        super().__init__([Interrupt(value=value, id=id if id is not None else uuid.uuid4().hex)])


class EmptyChannelError(ThreadlineError, LookupError):
    """A state key that has no value yet was read."""

    code: ClassVar[str] = "empty_channel"
    http_status: ClassVar[int] = 500


class NodeCancelledError(ThreadlineError):
    """A node's own code raised ``asyncio.CancelledError`` (not a cancellation of the run)."""

    code: ClassVar[str] = "node_cancelled"
    http_status: ClassVar[int] = 500

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

    code: ClassVar[str] = "node_timeout"
    http_status: ClassVar[int] = 500


# The attribute ``interrupt()`` sets on the ``pydantic.ValidationError`` it raises when an answer
# does not match its ``response_schema``: the id of the interrupt the answer was for. The
# runtime reads it to withdraw that answer (the thread stays paused on the interrupt).
_INVALID_RESUME = "_threadline_invalid_resume"


def is_invalid_resume(error: BaseException) -> bool:
    """Whether ``error`` was raised by ``interrupt()`` because the answer it got does not match
    its ``response_schema`` (a ``pydantic.ValidationError``).

    Nothing of such an answer is saved: the thread stays paused on the same interrupt, to be
    answered again with ``Command(resume=...)``. ``ToolNode`` lets these errors through instead
    of turning them into tool error messages: the model cannot fix a person's answer.
    """
    return isinstance(getattr(error, _INVALID_RESUME, None), str)


def mark_invalid_resume(error: BaseException, interrupt_id: str) -> None:
    """Mark ``error`` as the rejection of the answer to interrupt ``interrupt_id``."""
    setattr(error, _INVALID_RESUME, interrupt_id)


def invalid_resume_id(error: BaseException | None) -> str | None:
    """The interrupt whose answer ``error`` rejected, when :func:`is_invalid_resume`."""
    found = getattr(error, _INVALID_RESUME, None)
    return found if isinstance(found, str) else None
