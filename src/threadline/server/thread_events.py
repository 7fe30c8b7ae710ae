"""A thread's own stream events, beside its runs' (``threads.join_stream`` mode ``state_update``).

LangGraph's server sends ``state_update`` with ``{"state": <ThreadState>, "thread_id"}`` when a
client changes a thread's state (``threads.update_state``, ``threads.create(supersteps=...)``);
a run's own changes are in its run events. Each is a row of ``tl_thread_events`` keyed by the
thread and a time in microseconds (the clock runs' queue times use, so the thread stream orders
both on one line), announced as ``thread:<id>``. A thread keeps its latest :data:`KEPT`; they go
with the thread.
"""

from __future__ import annotations

import json
import time
from typing import Any

from .db import Tx

__all__ = ["KEPT", "STATE_UPDATE", "record_state_update", "thread_key"]

STATE_UPDATE = "state_update"
KEPT = 100
"""State updates a thread keeps for resuming its stream; older ones are dropped."""


def thread_key(thread_id: str) -> str:
    """The announcement key of a thread's own events."""
    return f"thread:{thread_id}"


async def record_state_update(tx: Tx, thread_id: str, state: dict[str, Any]) -> int:
    """Store a ``state_update`` event of the thread's new ``state`` (a ``ThreadState``) in
    ``tx``, announced when it commits; returns its time in microseconds."""
    data = json.dumps({"state": state, "thread_id": thread_id})
    rows = await tx.execute(
        "SELECT MAX(at) FROM tl_thread_events WHERE thread_id = ?", (thread_id,)
    )
    at = max(round(time.time() * 1_000_000), int(rows[0][0] or 0) + 1)
    while not await tx.execute(
        "INSERT INTO tl_thread_events (thread_id, at, event, data) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (thread_id, at) DO NOTHING RETURNING at",
        (thread_id, at, STATE_UPDATE, data),
    ):
        at += 1  # a concurrent update took this microsecond
    await tx.execute(
        "DELETE FROM tl_thread_events WHERE thread_id = ? AND at < (SELECT MIN(at) FROM"
        " (SELECT at FROM tl_thread_events WHERE thread_id = ? ORDER BY at DESC LIMIT ?) AS kept)",
        (thread_id, thread_id, KEPT),
    )
    tx.publish(thread_key(thread_id))
    return at
