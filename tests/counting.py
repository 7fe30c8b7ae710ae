"""Helpers shared by the engine tests: counting node executions, fresh thread configs."""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from typing import Any


class Calls:
    """A thread-safe execution counter."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()

    def hit(self, name: str) -> None:
        with self._lock:
            self.counts[name] += 1

    def __getitem__(self, name: str) -> int:
        with self._lock:
            return self.counts[name]


def fresh_config() -> dict[str, Any]:
    """A config naming a thread no other test uses."""
    return {"configurable": {"thread_id": f"t-{uuid.uuid4().hex[:8]}"}}


def made_by(history: list[Any], snapshot: Any) -> list[str]:
    """The nodes whose writes made ``snapshot``: its parent checkpoint's tasks, in order."""
    if snapshot.parent_config is None:
        return []
    parent_id = snapshot.parent_config["configurable"]["checkpoint_id"]
    parent = next(s for s in history if s.config["configurable"]["checkpoint_id"] == parent_id)
    return [t.name for t in parent.tasks]
