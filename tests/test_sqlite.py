"""SQLite-specific behaviour of SqliteSaver and AsyncSqliteSaver.

The shared checkpointer contract runs on both through ``backends.BACKENDS``; this module covers
what only a database file has: WAL, persistence, connection ownership, several connections and
processes on one file, schema setup and migrations, corrupt rows and encryption at rest.
"""

from __future__ import annotations

import asyncio
import itertools
import multiprocessing
import os
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypedDict

import aiosqlite
import pytest

from threadline.checkpoint.serde import MsgpackSerializer
from threadline.checkpoint.sqlite import SqliteSaver, _sql
from threadline.checkpoint.sqlite.aio import AsyncSqliteSaver
from threadline.checkpoint.types import ChannelChange, Checkpoint, CheckpointDraft
from threadline.errors import (
    CheckpointConflictError,
    CheckpointNotFoundError,
    CorruptCheckpointError,
    SchemaMissingError,
    SchemaVersionError,
    ThreadlineError,
)
from threadline.graph import END, START, StateGraph

T = "thread-1"
BAD = b"\xc1\xc1 not a value \xc1"


ALL_VERSIONS = [(v,) for v, _ in _sql.MIGRATIONS]


def cfg(thread_id: str = T, checkpoint_id: str | None = None) -> dict[str, Any]:
    configurable: dict[str, Any] = {"thread_id": thread_id, "checkpoint_ns": ""}
    if checkpoint_id is not None:
        configurable["checkpoint_id"] = checkpoint_id
    return {"configurable": configurable}


def draft(changes: dict[str, Any], parent: Checkpoint | None = None, **kw: Any) -> CheckpointDraft:
    return CheckpointDraft(
        step=kw.pop("step", 0 if parent is None else parent.step + 1),
        source=kw.pop("source", "loop"),
        metadata=kw.pop("metadata", {}),
        tasks=kw.pop("tasks", []),
        changes={
            k: v if isinstance(v, ChannelChange) else ChannelChange(v) for k, v in changes.items()
        },
        parent_id=None if parent is None else parent.id,
        base_refs={} if parent is None else parent.refs,
    )


def append(saver: SqliteSaver, head: Checkpoint | None, items: list[Any], new: Any) -> Checkpoint:
    """Commit ``items + [new]`` to channel "items" as a delta on ``head``."""
    return saver.put(
        T,
        "",
        draft({"items": ChannelChange([*items, new], appended=[new])}, head),
        expected_head=None if head is None else head.id,
    )


@pytest.fixture
def path(tmp_path: Path) -> str:
    return str(tmp_path / "checkpoints.db")


@pytest.fixture
def saver(path: str) -> Iterator[SqliteSaver]:
    with SqliteSaver.from_conn_string(path) as s:
        yield s


def raw(path: str, sql: str, params: Any = ()) -> list[Any]:
    """Run ``sql`` on a connection of its own (committed at once)."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


# ---------------------------------------------------------------------- connections, files


def test_wal_mode_and_pragmas(path: str) -> None:
    with SqliteSaver.from_conn_string(path) as saver:
        saver.setup()
        assert saver.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert saver.conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
        assert saver.conn.execute("PRAGMA busy_timeout").fetchone()[0] == 30000
    with SqliteSaver.from_conn_string(path, synchronous="full", busy_timeout=2.5) as saver:
        saver.setup()
        assert saver.conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert saver.conn.execute("PRAGMA busy_timeout").fetchone()[0] == 2500
    assert raw(path, "PRAGMA journal_mode")[0][0] == "wal"  # stored in the file


def test_bad_options_and_connections(path: str) -> None:
    with pytest.raises(ValueError, match="synchronous"):
        SqliteSaver.from_conn_string(path, synchronous="sometimes")
    with pytest.raises(ValueError, match="busy_timeout"):
        SqliteSaver.from_conn_string(path, busy_timeout=-1)
    with pytest.raises(TypeError, match="AsyncSqliteSaver"):
        SqliteSaver("checkpoints.db")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="SqliteSaver"):
        AsyncSqliteSaver(sqlite3.connect(":memory:"))  # type: ignore[arg-type]


def test_data_persists_across_close_and_reopen(path: str) -> None:
    with SqliteSaver.from_conn_string(path) as saver:
        c1 = saver.put(
            T,
            "",
            draft({"items": ["a"], "n": 1}, metadata={"m": 1}, tasks=["next"]),
            expected_head=None,
            thread_metadata={"owner": "ann"},
        )
        c2 = saver.put(
            T,
            "",
            draft({"items": ChannelChange(["a", "b"], appended=["b"])}, c1),
            expected_head=c1.id,
        )
        saver.put_writes(T, "", c2.id, "task-1", [("n", 2)], expected_head=c2.id)
    with SqliteSaver.from_conn_string(path) as saver:
        got = saver.get_tuple(cfg())
        assert got is not None
        assert got.checkpoint.id == c2.id
        assert got.checkpoint.seq == 2
        assert got.checkpoint.values == {"items": ["a", "b"], "n": 1}
        assert [(w.task_id, w.channel, w.value) for w in got.pending_writes] == [("task-1", "n", 2)]
        assert [t.checkpoint.id for t in saver.list(cfg())] == [c2.id, c1.id]
        first = saver.get_tuple(cfg(T, c1.id))
        assert first is not None
        assert first.checkpoint.metadata == {"m": 1}
        assert first.checkpoint.tasks == ["next"]
        (thread,) = saver.list_threads()
        assert (thread.thread_id, thread.head_id, thread.metadata) == (T, c2.id, {"owner": "ann"})
        saver.put(T, "", draft({"n": 3}, got.checkpoint), expected_head=c2.id)


def test_from_conn_string_as_context_manager_closes_its_connection(path: str) -> None:
    with SqliteSaver.from_conn_string(path) as saver:
        saver.put(T, "", draft({"a": 1}), expected_head=None)
        conn = saver.conn
    with pytest.raises(sqlite3.ProgrammingError):
        conn.execute("SELECT 1")


def test_from_conn_string_as_plain_call_then_close(path: str) -> None:
    saver = SqliteSaver.from_conn_string(path)
    saver.put(T, "", draft({"a": 1}), expected_head=None)
    assert saver.get(cfg())["channel_values"] == {"a": 1}
    saver.close()
    with pytest.raises(sqlite3.ProgrammingError):
        saver.conn.execute("SELECT 1")


def test_in_memory_database() -> None:
    with SqliteSaver.from_conn_string(":memory:") as saver:
        saver.put(T, "", draft({"a": 1}), expected_head=None)
        assert saver.get(cfg())["channel_values"] == {"a": 1}


def test_a_connection_passed_in_is_used_and_never_closed(path: str) -> None:
    conn = sqlite3.connect(path, check_same_thread=False)  # default isolation_level ""
    conn.row_factory = sqlite3.Row  # the saver's cursors ignore it
    with SqliteSaver(conn) as saver:
        c1 = saver.put(T, "", draft({"a": 1}), expected_head=None)
        saver.put(T, "", draft({"a": 2}, c1), expected_head=c1.id)
        assert saver.get(cfg())["channel_values"] == {"a": 2}
        assert [t.thread_id for t in saver.list_threads()] == [T]
    assert conn.execute("SELECT count(*) AS n FROM checkpoints").fetchone()["n"] == 2
    assert not conn.in_transaction
    conn.close()


def test_many_python_threads_share_one_saver(saver: SqliteSaver) -> None:
    def work(n: int) -> list[Any]:
        head = None
        items: list[Any] = []
        for i in range(20):
            head = saver.put(
                f"t{n}",
                "",
                draft({"items": ChannelChange([*items, i], appended=[i])}, head),
                expected_head=None if head is None else head.id,
            )
            items.append(i)
            assert saver.get(cfg(f"t{n}"))["channel_values"] == {"items": items}
        return items

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(work, range(16)))
    assert results == [list(range(20))] * 16
    assert len(saver.list_threads()) == 16


# ---------------------------------------------------------------------- compare-and-swap


def test_two_savers_on_one_file_race_and_exactly_one_wins(path: str) -> None:
    with SqliteSaver.from_conn_string(path) as a, SqliteSaver.from_conn_string(path) as b:
        base = a.put(T, "", draft({"n": 0}), expected_head=None)
        won = a.put(T, "", draft({"n": 1}, base), expected_head=base.id)
        with pytest.raises(CheckpointConflictError) as info:
            b.put(T, "", draft({"n": 2}, base), expected_head=base.id)
        assert (info.value.expected, info.value.actual) == (base.id, won.id)
        with pytest.raises(CheckpointConflictError):
            b.put_writes(T, "", base.id, "task", [("n", 9)], expected_head=base.id)
        assert [t.checkpoint.id for t in b.list(cfg())] == [won.id, base.id]
        assert raw(path, "SELECT count(*) FROM versions")[0][0] == 2  # the loser's: none
        assert raw(path, "SELECT count(*) FROM writes")[0][0] == 0


def test_racing_threads_on_separate_connections(path: str) -> None:
    savers = [SqliteSaver.from_conn_string(path) for _ in range(6)]
    try:
        head = savers[0].put(T, "", draft({"n": 0}), expected_head=None)
        for step in range(1, 11):

            def attempt(
                s: SqliteSaver,
                step: int = step,
                parent: Checkpoint = head,
                barrier: threading.Barrier = threading.Barrier(len(savers)),
            ) -> Any:
                barrier.wait(timeout=30)
                try:
                    return s.put(T, "", draft({"n": step}, parent), expected_head=parent.id)
                except CheckpointConflictError:
                    return None

            with ThreadPoolExecutor(len(savers)) as pool:
                outcomes = list(pool.map(attempt, savers))
            winners = [c for c in outcomes if c is not None]
            assert len(winners) == 1, step
            head = winners[0]
        assert savers[1].get(cfg())["channel_values"] == {"n": 10}
        assert len(list(savers[2].list(cfg()))) == 11
    finally:
        for s in savers:
            s.close()


def _race_process(path: str, barrier: Any, steps: int, index: int, out: Any) -> None:
    wins: list[int] = []
    conflicts = 0
    try:
        with SqliteSaver.from_conn_string(path) as saver:
            for step in range(steps):
                barrier.wait(timeout=60)
                got = saver.load(T, "", None, shared=True)
                barrier.wait(timeout=60)  # every process read the same head
                head = None if got is None else got.checkpoint
                items = [] if got is None else got.checkpoint.values["items"]
                new = [index, step]
                try:
                    saver.put(
                        T,
                        "",
                        draft(
                            {"items": ChannelChange([*items, new], appended=[new])},
                            head,
                            step=step,
                            metadata={"writer": index},
                        ),
                        expected_head=None if head is None else head.id,
                    )
                    wins.append(step)
                except CheckpointConflictError:
                    conflicts += 1
    except BaseException as exc:  # report, and release the others, instead of hanging
        barrier.abort()
        out.put((index, repr(exc), 0))
        return
    out.put((index, wins, conflicts))


def test_processes_racing_on_one_file_exactly_one_winner_per_step(path: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    procs_n, steps = 4, 40
    barrier = ctx.Barrier(procs_n)
    out = ctx.Queue()
    procs = [
        ctx.Process(target=_race_process, args=(path, barrier, steps, i, out))
        for i in range(procs_n)
    ]
    for p in procs:
        p.start()
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert not [r for r in results if isinstance(r[1], str)], results
    winners_by_step: dict[int, list[int]] = {}
    for index, wins, conflicts in results:
        assert len(wins) + conflicts == steps
        for step in wins:
            winners_by_step.setdefault(step, []).append(index)
    assert sorted(winners_by_step) == list(range(steps))
    assert all(len(w) == 1 for w in winners_by_step.values()), winners_by_step

    with SqliteSaver.from_conn_string(path) as saver:
        history = list(saver.list(cfg()))
        assert len(history) == steps  # no lost or duplicate commits
        chain = list(reversed(history))
        assert [t.checkpoint.seq for t in chain] == list(range(1, steps + 1))
        assert chain[0].checkpoint.parent_id is None
        for prev, cur in itertools.pairwise(chain):
            assert cur.checkpoint.parent_id == prev.checkpoint.id
        assert history[0].checkpoint.values["items"] == [
            [winners_by_step[s][0], s] for s in range(steps)
        ]


# ---------------------------------------------------------------------- schema


def test_setup_is_idempotent(path: str) -> None:
    with SqliteSaver.from_conn_string(path) as saver:
        saver.setup()
        saver.setup()
        saver.put(T, "", draft({"a": 1}), expected_head=None)
        saver.setup()
        assert saver.get(cfg())["channel_values"] == {"a": 1}
    with SqliteSaver.from_conn_string(path, auto_setup=False) as saver:
        assert saver.get(cfg())["channel_values"] == {"a": 1}  # current schema: no setup needed
    assert raw(path, "SELECT version FROM threadline_migrations") == ALL_VERSIONS


def _setup_process(path: str, barrier: Any, out: Any) -> None:
    try:
        with SqliteSaver.from_conn_string(path) as saver:
            barrier.wait(timeout=60)
            saver.setup()
            saver.put(f"t{os.getpid()}", "", draft({"a": 1}), expected_head=None)
        out.put("ok")
    except BaseException as exc:  # report, don't hang the parent
        out.put(repr(exc))


def test_setup_from_several_processes_at_once(path: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    n = 5
    barrier = ctx.Barrier(n)
    out = ctx.Queue()
    procs = [ctx.Process(target=_setup_process, args=(path, barrier, out)) for _ in range(n)]
    for p in procs:
        p.start()
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert results == ["ok"] * n
    assert raw(path, "SELECT version FROM threadline_migrations") == ALL_VERSIONS
    assert raw(path, "SELECT count(*) FROM threads")[0][0] == n


def test_auto_setup_false_on_an_empty_file_says_to_call_setup(path: str) -> None:
    with SqliteSaver.from_conn_string(path, auto_setup=False) as saver:
        with pytest.raises(SchemaMissingError, match=r"setup\(\)"):
            saver.get_tuple(cfg())
        with pytest.raises(SchemaMissingError):
            saver.put(T, "", draft({"a": 1}), expected_head=None)
        assert raw(path, "SELECT name FROM sqlite_master") == []  # nothing was created
        saver.setup()
        saver.put(T, "", draft({"a": 1}), expected_head=None)
        assert saver.get(cfg())["channel_values"] == {"a": 1}


def test_a_newer_schema_version_says_to_upgrade(path: str) -> None:
    with SqliteSaver.from_conn_string(path) as saver:
        saver.put(T, "", draft({"a": 1}), expected_head=None)
    raw(path, "INSERT INTO threadline_migrations VALUES (?, 0)", (_sql.SCHEMA_VERSION + 1,))
    for options in ({}, {"auto_setup": False}):
        with SqliteSaver.from_conn_string(path, **options) as saver:
            with pytest.raises(SchemaVersionError, match="Upgrade threadline"):
                saver.get_tuple(cfg())
            with pytest.raises(SchemaVersionError, match="Upgrade threadline"):
                saver.setup()


def test_setup_migrates_a_database_with_data_to_the_next_version(
    path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A version 2 appended to the list (as a release would) migrates a version 1 file that
    holds threads: nothing stored is lost, and older code then refuses the file."""
    with SqliteSaver.from_conn_string(path) as saver:
        first = saver.put(T, "", draft({"a": 1}), expected_head=None)
        saver.put(T, "", draft({"a": 2}, parent=first), expected_head=first.id)
    nxt = _sql.SCHEMA_VERSION + 1
    v2 = (nxt, ("CREATE INDEX checkpoints_by_created ON checkpoints (thread_id, created_at)",))
    monkeypatch.setattr(_sql, "MIGRATIONS", (*_sql.MIGRATIONS, v2))
    monkeypatch.setattr(_sql, "SCHEMA_VERSION", nxt)
    with (
        SqliteSaver.from_conn_string(path, auto_setup=False) as saver,
        pytest.raises(SchemaMissingError, match=f"schema version {nxt - 1}"),
    ):
        saver.get_tuple(cfg())
    with SqliteSaver.from_conn_string(path) as saver:  # auto setup migrates
        assert saver.get(cfg())["channel_values"] == {"a": 2}
        assert len(list(saver.list(cfg()))) == 2
    assert raw(path, "SELECT version FROM threadline_migrations ORDER BY version") == [
        *ALL_VERSIONS,
        (nxt,),
    ]
    assert raw(path, "SELECT name FROM sqlite_master WHERE name = 'checkpoints_by_created'")
    monkeypatch.undo()  # the code of the version before again
    with (
        SqliteSaver.from_conn_string(path) as saver,
        pytest.raises(SchemaVersionError, match=f"version {nxt}"),
    ):
        saver.get_tuple(cfg())


def test_migrations_are_an_ordered_list() -> None:
    versions = [v for v, _ in _sql.MIGRATIONS]
    assert versions == sorted(set(versions))
    assert versions[0] == 1
    assert versions[-1] == _sql.SCHEMA_VERSION


def test_failed_commit_rolls_back_everything(
    saver: SqliteSaver, path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    c1 = saver.put(T, "", draft({"a": [1], "b": "x"}), expected_head=None)
    monkeypatch.setattr(_sql, "_SET_HEAD", "INSERT INTO no_such_table VALUES (?, ?, ?)")
    with pytest.raises(sqlite3.OperationalError):
        saver.put(T, "", draft({"a": [2]}, c1), expected_head=c1.id)
    monkeypatch.undo()
    assert not saver.conn.in_transaction
    assert raw(path, "SELECT count(*), max(seq) FROM checkpoints") == [(1, 1)]
    assert raw(path, "SELECT seq FROM threads") == [(1,)]
    assert raw(path, "SELECT count(*) FROM versions") == [(2,)]
    c2 = saver.put(T, "", draft({"a": [3]}, c1), expected_head=c1.id)
    assert c2.seq == 2


# ---------------------------------------------------------------------- corrupt rows


def test_corrupt_rows_name_thread_and_checkpoint(saver: SqliteSaver, path: str) -> None:
    c1 = saver.put(T, "", draft({"a": 1}), expected_head=None, thread_metadata={"owner": "ann"})
    c2 = saver.put(T, "", draft({"a": 2}, c1), expected_head=c1.id)

    raw(path, "UPDATE versions SET data = ? WHERE writer = ?", (BAD, uuid.UUID(c1.id).bytes))
    with pytest.raises(CorruptCheckpointError) as info:
        saver.get_tuple(cfg(T, c1.id))
    assert T in str(info.value) and c1.id in str(info.value)
    assert saver.get(cfg())["channel_values"] == {"a": 2}

    c2_key = uuid.UUID(c2.id).bytes
    raw(path, "UPDATE checkpoints SET metadata = ? WHERE checkpoint_id = ?", (BAD, c2_key))
    with pytest.raises(CorruptCheckpointError) as info:
        saver.get_tuple(cfg())
    assert T in str(info.value) and c2.id in str(info.value)

    raw(path, "UPDATE checkpoints SET refs = ? WHERE checkpoint_id = ?", ("{not json", c2_key))
    for call in (lambda: saver.get_tuple(cfg()), lambda: list(saver.list(cfg()))):
        with pytest.raises(CorruptCheckpointError) as info:
            call()
        assert T in str(info.value) and c2.id in str(info.value)
    with pytest.raises(CorruptCheckpointError) as info:
        saver.prune([T], keep_last=1)  # reachability needs every checkpoint's refs
    assert c2.id in str(info.value)
    assert raw(path, "SELECT count(*) FROM checkpoints") == [(2,)]  # nothing removed

    raw(path, "UPDATE threads SET metadata = ?", (BAD,))
    with pytest.raises(CorruptCheckpointError, match=T):
        saver.list_threads()


# ---------------------------------------------------------------------- encryption at rest

SECRET = "top-secret-plaintext-marker"


def _file_bytes(path: str) -> bytes:
    return b"".join(Path(p).read_bytes() for p in (path, path + "-wal") if os.path.exists(p))


def _store_secret(path: str, serde: MsgpackSerializer) -> str:
    with SqliteSaver.from_conn_string(path, serde=serde) as saver:
        c1 = saver.put(
            T,
            "",
            draft({"notes": [SECRET]}, metadata={"why": SECRET}, tasks=[SECRET]),
            expected_head=None,
            thread_metadata={"who": SECRET},
        )
        c2 = saver.put(
            T,
            "",
            draft({"notes": ChannelChange([SECRET, SECRET + "2"], appended=[SECRET + "2"])}, c1),
            expected_head=c1.id,
        )
        saver.put_writes(T, "", c2.id, "task", [("notes", SECRET)], expected_head=c2.id)
        return c2.id


def test_encrypted_values_are_not_stored_in_plaintext(tmp_path: Path) -> None:
    plain_path = str(tmp_path / "plain.db")
    _store_secret(plain_path, MsgpackSerializer())
    assert SECRET.encode() in _file_bytes(plain_path)  # the check below can see plaintext

    path = str(tmp_path / "encrypted.db")
    key = os.urandom(32)
    head = _store_secret(path, MsgpackSerializer(encryption_key=key))
    assert SECRET.encode() not in _file_bytes(path)
    for (blob,) in raw(path, "SELECT data FROM versions UNION ALL SELECT data FROM writes"):
        assert SECRET.encode() not in blob

    with SqliteSaver.from_conn_string(path, serde=MsgpackSerializer(encryption_key=key)) as s:
        got = s.get_tuple(cfg())
        assert got is not None
        assert got.checkpoint.values == {"notes": [SECRET, SECRET + "2"]}
        assert got.checkpoint.metadata == {} and got.pending_writes[0].value == SECRET
    with SqliteSaver.from_conn_string(path, serde=MsgpackSerializer()) as s:
        with pytest.raises(CorruptCheckpointError, match="encrypt") as info:
            s.get_tuple(cfg())
        assert T in str(info.value) and head in str(info.value)
    wrong = MsgpackSerializer(encryption_key=os.urandom(32))
    with (
        SqliteSaver.from_conn_string(path, serde=wrong) as s,
        pytest.raises(CorruptCheckpointError),
    ):
        s.get_tuple(cfg())


# ---------------------------------------------------------------------- flavours


async def test_the_wrong_flavour_says_which_saver_to_use(path: str) -> None:
    with SqliteSaver.from_conn_string(path) as saver:
        with pytest.raises(ThreadlineError, match="AsyncSqliteSaver") as info:
            await saver.aget_tuple(cfg())
        assert isinstance(info.value, NotImplementedError)
        with pytest.raises(ThreadlineError, match="AsyncSqliteSaver"):
            await saver.aput(T, "", draft({"a": 1}), expected_head=None)
        with pytest.raises(ThreadlineError, match="AsyncSqliteSaver"):
            await saver.alist_threads()
    async with AsyncSqliteSaver.from_conn_string(path) as asaver:
        with pytest.raises(ThreadlineError, match="SqliteSaver"):
            asaver.get_tuple(cfg())
        with pytest.raises(ThreadlineError, match="SqliteSaver"):
            asaver.put(T, "", draft({"a": 1}), expected_head=None)
        await asaver.setup()  # async on the async saver, as in LangGraph


# ---------------------------------------------------------------------- async


async def test_async_from_conn_string_as_async_context_manager(path: str) -> None:
    async with AsyncSqliteSaver.from_conn_string(path) as saver:
        c1 = await saver.aput(T, "", draft({"a": 1}), expected_head=None)
        conn = saver.conn
    with pytest.raises(ValueError):
        await conn.execute("SELECT 1")
    with SqliteSaver.from_conn_string(path) as sync_saver:  # one storage format for both
        assert sync_saver.get(cfg())["channel_values"] == {"a": 1}
        assert sync_saver.get_tuple(cfg(T, c1.id)) is not None


async def test_async_from_conn_string_as_plain_call(path: str) -> None:
    saver = AsyncSqliteSaver.from_conn_string(path)  # nothing opened yet
    await saver.aput(T, "", draft({"a": 1}), expected_head=None)  # opens on first use
    assert (await saver.aget(cfg()))["channel_values"] == {"a": 1}
    await saver.aclose()
    await saver.aclose()  # twice is fine
    with pytest.raises(ThreadlineError, match="closed"):
        await saver.aget(cfg())

    saver = AsyncSqliteSaver.from_conn_string(path, auto_setup=False)
    await saver.asetup()
    assert (await saver.aget(cfg()))["channel_values"] == {"a": 1}
    await saver.aclose()

    never_used = AsyncSqliteSaver.from_conn_string(path)
    await never_used.aclose()


async def test_async_saver_over_a_connection_passed_in(path: str) -> None:
    async with aiosqlite.connect(path) as conn:
        saver = AsyncSqliteSaver(conn)
        c1 = await saver.aput(T, "", draft({"a": 1}), expected_head=None)
        await saver.aclose()  # not ours: stays open
        assert (await saver.aget(cfg(T, c1.id)))["channel_values"] == {"a": 1}
        async with conn.execute("SELECT count(*) FROM checkpoints") as cur:
            assert await cur.fetchone() == (1,)
    unopened = aiosqlite.connect(path)
    with pytest.raises(ThreadlineError, match="not open"):
        await AsyncSqliteSaver(unopened).aget(cfg())


async def test_async_auto_setup_false_and_newer_schema(path: str) -> None:
    async with AsyncSqliteSaver.from_conn_string(path, auto_setup=False) as saver:
        with pytest.raises(SchemaMissingError):  # entering opened it, created nothing
            await saver.alist_threads()
    assert raw(path, "SELECT name FROM sqlite_master") == []
    saver = AsyncSqliteSaver.from_conn_string(path, auto_setup=False)
    try:
        with pytest.raises(SchemaMissingError, match=r"setup\(\)"):
            await saver.aget_tuple(cfg())
        await saver.asetup()
        await saver.aput(T, "", draft({"a": 1}), expected_head=None)
    finally:
        await saver.aclose()
    raw(path, "INSERT INTO threadline_migrations VALUES (?, 0)", (_sql.SCHEMA_VERSION + 1,))
    with pytest.raises(SchemaVersionError, match="Upgrade threadline"):
        async with AsyncSqliteSaver.from_conn_string(path):
            pass


async def test_async_racing_tasks_exactly_one_wins(path: str) -> None:
    async with (
        AsyncSqliteSaver.from_conn_string(path) as a,
        AsyncSqliteSaver.from_conn_string(path) as b,
    ):
        base = await a.aput(T, "", draft({"n": 0}), expected_head=None)
        outcomes = await asyncio.gather(
            *(
                s.aput(T, "", draft({"n": i}, base), expected_head=base.id)
                for i, s in enumerate([a, b, a, b])
            ),
            return_exceptions=True,
        )
        assert sum(isinstance(o, Checkpoint) for o in outcomes) == 1
        assert sum(isinstance(o, CheckpointConflictError) for o in outcomes) == 3
        assert len([t async for t in b.alist(cfg())]) == 2


async def test_async_cancelled_commit_leaves_the_connection_usable(path: str) -> None:
    async with AsyncSqliteSaver.from_conn_string(path) as saver:
        head = await saver.aput(T, "", draft({"n": 0}), expected_head=None)
        for i in range(1, 30):
            task = asyncio.ensure_future(
                saver.aput(T, "", draft({"n": i}, head), expected_head=head.id)
            )
            await asyncio.sleep(0)
            task.cancel()
            try:
                head = await task
            except asyncio.CancelledError:
                got = await saver.aget_tuple(cfg())  # committed or not, never half done
                assert got is not None
                head = got.checkpoint
        assert not saver.conn.in_transaction
        final = await saver.aput(T, "", draft({"n": -1}, head), expected_head=head.id)
        assert (await saver.aget(cfg()))["channel_values"] == {"n": -1}
        assert final.seq == len([t async for t in saver.alist(cfg())])


# ---------------------------------------------------------------------- SQL details


def test_history_pages_across_namespaces(saver: SqliteSaver) -> None:
    heads: dict[str, Checkpoint | None] = {"": None, "child:1": None}
    for i in range(230):
        ns = "child:1" if i % 3 == 0 else ""
        parent = heads[ns]
        heads[ns] = saver.put(
            T, ns, draft({"n": i}, parent), expected_head=None if parent is None else parent.id
        )
    batches = list(saver._iter_checkpoints(T, None, None))
    assert [len(b) for b in batches] == [100, 100, 30]
    seqs = [row.seq for b in batches for row in b]
    assert seqs == list(range(230, 0, -1))
    assert {row.ns for b in batches for row in b} == {"", "child:1"}
    older = [row.seq for b in saver._iter_checkpoints(T, None, 120) for row in b]
    assert older == list(range(119, 0, -1))
    child = [row.seq for b in saver._iter_checkpoints(T, "child:1", None) for row in b]
    assert child == [s for s in range(230, 0, -1) if (s - 1) % 3 == 0]


def test_list_threads_filters_across_pages(
    saver: SqliteSaver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_sql, "THREAD_PAGE", 3)
    for i in range(11):
        saver.put(
            f"t{i:02d}", "", draft({"a": i}), expected_head=None, thread_metadata={"odd": i % 2}
        )
    odd = [t.thread_id for t in saver.list_threads(filter={"odd": 1})]
    assert odd == ["t09", "t07", "t05", "t03", "t01"]
    page = saver.list_threads(filter={"odd": 1}, offset=1, limit=3)
    assert [t.thread_id for t in page] == ["t07", "t05", "t03"]
    assert [t.thread_id for t in saver.list_threads(offset=9)] == ["t01", "t00"]
    assert saver.list_threads(filter={"odd": 1}, limit=0) == []


def _count(path: str, table: str, thread_id: str) -> int:
    rows = raw(path, f"SELECT count(*) FROM {table} WHERE thread_id = ?", (thread_id,))
    return int(rows[0][0])


TABLES = ("threads", "heads", "checkpoints", "versions", "writes")


def test_prune_and_delete_remove_rows(saver: SqliteSaver, path: str) -> None:
    head: Checkpoint | None = None
    items: list[int] = []
    for i in range(40):
        head = append(saver, head, items, i)
        items.append(i)
        saver.put_writes(T, "", head.id, "task", [("items", i)], expected_head=head.id)
    assert head is not None
    saver.copy_thread(T, "copy")
    assert [_count(path, t, "copy") for t in TABLES] == [_count(path, t, T) for t in TABLES]
    assert saver._locate_checkpoint(head.id) == (T, "")

    before = _count(path, "versions", T)
    assert saver.prune([T], keep_last=2) == 38
    assert _count(path, "checkpoints", T) == 2
    assert _count(path, "writes", T) == 2
    kept = _count(path, "versions", T)
    assert 2 <= kept < before  # the two kept checkpoints' chains back to their snapshot
    for t in saver.list(cfg()):
        assert t.checkpoint.values["items"] == items[: t.checkpoint.step + 1]
    assert saver.get(cfg("copy"))["channel_values"] == {"items": items}  # other threads untouched

    saver.delete_thread(T)
    assert [_count(path, t, T) for t in TABLES] == [0] * 5
    assert saver._locate_checkpoint(head.id) == ("copy", "")
    saver.delete_thread("copy")
    assert [raw(path, f"SELECT count(*) FROM {t}")[0][0] for t in TABLES] == [0] * 5


def test_new_files_get_8k_pages_and_existing_ones_keep_theirs(tmp_path: Path) -> None:
    fresh = tmp_path / "fresh.db"
    with SqliteSaver.from_conn_string(str(fresh)) as saver:
        saver.setup()
    with sqlite3.connect(fresh) as conn:
        assert conn.execute("PRAGMA page_size").fetchone()[0] == 8192

    old = tmp_path / "old.db"
    with sqlite3.connect(old) as conn:
        conn.execute("PRAGMA page_size = 4096")
        conn.execute("CREATE TABLE existing (x)")
    with SqliteSaver.from_conn_string(str(old)) as saver:
        saver.setup()
    with sqlite3.connect(old) as conn:
        assert conn.execute("PRAGMA page_size").fetchone()[0] == 4096
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


# ---------------------------------------------------------------------- checkpoint ids as bytes


def test_checkpoint_ids_are_stored_as_16_bytes(saver: SqliteSaver, path: str) -> None:
    c1 = saver.put(T, "", draft({"items": [0], "b": "fixed"}), expected_head=None)
    c2 = append(saver, c1, [0], 1)  # a delta on c1's "items"; "b" still c1's
    saver.put_writes(T, "", c2.id, "task", [("items", 2)], expected_head=c2.id)
    b1, b2 = uuid.UUID(c1.id).bytes, uuid.UUID(c2.id).bytes
    assert raw(path, "SELECT checkpoint_id FROM heads") == [(b2,)]
    assert raw(path, "SELECT checkpoint_id, parent_id FROM checkpoints ORDER BY seq") == [
        (b1, None),
        (b2, b1),
    ]
    assert sorted(raw(path, "SELECT channel, writer, base FROM versions")) == [
        ("b", b1, None),
        ("items", b1, None),
        ("items", b2, b1),
    ]
    assert raw(path, "SELECT checkpoint_id FROM writes") == [(b2,)]
    # refs: a writer in the hex SQL's hex() gives; "" for the checkpoint's own id.
    refs = raw(
        path,
        "SELECT json_extract(refs, '$.b[0]'), json_extract(refs, '$.items[0]')"
        " FROM checkpoints WHERE checkpoint_id = ?",
        (b2,),
    )
    assert refs == [(b1.hex().upper(), "")]

    got = saver.get_tuple(cfg(T, c2.id))  # and everything above sees the strings
    assert got is not None
    assert (got.checkpoint.id, got.checkpoint.parent_id) == (c2.id, c1.id)
    assert got.checkpoint.refs["b"].writer == c1.id
    assert got.checkpoint.refs["items"].writer == c2.id
    assert got.checkpoint.values == {"items": [0, 1], "b": "fixed"}
    assert [w.value for w in got.pending_writes] == [2]
    assert saver.list_threads()[0].head_id == c2.id

    c3 = append(saver, c2, [0, 1], 3)
    assert saver.prune([T], keep_last=1) == 2  # c1's "b" and the "items" chain survive
    assert saver.get(cfg())["channel_values"] == {"items": [0, 1, 3], "b": "fixed"}
    assert saver.locate(c3.id) == (T, "")


def test_only_uuid_checkpoint_ids_can_be_stored(saver: SqliteSaver, path: str) -> None:
    bad = draft({"a": 1})
    bad.id = "custom-id"
    with pytest.raises(ValueError, match="UUID"):
        saver.put(T, "", bad, expected_head=None)
    assert raw(path, "SELECT count(*) FROM threads") == [(0,)]


NOT_UUIDS = ["nope", "x" * 36, "0" * 32, "{00000000-0000-0000-0000-000000000000}", "'; --"]


def _outcome(call: Callable[[], Any]) -> Any:
    try:
        return call()
    except Exception as exc:
        return type(exc)


@pytest.mark.parametrize("spelling", ["as is", "upper", "urn", "braces", "spaced", *NOT_UUIDS])
def test_a_checkpoint_id_that_is_no_canonical_uuid_is_an_unknown_id(
    saver: SqliteSaver, path: str, spelling: str
) -> None:
    c1 = saver.put(T, "", draft({"a": 1}, tasks=["t"]), expected_head=None)
    c2 = saver.put(T, "", draft({"a": 2}, c1, tasks=["t"]), expected_head=c1.id)
    # Other spellings of c1's id must not find c1 (as text they never did).
    forms = {
        "as is": c1.id,
        "upper": c1.id.upper(),
        "urn": f"urn:uuid:{c1.id}",
        "braces": f"{{{c1.id}}}",
        "spaced": f" {c1.id}",
    }
    given = forms.get(spelling, spelling)
    unknown = str(uuid.uuid4())

    def outcomes(checkpoint_id: str) -> list[Any]:
        return [
            _outcome(lambda: saver.get_tuple(cfg(T, checkpoint_id))),
            _outcome(lambda: list(saver.list(cfg(), before=cfg(T, checkpoint_id)))),
            _outcome(lambda: saver.locate(checkpoint_id)),
            _outcome(lambda: saver._read_writes(T, "", checkpoint_id)),
            _outcome(
                lambda: saver.put_writes(T, "", checkpoint_id, "t", [("a", 9)], expected_head=c2.id)
            ),
        ]

    if spelling == "as is":
        assert outcomes(given)[0] is not None and outcomes(given)[2] == (T, "")
        return
    assert outcomes(given) == outcomes(unknown)
    assert outcomes(given)[0] is CheckpointNotFoundError
    assert raw(path, "SELECT count(*) FROM writes") == [(0,)]


class Counted(TypedDict):
    n: int


def test_graph_calls_with_a_non_uuid_checkpoint_id_are_not_found(saver: SqliteSaver) -> None:
    builder = StateGraph(Counted)
    builder.add_node("a", lambda state: {"n": state["n"] + 1})
    builder.add_edge(START, "a")
    builder.add_edge("a", END)
    app = builder.compile(checkpointer=saver)
    app.invoke({"n": 0}, {"configurable": {"thread_id": T}})
    for thread_id in (T, "elsewhere"):
        config = {"configurable": {"thread_id": thread_id, "checkpoint_id": "nope"}}
        with pytest.raises(CheckpointNotFoundError, match="nope"):
            app.get_state(config)
        with pytest.raises(CheckpointNotFoundError):
            app.invoke(None, config)
    with pytest.raises(CheckpointNotFoundError):
        app.update_state({"configurable": {"thread_id": T, "checkpoint_id": "nope"}}, {"n": 5})


async def test_async_non_uuid_checkpoint_id_is_not_found(path: str) -> None:
    async with AsyncSqliteSaver.from_conn_string(path) as saver:
        c1 = await saver.aput(T, "", draft({"a": 1}), expected_head=None)
        with pytest.raises(CheckpointNotFoundError):
            await saver.aget_tuple(cfg(T, "nope"))
        with pytest.raises(CheckpointNotFoundError):
            await saver.aget_tuple(cfg(T, c1.id.upper()))
        assert await saver.alocate("nope") is None
        assert (await saver.aget_tuple(cfg(T, c1.id))) is not None
