"""Streaming modes "custom" (get_stream_writer() and a ``writer`` parameter) and "debug"
(checkpoints, task start and task result events), sync and async, on every backend."""

from __future__ import annotations

import asyncio
import operator
import threading
import uuid
from typing import Annotated, Any, TypedDict

import pytest

from threadline.checkpoint.base import BaseCheckpointSaver
from threadline.errors import ThreadlineError
from threadline.graph import END, START, StateGraph
from threadline.runtime import get_stream_writer
from threadline.types import Command, interrupt


class State(TypedDict, total=False):
    log: Annotated[list[str], operator.add]


def _config() -> dict[str, Any]:
    return {"configurable": {"thread_id": f"t-{uuid.uuid4().hex[:8]}"}}


def with_get_writer(state: State) -> dict[str, Any]:
    write = get_stream_writer()
    for i in range(3):
        write({"progress": i})
    return {"log": ["slow"]}


def with_writer_param(state: State, writer: Any) -> dict[str, Any]:
    writer("half")
    writer("done")
    return {"log": ["param"]}


async def async_with_get_writer(state: State) -> dict[str, Any]:
    write = get_stream_writer()
    for i in range(2):
        await asyncio.sleep(0)
        write({"async": i})
    return {"log": ["async"]}


async def async_with_writer_param(state: State, writer: Any) -> dict[str, Any]:
    writer("async param")
    return {"log": ["async param"]}


def _graph(*nodes: Any) -> StateGraph:
    builder = StateGraph(State)
    builder.add_sequence(list(nodes))
    builder.add_edge(START, nodes[0].__name__)
    builder.add_edge(nodes[-1].__name__, END)
    return builder


# ---------------------------------------------------------------------- custom


def test_custom_with_get_stream_writer_and_writer_param(saver: BaseCheckpointSaver) -> None:
    app = _graph(with_get_writer, with_writer_param).compile(checkpointer=saver)
    chunks = list(app.stream({"log": []}, _config(), stream_mode="custom"))
    assert chunks == [{"progress": 0}, {"progress": 1}, {"progress": 2}, "half", "done"]


def test_custom_without_checkpointer() -> None:
    app = _graph(with_get_writer, with_writer_param).compile()
    chunks = list(app.stream({"log": []}, stream_mode="custom"))
    assert chunks == [{"progress": 0}, {"progress": 1}, {"progress": 2}, "half", "done"]


def test_custom_with_other_modes_yields_pairs(saver: BaseCheckpointSaver) -> None:
    app = _graph(with_writer_param).compile(checkpointer=saver)
    chunks = list(app.stream({"log": []}, _config(), stream_mode=["custom", "updates"]))
    assert chunks == [
        ("custom", "half"),
        ("custom", "done"),
        ("updates", {"with_writer_param": {"log": ["param"]}}),
    ]


def test_writer_is_a_no_op_when_nobody_listens(saver: BaseCheckpointSaver) -> None:
    app = _graph(with_get_writer, with_writer_param).compile(checkpointer=saver)
    assert app.invoke({"log": []}, _config()) == {"log": ["slow", "param"]}
    chunks = list(app.stream({"log": []}, _config(), stream_mode="updates"))
    assert [next(iter(c)) for c in chunks] == ["with_get_writer", "with_writer_param"]


def test_custom_events_arrive_while_the_node_runs(saver: BaseCheckpointSaver) -> None:
    received = threading.Event()

    def waits_for_the_reader(state: State) -> dict[str, Any]:
        get_stream_writer()("started")
        # Only finishes once the caller has seen "started": events are not held back.
        return {"log": [f"reader saw it: {received.wait(timeout=5)}"]}

    app = _graph(waits_for_the_reader).compile(checkpointer=saver)
    out = []
    for mode, chunk in app.stream({"log": []}, _config(), stream_mode=["custom", "values"]):
        out.append((mode, chunk))
        if chunk == "started":
            received.set()
    assert out[-1] == ("values", {"log": ["reader saw it: True"]})


def test_custom_from_parallel_nodes(saver: BaseCheckpointSaver) -> None:
    def a(state: State, writer: Any) -> dict[str, Any]:
        writer("from a")
        return {"log": ["a"]}

    def b(state: State) -> dict[str, Any]:
        get_stream_writer()("from b")
        return {"log": ["b"]}

    builder = StateGraph(State)
    builder.add_node(a)
    builder.add_node(b)
    builder.add_edge(START, "a")
    builder.add_edge(START, "b")
    app = builder.compile(checkpointer=saver)
    chunks = list(app.stream({"log": []}, _config(), stream_mode="custom"))
    assert sorted(chunks) == ["from a", "from b"]


def test_custom_from_a_subgraph(saver: BaseCheckpointSaver) -> None:
    inner = _graph(with_writer_param).compile()
    builder = StateGraph(State)
    builder.add_node("sub", inner)
    builder.add_node(with_get_writer)
    builder.add_edge(START, "with_get_writer")
    builder.add_edge("with_get_writer", "sub")
    app = builder.compile(checkpointer=saver)
    chunks = list(app.stream({"log": []}, _config(), stream_mode="custom", subgraphs=True))
    assert [c for ns, c in chunks if ns == ()] == [{"progress": i} for i in range(3)]
    child = [(ns, c) for ns, c in chunks if ns != ()]
    assert [c for _, c in child] == ["half", "done"]
    assert all(len(ns) == 1 and ns[0].startswith("sub:") for ns, _ in child)


def test_get_stream_writer_outside_a_node() -> None:
    with pytest.raises(ThreadlineError, match="inside a node"):
        get_stream_writer()


async def test_async_custom(asaver: BaseCheckpointSaver) -> None:
    app = _graph(
        async_with_get_writer, async_with_writer_param, with_get_writer, with_writer_param
    ).compile(checkpointer=asaver)
    chunks = [c async for c in app.astream({"log": []}, _config(), stream_mode="custom")]
    assert chunks == [
        {"async": 0},
        {"async": 1},
        "async param",
        {"progress": 0},
        {"progress": 1},
        {"progress": 2},
        "half",
        "done",
    ]


async def test_async_custom_without_checkpointer() -> None:
    app = _graph(async_with_writer_param, with_writer_param).compile()
    chunks = [c async for c in app.astream({"log": []}, stream_mode="custom")]
    assert chunks == ["async param", "half", "done"]


# ---------------------------------------------------------------------- debug


def _check_debug(events: list[Any], names: list[str]) -> None:
    assert all(set(e) == {"step", "timestamp", "type", "payload"} for e in events)
    assert {e["type"] for e in events} == {"checkpoint", "task", "task_result"}
    starts = [e for e in events if e["type"] == "task"]
    results = [e for e in events if e["type"] == "task_result"]
    assert [e["payload"]["name"] for e in starts] == names
    assert [e["payload"]["name"] for e in results] == names
    for start, result in zip(starts, results, strict=True):
        assert start["payload"]["id"] == result["payload"]["id"]
        assert start["step"] == result["step"]
        assert events.index(start) < events.index(result)
    assert [e["step"] for e in starts] == sorted(e["step"] for e in starts)
    assert len({e["step"] for e in starts}) == len(names)
    checkpoints = [e for e in events if e["type"] == "checkpoint"]
    assert all(e["step"] == e["payload"]["metadata"]["step"] for e in checkpoints)


def test_debug_yields_checkpoints_and_task_start_and_result(saver: BaseCheckpointSaver) -> None:
    app = _graph(with_get_writer, with_writer_param).compile(checkpointer=saver)
    events = list(app.stream({"log": []}, _config(), stream_mode="debug"))
    _check_debug(events, ["with_get_writer", "with_writer_param"])
    starts = [e["payload"] for e in events if e["type"] == "task"]
    assert starts[0]["input"] == {"log": []}
    assert starts[0]["triggers"] == ("branch:to:with_get_writer",)
    assert starts[1]["input"] == {"log": ["slow"]}
    results = [e["payload"] for e in events if e["type"] == "task_result"]
    assert results[0]["result"] == {"log": ["slow"]}
    assert results[1]["result"] == {"log": ["param"]}
    assert all(r["error"] is None and r["interrupts"] == [] for r in results)
    assert [e["step"] for e in events if e["type"] == "checkpoint"] == [-1, 0, 1, 2]


def test_debug_reports_errors_and_interrupts(saver: BaseCheckpointSaver) -> None:
    def asks(state: State) -> dict[str, Any]:
        return {"log": [interrupt("why?")]}

    app = _graph(asks).compile(checkpointer=saver)
    config = _config()
    events = list(app.stream({"log": []}, config, stream_mode="debug"))
    (result,) = [e["payload"] for e in events if e["type"] == "task_result"]
    assert result["result"] == {}
    (asked,) = result["interrupts"]
    assert asked["value"] == "why?" and asked["id"]
    events = list(app.stream(Command(resume="because"), config, stream_mode="debug"))
    # The run first reports the checkpoint it goes on from, with the question it answers.
    assert events[0]["type"] == "checkpoint"
    assert events[0]["payload"]["tasks"][0]["interrupts"] == (asked,)
    (result,) = [e["payload"] for e in events if e["type"] == "task_result"]
    assert result["result"] == {"log": ["because"]} and result["interrupts"] == []

    def fails(state: State) -> dict[str, Any]:
        raise ValueError("bad input")

    app = _graph(fails).compile(checkpointer=saver)
    events = []
    with pytest.raises(ValueError, match="bad input"):
        for event in app.stream({"log": []}, _config(), stream_mode="debug"):
            events.append(event)
    (result,) = [e["payload"] for e in events if e["type"] == "task_result"]
    assert isinstance(result["error"], ValueError) and result["result"] == {}


async def test_async_debug(asaver: BaseCheckpointSaver) -> None:
    app = _graph(async_with_get_writer, with_writer_param).compile(checkpointer=asaver)
    events = [e async for e in app.astream({"log": []}, _config(), stream_mode="debug")]
    _check_debug(events, ["async_with_get_writer", "with_writer_param"])
    results = [e["payload"]["result"] for e in events if e["type"] == "task_result"]
    assert results == [{"log": ["async"]}, {"log": ["param"]}]


async def test_async_debug_and_custom_together(asaver: BaseCheckpointSaver) -> None:
    app = _graph(async_with_writer_param).compile(checkpointer=asaver)
    chunks = [c async for c in app.astream({"log": []}, _config(), stream_mode=["debug", "custom"])]
    assert [(mode, c["type"] if mode == "debug" else c) for mode, c in chunks] == [
        ("debug", "checkpoint"),
        ("debug", "checkpoint"),
        ("debug", "task"),
        ("custom", "async param"),
        ("debug", "task_result"),
        ("debug", "checkpoint"),
    ]


@pytest.mark.parametrize("order", ["writer, config", "config, writer", "keyword-only"])
def test_node_taking_writer_and_config_gets_each_by_name(order: str) -> None:
    seen: dict[str, Any] = {}

    def record(writer: Any, config: Any) -> dict[str, Any]:
        writer("hi")
        seen["thread_id"] = config["configurable"]["thread_id"]
        return {"log": ["ran"]}

    def writer_first(state: State, writer: Any, config: Any) -> dict[str, Any]:
        return record(writer, config)

    def config_first(state: State, config: Any, writer: Any) -> dict[str, Any]:
        return record(writer, config)

    def keyword_only(state: State, *, config: Any, writer: Any) -> dict[str, Any]:
        return record(writer, config)

    node = {"writer, config": writer_first, "config, writer": config_first}.get(order, keyword_only)
    from threadline.checkpoint.memory import MemorySaver

    builder = StateGraph(State)
    builder.add_node("n", node)
    builder.add_edge(START, "n")
    builder.add_edge("n", END)
    app = builder.compile(checkpointer=MemorySaver())
    config = _config()
    assert list(app.stream({"log": []}, config, stream_mode="custom")) == ["hi"]
    assert seen["thread_id"] == config["configurable"]["thread_id"]
