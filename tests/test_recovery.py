"""Recovery at the edges of a step, with faults injected into a real saver's commit."""

from __future__ import annotations

import operator
import threading
from collections.abc import Sequence
from typing import Annotated, Any, TypedDict

import pytest

from threadline.checkpoint.lease import LeaseOp
from threadline.checkpoint.memory import InMemorySaver
from threadline.checkpoint.types import CheckpointRow, VersionRow
from threadline.graph import END, START, StateGraph


class Crash(Exception):
    pass


class FailingCommitSaver(InMemorySaver):
    """Stores like InMemorySaver, but the commit number ``fail_at`` raises (a crash there)."""

    def __init__(self, fail_at: int) -> None:
        super().__init__()
        self.fail_at = fail_at
        self.commits = 0

    def _commit(
        self,
        row: CheckpointRow,
        versions: Sequence[VersionRow],
        expected_head: str | None,
        thread_metadata: bytes | None,
        expires_at: float | None,
        lease: LeaseOp | None = None,
    ) -> int:
        self.commits += 1
        if self.commits == self.fail_at:
            raise Crash("the process died before this checkpoint committed")
        return super()._commit(row, versions, expected_head, thread_metadata, expires_at, lease)


class State(TypedDict):
    log: Annotated[list[str], operator.add]


def build(saver: InMemorySaver, calls: dict[str, int]) -> Any:
    lock = threading.Lock()

    def count(name: str) -> None:
        with lock:
            calls[name] = calls.get(name, 0) + 1

    def start(state: State) -> dict[str, Any]:
        count("start")
        return {"log": ["start"]}

    def left(state: State) -> dict[str, Any]:
        count("left")
        return {"log": ["left"]}

    def right(state: State) -> dict[str, Any]:
        count("right")
        return {"log": ["right"]}

    def finish(state: State) -> dict[str, Any]:
        count("finish")
        return {"log": ["finish"]}

    builder = StateGraph(State)
    for fn in (start, left, right, finish):
        builder.add_node(fn)
    builder.add_edge(START, "start")
    builder.add_edge("start", "left")
    builder.add_edge("start", "right")
    builder.add_edge(["left", "right"], "finish")
    builder.add_edge("finish", END)
    return builder.compile(checkpointer=saver)


def test_step_whose_tasks_all_finished_is_applied_on_resume_without_rerunning() -> None:
    # Commits: 1 input, 2 after start, 3 after left+right (fails: both results are pending
    # writes by then), ...
    saver = FailingCommitSaver(fail_at=3)
    calls: dict[str, int] = {}
    app = build(saver, calls)
    config = {"configurable": {"thread_id": "t"}}
    with pytest.raises(Crash):
        app.invoke({"log": []}, config)
    assert calls == {"start": 1, "left": 1, "right": 1}
    assert app.get_state(config).next == ("left", "right")

    result = app.invoke(None, config)
    assert result["log"] == ["start", "left", "right", "finish"]
    assert calls == {"start": 1, "left": 1, "right": 1, "finish": 1}


def test_history_shows_pending_writes_of_a_failed_parallel_step(saver: Any) -> None:
    """History reads pending writes for a whole page at once; they must land on the right
    checkpoints (the finished sibling's result, the failed task's error)."""

    def boom(state: State) -> dict[str, Any]:
        raise RuntimeError("right failed")

    builder = StateGraph(State)
    builder.add_node("start", lambda s: {"log": ["start"]})
    builder.add_node("left", lambda s: {"log": ["left"]})
    builder.add_node("right", boom)
    builder.add_edge(START, "start")
    builder.add_edge("start", "left")
    builder.add_edge("start", "right")
    app = builder.compile(checkpointer=saver)
    config = {"configurable": {"thread_id": "history-writes"}}
    with pytest.raises(RuntimeError, match="right failed"):
        app.invoke({"log": []}, config)
    history = list(app.get_state_history(config))
    newest = history[0]
    assert newest.next == ("right",)
    by_name = {t.name: t for t in newest.tasks}
    assert by_name["left"].result == {"log": ["left"]}
    assert by_name["right"].error is not None and "right failed" in str(by_name["right"].error)
    assert all(t.error is None for h in history[1:] for t in h.tasks)
