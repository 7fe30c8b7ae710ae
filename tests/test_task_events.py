"""Stream modes "tasks", "debug" and "checkpoints" shaped as LangGraph shapes them: the same graph
run on threadline and on LangGraph (when installed) streams the same chunks, ids and times
aside."""

from __future__ import annotations

import operator
from types import SimpleNamespace
from typing import Annotated, Any, TypedDict

import pytest
from chunks import plain

import threadline.checkpoint.memory
import threadline.graph
import threadline.types
from threadline.runtime.task_events import fold_writes


class State(TypedDict):
    log: Annotated[list[str], operator.add]


def _library(name: str) -> SimpleNamespace:
    if name == "threadline":
        graph, types, memory = threadline.graph, threadline.types, threadline.checkpoint.memory
    else:
        graph = pytest.importorskip("langgraph.graph")
        types = pytest.importorskip("langgraph.types")
        memory = pytest.importorskip("langgraph.checkpoint.memory")
    return SimpleNamespace(
        StateGraph=graph.StateGraph, START=graph.START, Send=types.Send,
        interrupt=types.interrupt, Command=types.Command, Saver=memory.InMemorySaver,
    )  # fmt: skip


def _app(lib: SimpleNamespace) -> Any:
    """a -> two Sends to b -> c, which asks a question; b's first call fails once asked to."""

    def a(state: State) -> dict[str, Any]:
        return {"log": ["a"]}

    def fan(state: State) -> list[Any]:
        return [lib.Send("b", {"log": ["x"]})]

    def b(state: State) -> dict[str, Any]:
        return {"log": ["b" + state["log"][0]]}

    def c(state: State) -> dict[str, Any]:
        return {"log": [lib.interrupt("go on?")]}

    builder = lib.StateGraph(State)
    builder.add_node("a", a)
    builder.add_node("b", b)
    builder.add_node("c", c)
    builder.add_edge(lib.START, "a")
    builder.add_conditional_edges("a", fan, ["b"])
    builder.add_edge("b", "c")
    return builder.compile(checkpointer=lib.Saver())


def _failing_app(lib: SimpleNamespace) -> Any:
    def bad(state: State) -> dict[str, Any]:
        raise ValueError("boom")

    builder = lib.StateGraph(State)
    builder.add_node("bad", bad)
    builder.add_edge(lib.START, "bad")
    return builder.compile(checkpointer=lib.Saver())


def _stream(name: str, mode: str) -> list[Any]:
    lib = _library(name)
    app = _app(lib)
    config = {"configurable": {"thread_id": "t"}, "metadata": {"user": "u1"}}
    chunks = [plain(c) for c in app.stream({"log": ["in"]}, config, stream_mode=mode)]
    chunks += [plain(c) for c in app.stream(lib.Command(resume="yes"), config, stream_mode=mode)]
    try:
        for chunk in _failing_app(lib).stream({"log": []}, config, stream_mode=mode):
            chunks.append(plain(chunk))
    except ValueError:
        pass
    return chunks


@pytest.mark.parametrize("mode", ["tasks", "debug", "checkpoints"])
def test_the_chunks_are_langgraphs(mode: str) -> None:
    ours = _stream("threadline", mode)
    theirs = _stream("langgraph", mode)
    assert ours == theirs


def test_task_chunks_carry_input_triggers_and_results() -> None:
    chunks = _stream("threadline", "tasks")
    starts = [c for c in chunks if "input" in c]
    assert [(c["name"], c["input"], c["triggers"]) for c in starts][:3] == [
        ("a", {"log": ["in"]}, ("branch:to:a",)),
        ("b", {"log": ["x"]}, ("__pregel_push",)),
        ("c", {"log": ["in", "a", "bx"]}, ("branch:to:c",)),
    ]
    assert all(c["metadata"] == {"user": "u1"} for c in starts)
    results = [c for c in chunks if "result" in c]
    asked = results[2]
    assert asked["result"] == {} and asked["interrupts"][0]["value"] == "go on?"
    assert results[3]["result"] == {"log": ["yes"]} and results[3]["interrupts"] == []
    assert results[-1]["error"] == "ValueError: boom" and results[-1]["result"] == {}


def test_repeated_writes_to_a_channel_fold_as_langgraph_folds_them() -> None:
    assert fold_writes([("a", 1), ("b", 2), ("a", 3), ("a", 4)]) == {
        "a": {"$writes": [1, 3, 4]},
        "b": 2,
    }


def test_an_entrypoint_is_one_task_as_langgraph_shows_it() -> None:
    from threadline.func import entrypoint

    @entrypoint(checkpointer=threadline.checkpoint.memory.InMemorySaver())
    def double(x: int) -> int:
        return 2 * x

    config = {"configurable": {"thread_id": "t"}}
    start, end = [plain(c) for c in double.stream(3, config, stream_mode="tasks")]
    assert start == {"id": "<id>", "name": "double", "input": 3, "triggers": ("__start__",)}
    assert end == {
        "id": "<id>", "name": "double", "error": None, "result": {"__end__": 6}, "interrupts": []
    }  # fmt: skip
