"""What the engine stores beyond the user's channels: one place for readers of stored threads.

A checkpoint holds the user's channels plus these reserved ones:

- ``__joins__``: progress of edges with several sources (which sources have arrived);
- ``__deferred__``: deferred nodes waiting for the run's end.

A checkpoint's ``tasks`` are the next superstep's task records,
``{"id": <uuid4 hex>, "name": <node>, "arg": <Send argument, absent when edges triggered it>}``.

Pending writes of a task (stored against the checkpoint the task runs from) use the task's id
and these channels:

- ``__result__``: a finished task's writes and routes;
- ``__error__``: the error a task failed with;
- ``__interrupt__``: the interrupts a task raised, each with the id :func:`interrupt_id` gives;
- ``__resume__``: the answers a task was resumed with, in call order;
- ``__call__`` under task id ``"<task id>.<call key>"``: a finished ``@task`` call.

``interrupt_before`` stores its marker as task id ``__paused__`` with channel
``__paused_before__`` (the nodes it paused before).

A checkpoint's metadata also records ``nodes``: the nodes whose writes made it, which
``update_state`` without ``as_node`` reads. It is not shown in a state's metadata
(:func:`shown_metadata`), as LangGraph shows none such.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

__all__ = [
    "CALL",
    "DEFERRED",
    "ERROR",
    "INTERRUPT",
    "JOINS",
    "NODES",
    "PAUSED",
    "PAUSED_BEFORE",
    "RESERVED",
    "RESULT",
    "RESUME",
    "interrupt_id",
    "shown_metadata",
]

JOINS = "__joins__"
DEFERRED = "__deferred__"
RESERVED = (JOINS, DEFERRED)
"""The reserved channels; no state key may use them."""
RESULT = "__result__"
ERROR = "__error__"
INTERRUPT = "__interrupt__"
RESUME = "__resume__"
PAUSED = "__paused__"
PAUSED_BEFORE = "__paused_before__"
CALL = "__call__"
NODES = "nodes"
"""The metadata key of the nodes whose writes made a checkpoint."""


def interrupt_id(task_id: str, index: int) -> str:
    """The id of a task's ``index``-th interrupt: stable across reruns of the task, so the
    same call site gets the same id (a resume map keyed by it finds its question)."""
    return hashlib.sha256(f"{task_id}:{index}".encode()).hexdigest()[:32]


def shown_metadata(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """A checkpoint's metadata as a state shows it: without the engine's own record."""
    return {k: v for k, v in metadata.items() if k != NODES}
