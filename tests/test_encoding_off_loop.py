"""Async savers encode a thread's commits off the event loop once they prove heavy."""

from __future__ import annotations

import operator
import threading
import time
from pathlib import Path
from typing import Annotated, Any, TypedDict

from threadline.checkpoint.serde import MsgpackSerializer
from threadline.checkpoint.sqlite.aio import AsyncSqliteSaver
from threadline.graph import END, START, StateGraph


class SlowSerializer(MsgpackSerializer):
    """Records where each channel value was encoded; the big ones take a while."""

    def __init__(self) -> None:
        super().__init__()
        self.threads: list[str] = []

    def dumps_sized(self, value: Any, key: str = "value", *, aad: bytes = b"") -> tuple[bytes, int]:
        if key == "blob":
            self.threads.append(threading.current_thread().name)
            if len(str(value)) > 1000:
                time.sleep(0.005)  # an encoding that costs more than the loop should pay
        return super().dumps_sized(value, key, aad=aad)


class S(TypedDict):
    blob: Annotated[list[str], operator.add]


def grow(state: S) -> dict[str, Any]:
    return {"blob": ["x" * 2000]}


def graph_of(node: Any, saver: Any) -> Any:
    g = StateGraph(S)
    g.add_node("node", node)
    g.add_edge(START, "node")
    g.add_edge("node", END)
    return g.compile(checkpointer=saver)


async def test_a_heavy_threads_commits_move_off_the_loop(tmp_path: Path) -> None:
    serde = SlowSerializer()
    loop_thread = threading.current_thread().name
    async with AsyncSqliteSaver.from_conn_string(str(tmp_path / "s.db"), serde=serde) as saver:
        light = {"configurable": {"thread_id": "light"}}
        await graph_of(lambda s: {"blob": ["z"]}, saver).ainvoke({"blob": ["z"]}, light)
        assert serde.threads and set(serde.threads) == {loop_thread}  # cheap: on the loop
        serde.threads.clear()
        heavy = {"configurable": {"thread_id": "heavy"}}
        graph = graph_of(grow, saver)
        await graph.ainvoke({"blob": ["y" * 2000]}, heavy)
        await graph.ainvoke({"blob": ["y" * 2000]}, heavy)
    first, *later = serde.threads
    assert first == loop_thread  # nothing known about the thread yet: encoded in place
    assert later and all(name != loop_thread for name in later)  # then off the loop
    assert (await _values(tmp_path, serde))["blob"][-1] == "x" * 2000  # and it all landed


async def _values(tmp_path: Path, serde: Any) -> dict[str, Any]:
    async with AsyncSqliteSaver.from_conn_string(str(tmp_path / "s.db"), serde=serde) as saver:
        state = await graph_of(grow, saver).aget_state({"configurable": {"thread_id": "heavy"}})
        return dict(state.values)
