"""``interrupt(value, response_schema=...)`` through ``threadline serve`` and the official
``langgraph_sdk`` client, on SQLite and on two PostgreSQL replicas.

The JSON shapes are LangGraph's server's (langgraph-api 0.16, observed with ``langgraph dev``):
the thread's ``interrupts``, the state's ``interrupts`` and ``tasks[].interrupts`` carry
``"response_schema"`` only when the graph gave one; stream events and a run's output carry every
field of the interrupt, ``"response_schema": null`` when there is none. An answer the schema
rejects fails the run (status ``error``), and the thread stays paused on the same interrupt
(status ``interrupted``).
"""

from __future__ import annotations

from typing import Any

import pytest
from servers import clients

DECISION = {
    "properties": {
        "approved": {"title": "Approved", "type": "boolean"},
        "note": {"default": "", "title": "Note", "type": "string"},
    },
    "required": ["approved"],
    "title": "Decision",
    "type": "object",
}
QUESTION = {"question": "approve?"}


def _interrupts_of(thread: dict[str, Any]) -> list[dict[str, Any]]:
    return [i for pending in thread["interrupts"].values() for i in pending]


def test_interrupts_show_the_schema_everywhere(urls: list[str]) -> None:
    a, b = clients(urls)
    thread_id = a.threads.create()["thread_id"]
    parts = list(
        a.runs.stream(thread_id, "schema", input={"messages": []}, stream_mode=["updates"])
    )
    (update,) = [p.data for p in parts if p.event == "updates" and "__interrupt__" in p.data]
    (asked,) = update["__interrupt__"]
    assert asked == {"value": QUESTION, "id": asked["id"], "response_schema": DECISION}
    shown = {"value": QUESTION, "id": asked["id"], "response_schema": DECISION}

    thread = b.threads.get(thread_id)
    assert thread["status"] == "interrupted" and _interrupts_of(thread) == [shown]
    state = b.threads.get_state(thread_id)
    assert state["interrupts"] == [shown] and state["tasks"][0]["interrupts"] == [shown]
    assert b.threads.get_history(thread_id, limit=1)[0]["interrupts"] == [shown]

    # A dict schema is shown as it is and does not check the answer; no schema, no key
    # (but null in a run's output, as in LangGraph's).
    out = b.runs.wait(thread_id, "schema", command={"resume": {asked["id"]: {"approved": 1}}})
    (why,) = out["__interrupt__"]
    assert (why["value"], why["response_schema"]) == ("why?", {"type": "string"})
    out = a.runs.wait(thread_id, "schema", command={"resume": 42})
    (rest,) = out["__interrupt__"]
    assert rest == {"value": "anything else?", "id": rest["id"], "response_schema": None}
    plain = {"value": "anything else?", "id": rest["id"]}
    assert _interrupts_of(b.threads.get(thread_id)) == [plain]
    assert b.threads.get_state(thread_id)["interrupts"] == [plain]
    done = b.runs.wait(thread_id, "schema", command={"resume": "fine"})
    assert done["messages"] == ["approved: True", "42 / fine"]


def test_a_rejected_answer_fails_the_run_and_the_thread_stays_paused(urls: list[str]) -> None:
    a, b = clients(urls)
    thread_id = a.threads.create()["thread_id"]
    (asked,) = a.runs.wait(thread_id, "schema", input={"messages": []})["__interrupt__"]
    with pytest.raises(Exception, match="ValidationError"):
        b.runs.wait(thread_id, "schema", command={"resume": {"approved": "maybe"}})
    assert [r["status"] for r in a.runs.list(thread_id)] == ["error", "success"]
    # The run failed, but the thread is paused on the same question, as its state says: its
    # row shows it interrupted with that interrupt (it used to say "error").
    shown = {"value": QUESTION, "id": asked["id"], "response_schema": DECISION}
    thread = a.threads.get(thread_id)
    assert thread["status"] == "interrupted" and _interrupts_of(thread) == [shown]
    # Streamed, the rejection reaches the client as LangGraph's server sends a run's error.
    parts = list(b.runs.stream(thread_id, "schema", command={"resume": {"approved": 3}}))
    (error,) = [p.data for p in parts if p.event == "error"]
    assert error["error"] == "ValidationError" and "approved" in error["message"]
    assert [r["status"] for r in a.runs.list(thread_id)] == ["error", "error", "success"]
    thread = b.threads.get(thread_id)
    assert thread["status"] == "interrupted" and _interrupts_of(thread) == [shown]
    state = a.threads.get_state(thread_id)
    assert state["next"] == ["decide"] and state["interrupts"] == [shown]
    (task,) = state["tasks"]
    assert task["interrupts"] == [shown] and "ValidationError" in task["error"]

    out = b.runs.wait(thread_id, "schema", command={"resume": {asked["id"]: {"approved": False}}})
    assert out["messages"] == ["approved: False"]
    assert out["__interrupt__"][0]["value"] == "why?"
    assert a.threads.get(thread_id)["status"] == "interrupted"
