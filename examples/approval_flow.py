"""Approval flow: draft -> a person approves or edits -> publish. Survives a process restart.

Run it twice to see the pause outlive the process:
    python examples/approval_flow.py draft   # drafts, then pauses for review; the process exits
    python examples/approval_flow.py approve # a new process resumes the same thread
With no argument it does both in one process (what the test suite runs).
"""

from __future__ import annotations

import operator
import os
import sys
import tempfile
from typing import Annotated, Any, TypedDict

from threadline.checkpoint.sqlite import SqliteSaver
from threadline.graph import END, START, StateGraph
from threadline.types import Command, interrupt

DB = os.environ.get("APPROVAL_DB", os.path.join(tempfile.gettempdir(), "threadline-approval.db"))
CONFIG = {"configurable": {"thread_id": "post-1"}}


class State(TypedDict):
    topic: str
    draft: str
    log: Annotated[list[str], operator.add]


def write_draft(state: State) -> dict[str, Any]:
    return {"draft": f"Ten facts about {state['topic']}.", "log": ["drafted"]}


def review(state: State) -> dict[str, Any]:
    # Pauses the run; the value reaches whoever reviews. The answer comes back on resume.
    decision = interrupt({"draft": state["draft"], "ask": "approve, or send an edited text"})
    if decision == "approve":
        return {"log": ["approved"]}
    return {"draft": decision, "log": ["edited by reviewer"]}


def publish(state: State) -> dict[str, Any]:
    return {"log": [f"published: {state['draft']}"]}


def build(saver: SqliteSaver) -> Any:
    builder = StateGraph(State)
    builder.add_sequence([write_draft, review, publish])
    builder.add_edge(START, "write_draft")
    builder.add_edge("publish", END)
    return builder.compile(checkpointer=saver)


def start() -> None:
    with SqliteSaver.from_conn_string(DB) as saver:
        saver.delete_thread("post-1")
        app = build(saver)
        result = app.invoke({"topic": "otters", "log": []}, CONFIG)
        (pending,) = result["__interrupt__"]
        print("waiting for review:", pending.value)
        print("next:", app.get_state(CONFIG).next)


def answer(decision: str) -> None:
    with SqliteSaver.from_conn_string(DB) as saver:
        app = build(saver)
        state = app.get_state(CONFIG)
        print("found the paused thread at", state.next, "asking:", state.interrupts[0].value["ask"])
        result = app.invoke(Command(resume=decision), CONFIG)
        print("log:", result["log"])


if __name__ == "__main__":
    step = sys.argv[1] if len(sys.argv) > 1 else "both"
    if step in ("draft", "both"):
        start()
    if step in ("approve", "both"):
        answer("approve")
    if step == "edit":
        answer("Eleven facts about otters.")
