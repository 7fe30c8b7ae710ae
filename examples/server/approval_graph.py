"""The graph `examples/serve_demo.py` serves: draft -> a person approves or edits -> publish.

`langgraph.json` next to this file names it; the server runs it on its own database, so the
graph is compiled without a checkpointer here.
"""

from __future__ import annotations

import operator
from typing import Annotated, Any, TypedDict

from threadline.graph import END, START, StateGraph
from threadline.types import interrupt


class State(TypedDict):
    topic: str
    draft: str
    log: Annotated[list[str], operator.add]


def write_draft(state: State) -> dict[str, Any]:
    return {"draft": f"Ten facts about {state['topic']}.", "log": ["drafted"]}


def review(state: State) -> dict[str, Any]:
    # Pauses the run; the server marks the thread "interrupted" until a client resumes it.
    decision = interrupt({"draft": state["draft"], "ask": "approve, or send an edited text"})
    if decision == "approve":
        return {"log": ["approved"]}
    return {"draft": decision, "log": ["edited by reviewer"]}


def publish(state: State) -> dict[str, Any]:
    return {"log": [f"published: {state['draft']}"]}


builder = StateGraph(State)
builder.add_sequence([write_draft, review, publish])
builder.add_edge(START, "write_draft")
builder.add_edge("publish", END)
graph = builder.compile()
