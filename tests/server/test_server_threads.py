"""Threads through the official ``langgraph_sdk`` client: create (TTL, if_exists, graph_id),
update, copy, prune, search, count, history, state at a checkpoint and update_state.
SQLite (one replica) and PostgreSQL (two replicas: calls alternate between them); the
replicas sweep expired threads every 0.3 s."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from langgraph_sdk import get_client
from langgraph_sdk.errors import ConflictError, NotFoundError, UnprocessableEntityError
from servers import Replica, clients, replicas

SWEEP = ["--sweep-interval", "0.3"]
TTL = 0.01  # minutes: 0.6 s


@pytest.fixture(scope="module")
def sqlite_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replica]:
    """One replica on a fresh SQLite file, sweeping often."""
    path = tmp_path_factory.mktemp("serve") / "threadline.db"
    with replicas(f"sqlite:///{path}", 1, args=SWEEP) as (replica,):
        yield replica


@pytest.fixture(scope="module")
def postgres_servers(postgres_database: str) -> Iterator[list[Replica]]:
    """Two replicas over one PostgreSQL database, sweeping often."""
    with replicas(postgres_database, 2, args=SWEEP) as started:
        yield started


def _detail(exc: pytest.ExceptionInfo[Any]) -> str:
    return str(exc.value.response.json()["detail"])


def _gone(client: Any, thread_id: str, within: float = 15.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            client.threads.get(thread_id)
        except NotFoundError:
            return True
        time.sleep(0.1)
    return False


def test_create_with_metadata_graph_id_ttl_and_if_exists(urls: list[str]) -> None:
    a, b = clients(urls)
    thread = a.threads.create(metadata={"user": "ada"}, graph_id="echo", ttl=60)
    thread_id = thread["thread_id"]
    assert thread["metadata"] == {"user": "ada", "graph_id": "echo"}
    assert thread["status"] == "idle" and thread["values"] is None
    ttl = b.threads.get(thread_id, include=["ttl"])["ttl"]
    assert ttl["strategy"] == "delete" and ttl["ttl"] == 60
    assert "ttl" not in b.threads.get(thread_id)
    # The thread knows its graph before any run: its state can be written as a node.
    b.threads.update_state(thread_id, {"messages": ["seeded"]}, as_node="reply")
    assert a.threads.get_state(thread_id)["values"]["messages"] == ["seeded"]
    assert a.threads.get(thread_id)["values"]["messages"] == ["seeded"]
    with pytest.raises(ConflictError):
        b.threads.create(thread_id=thread_id)
    same = b.threads.create(thread_id=thread_id, if_exists="do_nothing", metadata={"x": 1})
    assert same["metadata"] == {"user": "ada", "graph_id": "echo"}
    kept = a.threads.create(ttl={"ttl": 5, "strategy": "keep_latest"})
    assert b.threads.get(kept["thread_id"], include=["ttl"])["ttl"]["strategy"] == "keep_latest"
    assert a.threads.get(a.threads.create()["thread_id"], include=["ttl"])["ttl"] is None


def test_supersteps_seed_a_new_thread(urls: list[str]) -> None:
    a, b = clients(urls)
    thread = a.threads.create(
        graph_id="echo",
        supersteps=[
            {"updates": [{"values": {"messages": ["q"]}, "as_node": "__start__"}]},
            {"updates": [{"values": {"messages": ["a"]}, "as_node": "reply"}]},
        ],
    )
    assert thread["values"]["messages"] == ["q", "a"]
    history = b.threads.get_history(thread["thread_id"])
    assert [h["values"]["messages"] for h in history] == [["q", "a"], ["q"]]


def test_update_merges_metadata_and_sets_the_ttl(urls: list[str]) -> None:
    a, b = clients(urls)
    thread_id = a.threads.create(metadata={"a": 1})["thread_id"]
    updated = b.threads.update(thread_id, metadata={"b": 2}, ttl=30)
    assert updated["metadata"] == {"a": 1, "b": 2}
    ttl = a.threads.get(thread_id, include=["ttl"])["ttl"]
    assert ttl["ttl"] == 30 and ttl["strategy"] == "delete"
    assert b.threads.update(thread_id, metadata={"c": 3}, return_minimal=True) is None
    assert a.threads.get(thread_id)["metadata"] == {"a": 1, "b": 2, "c": 3}
    b.threads.update(thread_id, metadata={}, ttl={"ttl": 10, "strategy": "keep_latest"})
    assert a.threads.get(thread_id, include=["ttl"])["ttl"]["ttl"] == 10


def test_expired_threads_are_swept_with_their_runs_and_checkpoints(urls: list[str]) -> None:
    a, b = clients(urls)
    thread_id = a.threads.create(ttl=TTL)["thread_id"]
    b.runs.wait(thread_id, "echo", input={"messages": ["bye"]})
    assert _gone(a, thread_id)
    with pytest.raises(NotFoundError):
        b.threads.get_state(thread_id)
    # Made again under the same id, it starts empty: the checkpoints went too.
    b.threads.create(thread_id=thread_id, graph_id="echo")
    assert a.threads.get_history(thread_id) == []
    assert a.runs.list(thread_id) == []
    lasting = a.threads.create(ttl=60)["thread_id"]
    time.sleep(1.0)
    assert b.threads.get(lasting)["thread_id"] == lasting


def test_a_thread_with_a_run_in_flight_waits_for_it_before_it_is_swept(urls: list[str]) -> None:
    a, b = clients(urls)
    thread_id = a.threads.create()["thread_id"]
    run = a.runs.create(thread_id, "slow", input={"messages": ["nap:2.5"]})
    b.threads.update(thread_id, metadata={}, ttl=TTL)
    time.sleep(1.5)  # expired, but the run is still going
    assert b.threads.get(thread_id)["status"] == "busy"
    a.runs.join(thread_id, run["run_id"])
    assert _gone(b, thread_id)


def test_keep_latest_ttl_prunes_history_and_keeps_the_thread(urls: list[str]) -> None:
    a, b = clients(urls)
    thread_id = a.threads.create(ttl={"ttl": TTL, "strategy": "keep_latest"})["thread_id"]
    a.runs.wait(thread_id, "steps", input={"messages": []})
    deadline = time.monotonic() + 15
    while len(b.threads.get_history(thread_id)) > 1:
        assert time.monotonic() < deadline, "the keep_latest sweep never pruned the thread"
        time.sleep(0.1)
    assert b.threads.get_state(thread_id)["values"]["messages"] == ["one", "two"]
    assert a.threads.get(thread_id, include=["ttl"])["ttl"]["strategy"] == "keep_latest"


def test_copy_makes_an_independent_thread_with_the_same_checkpoints(urls: list[str]) -> None:
    a, b = clients(urls)
    source = a.threads.create(metadata={"who": "ada"})["thread_id"]
    a.runs.wait(source, "echo", input={"messages": ["x"]})
    copied = b.threads.copy(source)
    target = copied["thread_id"]
    assert target != source and copied["metadata"] == {"who": "ada"}
    assert copied["values"]["messages"] == ["x", "reply to x"]
    source_history = a.threads.get_history(source)
    target_history = a.threads.get_history(target)
    assert [h["values"] for h in target_history] == [h["values"] for h in source_history]
    assert {h["checkpoint"]["thread_id"] for h in target_history} == {target}
    b.runs.wait(target, "echo", input={"messages": ["y"]})
    assert a.threads.get_state(target)["values"]["messages"][-1] == "reply to y"
    assert a.threads.get_state(source)["values"]["messages"] == ["x", "reply to x"]
    fresh = a.threads.create(metadata={"empty": True})["thread_id"]
    assert b.threads.copy(fresh)["metadata"] == {"empty": True}  # never run: nothing to copy
    with pytest.raises(NotFoundError):
        a.threads.copy(str(uuid.uuid4()))


def test_a_copy_of_an_interrupted_thread_resumes_on_its_own(urls: list[str]) -> None:
    a, b = clients(urls)
    source = a.threads.create()["thread_id"]
    a.runs.wait(source, "approval", input={"messages": []})
    copied = b.threads.copy(source)
    assert copied["status"] == "interrupted"
    assert b.threads.get_state(copied["thread_id"])["next"] == ["ask"]
    done = b.runs.wait(copied["thread_id"], "approval", command={"resume": "yes"})
    assert done["messages"] == ["answer: yes"]
    assert a.threads.get(source)["status"] == "interrupted"
    assert a.threads.get_state(source)["next"] == ["ask"]


def test_prune_deletes_or_keeps_the_latest_checkpoint(urls: list[str]) -> None:
    a, b = clients(urls)
    doomed = [a.threads.create()["thread_id"] for _ in range(2)]
    a.runs.wait(doomed[0], "echo", input={"messages": ["x"]})
    missing = str(uuid.uuid4())
    assert b.threads.prune([*doomed, missing]) == {"pruned_count": 2}
    for thread_id in doomed:
        with pytest.raises(NotFoundError):
            a.threads.get(thread_id)
    kept = a.threads.create()["thread_id"]
    a.runs.wait(kept, "steps", input={"messages": []})
    assert len(a.threads.get_history(kept)) == 4
    assert b.threads.prune([kept], strategy="keep_latest") == {"pruned_count": 1}
    (latest,) = a.threads.get_history(kept)
    assert latest["values"]["messages"] == ["one", "two"]
    b.runs.wait(kept, "echo", input={"messages": ["more"]})  # the thread goes on from there
    assert a.threads.get_state(kept)["values"]["messages"][-1] == "reply to more"


def test_search_and_count_filter_sort_page_select_and_extract(urls: list[str]) -> None:
    a, b = clients(urls)
    tag = uuid.uuid4().hex
    ids = [a.threads.create(metadata={"tag": tag, "n": i, "deep": {"k": i % 2}})["thread_id"]
           for i in range(3)]  # fmt: skip
    b.runs.wait(ids[0], "echo", input={"messages": ["hello"]})
    b.runs.wait(ids[1], "approval", input={"messages": []})
    b.threads.update(ids[2], metadata={"touched": True})
    mine = {"tag": tag}
    assert {t["thread_id"] for t in a.threads.search(metadata=mine)} == set(ids)
    assert [t["thread_id"] for t in a.threads.search(metadata={**mine, "deep": {"k": 1}})] == [
        ids[1]
    ]
    found = b.threads.search(metadata=mine, values={"messages": ["hello"]})
    assert [t["thread_id"] for t in found] == [ids[0]]
    assert [t["thread_id"] for t in a.threads.search(metadata=mine, status="interrupted")] == [
        ids[1]
    ]
    assert [t["thread_id"] for t in b.threads.search(ids=[ids[2], str(uuid.uuid4())])] == [ids[2]]
    oldest_first = a.threads.search(metadata=mine, sort_by="created_at", sort_order="asc")
    assert [t["thread_id"] for t in oldest_first] == ids
    newest_first = a.threads.search(metadata=mine)  # created_at, newest first by default
    assert [t["thread_id"] for t in newest_first] == ids[::-1]
    by_update = b.threads.search(metadata=mine, sort_by="updated_at", sort_order="desc")
    assert by_update[0]["thread_id"] == ids[2]
    by_id = a.threads.search(metadata=mine, sort_by="thread_id", sort_order="asc")
    assert [t["thread_id"] for t in by_id] == sorted(ids)
    by_status = a.threads.search(metadata=mine, sort_by="status", sort_order="asc")
    assert [t["status"] for t in by_status] == ["idle", "idle", "interrupted"]
    window = b.threads.search(metadata=mine, sort_by="created_at", sort_order="asc", limit=1,
                              offset=1)  # fmt: skip
    assert [t["thread_id"] for t in window] == [ids[1]]
    slim = a.threads.search(metadata=mine, select=["thread_id", "status"])
    assert all(set(t) == {"thread_id", "status"} for t in slim)
    extracted = b.threads.search(
        ids=[ids[0]], extract={"last": "values.messages[-1]", "n": "metadata.n", "no": "values.x"}
    )
    assert extracted[0]["extracted"] == {"last": "reply to hello", "n": 0, "no": None}
    assert a.threads.count(metadata=mine) == 3
    assert b.threads.count(metadata=mine, status="idle") == 2
    assert a.threads.count(metadata=mine, values={"messages": ["hello"]}) == 1
    assert a.threads.count(metadata={"tag": "nobody"}) == 0


def test_error_status_is_searchable(urls: list[str]) -> None:
    a, b = clients(urls)
    tag = uuid.uuid4().hex
    thread_id = a.threads.create(metadata={"tag": tag})["thread_id"]
    with pytest.raises(Exception, match="on purpose"):
        a.runs.wait(thread_id, "fails", input={"messages": []})
    assert [t["thread_id"] for t in b.threads.search(metadata={"tag": tag}, status="error")] == [
        thread_id
    ]
    assert b.threads.count(metadata={"tag": tag}, status="idle") == 0


def test_history_state_at_a_checkpoint_and_update_state_as_node(urls: list[str]) -> None:
    a, b = clients(urls)
    thread_id = a.threads.create()["thread_id"]
    a.runs.wait(thread_id, "steps", input={"messages": ["go"]})
    history = b.threads.get_history(thread_id)
    assert [h["metadata"]["step"] for h in history] == [2, 1, 0, -1]
    assert [h["next"] for h in history] == [[], ["step_two"], ["step_one"], ["__start__"]]
    assert len(b.threads.get_history(thread_id, limit=2)) == 2
    older = a.threads.get_history(thread_id, before=history[1]["checkpoint"], limit=10)
    assert [h["metadata"]["step"] for h in older] == [0, -1]
    older_by_id = a.threads.get_history(thread_id, before=history[1]["checkpoint"]["checkpoint_id"])
    assert older_by_id == older
    loops = b.threads.get_history(thread_id, metadata={"source": "loop"})
    assert [h["metadata"]["step"] for h in loops] == [2, 1, 0]
    # With a checkpoint id, as LangGraph's savers list it: that checkpoint alone.
    (one,) = b.threads.get_history(thread_id, checkpoint=history[1]["checkpoint"])
    assert one == history[1]
    assert (
        b.threads.get_history(
            thread_id, checkpoint=history[1]["checkpoint"], metadata={"source": "input"}
        )
        == []
    )
    middle = history[1]["checkpoint"]
    at = a.threads.get_state(thread_id, checkpoint=middle)
    assert at["values"]["messages"] == ["go", "one"] and at["next"] == ["step_two"]
    by_id = b.threads.get_state(thread_id, checkpoint_id=middle["checkpoint_id"])
    assert by_id["values"] == at["values"] and by_id["checkpoint"] == at["checkpoint"]
    # A fork: update the middle checkpoint as step_two, as though it had run.
    forked = b.threads.update_state(
        thread_id, {"messages": ["two, forked"]}, as_node="step_two", checkpoint=middle
    )
    assert forked["checkpoint"]["thread_id"] == thread_id
    state = a.threads.get_state(thread_id)
    assert state["values"]["messages"] == ["go", "one", "two, forked"]
    assert state["parent_checkpoint"]["checkpoint_id"] == middle["checkpoint_id"]
    assert state["checkpoint"]["checkpoint_id"] == forked["checkpoint"]["checkpoint_id"]
    assert b.threads.get(thread_id)["values"]["messages"][-1] == "two, forked"


def test_bad_input_gets_4xx_saying_how_to_fix_it(urls: list[str]) -> None:
    a, _ = clients(urls)
    thread_id = a.threads.create()["thread_id"]
    a.runs.wait(thread_id, "echo", input={"messages": ["x"]})
    with pytest.raises(UnprocessableEntityError) as bad_sort:
        a.threads.search(sort_by="colour")  # type: ignore[arg-type]
    assert all(k in _detail(bad_sort) for k in ("thread_id", "status", "created_at", "updated_at"))
    with pytest.raises(UnprocessableEntityError) as bad_status:
        a.threads.search(status="sleeping")  # type: ignore[arg-type]
    assert "interrupted" in _detail(bad_status)
    with pytest.raises(UnprocessableEntityError):
        a.threads.count(status="sleeping")  # type: ignore[arg-type]
    with pytest.raises(UnprocessableEntityError):
        a.threads.search(sort_order="up")  # type: ignore[arg-type]
    with pytest.raises(UnprocessableEntityError) as bad_strategy:
        a.threads.prune([thread_id], strategy="all")  # type: ignore[arg-type]
    assert "keep_latest" in _detail(bad_strategy)
    with pytest.raises(UnprocessableEntityError):
        a.threads.prune([])
    with pytest.raises(UnprocessableEntityError):
        a.threads.prune(["not-a-uuid"])
    for ttl in (-1, 0, 1e308, "soon", {"ttl": 5, "strategy": "forget"}, {"minutes": 5}):
        with pytest.raises(UnprocessableEntityError):
            a.threads.create(ttl=ttl)  # type: ignore[arg-type]
    with pytest.raises(UnprocessableEntityError):
        a.threads.update(thread_id, metadata={}, ttl=-5)
    with pytest.raises(UnprocessableEntityError):
        a.threads.create(graph_id="no-such-graph")
    with pytest.raises(UnprocessableEntityError):
        a.threads.create(if_exists="maybe")  # type: ignore[arg-type]
    with pytest.raises(UnprocessableEntityError):
        a.threads.search(limit=0)
    with pytest.raises(UnprocessableEntityError):
        a.threads.search(offset=-1)
    with pytest.raises(UnprocessableEntityError):
        a.threads.search(ids=["nope"])
    with pytest.raises(UnprocessableEntityError):
        a.threads.search(select=["colour"])  # type: ignore[list-item]
    with pytest.raises(UnprocessableEntityError):
        a.threads.search(extract={"x": "values..x"})
    with pytest.raises(UnprocessableEntityError):
        a.threads.search(metadata=["x"])  # type: ignore[arg-type]
    with pytest.raises(UnprocessableEntityError):
        a.threads.get(thread_id, include=["everything"])
    with pytest.raises(UnprocessableEntityError):
        a.threads.update_state(thread_id, {"messages": ["y"]}, as_node="nobody")
    other = {"thread_id": str(uuid.uuid4()), "checkpoint_ns": "", "checkpoint_id": None,
             "checkpoint_map": None}  # fmt: skip
    with pytest.raises(UnprocessableEntityError):
        a.threads.get_state(thread_id, checkpoint=other)  # type: ignore[arg-type]
    with pytest.raises(UnprocessableEntityError):
        a.threads.get_history(thread_id, limit=0)
    with pytest.raises(NotFoundError):
        a.threads.get_state(thread_id, checkpoint_id=str(uuid.uuid4()))
    with pytest.raises(NotFoundError):
        a.threads.update(str(uuid.uuid4()), metadata={})
    with pytest.raises(NotFoundError):
        a.threads.delete(str(uuid.uuid4()))
    never_run = a.threads.create()["thread_id"]
    with pytest.raises(ConflictError):
        a.threads.update_state(never_run, {"messages": ["y"]})
    bad_history = httpx.post(f"{urls[0]}/threads/{thread_id}/history", json={"limit": "lots"})
    assert bad_history.status_code == 422 and "limit" in bad_history.json()["detail"]
    assert httpx.get(urls[0] + "/ok").status_code == 200
    assert a.threads.get_state(thread_id)["values"]["messages"] == ["x", "reply to x"]


async def test_the_async_client_manages_threads(urls: list[str]) -> None:
    client = get_client(url=urls[-1])
    tag = uuid.uuid4().hex
    thread = await client.threads.create(metadata={"tag": tag}, ttl=60)
    await client.runs.wait(thread["thread_id"], "echo", input={"messages": ["async"]})
    copied = await client.threads.copy(thread["thread_id"])
    assert await client.threads.count(metadata={"tag": tag}) == 2
    found = await client.threads.search(metadata={"tag": tag}, sort_by="created_at")
    assert [t["thread_id"] for t in found] == [copied["thread_id"], thread["thread_id"]]
    assert await client.threads.prune([t["thread_id"] for t in found]) == {"pruned_count": 2}
    assert await client.threads.count(metadata={"tag": tag}) == 0
