"""Group commit on PostgreSQL: concurrent commits to different threads share one statement.

Every commit still moves its own head by compare-and-swap: one that loses its race fails alone,
and a batch the server refuses is settled commit by commit.
"""

from __future__ import annotations

import asyncio
import operator
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated, Any, TypedDict

import pytest
from backends import (
    _drop_postgres_schema,
    _postgres_schema,
    postgres_url_or_skip,
    terminate,
    with_app_name,
)

pytest.importorskip("psycopg")

import itertools

from threadline.checkpoint.postgres import PostgresSaver
from threadline.checkpoint.postgres.aio import AsyncPostgresSaver
from threadline.checkpoint.types import (
    ChannelChange,
    Checkpoint,
    CheckpointDraft,
    VersionRow,
)
from threadline.errors import CheckpointConflictError
from threadline.graph import END, START, StateGraph

pytestmark = pytest.mark.postgres


def draft(value: list[str], parent: Checkpoint | None) -> CheckpointDraft:
    return CheckpointDraft(
        step=0 if parent is None else parent.step + 1,
        source="loop",
        metadata={},
        tasks=[],
        changes={"items": ChannelChange(value, None if parent is None else value[-1:])},
        parent_id=None if parent is None else parent.id,
        base_refs={} if parent is None else parent.refs,
    )


@pytest.fixture
def saver() -> Iterator[PostgresSaver]:
    url = postgres_url_or_skip()
    schema = _postgres_schema()
    try:
        with PostgresSaver.from_conn_string(url, schema=schema, pool_max_size=8) as s:
            yield s
    finally:
        _drop_postgres_schema(url, schema)


@pytest.fixture
async def asaver() -> AsyncIterator[AsyncPostgresSaver]:
    url = postgres_url_or_skip()
    schema = _postgres_schema()
    try:
        async with AsyncPostgresSaver.from_conn_string(url, schema=schema, pool_max_size=8) as s:
            yield s
    finally:
        _drop_postgres_schema(url, schema)


def count_statements(saver: Any, attribute: str) -> dict[str, int]:
    """Count the saver's statements, batches apart (the real method still runs)."""
    counts = {"statements": 0, "batches": 0}
    run = saver._run
    batch_sql = saver._commit_many

    def note(call: Any) -> None:
        counts["statements"] += 1
        closure = getattr(call.proc, "__closure__", None) or ()
        if any(getattr(cell, "cell_contents", None) == batch_sql for cell in closure):
            counts["batches"] += 1

    if attribute == "sync":

        def counted(call: Any, **kwargs: Any) -> Any:
            note(call)
            return run(call, **kwargs)

        saver._run = counted
    else:

        async def acounted(call: Any, **kwargs: Any) -> Any:
            note(call)
            return await run(call, **kwargs)

        saver._run = acounted
    return counts


class State(TypedDict):
    log: Annotated[list[str], operator.add]


def chat(saver: Any) -> Any:
    async def a(state: State) -> dict[str, list[str]]:
        return {"log": [f"a{len(state['log'])}"]}

    async def b(state: State) -> dict[str, list[str]]:
        return {"log": [f"b{len(state['log'])}"]}

    builder = StateGraph(State)
    builder.add_node("a", a)
    builder.add_node("b", b)
    builder.add_edge(START, "a")
    builder.add_edge("a", "b")
    builder.add_edge("b", END)
    return builder.compile(checkpointer=saver)


async def test_concurrent_runs_share_statements_and_stay_exact(
    asaver: AsyncPostgresSaver,
) -> None:
    app = chat(asaver)
    threads = [f"t-{uuid.uuid4().hex[:8]}" for _ in range(30)]
    configs = [{"configurable": {"thread_id": t}} for t in threads]
    await asyncio.gather(*(app.ainvoke({"log": ["hi"]}, c) for c in configs))  # create them
    counts = count_statements(asaver, "async")

    async def turns(config: dict[str, Any]) -> None:
        for i in range(4):
            await app.ainvoke({"log": [f"u{i}"]}, config)

    await asyncio.gather(*(turns(c) for c in configs))
    commits = 30 * 4 * 3
    assert counts["batches"] > 0
    assert counts["statements"] < commits  # fewer statements than commits: they were shared
    for config in configs:
        state = await app.aget_state(config)
        assert state.values["log"] == [
            "hi",
            "a1",
            "b2",
            *(x for i in range(4) for x in (f"u{i}", f"a{3 + 3 * i + 1}", f"b{3 + 3 * i + 2}")),
        ]
        history = [s async for s in app.aget_state_history(config)]
        assert len(history) == 20  # per turn: input, step 0, two nodes
        for newer, older in itertools.pairwise(history):
            assert (
                newer.parent_config["configurable"]["checkpoint_id"]
                == (older.config["configurable"]["checkpoint_id"])
            )


async def test_a_lost_race_in_a_batch_fails_alone(asaver: AsyncPostgresSaver) -> None:
    heads = {}
    for name in ("lead", "x", "y", "z"):
        heads[name] = await asaver.aput(name, "", draft(["0"], None), expected_head=None)
    # Move y on, so a commit still expecting its first head loses the race.
    moved = await asaver.aput("y", "", draft(["0", "1"], heads["y"]), expected_head=heads["y"].id)
    counts = count_statements(asaver, "async")

    async def commit(name: str, expected: Checkpoint) -> Checkpoint:
        return await asaver.aput(name, "", draft(["0", "n"], expected), expected_head=expected.id)

    # The first commit goes alone; the three queued behind it go as one batch.
    results = await asyncio.gather(
        *(commit(n, heads[n]) for n in ("lead", "x", "y", "z")), return_exceptions=True
    )
    assert counts["batches"] == 1
    assert isinstance(results[2], CheckpointConflictError)
    assert results[2].thread_id == "y" and results[2].actual == moved.id
    for name, result in zip(("lead", "x", "z"), (results[0], results[1], results[3])):
        assert isinstance(result, Checkpoint)
        loaded = await asaver.aload(name, "", None, shared=False)
        assert loaded is not None
        assert loaded.checkpoint.id == result.id and loaded.checkpoint.values["items"] == ["0", "n"]
    y = await asaver.aload("y", "", None, shared=False)
    assert y is not None and y.checkpoint.id == moved.id
    assert len([c async for c in asaver.alist({"configurable": {"thread_id": "y"}})]) == 2


async def test_new_threads_go_in_batches_and_an_existing_one_fails_alone(
    asaver: AsyncPostgresSaver,
) -> None:
    taken = await asaver.aput("taken", "", draft(["0"], None), expected_head=None)
    x = await asaver.aput("x", "", draft(["0"], None), expected_head=None)
    await asaver.aput("p", "", draft(["0"], None), expected_head=None)
    counts = count_statements(asaver, "async")

    async def create(name: str, ns: str = "") -> Checkpoint:
        return await asaver.aput(name, ns, draft([name], None), expected_head=None)

    # The first goes alone; the rest (new threads, one that exists, a new namespace of an
    # existing thread and a move) as one batch.
    results = await asyncio.gather(
        create("lead"),
        create("n1"),
        create("taken"),
        create("n2"),
        asaver.aput("x", "", draft(["0", "1"], x), expected_head=x.id),
        create("p", "child:1"),
        return_exceptions=True,
    )
    assert counts["batches"] == 1
    lead, n1, conflict, n2, moved, child = results
    assert isinstance(child, Checkpoint) and child.seq == 2  # the thread's counter went on
    assert isinstance(conflict, CheckpointConflictError)
    assert conflict.thread_id == "taken" and conflict.actual == taken.id
    for name, saved in (("lead", lead), ("n1", n1), ("n2", n2)):
        assert isinstance(saved, Checkpoint) and saved.seq == 1
        loaded = await asaver.aload(name, "", None, shared=False)
        assert loaded is not None and loaded.checkpoint.values["items"] == [name]
    assert isinstance(moved, Checkpoint) and moved.seq == 2
    loaded = await asaver.aload("taken", "", None, shared=False)
    assert loaded is not None and loaded.checkpoint.id == taken.id
    names = {t.thread_id for t in await asaver.alist_threads()}
    assert names == {"taken", "x", "p", "lead", "n1", "n2"}


async def test_a_batch_the_server_refuses_is_settled_commit_by_commit(
    asaver: AsyncPostgresSaver,
) -> None:
    heads = {}
    for name in ("lead", "x", "y"):
        heads[name] = await asaver.aput(name, "", draft(["0"], None), expected_head=None)
    # A commit whose version row collides with one already stored makes the batch statement
    # fail as a whole; each commit is then run alone, and only the bad one fails.
    original = asaver._prepare_commit

    def colliding(thread_id: str, *args: Any) -> Any:
        row, versions, meta, expires = original(thread_id, *args)
        if thread_id == "y":
            versions = [VersionRow("items", heads["y"].id, None, versions[0].data)]
        return row, versions, meta, expires

    asaver._prepare_commit = colliding  # type: ignore[method-assign]
    counts = count_statements(asaver, "async")
    results = await asyncio.gather(
        *(
            asaver.aput(n, "", draft(["0", "n"], heads[n]), expected_head=heads[n].id)
            for n in ("lead", "x", "y")
        ),
        return_exceptions=True,
    )
    assert counts["batches"] == 1
    assert isinstance(results[0], Checkpoint) and isinstance(results[1], Checkpoint)
    assert isinstance(results[2], Exception) and not isinstance(results[2], Checkpoint)
    x = await asaver.aload("x", "", None, shared=False)
    assert x is not None and x.checkpoint.values["items"] == ["0", "n"]
    y = await asaver.aload("y", "", None, shared=False)
    assert y is not None and y.checkpoint.id == heads["y"].id


def test_threads_share_statements(saver: PostgresSaver) -> None:
    names = [f"t{i}" for i in range(16)]
    heads = {n: saver.put(n, "", draft(["0"], None), expected_head=None) for n in names}
    counts = count_statements(saver, "sync")
    start = threading.Barrier(len(names))

    def grow(name: str) -> list[str]:
        head, value = heads[name], ["0"]
        start.wait()
        for i in range(10):
            value = [*value, f"{name}-{i}"]
            head = saver.put(name, "", draft(value, head), expected_head=head.id)
        return value

    with ThreadPoolExecutor(len(names)) as pool:
        expected = dict(zip(names, pool.map(grow, names)))
    assert counts["batches"] > 0 and counts["statements"] < 16 * 10
    for name in names:
        loaded = saver.load(name, "", None, shared=False)
        assert loaded is not None and loaded.checkpoint.values["items"] == expected[name]
        assert len(list(saver.list({"configurable": {"thread_id": name}}))) == 11


def test_group_commit_can_be_turned_off(saver: PostgresSaver) -> None:
    saver.group_commit = False
    names = [f"t{i}" for i in range(8)]
    heads = {n: saver.put(n, "", draft(["0"], None), expected_head=None) for n in names}
    counts = count_statements(saver, "sync")
    start = threading.Barrier(len(names))

    def commit(name: str) -> None:
        start.wait()
        saver.put(name, "", draft(["0", "1"], heads[name]), expected_head=heads[name].id)

    with ThreadPoolExecutor(len(names)) as pool:
        list(pool.map(commit, names))
    assert counts == {"statements": 8, "batches": 0}


async def test_connections_killed_under_load_lose_and_repeat_nothing() -> None:
    """Backends killed again and again while 20 threads commit in batches: runs may fail, and
    each is then finished from what was stored; no thread ends with a step lost or doubled."""
    import psycopg

    url = postgres_url_or_skip()
    schema = _postgres_schema()
    app_name = f"tl_gc_{uuid.uuid4().hex[:8]}"
    kills = 0
    try:
        async with AsyncPostgresSaver.from_conn_string(
            with_app_name(url, app_name), schema=schema, pool_max_size=8
        ) as saver:
            app = chat(saver)
            configs = [{"configurable": {"thread_id": f"k{i}"}} for i in range(20)]
            done = asyncio.Event()

            async def killer() -> None:  # a second of chaos, then the runs can finish
                nonlocal kills
                for _ in range(40):
                    if done.is_set():
                        return
                    await asyncio.sleep(0.025)
                    kills += await asyncio.to_thread(terminate, url, app_name)

            async def turn(config: dict[str, Any], i: int) -> None:
                for _ in range(2000):  # until the turn is whole, whatever failed on the way
                    try:
                        state = await app.aget_state(config)
                        log = state.values.get("log", [])
                        if f"u{i}" not in log:
                            await app.ainvoke({"log": [f"u{i}"]}, config)
                        elif state.next:
                            await app.ainvoke(None, config)
                        else:
                            return
                    except psycopg.OperationalError:
                        await asyncio.sleep(0.005)
                raise AssertionError(f"turn {i} of {config} never completed")

            async def thread(config: dict[str, Any]) -> None:
                for i in range(8):
                    await turn(config, i)

            kill_task = asyncio.ensure_future(killer())
            try:
                await asyncio.gather(*(thread(c) for c in configs))
            finally:
                done.set()
                await kill_task
            for config in configs:
                log = (await app.aget_state(config)).values["log"]
                expected: list[str] = []
                for i in range(8):
                    expected += [f"u{i}", f"a{len(expected) + 1}", f"b{len(expected) + 2}"]
                assert log == expected
                history = [s async for s in app.aget_state_history(config)]
                assert len(history) == 8 * 4  # per turn: input, step 0, two nodes
                for newer, older in itertools.pairwise(history):
                    assert (
                        newer.parent_config["configurable"]["checkpoint_id"]
                        == (older.config["configurable"]["checkpoint_id"])
                    )
    finally:
        _drop_postgres_schema(url, schema)
    assert kills > 0


def test_sync_connections_killed_under_load_lose_and_repeat_nothing() -> None:
    """The blocking saver's twin of the test above, with Python threads sharing one saver."""
    import psycopg

    def a(state: State) -> dict[str, list[str]]:
        return {"log": [f"a{len(state['log'])}"]}

    def b(state: State) -> dict[str, list[str]]:
        return {"log": [f"b{len(state['log'])}"]}

    url = postgres_url_or_skip()
    schema = _postgres_schema()
    app_name = f"tl_gcs_{uuid.uuid4().hex[:8]}"
    kills = 0
    try:
        with PostgresSaver.from_conn_string(
            with_app_name(url, app_name), schema=schema, pool_max_size=8
        ) as saver:
            builder = StateGraph(State)
            builder.add_node("a", a)
            builder.add_node("b", b)
            builder.add_edge("a", "b")
            builder.add_edge(START, "a")
            builder.add_edge("b", END)
            app = builder.compile(checkpointer=saver)
            done = threading.Event()

            def killer() -> None:  # a second of chaos, then the runs can finish
                nonlocal kills
                for _ in range(40):
                    if done.wait(0.025):
                        return
                    kills += terminate(url, app_name)

            def thread(name: str) -> None:
                config = {"configurable": {"thread_id": name}}
                for i in range(6):
                    for _ in range(2000):
                        try:
                            state = app.get_state(config)
                            log = state.values.get("log", [])
                            if f"u{i}" not in log:
                                app.invoke({"log": [f"u{i}"]}, config)
                            elif state.next:
                                app.invoke(None, config)
                            else:
                                break
                        except psycopg.OperationalError:
                            time.sleep(0.005)
                    else:
                        raise AssertionError(f"turn {i} of {name} never completed")

            kill_thread = threading.Thread(target=killer)
            kill_thread.start()
            try:
                with ThreadPoolExecutor(12) as pool:
                    list(pool.map(thread, [f"s{i}" for i in range(12)]))
            finally:
                done.set()
                kill_thread.join()
            expected: list[str] = []
            for i in range(6):
                expected += [f"u{i}", f"a{len(expected) + 1}", f"b{len(expected) + 2}"]
            for i in range(12):
                config = {"configurable": {"thread_id": f"s{i}"}}
                assert app.get_state(config).values["log"] == expected
                assert len(list(app.get_state_history(config))) == 6 * 4
    finally:
        _drop_postgres_schema(url, schema)
    assert kills > 0
