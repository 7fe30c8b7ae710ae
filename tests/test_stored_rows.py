"""Crafted rows on every backend: malformed but decodable rows, deep values, bombs, heads
naming missing checkpoints. Each must raise CorruptCheckpointError naming the thread and the
checkpoint (docs/security.md): never a raw TypeError, KeyError, OverflowError or a crash.

Rows are planted with raw SQL (or, for the memory saver, by replacing its stored rows), as
anyone with access to the database could.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import sqlite3
import uuid
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import msgpack
import pytest

from tests.backends import postgres_url
from threadline.checkpoint.base import BaseCheckpointSaver
from threadline.checkpoint.memory import InMemorySaver
from threadline.checkpoint.sqlite import SqliteSaver
from threadline.checkpoint.types import ChannelChange, Checkpoint, CheckpointDraft, VersionRef
from threadline.errors import CorruptCheckpointError

T = "victim"


def cfg(thread_id: str = T, checkpoint_id: str | None = None) -> dict[str, Any]:
    configurable: dict[str, Any] = {"thread_id": thread_id, "checkpoint_ns": ""}
    if checkpoint_id is not None:
        configurable["checkpoint_id"] = checkpoint_id
    return {"configurable": configurable}


def draft(changes: dict[str, Any], parent: Checkpoint | None = None, **kw: Any) -> CheckpointDraft:
    return CheckpointDraft(
        step=kw.pop("step", 0),
        source="loop",
        metadata={"step": 0},
        tasks=kw.pop("tasks", []),
        changes={
            k: v if isinstance(v, ChannelChange) else ChannelChange(v) for k, v in changes.items()
        },
        parent_id=None if parent is None else parent.id,
        base_refs={} if parent is None else parent.refs,
    )


def frame(value: Any) -> bytes:
    return b"\x01" + msgpack.packb(value)


def deep_tuples(depth: int) -> bytes:
    body = msgpack.packb(1)
    for _ in range(depth):
        body = msgpack.packb(msgpack.ExtType(1, msgpack.packb([msgpack.ExtType(1, body)])))
    return b"\x01" + body


ZLIB_BOMB = b"\x41" + zlib.compress(b"\x00" * (100 << 20), 9)


# ---------------------------------------------------------------------- planting rows


class Planter:
    """Overwrites stored fields of one backend's rows. ``typed`` says whether the backend's
    columns are typed (PostgreSQL): then only values of the column's type can be planted."""

    typed = False

    def checkpoint(self, checkpoint_id: str, column: str, value: Any) -> None:
        raise NotImplementedError

    def writes(self, checkpoint_id: str, column: str, value: Any) -> None:
        raise NotImplementedError

    def version(self, channel: str, writer: str, value: bytes) -> None:
        raise NotImplementedError

    def head(self, checkpoint_id: str) -> None:
        raise NotImplementedError

    def thread_created_at(self, value: Any) -> None:
        raise NotImplementedError


class MemoryPlanter(Planter):
    def __init__(self, saver: InMemorySaver) -> None:
        self.thread = saver._threads[T]

    def checkpoint(self, checkpoint_id: str, column: str, value: Any) -> None:
        rows = self.thread.checkpoints
        rows[checkpoint_id] = dataclasses.replace(rows[checkpoint_id], **{column: value})

    def writes(self, checkpoint_id: str, column: str, value: Any) -> None:
        stored = self.thread.writes[("", checkpoint_id)]
        for key, row in stored.items():
            stored[key] = dataclasses.replace(row, **{column: value})

    def version(self, channel: str, writer: str, value: bytes) -> None:
        versions = self.thread.versions
        versions[(channel, writer)] = dataclasses.replace(versions[(channel, writer)], data=value)

    def head(self, checkpoint_id: str) -> None:
        self.thread.heads[""] = checkpoint_id

    def thread_created_at(self, value: Any) -> None:
        self.thread.created_at = value


class SqlitePlanter(Planter):
    def __init__(self, saver: SqliteSaver) -> None:
        self.saver = saver

    def _run(self, sql: str, params: tuple[Any, ...]) -> None:
        column = sql.split(" SET ")[1].split()[0]
        if column in ("source", "ns", "task_id", "channel") and type(params[0]) is not str:
            pytest.skip("SQLite's TEXT affinity stores this value as text")
        with self.saver._lock:
            try:
                assert self.saver.conn.execute(sql, params).rowcount >= 1, sql
            except sqlite3.IntegrityError as exc:  # e.g. NaN, which SQLite stores as NULL
                pytest.skip(f"SQLite does not store this value: {exc}")

    def checkpoint(self, checkpoint_id: str, column: str, value: Any) -> None:
        sql = f"UPDATE checkpoints SET {column} = ? WHERE checkpoint_id = ?"
        self._run(sql, (value, uuid.UUID(checkpoint_id).bytes))

    def writes(self, checkpoint_id: str, column: str, value: Any) -> None:
        sql = f"UPDATE writes SET {column} = ? WHERE checkpoint_id = ?"
        self._run(sql, (value, uuid.UUID(checkpoint_id).bytes))

    def version(self, channel: str, writer: str, value: bytes) -> None:
        sql = "UPDATE versions SET data = ? WHERE channel = ? AND writer = ?"
        self._run(sql, (value, channel, uuid.UUID(writer).bytes))

    def head(self, checkpoint_id: str) -> None:
        self._run("UPDATE heads SET checkpoint_id = ?", (uuid.UUID(checkpoint_id).bytes,))

    def thread_created_at(self, value: Any) -> None:
        self._run("UPDATE threads SET created_at = ?", (value,))


class PostgresPlanter(Planter):
    typed = True
    _COLUMNS = {"checkpoint_id": "id"}

    def __init__(self, saver: Any) -> None:
        self.schema = saver.schema

    def _run(self, table: str, assignment: str, where: str, params: tuple[Any, ...]) -> None:
        import psycopg
        from psycopg import sql

        query = sql.SQL(f"UPDATE {{}} SET {assignment} WHERE {where}").format(
            sql.Identifier(self.schema, f"threadline_{table}")
        )
        with psycopg.connect(postgres_url(), autocommit=True) as conn:
            assert conn.execute(query, params).rowcount >= 1, (table, assignment)

    def checkpoint(self, checkpoint_id: str, column: str, value: Any) -> None:
        self._run("checkpoints", f"{column} = %s", "id = %s", (value, checkpoint_id))

    def writes(self, checkpoint_id: str, column: str, value: Any) -> None:
        self._run("writes", f"{column} = %s", "checkpoint_id = %s", (value, checkpoint_id))

    def version(self, channel: str, writer: str, value: bytes) -> None:
        self._run("versions", "data = %s", "channel = %s AND writer = %s", (value, channel, writer))

    def head(self, checkpoint_id: str) -> None:
        self._run("heads", "head = %s", "thread_id = %s", (checkpoint_id, T))

    def thread_created_at(self, value: Any) -> None:
        self._run("threads", "created_at = %s", "thread_id = %s", (value, T))


@contextlib.contextmanager
def _memory() -> Iterator[tuple[BaseCheckpointSaver, Callable[[], Planter]]]:
    saver = InMemorySaver()
    yield saver, lambda: MemoryPlanter(saver)


@contextlib.contextmanager
def _sqlite(tmp_path: Any) -> Iterator[tuple[BaseCheckpointSaver, Callable[[], Planter]]]:
    with SqliteSaver.from_conn_string(str(tmp_path / "t.db")) as saver:
        yield saver, lambda: SqlitePlanter(saver)


@contextlib.contextmanager
def _postgres() -> Iterator[tuple[BaseCheckpointSaver, Callable[[], Planter]]]:
    from tests.backends import _postgres as make

    with make() as saver:
        yield saver, lambda: PostgresPlanter(saver)


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def setup(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[tuple[Any, Planter, dict]]:
    """A saver holding thread T: c1, then c2 (the head, with tasks and a pending write)."""
    ctx = {"memory": _memory, "sqlite": lambda: _sqlite(tmp_path), "postgres": _postgres}
    with ctx[request.param]() as (saver, planter):
        c1 = saver.put(T, "", draft({"a": [1], "b": "x"}), expected_head=None)
        c2 = saver.put(
            T,
            "",
            draft({"a": ChannelChange([1, 2], appended=[2])}, c1, tasks=["t"]),
            expected_head=c1.id,
        )
        saver.put_writes(T, "", c2.id, "task", [("a", [3])], expected_head=c2.id)
        yield saver, planter(), {"c1": c1, "c2": c2}


def reads(saver: BaseCheckpointSaver, checkpoint_id: str | None = None) -> list[Callable[[], Any]]:
    return [
        lambda: saver.get_tuple(cfg(T, checkpoint_id)),
        lambda: saver.load(T, "", checkpoint_id, shared=True),
        lambda: list(saver.list(cfg(T))),
    ]


def assert_corrupt(call: Callable[[], Any], *needles: str) -> str:
    with pytest.raises(CorruptCheckpointError) as info:
        call()
    message = str(info.value)
    for needle in needles:
        assert needle in message, (needle, message)
    return message


# ---------------------------------------------------------------------- the cases

CHECKPOINT_VALUES: list[tuple[str, Any, bool]] = [
    # column, value, plantable in a typed (PostgreSQL) column
    ("metadata", frame([1, 2]), True),  # decodes, but not a dict
    ("metadata", frame("text"), True),
    ("tasks", frame({"a": 1}), True),  # decodes, but not a list
    ("tasks", deep_tuples(120), True),
    ("metadata", ZLIB_BOMB, True),
    ("created_at", math.nan, True),
    ("created_at", math.inf, True),
    ("created_at", 1e300, True),
    ("created_at", -1e18, True),
    ("created_at", "yesterday", False),
    ("created_at", b"\x00", False),
    ("step", "two", False),
    ("seq", 1.5, False),
    ("source", 12, False),
    ("ns", 3, False),
    ("metadata", "not bytes", False),
    ("metadata", 42, False),
]


@pytest.mark.parametrize(("column", "value", "typed_ok"), CHECKPOINT_VALUES)
def test_malformed_checkpoint_fields(setup: Any, column: str, value: Any, typed_ok: bool) -> None:
    saver, planter, ids = setup
    if planter.typed and not typed_ok:
        pytest.skip("the column's type does not admit this value")
    head = ids["c2"].id
    planter.checkpoint(head, column, value)
    for call in reads(saver):
        assert_corrupt(call, T, head)


@pytest.mark.parametrize(
    ("column", "value", "typed_ok"),
    [
        ("data", frame([1]) + b"\x00", True),
        ("data", deep_tuples(120), True),
        ("data", ZLIB_BOMB, True),
        ("data", "text", False),
        ("task_id", 7, False),
        ("idx", "first", False),
        ("channel", None, False),
    ],
)
def test_malformed_pending_writes(setup: Any, column: str, value: Any, typed_ok: bool) -> None:
    saver, planter, ids = setup
    if planter.typed and not typed_ok:
        pytest.skip("the column's type does not admit this value")
    head = ids["c2"].id
    planter.writes(head, column, value)
    for call in reads(saver):
        assert_corrupt(call, T, head)


@pytest.mark.parametrize(
    "data",
    [
        deep_tuples(120),
        b"\x01" + b"\x91" * 700 + b"\x01",
        ZLIB_BOMB,
        b"\x41" + zlib.compress(msgpack.packb(["x" * 100_000])),  # more than was recorded
        frame([1]) + b"x",
        b"",
    ],
    ids=["deep-tuples", "deep-lists", "zlib-bomb", "past-recorded-size", "extra-bytes", "empty"],
)
def test_malformed_version_data(setup: Any, data: bytes) -> None:
    saver, planter, ids = setup
    c1, c2 = ids["c1"], ids["c2"]
    planter.version("a", c1.id, data)  # the snapshot c2's delta builds on
    saver._cache.clear()  # the commits left the values warm: read cold
    for call in reads(saver):
        assert_corrupt(call, T, c2.id, "'a'")


def test_head_naming_a_missing_checkpoint_is_an_error(setup: Any) -> None:
    saver, planter, _ = setup
    missing = str(uuid.uuid4())
    planter.head(missing)
    assert_corrupt(lambda: saver.get_tuple(cfg(T)), T, missing)
    assert_corrupt(lambda: saver.load(T, "", shared=True), T, missing)


def test_bad_thread_timestamps(setup: Any) -> None:
    saver, planter, _ = setup
    planter.thread_created_at(math.nan)
    assert_corrupt(saver.list_threads, T)


# ---------------------------------------------------------------------- the value cache


def test_a_warm_cache_never_serves_another_threads_version() -> None:
    saver = InMemorySaver()
    alice = saver.put("alice", "", draft({"secret": "alice's"}), expected_head=None)
    mallory = saver.put("mallory", "", draft({"secret": "mallory's"}), expected_head=None)
    assert saver.load("alice", "", shared=True) is not None  # alice's value is in the cache
    thread = saver._threads["mallory"]
    row = thread.checkpoints[mallory.id]
    thread.checkpoints[mallory.id] = dataclasses.replace(
        row, refs={"secret": VersionRef(alice.id, 10, 0)}
    )
    for shared in (True, False):
        load = functools.partial(saver.load, "mallory", "", shared=shared)
        assert_corrupt(load, "mallory", "missing")


def test_cache_charges_decoded_sizes() -> None:
    saver = InMemorySaver(cache_bytes=1 << 20)
    big = ["x" * 100] * 20_000  # compresses to almost nothing; ~2.2 MB once decoded
    c = saver.put(T, "", draft({"big": big}), expected_head=None)
    assert len(saver._threads[T].versions[("big", c.id)].data) < 50_000
    assert saver._cache._bytes > 2_000_000  # charged as decoded when the commit cached it
    saver._cache.clear()
    assert saver.load(T, "", shared=True) is not None
    assert saver._cache._bytes > 2_000_000  # and when a cold read decoded it
    saver.put("other", "", draft({"small": [1]}), expected_head=None)
    assert (T, "big", c.id) not in saver._cache  # over the bound: evicted for the next entry
    assert saver._cache._bytes <= 1 << 20
