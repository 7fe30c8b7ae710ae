"""A long ``runs.wait`` answers as LangGraph's server does: headers (with ``Location``) first,
newlines while the run goes, then the result, so a client cut off mid-wait reconnects to the
run's ``/join``, through a load balancer to another replica."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from backends import postgres_url_or_skip
from langgraph_sdk import get_sync_client
from proxy import failover_proxy
from servers import fresh_postgres_database, replicas, start_replica


def test_a_long_wait_sends_its_headers_at_once_then_heartbeats(urls: list[str]) -> None:
    client = get_sync_client(url=urls[0])
    thread_id = client.threads.create()["thread_id"]
    body = {"assistant_id": "slow", "input": {"messages": ["nap:7.5"]}}
    with (
        httpx.Client(base_url=urls[0], timeout=30) as http,
        http.stream("POST", f"/threads/{thread_id}/runs/wait", json=body) as response,
    ):
        # The headers came while the run is still going.
        assert response.status_code == 200
        location = response.headers["location"]
        run_id = location.split("/")[-2]
        assert location == f"/threads/{thread_id}/runs/{run_id}/join"
        assert client.runs.get(thread_id, run_id)["status"] == "running"
        received = response.read()
    assert received.startswith(b"\n")  # a heartbeat: the run took longer than one
    result = httpx.Response(200, content=received).json()
    assert result["messages"] == ["nap:7.5", "slept 7.5", "awake"]


def test_a_quick_wait_is_one_json_body(urls: list[str]) -> None:
    client = get_sync_client(url=urls[0])
    thread_id = client.threads.create()["thread_id"]
    body = {"assistant_id": "echo", "input": {"messages": ["hi"]}}
    response = httpx.post(f"{urls[0]}/threads/{thread_id}/runs/wait", json=body, timeout=30)
    assert response.headers["content-length"] == str(len(response.content))
    assert response.json()["messages"][0] == "hi"
    assert response.headers["location"].endswith("/join")


@pytest.fixture
def database() -> Iterator[str]:
    with fresh_postgres_database(postgres_url_or_skip()) as url:
        yield url


def test_a_wait_cut_off_by_its_replica_dying_reconnects_to_another(
    database: str, tmp_path: Path
) -> None:
    marker = tmp_path / "marker"
    env = {"THREADLINE_TEST_MARKER": str(marker), "THREADLINE_TEST_STEP_SECONDS": "60"}
    doomed = start_replica(database, env=env, args=["--lease", "1"])
    quick = {**env, "THREADLINE_TEST_STEP_SECONDS": "0"}
    with replicas(database, 1, env=quick, args=["--lease", "1"]) as (survivor,):
        try:
            with failover_proxy([doomed.url, survivor.url]) as url:
                client = get_sync_client(url=url)
                thread_id = client.threads.create()["thread_id"]
                outcome: list[Any] = []

                def wait() -> None:
                    outcome.append(client.runs.wait(thread_id, "steps", input={"messages": []}))

                waiter = threading.Thread(target=wait)
                with pytest.warns(UserWarning, match="reconnect"):
                    waiter.start()
                    deadline = time.monotonic() + 60
                    while not (marker.exists() and "two" in marker.read_text()):
                        assert time.monotonic() < deadline, "the run never reached step_two"
                        time.sleep(0.05)
                    time.sleep(1.5)  # past the moment the wait sends its headers
                    doomed.kill()  # the wait's replica, and the run's
                    waiter.join(60)
                assert not waiter.is_alive()
                # The survivor took the run over and the client got its result after all.
                assert outcome[0]["messages"] == ["one", "two"]
                assert marker.read_text().count("two") == 2
        finally:
            doomed.kill()
