"""Subgraphs: a compiled graph as a node or invoked inside a node. Their checkpoints live under
a child namespace; interrupts and failures inside them resume inside them. Every backend."""

from __future__ import annotations

import operator
import threading
from typing import Annotated, Any, TypedDict

import pytest
from counting import Calls, fresh_config

from threadline.checkpoint.base import BaseCheckpointSaver
from threadline.graph import END, START, StateGraph
from threadline.types import Command, StateSnapshot, interrupt


class State(TypedDict, total=False):
    messages: Annotated[list[str], operator.add]
    topic: str


def _node(calls: Calls, name: str) -> Any:
    def node(state: State) -> dict[str, Any]:
        calls.hit(name)
        return {"messages": [name]}

    return node


def _inner(calls: Calls, *, ask: bool = False, fail: dict[str, bool] | None = None) -> Any:
    """inner_a -> (ask) -> inner_b, compiled without a checkpointer (it inherits one)."""

    def inner_b(state: State) -> dict[str, Any]:
        calls.hit("inner_b")
        if fail and fail.get("inner_b"):
            raise ConnectionError("inner_b is down")
        return {"messages": ["inner_b"]}

    def ask_name(state: State) -> dict[str, Any]:
        calls.hit("ask")
        name = interrupt("name?")
        calls.hit("ask:answered")
        return {"messages": [f"name={name}"]}

    builder = StateGraph(State)
    builder.add_node("inner_a", _node(calls, "inner_a"))
    builder.add_node("inner_b", inner_b)
    builder.add_edge(START, "inner_a")
    if ask:
        builder.add_node("ask", ask_name)
        builder.add_edge("inner_a", "ask")
        builder.add_edge("ask", "inner_b")
    else:
        builder.add_edge("inner_a", "inner_b")
    builder.add_edge("inner_b", END)
    return builder.compile()


def _outer(calls: Calls, inner: Any, *, as_function: bool = False) -> StateGraph:
    """before -> sub (the inner graph) -> after."""
    builder = StateGraph(State)
    builder.add_node("before", _node(calls, "before"))
    if as_function:

        def sub(state: State) -> dict[str, Any]:
            calls.hit("sub")
            out = inner.invoke({"messages": [], "topic": state.get("topic", "")})
            return {"messages": out["messages"]}

        builder.add_node("sub", sub)
    else:
        builder.add_node("sub", inner)
    builder.add_node("after", _node(calls, "after"))
    builder.add_edge(START, "before")
    builder.add_edge("before", "sub")
    builder.add_edge("sub", "after")
    builder.add_edge("after", END)
    return builder


def _child_namespaces(saver: BaseCheckpointSaver, config: dict[str, Any], node: str) -> list[str]:
    """The namespaces of ``node``'s task ids in the parent's history."""
    thread_id = config["configurable"]["thread_id"]
    out = []
    for found in saver.list(config):
        for task in found.checkpoint.tasks:
            if task["name"] == node:
                out.append(f"{node}:{task['id']}")
    return [ns for ns in dict.fromkeys(out) if list(saver.list(_ns_config(thread_id, ns)))]


def _ns_config(thread_id: str, ns: str) -> dict[str, Any]:
    return {"configurable": {"thread_id": thread_id, "checkpoint_ns": ns}}


# ---------------------------------------------------------------------- Command.PARENT


def _handoff_graphs(calls: Calls, *, as_function: bool, parallel: bool = False) -> StateGraph:
    """support (inner: triage -> handoff -> never) hands the parent over to billing."""

    def handoff(state: State) -> Command[Any]:
        calls.hit("handoff")
        return Command(graph=Command.PARENT, goto="billing", update={"messages": ["handoff"]})

    inner = StateGraph(State)
    inner.add_node("triage", _node(calls, "triage"))
    inner.add_node("handoff", handoff)
    inner.add_node("never", _node(calls, "never"))
    inner.add_edge(START, "triage")
    inner.add_edge("triage", "handoff")
    inner.add_edge("handoff", "never")
    inner.add_edge("never", END)
    if parallel:  # a sibling running in the same step as the handoff
        inner.add_node("sibling", _node(calls, "sibling"))
        inner.add_edge("triage", "sibling")
    graph = inner.compile()

    outer = StateGraph(State)
    if as_function:

        def support(state: State) -> dict[str, Any]:
            out = graph.invoke({"messages": []})  # lets the handoff through to this graph
            return {"messages": out["messages"]}

        outer.add_node("support", support, destinations=("billing",))
    else:
        outer.add_node("support", graph, destinations=("billing",))
    outer.add_node("billing", _node(calls, "billing"))
    outer.add_edge(START, "support")
    outer.add_edge("billing", END)
    return outer


@pytest.mark.parametrize("as_function", [False, True], ids=["node", "function"])
def test_command_parent_routes_the_parent_graph(
    saver: BaseCheckpointSaver, as_function: bool
) -> None:
    calls = Calls()
    app = _handoff_graphs(calls, as_function=as_function).compile(checkpointer=saver)
    config = fresh_config()
    out = app.invoke({"messages": ["hi"]}, config)
    # The parent takes the command as the support node's result: its update, then billing.
    # What the subgraph wrote in its own state stays there.
    assert out["messages"] == ["hi", "handoff", "billing"]
    assert (calls["triage"], calls["handoff"], calls["never"], calls["billing"]) == (1, 1, 0, 1)
    history = list(app.get_state_history(config))
    assert [tuple(s.next) for s in history] == [(), ("billing",), ("support",), ("__start__",)]


async def test_async_command_parent_with_a_sibling_in_the_step(
    asaver: BaseCheckpointSaver,
) -> None:
    calls = Calls()
    graph = _handoff_graphs(calls, as_function=False, parallel=True)
    app = graph.compile(checkpointer=asaver)
    out = await app.ainvoke({"messages": ["hi"]}, fresh_config())
    assert out["messages"] == ["hi", "handoff", "billing"]
    assert (calls["never"], calls["billing"]) == (0, 1)


def test_command_parent_in_a_top_level_graph_says_what_to_do(saver: BaseCheckpointSaver) -> None:
    from threadline.errors import InvalidUpdateError

    builder = StateGraph(State)
    builder.add_node("n", lambda s: Command(graph=Command.PARENT, goto="n"))
    builder.add_edge(START, "n")
    app = builder.compile(checkpointer=saver)
    with pytest.raises(InvalidUpdateError, match=r"not running inside another graph's node"):
        app.invoke({"messages": []}, fresh_config())


# ---------------------------------------------------------------------- as a node


@pytest.mark.parametrize("as_function", [False, True], ids=["node", "function"])
def test_subgraph_runs_and_checkpoints_under_a_child_namespace(
    saver: BaseCheckpointSaver, as_function: bool
) -> None:
    calls = Calls()
    app = _outer(calls, _inner(calls), as_function=as_function).compile(checkpointer=saver)
    config = fresh_config()
    result = app.invoke({"messages": []}, config)
    assert result["messages"] == ["before", "inner_a", "inner_b", "after"]
    (ns,) = _child_namespaces(saver, config, "sub")
    thread_id = config["configurable"]["thread_id"]
    child = list(saver.list(_ns_config(thread_id, ns)))
    assert len(child) >= 3  # input, inner_a, inner_b
    # The subgraph started from the parent's state (shared keys) and added its own steps.
    # (The function passes it an empty list.)
    started = [] if as_function else ["before"]
    assert child[0].checkpoint.values["messages"] == [*started, "inner_a", "inner_b"]
    # The parent's own history has no subgraph steps in it.
    parent_nodes = [
        n for found in saver.list(config) for n in found.checkpoint.metadata.get("nodes", [])
    ]
    assert "inner_a" not in parent_nodes
    assert sorted(set(parent_nodes)) == ["after", "before", "sub"]


def test_subgraph_without_a_parent_checkpointer_runs_without_one() -> None:
    calls = Calls()
    app = _outer(calls, _inner(calls)).compile()
    assert app.invoke({"messages": []})["messages"] == ["before", "inner_a", "inner_b", "after"]


# ---------------------------------------------------------------------- interrupts


@pytest.mark.parametrize("as_function", [False, True], ids=["node", "function"])
def test_interrupt_in_a_subgraph_pauses_the_run_and_resumes_inside(
    saver: BaseCheckpointSaver, as_function: bool
) -> None:
    calls = Calls()
    app = _outer(calls, _inner(calls, ask=True), as_function=as_function).compile(
        checkpointer=saver
    )
    config = fresh_config()
    result = app.invoke({"messages": []}, config)
    (pending,) = result["__interrupt__"]
    assert pending.value == "name?"
    assert calls["after"] == 0
    state = app.get_state(config)
    assert state.next == ("sub",)
    assert state.interrupts == (pending,)

    result = app.invoke(Command(resume="Ada"), config)
    assert result["messages"] == ["before", "inner_a", "name=Ada", "inner_b", "after"]
    assert "__interrupt__" not in result
    assert calls["before"] == 1  # the parent's earlier node did not rerun
    assert calls["inner_a"] == 1  # nor did the subgraph's earlier node
    assert (calls["ask"], calls["ask:answered"]) == (2, 1)
    assert (calls["inner_b"], calls["after"]) == (1, 1)
    assert app.get_state(config).next == ()


@pytest.mark.parametrize("as_function", [False, True], ids=["node", "function"])
@pytest.mark.parametrize("where", ["before", "after"])
def test_subgraph_interrupt_before_after_pauses_the_parent(
    saver: BaseCheckpointSaver, as_function: bool, where: str
) -> None:
    calls = Calls()
    builder = StateGraph(State)
    builder.add_node("inner_a", _node(calls, "inner_a"))
    builder.add_node("inner_b", _node(calls, "inner_b"))
    builder.add_edge(START, "inner_a")
    builder.add_edge("inner_a", "inner_b")
    option = {
        "before": {"interrupt_before": ["inner_b"]},
        "after": {"interrupt_after": ["inner_a"]},
    }
    inner = builder.compile(**option[where])  # type: ignore[arg-type]
    app = _outer(calls, inner, as_function=as_function).compile(checkpointer=saver)
    config = fresh_config()
    result = app.invoke({"messages": []}, config)
    # The whole run stops inside the subgraph: "sub" has not finished, "after" has not run.
    assert "__interrupt__" not in result
    assert result["messages"] == ["before"]
    assert (calls["inner_b"], calls["after"]) == (0, 0)
    state = app.get_state(config, subgraphs=True)
    assert state.next == ("sub",)
    assert state.interrupts == ()
    if not as_function:
        assert state.tasks[0].state.next == ("inner_b",)
    result = app.invoke(None, config)
    assert result["messages"] == ["before", "inner_a", "inner_b", "after"]
    assert [calls[n] for n in ("before", "inner_a", "inner_b", "after")] == [1, 1, 1, 1]


def test_subgraph_asks_twice(saver: BaseCheckpointSaver) -> None:
    calls = Calls()

    def first(state: State) -> dict[str, Any]:
        calls.hit("first")
        return {"messages": [f"first={interrupt('one?')}"]}

    def second(state: State) -> dict[str, Any]:
        calls.hit("second")
        return {"messages": [f"second={interrupt('two?')}"]}

    inner_builder = StateGraph(State)
    inner_builder.add_sequence([first, second])
    inner_builder.add_edge(START, "first")
    app = _outer(calls, inner_builder.compile()).compile(checkpointer=saver)
    config = fresh_config()
    assert [i.value for i in app.invoke({"messages": []}, config)["__interrupt__"]] == ["one?"]
    assert [i.value for i in app.invoke(Command(resume=1), config)["__interrupt__"]] == ["two?"]
    result = app.invoke(Command(resume=2), config)
    assert result["messages"] == ["before", "first=1", "second=2", "after"]
    assert (calls["before"], calls["first"], calls["second"]) == (1, 2, 2)


def test_parallel_subgraph_and_node_interrupts(saver: BaseCheckpointSaver) -> None:
    calls = Calls()

    def local(state: State) -> dict[str, Any]:
        calls.hit("local")
        return {"messages": [f"local={interrupt('local?')}"]}

    builder = StateGraph(State)
    builder.add_node("sub", _inner(calls, ask=True))
    builder.add_node("local", local)
    builder.add_edge(START, "sub")
    builder.add_edge(START, "local")
    app = builder.compile(checkpointer=saver)
    config = fresh_config()
    pending = {i.value: i.id for i in app.invoke({"messages": []}, config)["__interrupt__"]}
    assert set(pending) == {"name?", "local?"}
    result = app.invoke(Command(resume={pending["name?"]: "Ada", pending["local?"]: "yes"}), config)
    assert sorted(result["messages"]) == sorted(["inner_a", "name=Ada", "inner_b", "local=yes"])
    assert calls["inner_a"] == 1


def test_get_state_with_subgraphs(saver: BaseCheckpointSaver) -> None:
    calls = Calls()
    app = _outer(calls, _inner(calls, ask=True)).compile(checkpointer=saver)
    config = fresh_config()
    app.invoke({"messages": []}, config)

    plain = app.get_state(config)
    assert plain.tasks[0].state is None
    state = app.get_state(config, subgraphs=True)
    (task,) = state.tasks
    assert task.name == "sub"
    child = task.state
    assert isinstance(child, StateSnapshot)
    assert child.next == ("ask",)
    assert child.values["messages"] == ["before", "inner_a"]
    assert [i.value for i in child.interrupts] == ["name?"]
    ns = child.config["configurable"]["checkpoint_ns"]
    assert ns == f"sub:{task.id}"

    app.invoke(Command(resume="Ada"), config)
    assert all(t.state is None for t in app.get_state(config, subgraphs=True).tasks)


def test_get_state_with_subgraphs_called_inside_a_node(saver: BaseCheckpointSaver) -> None:
    """A graph invoked from a node function is shown too, with its values as a dict."""
    calls = Calls()
    app = _outer(calls, _inner(calls, ask=True), as_function=True).compile(checkpointer=saver)
    config = fresh_config()
    app.invoke({"messages": []}, config)

    (task,) = app.get_state(config, subgraphs=True).tasks
    child = task.state
    assert isinstance(child, StateSnapshot)
    assert child.next == ("ask",)
    assert child.values == {"messages": ["inner_a"], "topic": ""}
    assert [i.value for i in child.interrupts] == ["name?"]
    assert child.config["configurable"]["checkpoint_ns"] == f"sub:{task.id}"


async def test_aget_state_with_subgraphs_called_inside_a_node(
    asaver: BaseCheckpointSaver,
) -> None:
    calls = Calls()
    inner = _inner(calls, ask=True)

    async def sub(state: State) -> dict[str, Any]:
        out = await inner.ainvoke({"messages": [], "topic": ""})
        return {"messages": out["messages"]}

    builder = StateGraph(State)
    builder.add_node("sub", sub)
    builder.add_edge(START, "sub")
    app = builder.compile(checkpointer=asaver)
    config = fresh_config()
    await app.ainvoke({"messages": []}, config)
    (task,) = (await app.aget_state(config, subgraphs=True)).tasks
    assert task.state is not None and task.state.next == ("ask",)
    assert task.state.values == {"messages": ["inner_a"], "topic": ""}


def test_two_levels_of_subgraphs(saver: BaseCheckpointSaver) -> None:
    calls = Calls()
    inner = _inner(calls, ask=True)
    middle_builder = StateGraph(State)
    middle_builder.add_node("m_first", _node(calls, "m_first"))
    middle_builder.add_node("inner", inner)
    middle_builder.add_edge(START, "m_first")
    middle_builder.add_edge("m_first", "inner")
    middle = middle_builder.compile()
    app = _outer(calls, middle).compile(checkpointer=saver)
    config = fresh_config()
    (pending,) = app.invoke({"messages": []}, config)["__interrupt__"]
    assert pending.value == "name?"
    state = app.get_state(config, subgraphs=True)
    middle_state = state.tasks[0].state
    assert middle_state.next == ("inner",)
    inner_state = middle_state.tasks[0].state
    assert inner_state.next == ("ask",)
    inner_ns = inner_state.config["configurable"]["checkpoint_ns"]
    assert inner_ns.count("|") == 1 and inner_ns.startswith("sub:")

    result = app.invoke(Command(resume="Bo"), config)
    assert result["messages"] == ["before", "m_first", "inner_a", "name=Bo", "inner_b", "after"]
    assert (calls["before"], calls["m_first"], calls["inner_a"]) == (1, 1, 1)


def test_update_state_on_a_parent_paused_in_a_subgraph(saver: BaseCheckpointSaver) -> None:
    calls = Calls()
    app = _outer(calls, _inner(calls, ask=True)).compile(checkpointer=saver)
    config = fresh_config()
    app.invoke({"messages": []}, config)
    app.update_state(config, {"topic": "edited"})
    assert app.get_state(config).next == ("sub",)
    result = app.invoke(Command(resume="Cy"), config)
    assert result["messages"][-2:] == ["inner_b", "after"]
    assert result["topic"] == "edited"
    assert calls["inner_a"] == 1


# ---------------------------------------------------------------------- failures


@pytest.mark.parametrize("as_function", [False, True], ids=["node", "function"])
def test_failure_in_a_subgraph_resumes_inside_it(
    saver: BaseCheckpointSaver, as_function: bool
) -> None:
    calls = Calls()
    fail = {"inner_b": True}
    app = _outer(calls, _inner(calls, fail=fail), as_function=as_function).compile(
        checkpointer=saver
    )
    config = fresh_config()
    with pytest.raises(ConnectionError, match="inner_b is down"):
        app.invoke({"messages": []}, config)
    state = app.get_state(config, subgraphs=True)
    assert state.next == ("sub",)
    assert state.tasks[0].error is not None
    thread_id = config["configurable"]["thread_id"]
    child_ns = f"sub:{state.tasks[0].id}"
    (child_head, *_) = saver.list(_ns_config(thread_id, child_ns))
    assert [t["name"] for t in child_head.checkpoint.tasks] == ["inner_b"]
    if not as_function:  # a graph as a node is known to the parent: get_state shows it
        child = state.tasks[0].state
        assert child is not None and child.next == ("inner_b",)
        assert child.tasks[0].error is not None

    fail.clear()
    result = app.invoke(None, config)
    assert result["messages"] == ["before", "inner_a", "inner_b", "after"]
    assert calls["before"] == 1
    assert calls["inner_a"] == 1  # the subgraph's finished step is not rerun
    assert calls["inner_b"] == 2
    assert calls["after"] == 1


# ---------------------------------------------------------------------- schemas


class ParentState(TypedDict, total=False):
    shared: Annotated[list[str], operator.add]
    parent_only: str


class ChildState(TypedDict, total=False):
    shared: Annotated[list[str], operator.add]
    child_only: str


def test_subgraph_with_another_schema_passes_only_shared_keys(
    saver: BaseCheckpointSaver,
) -> None:
    seen: list[dict[str, Any]] = []

    def child_node(state: ChildState) -> dict[str, Any]:
        seen.append(dict(state))
        return {"shared": ["from child"], "child_only": "secret"}

    child_builder = StateGraph(ChildState)
    child_builder.add_node("child_node", child_node)
    child_builder.add_edge(START, "child_node")
    child = child_builder.compile()

    builder = StateGraph(ParentState)
    builder.add_node("child", child)
    builder.add_edge(START, "child")
    app = builder.compile(checkpointer=saver)
    config = fresh_config()
    result = app.invoke({"shared": ["in"], "parent_only": "mine"}, config)
    assert seen == [{"shared": ["in"]}]
    assert result == {"shared": ["in", "from child"], "parent_only": "mine"}
    assert "child_only" not in app.get_state(config).values


# ---------------------------------------------------------------------- streaming


def test_stream_subgraphs_yields_namespaced_events(saver: BaseCheckpointSaver) -> None:
    calls = Calls()
    app = _outer(calls, _inner(calls)).compile(checkpointer=saver)
    config = fresh_config()
    chunks = list(app.stream({"messages": []}, config, stream_mode="updates", subgraphs=True))
    assert all(isinstance(c, tuple) and len(c) == 2 for c in chunks)
    parent = [chunk for ns, chunk in chunks if ns == ()]
    assert [next(iter(c)) for c in parent] == ["before", "sub", "after"]
    child = [(ns, chunk) for ns, chunk in chunks if ns != ()]
    assert [next(iter(c)) for _, c in child] == ["inner_a", "inner_b"]
    (child_ns,) = {ns for ns, _ in child}
    assert len(child_ns) == 1 and child_ns[0].startswith("sub:")
    sub_task = next(
        t for found in saver.list(config) for t in found.checkpoint.tasks if t["name"] == "sub"
    )
    assert child_ns == (f"sub:{sub_task['id']}",)
    # Child events come between the parent's "before" and "sub" updates.
    order = [next(iter(c)) for _, c in chunks]
    assert order == ["before", "inner_a", "inner_b", "sub", "after"]


def test_stream_without_subgraphs_hides_child_events(saver: BaseCheckpointSaver) -> None:
    calls = Calls()
    app = _outer(calls, _inner(calls)).compile(checkpointer=saver)
    chunks = list(app.stream({"messages": []}, fresh_config(), stream_mode="updates"))
    assert [next(iter(c)) for c in chunks] == ["before", "sub", "after"]


def test_stream_subgraphs_with_several_modes(saver: BaseCheckpointSaver) -> None:
    calls = Calls()
    app = _outer(calls, _inner(calls, ask=True)).compile(checkpointer=saver)
    config = fresh_config()
    chunks = list(
        app.stream({"messages": []}, config, stream_mode=["updates", "values"], subgraphs=True)
    )
    assert all(len(c) == 3 for c in chunks)
    child_updates = [c for ns, mode, c in chunks if ns != () and mode == "updates"]
    assert {"inner_a": {"messages": ["inner_a"]}} in child_updates
    interrupts = [c for ns, mode, c in chunks if mode == "updates" and "__interrupt__" in c]
    assert interrupts and interrupts[-1]["__interrupt__"][0].value == "name?"


# ---------------------------------------------------------------------- async


async def test_async_subgraph_interrupt_and_resume(asaver: BaseCheckpointSaver) -> None:
    calls = Calls()
    app = _outer(calls, _inner(calls, ask=True)).compile(checkpointer=asaver)
    config = fresh_config()
    (pending,) = (await app.ainvoke({"messages": []}, config))["__interrupt__"]
    assert pending.value == "name?"
    state = await app.aget_state(config, subgraphs=True)
    assert state.next == ("sub",)
    assert state.tasks[0].state is not None
    assert state.tasks[0].state.next == ("ask",)
    chunks = [
        c
        async for c in app.astream(
            Command(resume="Ada"), config, stream_mode="updates", subgraphs=True
        )
    ]
    assert [next(iter(c)) for ns, c in chunks if ns] == ["ask", "inner_b"]
    assert (await app.aget_state(config)).values["messages"] == [
        "before",
        "inner_a",
        "name=Ada",
        "inner_b",
        "after",
    ]
    assert (calls["before"], calls["inner_a"], calls["ask"]) == (1, 1, 2)


async def test_async_failure_in_a_subgraph_resumes_inside_it(
    asaver: BaseCheckpointSaver,
) -> None:
    calls = Calls()
    fail = {"inner_b": True}
    app = _outer(calls, _inner(calls, fail=fail), as_function=False).compile(checkpointer=asaver)
    config = fresh_config()
    with pytest.raises(ConnectionError):
        await app.ainvoke({"messages": []}, config)
    fail.clear()
    result = await app.ainvoke(None, config)
    assert result["messages"] == ["before", "inner_a", "inner_b", "after"]
    assert (calls["before"], calls["inner_a"], calls["inner_b"]) == (1, 1, 2)


def test_many_parallel_subgraphs_with_parallel_steps_do_not_deadlock(
    saver: BaseCheckpointSaver,
) -> None:
    """More Send tasks than the shared worker pool has threads each run a subgraph whose step
    runs two nodes that must meet at a barrier: nested steps need workers of their own."""
    from threadline.runtime.compiled import _POOL
    from threadline.types import Send

    workers = _POOL._max_workers
    count = workers + 8
    barriers: dict[int, threading.Barrier] = {}
    # The first `workers` parents wait for each other, so every shared worker is taken before
    # any subgraph starts: without workers of their own, the subgraphs' tasks would starve.
    all_busy = threading.Barrier(workers, timeout=30)

    class Inner(TypedDict):
        key: int
        messages: Annotated[list[str], operator.add]

    def meet(name: str) -> Any:
        def node(state: Inner) -> dict[str, Any]:
            barriers[state["key"]].wait()  # both nodes of this subgraph run at once
            return {"messages": [name]}

        return node

    inner = StateGraph(Inner)
    inner.add_node("left", meet("left"))
    inner.add_node("right", meet("right"))
    inner.add_edge(START, "left")
    inner.add_edge(START, "right")
    sub = inner.compile()

    class Outer(TypedDict):
        items: list[int]
        messages: Annotated[list[str], operator.add]

    def work(arg: dict[str, int]) -> dict[str, Any]:
        barriers[arg["i"]] = threading.Barrier(2, timeout=30)
        if arg["i"] < workers:
            all_busy.wait()
        out = sub.invoke({"key": arg["i"], "messages": []})
        return {"messages": [f"{arg['i']}:{'+'.join(sorted(out['messages']))}"]}

    outer = StateGraph(Outer)
    outer.add_node("plan", lambda s: {})
    outer.add_node("work", work)
    outer.add_edge(START, "plan")
    outer.add_conditional_edges(
        "plan", lambda s: [Send("work", {"i": i}) for i in s["items"]], ["work"]
    )
    app = outer.compile(checkpointer=saver)
    result = app.invoke({"items": list(range(count)), "messages": []}, fresh_config())
    assert sorted(result["messages"]) == sorted(f"{i}:left+right" for i in range(count))
