"""Rolling runs back through ``langgraph_sdk`` against real servers: ``runs.cancel(...,
action="rollback")`` and ``multitask_strategy="rollback"`` leave the thread's history exactly
as it was before the run (its checkpoints, subgraph ones included, are deleted), as on
LangGraph's server; a run that started the thread leaves it empty."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from langgraph_sdk.errors import NotFoundError
from servers import clients


def until(check: Callable[[], Any], what: str, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return found


def history(client: Any, thread_id: str, ns: str | None = None) -> list[dict[str, Any]]:
    """The whole history of the thread (of namespace ``ns``), newest first."""
    checkpoint = None if ns is None else {"checkpoint_ns": ns}
    return list(client.threads.get_history(thread_id, limit=1000, checkpoint=checkpoint))


def gone(client: Any, thread_id: str, run_id: str) -> bool:
    try:
        client.runs.get(thread_id, run_id)
    except NotFoundError:
        return True
    return False


def messages_of(client: Any, thread_id: str) -> list[Any]:
    return list((client.threads.get_state(thread_id)["values"] or {}).get("messages", []))


def start_ticking(client: Any, thread_id: str, assistant: str = "stages", **options: Any) -> Any:
    """A run that commits a step, then ticks for ~10 s (until it is cancelled)."""
    run = client.runs.create(thread_id, assistant, input={"messages": ["ticks:100:0.1"]}, **options)
    done = "first" if assistant == "stages" else "reply to ticks:100:0.1"
    until(lambda: done in messages_of(client, thread_id), "the run's first step to commit")
    return run


def on_top_of(before: list[dict[str, Any]], after: list[dict[str, Any]]) -> list[Any]:
    """The checkpoints of ``after`` that ``before`` lacks: newer ones, on its head."""
    new = after[: len(after) - len(before)]
    assert new and after[len(new) :] == before
    assert new[-1]["parent_checkpoint"] == before[0]["checkpoint"]
    return new


def two_turns(client: Any) -> tuple[str, list[dict[str, Any]]]:
    thread_id = client.threads.create()["thread_id"]
    client.runs.wait(thread_id, "echo", input={"messages": ["x"]})
    client.runs.wait(thread_id, "echo", input={"messages": ["y"]})
    return thread_id, history(client, thread_id)


def test_cancel_with_rollback_restores_the_history(urls: list[str]) -> None:
    a, b = clients(urls)
    thread_id, before = two_turns(a)
    run = start_ticking(a, thread_id)
    assert len(history(a, thread_id)) > len(before)
    b.runs.cancel(thread_id, run["run_id"], wait=True, action="rollback")
    assert history(a, thread_id) == before
    assert history(b, thread_id) == before
    state = b.threads.get_state(thread_id)
    assert state["checkpoint"] == before[0]["checkpoint"]
    assert state["values"] == before[0]["values"]
    assert a.threads.get(thread_id)["values"] == before[0]["values"]
    until(lambda: gone(a, thread_id, run["run_id"]), "the run to be deleted")
    # The next run goes on from the restored head, on either replica.
    b.runs.wait(thread_id, "echo", input={"messages": ["z"]})
    new = on_top_of(before, history(a, thread_id))
    assert new[0]["values"]["messages"] == [
        "x", "reply to x", "y", "reply to y", "z", "reply to z",
    ]  # fmt: skip


def test_multitask_rollback_keeps_nothing_of_the_run_it_cancels(urls: list[str]) -> None:
    a, b = clients(urls)
    thread_id, before = two_turns(a)
    first = start_ticking(a, thread_id)
    b.runs.wait(thread_id, "echo", input={"messages": ["urgent"]}, multitask_strategy="rollback")
    after = history(b, thread_id)
    new = on_top_of(before, after)  # the urgent run's checkpoints, on the old head
    assert {s["metadata"]["run_id"] for s in new} != {first["run_id"]}
    assert all(s["metadata"].get("run_id") != first["run_id"] for s in after)
    assert [r["run_id"] for r in a.runs.list(thread_id)] != [first["run_id"]]


def test_rollback_of_a_run_from_an_older_checkpoint(urls: list[str]) -> None:
    """A time-travel run branches off an old checkpoint; rolling it back restores the head the
    thread had before it, not the checkpoint it branched from."""
    a, b = clients(urls)
    thread_id, before = two_turns(a)
    old = next(s for s in before if s["values"]["messages"] == ["x", "reply to x"])
    run = a.runs.create(
        thread_id,
        "stages",
        input={"messages": ["ticks:100:0.1"]},
        checkpoint_id=old["checkpoint"]["checkpoint_id"],
    )
    until(lambda: "first" in messages_of(a, thread_id), "the run's first step to commit")
    assert messages_of(a, thread_id)[:3] == ["x", "reply to x", "ticks:100:0.1"]
    b.runs.cancel(thread_id, run["run_id"], wait=True, action="rollback")
    assert history(a, thread_id) == before
    assert messages_of(b, thread_id) == ["x", "reply to x", "y", "reply to y"]


def subgraph_namespace(parts: Any) -> str:
    """The namespace of the first subgraph event of a run's stream."""
    for part in parts:
        if "|" in part.event:
            return str(part.event.split("|", 1)[1])
    raise AssertionError("the run streamed no subgraph event")


def test_rollback_deletes_the_run_subgraph_checkpoints(urls: list[str]) -> None:
    a, b = clients(urls)
    thread_id = a.threads.create()["thread_id"]
    kept_ns = subgraph_namespace(
        a.runs.stream(
            thread_id,
            "nested_stages",
            input={"messages": ["hello"]},  # three quick ticks
            stream_mode="updates",
            stream_subgraphs=True,
        )
    )
    for earlier in a.runs.list(thread_id):  # the stream was left at its first subgraph event
        a.runs.join(thread_id, earlier["run_id"])
    before = history(a, thread_id)
    kept = history(a, thread_id, kept_ns)
    assert kept and before

    run = start_ticking(
        a, thread_id, "nested_stages", stream_mode="updates", stream_subgraphs=True,
        stream_resumable=True,
    )  # fmt: skip
    doomed_ns = subgraph_namespace(a.runs.join_stream(thread_id, run["run_id"]))
    assert doomed_ns != kept_ns
    # The event can come before its checkpoint is committed (durability "async").
    deadline = time.monotonic() + 30
    while not history(a, thread_id, doomed_ns):
        assert time.monotonic() < deadline, "the subgraph never committed a checkpoint"
        time.sleep(0.05)
    b.runs.cancel(thread_id, run["run_id"], wait=True, action="rollback")
    assert history(a, thread_id) == before
    assert history(b, thread_id, doomed_ns) == []
    assert history(b, thread_id, kept_ns) == kept


def test_rollback_of_the_run_that_started_the_thread_leaves_no_history(urls: list[str]) -> None:
    a, b = clients(urls)
    thread_id = a.threads.create()["thread_id"]
    run = start_ticking(a, thread_id)
    b.runs.cancel(thread_id, run["run_id"], wait=True, action="rollback")
    assert history(a, thread_id) == []
    assert b.runs.wait(thread_id, "echo", input={"messages": ["z"]})["messages"] == [
        "z", "reply to z",
    ]  # fmt: skip


def paused(client: Any) -> tuple[str, list[dict[str, Any]]]:
    """A thread of ``vetted`` paused at its question; its history."""
    thread_id = client.threads.create()["thread_id"]
    client.runs.wait(thread_id, "vetted", input={"messages": ["go"]})
    assert client.threads.get(thread_id)["status"] == "interrupted"
    return thread_id, history(client, thread_id)


def assert_paused_as_before(client: Any, thread_id: str, before: list[dict[str, Any]]) -> None:
    assert history(client, thread_id) == before
    state = client.threads.get_state(thread_id)
    assert state["next"] == ["vet"]
    assert [i["value"] for i in state["interrupts"]] == [{"question": "go on?"}]
    thread = client.threads.get(thread_id)
    assert thread["status"] == "interrupted"
    assert [i["value"] for i in thread["interrupts"][state["tasks"][0]["id"]]] == [
        {"question": "go on?"}
    ]
    # The question is open again: a new answer is the one taken.
    out = client.runs.wait(thread_id, "vetted", command={"resume": {"say": "second"}})
    assert out["messages"] == ["go", "answer: second", "ticked 3"]


def test_rollback_of_a_resume_before_it_commits_reopens_the_question(urls: list[str]) -> None:
    a, b = clients(urls)
    thread_id, before = paused(a)
    run = a.runs.create(thread_id, "vetted", command={"resume": {"say": "first", "pause": 60}})
    # The answer is saved against the paused checkpoint as the run starts: no question left.
    until(lambda: not a.threads.get_state(thread_id)["interrupts"], "the answer to be saved")
    b.runs.cancel(thread_id, run["run_id"], wait=True, action="rollback")
    assert_paused_as_before(b, thread_id, before)


def test_rollback_of_a_resume_that_went_on_reopens_the_question(urls: list[str]) -> None:
    a, b = clients(urls)
    thread_id, before = paused(a)
    answer = {"say": "first", "ticks": "ticks:100:0.1"}
    run = a.runs.create(thread_id, "vetted", command={"resume": answer})
    until(lambda: "answer: first" in messages_of(a, thread_id), "the answered step to commit")
    b.runs.cancel(thread_id, run["run_id"], wait=True, action="rollback")
    assert_paused_as_before(a, thread_id, before)
