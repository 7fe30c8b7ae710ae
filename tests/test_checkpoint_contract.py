"""The checkpointer contract: every backend passes all of it (DESIGN.md, "Tests").

The tests are written once, as ``async`` methods of :class:`CheckpointerContract` that talk to
the saver through ``cp``, a :class:`backends.Driver`: ``await cp.put(...)`` calls ``put`` on a
sync saver and awaits ``aput`` on an async one. This module runs them on every sync backend
(:class:`TestSyncContract`); ``test_checkpoint_contract_async.py`` runs the same class on
every async backend. Only the public API of ``BaseCheckpointSaver`` is used; the one
backend-specific step (corrupting stored bytes) goes through ``Backend.corrupt``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import enum
import itertools
import os
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from decimal import Decimal
from typing import Any

import pydantic
import pytest
from backends import Backend, Driver

from threadline.checkpoint import base as checkpoint_base
from threadline.checkpoint.base import BaseCheckpointSaver
from threadline.checkpoint.serde import MsgpackSerializer, register_type
from threadline.checkpoint.types import (
    ChannelChange,
    Checkpoint,
    CheckpointDraft,
    CheckpointTuple,
    PendingWrite,
    new_checkpoint_id,
)
from threadline.errors import (
    CheckpointConflictError,
    CheckpointNotFoundError,
    CorruptCheckpointError,
    ThreadlineError,
    ThreadNotFoundError,
)

T = "thread-1"
CHILD = "child:1"

MakeDriver = Callable[..., Awaitable[Driver]]


# ---------------------------------------------------------------------- helpers


def cfg(thread_id: str = T, checkpoint_id: str | None = None, ns: str = "") -> dict[str, Any]:
    configurable: dict[str, Any] = {"thread_id": thread_id, "checkpoint_ns": ns}
    if checkpoint_id is not None:
        configurable["checkpoint_id"] = checkpoint_id
    return {"configurable": configurable}


def draft(
    changes: Mapping[str, Any] | None = None,
    *,
    parent: Checkpoint | None = None,
    step: int = 0,
    source: str = "loop",
    metadata: dict[str, Any] | None = None,
    tasks: list[Any] | None = None,
    removed: Iterable[str] = (),
) -> CheckpointDraft:
    """A draft on top of ``parent`` (its id and refs); plain values become full changes."""
    return CheckpointDraft(
        step=step,
        source=source,
        metadata={} if metadata is None else metadata,
        tasks=[] if tasks is None else tasks,
        changes={
            k: v if isinstance(v, ChannelChange) else ChannelChange(v)
            for k, v in (changes or {}).items()
        },
        parent_id=None if parent is None else parent.id,
        base_refs={} if parent is None else parent.refs,
        removed=frozenset(removed),
    )


def item(i: int, tag: str = "main") -> str:
    """List items of varying sizes (17 to 57 bytes)."""
    return f"{tag}-{i:04d}-" + "x" * (7 * i % 41)


def ids(tuples: Iterable[CheckpointTuple]) -> list[str]:
    return [t.checkpoint.id for t in tuples]


async def grow(
    cp: Driver,
    n: int,
    *,
    thread_id: str = T,
    ns: str = "",
    head: Checkpoint | None = None,
    value: list[Any] | None = None,
    tag: str = "main",
    metadata: Callable[[int], dict[str, Any]] | None = None,
    tasks: list[Any] | None = None,
) -> tuple[list[Checkpoint], dict[str, dict[str, Any]]]:
    """Append 1-3 items to channel "items" (as a delta) and set "step", ``n`` times.

    Returns the checkpoints in order and the values each one must reconstruct to.
    """
    value = [] if value is None else list(value)
    saved: list[Checkpoint] = []
    expected: dict[str, dict[str, Any]] = {}
    counter = len(value)
    for i in range(n):
        new = [item(counter + j, tag) for j in range(1 + i % 3)]
        counter += len(new)
        value = value + new
        step = i if head is None else head.step + 1
        head = await cp.put(
            thread_id,
            ns,
            draft(
                {"items": ChannelChange(list(value), appended=new), "step": step},
                parent=head,
                step=step,
                metadata=metadata(i) if metadata else {"step": step},
                tasks=tasks,
            ),
            expected_head=None if head is None else head.id,
        )
        saved.append(head)
        expected[head.id] = {"items": list(value), "step": step}
    return saved, expected


async def assert_reconstructs(
    cp: Driver, expected: Mapping[str, Mapping[str, Any]], *, thread_id: str = T, ns: str = ""
) -> None:
    """Every checkpoint in ``expected`` has exactly those values, by id and through list."""
    for checkpoint_id, values in expected.items():
        got = await cp.get_tuple(cfg(thread_id, checkpoint_id, ns))
        assert got is not None
        assert got.checkpoint.values == values, checkpoint_id
    listed = {t.checkpoint.id: t.checkpoint.values for t in await cp.list(cfg(thread_id, ns=ns))}
    for checkpoint_id, values in expected.items():
        assert listed[checkpoint_id] == values, checkpoint_id


def assert_utc(value: dt.datetime) -> None:
    assert isinstance(value, dt.datetime)
    assert value.tzinfo is not None
    assert value.utcoffset() == dt.timedelta(0)


async def head_id(cp: Driver, thread_id: str = T, ns: str = "") -> str | None:
    got = await cp.get_tuple(cfg(thread_id, ns=ns))
    return None if got is None else got.checkpoint.id


# Types the serializer stores by class reference: they must be importable, so module level.


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


@dataclasses.dataclass(frozen=True)
class Point:
    x: int
    y: float
    tags: tuple[str, ...] = ()


class User(pydantic.BaseModel):
    name: str
    joined: dt.datetime
    roles: set[str] = set()
    home: Point | None = None


for _cls in (Color, Point, User):  # the checkpoint layer stores only registered classes
    register_type(_cls)


def typed_values() -> dict[str, Any]:
    return {
        "none": None,
        "bool": True,
        "int": -5,
        "bigint": 2**80 + 1,
        "float": 1.5,
        "str": "héllo ✓ \x00",
        "empty_str": "",
        "bytes": b"\x00\xff\x80binary",
        "empty_bytes": b"",
        "list": [1, "a", [2, None]],
        "empty_list": [],
        "dict": {"nested": {"deep": [1, 2]}},
        "int_keys": {1: "one", 2: "two"},
        "tuple": (1, ("nested", 2), []),
        "set": {1, 2, 3},
        "frozenset": frozenset({"a", "b"}),
        "datetime_utc": dt.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=dt.timezone.utc),
        "datetime_offset": dt.datetime(
            2024, 1, 2, 3, 4, 5, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=30))
        ),
        "datetime_naive": dt.datetime(1999, 12, 31, 23, 59, 59),
        "date": dt.date(2020, 2, 29),
        "time": dt.time(12, 30, 15, 500),
        "timedelta": dt.timedelta(days=-1, seconds=5, microseconds=7),
        "uuid": uuid.UUID("12345678-1234-5678-1234-567812345678"),
        "decimal": Decimal("1.10"),
        "enum": Color.BLUE,
        "dataclass": Point(1, 2.5, ("a", "b")),
        "model": User(
            name="ann",
            joined=dt.datetime(2023, 3, 4, tzinfo=dt.timezone.utc),
            roles={"admin"},
            home=Point(3, 4.0),
        ),
    }


def assert_same_typed(got: Any, want: Any) -> None:
    """Equal, and of exactly the same type all the way down where it matters."""
    assert got == want
    assert type(got) is type(want), (got, want)
    if isinstance(want, dict):
        for k in want:
            assert_same_typed(got[k], want[k])
    elif isinstance(want, (list, tuple)):
        for g, w in zip(got, want, strict=True):
            assert_same_typed(g, w)
    elif isinstance(want, Decimal):
        assert str(got) == str(want)
    elif isinstance(want, dt.datetime):
        assert got.utcoffset() == want.utcoffset()


SERDE_OPTIONS: dict[str, dict[str, Any]] = {
    "encrypted": {"encryption_key": os.urandom(32)},
    "zstd": {"compression": "zstd"},
    "zstd+encrypted": {"compression": "zstd", "encryption_key": os.urandom(32)},
}


# ---------------------------------------------------------------------- the contract


class CheckpointerContract:
    """Every test a backend must pass. Subclasses provide ``make_cp(**saver_options)``."""

    @pytest.fixture
    def make_cp(self) -> MakeDriver:  # pragma: no cover - overridden
        raise NotImplementedError

    @pytest.fixture
    async def cp(self, make_cp: MakeDriver) -> Driver:
        return await make_cp()

    # ------------------------------------------------------------------ put / get_tuple

    async def test_first_put_then_get_tuple_by_head_and_by_id(self, cp: Driver) -> None:
        before = dt.datetime.now(dt.timezone.utc)
        first = await cp.put(
            T,
            "",
            draft(
                {"messages": ["hi"], "count": 1},
                step=-1,
                source="input",
                metadata={"source": "input", "step": -1, "user": {"name": "ann", "n": [1, 2]}},
                tasks=[{"id": "task-1", "name": "agent"}],
            ),
            expected_head=None,
        )
        after = dt.datetime.now(dt.timezone.utc)

        assert first.thread_id == T
        assert first.ns == ""
        assert first.parent_id is None
        assert first.seq == 1
        assert first.step == -1
        assert first.source == "input"
        assert first.metadata == {
            "source": "input",
            "step": -1,
            "user": {"name": "ann", "n": [1, 2]},
        }
        assert first.tasks == [{"id": "task-1", "name": "agent"}]
        assert set(first.refs) == {"messages", "count"}
        for ref in first.refs.values():
            assert ref.writer == first.id
            assert ref.chain_bytes == 0
            assert ref.snapshot_bytes > 0
        assert_utc(first.created_at)
        assert (
            before - dt.timedelta(seconds=1) <= first.created_at <= after + dt.timedelta(seconds=1)
        )

        for config in (cfg(T), cfg(T, first.id)):
            got = await cp.get_tuple(config)
            assert got is not None
            c = got.checkpoint
            assert c.id == first.id
            assert c.thread_id == T
            assert c.ns == ""
            assert c.parent_id is None
            assert c.seq == 1
            assert c.step == -1
            assert c.source == "input"
            assert c.metadata == first.metadata
            assert got.metadata == first.metadata
            assert c.tasks == first.tasks
            assert c.values == {"messages": ["hi"], "count": 1}
            assert dict(c.refs) == dict(first.refs)
            assert_utc(c.created_at)
            assert abs(c.created_at - first.created_at) < dt.timedelta(milliseconds=1)
            assert got.pending_writes == []
            assert got.config == {
                "configurable": {"thread_id": T, "checkpoint_ns": "", "checkpoint_id": first.id}
            }
            assert got.parent_config is None
        assert (await cp.get(cfg(T)))["channel_values"] == {"messages": ["hi"], "count": 1}

        second = await cp.put(
            T,
            "",
            draft({"messages": ["hi", "hello"]}, parent=first, step=0),
            expected_head=first.id,
        )
        assert second.seq == 2
        assert second.parent_id == first.id
        assert second.id > first.id  # time-ordered ids
        got = await cp.get_tuple(cfg(T))
        assert got is not None
        assert got.checkpoint.id == second.id
        assert got.checkpoint.seq == 2
        assert got.checkpoint.values == {"messages": ["hi", "hello"], "count": 1}
        assert got.parent_config == {
            "configurable": {"thread_id": T, "checkpoint_ns": "", "checkpoint_id": first.id}
        }
        old = await cp.get_tuple(cfg(T, first.id))
        assert old is not None
        assert old.checkpoint.values == {"messages": ["hi"], "count": 1}

    async def test_seq_increases_with_every_commit(self, cp: Driver) -> None:
        saved, _ = await grow(cp, 8)
        seqs = [c.seq for c in saved]
        assert seqs == sorted(seqs)
        assert len(set(seqs)) == len(seqs)
        listed = await cp.list(cfg(T))
        assert [t.checkpoint.seq for t in listed] == seqs[::-1]

    # ------------------------------------------------------------------ compare-and-swap

    async def test_put_with_stale_expected_head_conflicts_and_stores_nothing(
        self, cp: Driver
    ) -> None:
        c1 = await cp.put(
            T, "", draft({"a": 1}), expected_head=None, thread_metadata={"owner": "ann"}
        )
        c2 = await cp.put(T, "", draft({"a": 2}, parent=c1), expected_head=c1.id)
        threads_before = await cp.list_threads()
        listed_before = ids(await cp.list(cfg(T)))

        with pytest.raises(CheckpointConflictError) as info:
            await cp.put(
                T,
                "",
                draft({"a": 3}, parent=c1),
                expected_head=c1.id,
                thread_metadata={"owner": "mallory"},
            )
        assert info.value.thread_id == T
        assert info.value.expected == c1.id
        assert info.value.actual == c2.id
        assert T in str(info.value)

        assert await head_id(cp) == c2.id
        assert ids(await cp.list(cfg(T))) == listed_before == [c2.id, c1.id]
        assert (await cp.get(cfg(T)))["channel_values"] == {"a": 2}
        threads_after = await cp.list_threads()
        assert threads_after == threads_before
        assert threads_after[0].metadata == {"owner": "ann"}

    async def test_put_expecting_no_head_on_a_thread_with_one_conflicts(self, cp: Driver) -> None:
        c1 = await cp.put(T, "", draft({"a": 1}), expected_head=None)
        with pytest.raises(CheckpointConflictError) as info:
            await cp.put(T, "", draft({"a": 2}), expected_head=None)
        assert info.value.thread_id == T
        assert info.value.expected is None
        assert info.value.actual == c1.id
        assert ids(await cp.list(cfg(T))) == [c1.id]

    async def test_put_expecting_a_head_on_a_missing_thread_conflicts(self, cp: Driver) -> None:
        with pytest.raises(CheckpointConflictError) as info:
            await cp.put(T, "", draft({"a": 1}), expected_head="no-such-checkpoint")
        assert info.value.actual is None
        assert await cp.get_tuple(cfg(T)) is None
        assert await cp.list_threads() == []

    async def test_put_writes_with_stale_expected_head_conflicts(self, cp: Driver) -> None:
        c1 = await cp.put(T, "", draft({"a": 1}, tasks=["t"]), expected_head=None)
        c2 = await cp.put(T, "", draft({"a": 2}, parent=c1, tasks=["t"]), expected_head=c1.id)
        with pytest.raises(CheckpointConflictError) as info:
            await cp.put_writes(T, "", c1.id, "task-a", [("a", 5)], expected_head=c1.id)
        assert info.value.thread_id == T
        assert info.value.actual == c2.id
        for checkpoint_id in (c1.id, c2.id):
            got = await cp.get_tuple(cfg(T, checkpoint_id))
            assert got is not None
            assert got.pending_writes == []

    async def test_racing_writers_exactly_one_wins(self, cp: Driver) -> None:
        head = await cp.put(T, "", draft({"n": 0}), expected_head=None)
        results = await asyncio.gather(
            *(
                cp.put(T, "", draft({"n": i}, parent=head, step=1), expected_head=head.id)
                for i in range(1, 9)
            ),
            return_exceptions=True,
        )
        wins = [r for r in results if isinstance(r, Checkpoint)]
        losses = [r for r in results if isinstance(r, CheckpointConflictError)]
        assert len(wins) == 1
        assert len(losses) == 7
        assert all(loss.actual == wins[0].id for loss in losses)
        assert await head_id(cp) == wins[0].id
        assert ids(await cp.list(cfg(T))) == [wins[0].id, head.id]

    # ------------------------------------------------------------------ versions

    async def test_unchanged_channels_are_not_rewritten_and_removed_ones_disappear(
        self, cp: Driver
    ) -> None:
        c1 = await cp.put(
            T, "", draft({"a": [1], "b": {"k": "v"}, "c": "keep"}), expected_head=None
        )
        c2 = await cp.put(
            T,
            "",
            draft({"a": ChannelChange([1, 2], appended=[2])}, parent=c1, step=1),
            expected_head=c1.id,
        )
        assert c2.refs["a"].writer == c2.id
        assert c2.refs["b"] == c1.refs["b"]
        assert c2.refs["c"] == c1.refs["c"]
        assert c2.refs["b"].writer == c1.id

        # appended=[] means "unchanged": no new version either.
        c3 = await cp.put(
            T,
            "",
            draft({"a": ChannelChange([1, 2], appended=[])}, parent=c2, step=2, removed={"b"}),
            expected_head=c2.id,
        )
        assert c3.refs["a"] == c2.refs["a"]
        assert "b" not in c3.refs
        assert c3.refs["c"].writer == c1.id

        got3 = await cp.get_tuple(cfg(T))
        assert got3 is not None
        assert got3.checkpoint.values == {"a": [1, 2], "c": "keep"}
        assert dict(got3.checkpoint.refs) == dict(c3.refs)
        got2 = await cp.get_tuple(cfg(T, c2.id))
        assert got2 is not None
        assert got2.checkpoint.values == {"a": [1, 2], "b": {"k": "v"}, "c": "keep"}
        assert got2.checkpoint.refs["b"].writer == c1.id

    @pytest.mark.parametrize(
        "ratio", [None, 0.5, 2.0], ids=["default-ratio", "ratio-0.5", "ratio-2"]
    )
    async def test_deltas_and_snapshots_reconstruct_every_checkpoint(
        self, make_cp: MakeDriver, ratio: float | None
    ) -> None:
        cp = await make_cp() if ratio is None else await make_cp(snapshot_ratio=ratio)
        ratio = cp.saver.snapshot_ratio
        saved, expected = await grow(cp, 60)

        refs = [c.refs["items"] for c in saved]
        assert all(ref.writer == c.id for ref, c in zip(refs, saved, strict=True))
        deltas = [r for r in refs if r.chain_bytes > 0]
        snapshots = [r for r in refs if r.chain_bytes == 0]
        assert deltas, "a growing list must be stored as deltas"
        assert len(snapshots) >= 3, "deltas must be folded into periodic snapshots"
        # Bounded replay: never more than ratio x one snapshot of deltas to read.
        for ref in refs:
            assert ref.chain_bytes <= ref.snapshot_bytes * ratio
        # The doubling rule: each snapshot is written once the deltas since the previous one
        # outgrow it, so snapshot sizes grow geometrically and snapshots get rarer.
        for prev, nxt in itertools.pairwise(snapshots):
            assert nxt.snapshot_bytes > prev.snapshot_bytes * (1 + ratio / 2)
        # The stored refs are the ones put returned.
        for c in saved:
            got = await cp.get_tuple(cfg(T, c.id))
            assert got is not None
            assert dict(got.checkpoint.refs) == dict(c.refs)

        await assert_reconstructs(cp, expected)
        for c in saved[::7]:  # the runtime's cached fast path agrees with storage
            loaded = await cp.load(T, "", c.id, shared=True)
            assert loaded is not None
            assert loaded.checkpoint.values == expected[c.id]
        listed = await cp.list(cfg(T))
        assert ids(listed) == [c.id for c in reversed(saved)]

    async def test_list_streams_long_threads_across_batches(self, cp: Driver) -> None:
        saved, expected = await grow(cp, 130, metadata=lambda i: {"step": i, "even": i % 2 == 0})
        all_ids = [c.id for c in saved]
        listed = await cp.list(cfg(T))
        assert ids(listed) == all_ids[::-1]
        for t in listed:
            assert t.checkpoint.values == expected[t.checkpoint.id]
        before = await cp.list(cfg(T), before=cfg(T, all_ids[120]))
        assert ids(before) == all_ids[:120][::-1]
        assert (
            ids(await cp.list(cfg(T), before=cfg(T, all_ids[120]), limit=5))
            == all_ids[115:120][::-1]
        )
        even = await cp.list(cfg(T), filter={"even": True})
        assert ids(even) == all_ids[::2][::-1]
        for t in even:
            assert t.checkpoint.values == expected[t.checkpoint.id]
        assert ids(await cp.list(cfg(T), limit=110)) == all_ids[20:][::-1]

    async def test_branches_from_an_older_checkpoint(self, cp: Driver) -> None:
        main, expected = await grow(cp, 10)
        old = await cp.get_tuple(cfg(T, main[4].id))
        assert old is not None
        branch_items = [item(500 + j, "branch") for j in range(3)]
        old_items = old.checkpoint.values["items"]
        b1 = await cp.put(
            T,
            "",
            CheckpointDraft(
                step=old.checkpoint.step + 1,
                source="update",
                metadata={"branch": True},
                tasks=[],
                changes={"items": ChannelChange(old_items + branch_items, appended=branch_items)},
                parent_id=old.checkpoint.id,
                base_refs=old.checkpoint.refs,
            ),
            expected_head=main[-1].id,
        )
        assert b1.parent_id == main[4].id
        assert await head_id(cp) == b1.id
        assert b1.refs["step"] == main[4].refs["step"]
        branch, branch_expected = await grow(
            cp, 6, head=b1, value=old_items + branch_items, tag="branch"
        )

        got = await cp.get_tuple(cfg(T, b1.id))
        assert got is not None
        assert got.checkpoint.values == {
            "items": old_items + branch_items,
            "step": expected[main[4].id]["step"],
        }
        assert got.parent_config == cfg(T, main[4].id)
        for values in branch_expected.values():
            assert values["items"][: len(old_items)] == old_items
            assert all("main" not in x for x in values["items"][len(old_items) :])
        await assert_reconstructs(cp, {**expected, **branch_expected})
        assert await head_id(cp) == branch[-1].id

        listed = await cp.list(cfg(T))
        assert ids(listed) == [c.id for c in [*main, b1, *branch]][::-1]
        # The main line's old head cannot move the head back silently.
        with pytest.raises(CheckpointConflictError):
            await cp.put(T, "", draft({"x": 1}, parent=main[-1]), expected_head=main[-1].id)

    # ------------------------------------------------------------------ namespaces

    async def test_namespaces_have_independent_heads(self, cp: Driver) -> None:
        root = await cp.put(T, "", draft({"a": "root"}), expected_head=None)
        child = await cp.put(T, CHILD, draft({"a": "child"}), expected_head=None)
        assert child.ns == CHILD
        assert child.seq == root.seq + 1  # seq is thread-wide
        root2 = await cp.put(T, "", draft({"a": "root2"}, parent=root), expected_head=root.id)

        got_root = await cp.get_tuple(cfg(T))
        got_child = await cp.get_tuple(cfg(T, ns=CHILD))
        assert got_root is not None and got_child is not None
        assert got_root.checkpoint.id == root2.id
        assert got_root.checkpoint.values == {"a": "root2"}
        assert got_child.checkpoint.id == child.id
        assert got_child.checkpoint.ns == CHILD
        assert got_child.checkpoint.values == {"a": "child"}
        assert got_child.config == {
            "configurable": {"thread_id": T, "checkpoint_ns": CHILD, "checkpoint_id": child.id}
        }

        assert ids(await cp.list(cfg(T))) == [root2.id, root.id]
        assert ids(await cp.list(cfg(T, ns=CHILD))) == [child.id]
        # A checkpoint of another namespace is not found through this one.
        with pytest.raises(CheckpointNotFoundError):
            await cp.get_tuple(cfg(T, child.id))
        with pytest.raises(CheckpointNotFoundError):
            await cp.get_tuple(cfg(T, root.id, ns=CHILD))
        with pytest.raises(CheckpointNotFoundError):
            await cp.list(cfg(T, ns=CHILD), before=cfg(T, root2.id))
        # Each namespace's head is compared on its own.
        with pytest.raises(CheckpointConflictError):
            await cp.put(T, CHILD, draft({"a": "x"}, parent=child), expected_head=root2.id)
        child2 = await cp.put(
            T, CHILD, draft({"a": "child2"}, parent=child), expected_head=child.id
        )
        assert await head_id(cp) == root2.id
        assert await head_id(cp, ns=CHILD) == child2.id
        assert [t.thread_id for t in await cp.list_threads()] == [T]

    async def test_put_writes_against_a_checkpoint_of_another_namespace_is_not_found(
        self, cp: Driver
    ) -> None:
        root = await cp.put(T, "", draft({"a": "root"}, tasks=["t"]), expected_head=None)
        child = await cp.put(T, CHILD, draft({"a": "child"}, tasks=["t"]), expected_head=None)
        with pytest.raises(CheckpointNotFoundError):
            await cp.put_writes(T, CHILD, root.id, "t", [("a", 1)], expected_head=child.id)
        with pytest.raises(CheckpointNotFoundError):
            await cp.put_writes(T, "", child.id, "t", [("a", 1)], expected_head=root.id)
        for ns, c in (("", root), (CHILD, child)):
            got = await cp.get_tuple(cfg(T, c.id, ns))
            assert got is not None
            assert got.pending_writes == []

    # ------------------------------------------------------------------ pending writes

    async def test_pending_writes(self, cp: Driver) -> None:
        c1 = await cp.put(
            T, "", draft({"a": 1}, tasks=[{"id": "task-a"}, {"id": "task-b"}]), expected_head=None
        )
        await cp.put_writes(
            T, "", c1.id, "task-b", [("b", 1), ("c", {"x": [1, 2]})], expected_head=c1.id
        )
        await cp.put_writes(T, "", c1.id, "task-a", [("a", "A")], expected_head=c1.id)
        want = [
            PendingWrite("task-a", 0, "a", "A"),
            PendingWrite("task-b", 0, "b", 1),
            PendingWrite("task-b", 1, "c", {"x": [1, 2]}),
        ]
        got = await cp.get_tuple(cfg(T))
        assert got is not None
        assert got.pending_writes == want

        # Saving the same (task, idx) again keeps the first write.
        await cp.put_writes(T, "", c1.id, "task-b", [("b", 999)], expected_head=c1.id)
        got = await cp.get_tuple(cfg(T, c1.id))
        assert got is not None
        assert got.pending_writes == want
        listed = await cp.list(cfg(T))
        assert listed[0].pending_writes == want

        # Writes belong to their checkpoint only.
        c2 = await cp.put(T, "", draft({"a": 2}, parent=c1, tasks=["t"]), expected_head=c1.id)
        got2 = await cp.get_tuple(cfg(T))
        assert got2 is not None and got2.checkpoint.id == c2.id
        assert got2.pending_writes == []
        got1 = await cp.get_tuple(cfg(T, c1.id))
        assert got1 is not None
        assert got1.pending_writes == want

        with pytest.raises(CheckpointNotFoundError):
            await cp.put_writes(
                T, "", "no-such-checkpoint", "task-a", [("a", 1)], expected_head=c2.id
            )

    # ------------------------------------------------------------------ list

    async def _five(self, cp: Driver) -> list[Checkpoint]:
        metas: list[dict[str, Any]] = [
            {"source": "input", "step": -1, "user": {"id": 1, "tags": ["a", "b"]}},
            {"source": "loop", "step": 0, "user": {"id": 1, "tags": ["a", "b"]}},
            {"source": "loop", "step": 1, "user": {"id": 2, "tags": ["a"]}},
            {"source": "update", "step": 2, "user": {"id": 1, "tags": ["a", "b"]}},
            {"source": "loop", "step": 3, "user": {"id": 2, "tags": []}, "score": 0.5},
        ]
        saved: list[Checkpoint] = []
        head: Checkpoint | None = None
        for meta in metas:
            head = await cp.put(
                T,
                "",
                draft({"step": meta["step"]}, parent=head, step=meta["step"], metadata=meta),
                expected_head=None if head is None else head.id,
            )
            saved.append(head)
        return saved

    async def test_list_newest_first_filter_before_limit(self, cp: Driver) -> None:
        c = [x.id for x in await self._five(cp)]

        async def listed(**kwargs: Any) -> list[str]:
            return ids(await cp.list(cfg(T), **kwargs))

        assert await listed() == [c[4], c[3], c[2], c[1], c[0]]
        got = await cp.list(cfg(T))
        assert [t.checkpoint.values["step"] for t in got] == [3, 2, 1, 0, -1]
        assert got[0].metadata["score"] == 0.5

        assert await listed(filter={}) == [c[4], c[3], c[2], c[1], c[0]]
        assert await listed(filter={"source": "loop"}) == [c[4], c[2], c[1]]
        assert await listed(filter={"source": "loop", "step": 1}) == [c[2]]
        assert await listed(filter={"user": {"id": 1, "tags": ["a", "b"]}}) == [c[3], c[1], c[0]]
        assert await listed(filter={"user": {"id": 2, "tags": []}}) == [c[4]]
        assert await listed(filter={"score": 0.5}) == [c[4]]
        # Equality, not containment, and no type coercion; a missing key never matches.
        assert await listed(filter={"user": {"id": 1}}) == []
        assert await listed(filter={"step": "1"}) == []
        assert await listed(filter={"missing": None}) == []
        assert await listed(filter={"source": "nope"}) == []

        assert await listed(before=cfg(T, c[3])) == [c[2], c[1], c[0]]
        assert await listed(before=cfg(T, c[3]), limit=1) == [c[2]]
        assert await listed(before=cfg(T, c[4]), filter={"source": "loop"}) == [c[2], c[1]]
        assert await listed(before=cfg(T, c[0])) == []
        assert await listed(before=cfg(T)) == [c[4], c[3], c[2], c[1], c[0]]  # no id: no bound
        assert await listed(limit=2) == [c[4], c[3]]
        assert await listed(limit=2, filter={"source": "loop"}) == [c[4], c[2]]
        assert await listed(limit=1, filter={"user": {"id": 1, "tags": ["a", "b"]}}) == [c[3]]
        assert await listed(limit=10) == [c[4], c[3], c[2], c[1], c[0]]
        assert await listed(limit=0) == []

    @pytest.mark.parametrize(
        "bad",
        [
            {"a'; DROP TABLE x; --": 1},
            {"": 1},
            {42: 1},
            {None: 1},
            {"a b": 1},
            {"x" * 129: 1},
            {"$.a": 1},
            ["source"],
        ],
        ids=["injection", "empty", "int", "none", "space", "too-long", "jsonpath", "not-a-dict"],
    )
    async def test_invalid_filters_raise_value_error(self, cp: Driver, bad: Any) -> None:
        await self._five(cp)
        with pytest.raises(ValueError):
            await cp.list(cfg(T), filter=bad)
        with pytest.raises(ValueError):
            await cp.list_threads(filter=bad)
        assert len(await cp.list(cfg(T))) == 5

    async def test_unknown_ids_and_threads(self, cp: Driver) -> None:
        c = await self._five(cp)
        unknown = str(uuid.uuid4())
        with pytest.raises(CheckpointNotFoundError) as info:
            await cp.get_tuple(cfg(T, unknown))
        assert unknown in str(info.value)
        assert T in str(info.value)
        with pytest.raises(CheckpointNotFoundError):
            await cp.list(cfg(T), before=cfg(T, unknown))
        with pytest.raises(CheckpointNotFoundError):
            await cp.get_tuple(cfg("nobody", c[0].id))
        assert await cp.get_tuple(cfg("nobody")) is None
        assert await cp.get(cfg("nobody")) is None
        assert await cp.get_tuple(cfg(T, ns="no-such-ns")) is None
        assert await cp.list(cfg("nobody")) == []
        assert await cp.list(cfg(T, ns="no-such-ns")) == []

    # ------------------------------------------------------------------ isolation

    async def test_returned_values_are_private_copies(self, cp: Driver) -> None:
        value = [1, [2, 3]]
        metadata = {"m": {"x": 1}}
        tasks = [{"id": "t", "args": [1]}]
        c1 = await cp.put(
            T,
            "",
            draft({"items": value, "d": {"k": "v"}}, metadata=metadata, tasks=tasks),
            expected_head=None,
        )
        await cp.put_writes(T, "", c1.id, "t", [("items", {"w": [1]})], expected_head=c1.id)
        # The caller's objects are not referenced by what was stored.
        value.append(99)
        value[1].append(99)
        metadata["m"]["x"] = 99
        tasks[0]["args"].append(99)
        want_values = {"items": [1, [2, 3]], "d": {"k": "v"}}

        for read in ("get_tuple", "list"):
            got = await cp.get_tuple(cfg(T)) if read == "get_tuple" else (await cp.list(cfg(T)))[0]
            assert got is not None
            assert got.checkpoint.values == want_values
            assert got.checkpoint.metadata == {"m": {"x": 1}}
            assert got.checkpoint.tasks == [{"id": "t", "args": [1]}]
            got.checkpoint.values["items"].append(4)
            got.checkpoint.values["items"][1].append(9)
            got.checkpoint.values["d"]["k"] = "changed"
            got.checkpoint.values["new"] = 1
            got.checkpoint.metadata["m"]["x"] = 2
            got.checkpoint.tasks[0]["args"].append(2)
            got.pending_writes[0].value["w"].append(2)

            again = await cp.get_tuple(cfg(T))
            assert again is not None
            assert again.checkpoint.values == want_values
            assert again.checkpoint.metadata == {"m": {"x": 1}}
            assert again.checkpoint.tasks == [{"id": "t", "args": [1]}]
            assert again.pending_writes == [PendingWrite("t", 0, "items", {"w": [1]})]

    # ------------------------------------------------------------------ fork

    async def _forkable(self, cp: Driver) -> tuple[Checkpoint, Checkpoint]:
        tasks = [{"id": "task-a", "name": "a"}, {"id": "task-b", "name": "b"}]
        c0 = await cp.put(
            T,
            "",
            draft(
                {"items": [1, 2], "x": {"k": 1}}, metadata={"user": "ann", "step": 0}, tasks=tasks
            ),
            expected_head=None,
        )
        await cp.put_writes(
            T, "", c0.id, "task-a", [("items", 3), ("x", {"k": 2})], expected_head=c0.id
        )
        c1 = await cp.put(
            T,
            "",
            draft(
                {"items": ChannelChange([1, 2, 3], appended=[3])},
                parent=c0,
                step=1,
                metadata={"user": "ann", "step": 1},
                tasks=tasks,
            ),
            expected_head=c0.id,
        )
        await cp.put_writes(T, "", c1.id, "task-b", [("items", 4)], expected_head=c1.id)
        await cp.put_writes(T, "", c1.id, "task-a", [("x", None)], expected_head=c1.id)
        return c0, c1

    async def test_fork_copies_one_checkpoint_into_a_new_thread(self, cp: Driver) -> None:
        c0, c1 = await self._forkable(cp)
        src_head = await cp.get_tuple(cfg(T))
        src_old = await cp.get_tuple(cfg(T, c0.id))
        assert src_head is not None and src_old is not None

        for name, source_config, src in (
            ("fork-head", cfg(T), src_head),
            ("fork-old", cfg(T, c0.id), src_old),
        ):
            forked = await cp.fork(source_config, name, metadata={"note": "copy"})
            assert forked.thread_id == name
            assert forked.source == "fork"
            assert forked.parent_id is None
            assert forked.step == src.checkpoint.step
            assert forked.metadata["forked_from"] == {
                "thread_id": T,
                "checkpoint_ns": "",
                "checkpoint_id": src.checkpoint.id,
            }
            assert forked.metadata["source"] == "fork"
            assert forked.metadata["note"] == "copy"
            assert forked.metadata["user"] == "ann"
            assert forked.values == src.checkpoint.values

            got = await cp.get_tuple(cfg(name))
            assert got is not None
            assert got.checkpoint.id == forked.id
            assert got.checkpoint.source == "fork"
            assert got.checkpoint.metadata == forked.metadata
            assert got.checkpoint.values == src.checkpoint.values
            assert got.checkpoint.tasks == src.checkpoint.tasks
            assert got.pending_writes == src.pending_writes
            assert got.pending_writes  # there were some to copy
            assert ids(await cp.list(cfg(name))) == [forked.id]

        # The source thread is unchanged.
        assert ids(await cp.list(cfg(T))) == [c1.id, c0.id]
        again = await cp.get_tuple(cfg(T))
        assert again is not None
        assert again.checkpoint.values == {"items": [1, 2, 3], "x": {"k": 1}}
        assert again.pending_writes == src_head.pending_writes
        assert "forked_from" not in again.checkpoint.metadata

        # The fork is independent from its source.
        forked_head = await head_id(cp, "fork-head")
        assert forked_head is not None
        fork_tip = await cp.get_tuple(cfg("fork-head"))
        assert fork_tip is not None
        await cp.put(
            "fork-head",
            "",
            draft({"x": "changed"}, parent=fork_tip.checkpoint, step=2),
            expected_head=forked_head,
        )
        assert (await cp.get(cfg(T)))["channel_values"] == {"items": [1, 2, 3], "x": {"k": 1}}

        # Forking into a thread that exists is refused, and changes nothing.
        with pytest.raises(CheckpointConflictError):
            await cp.fork(cfg(T), "fork-old")
        assert len(await cp.list(cfg("fork-old"))) == 1
        with pytest.raises(CheckpointNotFoundError):
            await cp.fork(cfg("nobody"), "fork-x")
        with pytest.raises(CheckpointNotFoundError):
            await cp.fork(cfg(T, str(uuid.uuid4())), "fork-y")
        assert await cp.get_tuple(cfg("fork-x")) is None
        assert await cp.get_tuple(cfg("fork-y")) is None

    # ------------------------------------------------------------------ thread operations

    async def test_delete_thread(self, cp: Driver) -> None:
        saved, _ = await grow(cp, 5, tasks=["t"])
        await cp.put_writes(T, "", saved[-1].id, "t", [("a", 1)], expected_head=saved[-1].id)
        await cp.put(T, CHILD, draft({"a": 1}), expected_head=None)
        _, other_expected = await grow(cp, 3, thread_id="other")

        await cp.delete_thread(T)
        assert await cp.get_tuple(cfg(T)) is None
        assert await cp.get_tuple(cfg(T, ns=CHILD)) is None
        assert await cp.list(cfg(T)) == []
        assert await cp.list(cfg(T, ns=CHILD)) == []
        with pytest.raises(CheckpointNotFoundError):
            await cp.get_tuple(cfg(T, saved[0].id))
        assert [t.thread_id for t in await cp.list_threads()] == ["other"]
        await assert_reconstructs(cp, other_expected, thread_id="other")

        await cp.delete_thread(T)  # deleting a missing thread is a no-op
        await cp.delete_thread("never-existed")

        fresh = await cp.put(T, "", draft({"a": "again"}), expected_head=None)
        assert ids(await cp.list(cfg(T))) == [fresh.id]
        assert (await cp.get(cfg(T)))["channel_values"] == {"a": "again"}

    async def test_copy_thread(self, cp: Driver) -> None:
        saved, expected = await grow(cp, 12, tasks=["t"])
        await cp.put(
            T,
            "",
            draft({"z": 1}, parent=saved[-1], tasks=["t"]),
            expected_head=saved[-1].id,
            thread_metadata={"owner": "ann"},
        )
        head = await cp.get_tuple(cfg(T))
        assert head is not None
        await cp.put_writes(
            T, "", head.checkpoint.id, "t", [("items", ["w"])], expected_head=head.checkpoint.id
        )
        await cp.put(T, CHILD, draft({"child": [1]}), expected_head=None)

        await cp.copy_thread(T, "copy")
        for ns in ("", CHILD):
            src = await cp.list(cfg(T, ns=ns))
            dst = await cp.list(cfg("copy", ns=ns))
            assert ids(dst) == ids(src)
            assert src
            for s, d in zip(src, dst, strict=True):
                assert d.checkpoint.thread_id == "copy"
                assert d.config["configurable"]["thread_id"] == "copy"
                for field in (
                    "ns",
                    "id",
                    "parent_id",
                    "seq",
                    "step",
                    "source",
                    "metadata",
                    "tasks",
                ):
                    assert getattr(d.checkpoint, field) == getattr(s.checkpoint, field), field
                assert d.checkpoint.values == s.checkpoint.values
                assert dict(d.checkpoint.refs) == dict(s.checkpoint.refs)
                assert d.pending_writes == s.pending_writes
                assert abs(d.checkpoint.created_at - s.checkpoint.created_at) < dt.timedelta(
                    milliseconds=1
                )
        copied = await cp.get_tuple(cfg("copy"))
        assert copied is not None
        assert copied.checkpoint.id == head.checkpoint.id
        assert copied.pending_writes == [PendingWrite("t", 0, "items", ["w"])]
        threads = {t.thread_id: t for t in await cp.list_threads()}
        assert threads["copy"].metadata == {"owner": "ann"}
        assert threads["copy"].head_id == head.checkpoint.id

        # Independent afterwards: writing to one never shows in the other.
        moved = await cp.put(
            "copy",
            "",
            draft({"z": 2}, parent=copied.checkpoint),
            expected_head=copied.checkpoint.id,
        )
        assert await head_id(cp, T) == head.checkpoint.id
        assert ((await cp.get(cfg(T)))["channel_values"] or {})["z"] == 1
        await cp.delete_thread(T)
        assert await head_id(cp, "copy") == moved.id
        await assert_reconstructs(cp, expected, thread_id="copy")

        # A target that exists is refused; a missing source is ThreadNotFoundError.
        await cp.put("taken", "", draft({"t": 1}), expected_head=None)
        with pytest.raises(ThreadlineError) as info:
            await cp.copy_thread("copy", "taken")
        assert "taken" in str(info.value)
        assert (await cp.get(cfg("taken")))["channel_values"] == {"t": 1}
        assert len(await cp.list(cfg("taken"))) == 1
        with pytest.raises(ThreadNotFoundError):
            await cp.copy_thread("no-such-thread", "new-target")
        assert await cp.get_tuple(cfg("new-target")) is None

    async def test_list_threads(self, cp: Driver) -> None:
        heads: dict[str, Checkpoint] = {}
        for name, meta in (
            ("a", {"owner": "ann", "tier": 1}),
            ("b", {"owner": "ann", "tier": 2}),
            ("c", {"owner": "cat", "tags": ["x", "y"]}),
        ):
            heads[name] = await cp.put(
                name, "", draft({"n": name}), expected_head=None, thread_metadata=meta
            )
            await asyncio.sleep(0.01)
        # An update without thread metadata keeps it, and moves "a" to the front.
        heads["a"] = await cp.put(
            "a", "", draft({"n": "a2"}, parent=heads["a"]), expected_head=heads["a"].id
        )
        await cp.put("d", "", draft({"n": "d"}), expected_head=None)  # no metadata
        await cp.put("d", CHILD, draft({"n": "d-child"}), expected_head=None)  # moves "d"
        heads["d"] = await cp.put(
            "d", "", draft({"n": "d2"}, parent=None), expected_head=await head_id(cp, "d")
        )

        threads = await cp.list_threads()
        assert [t.thread_id for t in threads] == ["d", "a", "c", "b"]
        by_id = {t.thread_id: t for t in threads}
        assert by_id["a"].metadata == {"owner": "ann", "tier": 1}
        assert by_id["c"].metadata == {"owner": "cat", "tags": ["x", "y"]}
        assert by_id["d"].metadata == {}
        for name, t in by_id.items():
            assert t.head_id == heads[name].id
            assert_utc(t.created_at)
            assert_utc(t.updated_at)
            assert t.created_at <= t.updated_at
            assert abs(t.updated_at - heads[name].created_at) < dt.timedelta(milliseconds=5)
            assert t.expires_at is None
        assert by_id["a"].created_at < by_id["b"].created_at < by_id["a"].updated_at

        async def names(**kwargs: Any) -> list[str]:
            return [t.thread_id for t in await cp.list_threads(**kwargs)]

        assert await names(limit=2) == ["d", "a"]
        assert await names(offset=1) == ["a", "c", "b"]
        assert await names(offset=1, limit=2) == ["a", "c"]
        assert await names(offset=10) == []
        assert await names(filter={"owner": "ann"}) == ["a", "b"]
        assert await names(filter={"owner": "ann"}, limit=1) == ["a"]
        assert await names(filter={"owner": "ann"}, offset=1) == ["b"]
        assert await names(filter={"owner": "ann", "tier": 2}) == ["b"]
        assert await names(filter={"tags": ["x", "y"]}) == ["c"]
        assert await names(filter={"tags": ["x"]}) == []
        assert await names(filter={"tier": "1"}) == []
        assert await names(filter={"owner": None}) == []

        # New thread metadata replaces the old (it is not merged).
        await cp.put(
            "b",
            "",
            draft({"n": "b2"}, parent=heads["b"]),
            expected_head=heads["b"].id,
            thread_metadata={"owner": "bob"},
        )
        assert (await cp.list_threads(limit=1))[0].metadata == {"owner": "bob"}
        assert await names(filter={"owner": "ann"}) == ["a"]

    async def test_prune_keeps_the_latest_per_namespace(self, cp: Driver) -> None:
        # One big snapshot, then small deltas on it: the kept checkpoints' delta chains all
        # start in checkpoints that prune removes. "const" is written once, by the first one.
        tasks = ["t"]
        first = await cp.put(
            T,
            "",
            draft({"items": [item(i) for i in range(40)], "const": {"k": "v"}}, tasks=tasks),
            expected_head=None,
        )
        await cp.put_writes(T, "", first.id, "t", [("items", "old")], expected_head=first.id)
        saved, expected = await grow(
            cp, 9, head=first, value=[item(i) for i in range(40)], tasks=tasks
        )
        main = [first, *saved]
        for values in expected.values():
            values["const"] = {"k": "v"}
        await cp.put_writes(T, "", main[-1].id, "t", [("items", "new")], expected_head=main[-1].id)
        child, _ = await grow(cp, 4, ns=CHILD)
        other, _ = await grow(cp, 5, thread_id="other")

        kept = main[-3:]
        assert all(c.refs["items"].chain_bytes > 0 for c in kept)
        assert all(c.refs["const"].writer == first.id for c in kept)

        removed = await cp.prune([T, "other", "no-such-thread"], keep_last=3)
        assert removed == 7 + 1 + 2

        assert ids(await cp.list(cfg(T))) == [c.id for c in kept[::-1]]
        assert ids(await cp.list(cfg(T, ns=CHILD))) == [c.id for c in child[-3:][::-1]]
        assert ids(await cp.list(cfg("other"))) == [c.id for c in other[-3:][::-1]]
        for c in main[:-3]:
            with pytest.raises(CheckpointNotFoundError):
                await cp.get_tuple(cfg(T, c.id))
        await assert_reconstructs(cp, {c.id: expected[c.id] for c in kept})
        head = await cp.get_tuple(cfg(T))
        assert head is not None
        assert head.pending_writes == [PendingWrite("t", 0, "items", "new")]

        # The thread goes on from its pruned history, with deltas on the kept versions.
        _, more_expected = await grow(cp, 3, head=main[-1], value=expected[main[-1].id]["items"])
        for values in more_expected.values():
            values["const"] = {"k": "v"}
        await assert_reconstructs(cp, more_expected)
        assert await cp.prune([T], keep_last=3) == 3
        await assert_reconstructs(cp, more_expected)
        assert await cp.prune([T], keep_last=3) == 0

        with pytest.raises(ValueError):
            await cp.prune([T], keep_last=0)
        with pytest.raises(ValueError):
            await cp.prune([T], keep_last=-1)
        assert len(await cp.list(cfg(T))) == 3

    async def test_ttl_and_sweep_expired(self, make_cp: MakeDriver) -> None:
        cp = await make_cp(ttl=0.2, auto_sweep=False)
        await cp.setup()  # not inside the first put's 0.2 s
        old = await cp.put("old", "", draft({"a": 1}), expected_head=None)
        kept = await cp.put("kept", "", draft({"a": 1}), expected_head=None)
        info = {t.thread_id: t for t in await cp.list_threads()}
        expires = info["old"].expires_at
        assert expires is not None
        assert_utc(expires)
        assert abs((expires - info["old"].updated_at).total_seconds() - 0.2) < 0.01
        assert await cp.sweep_expired() == 0

        await asyncio.sleep(0.3)
        await cp.put("kept", "", draft({"a": 2}, parent=kept), expected_head=kept.id)
        assert await cp.sweep_expired() == 1
        assert await cp.get_tuple(cfg("old")) is None
        assert await cp.list(cfg("old")) == []
        with pytest.raises(CheckpointNotFoundError):
            await cp.get_tuple(cfg("old", old.id))
        assert (await cp.get(cfg("kept")))["channel_values"] == {"a": 2}
        assert [t.thread_id for t in await cp.list_threads()] == ["kept"]
        assert await cp.sweep_expired() == 0

    async def test_auto_sweep_after_commits(
        self, make_cp: MakeDriver, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(checkpoint_base, "SWEEP_INTERVAL", 0.0)
        cp = await make_cp(ttl=0.2)
        await cp.put("old", "", draft({"a": 1}), expected_head=None)
        await asyncio.sleep(0.3)
        await cp.put("new", "", draft({"a": 1}), expected_head=None)
        assert await cp.get_tuple(cfg("old")) is None
        assert (await cp.get(cfg("new")))["channel_values"] == {"a": 1}

    async def test_saver_without_ttl_keeps_threads(self, cp: Driver) -> None:
        await cp.put(T, "", draft({"a": 1}), expected_head=None)
        assert await cp.sweep_expired() == 0
        assert (await cp.get(cfg(T)))["channel_values"] == {"a": 1}

    @pytest.mark.parametrize("ttl", [0, -1.0])
    async def test_ttl_must_be_positive(self, make_cp: MakeDriver, ttl: float) -> None:
        with pytest.raises(ValueError):
            await make_cp(ttl=ttl)

    # ------------------------------------------------------------------ values

    async def test_values_of_many_types_round_trip(self, cp: Driver) -> None:
        values = typed_values()
        delta = [values["datetime_utc"], values["dataclass"], values["tuple"], b"\x00"]
        log = [uuid.UUID(int=i) for i in range(20)]  # big enough for the delta to stay one
        c1 = await cp.put(
            T,
            "",
            draft(
                {**values, "everything": values, "log": log},
                metadata={"when": values["datetime_utc"], "ids": values["tuple"]},
                tasks=[values["model"], values["set"]],
            ),
            expected_head=None,
            thread_metadata={"since": values["date"], "color": values["enum"]},
        )
        c2 = await cp.put(
            T,
            "",
            draft(
                {"log": ChannelChange([*log, *delta], appended=delta)},
                parent=c1,
                tasks=[values["model"], values["set"]],
            ),
            expected_head=c1.id,
        )
        assert c2.refs["log"].chain_bytes > 0
        await cp.put_writes(
            T, "", c2.id, "t", [(k, v) for k, v in values.items()], expected_head=c2.id
        )

        got = await cp.get_tuple(cfg(T))
        assert got is not None
        for key, want in values.items():
            assert_same_typed(got.checkpoint.values[key], want)
            assert_same_typed(got.checkpoint.values["everything"][key], want)
        assert_same_typed(got.checkpoint.values["log"], [*log, *delta])
        first = await cp.get_tuple(cfg(T, c1.id))
        assert first is not None
        assert_same_typed(first.checkpoint.metadata["when"], values["datetime_utc"])
        assert_same_typed(first.checkpoint.metadata["ids"], values["tuple"])
        assert_same_typed(first.checkpoint.tasks, [values["model"], values["set"]])
        assert_same_typed(got.checkpoint.tasks, [values["model"], values["set"]])
        assert [(w.channel, w.idx) for w in got.pending_writes] == [
            (k, i) for i, k in enumerate(values)
        ]
        for w in got.pending_writes:
            assert_same_typed(w.value, values[w.channel])
        listed = await cp.list(cfg(T))
        assert listed[0].checkpoint.values == got.checkpoint.values
        assert listed[1].checkpoint.values["log"] == log
        (thread,) = await cp.list_threads(filter={"color": values["enum"]})
        assert_same_typed(thread.metadata["since"], values["date"])

    async def test_thread_id_must_be_a_non_empty_string(self, cp: Driver) -> None:
        await cp.put(T, "", draft({"a": 1}), expected_head=None)
        for bad in (42, "", None):
            config = {"configurable": {"thread_id": bad}}
            with pytest.raises(ValueError, match=r"str\(\.\.\.\)"):
                await cp.get_tuple(config)
            with pytest.raises(ValueError, match=r"str\(\.\.\.\)"):
                await cp.list(config)
            with pytest.raises(ValueError, match=r"str\(\.\.\.\)"):
                await cp.list(cfg(T), before=config)
            with pytest.raises(ValueError, match=r"str\(\.\.\.\)"):
                await cp.put(bad, "", draft({"a": 1}), expected_head=None)
            with pytest.raises(ValueError, match=r"str\(\.\.\.\)"):
                await cp.fork(cfg(T), bad)
            with pytest.raises(ValueError, match=r"str\(\.\.\.\)"):
                await cp.copy_thread(T, bad)
        with pytest.raises(ValueError, match="thread_id"):
            await cp.get_tuple({"configurable": {}})
        assert [t.thread_id for t in await cp.list_threads()] == [T]

    async def test_corrupt_stored_bytes_name_thread_and_checkpoint(self, cp: Driver) -> None:
        c0 = await cp.put(T, "", draft({"a": [1], "b": "fine"}), expected_head=None)
        c1 = await cp.put(
            T, "", draft({"a": ChannelChange([1, 2], appended=[2])}, parent=c0), expected_head=c0.id
        )
        c2 = await cp.put(T, "", draft({"a": [1, 2, 3]}, parent=c1), expected_head=c1.id)
        assert c1.refs["a"].chain_bytes > 0  # c1's value builds on c0's
        await cp.corrupt(T, "a", c0.id)

        got = await cp.get_tuple(cfg(T))  # c2 holds a snapshot of its own
        assert got is not None
        assert got.checkpoint.values == {"a": [1, 2, 3], "b": "fine"}
        for broken in (c1, c0):
            with pytest.raises(CorruptCheckpointError) as info:
                await cp.get_tuple(cfg(T, broken.id))
            message = str(info.value)
            assert T in message
            assert broken.id in message
            assert "'a'" in message
        with pytest.raises(CorruptCheckpointError) as info:
            await cp.list(cfg(T))
        assert T in str(info.value)
        assert c1.id in str(info.value)  # the first one listed that cannot be read
        assert ids(await cp.list(cfg(T), limit=1)) == [c2.id]

    @pytest.mark.parametrize("serde_options", SERDE_OPTIONS.values(), ids=SERDE_OPTIONS.keys())
    async def test_compressed_and_encrypted_values_round_trip(
        self, make_cp: MakeDriver, serde_options: dict[str, Any]
    ) -> None:
        cp = await make_cp(serde=MsgpackSerializer(**serde_options))
        big = ["y" * 3000, {"blob": os.urandom(2000)}]
        first = await cp.put(
            T,
            "",
            draft({"big": big, "typed": typed_values()}, metadata={"secret": "s"}, tasks=["t"]),
            expected_head=None,
            thread_metadata={"owner": "ann"},
        )
        await cp.put_writes(T, "", first.id, "t", [("big", big)], expected_head=first.id)
        saved, expected = await grow(cp, 25, head=first)
        for values in expected.values():
            values.update(big=big, typed=typed_values())
        await assert_reconstructs(cp, expected)
        (third,) = await cp.list(cfg(T), filter={"step": 3})
        assert third.checkpoint.id == saved[2].id
        assert third.checkpoint.values == expected[saved[2].id]
        got = await cp.get_tuple(cfg(T, first.id))
        assert got is not None
        assert got.checkpoint.values == {"big": big, "typed": typed_values()}
        assert got.checkpoint.metadata == {"secret": "s"}
        assert got.pending_writes == [PendingWrite("t", 0, "big", big)]
        (thread,) = await cp.list_threads(filter={"owner": "ann"})
        assert thread.metadata == {"owner": "ann"}

        await cp.fork(cfg(T, first.id), "forked")
        fork_got = await cp.get_tuple(cfg("forked"))
        assert fork_got is not None
        assert fork_got.checkpoint.values == got.checkpoint.values
        assert fork_got.pending_writes == got.pending_writes
        await cp.copy_thread(T, "copied")
        await assert_reconstructs(cp, expected, thread_id="copied")

    # ------------------------------------------------------------------ put(before=)

    @staticmethod
    def _input_and_step(
        parent: Checkpoint | None, value: list[str], new: list[str]
    ) -> tuple[CheckpointDraft, CheckpointDraft]:
        step = -1 if parent is None else parent.step + 1
        before = draft(
            parent=parent,
            step=step,
            source="input",
            metadata={"source": "input", "step": step},
            tasks=[{"id": "start", "name": "__start__"}],
        )
        before.id = new_checkpoint_id()
        change = ChannelChange(value + new, appended=new) if value else ChannelChange(new)
        after = draft({"items": change}, parent=parent, step=step + 1, tasks=[{"id": "n"}])
        after.parent_id = before.id
        return before, after

    async def test_put_commits_the_checkpoint_before_it_in_one_go(self, cp: Driver) -> None:
        before, after = self._input_and_step(None, [], ["a"])
        first = await cp.put(T, "", after, expected_head=None, before=before)
        before2, after2 = self._input_and_step(first, ["a"], ["b"])
        second = await cp.put(T, "", after2, expected_head=first.id, before=before2)
        history = await cp.list(cfg(T))
        assert ids(history) == [second.id, before2.id, first.id, before.id]
        assert [t.checkpoint.seq for t in history] == [4, 3, 2, 1]
        assert [t.checkpoint.source for t in history] == ["loop", "input", "loop", "input"]
        assert [t.checkpoint.step for t in history] == [2, 1, 0, -1]
        assert [t.checkpoint.values for t in history] == [
            {"items": ["a", "b"]},
            {"items": ["a"]},  # the values before the input: its parent's
            {"items": ["a"]},
            {},
        ]
        assert [t.checkpoint.parent_id for t in history] == [before2.id, first.id, before.id, None]
        assert history[1].checkpoint.tasks == [{"id": "start", "name": "__start__"}]
        head = await cp.get_tuple(cfg(T))
        assert head is not None and head.checkpoint.id == second.id
        # The step that applied an input is found from the input checkpoint.
        assert await cp.child_id(T, "", history[1].checkpoint) == second.id
        assert await cp.child_id(T, "", history[3].checkpoint) == first.id
        assert await cp.child_id(T, "", history[0].checkpoint) is None
        # (Any checkpoint whose child got the next sequence number has one.)
        assert await cp.child_id(T, "", history[2].checkpoint) == before2.id

    async def test_put_with_before_stores_neither_on_conflict(self, cp: Driver) -> None:
        first = await cp.put(T, "", draft({"items": ["a"]}), expected_head=None)
        await cp.put(T, "", draft({"items": ["x"]}, parent=first), expected_head=first.id)
        before, after = self._input_and_step(first, ["a"], ["b"])
        with pytest.raises(CheckpointConflictError):
            await cp.put(T, "", after, expected_head=first.id, before=before)
        assert len(await cp.list(cfg(T))) == 2
        with pytest.raises(CheckpointNotFoundError):
            await cp.get_tuple(cfg(T, before.id))
        other = "other-thread"
        before, after = self._input_and_step(None, [], ["c"])
        saved = await cp.put(other, "", after, expected_head=None, before=before)
        before2, after2 = self._input_and_step(None, [], ["d"])
        with pytest.raises(CheckpointConflictError):
            await cp.put(other, "", after2, expected_head=None, before=before2)
        assert ids(await cp.list(cfg(other))) == [saved.id, before.id]

    async def test_put_refuses_a_before_that_changes_channels(self, cp: Driver) -> None:
        before, after = self._input_and_step(None, [], ["a"])
        before.changes = {"items": ChannelChange(["z"])}
        with pytest.raises(ValueError, match="change no channel"):
            await cp.put(T, "", after, expected_head=None, before=before)
        before, after = self._input_and_step(None, [], ["a"])
        after.parent_id = None
        with pytest.raises(ValueError, match="its parent"):
            await cp.put(T, "", after, expected_head=None, before=before)
        assert await cp.list(cfg(T)) == []


class TestSyncContract(CheckpointerContract):
    """The contract on every sync backend, through its sync methods."""

    @pytest.fixture
    def make_cp(
        self, make_saver: Callable[..., BaseCheckpointSaver], sync_backend: Backend
    ) -> MakeDriver:
        async def make(**options: Any) -> Driver:
            return Driver(make_saver(**options), sync_backend)

        return make
