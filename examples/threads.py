"""Separate threads: each thread_id has its own state and history."""

from __future__ import annotations

import operator
from typing import Annotated, TypedDict

from threadline.checkpoint.memory import MemorySaver
from threadline.graph import START, StateGraph


class State(TypedDict):
    messages: Annotated[list[str], operator.add]


def echo(state: State) -> dict[str, object]:
    return {"messages": [f"echo: {state['messages'][-1]}"]}


def main() -> None:
    builder = StateGraph(State)
    builder.add_node(echo)
    builder.add_edge(START, "echo")
    app = builder.compile(checkpointer=MemorySaver())

    alice = {"configurable": {"thread_id": "alice"}}
    bob = {"configurable": {"thread_id": "bob"}}
    app.invoke({"messages": ["hi, I am Alice"]}, alice)
    app.invoke({"messages": ["hi, I am Bob"]}, bob)
    app.invoke({"messages": ["still Alice"]}, alice)

    print("alice:", app.get_state(alice).values["messages"])
    print("bob:  ", app.get_state(bob).values["messages"])
    assert len(app.get_state(alice).values["messages"]) == 4
    assert len(app.get_state(bob).values["messages"]) == 2


if __name__ == "__main__":
    main()
