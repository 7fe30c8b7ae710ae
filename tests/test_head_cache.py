"""A run with new input starts from the head its process last saved, without reading it back.

Each test uses two savers over one database, as two processes (or two servers) would: each has
its own cache, so one of them ends up holding a head the other has moved on from.
"""

from __future__ import annotations

import contextlib
import itertools
import operator
import os
import tempfile
from collections.abc import AsyncIterator, Iterator
from typing import Annotated, Any, TypedDict

import pytest
from backends import _drop_postgres_schema, _postgres_schema, postgres_url_or_skip
from counting import fresh_config

from threadline.checkpoint.base import BaseCheckpointSaver
from threadline.graph import END, START, StateGraph
from threadline.types import interrupt


class State(TypedDict):
    log: Annotated[list[str], operator.add]


def graph(saver: BaseCheckpointSaver, *, ask: bool = False) -> Any:
    def reply(state: State) -> dict[str, list[str]]:
        answer = interrupt("ok?") if ask else "yes"
        return {"log": [f"reply to {state['log'][-1]} ({answer})"]}

    builder = StateGraph(State)
    builder.add_node("reply", reply)
    builder.add_edge(START, "reply")
    builder.add_edge("reply", END)
    return builder.compile(checkpointer=saver)


@contextlib.contextmanager
def two_savers(kind: str) -> Iterator[tuple[Any, Any]]:
    if kind == "sqlite":
        from threadline.checkpoint.sqlite import SqliteSaver

        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "t.db")
            with SqliteSaver.from_conn_string(path) as a, SqliteSaver.from_conn_string(path) as b:
                yield a, b
        return
    from threadline.checkpoint.postgres import PostgresSaver

    url = postgres_url_or_skip()
    schema = _postgres_schema()
    try:
        with (
            PostgresSaver.from_conn_string(url, schema=schema, pool_max_size=2) as a,
            PostgresSaver.from_conn_string(url, schema=schema, pool_max_size=2) as b,
        ):
            yield a, b
    finally:
        _drop_postgres_schema(url, schema)


@contextlib.asynccontextmanager
async def two_async_savers(kind: str) -> AsyncIterator[tuple[Any, Any]]:
    if kind == "aiosqlite":
        from threadline.checkpoint.sqlite.aio import AsyncSqliteSaver

        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "t.db")
            async with (
                AsyncSqliteSaver.from_conn_string(path) as a,
                AsyncSqliteSaver.from_conn_string(path) as b,
            ):
                yield a, b
        return
    from threadline.checkpoint.postgres.aio import AsyncPostgresSaver

    url = postgres_url_or_skip()
    schema = _postgres_schema()
    try:
        async with (
            AsyncPostgresSaver.from_conn_string(url, schema=schema, pool_max_size=2) as a,
            AsyncPostgresSaver.from_conn_string(url, schema=schema, pool_max_size=2) as b,
        ):
            yield a, b
    finally:
        _drop_postgres_schema(url, schema)


SYNC = [pytest.param("sqlite"), pytest.param("postgres", marks=pytest.mark.postgres)]
ASYNC = [pytest.param("aiosqlite"), pytest.param("postgres-async", marks=pytest.mark.postgres)]


def count_calls(saver: Any, name: str) -> list[int]:
    """Count calls of one of the saver's primitives (the real method still runs)."""
    calls = [0]
    method = getattr(saver, name)

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        return method(*args, **kwargs)

    setattr(saver, name, counted)
    return calls


def assert_one_chain(app: Any, config: dict[str, Any]) -> None:
    history = list(app.get_state_history(config))
    for newer, older in itertools.pairwise(history):
        assert (
            newer.parent_config["configurable"]["checkpoint_id"]
            == (older.config["configurable"]["checkpoint_id"])
        )


@pytest.mark.parametrize("kind", SYNC)
def test_next_turn_reads_no_head(kind: str) -> None:
    with two_savers(kind) as (saver, _):
        app = graph(saver)
        config = fresh_config()
        app.invoke({"log": ["one"]}, config)
        reads = count_calls(saver, "_read_checkpoint")
        out = app.invoke({"log": ["two"]}, config)
        assert reads[0] == 0
        assert out["log"] == ["one", "reply to one (yes)", "two", "reply to two (yes)"]
        assert app.get_state(config).values == out  # and it is what the database holds
        assert reads[0] == 1


@pytest.mark.parametrize("kind", SYNC)
def test_stale_cached_head_restarts_from_the_stored_head(kind: str) -> None:
    with two_savers(kind) as (a, b):
        app_a, app_b = graph(a), graph(b)
        config = fresh_config()
        app_a.invoke({"log": ["one"]}, config)
        app_b.invoke({"log": ["two"]}, config)  # a's cached head is now stale
        out = app_a.invoke({"log": ["three"]}, config)
        assert out["log"] == [
            *["one", "reply to one (yes)"],
            *["two", "reply to two (yes)"],
            *["three", "reply to three (yes)"],
        ]
        assert app_b.get_state(config).values == out
        assert_one_chain(app_b, config)
        # Another process writes this thread: a's next turn reads the head first, and finds
        # its own last commit there; from then on it starts from its cache again.
        reads = count_calls(a, "_read_checkpoint")
        app_a.invoke({"log": ["four"]}, config)
        assert reads[0] == 1
        app_a.invoke({"log": ["five"]}, config)
        assert reads[0] == 1


@pytest.mark.parametrize("kind", SYNC)
def test_a_thread_two_processes_take_turns_on_costs_no_failed_commits(kind: str) -> None:
    """Turns alternating between processes (a load balancer spreading a conversation): after
    the first stale start, each process reads the head instead of trying its stale cache."""
    with two_savers(kind) as (a, b):
        app_a, app_b = graph(a), graph(b)
        alone = fresh_config()
        app_a.invoke({"log": ["warm"]}, alone)
        commits = count_calls(a, "_commit")
        app_a.invoke({"log": ["again"]}, alone)
        per_turn = commits[0]
        config = fresh_config()
        for turn in range(3):
            app_a.invoke({"log": [f"a{turn}"]}, config)
            app_b.invoke({"log": [f"b{turn}"]}, config)
        commits[0] = 0
        for turn in range(3, 6):
            app_a.invoke({"log": [f"a{turn}"]}, config)
            app_b.invoke({"log": [f"b{turn}"]}, config)
        assert commits[0] == 3 * per_turn  # no commit that failed its compare-and-swap
        assert len(app_b.get_state(config).values["log"]) == 24
        assert_one_chain(app_b, config)


@pytest.mark.parametrize("kind", SYNC)
def test_thread_deleted_elsewhere_starts_afresh(kind: str) -> None:
    with two_savers(kind) as (a, b):
        app_a = graph(a)
        config = fresh_config()
        app_a.invoke({"log": ["one"]}, config)
        b.delete_thread(config["configurable"]["thread_id"])
        out = app_a.invoke({"log": ["again"]}, config)
        assert out["log"] == ["again", "reply to again (yes)"]
        assert len(list(app_a.get_state_history(config))) == 3  # input, step 0, reply


@pytest.mark.parametrize("kind", SYNC)
def test_head_with_pending_tasks_is_always_read(kind: str) -> None:
    with two_savers(kind) as (saver, _):
        app = graph(saver, ask=True)
        config = fresh_config()
        app.invoke({"log": ["one"]}, config)  # paused in interrupt(): the head has a task
        reads = count_calls(saver, "_read_checkpoint")
        app.invoke({"log": ["two"]}, config)
        assert reads[0] >= 1


@pytest.mark.parametrize("kind", SYNC)
def test_stream_of_a_restarted_run_shows_each_event_once(kind: str) -> None:
    with two_savers(kind) as (a, b):
        app_a, app_b = graph(a), graph(b)
        config = fresh_config()
        app_a.invoke({"log": ["one"]}, config)
        app_b.invoke({"log": ["two"]}, config)
        chunks = list(app_a.stream({"log": ["three"]}, config, stream_mode="values"))
        assert [c["log"][-1] for c in chunks] == ["three", "reply to three (yes)"]
        assert chunks[0]["log"][:4] == ["one", "reply to one (yes)", "two", "reply to two (yes)"]


@pytest.mark.parametrize("kind", ASYNC)
async def test_async_stale_cached_head_restarts(kind: str) -> None:
    async with two_async_savers(kind) as (a, b):
        app_a, app_b = graph(a), graph(b)
        config = fresh_config()
        await app_a.ainvoke({"log": ["one"]}, config)
        reads = count_calls(a, "_aread_checkpoint")
        await app_a.ainvoke({"log": ["two"]}, config)
        assert reads[0] == 0
        await app_b.ainvoke({"log": ["three"]}, config)
        out = await app_a.ainvoke({"log": ["four"]}, config)
        assert [m for m in out["log"] if not m.startswith("reply")] == [
            "one",
            "two",
            "three",
            "four",
        ]
        assert (await app_b.aget_state(config)).values == out
        history = [s async for s in app_b.aget_state_history(config)]
        assert len(history) == 12  # 4 turns of input, step 0, reply


async def turn(app: Any, text: str, config: dict[str, Any]) -> Any:
    """One turn as the server runs it: in the background, then the state it left."""
    handle = app.astart({"log": [text]}, config, stream_mode=["values"])
    await handle.wait()
    return await handle.state()


@pytest.mark.parametrize("kind", ASYNC)
async def test_the_state_a_run_left_is_read_without_a_query(kind: str) -> None:
    async with two_async_savers(kind) as (saver, _):
        app = graph(saver)
        config = fresh_config()
        await turn(app, "one", config)
        reads = count_calls(saver, "_aread_checkpoint")
        left = await turn(app, "two", config)
        assert reads[0] == 0
        assert left.values["log"] == ["one", "reply to one (yes)", "two", "reply to two (yes)"]
        assert left == await app.aget_state(config)  # the same snapshot the head read gives


@pytest.mark.parametrize("kind", ASYNC)
async def test_the_state_a_run_left_stays_its_own_after_another_turn(kind: str) -> None:
    async with two_async_savers(kind) as (a, b):
        app_a, app_b = graph(a), graph(b)
        config = fresh_config()
        handle = app_a.astart({"log": ["one"]}, config, stream_mode=["values"])
        await handle.wait()
        await turn(app_b, "two", config)  # the head moves on, in another process
        left = await handle.state()
        assert left.values["log"] == ["one", "reply to one (yes)"]
        assert left.config == handle.checkpoint_config


@pytest.mark.parametrize("kind", ASYNC)
async def test_the_state_an_interrupted_run_left_has_its_question(kind: str) -> None:
    async with two_async_savers(kind) as (saver, _):
        app = graph(saver, ask=True)
        config = fresh_config()
        left = await turn(app, "one", config)
        assert left.next == ("reply",)
        assert [i.value for i in left.interrupts] == ["ok?"]
        assert left == await app.aget_state(config)


@pytest.mark.parametrize("kind", ASYNC)
async def test_replicas_taking_turns_and_reading_what_they_left_cost_no_failed_commits(
    kind: str,
) -> None:
    """Two servers alternating on one conversation, each reading back the state its run left
    (for the thread's row): that read must not vouch for a head the other one moves."""
    async with two_async_savers(kind) as (a, b):
        app_a, app_b = graph(a), graph(b)
        alone = fresh_config()
        await turn(app_a, "warm", alone)
        commits = count_calls(a, "_acommit")
        await turn(app_a, "again", alone)
        per_turn = commits[0]
        config = fresh_config()
        for n in range(3):
            await turn(app_a, f"a{n}", config)
            await turn(app_b, f"b{n}", config)
        commits[0] = 0
        for n in range(3, 6):
            await turn(app_a, f"a{n}", config)
            await turn(app_b, f"b{n}", config)
        assert commits[0] == 3 * per_turn  # no commit that failed its compare-and-swap
        assert len((await app_b.aget_state(config)).values["log"]) == 24


async def test_the_state_of_a_run_without_a_checkpointer_is_refused() -> None:
    builder = StateGraph(State)
    builder.add_node("reply", lambda state: {"log": ["yes"]})
    builder.add_edge(START, "reply")
    app = builder.compile()
    handle = app.astart({"log": ["one"]}, stream_mode=["values"])
    await handle.wait()
    with pytest.raises(ValueError, match="checkpointer"):
        await handle.state()
