"""``threadline serve`` driven by the official ``langgraph_sdk`` client, on SQLite (one
replica) and PostgreSQL (two replicas: calls go to both)."""

from __future__ import annotations

import concurrent.futures
import socket
import time
import uuid
from typing import Any

import httpx
import pytest
from langgraph_sdk import get_client, get_sync_client
from langgraph_sdk.errors import ConflictError, NotFoundError, UnprocessableEntityError
from servers import clients

from threadline.server.graphs import assistant_id_of


def test_ok_info_and_assistants(urls: list[str]) -> None:
    a, _ = clients(urls)
    assert httpx.get(urls[0] + "/ok").json() == {"ok": True}
    assert "version" in a.http.get("/info")
    found = a.assistants.search(limit=100)
    assert {x["graph_id"] for x in found} >= {"echo", "approval", "slow"}
    echo = a.assistants.get(assistant_id_of("echo"))
    assert echo["graph_id"] == "echo"
    assert a.assistants.get("echo")["assistant_id"] == echo["assistant_id"]
    graph = a.assistants.get_graph("echo")
    assert {n["id"] for n in graph["nodes"]} >= {"reply"}
    assert a.assistants.count(graph_id="echo") == 1


def test_wait_returns_values_and_config_reaches_the_node(urls: list[str]) -> None:
    a, b = clients(urls)
    thread = a.threads.create(metadata={"user": "ada"})
    result = b.runs.wait(thread["thread_id"], "echo", input={"messages": ["hi"]})
    assert result["messages"] == ["hi", "reply to hi"]
    seen = result["seen"]
    assert seen["thread_id"] == thread["thread_id"]
    assert seen["thread"].startswith("threadline-node")  # the server's own pool
    assert seen["graph_id"] == "echo" and seen["assistant_id"] == assistant_id_of("echo")
    (run,) = a.runs.list(thread["thread_id"])
    assert seen["run_id"] == run["run_id"] and run["status"] == "success"
    got = a.threads.get(thread["thread_id"])
    assert got["status"] == "idle" and got["metadata"] == {"user": "ada"}
    assert got["values"]["messages"] == ["hi", "reply to hi"]


def test_stream_sends_metadata_first_then_the_modes_asked_for(urls: list[str]) -> None:
    a, _ = clients(urls)
    thread = a.threads.create()
    parts = list(
        a.runs.stream(
            thread["thread_id"], "steps", input={"messages": []}, stream_mode=["updates", "values"]
        )
    )
    assert parts[0].event == "metadata" and parts[0].data["attempt"] == 1
    events = [p.event for p in parts[1:]]
    assert events.count("updates") == 2 and "values" in events
    assert parts[-1].event == "values" and parts[-1].data["messages"] == ["one", "two"]


def test_interrupt_then_resume_through_another_replica(urls: list[str]) -> None:
    a, b = clients(urls)
    thread_id = a.threads.create()["thread_id"]
    paused = a.runs.wait(thread_id, "approval", input={"messages": []})
    assert paused["__interrupt__"][0]["value"] == {"question": "approve?"}
    assert b.threads.get(thread_id)["status"] == "interrupted"
    state = b.threads.get_state(thread_id)
    assert state["next"] == ["ask"] and state["interrupts"][0]["value"]["question"] == "approve?"
    done = b.runs.wait(thread_id, "approval", command={"resume": "yes"})
    assert done["messages"] == ["answer: yes"]
    assert a.threads.get(thread_id)["status"] == "idle"


def test_history_and_update_state_as_node(urls: list[str]) -> None:
    a, b = clients(urls)
    thread_id = a.threads.create()["thread_id"]
    a.runs.wait(thread_id, "echo", input={"messages": ["x"]})
    history = b.threads.get_history(thread_id)
    assert [h["metadata"]["step"] for h in history] == [1, 0, -1]
    assert history[0]["values"]["messages"] == ["x", "reply to x"]
    older = b.threads.get_history(thread_id, limit=1, before=history[0]["checkpoint"])
    assert older[0]["checkpoint"] == history[1]["checkpoint"]
    b.threads.update_state(thread_id, {"messages": ["fixed"]}, as_node="reply")
    assert a.threads.get_state(thread_id)["values"]["messages"][-1] == "fixed"
    at = a.threads.get_state(thread_id, checkpoint_id=history[1]["checkpoint"]["checkpoint_id"])
    assert at["values"]["messages"] == ["x"]


def test_reject_refuses_and_stores_nothing(urls: list[str]) -> None:
    a, b = clients(urls)
    thread_id = a.threads.create()["thread_id"]
    first = a.runs.create(thread_id, "slow", input={"messages": ["nap:1.5"]})
    with pytest.raises(ConflictError):
        b.runs.create(thread_id, "echo", input={"messages": ["no"]}, multitask_strategy="reject")
    a.runs.join(thread_id, first["run_id"])
    runs = a.runs.list(thread_id)
    assert [r["run_id"] for r in runs] == [first["run_id"]]
    assert "no" not in a.threads.get_state(thread_id)["values"]["messages"]


def test_enqueue_runs_in_order(urls: list[str]) -> None:
    a, b = clients(urls)
    thread_id = a.threads.create()["thread_id"]
    first = a.runs.create(thread_id, "slow", input={"messages": ["nap:0.5"]})
    second = b.runs.create(thread_id, "echo", input={"messages": ["next"]})
    b.runs.join(thread_id, second["run_id"])
    assert a.runs.get(thread_id, first["run_id"])["status"] == "success"
    assert a.threads.get_state(thread_id)["values"]["messages"] == [
        "nap:0.5", "slept 0.5", "awake", "next", "reply to next",
    ]  # fmt: skip


@pytest.mark.parametrize("strategy", ["interrupt", "rollback"])
def test_interrupt_and_rollback_cancel_the_run_in_flight(urls: list[str], strategy: str) -> None:
    a, b = clients(urls)
    thread_id = a.threads.create()["thread_id"]
    first = a.runs.create(thread_id, "slow", input={"messages": ["nap:30"]})
    _wait_status(a, thread_id, first["run_id"], "running")
    started = time.monotonic()
    result = b.runs.wait(
        thread_id, "echo", input={"messages": ["urgent"]}, multitask_strategy=strategy
    )
    assert time.monotonic() - started < 20  # not after the 30 s nap
    assert result["messages"][-1] == "reply to urgent"
    ids = [r["run_id"] for r in a.runs.list(thread_id)]
    if strategy == "rollback":
        assert first["run_id"] not in ids
    else:
        assert a.runs.get(thread_id, first["run_id"])["status"] == "interrupted"


def test_cancel_a_running_run_from_another_replica(urls: list[str]) -> None:
    a, b = clients(urls)
    thread_id = a.threads.create()["thread_id"]
    run = a.runs.create(thread_id, "slow", input={"messages": ["nap:30"]})
    _wait_status(a, thread_id, run["run_id"], "running")
    b.runs.cancel(thread_id, run["run_id"], wait=True)
    assert a.runs.get(thread_id, run["run_id"])["status"] == "interrupted"
    assert a.threads.get(thread_id)["status"] == "idle"


def test_join_stream_with_last_event_id_on_another_replica(urls: list[str]) -> None:
    a, b = clients(urls)
    thread_id = a.threads.create()["thread_id"]
    run = a.runs.create(
        thread_id, "steps", input={"messages": []}, stream_mode="updates", stream_resumable=True
    )
    a.runs.join(thread_id, run["run_id"])
    everything = list(b.runs.join_stream(thread_id, run["run_id"]))
    assert [p.event for p in everything] == ["metadata", "updates", "updates"]
    rest = list(b.runs.join_stream(thread_id, run["run_id"], last_event_id="1"))
    assert [p.data for p in rest] == [everything[2].data]


def test_a_failing_run_reports_its_error(urls: list[str]) -> None:
    a, _ = clients(urls)
    thread_id = a.threads.create()["thread_id"]
    with pytest.raises(Exception, match="the node failed on purpose"):
        a.runs.wait(thread_id, "fails", input={"messages": []})
    parts = list(a.runs.stream(thread_id, "fails", input={"messages": []}))
    assert parts[-1].event == "error"
    assert parts[-1].data["error"] == "ValueError"
    assert a.threads.get(thread_id)["status"] == "error"


def test_stateless_runs_and_builder_graphs(urls: list[str]) -> None:
    a, _ = clients(urls)
    assert a.runs.wait(None, "builder", input={"messages": ["s"]})["messages"][-1] == "reply to s"
    parts = list(a.runs.stream(None, "echo", input={"messages": ["t"]}))
    assert parts[-1].data["messages"] == ["t", "reply to t"]


def test_threads_search_count_update_delete(urls: list[str]) -> None:
    a, b = clients(urls)
    tag = uuid.uuid4().hex
    ids = [a.threads.create(metadata={"tag": tag, "n": i})["thread_id"] for i in range(3)]
    found = b.threads.search(metadata={"tag": tag}, limit=10)
    assert sorted(t["thread_id"] for t in found) == sorted(ids)
    assert len(b.threads.search(metadata={"tag": tag}, limit=2)) == 2
    b.threads.update(ids[0], metadata={"extra": True})
    assert a.threads.get(ids[0])["metadata"] == {"tag": tag, "n": 0, "extra": True}
    b.threads.delete(ids[1])
    with pytest.raises(NotFoundError):
        a.threads.get(ids[1])
    with pytest.raises(ConflictError):
        a.threads.create(thread_id=ids[0])
    assert a.threads.create(thread_id=ids[0], if_exists="do_nothing")["thread_id"] == ids[0]


def test_bad_input_gets_4xx_and_the_server_stays_healthy(urls: list[str]) -> None:
    a, _ = clients(urls)
    thread_id = a.threads.create()["thread_id"]
    # runs.wait raises httpx's error (its reconnecting request), the others the SDK's own.
    with pytest.raises(httpx.HTTPStatusError) as unknown:
        a.runs.wait(thread_id, "no-such-graph", input={})
    assert unknown.value.response.status_code == 404
    assert "no-such-graph" in unknown.value.response.json()["detail"]
    with pytest.raises(NotFoundError):
        a.threads.get(str(uuid.uuid4()))
    with pytest.raises(httpx.HTTPStatusError) as missing:
        a.runs.wait(str(uuid.uuid4()), "echo", input={"messages": ["x"]})
    assert missing.value.response.status_code == 404
    with pytest.raises(UnprocessableEntityError):
        a.threads.get("not-a-uuid")
    bad = httpx.post(urls[0] + "/threads", content=b"{not json")
    assert bad.status_code == 422 and "JSON" in bad.json()["detail"]
    huge = httpx.post(urls[0] + "/threads", content=b"[" + b"1," * 6_000_000 + b"1]")
    assert huge.status_code == 413
    bad_strategy = httpx.post(
        f"{urls[0]}/threads/{thread_id}/runs",
        json={"assistant_id": "echo", "multitask_strategy": "sometimes"},
    )
    assert bad_strategy.status_code == 422
    assert httpx.get(urls[0] + "/ok").status_code == 200


def test_an_oversized_body_is_refused_before_it_is_read(urls: list[str]) -> None:
    host, port = urls[0].removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        # Announces a gigabyte, sends one byte: the answer must not wait for the rest.
        sock.sendall(
            b"POST /threads HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1073741824\r\n\r\n{"
        )
        assert sock.recv(4096).startswith(b"HTTP/1.1 413")

    def chunks() -> Any:  # no Content-Length: counted as it arrives
        for _ in range(12):
            yield b" " * (1024 * 1024)

    streamed = httpx.post(urls[0] + "/threads", content=chunks())
    assert streamed.status_code == 413 and "10 MiB" in streamed.json()["detail"]
    assert httpx.get(urls[0] + "/ok").status_code == 200


async def test_the_async_client_works_too(urls: list[str]) -> None:
    client = get_client(url=urls[-1])
    thread = await client.threads.create()
    result = await client.runs.wait(thread["thread_id"], "echo", input={"messages": ["async"]})
    assert result["messages"] == ["async", "reply to async"]
    events = [p.event async for p in client.runs.stream(thread["thread_id"], "echo", input={})]
    assert events[0] == "metadata"


def _wait_status(client: Any, thread_id: str, run_id: str, status: str) -> None:
    deadline = time.monotonic() + 30
    while client.runs.get(thread_id, run_id)["status"] != status:
        assert time.monotonic() < deadline, f"run {run_id} never became {status}"
        time.sleep(0.05)


def test_two_replicas_one_thread_two_messages_at_once_each_applied_once(
    postgres_servers: Any,
) -> None:
    """The seed question: 20 rounds of two simultaneous messages on one thread, sent to two
    replicas; every message applied exactly once, each with its reply."""
    a, b = (get_sync_client(url=r.url) for r in postgres_servers)
    thread_id = a.threads.create()["thread_id"]
    sent = []
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        for i in range(20):
            pair = [f"m{i}a", f"m{i}b"]
            sent += pair
            futures = [
                pool.submit(c.runs.wait, thread_id, "echo", input={"messages": [m]})
                for c, m in zip((a, b), pair, strict=True)
            ]
            for f in futures:
                f.result()
    messages = a.threads.get_state(thread_id)["values"]["messages"]
    assert len(messages) == 80
    inputs = messages[0::2]
    assert sorted(inputs) == sorted(sent)
    assert messages[1::2] == [f"reply to {m}" for m in inputs]
    assert len(a.runs.list(thread_id, limit=100)) == 40
