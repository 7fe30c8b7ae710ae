"""Writer leases (issue 8, items 8 and 11): one writer per thread, fencing, safe retries.

The checkpoint-layer primitive on every backend (sync and async), then runs that wait for,
raise on, renew and release the lease, then real processes: a SIGKILLed holder's lease
expires and the next run proceeds; a frozen holder whose lease was taken over cannot commit.
"""

from __future__ import annotations

import asyncio
import operator
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, TypedDict

import psycopg
import pytest
from backends import Backend, Driver, postgres_url_or_skip
from psycopg import sql

from threadline.checkpoint import from_url
from threadline.checkpoint.base import BaseCheckpointSaver
from threadline.checkpoint.lease import LeaseOp
from threadline.checkpoint.sqlite import SqliteSaver, _sql
from threadline.checkpoint.types import ChannelChange, Checkpoint, CheckpointDraft
from threadline.errors import CheckpointConflictError, LeaseLostError, ThreadBusyError
from threadline.graph import END, START, StateGraph


def draft(value: Any, parent: Checkpoint | None = None, tasks: list[Any] | None = None) -> Any:
    return CheckpointDraft(
        step=0 if parent is None else parent.step + 1,
        source="loop",
        metadata={},
        tasks=tasks or [],
        changes={"a": ChannelChange(value)},
        parent_id=None if parent is None else parent.id,
        base_refs={} if parent is None else parent.refs,
    )


def cfg(thread_id: str = "t", **extra: Any) -> dict[str, Any]:
    return {"configurable": {"thread_id": thread_id, **extra}}


# ---------------------------------------------------------------------- the primitive


class LeaseContract:
    @pytest.fixture
    def d(self) -> Driver:
        raise NotImplementedError

    async def test_a_lease_is_exclusive_until_released(self, d: Driver) -> None:
        a = await d.acquire_lease("t")
        assert a.held and a.epoch is not None
        with pytest.raises(ThreadBusyError, match="'t' is busy") as info:
            await d.acquire_lease("t", on_busy="raise")
        assert info.value.holder == a.owner
        assert isinstance(info.value, CheckpointConflictError)
        assert await d.release_lease(a)
        assert not await d.release_lease(a)  # released already
        b = await d.acquire_lease("t", on_busy="raise")
        assert b.epoch is not None and b.epoch > a.epoch
        other = await d.acquire_lease("other", on_busy="raise")  # leases are per thread
        assert other.held

    async def test_waiting_for_a_busy_lease_is_bounded(self, d: Driver) -> None:
        await d.acquire_lease("t")
        start = time.monotonic()
        with pytest.raises(ThreadBusyError, match="after waiting"):
            await d.acquire_lease("t", on_busy="wait", timeout=0.3)
        assert time.monotonic() - start >= 0.3

    async def test_a_waiting_writer_gets_the_lease_once_it_expires(self, d: Driver) -> None:
        a = await d.acquire_lease("t", ttl=0.3)
        b = await d.acquire_lease("t", on_busy="wait", timeout=30)
        assert b.epoch is not None and a.epoch is not None and b.epoch == a.epoch + 1

    async def test_a_writer_whose_lease_was_taken_over_cannot_commit(self, d: Driver) -> None:
        a = await d.acquire_lease("t", ttl=0.3)
        first = await d.put("t", "", draft(1), expected_head=None, lease=LeaseOp("hold", a))
        time.sleep(0.4)  # a's holder froze: its lease expired
        b = await d.acquire_lease("t", on_busy="raise")
        with pytest.raises(LeaseLostError, match="no longer held") as info:
            await d.put("t", "", draft(2, first), expected_head=first.id, lease=LeaseOp("hold", a))
        assert info.value.epoch == a.epoch
        with pytest.raises(LeaseLostError):
            await d.put_writes(
                "t", "", first.id, "task", [("a", 9)], expected_head=first.id, lease=a
            )
        assert not await d.renew_lease(a)
        assert (await d.get(cfg()))["channel_values"]["a"] == 1  # nothing of the zombie's commits
        assert (await d.get_tuple(cfg())).pending_writes == []
        second = await d.put(
            "t", "", draft(3, first), expected_head=first.id, lease=LeaseOp("hold", b)
        )
        assert (await d.get(cfg()))["channel_values"]["a"] == 3
        assert second.parent_id == first.id

    async def test_the_first_commit_takes_the_lease_and_the_last_releases_it(
        self, d: Driver
    ) -> None:
        lease = d.saver.new_lease("t")
        assert not lease.held
        first = await d.put("t", "", draft(1), expected_head=None, lease=LeaseOp("acquire", lease))
        assert lease.held and lease.epoch is not None
        other = d.saver.new_lease("t")
        with pytest.raises(ThreadBusyError):
            await d.put(
                "t", "", draft(2, first), expected_head=first.id, lease=LeaseOp("acquire", other)
            )
        assert not other.held
        assert (await d.get(cfg()))["channel_values"]["a"] == 1
        last = await d.put(
            "t", "", draft(3, first), expected_head=first.id, lease=LeaseOp("release", lease)
        )
        assert lease.released and not lease.held
        await d.put("t", "", draft(4, last), expected_head=last.id, lease=LeaseOp("acquire", other))
        assert other.held and other.epoch is not None and other.epoch > lease.epoch

    async def test_a_lease_taken_by_a_commit_that_lost_its_swap_is_kept(self, d: Driver) -> None:
        first = await d.put("t", "", draft(1), expected_head=None)
        lease = d.saver.new_lease("t")
        with pytest.raises(CheckpointConflictError) as info:
            await d.put("t", "", draft(2), expected_head=None, lease=LeaseOp("acquire", lease))
        assert type(info.value) is CheckpointConflictError
        assert lease.held  # read the head again and commit: nobody can move it meanwhile
        with pytest.raises(ThreadBusyError):
            await d.acquire_lease("t", on_busy="raise")
        await d.put("t", "", draft(2, first), expected_head=first.id, lease=LeaseOp("hold", lease))
        assert (await d.get(cfg()))["channel_values"]["a"] == 2

    async def test_a_one_off_writer_checks_that_nobody_holds_the_lease(self, d: Driver) -> None:
        holder = await d.acquire_lease("t")
        with pytest.raises(ThreadBusyError):
            await d.put("t", "", draft(1), expected_head=None, lease=LeaseOp("check", holder))
        assert await d.get(cfg()) is None
        await d.release_lease(holder)
        await d.put("t", "", draft(1), expected_head=None, lease=LeaseOp("check", holder))
        assert (await d.get(cfg()))["channel_values"]["a"] == 1

    async def test_epochs_only_grow_even_across_a_deletion(self, d: Driver) -> None:
        a = await d.acquire_lease("t")
        await d.put("t", "", draft(1), expected_head=None, lease=LeaseOp("hold", a))
        await d.release_lease(a)
        await d.delete_thread("t")
        b = await d.acquire_lease("t", on_busy="raise")
        assert b.epoch is not None and a.epoch is not None and b.epoch > a.epoch


class TestLeaseSync(LeaseContract):
    @pytest.fixture
    def d(self, saver: BaseCheckpointSaver, sync_backend: Backend) -> Driver:
        return Driver(saver, sync_backend)


class TestLeaseAsync(LeaseContract):
    @pytest.fixture
    def d(self, asaver: BaseCheckpointSaver, async_backend: Backend) -> Driver:
        return Driver(asaver, async_backend)


# ---------------------------------------------------------------------- runs


class State(TypedDict):
    log: Annotated[list[str], operator.add]


def chat(saver: BaseCheckpointSaver, *, think: Any = None) -> Any:
    def thinking(state: State) -> dict[str, Any]:
        if think is not None:
            think(state)
        return {"log": [state["log"][-1] + ":thought"]}

    builder = StateGraph(State)
    builder.add_node("think", thinking)
    builder.add_node("reply", lambda s: {"log": [s["log"][-2] + ":reply"]})
    builder.add_edge(START, "think")
    builder.add_edge("think", "reply")
    builder.add_edge("reply", END)
    return builder.compile(checkpointer=saver)


def test_a_run_on_a_busy_thread_raises_with_on_busy_raise(
    saver: BaseCheckpointSaver, make_saver: Any
) -> None:
    app = chat(saver)
    saver.acquire_lease("t")
    with pytest.raises(ThreadBusyError, match="not waited for"):
        app.invoke({"log": ["hi"]}, cfg(on_busy="raise"))
    with pytest.raises(ThreadBusyError):
        chat(saver).invoke(None, cfg(on_busy="raise"))
    assert app.get_state(cfg()).values == {}  # nothing stored
    strict = make_saver(on_busy="raise")
    strict.acquire_lease("t")
    with pytest.raises(ThreadBusyError):
        chat(strict).invoke({"log": ["hi"]}, cfg())


def test_a_run_waits_at_most_lease_timeout(saver: BaseCheckpointSaver) -> None:
    app = chat(saver)
    saver.acquire_lease("t")
    start = time.monotonic()
    with pytest.raises(ThreadBusyError, match=r"after waiting 0\.3 s"):
        app.invoke({"log": ["hi"]}, cfg(lease_timeout=0.3))
    assert time.monotonic() - start >= 0.3
    with pytest.raises(ThreadBusyError):
        app.update_state(cfg(lease_timeout=0.1), {"log": ["x"]})


def test_a_run_waits_its_turn_and_then_runs(saver: BaseCheckpointSaver) -> None:
    app = chat(saver)
    holder = saver.acquire_lease("t")
    timer = threading.Timer(0.3, saver.release_lease, (holder,))
    timer.start()
    try:
        out = app.invoke({"log": ["hi"]}, cfg())
    finally:
        timer.join()
    assert out == {"log": ["hi", "hi:thought", "hi:reply"]}


@pytest.mark.parametrize("how", ["completed", "interrupted", "failed", "resumed"])
def test_every_run_releases_its_lease(saver: BaseCheckpointSaver, how: str) -> None:
    def think(state: State) -> None:
        if how == "failed":
            raise RuntimeError("boom")

    app = chat(saver, think=think)
    if how == "interrupted":
        app.interrupt_before = ["reply"]
    if how == "resumed":
        app.invoke({"log": ["a"]}, cfg())
        app.update_state(cfg(), {"log": ["b"]}, as_node="think")
        app.invoke(None, cfg())
    else:
        try:
            app.invoke({"log": ["hi"]}, cfg())
        except RuntimeError:
            assert how == "failed"
    lease = saver.acquire_lease("t", on_busy="raise")  # free at once
    assert lease.held


async def test_an_async_run_releases_its_lease_and_waits_its_turn(
    asaver: BaseCheckpointSaver,
) -> None:
    app = chat(asaver)
    holder = await asaver.aacquire_lease("t")

    async def release_later() -> None:
        await asyncio.sleep(0.3)
        await asaver.arelease_lease(holder)

    task = asyncio.ensure_future(release_later())
    out = await app.ainvoke({"log": ["hi"]}, cfg())
    await task
    assert out["log"] == ["hi", "hi:thought", "hi:reply"]
    await asaver.aacquire_lease("t", on_busy="raise")  # the run released it
    with pytest.raises(ThreadBusyError):
        await app.ainvoke({"log": ["x"]}, cfg(on_busy="raise"))


def test_a_run_renews_its_lease_while_a_node_runs_long(make_saver: Any) -> None:
    saver = make_saver(lease_ttl=0.3)
    seen: list[object] = []

    def think(state: State) -> None:
        time.sleep(1.0)  # three lease lifetimes: the renewer thread keeps it

    def try_take() -> None:
        time.sleep(0.6)
        try:
            saver.acquire_lease("t", on_busy="raise")
            seen.append("taken")
        except ThreadBusyError as exc:
            seen.append(exc)

    probe = threading.Thread(target=try_take)
    probe.start()
    out = chat(saver, think=think).invoke({"log": ["hi"]}, cfg())
    probe.join()
    assert out["log"] == ["hi", "hi:thought", "hi:reply"]
    assert isinstance(seen[0], ThreadBusyError), seen


def test_a_conflict_says_what_the_run_stored(saver: BaseCheckpointSaver) -> None:
    """A writer that ignores leases moves the head while a run's node runs: the run's next
    commit fails and its error says the input landed (and as which checkpoint)."""

    def think(state: State) -> None:
        head = saver.get_tuple(cfg())
        assert head is not None
        saver.put("t", "", draft(["intruder"], head.checkpoint), expected_head=head.checkpoint.id)

    app = chat(saver, think=think)
    with pytest.raises(CheckpointConflictError) as info:
        app.invoke({"log": ["hi"]}, cfg())
    exc = info.value
    assert exc.input_checkpoint_id is not None
    # the input checkpoint and step 0 (the input applied) commit together
    assert len(exc.stored) == 2 and exc.stored[0] == exc.input_checkpoint_id
    assert f"its input as checkpoint {exc.input_checkpoint_id}" in str(exc)
    assert "idempotency_key" in str(exc)
    history = [s.config["configurable"]["checkpoint_id"] for s in app.get_state_history(cfg())]
    assert exc.input_checkpoint_id in history


def test_an_input_sent_again_with_its_idempotency_key_is_applied_once(
    saver: BaseCheckpointSaver,
) -> None:
    failures = ["once"]

    def think(state: State) -> None:
        if failures:
            failures.pop()
            raise ConnectionError("the model timed out")

    app = chat(saver, think=think)
    config = cfg(idempotency_key="msg-1")
    with pytest.raises(ConnectionError):
        app.invoke({"log": ["hi"]}, config)  # the input landed, then the run failed
    out = app.invoke({"log": ["hi"]}, config)  # the caller's retry: continues, no new input
    assert out["log"] == ["hi", "hi:thought", "hi:reply"]
    out = app.invoke({"log": ["hi"]}, config)  # and once more: nothing to do
    assert out["log"] == ["hi", "hi:thought", "hi:reply"]
    out = app.invoke({"log": ["next"]}, cfg(idempotency_key="msg-2"))
    assert out["log"][-3:] == ["next", "next:thought", "next:reply"]
    assert len(out["log"]) == 6


def test_a_version_1_sqlite_file_migrates_to_leases(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = str(tmp_path / "v1.db")
    monkeypatch.setattr(_sql, "MIGRATIONS", _sql.MIGRATIONS[:1])
    monkeypatch.setattr(_sql, "SCHEMA_VERSION", 1)
    with SqliteSaver.from_conn_string(path) as saver:
        saver.put("t", "", draft(1), expected_head=None)
    monkeypatch.undo()
    with sqlite3.connect(path) as conn:
        assert not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'leases'").fetchall()
    with SqliteSaver.from_conn_string(path) as saver:
        assert saver.get(cfg())["channel_values"] == {"a": 1}
        assert saver.acquire_lease("t").held
    with sqlite3.connect(path) as conn:
        versions = conn.execute("SELECT version FROM threadline_migrations ORDER BY 1").fetchall()
        assert versions == [(1,), (2,)]


# ---------------------------------------------------------------------- processes

HOLDER = textwrap.dedent(
    """
    import operator, os, sys, time
    from typing import Annotated, TypedDict
    from threadline.checkpoint import from_url
    from threadline.errors import LeaseLostError
    from threadline.graph import END, START, StateGraph

    url, thread_id, flag, mode = sys.argv[1:5]
    options = {"schema": sys.argv[5]} if len(sys.argv) > 5 else {}

    class State(TypedDict):
        log: Annotated[list[str], operator.add]

    def slow(state):
        open(flag, "w").close()
        time.sleep(3600 if mode == "hang" else 2.0)
        return {"log": ["zombie:slow"]}

    builder = StateGraph(State)
    builder.add_node("slow", slow)
    builder.add_node("after", lambda s: {"log": ["zombie:after"]})
    builder.add_edge(START, "slow")
    builder.add_edge("slow", "after")
    builder.add_edge("after", END)
    with from_url(url, lease_ttl=1.0, **options) as saver:
        app = builder.compile(checkpointer=saver)
        try:
            app.invoke({"log": ["zombie:input"]}, {"configurable": {"thread_id": thread_id}})
        except LeaseLostError as exc:
            print("FENCED", exc.input_checkpoint_id, ",".join(exc.stored), flush=True)
            sys.exit(3)
        print("DONE", flush=True)
    """
)


def _start_holder(tmp_path: Path, url: str, options: list[str], mode: str) -> Any:
    script = tmp_path / "holder.py"
    script.write_text(HOLDER)
    flag = tmp_path / f"in-node-{uuid.uuid4().hex[:6]}"
    proc = subprocess.Popen(
        [sys.executable, str(script), url, "t", str(flag), mode, *options],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not flag.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the holder never reached its node"
        time.sleep(0.01)
    return proc


def _killed_holder(tmp_path: Path, url: str, options: list[str]) -> None:
    proc = _start_holder(tmp_path, url, options, "hang")
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    extra = {"schema": options[0]} if options else {}
    with from_url(url, **extra) as saver:
        app = chat(saver)
        start = time.monotonic()
        out = app.invoke({"log": ["next"]}, cfg())  # waits for the dead holder's lease
        assert time.monotonic() - start < 30
        assert out["log"] == ["zombie:input", "next", "next:thought", "next:reply"]


def _frozen_holder(tmp_path: Path, url: str, options: list[str]) -> None:
    proc = _start_holder(tmp_path, url, options, "slow")
    os.kill(proc.pid, signal.SIGSTOP)  # frozen: its renewer thread too
    try:
        extra = {"schema": options[0]} if options else {}
        with from_url(url, **extra) as saver:
            app = chat(saver)
            # Waits until the frozen holder's lease expires, then takes it over.
            app.update_state(cfg(), {"log": ["taken over"]}, as_node="reply")
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 3, (out, err)
    word, input_id, stored = out.split()
    assert word == "FENCED" and stored.split(",")[0] == input_id
    with from_url(url, **extra) as saver:
        history = list(saver.list(cfg()))
        log = history[0].checkpoint.values["log"]
        assert log == ["zombie:input", "taken over"]  # nothing the zombie did after
        assert [h.checkpoint.id for h in history][-1] == input_id


def test_a_killed_holder_on_sqlite_lets_the_next_run_proceed(tmp_path: Path) -> None:
    _killed_holder(tmp_path, f"sqlite:///{tmp_path / 'k.db'}", [])


def test_a_frozen_holder_on_sqlite_cannot_commit_after_a_takeover(tmp_path: Path) -> None:
    _frozen_holder(tmp_path, f"sqlite:///{tmp_path / 'z.db'}", [])


@pytest.fixture
def pg_schema() -> Iterator[tuple[str, str]]:
    url = postgres_url_or_skip()
    schema = f"lease_{uuid.uuid4().hex[:10]}"
    yield url, schema
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@pytest.mark.postgres
def test_a_killed_holder_on_postgres_lets_the_next_run_proceed(
    tmp_path: Path, pg_schema: tuple[str, str]
) -> None:
    url, schema = pg_schema
    _killed_holder(tmp_path, url, [schema])


@pytest.mark.postgres
def test_a_frozen_holder_on_postgres_cannot_commit_after_a_takeover(
    tmp_path: Path, pg_schema: tuple[str, str]
) -> None:
    url, schema = pg_schema
    _frozen_holder(tmp_path, url, [schema])


def test_an_uncontended_turn_costs_no_extra_storage_call(saver: BaseCheckpointSaver) -> None:
    """The lease rides on the commits: the second turn is its three commits, nothing more
    (no head read, no acquire, no release)."""
    app = chat(saver)
    app.invoke({"log": ["one"]}, cfg())
    calls: dict[str, int] = {}
    for name in ("_commit", "_read_checkpoint", "_lease_acquire", "_lease_renew"):
        original = getattr(saver, name)

        def counted(*args: Any, _name: str = name, _fn: Any = original, **kwargs: Any) -> Any:
            calls[_name] = calls.get(_name, 0) + 1
            return _fn(*args, **kwargs)

        setattr(saver, name, counted)
    app.invoke({"log": ["two"]}, cfg())
    assert calls == {"_commit": 3}, calls
    assert saver.acquire_lease("t", on_busy="raise").held  # and it was released


@pytest.mark.postgres
async def test_group_commit_fences_each_commit_of_a_batch(
    pg_schema: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Holders' commits to many threads go in one statement; the one whose lease was taken
    over fails alone, the others land (and the releasing one releases)."""
    from threadline.checkpoint.postgres import _batch
    from threadline.checkpoint.postgres.aio import AsyncPostgresSaver

    url, schema = pg_schema
    batches: list[int] = []
    original = _batch.commit_many_call

    def counted(statement: bytes, batch: Any) -> Any:
        batches.append(len(batch))
        return original(statement, batch)

    monkeypatch.setattr(_batch, "commit_many_call", counted)
    async with AsyncPostgresSaver.from_conn_string(url, schema=schema) as saver:
        names = [f"t{i}" for i in range(6)]
        leases = {n: await saver.aacquire_lease(n, ttl=0.5) for n in names}
        heads = {
            n: await saver.aput(n, "", draft(0), expected_head=None, lease=LeaseOp("hold", lease))
            for n, lease in leases.items()
        }
        await asyncio.sleep(0.6)  # every lease expired; t3's is taken over, the rest renewed
        taker = await saver.aacquire_lease("t3", on_busy="raise")
        for n in names:
            if n != "t3":
                assert await saver.arenew_lease(leases[n])
        modes = {n: "release" if n == "t5" else "hold" for n in names}
        results = await asyncio.gather(
            *(
                saver.aput(
                    n,
                    "",
                    draft(1, heads[n]),
                    expected_head=heads[n].id,
                    lease=LeaseOp(modes[n], leases[n]),  # type: ignore[arg-type]
                )
                for n in names
            ),
            return_exceptions=True,
        )
        assert max(batches, default=0) >= 2, batches  # the commits went as a batch
        for n, result in zip(names, results):
            if n == "t3":
                assert isinstance(result, LeaseLostError), result
                assert (await saver.aget(cfg(n)))["channel_values"]["a"] == 0
            else:
                assert not isinstance(result, BaseException), result
                assert (await saver.aget(cfg(n)))["channel_values"]["a"] == 1
        assert (await saver.aacquire_lease("t5", on_busy="raise")).held  # released in batch
        with pytest.raises(ThreadBusyError):
            await saver.aacquire_lease("t4", on_busy="raise")  # renewed, still held
        assert taker.held


async def _blocked_loop_keeps_lease(saver: BaseCheckpointSaver, probe: BaseCheckpointSaver) -> None:
    seen: list[object] = []

    async def think(state: State) -> dict[str, Any]:
        time.sleep(1.0)  # blocks the event loop for three lease lifetimes
        return {"log": [state["log"][-1] + ":thought"]}

    def try_take() -> None:
        time.sleep(0.6)
        try:
            probe.acquire_lease("t", on_busy="raise")
            seen.append("taken")
        except ThreadBusyError as exc:
            seen.append(exc)

    builder = StateGraph(State)
    builder.add_node("think", think)
    builder.add_edge(START, "think")
    app = builder.compile(checkpointer=saver)
    prober = threading.Thread(target=try_take)
    prober.start()
    out = await app.ainvoke({"log": ["hi"]}, cfg())
    prober.join()
    assert out["log"] == ["hi", "hi:thought"]
    assert isinstance(seen[0], ThreadBusyError), seen  # renewed from a thread meanwhile


async def test_an_async_run_keeps_its_lease_while_its_loop_is_blocked_memory() -> None:
    from threadline.checkpoint.memory import MemorySaver

    saver = MemorySaver(lease_ttl=0.3)
    await _blocked_loop_keeps_lease(saver, saver)


@pytest.mark.postgres
async def test_an_async_run_keeps_its_lease_while_its_loop_is_blocked_postgres(
    pg_schema: tuple[str, str],
) -> None:
    from threadline.checkpoint.postgres import PostgresSaver
    from threadline.checkpoint.postgres.aio import AsyncPostgresSaver

    url, schema = pg_schema
    async with AsyncPostgresSaver.from_conn_string(url, schema=schema, lease_ttl=0.3) as saver:
        await saver.asetup()
        assert saver.blocking_lease_renewer() is not None
        with PostgresSaver.from_conn_string(url, schema=schema) as probe:
            await _blocked_loop_keeps_lease(saver, probe)


def test_update_state_waits_for_a_running_run_and_both_land(saver: BaseCheckpointSaver) -> None:
    inside = threading.Event()

    def think(state: State) -> None:
        inside.set()
        time.sleep(0.3)

    app = chat(saver, think=think)
    runner = threading.Thread(target=app.invoke, args=({"log": ["hi"]}, cfg()))
    runner.start()
    assert inside.wait(30)
    app.update_state(cfg(), {"log": ["edited"]}, as_node="reply")  # waits for the run
    runner.join()
    assert app.get_state(cfg()).values["log"] == ["hi", "hi:thought", "hi:reply", "edited"]


@pytest.mark.postgres
def test_a_version_1_postgres_schema_migrates_to_leases(pg_schema: tuple[str, str]) -> None:
    from threadline.checkpoint.postgres import PostgresSaver

    class SaverV1(PostgresSaver):
        migrations = PostgresSaver.migrations[:1]

    url, schema = pg_schema
    with SaverV1.from_conn_string(url, schema=schema) as old:
        old.put("t", "", draft(1), expected_head=None)
    with PostgresSaver.from_conn_string(url, schema=schema) as saver:  # auto_setup migrates
        assert saver.get(cfg())["channel_values"] == {"a": 1}
        lease = saver.acquire_lease("t")
        assert lease.held
    with psycopg.connect(url) as conn:
        versions = conn.execute(
            sql.SQL("SELECT version FROM {} ORDER BY 1").format(
                sql.Identifier(schema, "threadline_migrations")
            )
        ).fetchall()
        leases = conn.execute(
            sql.SQL("SELECT thread_id, epoch FROM {}").format(
                sql.Identifier(schema, "threadline_leases")
            )
        ).fetchall()
    assert versions == [(1,), (2,)]
    assert leases == [("t", 1)]
