"""Failure and resume: a node fails, get_state shows why, update_state fixes, invoke resumes."""

from __future__ import annotations

import operator
from typing import Annotated, TypedDict

from threadline.checkpoint.memory import MemorySaver
from threadline.graph import END, START, StateGraph


class State(TypedDict):
    log: Annotated[list[str], operator.add]
    amount: int


def fetch(state: State) -> dict[str, object]:
    return {"log": ["fetched"]}


def charge(state: State) -> dict[str, object]:
    if state["amount"] <= 0:
        raise ValueError(f"cannot charge {state['amount']}")
    return {"log": [f"charged {state['amount']}"]}


def main() -> None:
    builder = StateGraph(State)
    builder.add_sequence([fetch, charge])
    builder.add_edge(START, "fetch")
    builder.add_edge("charge", END)
    app = builder.compile(checkpointer=MemorySaver())
    config = {"configurable": {"thread_id": "order-7"}}

    try:
        app.invoke({"log": [], "amount": -5}, config)
    except ValueError as exc:
        print("failed:", exc)
        for note in getattr(exc, "__notes__", []):
            print("  note:", note)

    state = app.get_state(config)
    print("next:", state.next, "error:", state.tasks[0].error)
    app.update_state(config, {"amount": 20})
    result = app.invoke(None, config)
    print("resumed:", result)
    assert result["log"] == ["fetched", "charged 20"]


if __name__ == "__main__":
    main()
