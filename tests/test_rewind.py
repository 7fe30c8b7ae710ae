"""``rewind``: a thread back to one of its checkpoints, as it was right after that commit.

Everything committed after the checkpoint goes (later steps, other branches, subgraph
namespaces), with its pending writes and the versions only it held; what is kept reads as
before, and the rows left are exactly the rows there were (:func:`rowhacks.stored_keys`).
Written once for every backend, sync and async (``cp`` is a :class:`backends.Driver`), plus
graphs, real concurrency, and a rewind racing a PostgreSQL prune's batches.
"""

from __future__ import annotations

import asyncio
import operator
import threading
import time
import uuid
from collections.abc import Callable
from typing import Annotated, Any, TypedDict

import pytest
from backends import Backend, Driver, postgres_url
from rowhacks import StoredKeys, forget_process_state, stored_keys
from test_checkpoint_contract import CHILD, MakeDriver, T, cfg, draft, grow, ids, item

from threadline.checkpoint.base import BaseCheckpointSaver
from threadline.checkpoint.lease import LeaseOp
from threadline.checkpoint.types import ChannelChange, Checkpoint, PendingWrite
from threadline.errors import (
    BaseCheckpointGoneError,
    CheckpointConflictError,
    CheckpointNotFoundError,
    InvalidArgumentError,
    LeaseLostError,
    ThreadBusyError,
)
from threadline.graph import END, START, StateGraph

OTHER_CHILD = "child:2"


async def snapshot(cp: Driver, thread_id: str = T) -> dict[str, Any]:
    """What a reader sees of the thread, per namespace, read cold: every checkpoint's id,
    values and pending writes, newest first."""
    forget_process_state(cp.saver)
    keys = await stored_keys(cp.saver, cp.backend, thread_id)
    out: dict[str, Any] = {}
    for ns in sorted(set(keys.checkpoints.values()) | set(keys.heads)):
        head = await cp.get_tuple(cfg(thread_id, ns=ns))
        history = [
            (t.checkpoint.id, t.checkpoint.values, t.pending_writes)
            for t in await cp.list(cfg(thread_id, ns=ns))
        ]
        assert head is not None and history[0][0] == head.checkpoint.id
        assert history[0][1] == head.checkpoint.values
        out[ns] = history
    return out


async def assert_consistent(cp: Driver, thread_id: str = T) -> StoredKeys:
    """The thread's rows keep every invariant: each namespace's head is its newest
    checkpoint, every version a checkpoint reaches is stored and nothing else is, and
    pending writes belong to stored checkpoints."""
    keys = await stored_keys(cp.saver, cp.backend, thread_id)
    reached: set[tuple[str, str]] = set()
    for ns in set(keys.checkpoints.values()):
        listed = await cp.list(cfg(thread_id, ns=ns))
        assert keys.heads[ns] == listed[0].checkpoint.id
        for t in listed:
            for channel, ref in t.checkpoint.refs.items():
                cursor: str | None = ref.writer
                while cursor is not None and (channel, cursor) not in reached:
                    reached.add((channel, cursor))
                    cursor = keys.versions[(channel, cursor)]
    assert set(keys.heads) == set(keys.checkpoints.values())
    assert set(keys.versions) == reached
    assert {(ns, cid) for ns, cid, _, _ in keys.writes} <= {
        (ns, cid) for cid, ns in keys.checkpoints.items()
    }
    return keys


async def commit_on(cp: Driver, head: Checkpoint, changes: dict[str, Any], **kw: Any) -> Any:
    return await cp.put(
        T, head.ns, draft(changes, parent=head, step=head.step + 1, **kw), expected_head=head.id
    )


class RewindContract:
    """Every backend rewinds the same way (``cp`` drives a sync or async saver)."""

    @pytest.fixture
    async def cp(self, make_cp: MakeDriver) -> Driver:
        return await make_cp()

    async def _thread_with_subgraphs(self, cp: Driver) -> tuple[Checkpoint, list[Checkpoint]]:
        """A root chain, a subgraph namespace written by its 4th step, then the root's 5th
        checkpoint with pending writes (a task of the next step); returns the root's head
        (the newest checkpoint) and the child checkpoints."""
        saved, expected = await grow(cp, 4, tasks=["t"])
        child, _ = await grow(cp, 3, ns=CHILD)
        (head,), _ = await grow(
            cp, 1, head=saved[-1], value=expected[saved[-1].id]["items"], tasks=["t"]
        )
        await cp.put_writes(T, "", head.id, "t", [("items", "done")], expected_head=head.id)
        return head, child

    async def test_rewind_leaves_exactly_what_was_stored(self, cp: Driver) -> None:
        head, child = await self._thread_with_subgraphs(cp)
        before = await snapshot(cp)
        rows_before = await stored_keys(cp.saver, cp.backend, T)
        # A run after it: root steps with deltas on the kept chains, pending writes, more
        # checkpoints in the existing subgraph namespace and a new one.
        later, _ = await grow(cp, 4, head=head, value=before[""][0][1]["items"], tasks=["u"])
        await cp.put_writes(T, "", later[-1].id, "u", [("items", "x")], expected_head=later[-1].id)
        await commit_on(cp, child[-1], {"items": ChannelChange([*child_items(before), "c"], ["c"])})
        await grow(cp, 2, ns=OTHER_CHILD)
        assert (await snapshot(cp)).keys() == {"", CHILD, OTHER_CHILD}

        removed = await cp.rewind(cfg(T, head.id), expected_head=later[-1].id)
        assert removed == 4 + 1 + 2
        assert await stored_keys(cp.saver, cp.backend, T) == rows_before
        assert await snapshot(cp) == before
        got = await cp.get_tuple(cfg(T))
        assert got.checkpoint.id == head.id
        assert got.pending_writes == [PendingWrite("t", 0, "items", "done")]
        await assert_consistent(cp)
        assert await cp.rewind(cfg(T, head.id)) == 0  # nothing after it: nothing changes
        assert await stored_keys(cp.saver, cp.backend, T) == rows_before

        # The thread goes on from there, and a subgraph namespace from its own head.
        loaded = await cp.load(T, "", head.id, shared=False)
        after, expected = await grow(cp, 3, head=loaded.checkpoint, value=before[""][0][1]["items"])
        assert (await cp.get_tuple(cfg(T, after[-1].id))).checkpoint.values == expected[
            after[-1].id
        ]
        await commit_on(cp, child[-1], {"step": 99})
        await assert_consistent(cp)

    async def test_rewind_keeps_only_the_target_writes_it_is_told_to(self, cp: Driver) -> None:
        """A run resumed from a paused checkpoint saves its answer against that checkpoint;
        undoing the run must take the answer back too, keeping what the checkpoint had."""
        head, _ = await self._thread_with_subgraphs(cp)  # head has ("t", 0) pending
        rows_before = await stored_keys(cp.saver, cp.backend, T)
        started_from = await cp.get_tuple(cfg(T))
        kept = [(w.task_id, w.idx) for w in started_from.pending_writes]
        await cp.put_writes(
            T, "", head.id, "t2", [("items", "a"), ("items", "b")], expected_head=head.id
        )
        await grow(cp, 2, head=head, value=started_from.checkpoint.values["items"])
        assert await cp.rewind(cfg(T, head.id), keep_writes=kept) == 2
        assert await stored_keys(cp.saver, cp.backend, T) == rows_before
        forget_process_state(cp.saver)
        got = await cp.get_tuple(cfg(T))
        assert got.checkpoint.id == head.id
        assert got.pending_writes == [PendingWrite("t", 0, "items", "done")]
        # Nothing committed after it: only the writes go.
        await cp.put_writes(T, "", head.id, "t3", [("items", "c")], expected_head=head.id)
        assert await cp.rewind(cfg(T, head.id), keep_writes=kept) == 0
        assert await stored_keys(cp.saver, cp.backend, T) == rows_before
        assert await cp.rewind(cfg(T, head.id), keep_writes=[]) == 0
        assert (await cp.get_tuple(cfg(T))).pending_writes == []
        with pytest.raises(InvalidArgumentError, match="keep_writes takes"):
            await cp.rewind(cfg(T, head.id), keep_writes=["t"])
        await assert_consistent(cp)

    async def test_rewind_across_a_long_delta_chain(self, cp: Driver) -> None:
        # A large first value, then 150 small deltas on it: one chain from the snapshot.
        big = [item(i, "big") for i in range(200)]
        first = await cp.put(T, "", draft({"items": big}), expected_head=None)
        saved, expected = await grow(cp, 150, head=first, value=big)
        middle = saved[79]
        assert middle.refs["items"].writer == middle.id  # a delta, 80 down the chain
        assert all(c.refs["items"].chain_bytes > 0 for c in saved)  # no snapshot since
        assert await cp.rewind(cfg(T, middle.id), expected_head=saved[-1].id) == 70
        forget_process_state(cp.saver)
        history = await cp.list(cfg(T))
        assert ids(history) == [c.id for c in reversed([first, *saved[:80]])]
        for t in history[:-1]:
            assert t.checkpoint.values == expected[t.checkpoint.id]
        await assert_consistent(cp)
        # New deltas go on the kept chain.
        loaded = await cp.load(T, "", middle.id, shared=False)
        more, more_expected = await grow(
            cp, 20, head=loaded.checkpoint, value=expected[middle.id]["items"], tag="new"
        )
        assert more[0].refs["items"].chain_bytes > middle.refs["items"].chain_bytes
        forget_process_state(cp.saver)
        for c in more:
            assert (await cp.get_tuple(cfg(T, c.id))).checkpoint.values == more_expected[c.id]
        await assert_consistent(cp)

    async def test_rewind_past_snapshots_and_back_from_a_branch(self, cp: Driver) -> None:
        # Small first value: the chain restarts with snapshots several times.
        saved, expected = await grow(cp, 40)
        writers = {c.refs["items"].writer for c in saved if c.refs["items"].chain_bytes == 0}
        assert len(writers) > 2
        # A branch from saved[10] (time travel), which becomes the head.
        loaded = await cp.load(T, "", saved[10].id, shared=False)
        tip = await cp.put(
            T, "", draft({"step": 0}, parent=loaded.checkpoint), expected_head=saved[-1].id
        )
        await grow(cp, 2, head=tip, value=expected[saved[10].id]["items"])
        # Back to the head before the branch (not its ancestor): only the branch goes.
        assert await cp.rewind(cfg(T, saved[-1].id)) == 3
        assert ids(await cp.list(cfg(T))) == [c.id for c in reversed(saved)]
        # Back to saved[5]: everything committed after it, across snapshots, goes.
        assert await cp.rewind(cfg(T, saved[5].id), expected_head=saved[-1].id) == 34
        forget_process_state(cp.saver)
        history = await cp.list(cfg(T))
        assert ids(history) == [c.id for c in reversed(saved[:6])]
        assert [t.checkpoint.values for t in history] == [
            expected[c.id] for c in reversed(saved[:6])
        ]
        await assert_consistent(cp)

    async def test_rewind_within_a_subgraph_namespace(self, cp: Driver) -> None:
        head, child = await self._thread_with_subgraphs(cp)
        await grow(cp, 2, head=head, value=(await cp.get(cfg(T)))["channel_values"]["items"])
        # Back to the child's first checkpoint: its 2 successors and the root's last 3 go.
        assert await cp.rewind(cfg(T, child[0].id, ns=CHILD)) == 5
        assert ids(await cp.list(cfg(T, ns=CHILD))) == [child[0].id]
        assert (await cp.get_tuple(cfg(T))).checkpoint.seq < child[0].seq
        await assert_consistent(cp)

    async def test_bad_rewinds_change_nothing(self, cp: Driver) -> None:
        head, child = await self._thread_with_subgraphs(cp)
        saved, _ = await grow(cp, 2, thread_id="other")
        rows = await stored_keys(cp.saver, cp.backend, T)
        other_rows = await stored_keys(cp.saver, cp.backend, "other")
        with pytest.raises(CheckpointNotFoundError, match="has no checkpoint"):
            await cp.rewind(cfg(T, str(uuid.uuid4())))
        with pytest.raises(CheckpointNotFoundError):
            await cp.rewind(cfg(T, "not-a-uuid"))
        with pytest.raises(CheckpointNotFoundError):
            await cp.rewind(cfg("no-such-thread", head.id))
        with pytest.raises(CheckpointNotFoundError, match="checkpoint of thread 'other'"):
            await cp.rewind(cfg(T, saved[0].id))
        with pytest.raises(CheckpointNotFoundError, match=f"namespace '{CHILD}'"):
            await cp.rewind(cfg(T, child[0].id))  # a checkpoint of another namespace
        with pytest.raises(InvalidArgumentError, match="checkpoint_id"):
            await cp.rewind(cfg(T))
        with pytest.raises(InvalidArgumentError):
            await cp.rewind(cfg(T, head.id), expected_head=7)
        lease = await cp.acquire_lease(T)
        with pytest.raises(InvalidArgumentError, match="acquire_lease"):
            await cp.rewind(cfg(T, head.id), lease=LeaseOp("acquire", lease))
        await cp.release_lease(lease)
        old = (await cp.list(cfg(T)))[2].checkpoint
        with pytest.raises(CheckpointConflictError) as caught:
            await cp.rewind(cfg(T, old.id), expected_head=old.id)
        assert caught.value.actual == head.id
        with pytest.raises(CheckpointConflictError):
            await cp.rewind(cfg(T, old.id), expected_head="not-a-uuid")
        assert await stored_keys(cp.saver, cp.backend, T) == rows
        assert await stored_keys(cp.saver, cp.backend, "other") == other_rows

    async def test_rewind_under_the_writer_lease(self, cp: Driver) -> None:
        saved, _ = await grow(cp, 6)
        rows = await stored_keys(cp.saver, cp.backend, T)
        holder = await cp.acquire_lease(T, ttl=30)
        other = cp.saver.new_lease(T)
        with pytest.raises(ThreadBusyError):  # a one-off writer: not while a run holds it
            await cp.rewind(cfg(T, saved[3].id), lease=LeaseOp("check", other))
        assert await stored_keys(cp.saver, cp.backend, T) == rows
        with pytest.raises(CheckpointNotFoundError):  # a failed rewind keeps the lease
            await cp.rewind(cfg(T, str(uuid.uuid4())), lease=LeaseOp("release", holder))
        assert holder.held and await cp.renew_lease(holder)
        assert await stored_keys(cp.saver, cp.backend, T) == rows
        assert await cp.rewind(cfg(T, saved[4].id), lease=LeaseOp("hold", holder)) == 1
        assert await cp.renew_lease(holder)  # still held
        assert await cp.rewind(cfg(T, saved[3].id), lease=LeaseOp("release", holder)) == 1
        assert not holder.held
        taken = await cp.acquire_lease(T, on_busy="raise")  # released: free at once
        # The old holder is fenced off: its epoch is gone.
        stale = cp.saver.new_lease(T)
        stale.epoch = holder.epoch
        rows = await stored_keys(cp.saver, cp.backend, T)
        with pytest.raises(LeaseLostError):
            await cp.rewind(cfg(T, saved[1].id), lease=LeaseOp("hold", stale))
        assert await stored_keys(cp.saver, cp.backend, T) == rows
        await cp.release_lease(taken)
        assert await cp.rewind(cfg(T, saved[1].id), lease=LeaseOp("check", other)) == 2

    async def test_writers_that_raced_a_rewind(self, cp: Driver) -> None:
        saved, expected = await grow(cp, 6)
        head = saved[-1]
        loaded = await cp.load(T, "", saved[4].id, shared=False)  # a time-travel writer's base
        assert await cp.rewind(cfg(T, saved[2].id)) == 3
        # A step built on the old head: its compare-and-swap fails, nothing is stored.
        with pytest.raises(CheckpointConflictError):
            await commit_on(cp, head, {"step": 7})
        with pytest.raises(CheckpointConflictError):
            await cp.put_writes(T, "", head.id, "t", [("step", 1)], expected_head=head.id)
        # A step built on a deleted checkpoint, expecting the new head: stored as snapshots
        # when the draft carries its values, else nothing is.
        values = {**loaded.checkpoint.values, "step": 8}
        d = draft({"step": 8}, parent=loaded.checkpoint, step=8)
        with pytest.raises(BaseCheckpointGoneError):
            await cp.put(T, "", d, expected_head=saved[2].id)
        d.values = values
        put = await cp.put(T, "", d, expected_head=saved[2].id)
        assert all(ref.writer == put.id for ref in put.refs.values())
        forget_process_state(cp.saver)
        assert (await cp.get(cfg(T)))["channel_values"] == values
        assert [t.checkpoint.values for t in await cp.list(cfg(T))][1:] == [
            expected[c.id] for c in reversed(saved[:3])
        ]
        await assert_consistent(cp)

    async def test_a_rewind_racing_commits(self, cp: Driver) -> None:
        """A writer commits steps (reloading the head when it lost a race) while another
        rewinds the thread again and again: every operation lands whole or not at all."""
        base, _ = await grow(cp, 3)
        child, _ = await grow(cp, 1, ns=CHILD)
        stop = time.monotonic() + 2.0
        counts = {"commits": 0, "conflicts": 0, "rewinds": 0, "removed": 0}

        async def run(method: str, *args: Any, **kwargs: Any) -> Any:
            if cp.is_async:
                return await getattr(cp.saver, "a" + method)(*args, **kwargs)
            return await asyncio.to_thread(getattr(cp.saver, method), *args, **kwargs)

        async def writer() -> None:
            n = 0
            while time.monotonic() < stop:
                got = await run("load", T, "", None, shared=False)
                c = got.checkpoint
                n += 1
                new = [f"w{n}"]
                changes = {"items": ChannelChange([*c.values["items"], *new], appended=new)}
                ns, parent = ("", c) if n % 3 else (CHILD, None)
                await asyncio.sleep(0)  # let the rewinder in (memory saver: nothing awaits)
                try:
                    if parent is None:  # a subgraph checkpoint now and then
                        sub = await run("load", T, CHILD, None, shared=False)
                        d = draft({"step": n}, parent=sub.checkpoint, step=n)
                        await run("put", T, CHILD, d, expected_head=sub.checkpoint.id)
                    else:
                        d = draft(changes, parent=c, step=c.step + 1, tasks=["t"])
                        put = await run("put", T, ns, d, expected_head=c.id)
                        await run("put_writes", T, ns, put.id, "t", [("step", n)],
                                  expected_head=put.id)  # fmt: skip
                    counts["commits"] += 1
                except CheckpointConflictError:
                    counts["conflicts"] += 1

        async def rewinder() -> None:
            while time.monotonic() < stop:
                await asyncio.sleep(0.01)
                counts["removed"] += await run("rewind", cfg(T, child[0].id, ns=CHILD))
                counts["rewinds"] += 1

        await asyncio.gather(writer(), rewinder())
        assert counts["commits"] > 5 and counts["rewinds"] > 5 and counts["removed"] > 0
        forget_process_state(cp.saver)
        keys = await assert_consistent(cp)
        assert base[-1].id in keys.checkpoints and child[0].id in keys.checkpoints
        await snapshot(cp)  # every checkpoint left reads
        assert await cp.rewind(cfg(T, child[0].id, ns=CHILD)) >= 0
        assert ids(await cp.list(cfg(T))) == [c.id for c in reversed(base)]
        assert ids(await cp.list(cfg(T, ns=CHILD))) == [child[0].id]
        await assert_consistent(cp)


def child_items(before: dict[str, Any]) -> list[Any]:
    return list(before[CHILD][0][1]["items"])


class TestSyncRewind(RewindContract):
    @pytest.fixture
    def make_cp(
        self, make_saver: Callable[..., BaseCheckpointSaver], sync_backend: Backend
    ) -> MakeDriver:
        async def make(**options: Any) -> Driver:
            return Driver(make_saver(**options), sync_backend)

        return make


class TestAsyncRewind(RewindContract):
    @pytest.fixture
    def make_cp(self, amake_saver: Any, async_backend: Backend) -> MakeDriver:
        async def make(**options: Any) -> Driver:
            return Driver(await amake_saver(**options), async_backend)

        return make


# ---------------------------------------------------------------------- graphs


class S(TypedDict, total=False):
    messages: Annotated[list[str], operator.add]


def nested_app(saver: BaseCheckpointSaver) -> Any:
    inner = StateGraph(S)
    inner.add_node("think", lambda s: {"messages": [f"thought {len(s['messages'])}"]})
    inner.add_node("say", lambda s: {"messages": ["said"]})
    inner.add_edge(START, "think")
    inner.add_edge("think", "say")
    inner.add_edge("say", END)
    outer = StateGraph(S)
    outer.add_node("inner", inner.compile())
    outer.add_node("after", lambda s: {"messages": ["after"]})
    outer.add_edge(START, "inner")
    outer.add_edge("inner", "after")
    outer.add_edge("after", END)
    return outer.compile(checkpointer=saver)


def test_a_graph_rewound_to_before_a_turn(
    saver: BaseCheckpointSaver, sync_backend: Backend
) -> None:
    app = nested_app(saver)
    config = {"configurable": {"thread_id": "g"}}
    app.invoke({"messages": ["one"]}, config)
    state = app.get_state(config, subgraphs=True)
    history = list(app.get_state_history(config))
    rows = asyncio.run(stored_keys(saver, sync_backend, "g"))
    app.invoke({"messages": ["two"]}, config)
    after_two = asyncio.run(stored_keys(saver, sync_backend, "g"))
    assert len(after_two.heads) == 3  # the root and each run's subgraph namespace

    head = app.get_state(config).config["configurable"]["checkpoint_id"]
    removed = saver.rewind(state.config, expected_head=head)
    assert removed == len(after_two.checkpoints) - len(rows.checkpoints) > 0
    assert asyncio.run(stored_keys(saver, sync_backend, "g")) == rows
    forget_process_state(saver)
    assert app.get_state(config, subgraphs=True) == state
    assert list(app.get_state_history(config)) == history
    result = app.invoke({"messages": ["three"]}, config)
    assert result["messages"] == [
        "one", "thought 1", "said", "after", "three", "thought 5", "said", "after",
    ]  # fmt: skip


# ---------------------------------------------------------------------- PostgreSQL prune


def test_a_rewind_during_a_long_prune_keeps_its_head(
    saver: BaseCheckpointSaver, sync_backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL prunes in batches below cutoffs read when it started. A rewind meanwhile
    makes an old checkpoint, below those cutoffs, the head: the next batches keep it."""
    if sync_backend.name != "postgres":
        pytest.skip("PostgreSQL prunes in batches of short transactions")
    import psycopg
    from psycopg import sql

    from threadline.checkpoint.postgres import _core

    monkeypatch.setattr(_core, "PRUNE_BATCH", 5)
    # The prune pauses after its 4th batch, so the waiting rewind takes the heads before the
    # 5th batch can: without the pause either may go first, and a 5th, 6th and 7th batch
    # winning would delete the rewind's target (then, rightly, CheckpointNotFoundError).
    after_batch_4, resume_prune = threading.Event(), threading.Event()
    monkeypatch.setattr(
        saver, "_c_prune", pausing_prune(saver, after=4, paused=after_batch_4, go=resume_prune)
    )
    cp = Driver(saver, sync_backend)
    saved, expected = asyncio.run(grow(cp, 40))
    table = sql.Identifier(saver.schema, "threadline_checkpoints")  # type: ignore[attr-defined]
    count = sql.SQL("SELECT count(*) FROM {} WHERE thread_id = %s").format(table)
    blocker = psycopg.connect(postgres_url())
    watcher = psycopg.connect(postgres_url(), autocommit=True)
    out: dict[str, Any] = {}
    try:
        # Hold the 4th batch's first checkpoint: prune deletes 3 batches, then waits.
        blocker.execute(
            sql.SQL("SELECT FROM {} WHERE thread_id = %s AND id = %s FOR UPDATE").format(table),
            (T, saved[15].id),
        )
        pruner = threading.Thread(target=lambda: out.update(removed=saver.prune([T], keep_last=2)))
        pruner.start()
        deadline = time.monotonic() + 60
        while watcher.execute(count, (T,)).fetchone()[0] > 25 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert watcher.execute(count, (T,)).fetchone()[0] == 25
        rewinder = threading.Thread(
            target=lambda: out.update(rewound=saver.rewind(cfg(T, saved[30].id)))
        )
        rewinder.start()
        rewinder.join(1)
        assert rewinder.is_alive()  # waits for the prune batch holding the heads
        blocker.rollback()
        assert after_batch_4.wait(60)
        rewinder.join(60)
        assert not rewinder.is_alive()
    finally:
        resume_prune.set()
        blocker.rollback()
        blocker.close()
        watcher.close()
    pruner.join(60)
    assert out["rewound"] == 9
    forget_process_state(saver)
    history = list(saver.list(cfg(T)))
    assert history[0].checkpoint.id == saved[30].id
    assert history[0].checkpoint.values == expected[saved[30].id]
    asyncio.run(assert_consistent(cp))


def pausing_prune(
    saver: BaseCheckpointSaver, after: int, paused: threading.Event, go: threading.Event
) -> Callable[[str, int], Any]:
    """``saver._c_prune``, but the prune stops after its ``after``-th checkpoint batch
    (setting ``paused``) until ``go`` is set."""
    import dataclasses

    original = saver._c_prune  # type: ignore[attr-defined]
    query = saver._q.prune_checkpoints  # type: ignore[attr-defined]

    def prune(thread_id: str, keep_last: int) -> Any:
        call = original(thread_id, keep_last)

        def proc() -> Any:
            batches = 0
            inner = call.proc()
            sent: Any = None
            while True:
                try:
                    op = inner.send(sent)
                except StopIteration as stop:
                    return stop.value
                sent = yield op
                if op.query == query:
                    batches += 1
                    if batches == after:
                        paused.set()
                        go.wait(60)

        return dataclasses.replace(call, proc=proc)

    return prune
