"""The API's stream modes built from the graph's own: which to ask for, and the events to send.

As LangGraph's server sends them: ``messages-tuple`` is the event ``messages`` with
``[message, metadata]``; ``messages`` is ``messages/metadata`` (once per message id),
``messages/partial`` (the message so far, while a model streams it) and ``messages/complete``
(a whole message); ``tasks``, ``checkpoints`` and ``debug`` are the graph's own (see
:mod:`threadline.runtime.task_events`), a task's error as ``{"error", "message"}`` and a
``debug`` checkpoint with ``checkpoint`` / ``parent_checkpoint`` beside its configs. Events of
a subgraph are named ``mode|ns|...``.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["API_STREAM_MODES", "EventEncoder", "graph_modes"]

_SOURCES: dict[str, tuple[str, ...]] = {
    "values": ("values",),
    "updates": ("updates",),
    "messages": ("messages",),
    "messages-tuple": ("messages",),
    "custom": ("custom",),
    "debug": ("debug",),
    "tasks": ("tasks",),
    "checkpoints": ("checkpoints",),
}
API_STREAM_MODES = tuple(_SOURCES)


def graph_modes(requested: Sequence[str]) -> list[str]:
    """The graph's stream modes that the API modes ``requested`` are made of."""
    return sorted({m for r in requested for m in _SOURCES[r]})


class EventEncoder:
    """Turns one run's ``(ns, mode, chunk)`` items into the API's ``(event, data)`` pairs."""

    def __init__(self, requested: Sequence[str]) -> None:
        self.requested = set(requested)
        self._seen: set[str] = set()  # message ids whose messages/metadata was sent
        self._partial: dict[str, Any] = {}  # message id -> the chunks so far, added up

    def encode(self, ns: Sequence[str], mode: str, chunk: Any) -> list[tuple[str, Any]]:
        suffix = "|" + "|".join(ns) if ns else ""
        return [(event + suffix, data) for event, data in self._events(mode, chunk)]

    def _events(self, mode: str, chunk: Any) -> list[tuple[str, Any]]:
        want = self.requested
        out: list[tuple[str, Any]]
        if mode == "messages":
            message, meta = chunk
            out = [("messages", [message, meta])] if "messages-tuple" in want else []
            if "messages" in want:
                out += self._messages(message, meta)
            return out
        if mode == "tasks" and "tasks" in want:
            return [("tasks", _task_json(chunk))]
        if mode == "debug" and "debug" in want:
            return [("debug", _debug_json(chunk))]
        return [(mode, chunk)] if mode in want else []

    def _messages(self, message: Any, meta: Any) -> list[tuple[str, Any]]:
        message_id = getattr(message, "id", None) or str(uuid.uuid4())
        out: list[tuple[str, Any]] = []
        if message_id not in self._seen:
            self._seen.add(message_id)
            out.append(("messages/metadata", {message_id: {"metadata": meta}}))
        if type(message).__name__.endswith("Chunk"):  # a model streaming it, token by token
            so_far = self._partial.get(message_id)
            so_far = message if so_far is None else so_far + message
            self._partial[message_id] = so_far
            out.append(("messages/partial", [_whole(so_far)]))
        else:
            out.append(("messages/complete", [message]))
        return out


def _task_json(payload: Any) -> Any:
    """A ``tasks`` chunk with its error as the API reports errors: ``{"error", "message"}``."""
    error = payload.get("error") if isinstance(payload, Mapping) else None
    if not isinstance(error, BaseException):
        return payload
    # A stored error (a checkpoint's failed task) keeps the type name it had when it happened.
    name = getattr(error, "type_name", None) or type(error).__name__
    message = getattr(error, "message", None) or str(error)
    return {**payload, "error": {"error": name, "message": message}}


def _debug_json(event: Any) -> Any:
    """A ``debug`` chunk as LangGraph's server sends it."""
    payload = event.get("payload") if isinstance(event, Mapping) else None
    if not isinstance(payload, Mapping):
        return event
    if event.get("type") != "checkpoint":
        return {**event, "payload": _task_json(payload)}
    tasks = [_checkpoint_task_json(t) for t in payload.get("tasks") or ()]
    return {
        **event,
        "payload": {
            **payload,
            "checkpoint": _checkpoint_of(payload.get("config")),
            "parent_checkpoint": _checkpoint_of(payload.get("parent_config")),
            "tasks": tasks,
        },
    }


def _checkpoint_task_json(task: Mapping[str, Any]) -> dict[str, Any]:
    """A subgraph task's ``state`` (its config) becomes ``checkpoint`` (the configurable)."""
    out = dict(_task_json(task))
    state = task.get("state")
    if isinstance(state, Mapping) and state.get("configurable"):
        out = {k: v for k, v in out.items() if k != "state"}
        out["checkpoint"] = state["configurable"]
    return out


def _checkpoint_of(config: Any) -> dict[str, Any] | None:
    """The API's ``Checkpoint`` object of a config, or None without a checkpoint id."""
    configurable = config.get("configurable") if isinstance(config, Mapping) else None
    if not configurable or not configurable.get("thread_id"):
        return None
    if not configurable.get("checkpoint_id"):
        return None
    out = {"checkpoint_id": configurable["checkpoint_id"], "thread_id": configurable["thread_id"]}
    if "checkpoint_ns" in configurable:
        out["checkpoint_ns"] = configurable["checkpoint_ns"] or ""
    if "checkpoint_map" in configurable:
        out["checkpoint_map"] = configurable["checkpoint_map"]
    return out


def _whole(chunk: Any) -> Any:
    """A message chunk as the message it adds up to (``AIMessageChunk`` -> ``AIMessage``)."""
    try:
        from langchain_core.messages import message_chunk_to_message
    except ImportError:  # pragma: no cover - chunks only exist with langchain-core
        return chunk
    return message_chunk_to_message(chunk)
