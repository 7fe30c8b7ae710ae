"""Resume: stop before a node, look at the state, then continue with invoke(None, config)."""

from __future__ import annotations

import operator
from typing import Annotated, TypedDict

from threadline.checkpoint.memory import MemorySaver
from threadline.graph import END, START, StateGraph


class State(TypedDict):
    steps: Annotated[list[str], operator.add]


def plan(state: State) -> dict[str, object]:
    return {"steps": ["plan"]}


def execute(state: State) -> dict[str, object]:
    return {"steps": ["execute"]}


def main() -> None:
    builder = StateGraph(State)
    builder.add_sequence([plan, execute])
    builder.add_edge(START, "plan")
    builder.add_edge("execute", END)
    app = builder.compile(checkpointer=MemorySaver(), interrupt_before=["execute"])
    config = {"configurable": {"thread_id": "job-1"}}

    app.invoke({"steps": []}, config)
    paused = app.get_state(config)
    print("paused before:", paused.next, "state:", paused.values)

    result = app.invoke(None, config)  # continue where it stopped
    print("finished:", result)
    assert result["steps"] == ["plan", "execute"]
    print("continuing a finished thread runs nothing:", app.invoke(None, config))


if __name__ == "__main__":
    main()
