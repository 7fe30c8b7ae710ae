"""Stream chunks made comparable across threadline and LangGraph: ids and times masked, and only
what both libraries define kept."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

__all__ = ["plain"]

_HEX_ID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[0-9a-f]{32}"
# A task id: LangGraph's UUID, threadline's hex, or a threadline @task call's "<hex>.<key>".
_ID = re.compile(rf"^({_HEX_ID})(\.[0-9]+)*$")
_NS_PART = re.compile(rf"^([^:|]+):({_HEX_ID})$")  # "node:task_id", a subgraph's namespace


def plain(value: Any) -> Any:
    """``value`` with ids and times replaced, interrupts as dicts and errors as
    ``"Type: message"``; a checkpoint's metadata keeps only ``source`` and ``step``."""
    if type(value).__name__ == "Interrupt":
        schema = getattr(value, "response_schema", None)
        return {"value": plain(value.value), "id": "<id>", "response_schema": plain(schema)}
    if hasattr(value, "_asdict"):  # a StateTask (PregelTask in LangGraph)
        return plain(value._asdict())
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if key == "metadata" and isinstance(item, dict) and "source" in item:
                item = {k: item[k] for k in ("source", "step")}  # checkpoint metadata
            out[key] = plain(item)
        return out
    if isinstance(value, (list, tuple)):
        return type(value)(plain(v) for v in value)
    if isinstance(value, BaseException):
        return f"{type(value).__name__}: {value}"
    if isinstance(value, str):
        if _ID.match(value):
            return "<id>"
        part = _NS_PART.match(value)
        if part:
            return f"{part.group(1)}:<id>"
        if value[:4].isdigit() and "T" in value:
            dt.datetime.fromisoformat(value)  # a timestamp
            return "<time>"
    return value
