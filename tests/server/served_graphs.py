"""Graphs the server tests serve (named in ``langgraph.json`` next to this file)."""

from __future__ import annotations

import asyncio
import operator
import os
import threading
import time
from typing import Annotated, Any, TypedDict

from pydantic import BaseModel

from threadline.config import get_config, get_stream_writer
from threadline.func import entrypoint, task
from threadline.graph import END, START, StateGraph, add_messages
from threadline.types import interrupt


class Chat(TypedDict, total=False):
    messages: Annotated[list[str], operator.add]
    seen: dict[str, Any]


def reply(state: Chat) -> dict[str, Any]:
    last = state["messages"][-1]
    configurable = get_config()["configurable"]
    seen = {k: configurable.get(k) for k in ("thread_id", "run_id", "assistant_id", "graph_id")}
    seen["thread"] = threading.current_thread().name  # the pool sync nodes run on
    return {"messages": [f"reply to {last}"], "seen": seen}


echo = StateGraph(Chat)
echo.add_node("reply", reply)
echo.add_edge(START, "reply")
echo.add_edge("reply", END)
echo_graph = echo.compile()


def ask(state: Chat) -> dict[str, Any]:
    answer = interrupt({"question": "approve?"})
    return {"messages": [f"answer: {answer}"]}


approval = StateGraph(Chat)
approval.add_node("ask", ask)
approval.add_edge(START, "ask")
approval.add_edge("ask", END)
approval_graph = approval.compile()


class Decision(BaseModel):
    approved: bool
    note: str = ""


def decide(state: Chat) -> dict[str, Any]:
    decision = interrupt({"question": "approve?"}, response_schema=Decision)
    return {"messages": [f"approved: {decision.approved}"]}


def explain(state: Chat) -> dict[str, Any]:
    why = interrupt("why?", response_schema={"type": "string"})  # shown, not checked
    rest = interrupt("anything else?")
    return {"messages": [f"{why} / {rest}"]}


schema = StateGraph(Chat)
schema.add_node("decide", decide)
schema.add_node("explain", explain)
schema.add_edge(START, "decide")
schema.add_edge("decide", "explain")
schema_graph = schema.compile()


async def nap(state: Chat) -> dict[str, Any]:
    seconds = float(state["messages"][-1].split(":")[1]) if ":" in state["messages"][-1] else 2
    await asyncio.sleep(seconds)
    return {"messages": [f"slept {seconds}"]}


def after_nap(state: Chat) -> dict[str, Any]:
    return {"messages": ["awake"]}


slow = StateGraph(Chat)
slow.add_node("nap", nap)
slow.add_node("after_nap", after_nap)
slow.add_edge(START, "nap")
slow.add_edge("nap", "after_nap")
slow.add_edge("after_nap", END)


def slow_graph() -> Any:
    """A factory, as LangGraph's server accepts."""
    return slow


def step_one(state: Chat) -> dict[str, Any]:
    return {"messages": ["one"]}


def step_two(state: Chat) -> dict[str, Any]:
    # Long enough for a test to kill the replica here; the marker file says it started.
    marker = os.environ.get("THREADLINE_TEST_MARKER")
    if marker:
        with open(marker, "a") as f:
            f.write("two\n")
    time.sleep(float(os.environ.get("THREADLINE_TEST_STEP_SECONDS", "0")))
    return {"messages": ["two"]}


steps = StateGraph(Chat)
steps.add_node("step_one", step_one)
steps.add_node("step_two", step_two)
steps.add_edge(START, "step_one")
steps.add_edge("step_one", "step_two")
steps.add_edge("step_two", END)
steps_graph = steps.compile()


def explode(state: Chat) -> dict[str, Any]:
    raise ValueError("the node failed on purpose")


fails = StateGraph(Chat)
fails.add_node("explode", explode)
fails.add_edge(START, "explode")
fails.add_edge("explode", END)
fails_graph = fails.compile()


def first(state: Chat) -> dict[str, Any]:
    return {"messages": ["first"]}


async def tick(state: Chat) -> dict[str, Any]:
    """``ticks:N:SECONDS`` in the input: N custom events, SECONDS apart (streams over time)."""
    spec = next((m for m in state["messages"] if m.startswith("ticks:")), "ticks:3:0")
    _, count, pause = spec.split(":")
    write = get_stream_writer()
    for i in range(int(count)):
        write({"tick": i})
        await asyncio.sleep(float(pause))
    return {"messages": [f"ticked {count}"]}


stages = StateGraph(Chat)
stages.add_node("first", first)
stages.add_node("tick", tick)
stages.add_edge(START, "first")
stages.add_edge("first", "tick")
stages.add_edge("tick", END)
stages_graph = stages.compile()


async def vet(state: Chat) -> dict[str, Any]:
    """Asks; the answer ``{"say", "pause"?, "ticks"?}`` is taken ``pause`` seconds after it
    comes, and ``ticks`` (``ticks:N:SECONDS``) is handed to the next node."""
    answer = interrupt({"question": "go on?"})
    await asyncio.sleep(float(answer.get("pause", 0)))
    return {
        "messages": [f"answer: {answer['say']}", *([answer["ticks"]] if "ticks" in answer else [])]
    }


vetted = StateGraph(Chat)
vetted.add_node("vet", vet)
vetted.add_node("tick", tick)
vetted.add_edge(START, "vet")
vetted.add_edge("vet", "tick")
vetted.add_edge("tick", END)
vetted_graph = vetted.compile()


class Talk(TypedDict, total=False):
    messages: Annotated[list[Any], add_messages]


def model(state: Talk) -> dict[str, Any]:
    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
    from langchain_core.messages import AIMessage

    llm = GenericFakeChatModel(messages=iter([AIMessage(content="hello big world")]))
    return {"messages": [llm.invoke(state["messages"])]}


def note(state: Talk) -> dict[str, Any]:
    from langchain_core.messages import AIMessage

    return {"messages": [AIMessage(content="noted", id="note-1")]}


chat = StateGraph(Talk)
chat.add_node("model", model)
chat.add_node("note", note)
chat.add_edge(START, "model")
chat.add_edge("model", "note")
chat.add_edge("note", END)
chat_graph = chat.compile()

outer = StateGraph(Chat)
outer.add_node("inner", echo_graph)
outer.add_edge(START, "inner")
outer.add_edge("inner", END)
nested_graph = outer.compile()

# The echo graph as a subgraph (its checkpoints go to a namespace of their own), then ticks.
nested_stages = StateGraph(Chat)
nested_stages.add_node("inner", echo_graph)
nested_stages.add_node("tick", tick)
nested_stages.add_edge(START, "inner")
nested_stages.add_edge("inner", "tick")
nested_stages.add_edge("tick", END)
nested_stages_graph = nested_stages.compile()


# An entrypoint that makes a @task call, which fails on a negative number.
@task
def double(x: int) -> int:
    if x < 0:
        raise ValueError("negative")
    return 2 * x


@entrypoint()
def calls(inp: dict[str, Any]) -> int:
    return double(inp["x"]).result() + 1


calls_graph = calls
