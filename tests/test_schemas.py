"""State schemas as LangGraph has them: input and output schemas, private state declared by a
node's own input annotation, deferred nodes, reducer keys read as their empty value, managed
values, ``Command.PARENT`` destinations, and pydantic input validation."""

from __future__ import annotations

import operator
from typing import Annotated, Any, Literal, Optional, TypedDict

import pydantic
import pytest
from counting import fresh_config

from threadline.checkpoint.base import BaseCheckpointSaver
from threadline.errors import GraphRecursionError, GraphValidationError, InvalidUpdateError
from threadline.graph import END, START, StateGraph
from threadline.managed import IsLastStep, RemainingSteps
from threadline.types import Command, interrupt

# ---------------------------------------------------------------------- input / output


class In(TypedDict):
    question: str


class Out(TypedDict):
    answer: str


class Overall(In, Out):
    notes: Annotated[list[str], operator.add]


def _qa(**schemas: Any) -> StateGraph:
    def answer(state: Overall) -> dict[str, Any]:
        return {"answer": f"re: {state['question']}", "notes": ["answered"]}

    builder = StateGraph(Overall, **schemas)
    builder.add_node(answer)
    builder.add_edge(START, "answer")
    builder.add_edge("answer", END)
    return builder


def test_output_schema_filters_what_invoke_returns(saver: BaseCheckpointSaver) -> None:
    app = _qa(input_schema=In, output_schema=Out).compile(checkpointer=saver)
    config = fresh_config()
    assert app.invoke({"question": "why"}, config) == {"answer": "re: why"}
    # The thread's state keeps every key of the state schema.
    assert app.get_state(config).values == {
        "question": "why",
        "answer": "re: why",
        "notes": ["answered"],
    }


def test_input_schema_drops_other_state_keys_and_old_names_work() -> None:
    app = _qa(input=In, output=Out).compile()
    assert app.invoke({"question": "q", "notes": ["ignored"]}) == {"answer": "re: q"}
    with pytest.raises(InvalidUpdateError, match="not in the state schema"):
        app.invoke({"question": "q", "nope": 1})


def test_a_pydantic_input_schema_validates_the_input() -> None:
    class Ask(pydantic.BaseModel):
        question: str

    app = _qa(input_schema=Ask, output_schema=Out).compile()
    assert app.invoke(Ask(question="m")) == {"answer": "re: m"}
    with pytest.raises(InvalidUpdateError, match="field 'question'"):
        app.invoke({"question": ["not", "text"]})


# ---------------------------------------------------------------------- private state


class Public(TypedDict, total=False):
    topic: str
    result: str


class Scratch(TypedDict):
    topic: str
    draft: str  # in no other schema: private to the nodes that declare it


def _private_graph(saver: BaseCheckpointSaver | None = None, *, pause: bool = False) -> Any:
    def plan(state: Public) -> Scratch:
        return {"topic": state["topic"], "draft": f"draft on {state['topic']}"}

    def finish(state: Scratch) -> dict[str, Any]:
        if pause:
            interrupt("continue?")
        assert set(state) == {"topic", "draft"}  # only its own schema's keys
        return {"result": state["draft"].upper()}

    builder = StateGraph(Public)
    builder.add_node(plan)
    builder.add_node(finish)
    builder.add_edge(START, "plan")
    builder.add_edge("plan", "finish")
    return builder.compile(checkpointer=saver)


def test_private_keys_pass_between_nodes_and_stay_out_of_the_output() -> None:
    assert _private_graph().invoke({"topic": "owls"}) == {
        "topic": "owls",
        "result": "DRAFT ON OWLS",
    }


def test_private_keys_are_saved_for_a_resume(saver: BaseCheckpointSaver) -> None:
    app = _private_graph(saver, pause=True)
    config = fresh_config()
    app.invoke({"topic": "bats"}, config)
    # The thread's state shows private keys too (as LangGraph's does); the output does not.
    assert app.get_state(config).values == {"topic": "bats", "draft": "draft on bats"}
    assert app.invoke(Command(resume="yes"), config)["result"] == "DRAFT ON BATS"


def test_a_node_input_schema_by_argument_and_conflicting_reducers() -> None:
    seen: list[dict[str, Any]] = []

    def reads(state: Any) -> None:
        seen.append(dict(state))

    builder = StateGraph(Public)
    builder.add_node("reads", reads, input_schema=In)
    builder.add_edge(START, "reads")
    builder.compile().invoke({"topic": "t"})
    assert seen == [{}]  # In's only key, question, was never written

    class Clash(TypedDict):
        notes: Annotated[list[str], operator.or_]

    builder = StateGraph(Overall)
    with pytest.raises(GraphValidationError, match="reducer"):
        builder.add_node("clash", reads, input_schema=Clash)


# ---------------------------------------------------------------------- defer


class Fan(TypedDict):
    log: Annotated[list[str], operator.add]


def _fan_out(saver: BaseCheckpointSaver | None = None, *, pause: bool = False) -> Any:
    def step(name: str) -> Any:
        def run(state: Fan) -> dict[str, Any]:
            if pause and name == "b2":
                interrupt("wait")
            return {"log": [name]}

        return run

    builder = StateGraph(Fan)
    for name in ("a", "b1", "b2"):
        builder.add_node(name, step(name))
    builder.add_node("summary", lambda s: {"log": [f"summary of {len(s['log'])}"]}, defer=True)
    builder.add_edge(START, "a")
    builder.add_edge(START, "b1")
    builder.add_edge("b1", "b2")
    builder.add_edge("a", "summary")
    builder.add_edge("b2", "summary")
    builder.add_edge("summary", END)
    return builder.compile(checkpointer=saver)


def test_a_deferred_node_runs_once_when_nothing_else_is_left() -> None:
    assert _fan_out().invoke({"log": []})["log"] == ["a", "b1", "b2", "summary of 3"]


def test_a_deferred_node_waits_across_a_pause(saver: BaseCheckpointSaver) -> None:
    app = _fan_out(saver, pause=True)
    config = fresh_config()
    app.invoke({"log": []}, config)
    assert app.get_state(config).next == ("b2",)
    assert app.get_state(config).values == {"log": ["a", "b1"]}
    out = app.invoke(Command(resume="go"), config)
    assert out["log"] == ["a", "b1", "b2", "summary of 3"]


async def test_a_deferred_node_async(asaver: BaseCheckpointSaver) -> None:
    out = await _fan_out(asaver).ainvoke({"log": []}, fresh_config())
    assert out["log"] == ["a", "b1", "b2", "summary of 3"]


# ---------------------------------------------------------------------- empty values


class Empties(TypedDict, total=False):
    items: Annotated[list[str], operator.add]
    total: Annotated[int, operator.add]
    tags: Annotated[set[str], operator.or_]
    maybe: Annotated[Optional[list[str]], operator.add]  # noqa: UP045 - the case under test
    plain: list[str]


def test_reducer_keys_never_written_read_as_empty_values(saver: BaseCheckpointSaver) -> None:
    seen: list[dict[str, Any]] = []

    def look(state: Empties) -> dict[str, Any]:
        seen.append(dict(state))
        return {"total": 2}

    builder = StateGraph(Empties)
    builder.add_node(look)
    builder.add_edge(START, "look")
    app = builder.compile(checkpointer=saver)
    config = fresh_config()
    out = app.invoke({}, config)
    assert seen == [{"items": [], "total": 0, "tags": set()}]
    assert out == {"items": [], "total": 2, "tags": set()}
    assert app.get_state(config).values == out


# ---------------------------------------------------------------------- managed values


class Looping(TypedDict, total=False):
    log: Annotated[list[Any], operator.add]
    remaining: RemainingSteps
    last: IsLastStep


def _looping(saver: BaseCheckpointSaver | None = None) -> Any:
    def work(state: Looping) -> dict[str, Any]:
        return {"log": [(state["remaining"], state["last"])], "remaining": 99}

    def again(state: Looping) -> Literal["work", "__end__"]:
        return END if state["last"] else "work"

    builder = StateGraph(Looping)
    builder.add_node(work)
    builder.add_edge(START, "work")
    builder.add_conditional_edges("work", again)
    return builder.compile(checkpointer=saver)


def test_managed_values_count_down_to_the_recursion_limit(saver: BaseCheckpointSaver) -> None:
    app = _looping(saver)
    config = {**fresh_config(), "recursion_limit": 4}
    out = app.invoke({"log": []}, config)
    assert out == {"log": [(3, False), (2, False), (1, True)]}
    # Computed, never stored: the thread holds only log; the next run counts afresh.
    assert app.get_state(config).values == out
    again = app.invoke({"log": []}, {**config, "recursion_limit": 3})
    assert again["log"][-2:] == [(2, False), (1, True)]


def test_remaining_steps_reaches_zero_on_the_last_allowed_step() -> None:
    seen: list[int] = []

    def spin(state: Looping) -> None:
        seen.append(state["remaining"])

    builder = StateGraph(Looping)
    builder.add_node(spin)
    builder.add_edge(START, "spin")
    builder.add_edge("spin", "spin")
    with pytest.raises(GraphRecursionError):
        builder.compile().invoke({}, {"recursion_limit": 3})
    assert seen == [2, 1, 0]


def test_managed_keys_are_refused_in_input_and_output_schemas() -> None:
    class BadOut(TypedDict):
        last: IsLastStep

    with pytest.raises(GraphValidationError, match="managed"):
        StateGraph(Looping, output_schema=BadOut)


# ---------------------------------------------------------------------- Command.PARENT


class Route(TypedDict, total=False):
    log: Annotated[list[str], operator.add]


def test_a_node_reached_only_from_a_subgraph_by_command_parent_compiles() -> None:
    def jump(state: Route) -> Command[Any]:
        return Command(graph=Command.PARENT, goto="landing", update={"log": ["jump"]})

    child = StateGraph(Route)
    child.add_node("jump", jump)
    child.add_edge(START, "jump")
    sub = child.compile()

    parent = StateGraph(Route)
    parent.add_node("sub", sub)
    parent.add_node("landing", lambda s: {"log": ["landed"]})
    parent.add_edge(START, "sub")
    assert parent.compile().invoke({})["log"] == ["jump", "landed"]


def test_an_unreachable_node_is_still_refused_without_subgraphs() -> None:
    builder = StateGraph(Route)
    builder.add_node("a", lambda s: None)
    builder.add_node("island", lambda s: None)
    builder.add_edge(START, "a")
    with pytest.raises(GraphValidationError, match=r"Command\(graph=Command\.PARENT\)"):
        builder.compile()


# ---------------------------------------------------------------------- pydantic


class Model(pydantic.BaseModel):
    count: int
    name: str = "anon"
    items: Annotated[list[str], operator.add] = []


def _model_graph(saver: BaseCheckpointSaver | None = None) -> Any:
    seen: list[Any] = []

    def bump(state: Model) -> dict[str, Any]:
        seen.append(state.count)
        return {"count": state.count + 1, "items": ["bumped"]}

    builder = StateGraph(Model)
    builder.add_node(bump)
    builder.add_edge(START, "bump")
    app = builder.compile(checkpointer=saver)
    app.seen = seen  # type: ignore[attr-defined]
    return app


def test_pydantic_input_is_coerced_and_invoke_returns_the_model(
    saver: BaseCheckpointSaver,
) -> None:
    app = _model_graph(saver)
    config = fresh_config()
    out = app.invoke({"count": "41"}, config)
    assert app.seen == [41]
    assert isinstance(out, Model)
    assert (out.count, out.name, out.items) == (42, "anon", ["bumped"])
    assert app.get_state(config).values.count == 42


def test_pydantic_input_of_a_wrong_type_names_the_field() -> None:
    with pytest.raises(InvalidUpdateError, match="field 'count'") as caught:
        _model_graph().invoke({"count": "many"})
    assert isinstance(caught.value.__cause__, pydantic.ValidationError)


def test_pydantic_partial_input_is_validated_field_by_field(saver: BaseCheckpointSaver) -> None:
    app = _model_graph(saver)
    config = fresh_config()
    app.invoke({"count": 1}, config)
    # Later input may leave out required fields the thread already holds.
    assert app.invoke({"name": "bo"}, config).name == "bo"
    with pytest.raises(InvalidUpdateError, match="field 'name'"):
        app.invoke({"name": {"not": "text"}}, config)


async def test_pydantic_input_async(asaver: BaseCheckpointSaver) -> None:
    app = _model_graph(asaver)
    out = await app.ainvoke({"count": "7"}, fresh_config())
    assert out.count == 8
