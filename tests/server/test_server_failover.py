"""A replica that dies (SIGKILL) or is shut down (SIGTERM) mid-run: another replica finishes
its run from the last committed checkpoint, and no committed step runs twice."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from backends import postgres_url_or_skip
from langgraph_sdk import get_sync_client
from servers import fresh_postgres_database, replicas, start_replica


@pytest.fixture
def database() -> Iterator[str]:
    with fresh_postgres_database(postgres_url_or_skip()) as url:
        yield url


def _wait_for(path: Path) -> None:
    deadline = time.monotonic() + 60
    while not (path.exists() and path.read_text()):
        assert time.monotonic() < deadline, "the run never reached step_two"
        time.sleep(0.05)


@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM"])
def test_another_replica_finishes_the_run(database: str, tmp_path: Path, how: str) -> None:
    marker = tmp_path / "marker"
    slow = {"THREADLINE_TEST_MARKER": str(marker), "THREADLINE_TEST_STEP_SECONDS": "60"}
    with replicas(database, 1, env=slow) as (doomed,):
        client = get_sync_client(url=doomed.url)
        thread_id = client.threads.create()["thread_id"]
        run = client.runs.create(thread_id, "steps", input={"messages": []}, stream_mode="updates")
        _wait_for(marker)  # step_one is committed; step_two is running
        if how == "SIGKILL":
            doomed.kill()
        else:
            doomed.proc.send_signal(15)
            doomed.proc.wait(timeout=60)
    with replicas(database, 1, env={**slow, "THREADLINE_TEST_STEP_SECONDS": "0"}) as (survivor,):
        client = get_sync_client(url=survivor.url)
        client.runs.join(thread_id, run["run_id"])
        finished = client.runs.get(thread_id, run["run_id"])
        assert finished["status"] == "success"
        values = client.threads.get_state(thread_id)["values"]
        assert values["messages"] == ["one", "two"]  # step_one ran once
        events = list(client.runs.join_stream(thread_id, run["run_id"]))
        attempts = [e.data["attempt"] for e in events if e.event == "metadata"]
        assert attempts == [1, 2]
        assert marker.read_text().count("two") == 2  # step_two was begun again, once


def test_a_run_finishing_in_its_grace_period_keeps_its_lease(database: str, tmp_path: Path) -> None:
    """SIGTERM with a grace period longer than the lease: the run keeps its lease while it
    finishes, so no other replica takes it over and its outcome is recorded once."""
    marker = tmp_path / "marker"
    slow = {"THREADLINE_TEST_MARKER": str(marker), "THREADLINE_TEST_STEP_SECONDS": "3"}
    api_only = start_replica(database, args=["--workers", "0", "--lease", "1"])
    try:
        grace = ["--lease", "1", "--shutdown-grace", "20"]
        executor = start_replica(database, env=slow, args=grace)
        client = get_sync_client(url=api_only.url)
        thread_id = client.threads.create()["thread_id"]
        run = client.runs.create(thread_id, "steps", input={"messages": []})
        _wait_for(marker)
        executor.proc.send_signal(15)  # 3 s of step_two left: three leases long
        client.runs.join(thread_id, run["run_id"])
        assert executor.proc.wait(timeout=60) in (0, -15)  # uvicorn re-raises SIGTERM
        assert client.runs.get(thread_id, run["run_id"])["status"] == "success"
        events = list(client.runs.join_stream(thread_id, run["run_id"]))
        assert [e.data["attempt"] for e in events if e.event == "metadata"] == [1]
        assert client.threads.get_state(thread_id)["values"]["messages"] == ["one", "two"]
    finally:
        api_only.stop()
