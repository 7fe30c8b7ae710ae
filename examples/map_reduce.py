"""Map-reduce with Send: one task per item, all in the same step; results merge by reducer."""

from __future__ import annotations

import operator
from typing import Annotated, Any, TypedDict

from threadline.checkpoint.memory import MemorySaver
from threadline.graph import END, START, StateGraph
from threadline.types import Send


class State(TypedDict):
    subjects: list[str]
    jokes: Annotated[list[str], operator.add]
    best: str


def plan(state: State) -> dict[str, Any]:
    return {"subjects": state["subjects"]}


def fan_out(state: State) -> list[Send]:
    # One `write_joke` task per subject, each with its own input.
    return [Send("write_joke", {"subject": s}) for s in state["subjects"]]


def write_joke(arg: dict[str, str]) -> dict[str, Any]:
    return {"jokes": [f"Why did the {arg['subject']} cross the road?"]}


def pick_best(state: State) -> dict[str, Any]:
    return {"best": max(state["jokes"], key=len)}


def main() -> None:
    builder = StateGraph(State)
    builder.add_node(plan)
    builder.add_node(write_joke)
    builder.add_node(pick_best)
    builder.add_edge(START, "plan")
    builder.add_conditional_edges("plan", fan_out, ["write_joke"])
    builder.add_edge("write_joke", "pick_best")
    builder.add_edge("pick_best", END)
    app = builder.compile(checkpointer=MemorySaver())

    config = {"configurable": {"thread_id": "jokes"}}
    result = app.invoke({"subjects": ["cat", "duck", "elephant"], "jokes": []}, config)
    print("jokes:", result["jokes"])
    print("best:", result["best"])
    assert len(result["jokes"]) == 3


if __name__ == "__main__":
    main()
