"""The chunks of stream modes ``tasks``, ``checkpoints`` and ``debug``, as LangGraph shapes them.

- ``tasks``: when a task starts, ``{"id", "name", "input", "triggers"}`` (plus ``"metadata"``:
  the run's own metadata and tags, when it has any); when it ends, ``{"id", "name", "error",
  "result", "interrupts"}``. ``result`` maps each channel the task wrote to the value (several
  writes to one channel: ``{"$writes": [...]}``), ``{}`` when it failed or paused; ``error`` is
  the exception itself; ``interrupts`` are the questions it asked in this run, as dicts.
- ``checkpoints``: each checkpoint, ``{"config", "parent_config", "values", "metadata",
  "next", "tasks"}``; a task entry is ``{"id", "name", "interrupts", "state"}`` (with
  ``result`` once it finished, ``error`` instead when it failed), ``state`` a subgraph's config.
- ``debug``: each of those wrapped as ``{"step", "timestamp", "type", "payload"}``, type
  ``task``, ``task_result`` or ``checkpoint``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from ..types import Interrupt, StateTask

__all__ = [
    "checkpoint_task",
    "debug_event",
    "task_result",
    "task_start",
]

# Config metadata LangGraph leaves out of a task's start: its own bookkeeping, not the user's.
_OWN_METADATA = frozenset({
    "thread_id", "checkpoint_id", "checkpoint_ns", "checkpoint_map", "langgraph_step",
    "langgraph_node", "langgraph_triggers", "langgraph_path", "langgraph_checkpoint_ns",
})  # fmt: skip


def task_start(
    task_id: str, name: str, node_input: Any, triggers: Sequence[str], config: Mapping[str, Any]
) -> dict[str, Any]:
    """The ``tasks`` chunk of a task about to run."""
    payload: dict[str, Any] = {
        "id": task_id,
        "name": name,
        "input": node_input,
        "triggers": tuple(triggers),
    }
    metadata = {k: v for k, v in (config.get("metadata") or {}).items() if k not in _OWN_METADATA}
    tags = [t for t in config.get("tags") or () if not str(t).startswith("seq:step")]
    if tags:
        metadata["tags"] = tags
    if metadata:
        payload["metadata"] = metadata
    return payload


def task_result(
    task_id: str,
    name: str,
    *,
    writes: Sequence[tuple[str, Any]] | None,
    error: BaseException | None,
    interrupts: Sequence[Interrupt],
) -> dict[str, Any]:
    """The ``tasks`` chunk of a task that ended: ``writes`` None unless it finished."""
    return {
        "id": task_id,
        "name": name,
        "error": error,
        "result": {} if writes is None else fold_writes(writes),
        "interrupts": [dataclasses.asdict(i) for i in interrupts],
    }


def fold_writes(writes: Sequence[tuple[str, Any]]) -> dict[str, Any]:
    """``{channel: value}``; a channel written more than once: ``{"$writes": [v1, v2, ...]}``."""
    out: dict[str, Any] = {}
    counts: dict[str, int] = {}
    for channel, value in writes:
        counts[channel] = counts.get(channel, 0) + 1
        if counts[channel] == 1:
            out[channel] = value
        elif counts[channel] == 2:
            out[channel] = {"$writes": [out[channel], value]}
        else:
            out[channel]["$writes"].append(value)
    return out


def checkpoint_task(task: StateTask, state: Any) -> dict[str, Any]:
    """A task entry of a ``checkpoints`` chunk; ``state``: its subgraph's config, or None."""
    if task.error is not None:
        return {"id": task.id, "name": task.name, "error": task.error, "state": state}
    interrupts = tuple(dataclasses.asdict(i) for i in task.interrupts)
    entry: dict[str, Any] = {"id": task.id, "name": task.name}
    if task.result:
        entry["result"] = task.result
    return {**entry, "interrupts": interrupts, "state": state}


def debug_event(kind: str, step: int, payload: Any) -> dict[str, Any]:
    """A ``debug`` chunk: ``kind`` ``task``, ``task_result`` or ``checkpoint``."""
    return {
        "step": step,
        "timestamp": dt.datetime.now(dt.timezone.utc).isoformat(),
        "type": kind,
        "payload": payload,
    }
