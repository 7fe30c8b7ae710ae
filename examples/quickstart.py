"""Quick start: a three-step graph whose state is checkpointed after every step.

Run it with `make demo`. It prints the result, then every checkpoint of the run.
"""

from __future__ import annotations

import operator
import os
import sys
import tempfile
from typing import Annotated, TypedDict

from threadline.checkpoint import from_url
from threadline.graph import END, START, StateGraph


class State(TypedDict):
    messages: Annotated[list[str], operator.add]  # appended to by every node
    topic: str


def research(state: State) -> dict[str, object]:
    return {"messages": [f"researched {state['topic']}"]}


def draft(state: State) -> dict[str, object]:
    return {"messages": [f"drafted a note from {len(state['messages'])} messages"]}


def review(state: State) -> dict[str, object]:
    return {"messages": ["reviewed: looks good"]}


def build() -> StateGraph:
    builder = StateGraph(State)
    builder.add_sequence([research, draft, review])
    builder.add_edge(START, "research")
    builder.add_edge("review", END)
    return builder


def main(url: str) -> None:
    with from_url(url) as checkpointer:
        app = build().compile(checkpointer=checkpointer)
        config = {"configurable": {"thread_id": "quickstart"}}
        checkpointer.delete_thread("quickstart")  # start fresh on every run of the demo

        result = app.invoke({"messages": ["hello"], "topic": "durable graphs"}, config)
        print("result:", result["messages"])

        print("\ncheckpoints, newest first:")
        for snap in app.get_state_history(config):
            meta = snap.metadata or {}
            print(
                f"  step {meta['step']:>2}  {meta['source']:<6} next={list(snap.next)!s:<14}"
                f" messages={len(snap.values.get('messages', []))}"
                f"  id={snap.config['configurable']['checkpoint_id']}"
            )


if __name__ == "__main__":
    default = "sqlite:///" + os.path.join(tempfile.gettempdir(), "threadline-quickstart.db")
    main(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("THREADLINE_URL", default))
