"""Maintenance (prune, TTL sweep, delete, copy, fork) racing runs never breaks a thread.

A run that continues from an older checkpoint (time travel) refers to that checkpoint's
channel versions. Whatever maintenance does meanwhile, no committed checkpoint may refer to a
deleted version: the commit either lands on versions that are still stored, or stores nothing
and the runtime stores the step with full values. Every test ends by reading the whole thread
cold (no cached values or heads), as another process would.

Three levels: the saver API with the race's interleaving spelled out (every backend, sync and
async), graphs whose node runs while the maintenance happens in this process (threads and
tasks), and maintenance from another process (SQLite, PostgreSQL).
"""

from __future__ import annotations

import asyncio
import operator
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Annotated, Any, TypedDict

import pytest
from backends import Backend, Driver, postgres_url
from rowhacks import forget_process_state
from test_checkpoint_contract import MakeDriver, cfg, draft, grow

from threadline.checkpoint.base import BaseCheckpointSaver
from threadline.checkpoint.types import ChannelChange
from threadline.errors import (
    BaseCheckpointGoneError,
    CheckpointConflictError,
    CheckpointNotFoundError,
)
from threadline.graph import END, START, StateGraph

T = "thread-1"
SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")


async def read_all(cp: Driver, thread_id: str = T) -> list[dict[str, Any]]:
    """Every checkpoint's values, read cold; raises if any does not decode."""
    forget_process_state(cp.saver)
    head = await cp.get_tuple(cfg(thread_id))
    history = await cp.list(cfg(thread_id))
    if head is not None:
        assert history and history[0].checkpoint.id == head.checkpoint.id
        assert history[0].checkpoint.values == head.checkpoint.values
    return [t.checkpoint.values for t in history]


class MaintenanceRaces:
    """The saver-level interleavings, written once (``cp`` drives a sync or async saver)."""

    @pytest.fixture
    async def cp(self, make_cp: MakeDriver) -> Driver:
        return await make_cp()

    async def _time_travel_draft(self, cp: Driver, *, with_values: bool) -> Any:
        """Grow a thread, then a draft continuing from its second checkpoint, as a run would
        after loading it: parent and base refs of that checkpoint, a delta on its items."""
        saved, _ = await grow(cp, 6)
        old = saved[1]
        loaded = await cp.load(T, "", old.id, shared=True)
        values = loaded.checkpoint.values
        new = ["after-time-travel"]
        full = {**values, "items": [*values["items"], *new], "step": 99}
        d = draft(
            {"items": ChannelChange(full["items"], appended=new), "step": 99},
            parent=loaded.checkpoint,
            step=99,
        )
        if with_values:
            d.values = full
        return saved, d, full

    async def test_commit_on_a_pruned_base_stores_full_values(self, cp: Driver) -> None:
        saved, d, full = await self._time_travel_draft(cp, with_values=True)
        assert await cp.prune([T], keep_last=1) == 5  # removes the base, saved[1]
        put = await cp.put(T, "", d, expected_head=saved[-1].id)
        assert all(ref.writer == put.id for ref in put.refs.values())  # snapshots only
        history = await read_all(cp)
        assert history == [full, {"items": history[1]["items"], "step": 5}]

    async def test_commit_on_a_pruned_base_without_values_stores_nothing(self, cp: Driver) -> None:
        saved, d, _ = await self._time_travel_draft(cp, with_values=False)
        await cp.prune([T], keep_last=1)
        with pytest.raises(BaseCheckpointGoneError, match=saved[1].id) as caught:
            await cp.put(T, "", d, expected_head=saved[-1].id)
        assert isinstance(caught.value, CheckpointConflictError)
        assert len(await read_all(cp)) == 1
        assert (await cp.get_tuple(cfg())).checkpoint.id == saved[-1].id

    async def test_commit_on_a_kept_base_still_borrows_its_versions(self, cp: Driver) -> None:
        saved, d, full = await self._time_travel_draft(cp, with_values=True)
        await cp.prune([T], keep_last=5)  # saved[1] stays
        put = await cp.put(T, "", d, expected_head=saved[-1].id)
        assert put.refs["items"].writer == put.id and put.refs["items"].chain_bytes > 0  # a delta
        assert (await read_all(cp))[0] == full

    async def test_commit_after_delete_stores_nothing(self, cp: Driver) -> None:
        saved, d, _ = await self._time_travel_draft(cp, with_values=True)
        await cp.delete_thread(T)
        with pytest.raises(CheckpointConflictError):
            await cp.put(T, "", d, expected_head=saved[-1].id)
        assert await read_all(cp) == []

    async def test_commit_after_sweep_stores_nothing(self, make_cp: MakeDriver) -> None:
        cp = await make_cp(ttl=0.05, auto_sweep=False)
        saved, d, _ = await self._time_travel_draft(cp, with_values=True)
        time.sleep(0.1)
        assert await cp.sweep_expired() == 1
        with pytest.raises(CheckpointConflictError):
            await cp.put(T, "", d, expected_head=saved[-1].id)
        assert await read_all(cp) == []

    async def test_copy_then_prune_then_commit(self, cp: Driver) -> None:
        saved, d, full = await self._time_travel_draft(cp, with_values=True)
        await cp.copy_thread(T, "copy")
        await cp.prune([T], keep_last=1)
        await cp.put(T, "", d, expected_head=saved[-1].id)
        assert (await read_all(cp))[0] == full
        assert len(await read_all(cp, "copy")) == 6  # the copy kept everything, and reads
        await cp.prune(["copy"], keep_last=2)
        assert len(await read_all(cp, "copy")) == 2

    async def test_fork_of_a_pruned_checkpoint_is_not_found(self, cp: Driver) -> None:
        saved, _ = await grow(cp, 4)
        forked = await cp.fork(cfg(T, saved[1].id), "fork-before")
        await cp.prune([T], keep_last=1)
        with pytest.raises(CheckpointNotFoundError):
            await cp.fork(cfg(T, saved[1].id), "fork-after")
        assert (await read_all(cp, "fork-before"))[0] == forked.values
        assert await read_all(cp, "fork-after") == []


class TestSyncRaces(MaintenanceRaces):
    @pytest.fixture
    def make_cp(
        self, make_saver: Callable[..., BaseCheckpointSaver], sync_backend: Backend
    ) -> MakeDriver:
        async def make(**options: Any) -> Driver:
            return Driver(make_saver(**options), sync_backend)

        return make


class TestAsyncRaces(MaintenanceRaces):
    @pytest.fixture
    def make_cp(self, amake_saver: Any, async_backend: Backend) -> MakeDriver:
        async def make(**options: Any) -> Driver:
            return Driver(await amake_saver(**options), async_backend)

        return make


# ---------------------------------------------------------------------- graphs


class S(TypedDict, total=False):
    messages: Annotated[list[str], operator.add]
    topic: str


def two_step_graph(saver: BaseCheckpointSaver, second: Callable[[S], Any]) -> Any:
    def first(state: S) -> S:
        return {"topic": f"topic at {len(state.get('messages', []))}"}

    b = StateGraph(S)
    b.add_node("first", first)
    b.add_node("second", second)
    b.add_edge(START, "first")
    b.add_edge("first", "second")
    b.add_edge("second", END)
    return b.compile(checkpointer=saver)


def oldest_before_second(app: Any, config: dict[str, Any]) -> Any:
    return [h for h in app.get_state_history(config) if h.next == ("second",)][-1]


def assert_readable(app: Any, saver: BaseCheckpointSaver, thread_id: str) -> list[Any]:
    forget_process_state(saver)
    config = {"configurable": {"thread_id": thread_id}}
    history = list(app.get_state_history(config))
    state = app.get_state(config)
    if history:
        assert history[0].values == state.values
    return history


OPS = ["prune", "delete", "sweep", "copy", "fork"]


def maintain(op: str, saver: BaseCheckpointSaver, old_config: dict[str, Any]) -> None:
    if op == "prune":
        assert saver.prune(["t"], keep_last=1) > 0
    elif op == "delete":
        saver.delete_thread("t")
    elif op == "sweep":
        time.sleep(0.3)  # past the ttl
        assert saver.sweep_expired() == 1
    elif op == "copy":
        saver.copy_thread("t", "t-copy")
    else:
        saver.fork(old_config, "t-fork")


def check_outcome(op: str, app: Any, saver: BaseCheckpointSaver, out: dict[str, Any]) -> None:
    if op in ("delete", "sweep"):
        # The thread is gone: the run's commit fails its compare-and-swap, and nothing of it
        # was stored (it was never acknowledged).
        assert isinstance(out.get("error"), CheckpointConflictError), out
        assert assert_readable(app, saver, "t") == []
        return
    assert "error" not in out, out
    assert out["result"]["messages"][-1] == "second"
    history = assert_readable(app, saver, "t")
    assert history[0].values == out["result"]  # the acknowledged write is the head
    if op == "copy":
        # 3 runs, each an input checkpoint, step 0 and 2 steps (the last run's second pending)
        assert len(assert_readable(app, saver, "t-copy")) == 12
    if op == "fork":
        assert assert_readable(app, saver, "t-fork")[0].next == ("second",)
    after = app.invoke({"messages": ["after"]}, {"configurable": {"thread_id": "t"}})
    assert after["messages"][-2:] == ["after", "second"]


@pytest.mark.parametrize("op", OPS)
def test_maintenance_while_a_time_travel_run_is_in_its_node(
    make_saver: Callable[..., BaseCheckpointSaver], op: str
) -> None:
    saver = make_saver(ttl=0.2, auto_sweep=False) if op == "sweep" else make_saver()
    started, go = threading.Event(), threading.Event()

    def second(state: S) -> S:
        if not go.is_set():
            started.set()
            assert go.wait(30)
        return {"messages": ["second"]}

    app = two_step_graph(saver, second)
    config = {"configurable": {"thread_id": "t"}}
    go.set()
    for i in range(3):
        app.invoke({"messages": [f"turn {i}"]}, config)
    go.clear()
    old = oldest_before_second(app, config)
    out: dict[str, Any] = {}

    def replay() -> None:
        try:
            out["result"] = app.invoke(None, old.config)
        except Exception as exc:
            out["error"] = exc

    runner = threading.Thread(target=replay)
    runner.start()
    try:
        assert started.wait(30)
        maintain(op, saver, old.config)
    finally:
        go.set()
        runner.join(30)
    check_outcome(op, app, saver, out)


@pytest.mark.parametrize("op", ["prune", "delete"])
async def test_maintenance_while_an_async_time_travel_run_is_in_its_node(
    amake_saver: Any, op: str
) -> None:
    saver = await amake_saver()
    started, go = asyncio.Event(), asyncio.Event()

    async def second(state: S) -> S:
        if not go.is_set():
            started.set()
            await go.wait()
        return {"messages": ["second"]}

    app = two_step_graph(saver, second)
    config = {"configurable": {"thread_id": "t"}}
    go.set()
    for i in range(3):
        await app.ainvoke({"messages": [f"turn {i}"]}, config)
    go.clear()
    old = [h async for h in app.aget_state_history(config) if h.next == ("second",)][-1]
    run = asyncio.ensure_future(app.ainvoke(None, old.config))
    await asyncio.wait_for(started.wait(), 30)
    if op == "prune":
        assert await saver.aprune(["t"], keep_last=1) > 0
    else:
        await saver.adelete_thread("t")
    go.set()
    forget_process_state(saver)
    if op == "delete":
        with pytest.raises(CheckpointConflictError):
            await run
        assert (await app.aget_state(config)).values == {}
        return
    result = await run
    forget_process_state(saver)
    history = [h async for h in app.aget_state_history(config)]
    assert history[0].values == result == (await app.aget_state(config)).values
    assert result["messages"] == ["turn 0", "second"]


# ---------------------------------------------------------------------- another process


def _prune_elsewhere(saver: Any, backend: Backend) -> str:
    """A script that prunes thread "t" to its head from a fresh process."""
    if backend.name == "sqlite":
        (path,) = [r[2] for r in saver.conn.execute("PRAGMA database_list") if r[1] == "main"]
        opener = f"SqliteSaver.from_conn_string({path!r})"
        module = "threadline.checkpoint.sqlite"
        name = "SqliteSaver"
    else:
        opener = f"PostgresSaver.from_conn_string({postgres_url()!r}, schema={saver.schema!r})"
        module = "threadline.checkpoint.postgres"
        name = "PostgresSaver"
    return (
        f"from {module} import {name}\nwith {opener} as s:\n    print(s.prune(['t'], keep_last=1))"
    )


def test_prune_from_another_process_while_a_time_travel_run_is_in_its_node(
    saver: BaseCheckpointSaver, sync_backend: Backend
) -> None:
    if sync_backend.name == "memory":
        pytest.skip("the memory saver lives in one process")
    script = _prune_elsewhere(saver, sync_backend)
    pruned: list[str] = []

    def second(state: S) -> S:
        if pruned == []:
            done = subprocess.run(
                [sys.executable, "-c", script],
                env={**os.environ, "PYTHONPATH": SRC},
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert done.returncode == 0, done.stderr
            pruned.append(done.stdout.strip())
        return {"messages": ["second"]}

    app = two_step_graph(saver, second)
    config = {"configurable": {"thread_id": "t"}}
    pruned.append("setup")
    for i in range(3):
        app.invoke({"messages": [f"turn {i}"]}, config)
    pruned.clear()
    old = oldest_before_second(app, config)
    result = app.invoke(None, old.config)
    assert int(pruned[0]) > 0
    history = assert_readable(app, saver, "t")
    assert history[0].values == result
    assert result["messages"] == ["turn 0", "second"]


# ---------------------------------------------------------------------- PostgreSQL batches


def test_a_turn_started_during_a_long_prune_does_not_wait_for_it(
    saver: BaseCheckpointSaver, sync_backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    if sync_backend.name != "postgres":
        pytest.skip("PostgreSQL prunes in batches of short transactions")
    import psycopg
    from psycopg import sql

    from threadline.checkpoint.postgres import _core

    monkeypatch.setattr(_core, "PRUNE_BATCH", 5)
    app = two_step_graph(saver, lambda state: {"messages": ["second"]})
    config = {"configurable": {"thread_id": "t"}}
    for i in range(10):
        app.invoke({"messages": [f"turn {i}"]}, config)
    per_turn = len(list(app.get_state_history(config))) // 10
    total = 10 * per_turn
    table = sql.Identifier(saver.schema, "threadline_checkpoints")  # type: ignore[attr-defined]
    count = sql.SQL("SELECT count(*) FROM {} WHERE thread_id = 't'").format(table)
    # Hold one old checkpoint (the 4th batch's) locked, as a long statement would: prune's
    # batches before it go through, then prune waits there.
    blocker = psycopg.connect(postgres_url())
    watcher = psycopg.connect(postgres_url(), autocommit=True)
    try:
        (victim,) = watcher.execute(
            sql.SQL(
                "SELECT id FROM {} WHERE thread_id = 't' ORDER BY seq OFFSET 17 LIMIT 1"
            ).format(table)
        ).fetchone()
        blocker.execute(
            sql.SQL("SELECT FROM {} WHERE thread_id = 't' AND id = %s FOR UPDATE").format(table),
            (victim,),
        )
        out: dict[str, Any] = {}
        pruner = threading.Thread(
            target=lambda: out.update(removed=saver.prune(["t"], keep_last=2))
        )
        pruner.start()
        deadline = time.monotonic() + 60
        while watcher.execute(count).fetchone()[0] > total - 15 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert watcher.execute(count).fetchone()[0] == total - 15  # 3 batches, then it waits
        turn = threading.Thread(
            target=lambda: out.update(turn=app.invoke({"messages": ["during"]}, config))
        )
        turn.start()
        turn.join(60)
        assert "turn" in out and pruner.is_alive()  # the turn finished; prune still waits
    finally:
        blocker.rollback()
        blocker.close()
        watcher.close()
    pruner.join(60)
    assert out["removed"] == total - 2
    history = assert_readable(app, saver, "t")
    assert history[0].values == out["turn"]
    assert out["turn"]["messages"][-2:] == ["during", "second"]
    assert len(history) == 2 + per_turn  # the two kept, and the turn's
