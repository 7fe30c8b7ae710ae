"""PostgreSQL-specific behaviour of PostgresSaver and AsyncPostgresSaver.

The contract suite (test_checkpoint_contract*.py) already runs on both; these tests cover what
only a real server shows: schemas, pools shared by threads, processes racing, connections
dropped by the server, prepared statements, migrations, and what the raw rows hold.
Locally they skip when no server answers; with CI=true they fail instead.
"""

from __future__ import annotations

import asyncio
import dataclasses
import multiprocessing
import operator
import os
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated, Any, TypedDict

import msgpack
import pytest
from backends import CORRUPT_BYTES, postgres_url_or_skip, terminate, with_app_name

psycopg = pytest.importorskip("psycopg")
from psycopg import sql  # noqa: E402
from psycopg_pool import AsyncConnectionPool, ConnectionPool  # noqa: E402

from threadline.checkpoint.postgres import PostgresSaver  # noqa: E402
from threadline.checkpoint.postgres import _core as pg_core  # noqa: E402
from threadline.checkpoint.postgres._sql import Migration  # noqa: E402
from threadline.checkpoint.postgres.aio import AsyncPostgresSaver  # noqa: E402
from threadline.checkpoint.serde import MsgpackSerializer  # noqa: E402
from threadline.checkpoint.types import ChannelChange, Checkpoint, CheckpointDraft  # noqa: E402
from threadline.errors import (  # noqa: E402
    CheckpointConflictError,
    CheckpointNotFoundError,
    CorruptCheckpointError,
    SchemaMissingError,
    SchemaVersionError,
    ThreadlineError,
)
from threadline.graph import END, START, StateGraph  # noqa: E402

pytestmark = pytest.mark.postgres

TABLES = ("threads", "heads", "checkpoints", "versions", "writes", "leases")


# ---------------------------------------------------------------------- helpers


def cfg(thread_id: str, checkpoint_id: str | None = None) -> dict[str, Any]:
    c: dict[str, Any] = {"thread_id": thread_id}
    if checkpoint_id is not None:
        c["checkpoint_id"] = checkpoint_id
    return {"configurable": c}


def draft(
    value: Any = None,
    *,
    parent: Checkpoint | None = None,
    appended: list[Any] | None = None,
    metadata: dict[str, Any] | None = None,
    tasks: list[Any] | None = None,
    step: int = 0,
) -> CheckpointDraft:
    return CheckpointDraft(
        step=step,
        source="loop",
        metadata=metadata or {},
        tasks=tasks or [],
        changes={"items": ChannelChange(value, appended)},
        parent_id=None if parent is None else parent.id,
        base_refs={} if parent is None else parent.refs,
    )


def grow(saver: PostgresSaver, thread_id: str, n: int, **put: Any) -> list[Checkpoint]:
    """``n`` commits on ``thread_id``, each appending one item to channel "items"."""
    head: Checkpoint | None = None
    value: list[str] = []
    saved = []
    for i in range(n):
        value = [*value, f"{thread_id}-{i}"]
        d = draft(value, parent=head, appended=None if head is None else value[-1:], step=i)
        head = saver.put(thread_id, "", d, expected_head=None if head is None else head.id, **put)
        saved.append(head)
    return saved


def new_schema() -> str:
    return f"tl_test_{uuid.uuid4().hex[:16]}"


def drop_schema(url: str, schema: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def table(schema: str, name: str) -> sql.Identifier:
    return sql.Identifier(schema, f"threadline_{name}")


def query(url: str, statement: sql.Composable, params: Any = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(statement, params)
        return cur.fetchall() if cur.description else []


def in_processes(target: Any, args: tuple[Any, ...], n: int, n_results: int) -> list[Any]:
    """Run ``target(*args, barrier, results)`` in ``n`` fresh processes; collect ``n_results``."""
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(n)
    results = ctx.Queue()
    procs = [ctx.Process(target=target, args=(*args, barrier, results)) for _ in range(n)]
    for p in procs:
        p.start()
    try:
        return [results.get(timeout=120) for _ in range(n_results)]
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
                p.join()


def wait_for(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for a condition")
        time.sleep(0.02)


@pytest.fixture
def url() -> str:
    return postgres_url_or_skip()


@pytest.fixture
def schema(url: str) -> Iterator[str]:
    name = new_schema()
    yield name
    drop_schema(url, name)


@pytest.fixture
def saver(url: str, schema: str) -> Iterator[PostgresSaver]:
    with PostgresSaver.from_conn_string(url, schema=schema, pool_max_size=4) as s:
        yield s


@pytest.fixture
async def asaver(url: str, schema: str) -> AsyncIterator[AsyncPostgresSaver]:
    async with AsyncPostgresSaver.from_conn_string(url, schema=schema, pool_max_size=4) as s:
        yield s


# ---------------------------------------------------------------------- construction


def test_from_conn_string_as_context_manager_closes_its_pool(url: str, schema: str) -> None:
    with PostgresSaver.from_conn_string(url, schema=schema) as saver:
        grow(saver, "t", 2)
        pool = saver._owned_pool
        assert pool is not None and not pool.closed
    assert pool.closed


def test_from_conn_string_as_plain_call_then_close(url: str, schema: str) -> None:
    saver = PostgresSaver.from_conn_string(url, schema=schema)
    try:
        grow(saver, "t", 2)
        assert saver.get(cfg("t"))["channel_values"] == {"items": ["t-0", "t-1"]}
    finally:
        saver.close()
    assert saver._owned_pool is not None and saver._owned_pool.closed


def test_a_pool_or_connection_passed_in_stays_open(url: str, schema: str) -> None:
    with ConnectionPool(url, min_size=1, max_size=2, kwargs={"autocommit": True}) as pool:
        with PostgresSaver(pool, schema=schema) as saver:
            grow(saver, "t", 1)
        assert not pool.closed
    with psycopg.connect(url, autocommit=True) as conn:
        PostgresSaver(conn, schema=schema).close()
        assert not conn.closed


async def test_async_from_conn_string_both_styles(url: str, schema: str) -> None:
    async with AsyncPostgresSaver.from_conn_string(url, schema=schema) as saver:
        await saver.aput("t", "", draft([1]), expected_head=None)
        pool = saver._owned_pool
    assert pool is not None and pool.closed

    # Plain call (not awaited): the pool opens on first use; aclose() closes it.
    saver = AsyncPostgresSaver.from_conn_string(url, schema=schema)
    try:
        assert (await saver.aget(cfg("t")))["channel_values"] == {"items": [1]}
    finally:
        await saver.aclose()
    assert saver._owned_pool is not None and saver._owned_pool.closed


def test_wrong_connection_flavour_is_a_clear_type_error(url: str) -> None:
    with psycopg.connect(url) as conn, pytest.raises(TypeError, match="AsyncPostgresSaver"):
        AsyncPostgresSaver(conn)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="from_conn_string"):
        PostgresSaver(url)  # type: ignore[arg-type]


async def test_wrong_flavour_methods_name_the_twin(
    saver: PostgresSaver, asaver: AsyncPostgresSaver
) -> None:
    with pytest.raises(ThreadlineError, match="AsyncPostgresSaver"):
        await saver.aget_tuple(cfg("t"))
    with pytest.raises(ThreadlineError, match="PostgresSaver"):
        asaver.get_tuple(cfg("t"))


@pytest.mark.parametrize("bad", ["", "1abc", 'x"; DROP TABLE y; --', "a.b", "x" * 64, None])
def test_schema_names_are_validated(url: str, bad: Any) -> None:
    with psycopg.connect(url) as conn, pytest.raises(ValueError, match="schema"):
        PostgresSaver(conn, schema=bad)


# ---------------------------------------------------------------------- schemas and setup


def test_schemas_isolate_data(url: str) -> None:
    a, b = new_schema(), new_schema()
    try:
        with ConnectionPool(url, min_size=1, max_size=2, kwargs={"autocommit": True}) as pool:
            sa = PostgresSaver(pool, schema=a)
            sb = PostgresSaver(pool, schema=b)
            grow(sa, "same-id", 3)
            grow(sb, "same-id", 1)
            assert sa.get(cfg("same-id"))["channel_values"] == {
                "items": ["same-id-0", "same-id-1", "same-id-2"]
            }
            assert sb.get(cfg("same-id"))["channel_values"] == {"items": ["same-id-0"]}
            sb.delete_thread("same-id")
            assert sb.list_threads() == []
            assert [t.thread_id for t in sa.list_threads()] == ["same-id"]
            assert len(list(sa.list(cfg("same-id")))) == 3
        for name in (a, b):
            found = query(
                url,
                sql.SQL("SELECT count(*) FROM information_schema.tables WHERE table_schema = %s"),
                (name,),
            )
            assert found == [(len(TABLES) + 1,)]  # + threadline_migrations
    finally:
        drop_schema(url, a)
        drop_schema(url, b)


def test_setup_is_idempotent(url: str, schema: str) -> None:
    with PostgresSaver.from_conn_string(url, schema=schema, auto_setup=False) as saver:
        saver.setup()
        grow(saver, "t", 2)
        saver.setup()
        saver.setup()
        assert saver.get(cfg("t"))["channel_values"] == {"items": ["t-0", "t-1"]}
    versions = query(
        url, sql.SQL("SELECT version FROM {} ORDER BY version").format(table(schema, "migrations"))
    )
    assert versions == ALL_VERSIONS


def _setup_worker(url: str, schema: str, barrier: Any, results: Any) -> None:
    try:
        with PostgresSaver.from_conn_string(url, schema=schema, auto_setup=False) as saver:
            barrier.wait(timeout=60)
            saver.setup()
            saver.put(f"t-{os.getpid()}", "", draft([os.getpid()]), expected_head=None)
        results.put("ok")
    except BaseException as exc:  # report anything to the parent
        results.put(f"{type(exc).__name__}: {exc}")


def test_setup_from_several_processes_at_once(url: str, schema: str) -> None:
    n = 4
    outcomes = in_processes(_setup_worker, (url, schema), n, n)
    assert outcomes == ["ok"] * n
    versions = query(
        url, sql.SQL("SELECT version FROM {} ORDER BY version").format(table(schema, "migrations"))
    )
    assert versions == ALL_VERSIONS
    threads = query(url, sql.SQL("SELECT count(*) FROM {}").format(table(schema, "threads")))
    assert threads == [(n,)]


def test_auto_setup_false_without_schema_says_to_call_setup(url: str, schema: str) -> None:
    with PostgresSaver.from_conn_string(url, schema=schema, auto_setup=False) as saver:
        with pytest.raises(SchemaMissingError, match=r"setup\(\)"):
            saver.get_tuple(cfg("t"))
        with pytest.raises(SchemaMissingError, match=r"setup\(\)"):
            saver.put("t", "", draft([1]), expected_head=None)
        saver.setup()
        saver.put("t", "", draft([1]), expected_head=None)
        assert saver.get(cfg("t"))["channel_values"] == {"items": [1]}


async def test_async_auto_setup_false_without_schema(url: str, schema: str) -> None:
    async with AsyncPostgresSaver.from_conn_string(url, schema=schema, auto_setup=False) as s:
        with pytest.raises(SchemaMissingError, match=r"setup\(\)"):
            await s.aget_tuple(cfg("t"))
        await s.asetup()
        await s.aput("t", "", draft([1]), expected_head=None)
        assert (await s.aget(cfg("t")))["channel_values"] == {"items": [1]}


def test_tables_dropped_under_a_running_saver_raise_schema_missing(
    url: str, schema: str, saver: PostgresSaver
) -> None:
    grow(saver, "t", 1)
    drop_schema(url, schema)
    with pytest.raises(SchemaMissingError, match=r"setup\(\)"):
        saver.get_tuple(cfg("t"))


def test_schema_newer_than_the_code_says_to_upgrade(url: str, schema: str) -> None:
    with PostgresSaver.from_conn_string(url, schema=schema) as saver:
        saver.setup()
    query(url, sql.SQL("INSERT INTO {} (version) VALUES (99)").format(table(schema, "migrations")))
    with PostgresSaver.from_conn_string(url, schema=schema) as saver:
        with pytest.raises(SchemaVersionError, match=r"version 99.*[Uu]pgrade threadline"):
            saver.get_tuple(cfg("t"))
        with pytest.raises(CorruptCheckpointError, match=r"[Uu]pgrade threadline"):
            saver.setup()


def test_setup_of_an_up_to_date_schema_needs_no_create_privilege(url: str, schema: str) -> None:
    with PostgresSaver.from_conn_string(url, schema=schema) as saver:
        saver.setup()
    role = f"tl_rw_{uuid.uuid4().hex[:8]}"
    admin = [
        sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)),
        sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(
            sql.Identifier(schema), sql.Identifier(role)
        ),
        sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {} TO {}").format(
            sql.Identifier(schema), sql.Identifier(role)
        ),
    ]
    for statement in admin:
        query(url, statement)
    try:
        role_url = psycopg.conninfo.make_conninfo(url, user=role)
        with PostgresSaver.from_conn_string(role_url, schema=schema) as saver:
            saver.setup()
            grow(saver, "t", 2)
            assert saver.get(cfg("t"))["channel_values"] == {"items": ["t-0", "t-1"]}
        # ... although the role could not have created it:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            query(role_url, sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(role)))
    finally:
        query(url, sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        query(url, sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


_NEXT = len(PostgresSaver.migrations) + 1
ALL_VERSIONS = [(m.version,) for m in PostgresSaver.migrations]


class _SaverV2(PostgresSaver):
    """The saver of a future release whose schema has one more version."""

    migrations = (
        *PostgresSaver.migrations,
        Migration(_NEXT, "probe table", ("CREATE TABLE {schema}.threadline_probe (x int4)",)),
    )


def test_setup_migrates_an_older_schema_and_older_code_refuses_a_newer_one(
    url: str, schema: str
) -> None:
    with PostgresSaver.from_conn_string(url, schema=schema) as saver:
        grow(saver, "t", 2)
    with (
        _SaverV2.from_conn_string(url, schema=schema, auto_setup=False) as saver,
        pytest.raises(SchemaMissingError, match=rf"version {_NEXT - 1}.*setup\(\)"),
    ):
        saver.get_tuple(cfg("t"))
    with _SaverV2.from_conn_string(url, schema=schema) as saver:  # auto_setup migrates
        assert saver.get(cfg("t"))["channel_values"] == {"items": ["t-0", "t-1"]}
    versions = query(
        url, sql.SQL("SELECT version FROM {} ORDER BY version").format(table(schema, "migrations"))
    )
    assert versions == [*ALL_VERSIONS, (_NEXT,)]
    assert query(url, sql.SQL("SELECT count(*) FROM {}").format(table(schema, "probe"))) == [(0,)]
    with (
        PostgresSaver.from_conn_string(url, schema=schema) as saver,
        pytest.raises(CorruptCheckpointError, match=rf"version {_NEXT}.*[Uu]pgrade threadline"),
    ):
        saver.get_tuple(cfg("t"))


def test_locate_finds_the_thread_of_a_checkpoint_even_in_a_copy(saver: PostgresSaver) -> None:
    a = grow(saver, "a", 2)
    saver.put("b", "child", draft([1]), expected_head=None)
    b = saver.head_id("b", "child")
    assert b is not None
    saver.copy_thread("a", "a-copy")
    assert saver.locate(a[0].id) == ("a", "")
    assert saver.locate(b) == ("b", "child")
    assert saver.locate("no-such-checkpoint") is None


async def test_async_locate(asaver: AsyncPostgresSaver) -> None:
    c = await asaver.aput("a", "", draft([1]), expected_head=None)
    assert await asaver.alocate(c.id) == ("a", "")
    assert await asaver.alocate("nope") is None


# ---------------------------------------------------------------------- concurrency


def test_one_pool_shared_by_eight_python_threads(url: str, schema: str) -> None:
    with PostgresSaver.from_conn_string(url, schema=schema, pool_max_size=8) as saver:
        saver.setup()
        start = threading.Barrier(8)

        def work(i: int) -> list[Checkpoint]:
            start.wait()
            return grow(saver, f"thread-{i}", 25)

        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(work, range(8)))
        for i, saved in enumerate(results):
            assert [c.seq for c in saved] == list(range(1, 26))
            assert saver.get(cfg(f"thread-{i}"))["channel_values"] == {
                "items": [f"thread-{i}-{j}" for j in range(25)]
            }
            assert len(list(saver.list(cfg(f"thread-{i}")))) == 25
        assert len(saver.list_threads()) == 8


def test_one_connection_shared_by_threads_takes_turns(url: str, schema: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        saver = PostgresSaver(conn, schema=schema)
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda i: grow(saver, f"t{i}", 10), range(4)))
        for i in range(4):
            assert len(saver.get(cfg(f"t{i}"))["channel_values"]["items"]) == 10  # type: ignore[index]


def test_connection_not_in_autocommit_mode_still_commits(url: str, schema: str) -> None:
    with psycopg.connect(url) as conn:
        saver = PostgresSaver(conn, schema=schema)
        grow(saver, "t", 3)
        saver.delete_thread("t")
        grow(saver, "u", 2)
    count = query(url, sql.SQL("SELECT count(*) FROM {}").format(table(schema, "checkpoints")))
    assert count == [(2,)]


def _race_worker(url: str, schema: str, steps: int, barrier: Any, results: Any) -> None:
    name = f"p{os.getpid()}"
    try:
        with PostgresSaver.from_conn_string(url, schema=schema, pool_max_size=1) as saver:
            for step in range(steps):
                barrier.wait(timeout=60)
                head = saver.get_tuple(cfg("contested"))
                barrier.wait(timeout=60)  # both have read the same head; now both commit
                parent = None if head is None else head.checkpoint
                value = [] if head is None else head.checkpoint.values["items"]
                d = draft(
                    [*value, f"{name}-{step}"],
                    parent=parent,
                    appended=None if parent is None else [f"{name}-{step}"],
                    metadata={"by": name},
                    step=step,
                )
                try:
                    saver.put(
                        "contested", "", d, expected_head=None if parent is None else parent.id
                    )
                    results.put((step, name, "won"))
                except CheckpointConflictError:
                    results.put((step, name, "lost"))
    except BaseException as exc:
        results.put((-1, name, f"{type(exc).__name__}: {exc}"))


def test_two_processes_racing_on_one_thread_exactly_one_wins_each_step(
    url: str, schema: str, saver: PostgresSaver
) -> None:
    saver.setup()
    steps = 15
    outcomes = in_processes(_race_worker, (url, schema, steps), 2, 2 * steps)
    assert not [o for o in outcomes if o[0] < 0], outcomes
    by_step: dict[int, list[str]] = {}
    for step, _, result in outcomes:
        by_step.setdefault(step, []).append(result)
    assert all(sorted(r) == ["lost", "won"] for r in by_step.values()), by_step
    # The losers stored nothing: one checkpoint and one version row per step, seqs 1..steps.
    history = list(saver.list(cfg("contested")))
    assert [t.checkpoint.seq for t in history] == list(range(steps, 0, -1))
    versions = query(url, sql.SQL("SELECT count(*) FROM {}").format(table(schema, "versions")))
    assert versions == [(steps,)]
    winners = [t.checkpoint.metadata["by"] for t in reversed(history)]
    assert saver.get(cfg("contested"))["channel_values"] == {
        "items": [f"{w}-{i}" for i, w in enumerate(winners)]
    }


# ---------------------------------------------------------------------- dropped connections


def test_connections_killed_between_operations_are_replaced(url: str, schema: str) -> None:
    app = f"tl_drop_{uuid.uuid4().hex[:8]}"
    with PostgresSaver.from_conn_string(with_app_name(url, app), schema=schema) as saver:
        head = grow(saver, "t", 2)[-1]
        assert terminate(url, app) >= 1
        head = saver.put(
            "t", "", draft(["t-0", "t-1", "x"], parent=head, appended=["x"]), expected_head=head.id
        )
        assert head.seq == 3
        assert terminate(url, app) >= 1
        assert saver.get(cfg("t"))["channel_values"] == {"items": ["t-0", "t-1", "x"]}
        assert terminate(url, app) >= 1
        saver.put_writes("t", "", head.id, "task", [("items", "w")], expected_head=head.id)
        assert terminate(url, app) >= 1
        assert [t.thread_id for t in saver.list_threads()] == ["t"]
        assert len(list(saver.list(cfg("t")))) == 3


async def test_async_connections_killed_between_operations_are_replaced(
    url: str, schema: str
) -> None:
    app = f"tl_drop_{uuid.uuid4().hex[:8]}"
    async with AsyncPostgresSaver.from_conn_string(with_app_name(url, app), schema=schema) as s:
        head = await s.aput("t", "", draft(["a"]), expected_head=None)
        assert await asyncio.to_thread(terminate, url, app) >= 1
        head = await s.aput(
            "t", "", draft(["a", "b"], parent=head, appended=["b"]), expected_head=head.id
        )
        assert head.seq == 2
        assert await asyncio.to_thread(terminate, url, app) >= 1
        assert (await s.aget(cfg("t")))["channel_values"] == {"items": ["a", "b"]}


def test_commit_whose_connection_dies_mid_statement_is_rerun_safely(url: str, schema: str) -> None:
    """The server kills the backend while the commit waits on a lock: it did not land, so the
    saver checks, then runs it again on a fresh connection (the CAS keeps that safe)."""
    app = f"tl_mid_{uuid.uuid4().hex[:8]}"
    with PostgresSaver.from_conn_string(with_app_name(url, app), schema=schema) as saver:
        head = grow(saver, "t", 1)[0]
        waiting = sql.SQL(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s"
            " AND wait_event_type = 'Lock'"
        )
        with psycopg.connect(url) as blocker:
            blocker.execute(
                sql.SQL("SELECT * FROM {} WHERE thread_id = 't' FOR UPDATE").format(
                    table(schema, "heads")
                )
            )
            out: dict[str, Any] = {}

            def commit() -> None:
                try:
                    out["saved"] = saver.put(
                        "t",
                        "",
                        draft(["t-0", "y"], parent=head, appended=["y"]),
                        expected_head=head.id,
                    )
                except BaseException as exc:
                    out["error"] = exc

            worker = threading.Thread(target=commit)
            worker.start()
            wait_for(lambda: bool(query(url, waiting, (app,))))
            assert terminate(url, app) >= 1
            wait_for(lambda: bool(query(url, waiting, (app,))))  # the rerun waits again
            blocker.rollback()
            worker.join(timeout=30)
        assert "error" not in out, out
        assert out["saved"].seq == 2
        assert saver.get_tuple(cfg("t")).checkpoint.id == out["saved"].id  # type: ignore[union-attr]
        assert len(list(saver.list(cfg("t")))) == 2


class _LosesReplyOnce(PostgresSaver):
    """Runs each operation for real but, once armed, drops the reply of the next one."""

    armed = False

    def _attempt(self, proc: Any, tx: bool) -> Any:
        from threadline.checkpoint.postgres import _Broken

        result = super()._attempt(proc, tx)
        if self.armed:
            self.armed = False
            raise _Broken(psycopg.OperationalError("server closed the connection (simulated)"))
        return result


def test_commit_that_landed_before_the_connection_died_is_not_rerun(url: str, schema: str) -> None:
    with _LosesReplyOnce.from_conn_string(url, schema=schema) as saver:
        head = grow(saver, "t", 1)[0]
        saver.armed = True
        saved = saver.put(
            "t", "", draft(["t-0", "z"], parent=head, appended=["z"]), expected_head=head.id
        )
        # Rerunning would have raised a conflict (the head had moved to `saved`).
        assert saved.seq == 2
        assert saver.get_tuple(cfg("t")).checkpoint.id == saved.id  # type: ignore[union-attr]
        assert len(list(saver.list(cfg("t")))) == 2


def test_copy_thread_is_not_rerun_after_a_lost_reply(url: str, schema: str) -> None:
    with _LosesReplyOnce.from_conn_string(url, schema=schema) as saver:
        grow(saver, "t", 1)
        saver.armed = True
        with pytest.raises(psycopg.OperationalError, match="simulated"):
            saver.copy_thread("t", "u")


# ---------------------------------------------------------------------- prepared statements


def _prepared(conn: Any) -> int:
    return int(conn.execute("SELECT count(*) FROM pg_prepared_statements").fetchone()[0])


@pytest.mark.parametrize("prepare", [True, False])
def test_prepare_option_controls_server_side_prepared_statements(
    url: str, schema: str, prepare: bool
) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        saver = PostgresSaver(conn, schema=schema, prepare=prepare)
        grow(saver, "t", 12)
        for _ in range(6):
            saver.get_tuple(cfg("t"))
        assert (_prepared(conn) > 0) is prepare


def test_from_conn_string_with_prepare_false_never_prepares(url: str, schema: str) -> None:
    with PostgresSaver.from_conn_string(url, schema=schema, prepare=False, pool_max_size=1) as s:
        grow(s, "t", 12)
        assert s._pool is not None
        with s._pool.connection() as conn:
            assert conn.prepare_threshold is None
            assert _prepared(conn) == 0
        assert s.get(cfg("t"))["channel_values"] == {"items": [f"t-{i}" for i in range(12)]}


async def test_async_prepare_false(url: str, schema: str) -> None:
    async with AsyncPostgresSaver.from_conn_string(
        url, schema=schema, prepare=False, pool_max_size=1
    ) as s:
        head = None
        for i in range(8):
            head = await s.aput(
                "t", "", draft([i], parent=head), expected_head=None if head is None else head.id
            )
        assert s._pool is not None
        async with s._pool.connection() as conn:
            cur = await conn.execute("SELECT count(*) FROM pg_prepared_statements")
            assert (await cur.fetchone()) == (0,)


async def test_async_saver_over_a_pool_of_its_own_and_one_connection(url: str, schema: str) -> None:
    kwargs = {"autocommit": True}
    async with AsyncConnectionPool(url, min_size=1, max_size=4, kwargs=kwargs) as pool:
        s = AsyncPostgresSaver(pool, schema=schema)
        results = await asyncio.gather(
            *(s.aput(f"t{i}", "", draft([i]), expected_head=None) for i in range(20))
        )
        assert sorted(c.thread_id for c in results) == sorted(f"t{i}" for i in range(20))
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        s = AsyncPostgresSaver(conn, schema=schema)
        values = await asyncio.gather(*(s.aget(cfg(f"t{i}")) for i in range(20)))
        assert [v["channel_values"] for v in values] == [{"items": [i]} for i in range(20)]


# ---------------------------------------------------------------------- stored bytes


def test_corrupt_pending_write_names_thread_and_checkpoint(
    url: str, schema: str, saver: PostgresSaver
) -> None:
    head = grow(saver, "w", 2)[-1]
    saver.put_writes("w", "", head.id, "task", [("items", "w")], expected_head=head.id)
    query(url, sql.SQL("UPDATE {} SET data = %s").format(table(schema, "writes")), (CORRUPT_BYTES,))
    with pytest.raises(CorruptCheckpointError, match=rf"'w'.*{head.id}"):
        saver.get_tuple(cfg("w"))


@pytest.mark.parametrize("column", ["metadata", "tasks", "refs"])
def test_each_corrupt_checkpoint_column_is_reported(
    url: str, schema: str, saver: PostgresSaver, column: str
) -> None:
    head = grow(saver, "t", 2)[-1]
    query(
        url,
        sql.SQL("UPDATE {} SET {} = %s WHERE id = %s").format(
            table(schema, "checkpoints"), sql.Identifier(column)
        ),
        (CORRUPT_BYTES, head.id),
    )
    with pytest.raises(CorruptCheckpointError) as info:
        saver.get_tuple(cfg("t"))
    assert "'t'" in str(info.value) and head.id in str(info.value)


def _raw_bytes(url: str, schema: str) -> list[bytes]:
    out: list[bytes] = []
    columns = {
        "threads": ["metadata"],
        "checkpoints": ["metadata", "tasks", "refs"],
        "versions": ["data"],
        "writes": ["data"],
    }
    for name, cols in columns.items():
        for col in cols:
            rows = query(
                url,
                sql.SQL("SELECT {} FROM {} WHERE {} IS NOT NULL").format(
                    sql.Identifier(col), table(schema, name), sql.Identifier(col)
                ),
            )
            out += [bytes(r[0]) for r in rows]
    return out


@pytest.mark.parametrize("encrypted", [True, False])
def test_encrypted_rows_hold_no_plaintext(url: str, schema: str, encrypted: bool) -> None:
    secret = f"TOPSECRET-{uuid.uuid4().hex}"
    serde = MsgpackSerializer(encryption_key=os.urandom(32) if encrypted else None)
    with PostgresSaver.from_conn_string(url, schema=schema, serde=serde) as saver:
        head = saver.put(
            "t",
            "",
            draft([secret], metadata={"note": secret}, tasks=[{"name": secret}]),
            expected_head=None,
            thread_metadata={"owner": secret},
        )
        head = saver.put(
            "t",
            "",
            draft([secret, secret + "2"], parent=head, appended=[secret + "2"]),
            expected_head=head.id,
        )
        saver.put_writes("t", "", head.id, "task", [("items", secret)], expected_head=head.id)
        assert saver.get(cfg("t"))["channel_values"] == {"items": [secret, secret + "2"]}
        assert saver.list_threads(filter={"owner": secret})[0].thread_id == "t"
    raw = _raw_bytes(url, schema)
    assert len(raw) >= 6
    leaked = [r for r in raw if secret.encode() in r]
    if encrypted:
        assert leaked == []
    else:  # the control: without a key the same rows do hold the text
        assert leaked


# ---------------------------------------------------------------------- checkpoint ids


def _id_columns(url: str, schema: str) -> dict[str, str]:
    rows = query(
        url,
        sql.SQL(
            "SELECT table_name || '.' || column_name, udt_name FROM information_schema.columns"
            " WHERE table_schema = %s"
        ),
        (schema,),
    )
    return dict(rows)


def test_checkpoint_ids_are_stored_as_uuid_and_read_back_as_text(
    url: str, schema: str, saver: PostgresSaver
) -> None:
    c1, c2 = grow(saver, "t", 2)
    saver.put_writes("t", "", c2.id, "task", [("items", "w")], expected_head=c2.id)
    columns = _id_columns(url, schema)
    for column in (
        "threadline_checkpoints.id",
        "threadline_checkpoints.parent_id",
        "threadline_heads.head",
        "threadline_versions.writer",
        "threadline_versions.base",
        "threadline_writes.checkpoint_id",
    ):
        assert columns[column] == "uuid", column
    indexed = query(
        url,
        sql.SQL(
            "SELECT a.attname FROM pg_index i"
            " JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)"
            " JOIN pg_class c ON c.oid = i.indrelid"
            " WHERE c.relnamespace = %s::regnamespace AND a.atttypid = 'uuid'::regtype"
        ),
        (schema,),
    )
    assert {name for (name,) in indexed} == {"id", "writer", "checkpoint_id"}
    # The raw rows hold UUIDs (psycopg loads them as uuid.UUID) ...
    rows = query(
        url,
        sql.SQL("SELECT id, parent_id FROM {} ORDER BY seq").format(table(schema, "checkpoints")),
    )
    assert rows == [(uuid.UUID(c1.id), None), (uuid.UUID(c2.id), uuid.UUID(c1.id))]
    assert query(url, sql.SQL("SELECT head FROM {}").format(table(schema, "heads"))) == [
        (uuid.UUID(c2.id),)
    ]
    versions = query(
        url,
        sql.SQL("SELECT writer, base FROM {} ORDER BY writer").format(table(schema, "versions")),
    )
    assert versions == [(uuid.UUID(c1.id), None), (uuid.UUID(c2.id), uuid.UUID(c1.id))]
    writes = query(url, sql.SQL("SELECT checkpoint_id FROM {}").format(table(schema, "writes")))
    assert writes == [(uuid.UUID(c2.id),)]
    # ... and everything above the SQL sees the canonical strings.
    loaded = saver.get_tuple(cfg("t"))
    assert loaded is not None
    assert (loaded.checkpoint.id, loaded.checkpoint.parent_id) == (c2.id, c1.id)
    assert loaded.checkpoint.refs == c2.refs and c2.refs["items"].writer == c2.id
    assert [p.task_id for p in loaded.pending_writes] == ["task"]
    assert saver.locate(c1.id) == ("t", "")
    listed = list(saver.list(cfg("t")))
    assert [(c.checkpoint.id, c.checkpoint.parent_id) for c in listed] == [
        (c2.id, c1.id),
        (c1.id, None),
    ]
    assert saver.head_id("t") == c2.id
    assert saver.list_threads()[0].head_id == c2.id


def test_refs_hold_writers_as_16_bytes(url: str, schema: str, saver: PostgresSaver) -> None:
    first = saver.put(
        "t",
        "",
        CheckpointDraft(
            step=0,
            source="loop",
            metadata={},
            tasks=[],
            changes={"a": ChannelChange(1, None), "b": ChannelChange(2, None)},
            parent_id=None,
        ),
        expected_head=None,
    )
    second = saver.put(
        "t",
        "",
        CheckpointDraft(
            step=1,
            source="loop",
            metadata={},
            tasks=[],
            changes={"b": ChannelChange(3, None)},
            parent_id=first.id,
            base_refs=first.refs,
        ),
        expected_head=first.id,
    )
    (refs,) = query(
        url,
        sql.SQL("SELECT refs FROM {} WHERE id = %s").format(table(schema, "checkpoints")),
        (second.id,),
    )[0]
    raw = msgpack.unpackb(refs)
    # Another checkpoint's id as its 16 bytes; the checkpoint's own id as nil.
    assert {name: ref[0] for name, ref in raw.items()} == {
        "a": uuid.UUID(first.id).bytes,
        "b": None,
    }
    assert second.refs["a"] == first.refs["a"] and second.refs["b"].writer == second.id
    assert first.id.encode() not in refs and second.id.encode() not in refs
    assert saver.get(cfg("t"))["channel_values"] == {"a": 1, "b": 3}
    assert saver.get(cfg("t", first.id))["channel_values"] == {"a": 1, "b": 2}


class _Msgs(TypedDict):
    messages: Annotated[list[str], operator.add]


# Ids no checkpoint can have: not UUIDs, or UUIDs in another spelling than the canonical one
# new_checkpoint_id() makes (as text they matched no stored id either).
_NOT_IDS = ["nope", "x" * 36, "UPPER", "HEX", "BRACES", "NEWLINE"]


def _not_an_id(kind: str, real: str) -> str:
    return {
        "UPPER": real.upper(),
        "HEX": real.replace("-", ""),
        "BRACES": "{" + real + "}",
        "NEWLINE": real + "\n",
    }.get(kind, kind)


def _outcome(operation: Any, checkpoint_id: str) -> tuple[str, Any]:
    """What ``operation(checkpoint_id)`` did: what it returned, or the type of error it raised
    (with the head a conflict reports)."""
    try:
        return "returned", operation(checkpoint_id)
    except Exception as exc:
        return type(exc).__name__, getattr(exc, "actual", None)


@pytest.mark.parametrize("kind", _NOT_IDS)
def test_a_checkpoint_id_that_is_no_uuid_behaves_as_an_unknown_one(
    saver: PostgresSaver, kind: str
) -> None:
    c1, c2 = grow(saver, "t", 2)
    bad = _not_an_id(kind, c1.id)
    unknown = str(uuid.uuid4())

    def w(expected: str | None) -> Any:
        return lambda i: saver.put_writes(
            "t", "", i, "task", [("items", 1)], expected_head=expected
        )

    operations: dict[str, Any] = {
        "get_tuple": lambda i: saver.get_tuple(cfg("t", i)),
        "get": lambda i: saver.get(cfg("t", i)),
        "locate": saver.locate,
        "list before": lambda i: list(saver.list(cfg("t"), before=cfg("t", i))),
        "put expecting it": lambda i: saver.put("t", "", draft([9], parent=c2), expected_head=i),
        "put on a new thread expecting it": lambda i: saver.put(
            "new", "", draft([9]), expected_head=i
        ),
        "writes expecting it": lambda i: saver.put_writes(
            "t", "", c2.id, "task", [("items", 1)], expected_head=i
        ),
        "writes to it, head matches": w(c2.id),
        "writes to it, head differs": w(c1.id),
        "writes to it, no thread": lambda i: saver.put_writes(
            "missing", "", i, "task", [("items", 1)], expected_head=None
        ),
    }
    for name, op in operations.items():
        assert _outcome(op, bad) == _outcome(op, unknown), name
    # What that is: not found, or a conflict with the real head; nothing stored.
    with pytest.raises(CheckpointNotFoundError):
        saver.get_tuple(cfg("t", bad))
    assert saver.locate(bad) is None
    with pytest.raises(CheckpointConflictError) as info:
        saver.put("t", "", draft([9], parent=c2), expected_head=bad)
    assert info.value.actual == c2.id
    with pytest.raises(CheckpointNotFoundError):
        saver.put_writes("t", "", bad, "task", [("items", 1)], expected_head=c2.id)
    assert saver.head_id("t") == c2.id
    assert [c.checkpoint.id for c in saver.list(cfg("t"))] == [c2.id, c1.id]
    loaded = saver.get_tuple(cfg("t", c2.id))
    assert loaded is not None and loaded.pending_writes == []
    assert [t.thread_id for t in saver.list_threads()] == ["t"]


@pytest.mark.parametrize("bad", ["nope", "NEWLINE"])
def test_a_graph_given_a_checkpoint_id_that_is_no_uuid_says_not_found(
    saver: PostgresSaver, bad: str
) -> None:
    builder = StateGraph(_Msgs)
    builder.add_node("a", lambda s: {"messages": ["a"]})
    builder.add_edge(START, "a")
    builder.add_edge("a", END)
    app = builder.compile(checkpointer=saver)
    app.invoke({"messages": ["in"]}, cfg("t"))
    head = saver.head_id("t")
    assert head is not None
    bad = _not_an_id(bad, head)
    with pytest.raises(CheckpointNotFoundError, match="nope" if bad == "nope" else "checkpoint"):
        app.get_state(cfg("t", bad))
    with pytest.raises(CheckpointNotFoundError):
        app.invoke(None, cfg("t", bad))
    with pytest.raises(CheckpointNotFoundError):
        app.invoke({"messages": ["more"]}, cfg("t", bad))
    with pytest.raises(CheckpointNotFoundError):
        app.update_state(cfg("t", bad), {"messages": ["x"]})
    with pytest.raises(CheckpointNotFoundError):
        app.invoke(None, cfg("elsewhere", bad))
    assert saver.head_id("t") == head
    assert app.get_state(cfg("t")).values == {"messages": ["in", "a"]}


async def test_async_checkpoint_id_that_is_no_uuid_is_not_found(
    asaver: AsyncPostgresSaver,
) -> None:
    c = await asaver.aput("t", "", draft([1]), expected_head=None)
    with pytest.raises(CheckpointNotFoundError):
        await asaver.aget_tuple(cfg("t", "nope"))
    with pytest.raises(CheckpointNotFoundError):
        await asaver.aget_tuple(cfg("t", c.id.upper()))
    assert await asaver.alocate(c.id.upper()) is None
    with pytest.raises(CheckpointNotFoundError):
        [x async for x in asaver.alist(cfg("t"), before=cfg("t", "nope"))]
    with pytest.raises(CheckpointConflictError):
        await asaver.aput("t", "", draft([2], parent=c), expected_head="nope")
    with pytest.raises(CheckpointNotFoundError):
        await asaver.aput_writes("t", "", "nope", "task", [("items", 1)], expected_head=c.id)
    assert await asaver.ahead_id("t") == c.id


def test_a_new_checkpoint_id_that_is_no_uuid_is_refused(
    saver: PostgresSaver, url: str, schema: str
) -> None:
    head = grow(saver, "t", 1)[0]
    good = draft([1, 2], parent=head, appended=[2])
    bad_drafts = [
        dataclasses.replace(good, id="nope"),
        dataclasses.replace(good, id=str(uuid.uuid4()).upper()),
        dataclasses.replace(good, parent_id="nope"),
        dataclasses.replace(
            good, base_refs={"items": dataclasses.replace(head.refs["items"], writer="nope")}
        ),
    ]
    for d in bad_drafts:
        with pytest.raises(ValueError, match="UUID"):
            saver.put("t", "", d, expected_head=head.id)
    with pytest.raises(ValueError, match="UUID"):
        saver.put("new", "", dataclasses.replace(draft([1]), id="nope"), expected_head=None)
    assert saver.head_id("t") == head.id
    assert saver.head_id("new") is None
    counts = query(
        url,
        sql.SQL("SELECT (SELECT count(*) FROM {}), (SELECT count(*) FROM {})").format(
            table(schema, "checkpoints"), table(schema, "versions")
        ),
    )
    assert counts == [(1, 1)]
    assert saver.put("t", "", good, expected_head=head.id).parent_id == head.id


# ---------------------------------------------------------------------- filters


@pytest.mark.parametrize(
    "key", ["a'; DROP TABLE x; --", "x) OR 1=1 --", "meta->>'a'", 'a"b', "a b", "", 1]
)
def test_injection_in_filter_keys_is_rejected(saver: PostgresSaver, key: Any) -> None:
    grow(saver, "t", 1)
    with pytest.raises(ValueError, match="filter"):
        list(saver.list(cfg("t"), filter={key: 1}))
    with pytest.raises(ValueError, match="filter"):
        saver.list_threads(filter={key: 1})


def test_sql_in_a_filter_value_is_just_data(url: str, schema: str, saver: PostgresSaver) -> None:
    evil = f"x'; DROP SCHEMA {schema} CASCADE; --"
    grow(saver, "evil", 1, thread_metadata={"name": evil})
    grow(saver, "plain", 1, thread_metadata={"name": "x"})
    saver.put("meta", "", draft([1], metadata={"name": evil}), expected_head=None)
    assert [t.thread_id for t in saver.list_threads(filter={"name": evil})] == ["evil"]
    assert [t.thread_id for t in saver.list_threads(filter={"name": "x'"})] == []
    assert len(list(saver.list(cfg("meta"), filter={"name": evil}))) == 1
    assert len(list(saver.list(cfg("meta"), filter={"name": "x' OR '1'='1"}))) == 0
    assert len(saver.list_threads()) == 3


def test_list_threads_filters_across_pages(
    saver: PostgresSaver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pg_core, "_THREAD_PAGE", 3)
    for i in range(11):
        saver.put(f"t{i:02d}", "", draft([i]), expected_head=None, thread_metadata={"odd": i % 2})
    odd = [t.thread_id for t in saver.list_threads(filter={"odd": 1})]
    assert odd == [f"t{i:02d}" for i in (9, 7, 5, 3, 1)]
    assert [t.thread_id for t in saver.list_threads(filter={"odd": 1}, offset=1, limit=3)] == [
        "t07",
        "t05",
        "t03",
    ]
    assert [t.thread_id for t in saver.list_threads(limit=2, offset=1)] == ["t09", "t08"]


def test_synchronous_commit_option_reaches_the_connections() -> None:
    url = postgres_url_or_skip()
    schema = f"tl_sc_{uuid.uuid4().hex[:8]}"
    try:
        with PostgresSaver.from_conn_string(url, schema=schema, synchronous_commit="off") as saver:
            pool = saver._pool
            assert pool is not None
            with pool.connection() as conn:
                row = conn.execute("SHOW synchronous_commit").fetchone()
            assert row is not None and row[0] == "off"
        with pytest.raises(ValueError, match="synchronous_commit"):
            PostgresSaver.from_conn_string(url, schema=schema, synchronous_commit="sometimes")
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
