"""The checkpoints a run saves are LangGraph's: the input checkpoint (``source="input"``, the
values before the input, ``next=("__start__",)``), then step 0 with the input applied, then one
per step. The input checkpoint and step 0 commit together: no extra round trip. Every backend,
sync and async."""

from __future__ import annotations

import itertools
import operator
from collections import Counter
from typing import Annotated, Any, TypedDict

from counting import fresh_config

from threadline.checkpoint.base import BaseCheckpointSaver
from threadline.graph import END, START, StateGraph
from threadline.types import Command, interrupt


class State(TypedDict, total=False):
    foo: str
    bar: Annotated[list[str], operator.add]


def _two(calls: Counter[str] | None = None) -> StateGraph:
    def a(state: State) -> dict[str, Any]:
        if calls is not None:
            calls["a"] += 1
        return {"foo": "a", "bar": ["a"]}

    def b(state: State) -> dict[str, Any]:
        if calls is not None:
            calls["b"] += 1
        return {"foo": "b", "bar": ["b"]}

    builder = StateGraph(State)
    builder.add_node("a", a)
    builder.add_node("b", b)
    builder.add_edge(START, "a")
    builder.add_edge("a", "b")
    builder.add_edge("b", END)
    return builder


def _counted(saver: BaseCheckpointSaver, name: str) -> list[int]:
    calls = [0]
    method = getattr(saver, name)

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        return method(*args, **kwargs)

    setattr(saver, name, counted)
    return calls


def test_a_two_node_run_saves_four_checkpoints(saver: BaseCheckpointSaver) -> None:
    app = _two().compile(checkpointer=saver)
    config = fresh_config()
    commits = _counted(saver, "_commit")
    app.invoke({"foo": "x"}, config)
    history = list(app.get_state_history(config))
    assert [s.next for s in history] == [(), ("b",), ("a",), ("__start__",)]
    assert [s.metadata["step"] for s in history] == [2, 1, 0, -1]
    assert [s.metadata["source"] for s in history] == ["loop", "loop", "loop", "input"]
    assert [s.values for s in history[:3]] == [
        {"foo": "b", "bar": ["a", "b"]},
        {"foo": "a", "bar": ["a"]},
        {"foo": "x", "bar": []},
    ]
    # A reducer key never written reads as its empty value, in the input checkpoint too.
    assert history[3].values == {"bar": []}
    assert history[3].parent_config is None
    for newer, older in itertools.pairwise(history):
        assert newer.parent_config == older.config
    (start,) = history[3].tasks
    assert (start.name, start.path, start.error) == (
        "__start__",
        ("__pregel_pull", "__start__"),
        None,
    )
    # One commit for the input checkpoint and step 0, one per node: as many as before.
    assert commits[0] == 3


def test_a_second_run_starts_with_an_input_checkpoint_of_the_state_so_far(
    saver: BaseCheckpointSaver,
) -> None:
    app = _two().compile(checkpointer=saver)
    config = fresh_config()
    app.invoke({"foo": "x"}, config)
    app.invoke({"foo": "y", "bar": ["z"]}, config)
    history = list(app.get_state_history(config))
    assert [s.metadata["step"] for s in history] == [6, 5, 4, 3, 2, 1, 0, -1]
    second_input, step4 = history[3], history[2]
    assert second_input.metadata["source"] == "input" and second_input.next == ("__start__",)
    assert second_input.values == history[4].values == {"foo": "b", "bar": ["a", "b"]}
    assert step4.values == {"foo": "y", "bar": ["a", "b", "z"]} and step4.next == ("a",)
    inputs = list(app.get_state_history(config, filter={"source": "input"}))
    assert [s.metadata["step"] for s in inputs] == [3, -1]


async def test_async_history_shape_and_commits(asaver: BaseCheckpointSaver) -> None:
    app = _two().compile(checkpointer=asaver)
    config = fresh_config()
    commits = _counted(asaver, "_acommit")
    await app.ainvoke({"foo": "x"}, config)
    history = [s async for s in app.aget_state_history(config)]
    assert [s.next for s in history] == [(), ("b",), ("a",), ("__start__",)]
    assert [s.metadata["step"] for s in history] == [2, 1, 0, -1]
    assert commits[0] == 3
    snap = await app.aget_state(history[3].config)
    assert snap.next == ("__start__",) and snap.values == {"bar": []}


def test_replay_from_the_input_checkpoint_applies_its_input_again(
    saver: BaseCheckpointSaver,
) -> None:
    calls: Counter[str] = Counter()
    app = _two(calls).compile(checkpointer=saver)
    config = fresh_config()
    app.invoke({"foo": "x", "bar": ["in"]}, config)
    second = app.invoke({"foo": "y", "bar": ["in2"]}, config)
    history = list(app.get_state_history(config))
    second_input = history[3]
    assert second_input.metadata["source"] == "input"
    # Replaying from it runs the second run again, input included.
    assert app.invoke(None, second_input.config) == second
    assert calls == Counter({"a": 3, "b": 3})
    # New input on it is a new branch from the values before that input.
    out = app.invoke({"foo": "w"}, second_input.config)
    assert out == {"foo": "b", "bar": ["in", "a", "b", "a", "b"]}


async def test_async_replay_from_the_input_checkpoint(asaver: BaseCheckpointSaver) -> None:
    app = _two().compile(checkpointer=asaver)
    config = fresh_config()
    first = await app.ainvoke({"foo": "x"}, config)
    history = [s async for s in app.aget_state_history(config)]
    assert await app.ainvoke(None, history[-1].config) == first


def test_update_state_on_step_zero_before_the_first_node(saver: BaseCheckpointSaver) -> None:
    app = _two().compile(checkpointer=saver, interrupt_before=["a"])
    config = fresh_config()
    app.invoke({"foo": "x"}, config)
    snap = app.get_state(config)
    assert snap.next == ("a",) and snap.metadata["step"] == 0
    app.update_state(config, {"bar": ["fixed"]})
    assert app.invoke(None, config) == {"foo": "b", "bar": ["fixed", "a", "b"]}
    steps = [s.metadata["step"] for s in app.get_state_history(config)]
    assert steps == [3, 2, 1, 0, -1]


def test_checkpoints_stream_starts_with_the_input_checkpoint(saver: BaseCheckpointSaver) -> None:
    app = _two().compile(checkpointer=saver)
    config = fresh_config()
    chunks = list(app.stream({"foo": "x"}, config, stream_mode=["checkpoints", "values"]))
    assert [m for m, _ in chunks] == [
        "checkpoints",
        "values",
        "checkpoints",
        "values",
        "checkpoints",
        "values",
        "checkpoints",
    ]
    first = chunks[0][1]
    assert first["values"] == {"bar": []} and first["next"] == ["__start__"]
    assert first["metadata"]["source"] == "input" and first["parent_config"] is None
    assert [t["name"] for t in first["tasks"]] == ["__start__"]
    history = list(reversed(list(app.get_state_history(config))))
    assert [c["config"] for m, c in chunks if m == "checkpoints"] == [s.config for s in history]


def test_exit_durability_saves_only_the_final_checkpoint(saver: BaseCheckpointSaver) -> None:
    # As LangGraph 1.x: neither the input checkpoint nor step 0 is saved on its own.
    app = _two().compile(checkpointer=saver)
    config = fresh_config()
    app.invoke({"foo": "x"}, config, durability="exit")
    history = list(app.get_state_history(config))
    assert [s.metadata["source"] for s in history] == ["loop"]
    assert [s.next for s in history] == [()]
    assert history[0].parent_config is None


def test_resume_after_an_interrupt_adds_no_input_checkpoint(saver: BaseCheckpointSaver) -> None:
    def ask(state: State) -> dict[str, Any]:
        return {"foo": interrupt("foo?")}

    builder = StateGraph(State)
    builder.add_node("ask", ask)
    builder.add_edge(START, "ask")
    app = builder.compile(checkpointer=saver)
    config = fresh_config()
    app.invoke({"bar": ["x"]}, config)
    app.invoke(Command(resume="y"), config)
    history = list(app.get_state_history(config))
    assert [s.metadata["source"] for s in history] == ["loop", "loop", "input"]
    assert history[0].values == {"foo": "y", "bar": ["x"]}


def test_subgraph_checkpoints_have_their_input_checkpoint(saver: BaseCheckpointSaver) -> None:
    sub = _two().compile()
    builder = StateGraph(State)
    builder.add_node("sub", sub)
    builder.add_edge(START, "sub")
    app = builder.compile(checkpointer=saver)
    config = fresh_config()
    app.invoke({"foo": "x"}, config, interrupt_after=["sub"])
    history = list(app.get_state_history(config))
    assert [s.metadata["source"] for s in history] == ["loop", "loop", "input"]
    task_id = history[1].tasks[0].id
    sub_config = {"configurable": {**config["configurable"], "checkpoint_ns": f"sub:{task_id}"}}
    rows = list(saver.list(sub_config))
    assert [r.metadata["source"] for r in rows] == ["loop", "loop", "loop", "input"]


def test_model_state_with_required_fields(saver: BaseCheckpointSaver) -> None:
    import pydantic

    class Strict(pydantic.BaseModel):
        name: str
        seen: list[str] = []

    builder = StateGraph(Strict)
    builder.add_node("greet", lambda s: {"seen": [f"hi {s.name}"]})
    builder.add_edge(START, "greet")
    app = builder.compile(checkpointer=saver)
    config = fresh_config()
    chunks = list(app.stream({"name": "ada"}, config, stream_mode="checkpoints"))
    assert [c["metadata"]["source"] for c in chunks] == ["input", "loop", "loop"]
    history = list(app.get_state_history(config))
    assert history[0].values.seen == ["hi ada"]
    assert history[-1].next == ("__start__",)  # before the input: no model to build yet
