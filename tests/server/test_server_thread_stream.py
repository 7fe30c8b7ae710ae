"""``threads.join_stream``: a thread's runs as they run, each ended by a ``run_done``."""

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
