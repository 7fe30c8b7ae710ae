"""Run options of the Agent Server API through ``langgraph_sdk`` against real servers: batches,
bulk cancel, cancel with rollback, ``after_seconds``, ``on_disconnect``, ``on_completion``,
webhooks, joining streams mid-run on another replica, and every stream mode."""

from __future__ import annotations

import asyncio
import http.server
import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from langgraph_sdk import get_client, get_sync_client
from langgraph_sdk.errors import NotFoundError, UnprocessableEntityError
from servers import clients


def until(check: Callable[[], Any], what: str, timeout: float = 30) -> Any:
    """Poll ``check`` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return found


def status_of(client: Any, thread_id: str, run_id: str) -> str:
    return str(client.runs.get(thread_id, run_id)["status"])


def messages_of(client: Any, thread_id: str) -> list[Any]:
    return list((client.threads.get_state(thread_id)["values"] or {}).get("messages", []))


def test_create_batch_queues_stateless_runs(urls: list[str]) -> None:
    a, b = clients(urls)
    runs = a.runs.create_batch(
        [
            {"assistant_id": "echo", "input": {"messages": ["b1"]}},
            {"assistant_id": "echo", "input": {"messages": ["b2"]}, "metadata": {"n": 2}},
        ]
    )
    assert len(runs) == 2 and runs[0]["thread_id"] != runs[1]["thread_id"]
    assert runs[1]["metadata"] == {"n": 2}
    results = [b.runs.join(r["thread_id"], r["run_id"]) for r in runs]
    assert [r["messages"] for r in results] == [["b1", "reply to b1"], ["b2", "reply to b2"]]
    bad = httpx.post(
        urls[0] + "/runs/batch", json=[{"assistant_id": "echo"}, {"assistant_id": "nope"}]
    )
    assert bad.status_code == 404 and "run 1" in bad.json()["detail"]
    assert httpx.post(urls[0] + "/runs/batch", json={"not": "a list"}).status_code == 422


def test_cancel_many_by_ids_and_by_status(urls: list[str]) -> None:
    a, b = clients(urls)
    thread_id = a.threads.create()["thread_id"]
    running = a.runs.create(thread_id, "slow", input={"messages": ["nap:30"]})
    queued = a.runs.create(thread_id, "echo", input={"messages": ["later"]})
    until(lambda: status_of(a, thread_id, running["run_id"]) == "running", "the run to start")
    b.runs.cancel_many(thread_id=thread_id, run_ids=[running["run_id"], queued["run_id"]])
    until(lambda: status_of(a, thread_id, running["run_id"]) == "interrupted", "the cancel")
    assert status_of(b, thread_id, queued["run_id"]) == "interrupted"
    until(lambda: a.threads.get(thread_id)["status"] == "idle", "the thread to be idle")
    assert "later" not in messages_of(a, thread_id)

    other = a.threads.create()["thread_id"]
    delayed = a.runs.create(other, "echo", input={"messages": ["x"]}, after_seconds=60)
    b.runs.cancel_many(status="pending")
    assert status_of(a, other, delayed["run_id"]) == "interrupted"
    assert a.threads.get(other)["status"] == "idle"
    with pytest.raises(UnprocessableEntityError):
        a.runs.cancel_many()
    with pytest.raises(UnprocessableEntityError):
        a.runs.cancel_many(status="finished")  # type: ignore[arg-type]


def _start_stages(client: Any, thread_id: str, **options: Any) -> dict[str, Any]:
    """A run that commits its ``first`` step, then ticks for ~10 s."""
    run = client.runs.create(thread_id, "stages", input={"messages": ["ticks:100:0.1"]}, **options)
    until(lambda: "first" in messages_of(client, thread_id), "the first step to commit")
    return dict(run)


@pytest.mark.parametrize("action", ["interrupt", "rollback"])
def test_cancel_and_wait_interrupt_keeps_rollback_restores(urls: list[str], action: str) -> None:
    a, b = clients(urls)
    thread_id = a.threads.create()["thread_id"]
    a.runs.wait(thread_id, "echo", input={"messages": ["x"]})
    before = messages_of(a, thread_id)
    run = _start_stages(a, thread_id)
    started = time.monotonic()
    b.runs.cancel(thread_id, run["run_id"], wait=True, action=action)
    assert time.monotonic() - started < 8  # not after the ~10 s of ticks
    assert a.threads.get(thread_id)["status"] == "idle"
    if action == "interrupt":
        assert status_of(a, thread_id, run["run_id"]) == "interrupted"
        assert messages_of(b, thread_id) == [*before, "ticks:100:0.1", "first"]
    else:
        with pytest.raises(NotFoundError):
            a.runs.get(thread_id, run["run_id"])
        assert messages_of(b, thread_id) == before
        assert a.threads.get(thread_id)["values"]["messages"] == before
    after = b.runs.wait(thread_id, "echo", input={"messages": ["y"]})
    assert after["messages"][-2:] == ["y", "reply to y"]


def test_rollback_of_a_run_that_started_the_thread_leaves_it_empty(urls: list[str]) -> None:
    a, b = clients(urls)
    thread_id = a.threads.create()["thread_id"]
    run = _start_stages(a, thread_id)
    b.runs.cancel(thread_id, run["run_id"], wait=True, action="rollback")
    assert a.threads.get_state(thread_id)["values"] in ({}, None, [])
    assert b.runs.wait(thread_id, "echo", input={"messages": ["z"]})["messages"] == [
        "z", "reply to z",
    ]  # fmt: skip


@pytest.mark.parametrize("strategy", ["interrupt", "rollback"])
def test_multitask_interrupt_and_rollback_across_replicas_state(
    urls: list[str], strategy: str
) -> None:
    a, b = clients(urls)
    thread_id = a.threads.create()["thread_id"]
    a.runs.wait(thread_id, "echo", input={"messages": ["x"]})
    first = _start_stages(a, thread_id)
    result = b.runs.wait(
        thread_id, "echo", input={"messages": ["urgent"]}, multitask_strategy=strategy
    )
    kept = ["ticks:100:0.1", "first"] if strategy == "interrupt" else []
    assert result["messages"] == ["x", "reply to x", *kept, "urgent", "reply to urgent"]
    ids = [r["run_id"] for r in a.runs.list(thread_id)]
    assert (first["run_id"] in ids) == (strategy == "interrupt")


def test_after_seconds_waits_and_takes_its_place_when_due(urls: list[str]) -> None:
    a, b = clients(urls)
    thread_id = a.threads.create()["thread_id"]
    started = time.monotonic()
    late = a.runs.create(thread_id, "echo", input={"messages": ["late"]}, after_seconds=2)
    time.sleep(0.5)
    assert status_of(b, thread_id, late["run_id"]) == "pending"
    now = b.runs.create(thread_id, "echo", input={"messages": ["now"]})
    b.runs.join(thread_id, now["run_id"])  # not held up behind the delayed run
    assert status_of(a, thread_id, late["run_id"]) == "pending"
    a.runs.join(thread_id, late["run_id"])
    assert time.monotonic() - started >= 2
    assert messages_of(a, thread_id) == ["now", "reply to now", "late", "reply to late"]
    with pytest.raises(UnprocessableEntityError):
        a.runs.create(thread_id, "echo", input={}, after_seconds=-1)


@pytest.mark.parametrize("mode", ["cancel", "continue"])
def test_on_disconnect_of_a_stream(urls: list[str], mode: str) -> None:
    a, b = clients(urls)
    thread_id = a.threads.create()["thread_id"]
    spec = "ticks:100:0.1" if mode == "cancel" else "ticks:10:0.1"
    for part in a.runs.stream(
        thread_id, "stages", input={"messages": [spec]}, stream_mode="custom",
        on_disconnect=mode,
    ):  # fmt: skip
        if part.event == "custom":
            break  # the client goes away mid-run
    (run,) = b.runs.list(thread_id)
    if mode == "cancel":
        until(lambda: status_of(b, thread_id, run["run_id"]) == "interrupted", "the cancel", 8)
    else:
        b.runs.join(thread_id, run["run_id"])
        assert status_of(b, thread_id, run["run_id"]) == "success"
        assert messages_of(a, thread_id)[-1] == "ticked 10"


def test_join_stream_cancel_on_disconnect_on_the_other_replica(urls: list[str]) -> None:
    a, b = clients(urls)
    thread_id = a.threads.create()["thread_id"]
    run = a.runs.create(
        thread_id, "stages", input={"messages": ["ticks:100:0.1"]}, stream_mode="custom"
    )
    for part in b.runs.join_stream(thread_id, run["run_id"], cancel_on_disconnect=True):
        if part.event == "custom":
            break
    until(lambda: status_of(a, thread_id, run["run_id"]) == "interrupted", "the cancel", 8)


async def test_on_disconnect_cancel_of_a_wait(urls: list[str]) -> None:
    client = get_client(url=urls[0])
    thread_id = (await client.threads.create())["thread_id"]
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(
            client.runs.wait(
                thread_id, "slow", input={"messages": ["nap:30"]}, on_disconnect="cancel"
            ),
            timeout=1.5,
        )
    other = get_sync_client(url=urls[-1])
    (run,) = other.runs.list(thread_id)
    until(lambda: status_of(other, thread_id, run["run_id"]) == "interrupted", "the cancel", 8)


def test_on_completion_deletes_or_keeps_the_temporary_thread(urls: list[str]) -> None:
    a, b = clients(urls)
    kept = a.runs.create(None, "echo", input={"messages": ["k"]}, on_completion="keep")
    gone = a.runs.create(None, "echo", input={"messages": ["g"]})
    assert b.runs.join(gone["thread_id"], gone["run_id"])["messages"] == ["g", "reply to g"]
    b.runs.join(kept["thread_id"], kept["run_id"])

    def deleted() -> bool:
        try:
            a.threads.get(gone["thread_id"])
        except NotFoundError:
            return True
        return False

    until(deleted, "the temporary thread to be deleted")
    assert b.threads.get(kept["thread_id"])["values"]["messages"] == ["k", "reply to k"]
    assert messages_of(a, kept["thread_id"]) == ["k", "reply to k"]
    thread_id = a.threads.create()["thread_id"]  # on a thread it is no option: kept
    a.runs.wait(thread_id, "echo", input={"messages": ["t"]}, on_completion="delete")
    assert a.threads.get(thread_id)["status"] == "idle"


@pytest.fixture
def webhook_sink() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A local HTTP server that records the JSON bodies POSTed to it."""
    received: list[dict[str, Any]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers["Content-Length"])
            received.append(json.loads(self.rfile.read(length)))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", received
    finally:
        server.shutdown()
        server.server_close()


def test_webhook_gets_the_finished_run(
    urls: list[str], webhook_sink: tuple[str, list[dict[str, Any]]]
) -> None:
    url, received = webhook_sink
    a, b = clients(urls)
    thread_id = a.threads.create()["thread_id"]
    a.runs.wait(thread_id, "echo", input={"messages": ["w"]}, webhook=url)
    with pytest.raises(Exception, match="failed on purpose"):
        b.runs.wait(thread_id, "fails", input={"messages": []}, webhook=url + "?n=2")
    until(lambda: len(received) == 2, "two webhook calls")
    by_status = {r["status"]: r for r in received}
    assert set(by_status) == {"success", "error"}
    assert by_status["success"]["thread_id"] == thread_id
    assert by_status["success"]["values"]["messages"] == ["w", "reply to w"]
    (ok_run,) = [r for r in a.runs.list(thread_id) if r["status"] == "success"]
    assert by_status["success"]["run_id"] == ok_run["run_id"]
    # A webhook nobody answers is logged; the run and the server are fine.
    dead = "http://127.0.0.1:9/nobody"
    assert a.runs.wait(thread_id, "echo", input={"messages": ["d"]}, webhook=dead)
    with pytest.raises(UnprocessableEntityError):
        a.runs.create(thread_id, "echo", input={}, webhook="file:///etc/passwd")
    assert b.runs.wait(thread_id, "echo", input={"messages": ["e"]})["messages"][-1] == (
        "reply to e"
    )


@pytest.mark.parametrize("resumable", [True, False])
def test_join_stream_mid_run_on_the_other_replica(urls: list[str], resumable: bool) -> None:
    a, b = clients(urls)
    thread_id = a.threads.create()["thread_id"]
    run = a.runs.create(
        thread_id, "stages", input={"messages": ["ticks:8:0.25"]},
        stream_mode=["custom", "updates"], stream_resumable=resumable,
    )  # fmt: skip
    seen = []
    for part in b.runs.join_stream(thread_id, run["run_id"]):
        seen.append(part)
        if len(seen) == 4:  # metadata, updates of first, two ticks: the run goes on
            break
    assert status_of(a, thread_id, run["run_id"]) == "running"
    rest = list(a.runs.join_stream(thread_id, run["run_id"], last_event_id=seen[-1].id))
    everything = list(b.runs.join_stream(thread_id, run["run_id"]))
    assert [(p.event, p.data) for p in seen + rest] == [(p.event, p.data) for p in everything]
    ticks = [p.data["tick"] for p in everything if p.event == "custom"]
    assert ticks == list(range(8))
    assert [p.event for p in everything][-1] == "updates"
    only = list(b.runs.join_stream(thread_id, run["run_id"], stream_mode="custom"))
    assert [p.event for p in only] == ["metadata"] + ["custom"] * 8


def _stream(client: Any, graph: str, mode: Any, **options: Any) -> list[Any]:
    thread_id = client.threads.create()["thread_id"]
    inp = {"messages": ["ticks:2:0"]} if graph == "stages" else {"messages": ["hi"]}
    parts = list(client.runs.stream(thread_id, graph, input=inp, stream_mode=mode, **options))
    assert parts[0].event == "metadata"
    return parts[1:]


def test_stream_modes_values_updates_custom_checkpoints(urls: list[str]) -> None:
    a, _ = clients(urls)
    values = _stream(a, "stages", "values")
    assert {p.event for p in values} == {"values"}
    assert values[-1].data["messages"] == ["ticks:2:0", "first", "ticked 2"]
    updates = _stream(a, "stages", "updates")
    assert [list(p.data) for p in updates] == [["first"], ["tick"]]
    assert updates[1].data["tick"] == {"messages": ["ticked 2"]}
    custom = _stream(a, "stages", "custom")
    assert [(p.event, p.data) for p in custom] == [("custom", {"tick": 0}), ("custom", {"tick": 1})]
    checkpoints = _stream(a, "stages", "checkpoints")
    assert {p.event for p in checkpoints} == {"checkpoints"}
    last = checkpoints[-1].data
    assert last["values"]["messages"][-1] == "ticked 2" and last["next"] == []
    assert last["config"]["configurable"]["checkpoint_id"]
    assert last["parent_config"]["configurable"]["checkpoint_id"]
    assert [c.data["metadata"]["step"] for c in checkpoints] == [-1, 0, 1, 2]
    assert checkpoints[1].data["next"] == ["first"]


def test_stream_modes_debug_and_tasks(urls: list[str]) -> None:
    a, _ = clients(urls)
    debug = _stream(a, "stages", "debug")
    assert {p.event for p in debug} == {"debug"}
    kinds = [p.data["type"] for p in debug]
    assert kinds == ["checkpoint", "checkpoint"] + ["task", "task_result", "checkpoint"] * 2
    assert all(set(p.data) == {"step", "timestamp", "type", "payload"} for p in debug)
    checkpoints = [p.data for p in debug if p.data["type"] == "checkpoint"]
    assert [c["step"] for c in checkpoints] == [-1, 0, 1, 2]
    last = checkpoints[-1]["payload"]
    # As LangGraph's server: the checkpoint objects beside the configs.
    assert last["checkpoint"]["checkpoint_id"] == last["config"]["configurable"]["checkpoint_id"]
    assert (
        last["parent_checkpoint"]["checkpoint_id"]
        == (last["parent_config"]["configurable"]["checkpoint_id"])
    )
    assert checkpoints[1]["payload"]["tasks"][0]["name"] == "first"
    assert checkpoints[1]["payload"]["tasks"][0]["interrupts"] == []
    starts = [p.data for p in debug if p.data["type"] == "task"]
    assert starts[0]["step"] == 1 and starts[0]["payload"]["input"]["messages"] == ["ticks:2:0"]
    assert starts[0]["payload"]["triggers"] == ["branch:to:first"]
    assert starts[0]["payload"]["metadata"]["run_id"]  # the run's metadata, as LangGraph
    results = [p.data["payload"] for p in debug if p.data["type"] == "task_result"]
    assert [r["name"] for r in results] == ["first", "tick"]
    assert results[0] == {
        "id": starts[0]["payload"]["id"], "name": "first", "error": None,
        "result": {"messages": ["first"]}, "interrupts": [],
    }  # fmt: skip
    tasks = _stream(a, "stages", "tasks")
    assert {p.event for p in tasks} == {"tasks"}
    assert [t.data["name"] for t in tasks] == ["first", "first", "tick", "tick"]
    assert set(tasks[0].data) == {"id", "name", "input", "triggers", "metadata"}
    assert tasks[1].data["result"] == {"messages": ["first"]}
    assert set(tasks[1].data) == {"id", "name", "error", "result", "interrupts"}


def test_tasks_of_a_failing_or_pausing_graph(urls: list[str]) -> None:
    a, _ = clients(urls)
    thread_id = a.threads.create()["thread_id"]
    failed = list(a.runs.stream(thread_id, "fails", input={"messages": ["x"]}, stream_mode="tasks"))
    (result,) = [p.data for p in failed if p.event == "tasks" and "result" in p.data]
    assert result["error"] == {"error": "ValueError", "message": "the node failed on purpose"}
    assert result["result"] == {}
    thread_id = a.threads.create()["thread_id"]
    parts = list(
        a.runs.stream(thread_id, "approval", input={"messages": ["x"]}, stream_mode="debug")
    )
    (paused,) = [p.data["payload"] for p in parts if p.data.get("type") == "task_result"]
    assert paused["result"] == {} and paused["interrupts"][0]["value"] == {"question": "approve?"}
    resumed = list(
        a.runs.stream(thread_id, "approval", command={"resume": "yes"}, stream_mode="debug")
    )
    first = resumed[1].data  # after the metadata: the checkpoint the run goes on from
    assert first["type"] == "checkpoint"
    assert first["payload"]["tasks"][0]["interrupts"] == paused["interrupts"]


def test_a_task_call_streams_as_a_task_of_its_own(urls: list[str]) -> None:
    a, _ = clients(urls)
    thread_id = a.threads.create()["thread_id"]
    parts = list(
        a.runs.stream(thread_id, "calls", input={"x": 3}, stream_mode=["tasks", "updates"])
    )
    events = [(p.event, p.data) for p in parts[1:]]
    main, call = events[0][1], events[1][1]
    assert [(e, d.get("name"), "input" in d) for e, d in events if e == "tasks"] == [
        ("tasks", "calls", True), ("tasks", "double", True),
        ("tasks", "double", False), ("tasks", "calls", False),
    ]  # fmt: skip
    assert call["input"] == [[3], {}] and call["triggers"] == ["__pregel_push"]
    assert call["id"] == f"{main['id']}.0"  # its call key under the entrypoint's task
    assert events[2:] == [
        ("updates", {"double": 6}),
        ("tasks", {"id": call["id"], "name": "double", "error": None,
                   "result": {"__return__": 6}, "interrupts": []}),
        ("updates", {"calls": 7}),
        ("tasks", {"id": main["id"], "name": "calls", "error": None, "result": {"__end__": 7},
                   "interrupts": []}),
    ]  # fmt: skip
    thread_id = a.threads.create()["thread_id"]
    parts = list(a.runs.stream(thread_id, "calls", input={"x": -1}, stream_mode="debug"))
    ends = [p.data["payload"] for p in parts if p.data.get("type") == "task_result"]
    assert [(e["name"], e["error"]) for e in ends] == [
        ("double", {"error": "ValueError", "message": "negative"}),
        ("calls", {"error": "ValueError", "message": "negative"}),
    ]


def test_stream_modes_messages_tuple_and_messages(urls: list[str]) -> None:
    a, _ = clients(urls)
    tuples = _stream(a, "chat", "messages-tuple")
    assert {p.event for p in tuples} == {"messages"}
    streamed = [m for m, meta in (p.data for p in tuples) if meta["langgraph_node"] == "model"]
    assert "".join(m["content"] for m in streamed) == "hello big world"
    assert len(streamed) > 1 and streamed[0]["type"] == "AIMessageChunk"
    assert [
        m["content"] for m, meta in (p.data for p in tuples) if meta["langgraph_node"] == ("note")
    ] == ["noted"]

    parts = _stream(a, "chat", "messages")
    events = [p.event for p in parts]
    assert set(events) == {"messages/metadata", "messages/partial", "messages/complete"}
    assert events[0] == "messages/metadata"
    (model_id,) = parts[0].data
    assert parts[0].data[model_id]["metadata"]["langgraph_node"] == "model"
    partial = [p.data[0] for p in parts if p.event == "messages/partial"]
    assert partial[-1]["content"] == "hello big world" and partial[-1]["type"] == "ai"
    assert [p["content"] for p in partial][:2] == ["hello", "hello "]
    assert {p["id"] for p in partial} == {model_id}
    complete = [p.data[0] for p in parts if p.event == "messages/complete"]
    assert [(m["id"], m["content"]) for m in complete] == [("note-1", "noted")]
    assert events.count("messages/metadata") == 2  # one per message


def test_stream_subgraphs_names_events_mode_and_namespace(urls: list[str]) -> None:
    a, _ = clients(urls)
    parts = _stream(a, "stream_nested", ["updates", "values"], stream_subgraphs=True)
    names = [p.event for p in parts]
    inner = [n for n in names if n.startswith("updates|")]
    assert inner and all(n.startswith("updates|inner:") for n in inner)
    assert "updates" in names and "values" in names
    assert any(n.startswith("values|inner:") for n in names)
    with pytest.raises(httpx.HTTPStatusError) as unsupported:
        list(a.runs.stream(None, "echo", input={}, stream_mode="events"))
    assert unsupported.value.response.status_code == 422


def test_bad_run_options_get_422_naming_the_option(urls: list[str]) -> None:
    a, _ = clients(urls)
    thread_id = a.threads.create()["thread_id"]
    bad = {
        "on_disconnect": "sometimes",
        "on_completion": "shred",
        "after_seconds": "soon",
        "stream_mode": "tools",
        "webhook": "not a url",
    }
    for key, value in bad.items():
        answer = httpx.post(
            f"{urls[0]}/threads/{thread_id}/runs", json={"assistant_id": "echo", key: value}
        )
        assert answer.status_code == 422, key
        assert key in answer.json()["detail"]
    assert httpx.post(f"{urls[0]}/runs/cancel?action=undo", json={"status": "all"}).status_code == (
        422
    )
    assert a.runs.list(thread_id) == []


async def test_every_waiter_of_a_run_on_one_replica_gets_its_outcome(urls: list[str]) -> None:
    """Waits and joins on the replica that executes the run are handed its outcome; several
    at once each get it, and a join on another replica reads it."""
    first, last = get_client(url=urls[0]), get_client(url=urls[-1])
    thread_id = (await first.threads.create())["thread_id"]
    run = await first.runs.create(thread_id, "slow", input={"messages": ["nap:1"]})
    outcomes = await asyncio.gather(
        first.runs.join(thread_id, run["run_id"]),
        first.runs.join(thread_id, run["run_id"]),
        last.runs.join(thread_id, run["run_id"]),
        first.runs.wait(thread_id, "echo", input={"messages": ["after"]}),
    )
    expected = ["nap:1", "slept 1.0", "awake"]
    assert [o["messages"] for o in outcomes[:3]] == [expected] * 3
    assert outcomes[3]["messages"] == [*expected, "after", "reply to after"]
