"""Assistants through the official ``langgraph_sdk`` client: system assistants, create, update
(versions), set_latest, search, count, delete, and the graph's drawing, schemas and subgraphs.
SQLite (one replica) and PostgreSQL (two replicas: calls alternate between them)."""

from __future__ import annotations

import concurrent.futures
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from backends import postgres_url_or_skip
from langgraph_sdk import get_client, get_sync_client
from langgraph_sdk.errors import ConflictError, NotFoundError, UnprocessableEntityError
from servers import clients, fresh_postgres_database, start_replica

from threadline.server.assistants import (
    Assistant,
    assistant_for_run,
    ensure_system_assistants,
    insert_assistant,
    new_assistant,
)
from threadline.server.db import open_database
from threadline.server.graphs import assistant_id_of

GRAPHS = (
    "echo", "approval", "slow", "steps", "fails", "builder", "nested", "typed", "probe",
    "stages", "chat", "stream_nested", "nested_stages", "vetted", "schema", "calls",
)  # fmt: skip


def _detail(exc: pytest.ExceptionInfo[Any]) -> str:
    return str(exc.value.response.json()["detail"])


def test_each_graph_is_one_system_assistant(urls: list[str]) -> None:
    a, b = clients(urls)
    system = a.assistants.search(metadata={"created_by": "system"}, limit=100)
    assert sorted(x["graph_id"] for x in system) == sorted(GRAPHS)  # once, though 2 replicas
    assert all(x["assistant_id"] == assistant_id_of(x["graph_id"]) for x in system)
    echo = b.assistants.get("echo")
    assert echo == a.assistants.get(assistant_id_of("echo"))
    assert echo["name"] == "echo" and echo["version"] == 1 and echo["config"] == {}
    assert b.assistants.count(graph_id="echo", metadata={"created_by": "system"}) == 1
    versions = a.assistants.get_versions("echo")
    assert [v["version"] for v in versions] == [1]


def test_replicas_starting_at_once_make_each_system_assistant_once() -> None:
    with fresh_postgres_database(postgres_url_or_skip()) as url:
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            started = list(pool.map(lambda _: start_replica(url), range(3)))
        try:
            for replica in started:
                found = get_sync_client(url=replica.url).assistants.search(limit=100)
                assert sorted(x["graph_id"] for x in found) == sorted(GRAPHS)
        finally:
            for replica in started:
                replica.stop()


def test_create_update_versions_and_set_latest_across_replicas(urls: list[str]) -> None:
    a, b = clients(urls)
    made = a.assistants.create(
        "echo",
        config={"configurable": {"who": "ada"}, "tags": ["one"]},
        context={"mood": "calm"},
        metadata={"team": "x"},
        name="Ada",
        description="first",
    )
    aid = made["assistant_id"]
    assert made["version"] == 1 and made["graph_id"] == "echo" and made["name"] == "Ada"
    assert b.assistants.get(aid) == made
    updated = b.assistants.update(
        aid, config={"configurable": {"who": "bob"}}, metadata={"extra": 1}, name="Bob"
    )
    assert updated["version"] == 2 and updated["name"] == "Bob"
    assert updated["config"] == {"configurable": {"who": "bob"}}  # replaced
    assert updated["context"] == {"mood": "calm"}  # kept: not sent
    assert updated["metadata"] == {"team": "x", "extra": 1}  # merged
    assert updated["description"] == "first" and updated["created_at"] == made["created_at"]
    assert a.assistants.get(aid)["version"] == 2
    versions = a.assistants.get_versions(aid)
    assert [v["version"] for v in versions] == [2, 1]
    assert versions[1]["config"]["configurable"] == {"who": "ada"}
    assert [v["version"] for v in b.assistants.get_versions(aid, metadata={"extra": 1})] == [2]
    assert [v["version"] for v in b.assistants.get_versions(aid, limit=1, offset=1)] == [1]
    back = b.assistants.set_latest(aid, 1)
    assert back["version"] == 1 and back["name"] == "Ada"
    assert a.assistants.get(aid)["config"]["configurable"] == {"who": "ada"}
    assert len(a.assistants.get_versions(aid)) == 2  # set_latest makes no new version
    again = a.assistants.update(aid, graph_id="probe")
    assert again["version"] == 3 and again["graph_id"] == "probe" and again["name"] == "Ada"
    assert b.assistants.get_graph(aid)["nodes"][1]["id"] == "look"


def test_create_with_an_id_and_if_exists(urls: list[str]) -> None:
    a, b = clients(urls)
    aid = str(uuid.uuid4())
    first = a.assistants.create("echo", assistant_id=aid, name="first")
    with pytest.raises(ConflictError):
        b.assistants.create("echo", assistant_id=aid, name="second")
    kept = b.assistants.create("steps", assistant_id=aid, name="second", if_exists="do_nothing")
    assert kept == first
    assert a.assistants.create("echo")["name"] == "Untitled"


def test_search_filters_sorts_pages_selects_and_counts(urls: list[str]) -> None:
    a, b = clients(urls)
    tag = uuid.uuid4().hex
    for name, graph in (("alpha " + tag, "echo"), ("beta " + tag, "steps"), ("gamma", "echo")):
        a.assistants.create(graph, name=name, metadata={"tag": tag, "nested": {"on": True}})
    mine = b.assistants.search(metadata={"tag": tag}, limit=10)
    assert len(mine) == 3
    assert len(b.assistants.search(metadata={"tag": tag, "nested": {"on": True}})) == 3
    assert b.assistants.search(metadata={"tag": tag, "nested": {"on": False}}) == []
    by_name = b.assistants.search(name=tag.upper(), metadata={"tag": tag})  # substring, any case
    assert sorted(x["name"] for x in by_name) == ["alpha " + tag, "beta " + tag]
    assert [x["name"] for x in b.assistants.search(graph_id="steps", metadata={"tag": tag})] == [
        "beta " + tag
    ]
    ascending = a.assistants.search(metadata={"tag": tag}, sort_by="name", sort_order="asc")
    assert [x["name"] for x in ascending] == ["alpha " + tag, "beta " + tag, "gamma"]
    newest = a.assistants.search(metadata={"tag": tag})  # created_at, newest first
    assert [x["name"] for x in newest] == ["gamma", "beta " + tag, "alpha " + tag]
    page = a.assistants.search(metadata={"tag": tag}, sort_by="name", limit=1, offset=1)
    assert [x["name"] for x in page] == ["beta " + tag]  # name, descending by default
    paged = b.assistants.search(metadata={"tag": tag}, limit=2, response_format="object")
    assert len(paged["assistants"]) == 2 and paged["next"] == "2"
    last = b.assistants.search(metadata={"tag": tag}, limit=2, offset=2, response_format="object")
    assert len(last["assistants"]) == 1 and last["next"] is None
    slim = a.assistants.search(metadata={"tag": tag}, select=["assistant_id", "name"])
    assert all(set(x) == {"assistant_id", "name"} for x in slim)
    assert b.assistants.count(metadata={"tag": tag}) == 3
    assert b.assistants.count(metadata={"tag": tag}, graph_id="echo") == 2
    assert b.assistants.count(metadata={"tag": tag}, name="GAM") == 1


def test_delete_and_delete_threads(urls: list[str]) -> None:
    a, b = clients(urls)
    aid = a.assistants.create("echo")["assistant_id"]
    tagged = a.threads.create(metadata={"assistant_id": aid})["thread_id"]
    other = a.threads.create()["thread_id"]
    b.assistants.delete(aid, delete_threads=True)
    with pytest.raises(NotFoundError):
        a.assistants.get(aid)
    with pytest.raises(NotFoundError):
        b.threads.get(tagged)
    assert b.threads.get(other)["thread_id"] == other
    with pytest.raises(NotFoundError):
        b.assistants.delete(aid)
    keep = a.assistants.create("echo")["assistant_id"]
    kept_thread = a.threads.create(metadata={"assistant_id": keep})["thread_id"]
    b.assistants.delete(keep)
    assert a.threads.get(kept_thread)["thread_id"] == kept_thread


def test_system_assistants_are_read_only(urls: list[str]) -> None:
    a, _ = clients(urls)
    with pytest.raises(ConflictError) as updated:
        a.assistants.update("echo", metadata={"x": 1})
    assert "assistants.create(graph_id='echo'" in _detail(updated)
    with pytest.raises(ConflictError):
        a.assistants.delete(assistant_id_of("echo"))
    with pytest.raises(ConflictError):
        a.assistants.set_latest("echo", 1)
    assert a.assistants.get("echo")["metadata"] == {"created_by": "system"}


def test_graph_drawing_with_xray(urls: list[str]) -> None:
    a, b = clients(urls)
    flat = a.assistants.get_graph("nested")
    assert [n["id"] for n in flat["nodes"]] == ["__start__", "middle", "last", "__end__"]
    one = b.assistants.get_graph("nested", xray=1)
    ids = [n["id"] for n in one["nodes"]]
    assert "middle:deep" in ids and "middle" not in ids and "middle:deep:leaf" not in ids
    edges = {(e["source"], e["target"]) for e in one["edges"]}
    assert ("__start__", "middle:__start__") in edges and ("middle:__end__", "last") in edges
    full = a.assistants.get_graph("nested", xray=True)
    assert "middle:deep:leaf" in [n["id"] for n in full["nodes"]]
    made = b.assistants.create("nested")
    assert a.assistants.get_graph(made["assistant_id"], xray=2) == full


def test_schemas_come_from_the_graphs_types(urls: list[str]) -> None:
    a, b = clients(urls)
    typed = a.assistants.get_schemas("typed")
    assert typed["graph_id"] == "typed"
    assert set(typed["input_schema"]["properties"]) == {"question"}
    assert typed["input_schema"]["required"] == ["question"]
    assert set(typed["output_schema"]["properties"]) == {"answer"}
    assert set(typed["state_schema"]["properties"]) == {"question", "answer", "turns"}
    assert typed["state_schema"]["properties"]["turns"]["items"] == {"type": "string"}
    context = typed["context_schema"]
    assert context["title"] == "Settings" and context["required"] == ["model"]
    assert context["properties"]["temperature"]["type"] == "number"
    echo = b.assistants.get_schemas(assistant_id_of("echo"))
    messages = echo["state_schema"]["properties"]["messages"]
    assert messages["type"] == "array" and messages["items"] == {"type": "string"}
    assert echo["input_schema"] == echo["state_schema"] and echo["context_schema"] is None
    mine = a.assistants.create("typed")["assistant_id"]
    assert b.assistants.get_schemas(mine) == {**typed}


def test_subgraphs_by_namespace_and_recursively(urls: list[str]) -> None:
    a, b = clients(urls)
    assert list(a.assistants.get_subgraphs("nested")) == ["middle"]
    assert sorted(b.assistants.get_subgraphs("nested", recurse=True)) == ["middle", "middle|deep"]
    deep = a.assistants.get_subgraphs("nested", namespace="middle|deep")
    assert list(deep) == ["middle|deep"]
    assert set(deep["middle|deep"]["state_schema"]["properties"]) == {"log"}
    under = b.assistants.get_subgraphs("nested", namespace="middle", recurse=True)
    assert sorted(under) == ["middle", "middle|deep"]
    assert a.assistants.get_subgraphs("nested", namespace="nowhere") == {}
    assert a.assistants.get_subgraphs("echo", recurse=True) == {}


def test_a_run_on_a_user_assistant_uses_its_config_under_the_runs(urls: list[str]) -> None:
    a, b = clients(urls)
    aid = a.assistants.create(
        "probe", config={"configurable": {"who": "ada", "mood": "calm"}}, context={"k": 1}
    )["assistant_id"]
    thread_id = a.threads.create()["thread_id"]
    result = b.runs.wait(
        thread_id, aid, input={}, config={"configurable": {"mood": "busy"}}, context={"j": 2}
    )
    assert result["seen"] == {
        "who": "ada", "mood": "busy", "context": {"k": 1, "j": 2}, "assistant_id": aid,
    }  # fmt: skip


def test_bad_input_gets_4xx_saying_how_to_fix_it(urls: list[str]) -> None:
    a, _ = clients(urls)
    with pytest.raises(UnprocessableEntityError) as unknown_graph:
        a.assistants.create("no-such-graph")
    assert "echo" in _detail(unknown_graph)
    with pytest.raises(UnprocessableEntityError) as bad_sort:
        a.assistants.search(sort_by="colour")  # type: ignore[arg-type]
    assert "assistant_id" in _detail(bad_sort) and "created_at" in _detail(bad_sort)
    with pytest.raises(UnprocessableEntityError):
        a.assistants.search(sort_order="sideways")  # type: ignore[arg-type]
    with pytest.raises(UnprocessableEntityError):
        a.assistants.search(limit=0)
    with pytest.raises(UnprocessableEntityError):
        a.assistants.search(select=["colour"])  # type: ignore[list-item]
    with pytest.raises(UnprocessableEntityError):
        a.assistants.create("echo", if_exists="sometimes")  # type: ignore[arg-type]
    with pytest.raises(UnprocessableEntityError):
        a.assistants.create("echo", assistant_id="not-a-uuid")
    with pytest.raises(UnprocessableEntityError):
        a.assistants.create("echo", config="nope")  # type: ignore[arg-type]
    with pytest.raises(NotFoundError):
        a.assistants.get(str(uuid.uuid4()))
    with pytest.raises(NotFoundError):
        a.assistants.get("no-such-graph")
    aid = a.assistants.create("echo")["assistant_id"]
    with pytest.raises(NotFoundError):
        a.assistants.set_latest(aid, 7)
    with pytest.raises(UnprocessableEntityError):
        a.assistants.set_latest(aid, 0)
    with pytest.raises(UnprocessableEntityError):
        a.assistants.update(aid, graph_id="no-such-graph")
    bad_xray = httpx.get(f"{urls[0]}/assistants/echo/graph", params={"xray": "lots"})
    assert bad_xray.status_code == 422 and "xray" in bad_xray.json()["detail"]
    bad_body = httpx.post(f"{urls[0]}/assistants/search", content=b"[1]")
    assert bad_body.status_code == 422
    assert httpx.get(urls[0] + "/ok").status_code == 200
    assert a.assistants.get(aid)["version"] == 1


async def test_the_async_client_manages_assistants(urls: list[str]) -> None:
    client = get_client(url=urls[-1])
    made = await client.assistants.create("steps", name="async one", metadata={"async": True})
    got = await client.assistants.get(made["assistant_id"])
    assert got == made
    updated = await client.assistants.update(made["assistant_id"], name="renamed")
    assert updated["version"] == 2
    assert (await client.assistants.get_schemas(made["assistant_id"]))["graph_id"] == "steps"
    await client.assistants.delete(made["assistant_id"])
    assert await client.assistants.count(metadata={"async": True}) == 0


async def test_assistant_for_run_on_a_real_database(tmp_path: Path) -> None:
    """The function routes_runs.py resolves a run's assistant with."""
    db = await open_database(f"sqlite:///{tmp_path / 'a.db'}")
    try:
        await ensure_system_assistants(db, ["echo"])
        await ensure_system_assistants(db, ["echo"])  # a second replica starting: no change
        system = await assistant_for_run(db, "echo")
        assert system is not None and system.assistant_id == assistant_id_of("echo")
        assert await assistant_for_run(db, assistant_id_of("echo")) == system
        mine = new_assistant(
            assistant_id=str(uuid.uuid4()), graph_id="echo", name="m", description=None,
            config={"configurable": {"who": "ada", "mood": "calm"}, "tags": ["a"]},
            context={"k": 1}, metadata={},
        )  # fmt: skip
        async with db.transaction() as tx:
            assert await insert_assistant(tx, mine)
        found = await assistant_for_run(db, mine.assistant_id, ["echo"])
        assert isinstance(found, Assistant) and found.config == mine.config
        assert await assistant_for_run(db, mine.assistant_id, ["steps"]) is None
        assert await assistant_for_run(db, "nope") is None
        assert await assistant_for_run(db, "") is None
        kwargs = found.run_kwargs(
            {"input": {}, "config": {"configurable": {"mood": "busy"}, "tags": ["b"]},
             "context": {"j": 2}}
        )  # fmt: skip
        assert kwargs["config"] == {
            "configurable": {"who": "ada", "mood": "busy"},
            "tags": ["a", "b"],
        }
        assert kwargs["context"] == {"k": 1, "j": 2} and kwargs["input"] == {}
        assert system.run_kwargs({"input": 1}) == {"input": 1}
    finally:
        await db.close()
