"""What crosses the wire: JSON shapes of the LangGraph Agent Server API built from our types.

Values are converted once, by :func:`threadline.checkpoint.jsonable.to_jsonable`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from ..checkpoint.jsonable import to_jsonable
from ..types import StateSnapshot

__all__ = ["checkpoint_json", "interrupts_json", "now_iso", "snapshot_json"]


def now_iso() -> str:
    """The current UTC time in ISO 8601, as the server stamps rows."""
    return dt.datetime.now(dt.timezone.utc).isoformat()


def checkpoint_json(config: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A checkpoint config as the API's ``Checkpoint`` object."""
    if not config:
        return None
    configurable = config.get("configurable") or {}
    return {
        "thread_id": configurable.get("thread_id"),
        "checkpoint_ns": configurable.get("checkpoint_ns", ""),
        "checkpoint_id": configurable.get("checkpoint_id"),
        "checkpoint_map": configurable.get("checkpoint_map"),
    }


def interrupts_json(interrupts: Any) -> list[dict[str, Any]]:
    """Interrupts as the API's ``Interrupt`` objects: ``{"value", "id"}``, and the
    ``"response_schema"`` (JSON Schema) of the answer when the graph gave one."""
    out = []
    for i in interrupts or ():
        item = {"value": to_jsonable(i.value), "id": i.id}
        schema = getattr(i, "response_schema", None)
        if schema is not None:
            item["response_schema"] = to_jsonable(schema)
        out.append(item)
    return out


def snapshot_json(snapshot: StateSnapshot) -> dict[str, Any]:
    """A state snapshot as the API's ``ThreadState``."""
    tasks = []
    for task in snapshot.tasks:
        error = getattr(task, "error", None)
        tasks.append(
            {
                "id": task.id,
                "name": task.name,
                "error": None if error is None else repr(error),
                "interrupts": interrupts_json(getattr(task, "interrupts", ())),
                "checkpoint": None,
                "state": None,
                "result": to_jsonable(getattr(task, "result", None)),
            }
        )
    return {
        "values": to_jsonable(snapshot.values),
        "next": list(snapshot.next),
        "checkpoint": checkpoint_json(snapshot.config),
        "metadata": to_jsonable(snapshot.metadata or {}),
        "created_at": snapshot.created_at,
        "parent_checkpoint": checkpoint_json(snapshot.parent_config),
        "tasks": tasks,
        "interrupts": interrupts_json(snapshot.interrupts),
    }
