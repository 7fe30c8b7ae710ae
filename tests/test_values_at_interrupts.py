"""Stream modes "values" and "updates" around pauses, shaped as LangGraph shapes them: the same
graph run on threadline and on LangGraph (when installed) streams the same chunks, interrupt
ids and subgraph task ids aside.

At a pause LangGraph streams, per task that asked, ``{"__interrupt__": (question,)}`` and the
state (as it was before the step) with that question under ``"__interrupt__"``; the updates of
the step's tasks that finished; and, when those wrote the state, the state as their writes would
make it. A pause by interrupt_before/after ends with ``{"__interrupt__": ()}``. A run that goes
on from a checkpoint (resume, ``None``) first streams that checkpoint's state, then the updates
of the tasks of its step that had finished (marked cached)."""

from __future__ import annotations

import asyncio
import operator
import time
from types import SimpleNamespace
from typing import Annotated, Any, TypedDict

import pytest

import threadline.checkpoint.memory
import threadline.func
import threadline.graph
import threadline.types

MODES = ["values", "updates"]


class State(TypedDict):
    log: Annotated[list[str], operator.add]


class SubState(TypedDict, total=False):
    last: str


def _library(name: str) -> SimpleNamespace:
    if name == "threadline":
        graph, types, memory = threadline.graph, threadline.types, threadline.checkpoint.memory
        func = threadline.func
    else:
        graph = pytest.importorskip("langgraph.graph")
        types = pytest.importorskip("langgraph.types")
        memory = pytest.importorskip("langgraph.checkpoint.memory")
        func = pytest.importorskip("langgraph.func")
    return SimpleNamespace(
        StateGraph=graph.StateGraph, START=graph.START, END=graph.END, interrupt=types.interrupt,
        Command=types.Command, Saver=memory.InMemorySaver, entrypoint=func.entrypoint,
    )  # fmt: skip


def _plain(value: Any) -> Any:
    """``value`` with interrupts as ``("interrupt", value)`` and subgraph task ids dropped."""
    if type(value).__name__ == "Interrupt":
        return ("interrupt", value.value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    if isinstance(value, str) and ":" in value and len(value) > 30:
        return value.split(":")[0]  # a namespace part, "node:task_id"
    return value


def _both(scenario: Any) -> None:
    got = {name: _plain(scenario(_library(name))) for name in ("langgraph", "threadline")}
    assert got["threadline"] == got["langgraph"]


def _cfg(thread: str = "1") -> dict[str, Any]:
    return {"configurable": {"thread_id": thread}}


def _node(name: str) -> Any:
    return lambda state: {"log": [name]}


def _ask(lib: SimpleNamespace, question: str = "q?", wait: float = 0.0) -> Any:
    def ask(state: Any) -> dict[str, Any]:
        time.sleep(wait)
        return {"log": [lib.interrupt(question)]}

    return ask


def _chain(lib: SimpleNamespace, nodes: list[tuple[str, Any]], **compile_kw: Any) -> Any:
    builder = lib.StateGraph(State)
    prev = lib.START
    for name, fn in nodes:
        builder.add_node(name, fn)
        builder.add_edge(prev, name)
        prev = name
    builder.add_edge(prev, lib.END)
    return builder.compile(checkpointer=lib.Saver(), **compile_kw)


def _runs(app: Any, inputs: list[Any], **kw: Any) -> list[Any]:
    mode = kw.pop("stream_mode", MODES)
    out = [list(app.stream(inp, _cfg(), stream_mode=mode, **kw)) for inp in inputs]
    return [*out, app.get_state(_cfg()).values]


def _asking_chain(lib: SimpleNamespace) -> Any:
    return _chain(lib, [("a", _node("a")), ("b", _ask(lib)), ("c", _node("c"))])


@pytest.mark.parametrize("mode", ["values", "updates", MODES])
def test_interrupt_then_resume(mode: Any) -> None:
    def scenario(lib: SimpleNamespace) -> Any:
        app = _asking_chain(lib)
        return _runs(app, [{"log": []}, lib.Command(resume="ok")], stream_mode=mode)

    _both(scenario)


def test_continue_with_none_asks_again_then_resume() -> None:
    def scenario(lib: SimpleNamespace) -> Any:
        return _runs(_asking_chain(lib), [{"log": []}, None, lib.Command(resume="ok")])

    _both(scenario)


def test_two_questions_in_a_row() -> None:
    def scenario(lib: SimpleNamespace) -> Any:
        app = _chain(lib, [("b", _ask(lib, "1")), ("b2", _ask(lib, "2")), ("c", _node("c"))])
        resume = lib.Command(resume="ok")
        return _runs(app, [{"log": []}, resume, resume])

    _both(scenario)


def test_resume_with_an_update() -> None:
    def scenario(lib: SimpleNamespace) -> Any:
        app = _chain(lib, [("n", lambda s: None), ("b", _ask(lib))])  # n writes nothing
        return _runs(app, [{"log": []}, lib.Command(resume="r", update={"log": ["u"]})])

    _both(scenario)


def test_invoke_returns_the_questions() -> None:
    def scenario(lib: SimpleNamespace) -> Any:
        app = _asking_chain(lib)
        first = app.invoke({"log": []}, _cfg())
        return [first, app.invoke(lib.Command(resume="ok"), _cfg())]

    _both(scenario)


@pytest.mark.parametrize("where", ["compile", "call"])
@pytest.mark.parametrize("kind", ["interrupt_before", "interrupt_after"])
def test_static_interrupts_on_a_chain(where: str, kind: str) -> None:
    names = ["c"] if kind == "interrupt_before" else ["a"]

    def scenario(lib: SimpleNamespace) -> Any:
        nodes = [("a", _node("a")), ("c", _node("c"))]
        if where == "compile":
            return _runs(_chain(lib, nodes, **{kind: names}), [{"log": []}, None])
        return _runs(_chain(lib, nodes), [{"log": []}, None], **{kind: names})

    _both(scenario)


def test_interrupt_before_the_first_node() -> None:
    def scenario(lib: SimpleNamespace) -> Any:
        app = _chain(lib, [("a", _node("a")), ("c", _node("c"))], interrupt_before=["a"])
        return _runs(app, [{"log": []}, None])

    _both(scenario)


def _parallel(lib: SimpleNamespace, ask_wait: float, other: Any, **compile_kw: Any) -> Any:
    """START -> b (asks) and c, both -> d."""
    builder = lib.StateGraph(State)
    builder.add_node("b", _ask(lib, wait=ask_wait))
    builder.add_node("c", other)
    builder.add_node("d", _node("d"))
    builder.add_edge(lib.START, "b")
    builder.add_edge(lib.START, "c")
    builder.add_edge(["b", "c"], "d")
    return builder.compile(checkpointer=lib.Saver(), **compile_kw)


def _slow(value: Any, wait: float) -> Any:
    def node(state: Any) -> Any:
        time.sleep(wait)
        return value

    return node


@pytest.mark.parametrize("asks_first", [True, False])
def test_parallel_branch_asks_the_other_finishes(asks_first: bool) -> None:
    def scenario(lib: SimpleNamespace) -> Any:
        ask_wait, other_wait = (0.0, 0.3) if asks_first else (0.3, 0.0)
        app = _parallel(lib, ask_wait, _slow({"log": ["c"]}, other_wait))
        return _runs(app, [{"log": []}, None, lib.Command(resume="ok")])

    _both(scenario)


def test_parallel_branch_that_writes_nothing() -> None:
    def scenario(lib: SimpleNamespace) -> Any:
        app = _parallel(lib, 0.0, _slow(None, 0.3))
        return _runs(app, [{"log": []}, lib.Command(resume="ok")])

    _both(scenario)


def test_parallel_branches_then_interrupt_before() -> None:
    def scenario(lib: SimpleNamespace) -> Any:
        app = _parallel(lib, 0.0, _slow({"log": ["c"]}, 0.3), interrupt_before=["d"])
        return _runs(app, [{"log": []}, lib.Command(resume="ok"), None])

    _both(scenario)


def test_two_branches_ask() -> None:
    def scenario(lib: SimpleNamespace) -> Any:
        builder = lib.StateGraph(State)
        builder.add_node("q1", _ask(lib, "1"))
        builder.add_node("q2", _ask(lib, "2", wait=0.3))
        builder.add_edge(lib.START, "q1")
        builder.add_edge(lib.START, "q2")
        app = builder.compile(checkpointer=lib.Saver())
        first = list(app.stream({"log": []}, _cfg(), stream_mode=MODES))
        asked = {i.value: i.id for i in app.get_state(_cfg()).interrupts}
        second = list(app.stream(lib.Command(resume={asked["1"]: "a"}), _cfg(), stream_mode=MODES))
        return [first, second]

    _both(scenario)


def test_a_failing_branch_streams_the_other_branch() -> None:
    def scenario(lib: SimpleNamespace) -> Any:
        def bad(state: Any) -> Any:
            time.sleep(0.3)
            raise ValueError("boom")

        builder = lib.StateGraph(State)
        builder.add_node("ok", _node("ok"))
        builder.add_node("bad", bad)
        builder.add_edge(lib.START, "ok")
        builder.add_edge(lib.START, "bad")
        app = builder.compile(checkpointer=lib.Saver())
        out = []
        for inp in ({"log": []}, None):
            chunks: list[Any] = []
            with pytest.raises(ValueError):
                for chunk in app.stream(inp, _cfg(), stream_mode=MODES):
                    chunks.append(chunk)
            out.append(chunks)
        return out

    _both(scenario)


@pytest.mark.parametrize("subgraphs", [True, False])
def test_question_in_a_subgraph(subgraphs: bool) -> None:
    def scenario(lib: SimpleNamespace) -> Any:
        def ask(state: Any) -> Any:
            return {"last": lib.interrupt("q?")}

        sub = lib.StateGraph(SubState)
        sub.add_node("s1", lambda s: {"last": "s1"})
        sub.add_node("s2", ask)
        sub.add_edge(lib.START, "s1")
        sub.add_edge("s1", "s2")
        builder = lib.StateGraph(SubState)
        builder.add_node("p", lambda s: {"last": "p"})
        builder.add_node("sub", sub.compile())
        builder.add_edge(lib.START, "p")
        builder.add_edge("p", "sub")
        app = builder.compile(checkpointer=lib.Saver())
        return _runs(app, [{"last": ""}, lib.Command(resume="ok")], subgraphs=subgraphs)

    _both(scenario)


def test_static_interrupt_in_a_subgraph() -> None:
    def scenario(lib: SimpleNamespace) -> Any:
        sub = lib.StateGraph(SubState)
        sub.add_node("s1", lambda s: {"last": "s1"})
        sub.add_node("s2", lambda s: {"last": "s2"})
        sub.add_edge(lib.START, "s1")
        sub.add_edge("s1", "s2")
        builder = lib.StateGraph(SubState)
        builder.add_node("sub", sub.compile(interrupt_before=["s2"]))
        builder.add_edge(lib.START, "sub")
        app = builder.compile(checkpointer=lib.Saver())
        return _runs(app, [{"last": ""}, None], subgraphs=True)

    _both(scenario)


def test_async_stream() -> None:
    def scenario(lib: SimpleNamespace) -> Any:
        asking = _asking_chain(lib)
        pausing = _chain(lib, [("a", _node("a")), ("c", _node("c"))], interrupt_before=["c"])

        async def go() -> list[Any]:
            out = []
            for app, inputs in ((asking, [{"log": []}, lib.Command(resume="ok")]),
                                (pausing, [{"log": []}, None])):  # fmt: skip
                for inp in inputs:
                    out.append([c async for c in app.astream(inp, _cfg(), stream_mode=MODES)])
            out.append(await asking.ainvoke({"log": []}, _cfg("2")))
            return out

        return asyncio.run(go())

    _both(scenario)


def test_entrypoint_question() -> None:
    def scenario(lib: SimpleNamespace) -> Any:
        @lib.entrypoint(checkpointer=lib.Saver())
        def ask(x: Any) -> Any:
            return {"got": lib.interrupt("ask")}

        resume = lib.Command(resume="y")
        out = [list(ask.stream(inp, _cfg(), stream_mode=MODES)) for inp in (1, resume, 2, resume)]
        return [*out, ask.invoke(3, _cfg("2"))]

    _both(scenario)
