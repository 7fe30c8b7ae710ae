"""Branching into a new thread: fork a checkpoint of `main` into `feature` and change it."""

from __future__ import annotations

import operator
from typing import Annotated, Any, TypedDict

from threadline.checkpoint.memory import MemorySaver
from threadline.graph import END, START, StateGraph


class State(TypedDict):
    messages: Annotated[list[str], operator.add]
    data: dict[str, Any]


def step1(state: State) -> dict[str, object]:
    return {"messages": ["step1"]}


def step2(state: State) -> dict[str, object]:
    return {"messages": [f"step2 on {state['data']['branch']}"]}


def step3(state: State) -> dict[str, object]:
    return {"messages": ["step3"]}


def main() -> None:
    builder = StateGraph(State)
    builder.add_sequence([step1, step2, step3])
    builder.add_edge(START, "step1")
    builder.add_edge("step3", END)
    app = builder.compile(checkpointer=MemorySaver())

    main_config = {"configurable": {"thread_id": "main"}}
    app.invoke({"messages": [], "data": {"branch": "main"}}, main_config)
    after_step1 = next(s for s in app.get_state_history(main_config) if s.next == ("step2",))
    checkpoint_id = after_step1.config["configurable"]["checkpoint_id"]

    feature = {"configurable": {"thread_id": "feature", "checkpoint_id": checkpoint_id}}
    app.update_state(feature, {"data": {"branch": "feature"}})
    result = app.invoke(None, feature)
    print("feature:", result)
    print("main:   ", app.get_state(main_config).values)
    assert result["data"] == {"branch": "feature"}
    assert app.get_state(main_config).values["data"] == {"branch": "main"}

    # The same, in one call: copy a checkpoint into a new thread and continue it there.
    experiment = app.fork(after_step1.config, "experiment")
    print("experiment:", app.invoke(None, experiment)["messages"])


if __name__ == "__main__":
    main()
