"""History: every checkpoint of a thread, newest first, with filters and limits."""

from __future__ import annotations

import operator
from typing import Annotated, TypedDict

from threadline.checkpoint.memory import MemorySaver
from threadline.graph import END, START, StateGraph


class State(TypedDict):
    total: Annotated[int, operator.add]


def add_one(state: State) -> dict[str, int]:
    return {"total": 1}


def add_ten(state: State) -> dict[str, int]:
    return {"total": 10}


def main() -> None:
    builder = StateGraph(State)
    builder.add_sequence([add_one, add_ten])
    builder.add_edge(START, "add_one")
    builder.add_edge("add_ten", END)
    app = builder.compile(checkpointer=MemorySaver())
    config = {"configurable": {"thread_id": "counter"}}
    app.invoke({"total": 0}, config)
    app.invoke({"total": 100}, config)

    for snap in app.get_state_history(config):
        meta = snap.metadata or {}
        print(
            f"step {meta['step']:>2} {meta['source']:<5}"
            f" total={snap.values['total']:<4} next={snap.next}"
        )

    inputs = list(app.get_state_history(config, filter={"source": "input"}))
    print("input checkpoints:", len(inputs))
    latest_two = list(app.get_state_history(config, limit=2))
    older = list(app.get_state_history(config, before=latest_two[-1].config))
    print("latest two, then", len(older), "older ones")
    assert len(inputs) == 2 and len(latest_two) + len(older) == 8  # 4 per run, as LangGraph


if __name__ == "__main__":
    main()
