"""Subgraphs and checkpointers: events without one, ``checkpointer=True`` (a history of its own
that lasts across invocations), ``checkpointer=False``, and a subgraph compiled with a saver of
its own. Every backend where storage is involved."""

from __future__ import annotations

import operator
from typing import Annotated, Any, TypedDict

import pytest
from counting import fresh_config

from threadline.checkpoint.base import BaseCheckpointSaver
from threadline.checkpoint.memory import MemorySaver
from threadline.errors import NoCheckpointerError
from threadline.graph import END, START, StateGraph
from threadline.types import Command, interrupt


class State(TypedDict, total=False):
    foo: str
    log: Annotated[list[str], operator.add]


class Inner(TypedDict, total=False):
    foo: str
    bar: str
    log: Annotated[list[str], operator.add]


def _inner(checkpointer: Any = None) -> Any:
    def one(state: Inner) -> dict[str, Any]:
        return {"bar": "bar", "log": ["one"]}

    def two(state: Inner) -> dict[str, Any]:
        return {"foo": state["foo"] + state["bar"], "log": ["two"]}

    b = StateGraph(Inner)
    b.add_node("one", one)
    b.add_node("two", two)
    b.add_edge(START, "one")
    b.add_edge("one", "two")
    b.add_edge("two", END)
    return b.compile(checkpointer=checkpointer)


def _namespaces(saver: BaseCheckpointSaver, config: dict[str, Any]) -> set[str]:
    """Every namespace the thread has checkpoints in (the saver's own listing of all)."""
    thread_id = config["configurable"]["thread_id"]
    return {row.ns for batch in saver._iter_checkpoints(thread_id, None, None) for row in batch}


def _outer(inner: Any, *, as_function: bool = False, checkpointer: Any = None) -> Any:
    def first(state: State) -> dict[str, Any]:
        return {"foo": "hi " + state["foo"]}

    def call(state: State) -> dict[str, Any]:
        out = inner.invoke({"foo": state["foo"]})
        return {"foo": out["foo"]}

    b = StateGraph(State)
    b.add_node("first", first)
    b.add_node("sub", call if as_function else inner)
    b.add_edge(START, "first")
    b.add_edge("first", "sub")
    b.add_edge("sub", END)
    return b.compile(checkpointer=checkpointer)


@pytest.mark.parametrize("as_function", [False, True])
def test_subgraph_events_without_a_checkpointer(as_function: bool) -> None:
    app = _outer(_inner(), as_function=as_function)
    chunks = list(app.stream({"foo": "x"}, subgraphs=True))
    assert chunks[0] == ((), {"first": {"foo": "hi x"}})
    (ns,) = chunks[1][0]
    assert ns.startswith("sub:") and len(ns) > len("sub:")
    assert chunks[1][1] == {"one": {"bar": "bar", "log": ["one"]}}
    assert chunks[2] == ((ns,), {"two": {"foo": "hi xbar", "log": ["two"]}})
    assert chunks[3][0] == () and chunks[3][1]["sub"]["foo"] == "hi xbar"
    assert len(chunks) == 4
    # Without subgraphs=True only the parent's own events.
    assert list(app.stream({"foo": "x"})) == [chunks[0][1], chunks[3][1]]


async def test_subgraph_events_without_a_checkpointer_async() -> None:
    app = _outer(_inner())
    chunks = [c async for c in app.astream({"foo": "x"}, stream_mode="values", subgraphs=True)]
    namespaces = [ns for ns, _ in chunks]
    assert namespaces[0] == ()
    inner = [c for ns, c in chunks if ns]
    assert inner[-1] == {"foo": "hi xbar", "bar": "bar", "log": ["one", "two"]}
    assert chunks[-1] == ((), {"foo": "hi xbar", "log": ["one", "two"]})


def test_nested_subgraph_namespaces_without_a_checkpointer() -> None:
    middle = _outer(_inner())
    app = _outer(middle)
    chunks = list(app.stream({"foo": "x"}, subgraphs=True))
    depths = {len(ns) for ns, _ in chunks}
    assert depths == {0, 1, 2}
    deep = next(ns for ns, _ in chunks if len(ns) == 2)
    assert deep[0].startswith("sub:") and deep[1].startswith("sub:")


def test_thread_id_on_a_graph_without_checkpointer_is_only_config() -> None:
    inner = _inner()
    assert inner.invoke({"foo": "x"}, {"configurable": {"thread_id": "t"}})["foo"] == "xbar"
    # Inside a parent that has one, the subgraph inherits the parent's config and thread.
    app = _outer(inner, as_function=True, checkpointer=MemorySaver())
    assert app.invoke({"foo": "x"}, fresh_config())["foo"] == "hi xbar"


def test_subgraph_with_its_own_saver_uses_the_parent_thread(saver: BaseCheckpointSaver) -> None:
    own = MemorySaver()
    app = _outer(_inner(checkpointer=own), as_function=True, checkpointer=saver)
    config = fresh_config()
    assert app.invoke({"foo": "x"}, config)["foo"] == "hi xbar"
    thread_id = config["configurable"]["thread_id"]
    assert any(ns.startswith("sub:") for ns in _namespaces(saver, config))
    assert list(own.list({"configurable": {"thread_id": thread_id}})) == []
    # On its own the subgraph still uses its saver.
    inner_config = fresh_config()
    _inner(checkpointer=own).invoke({"foo": "y"}, inner_config)
    assert own.get_tuple(inner_config) is not None


def test_subgraph_with_its_own_saver_under_a_parent_without_one() -> None:
    app = _outer(_inner(checkpointer=MemorySaver()), as_function=True)
    assert app.invoke({"foo": "x"})["foo"] == "hi xbar"


def _counter(checkpointer: Any) -> Any:
    def count(state: Inner) -> dict[str, Any]:
        return {"log": [f"seen {len(state.get('log', []))}"]}

    b = StateGraph(Inner)
    b.add_node("count", count)
    b.add_edge(START, "count")
    return b.compile(checkpointer=checkpointer)


@pytest.mark.parametrize("as_function", [False, True])
def test_checkpointer_true_keeps_the_subgraph_state(
    saver: BaseCheckpointSaver, as_function: bool
) -> None:
    inner = _counter(True)

    def call(state: State) -> dict[str, Any]:
        return {"log": inner.invoke({})["log"][-1:]}

    b = StateGraph(State)
    b.add_node("sub", call if as_function else inner)
    b.add_edge(START, "sub")
    app = b.compile(checkpointer=saver)
    config = fresh_config()
    app.invoke({}, config)
    out = app.invoke({}, config)
    # The subgraph saw its own log of the first invocation: its history lasted. (As a node
    # it also gets the parent's log, ["seen 0"], as input.)
    assert out["log"][-1] == ("seen 1" if as_function else "seen 2")
    thread = config["configurable"]["thread_id"]
    sub = list(saver.list({"configurable": {"thread_id": thread, "checkpoint_ns": "sub"}}))
    assert sub and all(s.config["configurable"]["checkpoint_ns"] == "sub" for s in sub)


def test_default_subgraph_starts_fresh_each_invocation(saver: BaseCheckpointSaver) -> None:
    inner = _counter(None)
    b = StateGraph(State)
    b.add_node("sub", inner)
    b.add_edge(START, "sub")
    app = b.compile(checkpointer=saver)
    config = fresh_config()
    app.invoke({}, config)
    # Only the parent's log (["seen 0"]) as input: nothing kept of the first invocation.
    assert app.invoke({}, config)["log"][-1] == "seen 1"


def test_checkpointer_false_keeps_nothing(saver: BaseCheckpointSaver) -> None:
    app = _outer(_inner(checkpointer=False), checkpointer=saver)
    config = fresh_config()
    assert app.invoke({"foo": "x"}, config)["foo"] == "hi xbar"
    assert _namespaces(saver, config) == {""}


def test_checkpointer_true_at_the_top_level_is_an_error() -> None:
    with pytest.raises(NoCheckpointerError, match="checkpointer=True"):
        _counter(True).invoke({})


async def test_checkpointer_true_interrupt_and_resume(asaver: BaseCheckpointSaver) -> None:
    calls: list[str] = []

    def ask(state: Inner) -> dict[str, Any]:
        calls.append("ask")
        return {"log": [f"name={interrupt('name?')}"]}

    sb = StateGraph(Inner)
    sb.add_node("ask", ask)
    sb.add_edge(START, "ask")
    inner = sb.compile(checkpointer=True)

    async def call(state: State) -> dict[str, Any]:
        out = await inner.ainvoke({})
        return {"log": out["log"][-1:]}

    b = StateGraph(State)
    b.add_node("sub", call)
    b.add_edge(START, "sub")
    app = b.compile(checkpointer=asaver)
    config = fresh_config()
    first = await app.ainvoke({}, config)
    assert first["__interrupt__"][0].value == "name?"
    done = await app.ainvoke(Command(resume="Ada"), config)
    assert done["log"] == ["name=Ada"]
    # A new invocation asks again, on top of the subgraph's kept state.
    again = await app.ainvoke({}, config)
    assert again["__interrupt__"][0].value == "name?"
    assert calls == ["ask", "ask", "ask"]


def test_get_state_subgraphs_shows_a_checkpointer_true_subgraph(
    saver: BaseCheckpointSaver,
) -> None:
    def ask(state: Inner) -> dict[str, Any]:
        return {"log": [f"name={interrupt('name?')}"]}

    sb = StateGraph(Inner)
    sb.add_node("ask", ask)
    sb.add_edge(START, "ask")
    b = StateGraph(State)
    b.add_node("sub", sb.compile(checkpointer=True))
    b.add_edge(START, "sub")
    app = b.compile(checkpointer=saver)
    config = fresh_config()
    app.invoke({}, config)
    state = app.get_state(config, subgraphs=True)
    sub_state = state.tasks[0].state
    assert sub_state is not None and sub_state.next == ("ask",)
    assert sub_state.config["configurable"]["checkpoint_ns"] == "sub"
