"""Behaviour found by running published-style LangGraph programs on both libraries.

Each test builds the same program with ``langgraph`` and with ``threadline`` and compares
what they give: drawings, the Runnable methods (``with_config``, ``batch``), node caches,
the default recursion limit and the stream chunks around interrupts.
"""

from __future__ import annotations

import asyncio
import operator
import re
from types import SimpleNamespace
from typing import Annotated, Any, Literal, TypedDict

import pytest

import threadline.cache.memory
import threadline.checkpoint.memory
import threadline.graph
import threadline.runtime.compiled
import threadline.types
from threadline.checkpoint.types import RunnableConfig


def _library(name: str) -> SimpleNamespace:
    if name == "threadline":
        return SimpleNamespace(
            graph=threadline.graph,
            types=threadline.types,
            memory=threadline.checkpoint.memory,
            cache=threadline.cache.memory,
        )
    return SimpleNamespace(
        graph=pytest.importorskip("langgraph.graph"),
        types=pytest.importorskip("langgraph.types"),
        memory=pytest.importorskip("langgraph.checkpoint.memory"),
        cache=pytest.importorskip("langgraph.cache.memory"),
    )


LIBS = ("threadline", "langgraph")


class State(TypedDict):
    x: int


class Log(TypedDict):
    log: Annotated[list[str], operator.add]


def _noop(state: Any) -> dict[str, Any]:
    return {}


# ---------------------------------------------------------------------- drawing


def _routed(lib: SimpleNamespace) -> Any:
    """Plain edges, a join, path maps with labels, Command destinations, a Literal hint."""
    g, types = lib.graph, lib.types

    def z(state: State) -> Any:
        return types.Command(goto="a")

    z.__annotations__["return"] = types.Command[Literal["b", "a"]]  # resolvable hint

    b = g.StateGraph(State)
    b.add_node("z", z)
    for name in ("c", "a", "b", "d"):
        b.add_node(name, _noop)
    b.add_node("e", _noop, destinations={"d": "lbl", "c": "c"}, metadata={"k": 1})
    b.add_edge(g.START, "z")
    b.add_edge(g.START, "c")
    b.add_conditional_edges("c", lambda s: True, {True: "d", False: g.END})
    b.add_conditional_edges("a", lambda s: "x", {"x": "e", "y": "b"})
    b.add_edge(["a", "b"], "d")
    b.add_edge("d", g.END)
    return b.compile()


def _nested(lib: SimpleNamespace) -> Any:
    g = lib.graph
    sb = g.StateGraph(State)
    sb.add_node("inner1", _noop)
    sb.add_node("inner2", _noop)
    sb.add_edge(g.START, "inner1")
    sb.add_conditional_edges("inner1", lambda s: g.END, ["inner2", g.END])
    sb.add_edge("inner2", g.END)
    b = g.StateGraph(State)
    b.add_node("outer", _noop)
    b.add_node("sub", sb.compile())
    b.add_edge(g.START, "outer")
    b.add_edge("outer", "sub")
    b.add_edge("sub", g.END)
    return b.compile()


def _literal_router(lib: SimpleNamespace) -> Any:
    g = lib.graph

    def route(state: State) -> Literal["a", "b"]:
        return "a"

    b = g.StateGraph(State)
    b.add_node("b", _noop)
    b.add_node("a", _noop)
    b.add_conditional_edges(g.START, route)
    return b.compile()


def _edges(drawing: Any) -> list[tuple[str, str, Any, bool]]:
    return [(e.source, e.target, e.data, e.conditional) for e in drawing.edges]


@pytest.mark.parametrize("build", [_routed, _nested, _literal_router])
def test_get_graph_draws_as_langgraph_draws(build: Any) -> None:
    ours, theirs = (build(_library(name)).get_graph() for name in LIBS)
    assert list(ours.nodes) == list(theirs.nodes)
    assert _edges(ours) == _edges(theirs)
    assert ours.draw_mermaid() == theirs.draw_mermaid()
    assert ours.to_json()["edges"] == theirs.to_json()["edges"]


def test_get_graph_xray_draws_subgraphs_inside_their_node() -> None:
    ours, theirs = (_nested(_library(name)) for name in LIBS)
    for xray in (True, 1):
        mine, other = ours.get_graph(xray=xray), theirs.get_graph(xray=xray)
        assert list(mine.nodes) == list(other.nodes)
        assert _edges(mine) == _edges(other)
        assert mine.draw_mermaid() == other.draw_mermaid()
    assert "subgraph sub" in ours.get_graph(xray=True).draw_mermaid()
    assert list(ours.get_graph(xray=0).nodes) == list(theirs.get_graph().nodes)


# ---------------------------------------------------------------------- Runnable methods


def _counter(lib: SimpleNamespace) -> Any:
    g = lib.graph

    def inc(state: State, config: RunnableConfig) -> dict[str, Any]:
        return {"x": state["x"] + config["configurable"].get("step", 1)}

    b = g.StateGraph(State)
    b.add_node("inc", inc)
    b.add_edge(g.START, "inc")
    return b.compile(checkpointer=lib.memory.InMemorySaver())


@pytest.mark.parametrize("lib", LIBS)
def test_with_config_binds_config_for_runs_and_threads(lib: str) -> None:
    app = _counter(_library(lib))
    bound = app.with_config(configurable={"thread_id": "t", "step": 10}, tags=["a"])
    assert bound.invoke({"x": 1}) == {"x": 11}
    assert bound.invoke({"x": 1}, {"configurable": {"step": 2}}) == {"x": 3}
    assert list(bound.stream({"x": 0})) == [{"inc": {"x": 10}}]
    assert app.get_state({"configurable": {"thread_id": "t"}}).values == {"x": 10}
    assert bound.with_config(recursion_limit=5).invoke({"x": 0}) == {"x": 10}


@pytest.mark.parametrize("lib", LIBS)
def test_batch_and_abatch_run_each_input(lib: str) -> None:
    app = _counter(_library(lib))
    configs = [{"configurable": {"thread_id": f"b{i}"}} for i in range(3)]
    assert app.batch([{"x": 1}, {"x": 2}, {"x": 3}], configs) == [{"x": 2}, {"x": 3}, {"x": 4}]
    got = asyncio.run(app.abatch([{"x": 5}, {"x": 6}], configs[:2]))
    assert got == [{"x": 6}, {"x": 7}]
    assert app.batch([], configs[:0]) == []


@pytest.mark.parametrize("lib", LIBS)
def test_clear_cache_forgets_cached_node_results(lib: str) -> None:
    mod = _library(lib)
    calls: list[int] = []

    def double(state: State) -> dict[str, Any]:
        calls.append(state["x"])
        return {"x": state["x"] * 2}

    b = mod.graph.StateGraph(State)
    b.add_node("double", double, cache_policy=mod.types.CachePolicy(ttl=60))
    b.add_edge(mod.graph.START, "double")
    app = b.compile(cache=mod.cache.InMemoryCache())
    assert app.invoke({"x": 2}) == {"x": 4}
    assert app.invoke({"x": 2}) == {"x": 4}
    assert calls == [2]
    app.clear_cache()
    app.invoke({"x": 2})
    assert calls == [2, 2]
    asyncio.run(app.aclear_cache(["double"]))
    app.invoke({"x": 2})
    assert calls == [2, 2, 2]


def test_default_recursion_limit_is_langgraphs() -> None:
    config = pytest.importorskip("langgraph._internal._config")
    assert threadline.runtime.compiled.DEFAULT_RECURSION_LIMIT == config.DEFAULT_RECURSION_LIMIT


# ---------------------------------------------------------------------- interrupts in streams


def _pausing(lib: SimpleNamespace) -> Any:
    g, types = lib.graph, lib.types

    def ask(state: Log) -> dict[str, Any]:
        return {"log": [types.interrupt("q")]}

    b = g.StateGraph(Log)
    b.add_node("a", lambda s: {"log": ["a"]})
    b.add_node("b", lambda s: {"log": ["b"]})
    b.add_node("ask", ask)
    b.add_edge(g.START, "a")
    b.add_edge("a", "b")
    b.add_edge("b", "ask")
    return b.compile(checkpointer=lib.memory.InMemorySaver(), interrupt_before=["b"])


def _plain(chunks: list[Any]) -> list[Any]:
    """Interrupts as their values (ids are random, and LangGraph's repr has more fields)."""
    text = repr(chunks)
    return [re.sub(r"Interrupt\(value='q'[^)]*\)", "Interrupt(q)", text)]


def _pause_run(lib: str, mode: str) -> list[Any]:
    mod = _library(lib)
    app = _pausing(mod)
    config = {"configurable": {"thread_id": "1"}}
    runs = [
        list(app.stream({"log": []}, config, stream_mode=mode)),
        list(app.stream(None, config, stream_mode=mode)),
        list(app.stream(mod.types.Command(resume="x"), config, stream_mode=mode)),
    ]
    return _plain(runs)


@pytest.mark.parametrize("mode", ["values", "updates"])
def test_stream_chunks_around_interrupts_are_langgraphs(mode: str) -> None:
    """Static pauses end "updates" with ``{"__interrupt__": ()}``; a run that goes on from a
    checkpoint first shows its state in "values"; a step paused at ``interrupt()`` shows the
    state with ``__interrupt__`` in "values"."""
    assert _pause_run("threadline", mode) == _pause_run("langgraph", mode)


# ---------------------------------------------------------------------- values and errors


class _In(TypedDict):
    q: str


class _Out(TypedDict):
    a: str


class _Overall(TypedDict):
    a: str


class _Private(TypedDict):
    private_data: str


def _private_pipeline(lib: SimpleNamespace) -> Any:
    def node_1(state: _Overall) -> _Private:
        return {"private_data": "p"}

    def node_2(state: _Private) -> _Overall:
        return {"a": "x" + state["private_data"]}

    b = lib.graph.StateGraph(_Overall, input_schema=_In, output_schema=_Out)
    b.add_sequence([node_1, node_2])
    b.add_edge(lib.graph.START, "node_1")
    return b.compile()


@pytest.mark.parametrize("lib", LIBS)
def test_values_stream_every_key_while_invoke_returns_the_output_schema(lib: str) -> None:
    app = _private_pipeline(_library(lib))
    assert list(app.stream({"q": "x"}, stream_mode="values")) == [
        {"q": "x"},
        {"q": "x", "private_data": "p"},
        {"q": "x", "private_data": "p", "a": "xp"},
    ]
    assert app.invoke({"q": "x"}) == {"a": "xp"}


@pytest.mark.parametrize("lib", LIBS)
def test_recursion_error_reads_as_langgraphs(lib: str) -> None:
    mod = _library(lib)
    b = mod.graph.StateGraph(State)
    b.add_node("spin", lambda s: {"x": s["x"] + 1})
    b.add_edge(mod.graph.START, "spin")
    b.add_edge("spin", "spin")
    with pytest.raises(RecursionError) as caught:
        b.compile().invoke({"x": 0}, {"recursion_limit": 3})
    text = str(caught.value)
    assert text.startswith("Recursion limit of 3 reached without hitting a stop condition")
    assert "`recursion_limit` config key" in text
    assert text.endswith("/errors/GRAPH_RECURSION_LIMIT")
