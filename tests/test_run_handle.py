"""graph.astart(): a run in the background with typed, numbered events."""

from __future__ import annotations

import asyncio
import contextlib
import operator
from typing import Annotated, Any, TypedDict

import pytest

from threadline.checkpoint.memory import MemorySaver
from threadline.graph import END, START, StateGraph
from threadline.runtime.handle import RunEvent


class S(TypedDict):
    log: Annotated[list[str], operator.add]


def step(name: str) -> Any:
    def node(state: S) -> dict[str, Any]:
        return {"log": [name]}

    return node


def chain(*names: str, checkpointer: Any = None) -> Any:
    g = StateGraph(S)
    prev = START
    for name in names:
        g.add_node(name, step(name))
        g.add_edge(prev, name)
        prev = name
    g.add_edge(prev, END)
    return g.compile(checkpointer=checkpointer)


async def test_events_are_numbered_in_order_with_their_mode_and_namespace() -> None:
    inner = chain("x")
    outer = StateGraph(S)
    outer.add_node("a", step("a"))
    outer.add_node("sub", inner)
    outer.add_edge(START, "a")
    outer.add_edge("a", "sub")
    outer.add_edge("sub", END)
    graph = outer.compile(checkpointer=MemorySaver())
    config = {"configurable": {"thread_id": "t"}}
    handle = graph.astart({"log": []}, config, stream_mode=["updates", "values"])
    events = [e async for e in handle.events()]
    assert all(isinstance(e, RunEvent) for e in events)
    assert [e.seq for e in events] == list(range(len(events)))
    assert {e.mode for e in events} == {"updates", "values"}
    assert any(e.namespace and e.namespace[0].startswith("sub") for e in events)
    assert events[-1].mode == "values" and events[-1].data == {"log": ["a", "x"]}
    assert handle.done and not handle.cancelled
    assert (await graph.aget_state(config)).values == {"log": ["a", "x"]}


async def test_a_failing_run_raises_from_its_events() -> None:
    def boom(state: S) -> dict[str, Any]:
        raise KeyError("nope")

    g = StateGraph(S)
    g.add_node("boom", boom)
    g.add_edge(START, "boom")
    handle = g.compile().astart({"log": []}, stream_mode="updates")
    with pytest.raises(KeyError, match="nope"):
        async for _ in handle.events():
            pass


async def test_cancel_stops_a_long_async_node_and_keeps_what_was_committed() -> None:
    started = asyncio.Event()

    async def nap(state: S) -> dict[str, Any]:
        started.set()
        await asyncio.sleep(60)
        return {"log": ["woke"]}

    g = StateGraph(S)
    g.add_node("first", step("first"))
    g.add_node("nap", nap)
    g.add_edge(START, "first")
    g.add_edge("first", "nap")
    graph = g.compile(checkpointer=MemorySaver())
    config = {"configurable": {"thread_id": "c"}}
    handle = graph.astart({"log": []}, config, stream_mode="updates")
    seen: list[RunEvent] = []

    async def consume() -> None:
        seen.extend([e async for e in handle.events()])

    consumer = asyncio.ensure_future(consume())
    await asyncio.wait_for(started.wait(), 10)
    handle.cancel()
    await asyncio.wait_for(consumer, 10)  # the events end; no error for a cancelled run
    assert handle.cancelled
    assert [e.data for e in seen] == [{"first": {"log": ["first"]}}]
    state = await graph.aget_state(config)
    assert state.values == {"log": ["first"]} and state.next == ("nap",)


async def test_a_consumer_that_stops_early_stops_the_run() -> None:
    handle = chain("a", "b", "c").astart({"log": []}, stream_mode="updates")
    async with contextlib.aclosing(handle.events()) as events:
        async for event in events:
            assert event.seq == 0
            break
    assert handle.cancelled


async def test_events_are_read_once_and_wait_ends_an_unread_run() -> None:
    handle = chain("a").astart({"log": []}, stream_mode="values")
    await handle.wait()
    assert handle.done
    with pytest.raises(RuntimeError, match="iterated once"):
        async for _ in handle.events():
            pass


async def test_a_slow_consumer_holds_the_run_at_the_buffer_size() -> None:
    names = [f"n{i}" for i in range(20)]
    handle = chain(*names).astart({"log": []}, stream_mode="updates", max_buffered=2)
    for _ in range(50):
        await asyncio.sleep(0)
    assert not handle.done  # 20 events, room for 2: the run waits for its consumer
    events = [e async for e in handle.events()]
    assert len(events) == 20 and handle.done


async def test_bad_options_fail_at_start() -> None:
    with pytest.raises(ValueError, match="unknown stream_mode"):
        chain("a").astart({"log": []}, stream_mode="nonsense")
