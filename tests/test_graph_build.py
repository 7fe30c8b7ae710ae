"""Building graphs: schemas, nodes, edges, joins, routers, compile-time validation, drawing.

These tests run graphs without a checkpointer where none is needed; everything that stores
state lives in ``test_graph_threads.py`` and runs on every backend.
"""

from __future__ import annotations

import dataclasses
import operator
from typing import Annotated, Any, TypedDict

import pydantic
import pytest

from threadline.errors import GraphValidationError, InvalidUpdateError, ThreadlineError
from threadline.graph import END, START, StateGraph

# ---------------------------------------------------------------------- schemas


class TD(TypedDict, total=False):
    messages: Annotated[list, operator.add]
    last: str
    count: int


@dataclasses.dataclass
class DC:
    messages: Annotated[list, operator.add] = dataclasses.field(default_factory=list)
    last: str = ""
    count: int = 0


class PM(pydantic.BaseModel):
    messages: Annotated[list, operator.add] = []
    last: str = ""
    count: int = 0


def _two_writers(schema: Any) -> StateGraph:
    """a -> b, each appending to ``messages`` and overwriting ``last``."""

    def a(state: Any) -> dict[str, Any]:
        return {"messages": ["a"], "last": "a"}

    def b(state: Any) -> dict[str, Any]:
        return {"messages": ["b"], "last": "b"}

    builder = StateGraph(schema)
    builder.add_node("a", a)
    builder.add_node("b", b)
    builder.add_edge(START, "a")
    builder.add_edge("a", "b")
    builder.add_edge("b", END)
    return builder


def _get(state: Any, key: str) -> Any:
    return state[key] if isinstance(state, dict) else getattr(state, key)


@pytest.mark.parametrize(
    ("schema", "make_input"),
    [
        (TD, lambda: {"messages": ["in"], "last": "in"}),
        (DC, lambda: DC(messages=["in"], last="in")),
        (PM, lambda: PM(messages=["in"], last="in")),
    ],
    ids=["typeddict", "dataclass", "pydantic"],
)
def test_schema_kinds_reduce_and_overwrite(schema: Any, make_input: Any) -> None:
    app = _two_writers(schema).compile()
    result = app.invoke(make_input())
    assert _get(result, "messages") == ["in", "a", "b"]  # operator.add accumulates
    assert _get(result, "last") == "b"  # no reducer: last value wins
    if schema is TD:
        assert isinstance(result, dict)
    else:
        assert isinstance(result, schema)
        assert result.messages == ["in", "a", "b"]


def test_schema_must_be_a_state_class() -> None:
    with pytest.raises(GraphValidationError, match="TypedDict, a dataclass or a pydantic"):
        StateGraph(int)


# ---------------------------------------------------------------------- nodes


def test_add_node_with_name_and_with_function() -> None:
    def named_by_function(state: TD) -> dict[str, Any]:
        return {"messages": ["fn"]}

    def other(state: TD) -> dict[str, Any]:
        return {"messages": ["explicit"]}

    builder = StateGraph(TD)
    builder.add_node(named_by_function)
    builder.add_node("explicit_name", other)
    builder.add_edge(START, "named_by_function")
    builder.add_edge("named_by_function", "explicit_name")
    app = builder.compile()
    assert list(app.get_graph().nodes) == [
        "__start__",
        "named_by_function",
        "explicit_name",
        "__end__",
    ]
    assert app.invoke({"messages": []})["messages"] == ["fn", "explicit"]


def test_add_node_lambda_needs_a_name() -> None:
    builder = StateGraph(TD)
    with pytest.raises(GraphValidationError, match="add_node\\('name', fn\\)"):
        builder.add_node(lambda s: None)


def test_node_signatures_state_and_state_config() -> None:
    seen: dict[str, Any] = {}

    def state_only(state: TD) -> dict[str, Any]:
        seen["state_only"] = dict(state)
        return {"messages": ["s"]}

    def with_config(state: TD, config: dict[str, Any]) -> dict[str, Any]:
        seen["config"] = config
        return {"messages": ["c"]}

    builder = StateGraph(TD)
    builder.add_node("state_only", state_only)
    builder.add_node("with_config", with_config)
    builder.add_edge(START, "state_only")
    builder.add_edge("state_only", "with_config")
    result = builder.compile().invoke(
        {"messages": ["in"]}, {"configurable": {"user": "ada"}, "tags": ["t"]}
    )
    assert result["messages"] == ["in", "s", "c"]
    assert seen["state_only"] == {"messages": ["in"]}
    assert seen["config"]["configurable"]["user"] == "ada"
    assert seen["config"]["tags"] == ["t"]


def test_second_parameter_with_default_is_not_the_config() -> None:
    builder = StateGraph(TD)
    for name in ("a", "b"):
        builder.add_node(name, lambda s, _name=name: {"messages": [_name]})
    builder.add_node("c", lambda s, config=None: {"last": config["configurable"]["who"]})
    builder.add_edge(START, "a")
    builder.add_edge("a", "b")
    builder.add_edge("b", "c")
    result = builder.compile().invoke({"messages": []}, {"configurable": {"who": "me"}})
    assert result == {"messages": ["a", "b"], "last": "me"}


def test_sync_graph_refuses_async_node() -> None:
    async def slow(state: TD) -> dict[str, Any]:
        return {"messages": ["x"]}

    builder = StateGraph(TD)
    builder.add_node("slow", slow)
    builder.add_edge(START, "slow")
    with pytest.raises(ThreadlineError, match="ainvoke"):
        builder.compile().invoke({"messages": []})


def test_node_returning_none_changes_nothing() -> None:
    calls = []

    def noop(state: TD) -> None:
        calls.append(1)

    builder = StateGraph(TD)
    builder.add_node("noop", noop)
    builder.add_edge(START, "noop")
    assert builder.compile().invoke({"messages": ["x"], "last": "y"}) == {
        "messages": ["x"],
        "last": "y",
    }
    assert calls == [1]


def test_node_returning_partial_dict_keeps_other_keys() -> None:
    builder = StateGraph(TD)
    builder.add_node("set_count", lambda s: {"count": 7})
    builder.add_edge(START, "set_count")
    # messages (a reducer key never written) reads as its empty list, as in LangGraph
    out = builder.compile().invoke({"last": "kept", "count": 1})
    assert out == {"last": "kept", "count": 7, "messages": []}


def test_node_returning_unknown_key_is_invalid_update() -> None:
    builder = StateGraph(TD)
    builder.add_node("bad", lambda s: {"nope": 1})
    builder.add_edge(START, "bad")
    with pytest.raises(InvalidUpdateError, match="'nope'"):
        builder.compile().invoke({"count": 1})


def test_node_returning_wrong_type_is_invalid_update() -> None:
    builder = StateGraph(TD)
    builder.add_node("bad", lambda s: 42)
    builder.add_edge(START, "bad")
    with pytest.raises(InvalidUpdateError, match="node 'bad' returned int"):
        builder.compile().invoke({"count": 1})


@pytest.mark.parametrize("schema", [DC, PM], ids=["dataclass", "pydantic"])
def test_node_returning_new_schema_instance(schema: Any) -> None:
    def bump(state: Any) -> Any:
        return schema(messages=[], count=state.count + 10, last=state.last)

    builder = StateGraph(schema)
    builder.add_node("bump", bump)
    builder.add_edge(START, "bump")
    result = builder.compile().invoke(schema(messages=["m"], count=1, last="l"))
    # Only what changed is written: the unchanged list is not appended to itself.
    assert result.messages == ["m"]
    assert result.count == 11
    assert result.last == "l"


@pytest.mark.parametrize("schema", [DC, PM], ids=["dataclass", "pydantic"])
def test_node_mutating_and_returning_its_state_instance(schema: Any) -> None:
    def bump(state: Any) -> Any:
        state.count += 1
        state.last = "bumped"
        return state

    builder = StateGraph(schema)
    builder.add_node("bump", bump)
    builder.add_edge(START, "bump")
    result = builder.compile().invoke(schema(messages=["m"], count=1))
    assert (result.count, result.last, result.messages) == (2, "bumped", ["m"])


def test_typeddict_node_returning_full_state_dict() -> None:
    def whole(state: TD) -> TD:
        return {"messages": ["w"], "last": "w", "count": 3}

    builder = StateGraph(TD)
    builder.add_node("whole", whole)
    builder.add_edge(START, "whole")
    assert builder.compile().invoke({"messages": ["in"]}) == {
        "messages": ["in", "w"],
        "last": "w",
        "count": 3,
    }


# ---------------------------------------------------------------------- edges and joins


def _recorder(name: str, calls: list[str]) -> Any:
    def node(state: TD) -> dict[str, Any]:
        calls.append(name)
        return {"messages": [name]}

    return node


def test_add_edge_chain_runs_in_order() -> None:
    calls: list[str] = []
    builder = StateGraph(TD)
    for name in "abc":
        builder.add_node(name, _recorder(name, calls))
    builder.add_edge(START, "a")
    builder.add_edge("a", "b")
    builder.add_edge("b", "c")
    builder.add_edge("c", END)
    assert builder.compile().invoke({"messages": []})["messages"] == ["a", "b", "c"]
    assert calls == ["a", "b", "c"]


def test_join_waits_for_both_sources_in_same_step() -> None:
    calls: list[str] = []
    seen: list[list[str]] = []

    def join(state: TD) -> dict[str, Any]:
        calls.append("join")
        seen.append(list(state["messages"]))
        return {"messages": ["join"]}

    builder = StateGraph(TD)
    builder.add_node("a", _recorder("a", calls))
    builder.add_node("b", _recorder("b", calls))
    builder.add_node("join", join)
    builder.add_edge(START, "a")
    builder.add_edge(START, "b")
    builder.add_edge(["a", "b"], "join")
    result = builder.compile().invoke({"messages": []})
    assert calls.count("join") == 1
    assert sorted(seen[0]) == ["a", "b"]
    assert result["messages"][-1] == "join"


def test_join_waits_for_sources_finishing_in_different_steps() -> None:
    calls: list[str] = []
    seen: list[list[str]] = []

    def join(state: TD) -> dict[str, Any]:
        calls.append("join")
        seen.append(list(state["messages"]))
        return {"messages": ["join"]}

    builder = StateGraph(TD)
    builder.add_node("a", _recorder("a", calls))  # finishes in step 0
    builder.add_node("x", _recorder("x", calls))
    builder.add_node("b", _recorder("b", calls))  # finishes in step 1
    builder.add_node("join", join)
    builder.add_edge(START, "a")
    builder.add_edge(START, "x")
    builder.add_edge("x", "b")
    builder.add_edge(["a", "b"], "join")
    app = builder.compile()
    chunks = list(app.stream({"messages": []}, stream_mode="updates"))
    assert chunks == [
        {"a": {"messages": ["a"]}},
        {"x": {"messages": ["x"]}},
        {"b": {"messages": ["b"]}},
        {"join": {"messages": ["join"]}},
    ]
    assert calls.count("join") == 1
    assert seen == [["a", "x", "b"]]

    # A second run on a fresh graph state waits again: the join's progress was reset.
    calls.clear()
    seen.clear()
    app.invoke({"messages": []})
    assert calls.count("join") == 1


def test_join_does_not_fire_on_one_source() -> None:
    calls: list[str] = []
    builder = StateGraph(TD)
    builder.add_node("a", _recorder("a", calls))
    builder.add_node("b", _recorder("b", calls))
    builder.add_node("join", _recorder("join", calls))
    builder.add_edge(START, "a")
    builder.add_conditional_edges("a", lambda s: END, [END, "b"])
    builder.add_edge(["a", "b"], "join")
    builder.compile().invoke({"messages": []})
    assert calls == ["a"]


# ---------------------------------------------------------------------- conditional edges


def _router_graph(router: Any, path_map: Any = None) -> tuple[StateGraph, list[str]]:
    calls: list[str] = []
    builder = StateGraph(TD)
    for name in ("start", "left", "right"):
        builder.add_node(name, _recorder(name, calls))
    builder.add_edge(START, "start")
    builder.add_conditional_edges("start", router, path_map)
    return builder, calls


def test_router_returning_a_name() -> None:
    builder, calls = _router_graph(lambda s: "right" if s["last"] == "go right" else "left")
    app = builder.compile()
    assert app.invoke({"messages": [], "last": "go right"})["messages"] == ["start", "right"]
    assert app.invoke({"messages": [], "last": "other"})["messages"] == ["start", "left"]
    assert calls == ["start", "right", "start", "left"]


def test_router_returning_end() -> None:
    builder, calls = _router_graph(lambda s: END, ["left", "right", END])
    assert builder.compile().invoke({"messages": []})["messages"] == ["start"]
    assert calls == ["start"]


def test_router_returning_a_list_runs_all_in_one_step() -> None:
    builder, _calls = _router_graph(lambda s: ["left", "right"], ["left", "right"])
    chunks = list(builder.compile().stream({"messages": []}, stream_mode="updates"))
    assert chunks == [
        {"start": {"messages": ["start"]}},
        {"left": {"messages": ["left"]}},
        {"right": {"messages": ["right"]}},
    ]
    values = list(builder.compile().stream({"messages": []}, stream_mode="values"))
    # left and right ran in the same step: one state after both.
    assert [v["messages"] for v in values] == [[], ["start"], ["start", "left", "right"]]


def test_router_sees_the_nodes_own_write() -> None:
    def route(state: TD) -> str:
        return "right" if state["messages"] == ["start"] else "left"

    builder, _ = _router_graph(route, ["left", "right"])
    assert builder.compile().invoke({"messages": []})["messages"] == ["start", "right"]


def test_path_map_as_dict() -> None:
    builder, _calls = _router_graph(lambda s: s["last"], {"L": "left", "R": "right", "stop": END})
    app = builder.compile()
    assert app.invoke({"messages": [], "last": "L"})["messages"] == ["start", "left"]
    assert app.invoke({"messages": [], "last": "R"})["messages"] == ["start", "right"]
    assert app.invoke({"messages": [], "last": "stop"})["messages"] == ["start"]


def test_path_map_rejects_unmapped_router_value() -> None:
    builder, _ = _router_graph(lambda s: "nowhere", {"L": "left", "R": "right"})
    with pytest.raises(GraphValidationError, match="'nowhere'"):
        builder.compile().invoke({"messages": []})


def test_path_map_as_list() -> None:
    builder, _ = _router_graph(lambda s: s["last"], ["left", "right"])
    assert builder.compile().invoke({"messages": [], "last": "left"})["messages"] == [
        "start",
        "left",
    ]


def test_router_without_path_map_to_unknown_node_is_an_error() -> None:
    builder, _ = _router_graph(lambda s: "missing")
    with pytest.raises(InvalidUpdateError, match="'missing'"):
        builder.compile().invoke({"messages": []})


def test_router_taking_config() -> None:
    def route(state: TD, config: dict[str, Any]) -> str:
        return config["configurable"]["side"]

    builder, _ = _router_graph(route, ["left", "right"])
    result = builder.compile().invoke({"messages": []}, {"configurable": {"side": "right"}})
    assert result["messages"] == ["start", "right"]


def test_conditional_loop() -> None:
    def count(state: TD) -> dict[str, Any]:
        return {"count": state.get("count", 0) + 1}

    builder = StateGraph(TD)
    builder.add_node("count", count)
    builder.add_edge(START, "count")
    builder.add_conditional_edges(
        "count", lambda s: "count" if s["count"] < 5 else END, ["count", END]
    )
    assert builder.compile().invoke({"count": 0}) == {"count": 5, "messages": []}


# ---------------------------------------------------------------------- shortcuts


def test_set_entry_and_finish_point() -> None:
    calls: list[str] = []
    builder = StateGraph(TD)
    builder.add_node("a", _recorder("a", calls))
    builder.add_node("b", _recorder("b", calls))
    builder.set_entry_point("a")
    builder.add_edge("a", "b")
    builder.set_finish_point("b")
    assert builder.compile().invoke({"messages": []})["messages"] == ["a", "b"]
    assert "__start__ --> a" in builder.compile().get_graph().draw_mermaid()
    assert "b --> __end__" in builder.compile().get_graph().draw_mermaid()


def test_add_sequence_with_functions_and_pairs() -> None:
    calls: list[str] = []

    def first(state: TD) -> dict[str, Any]:
        calls.append("first")
        return {"messages": ["first"]}

    builder = StateGraph(TD)
    builder.add_sequence([first, ("second", _recorder("second", calls))])
    builder.add_node("third", _recorder("third", calls))
    builder.add_edge(START, "first")
    builder.add_edge("second", "third")
    assert builder.compile().invoke({"messages": []})["messages"] == ["first", "second", "third"]
    assert calls == ["first", "second", "third"]


def test_add_sequence_needs_nodes() -> None:
    with pytest.raises(GraphValidationError):
        StateGraph(TD).add_sequence([])


# ---------------------------------------------------------------------- compile errors


def _noop(state: Any) -> None:
    return None


def test_compile_rejects_edge_to_unknown_node() -> None:
    builder = StateGraph(TD)
    builder.add_node("a", _noop)
    builder.add_edge(START, "a")
    builder.add_edge("a", "ghost")
    with pytest.raises(GraphValidationError, match=r"'a' -> 'ghost'.*unknown node 'ghost'"):
        builder.compile()


def test_compile_rejects_edge_from_unknown_node() -> None:
    builder = StateGraph(TD)
    builder.add_node("a", _noop)
    builder.add_edge(START, "a")
    builder.add_edge("ghost", "a")
    with pytest.raises(GraphValidationError, match="unknown node 'ghost'"):
        builder.compile()


def test_compile_rejects_join_with_unknown_node() -> None:
    builder = StateGraph(TD)
    builder.add_node("a", _noop)
    builder.add_node("c", _noop)
    builder.add_edge(START, "a")
    builder.add_edge(["a", "ghost"], "c")
    with pytest.raises(GraphValidationError, match="unknown node 'ghost'"):
        builder.compile()


def test_compile_rejects_path_map_with_unknown_node() -> None:
    builder = StateGraph(TD)
    builder.add_node("a", _noop)
    builder.add_edge(START, "a")
    builder.add_conditional_edges("a", lambda s: "x", {"x": "ghost"})
    with pytest.raises(GraphValidationError, match="unknown node 'ghost'"):
        builder.compile()


def test_compile_rejects_unreachable_node() -> None:
    builder = StateGraph(TD)
    builder.add_node("a", _noop)
    builder.add_node("island", _noop)
    builder.add_edge(START, "a")
    with pytest.raises(GraphValidationError, match="'island' is not reachable"):
        builder.compile()


def test_compile_rejects_graph_without_entry_point() -> None:
    builder = StateGraph(TD)
    builder.add_node("a", _noop)
    builder.add_node("b", _noop)
    builder.add_edge("a", "b")
    with pytest.raises(GraphValidationError, match="no entry point"):
        builder.compile()


@pytest.mark.parametrize("name", [START, END, "__custom__", "ns:node", "a|b"])
def test_reserved_node_names(name: str) -> None:
    with pytest.raises(GraphValidationError, match=repr(name).replace("|", "\\|")):
        StateGraph(TD).add_node(name, _noop)


def test_duplicate_node() -> None:
    builder = StateGraph(TD)
    builder.add_node("a", _noop)
    with pytest.raises(GraphValidationError, match="'a' already exists"):
        builder.add_node("a", _noop)


def test_edge_from_end_and_to_start_are_rejected() -> None:
    builder = StateGraph(TD)
    with pytest.raises(GraphValidationError, match="END"):
        builder.add_edge(END, "a")
    with pytest.raises(GraphValidationError, match="START"):
        builder.add_edge("a", START)


def test_every_error_derives_from_threadline_error() -> None:
    import inspect

    from threadline import errors

    public = [
        obj
        for name, obj in vars(errors).items()
        if inspect.isclass(obj) and issubclass(obj, Exception) and name in errors.__all__
    ]
    # LangGraph's helpers for messages, and its test for an answer interrupt() rejected
    not_errors = {"ErrorCode", "create_error_message", "is_invalid_resume"}
    assert len(public) == len(set(errors.__all__) - not_errors)
    for cls in public:
        assert issubclass(cls, errors.ThreadlineError), cls


# ---------------------------------------------------------------------- drawing


def test_draw_mermaid_has_nodes_and_edges() -> None:
    builder = StateGraph(TD)
    for name in ("plan", "act", "review", "fan_a", "fan_b", "merge"):
        builder.add_node(name, _noop)
    builder.add_edge(START, "plan")
    builder.add_edge("plan", "act")
    builder.add_conditional_edges("act", lambda s: "review", {"ok": "review", "again": "plan"})
    builder.add_edge("review", "fan_a")
    builder.add_edge("review", "fan_b")
    builder.add_edge(["fan_a", "fan_b"], "merge")
    builder.add_edge("merge", END)
    text = builder.compile().get_graph().draw_mermaid()
    assert "graph TD;" in text
    for name in ("plan", "act", "review", "fan_a", "fan_b", "merge"):
        assert f"{name}({name})" in text
    for edge in (
        "__start__ --> plan;",
        "plan --> act;",
        "review --> fan_a;",
        "review --> fan_b;",
        "fan_a --> merge;",
        "fan_b --> merge;",
        "merge --> __end__;",
    ):
        assert edge in text
    assert "act -. &nbsp;ok&nbsp; .-> review;" in text
    assert "act -. &nbsp;again&nbsp; .-> plan;" in text
