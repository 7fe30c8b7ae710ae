"""The API's stream modes built from the graph's own: which to ask for, and the events to send.

As LangGraph's server sends them: ``messages-tuple`` is the event ``messages`` with
``[message, metadata]``; ``messages`` is ``messages/metadata`` (once per message id),
``messages/partial`` (the message so far, while a model streams it) and ``messages/complete``
(a whole message); ``debug`` also reports each checkpoint (``type: checkpoint``); ``tasks`` is
the task start and result of ``debug``. Events of a subgraph are named ``mode|ns|...``.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from .wire import now_iso

__all__ = ["API_STREAM_MODES", "EventEncoder", "graph_modes"]

_SOURCES: dict[str, tuple[str, ...]] = {
    "values": ("values",),
    "updates": ("updates",),
    "messages": ("messages",),
    "messages-tuple": ("messages",),
    "custom": ("custom",),
    "debug": ("debug", "checkpoints"),
    "tasks": ("debug",),
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
        if mode == "checkpoints":
            out = [("checkpoints", chunk)] if "checkpoints" in want else []
            if "debug" in want:
                step = (chunk.get("metadata") or {}).get("step")
                debug = {"type": "checkpoint", "timestamp": now_iso(), "step": step}
                out.append(("debug", {**debug, "payload": chunk}))
            return out
        if mode == "debug":
            out = [("debug", {**chunk, "timestamp": now_iso()})] if "debug" in want else []
            if "tasks" in want:
                out.append(("tasks", chunk.get("payload")))
            return out
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


def _whole(chunk: Any) -> Any:
    """A message chunk as the message it adds up to (``AIMessageChunk`` -> ``AIMessage``)."""
    try:
        from langchain_core.messages import message_chunk_to_message
    except ImportError:  # pragma: no cover - chunks only exist with langchain-core
        return chunk
    return message_chunk_to_message(chunk)
