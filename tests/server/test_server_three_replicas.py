"""Three ``threadline serve`` replicas over one PostgreSQL database, a client's calls spread
across all three."""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Iterator
from typing import Any

import pytest
from langgraph_sdk import get_sync_client
from servers import Replica, replicas


@pytest.fixture(scope="module")
def three(postgres_database: str) -> Iterator[list[Replica]]:
    with replicas(postgres_database, 3) as started:
        yield started


def _clients(three: list[Replica]) -> list[Any]:
    return [get_sync_client(url=r.url) for r in three]


def test_three_messages_at_once_through_three_replicas_each_applied_once(
    three: list[Replica],
) -> None:
    clients = _clients(three)
    thread_id = clients[0].threads.create()["thread_id"]
    sent: list[str] = []
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        for i in range(10):
            trio = [f"m{i}{x}" for x in "abc"]
            sent += trio
            futures = [
                pool.submit(c.runs.wait, thread_id, "echo", input={"messages": [m]})
                for c, m in zip(clients, trio, strict=True)
            ]
            for f in futures:
                f.result()
    messages = clients[1].threads.get_state(thread_id)["values"]["messages"]
    inputs = messages[0::2]
    assert sorted(inputs) == sorted(sent)
    assert messages[1::2] == [f"reply to {m}" for m in inputs]
    runs = clients[2].runs.list(thread_id, limit=100)
    assert len(runs) == 30 and {r["status"] for r in runs} == {"success"}


def test_run_on_one_followed_on_another_cancelled_from_the_third(three: list[Replica]) -> None:
    a, b, c = _clients(three)
    thread_id = a.threads.create()["thread_id"]
    run = a.runs.create(thread_id, "slow", input={"messages": ["nap:30"]}, stream_mode="values")
    deadline = time.monotonic() + 30
    while b.runs.get(thread_id, run["run_id"])["status"] != "running":
        assert time.monotonic() < deadline, "the run was never claimed"
        time.sleep(0.05)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        parts = lambda: [p.event for p in b.runs.join_stream(thread_id, run["run_id"])]  # noqa: E731
        joined = pool.submit(parts)
        c.runs.cancel(thread_id, run["run_id"], wait=True)
        events = joined.result(timeout=30)
    assert events[0] == "metadata"
    assert a.runs.get(thread_id, run["run_id"])["status"] == "interrupted"
    # The thread takes the next message at once, through any replica.
    assert c.runs.wait(thread_id, "echo", input={"messages": ["after"]})["messages"][-1] == (
        "reply to after"
    )
