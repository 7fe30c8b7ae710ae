"""Server-sent events framing (``event:``, ``data:``, ``id:``) and heartbeats."""

from __future__ import annotations

__all__ = ["HEARTBEAT", "frame"]

HEARTBEAT = b": heartbeat\n\n"
"""A comment line: keeps idle connections (and proxies) open; clients ignore it."""


def frame(event: str, data_json: str, event_id: int | str | None = None) -> bytes:
    """One SSE message; ``data_json`` is already JSON (one line)."""
    head = f"event: {event}\ndata: {data_json}\n"
    if event_id is not None:
        head += f"id: {event_id}\n"
    return (head + "\n").encode()
