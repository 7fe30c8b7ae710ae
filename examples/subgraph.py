"""A two-level graph: the subgraph asks a question; answering it resumes inside the subgraph."""

from __future__ import annotations

import operator
from typing import Annotated, Any, TypedDict

from threadline.checkpoint.memory import MemorySaver
from threadline.graph import END, START, StateGraph
from threadline.types import Command, interrupt


class State(TypedDict):
    messages: Annotated[list[str], operator.add]


def ask_name(state: State) -> dict[str, Any]:
    name = interrupt("What is your name?")
    return {"messages": [f"nice to meet you, {name}"]}


def farewell(state: State) -> dict[str, Any]:
    return {"messages": ["(subgraph done)"]}


def greet(state: State) -> dict[str, Any]:
    return {"messages": ["hello!"]}


def wrap_up(state: State) -> dict[str, Any]:
    return {"messages": ["bye"]}


def main() -> None:
    inner = StateGraph(State)
    inner.add_sequence([ask_name, farewell])
    inner.add_edge(START, "ask_name")
    onboarding = inner.compile()  # inherits the parent's checkpointer

    outer = StateGraph(State)
    outer.add_node(greet)
    outer.add_node("onboarding", onboarding)
    outer.add_node(wrap_up)
    outer.add_edge(START, "greet")
    outer.add_edge("greet", "onboarding")
    outer.add_edge("onboarding", "wrap_up")
    outer.add_edge("wrap_up", END)
    app = outer.compile(checkpointer=MemorySaver())

    config = {"configurable": {"thread_id": "visitor"}}
    paused = app.invoke({"messages": []}, config)
    print("paused with:", paused["__interrupt__"][0].value)

    state = app.get_state(config, subgraphs=True)
    inner_state = state.tasks[0].state
    print("parent waits at:", state.next, "| subgraph waits at:", inner_state.next)

    result = app.invoke(Command(resume="Ada"), config)
    print("messages:", result["messages"])
    assert result["messages"][-1] == "bye"


if __name__ == "__main__":
    main()
