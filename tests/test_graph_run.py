"""Running graphs: supersteps, parallelism, conflicts, recursion limit, outputs, streaming,
state isolation, and flat per-step cost."""

from __future__ import annotations

import dataclasses
import itertools
import operator
import threading
from typing import Annotated, Any, TypedDict

import pydantic
import pytest

from threadline.checkpoint.base import BaseCheckpointSaver
from threadline.checkpoint.memory import InMemorySaver
from threadline.errors import GraphRecursionError, InvalidUpdateError
from threadline.graph import END, START, StateGraph


class State(TypedDict, total=False):
    messages: Annotated[list, operator.add]
    last: str
    a_saw: Any
    b_saw: Any
    items: list
    nested: dict
    count: int


def _thread(name: str) -> dict[str, Any]:
    return {"configurable": {"thread_id": name}}


def _fan_out(a: Any, b: Any, after: Any = None) -> StateGraph:
    """START -> a, START -> b (same step), then optionally both -> after."""
    builder = StateGraph(State)
    builder.add_node("a", a)
    builder.add_node("b", b)
    builder.add_edge(START, "a")
    builder.add_edge(START, "b")
    if after is not None:
        builder.add_node("after", after)
        builder.add_edge(["a", "b"], "after")
    return builder


def _chain(n: int, schema: Any = State) -> StateGraph:
    builder = StateGraph(schema)
    names = [f"n{i}" for i in range(n)]
    for name in names:
        builder.add_node(name, lambda s, _name=name: {"messages": [_name]})
    builder.add_edge(START, names[0])
    for x, y in itertools.pairwise(names):
        builder.add_edge(x, y)
    builder.add_edge(names[-1], END)
    return builder


# ---------------------------------------------------------------------- supersteps


def test_nodes_of_one_step_run_in_parallel() -> None:
    barrier = threading.Barrier(2, timeout=5)

    def a(state: State) -> dict[str, Any]:
        barrier.wait()  # raises BrokenBarrierError unless b is waiting at the same time
        return {"messages": ["a"]}

    def b(state: State) -> dict[str, Any]:
        barrier.wait()
        return {"messages": ["b"]}

    result = _fan_out(a, b).compile().invoke({"messages": []})
    assert sorted(result["messages"]) == ["a", "b"]


def test_parallel_nodes_see_the_state_of_the_step_start() -> None:
    def a(state: State) -> dict[str, Any]:
        return {"a_saw": state.get("b_saw", "nothing"), "last": "a", "messages": ["a"]}

    def b(state: State) -> dict[str, Any]:
        return {"b_saw": (state.get("a_saw", "nothing"), state.get("last")), "messages": ["b"]}

    result = _fan_out(a, b).compile().invoke({"messages": [], "last": "input"})
    assert result["a_saw"] == "nothing"
    assert result["b_saw"] == ("nothing", "input")
    assert result["last"] == "a"


def test_writes_of_a_step_apply_together() -> None:
    seen: list[Any] = []

    def after(state: State) -> dict[str, Any]:
        seen.append(sorted(state["messages"]))
        return None  # type: ignore[return-value]

    app = _fan_out(
        lambda s: {"messages": ["a"], "a_saw": 1}, lambda s: {"messages": ["b"]}, after
    ).compile()
    values = list(app.stream({"messages": []}, stream_mode="values"))
    # One state per step: nothing in between where only one of a, b had been applied; the
    # step of `after`, which wrote nothing, shows no state (as in LangGraph).
    assert values == [{"messages": []}, {"messages": ["a", "b"], "a_saw": 1}]
    assert seen == [["a", "b"]]


def test_two_writers_of_a_key_without_reducer_in_one_step() -> None:
    app = _fan_out(lambda s: {"last": "from a"}, lambda s: {"last": "from b"}).compile()
    with pytest.raises(InvalidUpdateError) as info:
        app.invoke({"messages": []})
    message = str(info.value)
    assert "'last'" in message
    assert "'a'" in message and "'b'" in message


def test_two_writers_of_a_reducer_key_in_one_step_both_count() -> None:
    app = _fan_out(lambda s: {"messages": ["a"]}, lambda s: {"messages": ["b"]}).compile()
    assert app.invoke({"messages": ["in"]})["messages"] == ["in", "a", "b"]


# ---------------------------------------------------------------------- recursion limit


def _forever(calls: list[int]) -> StateGraph:
    def spin(state: State) -> dict[str, Any]:
        calls.append(1)
        return {"count": state.get("count", 0) + 1}

    builder = StateGraph(State)
    builder.add_node("spin", spin)
    builder.add_edge(START, "spin")
    builder.add_edge("spin", "spin")
    return builder


def test_recursion_limit_default_is_langgraphs() -> None:
    """LangGraph 1.2's default is 10007 steps (it was 25 before)."""
    calls: list[int] = []
    with pytest.raises(GraphRecursionError, match="recursion_limit"):
        _forever(calls).compile().invoke({"count": 0})
    assert len(calls) == 10007


def test_recursion_limit_from_config() -> None:
    calls: list[int] = []
    with pytest.raises(GraphRecursionError, match="Recursion limit of 5 reached"):
        _forever(calls).compile().invoke({"count": 0}, {"recursion_limit": 5})
    assert len(calls) == 5


def test_graph_needing_exactly_n_steps_fits_recursion_limit_n() -> None:
    app = _chain(4).compile()
    result = app.invoke({"messages": []}, {"recursion_limit": 4})
    assert result["messages"] == ["n0", "n1", "n2", "n3"]
    with pytest.raises(GraphRecursionError):
        app.invoke({"messages": []}, {"recursion_limit": 3})


def test_recursion_limit_must_be_positive_int() -> None:
    app = _chain(1).compile()
    with pytest.raises(ValueError, match="recursion_limit"):
        app.invoke({"messages": []}, {"recursion_limit": 0})


def test_recursion_limit_counts_steps_of_this_run(saver: BaseCheckpointSaver) -> None:
    app = _chain(3).compile(checkpointer=saver)
    for _ in range(3):  # the thread grows past the limit; each run needs only 3 steps
        app.invoke({"messages": []}, {**_thread("t"), "recursion_limit": 3})
    assert len(app.get_state(_thread("t")).values["messages"]) == 9


# ---------------------------------------------------------------------- outputs


@dataclasses.dataclass
class DCState:
    messages: Annotated[list, operator.add] = dataclasses.field(default_factory=list)
    turn_count: int = 0


class PMState(pydantic.BaseModel):
    messages: Annotated[list, operator.add] = []
    turn_count: int = 0


def _respond(state: Any) -> dict[str, Any]:
    return {"messages": [f"reply {state.turn_count + 1}"], "turn_count": state.turn_count + 1}


@pytest.mark.parametrize("schema", [DCState, PMState], ids=["dataclass", "pydantic"])
def test_invoke_returns_schema_instance(schema: Any) -> None:
    builder = StateGraph(schema)
    builder.add_node("respond", _respond)
    builder.add_edge(START, "respond")
    result = builder.compile().invoke(schema(messages=["hi"]))
    assert isinstance(result, schema)
    assert result.messages == ["hi", "reply 1"]
    assert result.turn_count == 1


def test_invoke_returns_dict_for_typeddict() -> None:
    result = _chain(1).compile().invoke({"messages": []})
    assert isinstance(result, dict)
    assert result == {"messages": ["n0"]}


def test_pydantic_input_counts_only_fields_the_caller_set(saver: BaseCheckpointSaver) -> None:
    builder = StateGraph(PMState)
    builder.add_node("respond", _respond)
    builder.add_edge(START, "respond")
    app = builder.compile(checkpointer=saver)
    config = _thread("chat")
    first = app.invoke(PMState(messages=["hi"]), config)
    assert first.turn_count == 1
    # A fresh instance has turn_count=0 by default, but the caller did not set it.
    second = app.invoke(PMState(messages=["again"]), config)
    assert second.turn_count == 2
    assert second.messages == ["hi", "reply 1", "again", "reply 2"]
    # A field the caller does set counts, even when it equals the default.
    third = app.invoke(PMState(messages=["reset"], turn_count=0), config)
    assert third.turn_count == 1


def test_input_keys_not_in_schema_are_rejected() -> None:
    with pytest.raises(InvalidUpdateError, match="'bogus'"):
        _chain(1).compile().invoke({"messages": [], "bogus": 1})


# ---------------------------------------------------------------------- streaming


def test_stream_values() -> None:
    chunks = list(_chain(2).compile().stream({"messages": ["in"]}, stream_mode="values"))
    assert chunks == [
        {"messages": ["in"]},
        {"messages": ["in", "n0"]},
        {"messages": ["in", "n0", "n1"]},
    ]


def test_stream_default_mode_is_updates() -> None:
    chunks = list(_chain(1).compile().stream({"messages": []}))
    assert chunks == [{"n0": {"messages": ["n0"]}}]


def test_stream_updates() -> None:
    chunks = list(_chain(2).compile().stream({"messages": ["in"]}, stream_mode="updates"))
    assert chunks == [{"n0": {"messages": ["n0"]}}, {"n1": {"messages": ["n1"]}}]


def test_stream_updates_of_node_returning_none() -> None:
    builder = StateGraph(State)
    builder.add_node("quiet", lambda s: None)
    builder.add_edge(START, "quiet")
    assert list(builder.compile().stream({"count": 1}, stream_mode="updates")) == [{"quiet": None}]


def test_stream_checkpoints(saver: BaseCheckpointSaver) -> None:
    app = _chain(2).compile(checkpointer=saver)
    config = _thread("s")
    chunks = list(app.stream({"messages": ["in"]}, config, stream_mode="checkpoints"))
    history = list(reversed(list(app.get_state_history(config))))
    assert len(chunks) == len(history) == 4
    for chunk, snap in zip(chunks, history):
        assert chunk["config"] == snap.config
        assert chunk["parent_config"] == snap.parent_config
        assert chunk["values"] == snap.values
        assert chunk["metadata"]["source"] == snap.metadata["source"]
        assert chunk["metadata"]["step"] == snap.metadata["step"]
        assert tuple(chunk["next"]) == snap.next
    assert [c["values"].get("messages") for c in chunks] == [
        [],  # a reducer key never written reads as its empty value, as in LangGraph
        ["in"],
        ["in", "n0"],
        ["in", "n0", "n1"],
    ]
    assert [c["next"] for c in chunks] == [["__start__"], ["n0"], ["n1"], []]
    assert [c["metadata"]["source"] for c in chunks] == ["input", "loop", "loop", "loop"]
    assert chunks[0]["parent_config"] is None


def test_stream_several_modes_yields_mode_chunk_pairs(saver: BaseCheckpointSaver) -> None:
    app = _chain(2).compile(checkpointer=saver)
    config = _thread("m")
    chunks = list(
        app.stream({"messages": ["in"]}, config, stream_mode=["values", "updates", "checkpoints"])
    )
    assert [mode for mode, _ in chunks] == [
        "checkpoints",
        "values",
        "checkpoints",
        "updates",
        "values",
        "checkpoints",
        "updates",
        "values",
        "checkpoints",
    ]
    plain = [(m, c) for m, c in chunks if m != "checkpoints"]
    assert plain == [
        ("values", {"messages": ["in"]}),
        ("updates", {"n0": {"messages": ["n0"]}}),
        ("values", {"messages": ["in", "n0"]}),
        ("updates", {"n1": {"messages": ["n1"]}}),
        ("values", {"messages": ["in", "n0", "n1"]}),
    ]
    ids = [c["config"]["configurable"]["checkpoint_id"] for m, c in chunks if m == "checkpoints"]
    assert ids == [
        s.config["configurable"]["checkpoint_id"]
        for s in reversed(list(app.get_state_history(config)))
    ]


def test_stream_two_modes_without_checkpointer() -> None:
    chunks = list(_chain(1).compile().stream({"messages": []}, stream_mode=["updates", "values"]))
    assert chunks == [
        ("values", {"messages": []}),
        ("updates", {"n0": {"messages": ["n0"]}}),
        ("values", {"messages": ["n0"]}),
    ]


def test_unknown_stream_mode() -> None:
    with pytest.raises(ValueError, match="stream_mode"):
        list(_chain(1).compile().stream({"messages": []}, stream_mode="everything"))


# ---------------------------------------------------------------------- isolation


def test_mutating_state_in_place_changes_no_checkpoint_and_no_sibling(
    saver: BaseCheckpointSaver,
) -> None:
    def a(state: State) -> dict[str, Any]:
        state["items"].append("mutated by a")
        state["nested"]["inner"]["k"] = "mutated by a"
        state["messages"].append("mutated by a")
        return {"a_saw": [list(state["items"]), state["nested"]["inner"]["k"]]}

    def b(state: State) -> dict[str, Any]:
        return {"b_saw": [list(state["items"]), state["nested"]["inner"]["k"]]}

    def after(state: State) -> dict[str, Any]:
        state["items"].append("mutated by after")
        state["nested"]["inner"].clear()
        return {"messages": ["after"]}

    app = _fan_out(a, b, after).compile(checkpointer=saver)
    config = _thread("iso")
    original = {"items": ["x"], "nested": {"inner": {"k": "v"}}, "messages": ["m"]}
    result = app.invoke(
        {"items": ["x"], "nested": {"inner": {"k": "v"}}, "messages": ["m"]}, config
    )
    assert result["a_saw"] == [["x", "mutated by a"], "mutated by a"]
    assert result["b_saw"] == [["x"], "v"]  # b ran beside a and saw none of a's mutations
    assert result["items"] == ["x"]
    assert result["nested"] == {"inner": {"k": "v"}}
    assert result["messages"] == ["m", "after"]

    history = list(app.get_state_history(config))[:-1]  # the input checkpoint holds nothing
    assert len(history) == 3
    for snap in history:
        assert snap.values["items"] == original["items"]
        assert snap.values["nested"] == original["nested"]
        assert snap.values["messages"][0] == "m"
        assert "mutated by a" not in snap.values["messages"]

    # Mutating what invoke returned or get_state gave changes nothing stored either.
    result["items"].append("caller")
    app.get_state(config).values["nested"]["inner"]["k"] = "caller"
    assert app.get_state(config).values["items"] == ["x"]
    assert app.get_state(config).values["nested"] == {"inner": {"k": "v"}}


class ModelState(pydantic.BaseModel):
    items: list = []
    nested: dict = {}
    log: Annotated[list, operator.add] = []


def test_mutating_model_state_in_place_changes_no_checkpoint(saver: BaseCheckpointSaver) -> None:
    def mutate(state: ModelState) -> dict[str, Any]:
        state.items.append("mutated")
        state.nested["inner"]["k"] = "mutated"
        state.log.append("mutated")
        return {"log": ["mutate"]}

    def check(state: ModelState) -> dict[str, Any]:
        return {"log": [f"check saw {state.items} {state.nested}"]}

    builder = StateGraph(ModelState)
    builder.add_node("mutate", mutate)
    builder.add_node("check", check)
    builder.add_edge(START, "mutate")
    builder.add_edge("mutate", "check")
    app = builder.compile(checkpointer=saver)
    config = _thread("model")
    result = app.invoke(ModelState(items=["x"], nested={"inner": {"k": "v"}}), config)
    assert result.log == ["mutate", "check saw ['x'] {'inner': {'k': 'v'}}"]
    for snap in list(app.get_state_history(config))[:-1]:  # not the input checkpoint
        assert snap.values.items == ["x"]
        assert snap.values.nested == {"inner": {"k": "v"}}
        assert "mutated" not in snap.values.log


# ---------------------------------------------------------------------- flat per-step cost


def test_bytes_written_per_turn_do_not_grow_with_thread_length() -> None:
    saver = InMemorySaver()

    def agent(state: State) -> dict[str, Any]:
        return {"messages": [f"agent says something about turn {len(state['messages'])}"]}

    def tool(state: State) -> dict[str, Any]:
        return {"messages": [f"tool result for turn {len(state['messages'])}"]}

    builder = StateGraph(State)
    builder.add_node("agent", agent)
    builder.add_node("tool", tool)
    builder.add_edge(START, "agent")
    builder.add_edge("agent", "tool")
    app = builder.compile(checkpointer=saver)
    config = _thread("long")

    per_turn: list[int] = []
    for turn in range(200):
        before = saver.stored_bytes()
        app.invoke({"messages": [f"user message number {turn}"]}, config)
        per_turn.append(saver.stored_bytes() - before)

    assert len(app.get_state(config).values["messages"]) == 600
    # Now and then a turn writes a full snapshot of the list (the encoding rule amortizes it),
    # so compare the typical (median) turn around turn 10 and around turn 200 ...
    early = sorted(per_turn[5:16])[5]
    late = sorted(per_turn[189:200])[5]
    assert late <= 2 * early, (early, late, per_turn)
    # ... and bound the amortized cost: rewriting the whole list every step would cost about
    # 100x this over 200 turns.
    assert sum(per_turn) <= 4 * 200 * early, (sum(per_turn), early)
