"""``threads.join_stream``: a thread's runs as they run, each ended by a ``run_done``, and its
state updates (``state_update``)."""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from langgraph_sdk import get_sync_client
from servers import clients


def _until_done(parts: Iterator[Any], runs: int) -> list[Any]:
    """Read a thread stream until ``runs`` runs have ended (it stays open after that)."""
    seen, done = [], 0
    for part in parts:
        seen.append(part)
        if part.event == "metadata" and part.data.get("status") == "run_done":
            done += 1
            if done == runs:
                return seen
    raise AssertionError(f"the stream ended after {done} runs")


def _joined(url: str, thread_id: str, **kwargs: Any) -> concurrent.futures.Future[list[Any]]:
    runs = kwargs.pop("_runs", 2)
    pool = concurrent.futures.ThreadPoolExecutor(1)
    parts = get_sync_client(url=url).threads.join_stream(thread_id, **kwargs)
    future = pool.submit(_until_done, iter(parts), runs)
    pool.shutdown(wait=False)
    return future


def _wait_joined() -> None:
    time.sleep(0.5)  # let the stream's request arrive: runs queued after it are followed


def test_a_thread_stream_follows_its_runs_in_order(urls: list[str]) -> None:
    a, b = clients(urls)
    thread_id = a.threads.create()["thread_id"]
    joined = _joined(urls[0], thread_id)
    _wait_joined()
    first = b.runs.wait(thread_id, "echo", input={"messages": ["one"]})
    b.runs.wait(thread_id, "echo", input={"messages": ["two"]})
    parts = joined.result(timeout=30)
    starts = [p for p in parts if p.event == "metadata" and "attempt" in p.data]
    dones = [p for p in parts if p.event == "metadata" and p.data.get("status") == "run_done"]
    assert [s.data["run_id"] for s in starts] == [d.data["run_id"] for d in dones]
    assert first["seen"]["run_id"] == starts[0].data["run_id"]
    values = [p.data for p in parts if p.event == "values"]
    assert values[-1]["messages"] == ["one", "reply to one", "two", "reply to two"]
    ids = [p.id for p in parts]
    assert all(i and "-" in i for i in ids) and len(set(ids)) == len(ids)


def test_lifecycle_mode_and_resuming_after_an_event(urls: list[str]) -> None:
    a, _ = clients(urls)
    thread_id = a.threads.create()["thread_id"]
    joined = _joined(urls[-1], thread_id, stream_mode="lifecycle")
    _wait_joined()
    for text in ("one", "two"):
        a.runs.wait(thread_id, "echo", input={"messages": [text]})
    parts = joined.result(timeout=30)
    assert {p.event for p in parts} == {"metadata"} and len(parts) == 4
    # Resume after the first run's end: the second run is replayed, and only it.
    resumed = _joined(urls[0], thread_id, last_event_id=parts[1].id, _runs=1)
    again = resumed.result(timeout=30)
    assert again[0].data["run_id"] == parts[2].data["run_id"]
    assert again[-1].data == parts[3].data


def _first(parts: Iterator[Any], count: int) -> list[Any]:
    """The first ``count`` events of a stream that are not heartbeats (it stays open)."""
    seen = []
    for part in parts:
        seen.append(part)
        if len(seen) == count:
            return seen
    raise AssertionError(f"the stream ended after {len(seen)} events")


def _joined_for(url: str, thread_id: str, count: int, **kwargs: Any) -> Any:
    pool = concurrent.futures.ThreadPoolExecutor(1)
    parts = get_sync_client(url=url).threads.join_stream(thread_id, **kwargs)
    future = pool.submit(_first, iter(parts), count)
    pool.shutdown(wait=False)
    return future


def test_state_update_mode_sends_each_state_a_client_sets(urls: list[str]) -> None:
    a, b = clients(urls)
    thread_id = a.threads.create(graph_id="echo")["thread_id"]
    joined = _joined_for(urls[-1], thread_id, 2, stream_mode="state_update")
    _wait_joined()
    a.threads.update_state(thread_id, {"messages": ["seeded"]}, as_node="reply")
    b.runs.wait(thread_id, "echo", input={"messages": ["hi"]})  # a run's own: not sent
    b.threads.update_state(thread_id, {"messages": ["fixed"]}, as_node="reply")
    parts = joined.result(timeout=30)
    assert [p.event for p in parts] == ["state_update", "state_update"]
    first, second = (p.data for p in parts)
    assert first["thread_id"] == thread_id
    assert first["state"]["values"]["messages"] == ["seeded"]
    assert first["state"]["checkpoint"]["thread_id"] == thread_id
    assert set(first["state"]) >= {"values", "next", "tasks", "metadata", "checkpoint"}
    assert second["state"]["values"]["messages"] == ["seeded", "hi", "reply to hi", "fixed"]
    assert second["state"] == a.threads.get_state(thread_id)
    assert all(p.id.endswith("-state") for p in parts)


def test_runs_and_state_updates_in_one_stream_resume_by_id(urls: list[str]) -> None:
    a, b = clients(urls)
    thread_id = a.threads.create(graph_id="echo")["thread_id"]
    joined = _joined(urls[0], thread_id, stream_mode=["run_modes", "state_update"], _runs=2)
    _wait_joined()
    b.runs.wait(thread_id, "echo", input={"messages": ["one"]})
    b.threads.update_state(thread_id, {"messages": ["between"]}, as_node="reply")
    b.runs.wait(thread_id, "echo", input={"messages": ["two"]})
    parts = joined.result(timeout=30)
    events = [p.event for p in parts]
    updates = [i for i, e in enumerate(events) if e == "state_update"]
    dones = [i for i, p in enumerate(parts) if p.data.get("status") == "run_done"]
    assert len(updates) == 1 and dones[0] < updates[0] < dones[1]
    assert parts[updates[0]].data["state"]["values"]["messages"][-1] == "between"
    # After the first run's end: the update, then the second run; after the update: the run.
    both = ["run_modes", "state_update"]
    again = _joined(
        urls[-1], thread_id, last_event_id=parts[dones[0]].id, stream_mode=both, _runs=1
    )
    assert [p.id for p in again.result(timeout=30)] == [p.id for p in parts[dones[0] + 1 :]]
    after_update = _joined(
        urls[0], thread_id, last_event_id=parts[updates[0]].id, stream_mode=",".join(both), _runs=1
    )
    assert [p.id for p in after_update.result(timeout=30)] == [
        p.id for p in parts[updates[0] + 1 :]
    ]
    # The default mode (run_modes) leaves state updates out.
    plain = _joined(urls[0], thread_id, last_event_id=parts[dones[0]].id, _runs=1)
    assert "state_update" not in {p.event for p in plain.result(timeout=30)}


def test_bad_thread_stream_requests_get_4xx(urls: list[str]) -> None:
    a, _ = clients(urls)
    thread_id = a.threads.create()["thread_id"]
    unknown = httpx.get(f"{urls[0]}/threads/{thread_id}/stream", params={"stream_mode": "x"})
    assert unknown.status_code == 422 and "run_modes" in unknown.json()["detail"]
    bad_id = httpx.get(
        f"{urls[0]}/threads/{thread_id}/stream", headers={"Last-Event-ID": "nonsense"}
    )
    assert bad_id.status_code == 422
    missing = httpx.get(f"{urls[0]}/threads/00000000-0000-0000-0000-000000000000/stream")
    assert missing.status_code == 404
    with pytest.raises(httpx.HTTPStatusError):
        list(a.threads.join_stream("00000000-0000-0000-0000-000000000000"))
