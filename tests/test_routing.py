"""Routing from a node: Command(update=..., goto=...), declared destinations, and Send
(map-reduce), including pending Sends surviving a pause or a failure. Every backend."""

from __future__ import annotations

import operator
import threading
import time
from typing import Annotated, Any, Literal, TypedDict

import pytest
from counting import Calls, fresh_config, made_by

from threadline.checkpoint.base import BaseCheckpointSaver
from threadline.errors import InvalidUpdateError
from threadline.graph import END, START, StateGraph
from threadline.types import Command, Send


class State(TypedDict, total=False):
    log: Annotated[list[str], operator.add]
    items: list[str]
    vip: bool
    seen: bool
    results: Annotated[list[str], operator.add]


# ---------------------------------------------------------------------- Command(goto=...)


def triage(state: State) -> Command[Literal["urgent", "later"]]:
    return Command(
        update={"seen": True, "log": ["triage"]}, goto="urgent" if state["vip"] else "later"
    )


def _triage_graph() -> StateGraph:
    builder = StateGraph(State)
    builder.add_node(triage)
    builder.add_node("urgent", lambda s: {"log": [f"urgent seen={s['seen']}"]})
    builder.add_node("later", lambda s: {"log": [f"later seen={s['seen']}"]})
    builder.add_edge(START, "triage")
    builder.add_edge("urgent", END)
    builder.add_edge("later", END)
    return builder


def test_command_goto_routes_and_writes_state(saver: BaseCheckpointSaver) -> None:
    app = _triage_graph().compile(checkpointer=saver)
    assert app.invoke({"vip": True, "log": []}, fresh_config()) == {
        "vip": True,
        "seen": True,
        "log": ["triage", "urgent seen=True"],
        "results": [],  # never written: the reducer's empty value
    }
    config = fresh_config()
    assert app.invoke({"vip": False, "log": []}, config)["log"] == ["triage", "later seen=True"]
    # The route is part of the checkpoint after triage.
    history = list(app.get_state_history(config))
    after_triage = next(s for s in history if made_by(history, s) == ["triage"])
    assert after_triage.next == ("later",)


def test_command_goto_a_list_runs_them_in_one_step(saver: BaseCheckpointSaver) -> None:
    barrier = threading.Barrier(2, timeout=5)

    def fan(state: State) -> Command[Literal["a", "b"]]:
        return Command(update={"log": ["fan"]}, goto=["a", "b"])

    def make(name: str) -> Any:
        def node(state: State) -> dict[str, Any]:
            barrier.wait()  # only passes if a and b run at the same time
            return {"log": [name]}

        return node

    builder = StateGraph(State)
    builder.add_node(fan)
    builder.add_node("a", make("a"))
    builder.add_node("b", make("b"))
    builder.add_edge(START, "fan")
    app = builder.compile(checkpointer=saver)
    assert app.invoke({"log": []}, fresh_config())["log"] == ["fan", "a", "b"]


def test_command_goto_send(saver: BaseCheckpointSaver) -> None:
    def plan(state: State) -> Command[Literal["work"]]:
        return Command(
            update={"log": ["plan"]}, goto=[Send("work", {"item": i}) for i in state["items"]]
        )

    builder = StateGraph(State)
    builder.add_node(plan)
    builder.add_node("work", lambda arg: {"results": [arg["item"].upper()]})
    builder.add_edge(START, "plan")
    app = builder.compile(checkpointer=saver)
    result = app.invoke({"items": ["x", "y"], "log": []}, fresh_config())
    assert result["results"] == ["X", "Y"]
    assert result["log"] == ["plan"]


def test_command_goto_unknown_node_is_an_error(saver: BaseCheckpointSaver) -> None:
    builder = StateGraph(State)
    builder.add_node("go", lambda s: Command(goto="nowhere"))
    builder.add_edge(START, "go")
    app = builder.compile(checkpointer=saver)
    with pytest.raises(InvalidUpdateError, match="nowhere"):
        app.invoke({"log": []}, fresh_config())


def test_command_as_input_routes(saver: BaseCheckpointSaver) -> None:
    app = _triage_graph().compile(checkpointer=saver)
    result = app.invoke(
        Command(update={"vip": False, "seen": True, "log": []}, goto="urgent"), fresh_config()
    )
    # The input's goto runs alongside the entry node.
    assert "urgent seen=True" in result["log"]


# ---------------------------------------------------------------------- declared destinations


def test_annotated_destinations_are_drawn() -> None:
    app = _triage_graph().compile()
    mermaid = app.get_graph().draw_mermaid()
    assert "triage -.-> urgent" in mermaid
    assert "triage -.-> later" in mermaid


def test_add_node_destinations_are_drawn_and_make_nodes_reachable() -> None:
    builder = StateGraph(State)
    builder.add_node("route", lambda s: Command(goto="left"), destinations=("left", "right"))
    builder.add_node("left", lambda s: {"log": ["left"]})
    builder.add_node("right", lambda s: {"log": ["right"]})
    builder.add_edge(START, "route")
    app = builder.compile()
    mermaid = app.get_graph().draw_mermaid()
    assert "route -.-> left" in mermaid
    assert "route -.-> right" in mermaid
    assert app.invoke({"log": []})["log"] == ["left"]


def test_undeclared_destination_is_unreachable() -> None:
    builder = StateGraph(State)
    builder.add_node("route", lambda s: Command(goto="left"))
    builder.add_node("left", lambda s: {"log": ["left"]})
    builder.add_edge(START, "route")
    with pytest.raises(ValueError, match="not reachable"):
        builder.compile()


# ---------------------------------------------------------------------- Send (map-reduce)


def _map_reduce(calls: Calls, work: Any = None) -> StateGraph:
    def plan(state: State) -> dict[str, Any]:
        calls.hit("plan")
        return {"log": ["plan"]}

    def fan_out(state: State) -> list[Send]:
        return [Send("work", {"item": i}) for i in state["items"]]

    def default_work(arg: dict[str, str]) -> dict[str, Any]:
        calls.hit(f"work:{arg['item']}")
        return {"results": [arg["item"].upper()]}

    def reduce(state: State) -> dict[str, Any]:
        calls.hit("reduce")
        return {"log": [f"reduce {','.join(state['results'])}"]}

    builder = StateGraph(State)
    builder.add_node("plan", plan)
    builder.add_node("work", work or default_work)
    builder.add_node("reduce", reduce)
    builder.add_edge(START, "plan")
    builder.add_conditional_edges("plan", fan_out, ["work"])
    builder.add_edge("work", "reduce")
    builder.add_edge("reduce", END)
    return builder


def test_send_runs_once_per_send_with_its_own_input(saver: BaseCheckpointSaver) -> None:
    calls = Calls()
    seen: list[Any] = []

    def work(arg: Any) -> dict[str, Any]:
        seen.append(arg)
        calls.hit(f"work:{arg['item']}")
        return {"results": [arg["item"].upper()]}

    app = _map_reduce(calls, work).compile(checkpointer=saver)
    result = app.invoke({"items": ["a", "b", "a"], "log": []}, fresh_config())
    assert sorted(seen, key=str) == [{"item": "a"}, {"item": "a"}, {"item": "b"}]
    assert result["results"] == ["A", "B", "A"]
    assert result["log"] == ["plan", "reduce A,B,A"]
    assert (calls["work:a"], calls["work:b"], calls["reduce"]) == (2, 1, 1)


def test_sends_run_in_the_same_step(saver: BaseCheckpointSaver) -> None:
    barrier = threading.Barrier(3, timeout=5)

    def work(arg: dict[str, str]) -> dict[str, Any]:
        barrier.wait()  # all three must be running at once
        return {"results": [arg["item"]]}

    app = _map_reduce(Calls(), work).compile(checkpointer=saver)
    config = fresh_config()
    app.invoke({"items": ["a", "b", "c"], "log": []}, config)
    history = list(app.get_state_history(config))
    work_steps = [s for s in history if "work" in made_by(history, s)]
    assert len(work_steps) == 1
    assert made_by(history, work_steps[0]) == ["work", "work", "work"]
    assert "nodes" not in work_steps[0].metadata  # the engine's record, not shown (as LangGraph)
    fanned = next(s for s in history if [t.name for t in s.tasks] == ["work"] * 3)
    assert all(t.path[0] == "__pregel_push" for t in fanned.tasks)


def test_send_results_merge_in_send_order(saver: BaseCheckpointSaver) -> None:
    def work(arg: dict[str, str]) -> dict[str, Any]:
        # Finish in the reverse order of the Sends.
        time.sleep({"a": 0.15, "b": 0.08, "c": 0.0}[arg["item"]])
        return {"results": [arg["item"]]}

    app = _map_reduce(Calls(), work).compile(checkpointer=saver)
    for _ in range(2):
        result = app.invoke({"items": ["a", "b", "c"], "log": []}, fresh_config())
        assert result["results"] == ["a", "b", "c"]


def test_send_and_plain_edge_in_one_step(saver: BaseCheckpointSaver) -> None:
    builder = StateGraph(State)
    builder.add_node("plan", lambda s: {"log": ["plan"]})
    builder.add_node("work", lambda arg: {"results": [arg]})
    builder.add_node("side", lambda s: {"log": ["side"]})
    builder.add_edge(START, "plan")
    builder.add_edge("plan", "side")
    builder.add_conditional_edges(
        "plan", lambda s: [Send("work", "w1"), Send("work", "w2")], ["work"]
    )
    app = builder.compile(checkpointer=saver)
    result = app.invoke({"log": []}, fresh_config())
    assert result == {"log": ["plan", "side"], "results": ["w1", "w2"]}


def test_pending_sends_survive_interrupt_before(saver: BaseCheckpointSaver) -> None:
    calls = Calls()
    app = _map_reduce(calls).compile(checkpointer=saver, interrupt_before=["work"])
    config = fresh_config()
    app.invoke({"items": ["a", "b", "c"], "log": []}, config)
    state = app.get_state(config)
    assert state.next == ("work", "work", "work")
    assert calls["work:a"] == 0
    # A new compiled graph (as another process would build) continues from the checkpoint.
    again = _map_reduce(calls).compile(checkpointer=saver, interrupt_before=["work"])
    result = again.invoke(None, config)
    assert result["results"] == ["A", "B", "C"]
    assert [calls[f"work:{i}"] for i in "abc"] == [1, 1, 1]
    assert calls["plan"] == 1 and calls["reduce"] == 1


def test_failed_send_reruns_alone(saver: BaseCheckpointSaver) -> None:
    calls = Calls()
    broken = {"b": True}

    def work(arg: dict[str, str]) -> dict[str, Any]:
        calls.hit(f"work:{arg['item']}")
        if broken.get(arg["item"]):
            raise KeyError(f"cannot do {arg['item']}")
        return {"results": [arg["item"].upper()]}

    app = _map_reduce(calls, work).compile(checkpointer=saver)
    config = fresh_config()
    with pytest.raises(KeyError, match="cannot do b"):
        app.invoke({"items": ["a", "b", "c", "d"], "log": []}, config)
    state = app.get_state(config)
    assert len(state.tasks) == 4
    assert state.next == ("work",)  # only the failed one is still to run
    failed = [t for t in state.tasks if t.error is not None]
    assert len(failed) == 1
    finished = [t for t in state.tasks if t.result is not None]
    assert sorted(t.result["results"][0] for t in finished) == ["A", "C", "D"]

    broken.clear()
    result = app.invoke(None, config)
    assert result["results"] == ["A", "B", "C", "D"]
    assert [calls[f"work:{i}"] for i in "abcd"] == [1, 2, 1, 1]
    assert calls["reduce"] == 1 and calls["plan"] == 1


def test_failed_send_via_command_reruns_alone(saver: BaseCheckpointSaver) -> None:
    calls = Calls()
    broken = {"y": True}

    def plan(state: State) -> Command[Literal["work"]]:
        calls.hit("plan")
        return Command(goto=[Send("work", i) for i in state["items"]])

    def work(item: str) -> dict[str, Any]:
        calls.hit(item)
        if broken.get(item):
            raise ConnectionError("flaky")
        return {"results": [item]}

    builder = StateGraph(State)
    builder.add_node(plan)
    builder.add_node("work", work)
    builder.add_edge(START, "plan")
    app = builder.compile(checkpointer=saver)
    config = fresh_config()
    with pytest.raises(ConnectionError):
        app.invoke({"items": ["x", "y", "z"]}, config)
    broken.clear()
    assert app.invoke(None, config)["results"] == ["x", "y", "z"]
    assert (calls["plan"], calls["x"], calls["y"], calls["z"]) == (1, 1, 2, 1)


# ---------------------------------------------------------------------- async


async def test_async_map_reduce_and_failed_send(asaver: BaseCheckpointSaver) -> None:
    calls = Calls()
    broken = {"b": True}

    async def work(arg: dict[str, str]) -> dict[str, Any]:
        calls.hit(f"work:{arg['item']}")
        if broken.get(arg["item"]):
            raise KeyError("b is broken")
        return {"results": [arg["item"].upper()]}

    app = _map_reduce(calls, work).compile(checkpointer=asaver)
    config = fresh_config()
    with pytest.raises(KeyError):
        await app.ainvoke({"items": ["a", "b", "c"], "log": []}, config)
    broken.clear()
    result = await app.ainvoke(None, config)
    assert result["results"] == ["A", "B", "C"]
    assert [calls[f"work:{i}"] for i in "abc"] == [1, 2, 1]


async def test_async_command_goto(asaver: BaseCheckpointSaver) -> None:
    app = _triage_graph().compile(checkpointer=asaver, interrupt_before=["urgent"])
    config = fresh_config()
    await app.ainvoke({"vip": True, "log": []}, config)
    assert (await app.aget_state(config)).next == ("urgent",)
    assert (await app.ainvoke(None, config))["log"] == ["triage", "urgent seen=True"]


async def test_async_pending_sends_survive_interrupt_before(asaver: BaseCheckpointSaver) -> None:
    calls = Calls()
    app = _map_reduce(calls).compile(checkpointer=asaver, interrupt_before=["work"])
    config = fresh_config()
    await app.ainvoke({"items": ["a", "b"], "log": []}, config)
    assert (await app.aget_state(config)).next == ("work", "work")
    assert (await app.ainvoke(None, config))["results"] == ["A", "B"]
    assert (calls["work:a"], calls["work:b"]) == (1, 1)
