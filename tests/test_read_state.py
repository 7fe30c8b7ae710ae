"""Reading a thread's state from storage alone, without the graph object."""

from __future__ import annotations

import operator
from typing import Annotated, Any, TypedDict

import pytest

from threadline.checkpoint.memory import MemorySaver
from threadline.checkpoint.sqlite.aio import AsyncSqliteSaver
from threadline.graph import END, START, StateGraph
from threadline.runtime.state import aread_history, aread_state, read_history, read_state
from threadline.types import interrupt


class S(TypedDict):
    log: Annotated[list[str], operator.add]
    answer: str


def ask(state: S) -> dict[str, Any]:
    return {"answer": interrupt("approve?"), "log": ["asked"]}


def build(checkpointer: Any) -> Any:
    g = StateGraph(S)
    g.add_node("start", lambda s: {"log": ["start"]})
    g.add_node("ask", ask)
    g.add_edge(START, "start")
    g.add_edge("start", "ask")
    g.add_edge("ask", END)
    return g.compile(checkpointer=checkpointer)


def test_a_paused_thread_reads_as_its_graph_shows_it() -> None:
    saver = MemorySaver()
    graph = build(saver)
    config = {"configurable": {"thread_id": "t"}}
    graph.invoke({"log": []}, config)
    by_graph, stored = graph.get_state(config), read_state(saver, config)
    assert stored.values == {"log": ["start"]} == by_graph.values
    assert stored.next == by_graph.next == ("ask",)
    assert [i.value for i in stored.interrupts] == ["approve?"]
    assert stored.interrupts[0].id == by_graph.interrupts[0].id
    assert stored.config == by_graph.config and stored.metadata == by_graph.metadata
    history = list(read_history(saver, config))
    assert [h.config for h in history] == [h.config for h in graph.get_state_history(config)]
    assert read_state(saver, {"configurable": {"thread_id": "none"}}).values == {}


@pytest.mark.parametrize("limit", [1, None])
async def test_the_async_twins_read_the_same(tmp_path: Any, limit: int | None) -> None:
    async with AsyncSqliteSaver.from_conn_string(str(tmp_path / "s.db")) as saver:
        graph = build(saver)
        config = {"configurable": {"thread_id": "a"}}
        await graph.ainvoke({"log": []}, config)
        stored = await aread_state(saver, config)
        assert stored.values == {"log": ["start"]} and stored.next == ("ask",)
        first = [h.config async for h in aread_history(saver, config, limit=limit)]
        assert first == [h.config async for h in graph.aget_state_history(config, limit=limit)]
        at = await aread_state(saver, first[-1])
        assert at.config == first[-1]
