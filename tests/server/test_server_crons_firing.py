"""Firing crons exactly once: the scheduler over a real database, on SQLite and PostgreSQL.

A due time is claimed in the transaction that inserts its run. These tests drive
:class:`~threadline.server.scheduler.Scheduler` directly (one ``fire_due`` call is one tick),
with failures injected between the claim and the run's insert: by a real trigger, or by
:class:`FailingRunInserts`, the real database with its run-creating statement made to fail as
it would when the connection is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import psycopg
import pytest

from threadline.server import runs as q
from threadline.server.crons import COLUMNS, Cron
from threadline.server.db import Database, Tx, open_database
from threadline.server.graphs import assistant_id_of
from threadline.server.scheduler import TRANSIENT_RETRIES, Scheduler
from threadline.server.wire import now_iso

ECHO = "echo"


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A SQLite file of the test's own, or the module's fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'threadline.db'}"
    url: str = request.getfixturevalue("postgres_database")
    return url


@contextlib.asynccontextmanager
async def opened(url: str, count: int = 1) -> AsyncIterator[list[Database]]:
    """``count`` connectors to the database (replicas; SQLite: one, shared)."""
    dbs = [await open_database(url)]
    if not url.startswith("sqlite:"):
        dbs += [await open_database(url) for _ in range(count - 1)]
    try:
        yield dbs * count if len(dbs) == 1 else dbs
    finally:
        for db in dbs:
            await db.close()


def _creates_run(sql: str) -> bool:
    return sql.lstrip().startswith("INSERT INTO tl_runs") or "tl_create_run_v1(" in sql


class _FailingTx:
    def __init__(self, tx: Tx, owner: FailingRunInserts) -> None:
        self._tx, self._owner = tx, owner
        self.kind = tx.kind

    async def execute(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        self._owner.check(sql, args)
        return await self._tx.execute(sql, args)

    def publish(self, key: str) -> None:
        self._tx.publish(key)

    def wake(self, key: str) -> None:
        self._tx.wake(key)


class FailingRunInserts:
    """``db`` itself, except that while :attr:`failing` a statement that would create a run
    (of the cron ``only``, if given) raises what losing the connection raises there, instead
    of reaching the database."""

    def __init__(self, db: Database, only: Cron | None = None) -> None:
        self._db = db
        self.kind = db.kind
        self.notifier = db.notifier
        self.failing = True
        self.failed = 0
        self._only = only

    def check(self, sql: str, args: Sequence[Any]) -> None:
        mine = self._only is None or any(self._only.cron_id in str(a) for a in args)
        if self.failing and mine and _creates_run(sql):
            self.failed += 1
            if self.kind == "postgres":
                raise psycopg.OperationalError("server closed the connection unexpectedly")
            raise sqlite3.OperationalError("disk I/O error")

    async def execute(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        self.check(sql, args)
        return await self._db.execute(sql, args)

    async def change(self, sql: str, args: Sequence[Any], *keys: str) -> None:
        self.check(sql, args)
        await self._db.change(sql, args, *keys)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Tx]:
        async with self._db.transaction() as tx:
            yield _FailingTx(tx, self)

    async def publish(self, *keys: str) -> None:
        await self._db.publish(*keys)

    async def close(self) -> None:
        await self._db.close()


async def due_cron(db: Database, *, payload: dict[str, Any] | None = None) -> Cron:
    """A stateless cron of the echo graph, due a second ago, next due next New Year."""
    now = now_iso()
    cron = Cron(
        str(uuid.uuid4()), assistant_id_of(ECHO), None, "0 0 1 1 *", None,
        payload or {"input": {"messages": ["tick"]}, "on_completion": "keep"}, {}, "keep", None,
        True, time.time() - 1, now, now,
    )  # fmt: skip
    await db.execute(f"INSERT INTO tl_crons ({COLUMNS}) VALUES ({', '.join('?' * 13)})", cron.row())
    return cron


async def make_due(db: Database, cron: Cron) -> float:
    due = time.time() - 1
    await db.execute("UPDATE tl_crons SET next_run_date = ? WHERE cron_id = ?", (due, cron.cron_id))
    return due


async def next_run_date(db: Database, cron: Cron) -> float | None:
    rows = await db.execute("SELECT next_run_date FROM tl_crons WHERE cron_id = ?", (cron.cron_id,))
    found: float | None = rows[0][0]
    return found


async def runs_of(db: Database, cron: Cron) -> list[str]:
    rows = await db.execute(
        "SELECT run_id FROM tl_runs WHERE metadata LIKE ? ORDER BY enqueued",
        (f"%{cron.cron_id}%",),
    )
    return [str(r[0]) for r in rows]


def run_id_for(cron: Cron, due: float) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"cron:{cron.cron_id}:{due!r}"))


def logged(caplog: pytest.LogCaptureFixture, cron: Cron, level: int) -> int:
    return sum(1 for r in caplog.records if r.levelno == level and cron.cron_id in r.getMessage())


@pytest.fixture
def log_of_crons(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    caplog.set_level(logging.INFO, logger="threadline.server")
    yield caplog


async def test_a_failure_between_claim_and_insert_leaves_the_time_to_the_next_tick(
    database_url: str,
) -> None:
    # The old scheduler claimed the time on its own first: the failed insert lost it.
    async with opened(database_url) as (db,):
        cron = await due_cron(db)
        due = cron.next_run_date
        assert due is not None
        flaky = FailingRunInserts(db, cron)
        scheduler = Scheduler(flaky, [ECHO])
        assert await scheduler.fire_due() == []
        assert flaky.failed == 1
        assert await next_run_date(db, cron) == due  # not claimed: still due
        assert await runs_of(db, cron) == []
        flaky.failing = False
        assert await scheduler.fire_due() == [run_id_for(cron, due)]
        following = await next_run_date(db, cron)
        assert following is not None and following > time.time()
        assert await scheduler.fire_due() == []
        assert await runs_of(db, cron) == [run_id_for(cron, due)]


@pytest.mark.postgres
async def test_a_serialization_failure_raised_by_a_trigger_is_tried_again(
    postgres_database: str,
) -> None:
    # A real PostgreSQL error from inside tl_create_run_v1: a trigger on tl_runs fails the
    # cron's first insert (a sequence counts, as it is not rolled back with the insert).
    async with opened(postgres_database) as (db,):
        cron = await due_cron(db)
        name = f"tl_test_fault_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(postgres_database, autocommit=True) as conn:
            conn.execute(f"CREATE SEQUENCE {name}")
            conn.execute(
                f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
                f" IF NEW.metadata LIKE '%{cron.cron_id}%' AND nextval('{name}') = 1 THEN"
                "  RAISE EXCEPTION 'could not serialize access' USING ERRCODE = '40001';"
                " END IF; RETURN NEW; END $$"
            )
            conn.execute(
                f"CREATE TRIGGER {name} BEFORE INSERT ON tl_runs FOR EACH ROW"
                f" EXECUTE FUNCTION {name}()"
            )
        try:
            scheduler = Scheduler(db, [ECHO])
            assert await scheduler.fire_due() == []
            assert await next_run_date(db, cron) == cron.next_run_date
            assert cron.next_run_date is not None
            assert await scheduler.fire_due() == [run_id_for(cron, cron.next_run_date)]
            assert await scheduler.fire_due() == []
            assert len(await runs_of(db, cron)) == 1
        finally:
            with psycopg.connect(postgres_database, autocommit=True) as conn:
                conn.execute(f"DROP TRIGGER {name} ON tl_runs")
                conn.execute(f"DROP FUNCTION {name}()")
                conn.execute(f"DROP SEQUENCE {name}")


@pytest.mark.postgres
async def test_many_schedulers_racing_fire_each_due_time_exactly_once(
    postgres_database: str,
) -> None:
    # Four replicas' schedulers tick at once, over and over, on three due crons. In each
    # round every insert first fails (all replicas), then fails on half of them, then on none:
    # every due time still fires, once. The old scheduler lost each time in the first tick.
    async with opened(postgres_database, 4) as dbs:
        flaky = [FailingRunInserts(db) for db in dbs]
        schedulers = [Scheduler(f, [ECHO]) for f in flaky]
        crons = [await due_cron(dbs[0]) for _ in range(3)]
        expected: dict[str, list[str]] = {c.cron_id: [] for c in crons}
        for round_ in range(3):
            if round_:
                for cron in crons:
                    await make_due(dbs[0], cron)
            dues = {c.cron_id: await next_run_date(dbs[0], c) for c in crons}
            for cron in crons:
                due = dues[cron.cron_id]
                assert due is not None
                expected[cron.cron_id].append(run_id_for(cron, due))
            fired: list[str] = []
            for failing in ([True] * 4, [True, False] * 2, [False] * 4, [False] * 4):
                for f, fails in zip(flaky, failing, strict=True):
                    f.failing = fails
                ticks = await asyncio.gather(*(s.fire_due() for s in schedulers))
                fired += [run_id for tick in ticks for run_id in tick]
            assert sorted(fired) == sorted(ids[-1] for ids in expected.values())
            for cron in crons:
                assert await runs_of(dbs[1], cron) == expected[cron.cron_id]
                following = await next_run_date(dbs[2], cron)
                assert following is not None and following > time.time()
        assert sum(f.failed for f in flaky) >= 3 * 4  # the first tick of each round failed


async def test_a_cron_that_can_never_fire_is_skipped_once_per_due_time(
    database_url: str, log_of_crons: pytest.LogCaptureFixture
) -> None:
    # Two kinds of failure that would recur on every try: a payload no run can be made of
    # (a row written by hand, or by an older release: the API checks what it stores), and a
    # trigger refusing the run's row. Two schedulers (replicas, on PostgreSQL) tick together.
    async with opened(database_url, 2) as dbs:
        bad_payload = await due_cron(dbs[0], payload={"config": "not an object"})
        refused = await due_cron(dbs[0])
        if dbs[0].kind == "sqlite":
            await dbs[0].execute(
                f"CREATE TRIGGER refuse_{refused.cron_id[:8]} BEFORE INSERT ON tl_runs"
                f" WHEN NEW.metadata LIKE '%{refused.cron_id}%'"
                " BEGIN SELECT RAISE(ABORT, 'refused by a trigger'); END"
            )
        else:
            with psycopg.connect(database_url, autocommit=True) as conn:
                conn.execute(
                    f"CREATE FUNCTION refuse_{refused.cron_id[:8]}() RETURNS trigger"
                    " LANGUAGE plpgsql AS $$ BEGIN IF NEW.metadata LIKE"
                    f" '%{refused.cron_id}%' THEN RAISE EXCEPTION 'refused by a trigger'"
                    " USING ERRCODE = '23514'; END IF; RETURN NEW; END $$"
                )
                conn.execute(
                    f"CREATE TRIGGER refuse_{refused.cron_id[:8]} BEFORE INSERT ON tl_runs"
                    f" FOR EACH ROW EXECUTE FUNCTION refuse_{refused.cron_id[:8]}()"
                )
        schedulers = [Scheduler(db, [ECHO]) for db in dbs]
        for round_ in range(1, 3):
            for _ in range(4):  # ticks
                ticks = await asyncio.gather(*(s.fire_due() for s in schedulers))
                assert ticks == [[], []]
            for cron in (bad_payload, refused):
                following = await next_run_date(dbs[0], cron)
                assert following is not None and following > time.time()  # claimed
                assert logged(log_of_crons, cron, logging.ERROR) == round_
                assert await runs_of(dbs[0], cron) == []
                if round_ == 1:
                    await make_due(dbs[0], cron)


async def test_a_transient_failure_that_never_passes_is_given_up(
    database_url: str, log_of_crons: pytest.LogCaptureFixture
) -> None:
    async with opened(database_url) as (db,):
        cron = await due_cron(db)
        flaky = FailingRunInserts(db, cron)
        scheduler = Scheduler(flaky, [ECHO])
        for _ in range(TRANSIENT_RETRIES - 1):
            assert await scheduler.fire_due() == []
            assert await next_run_date(db, cron) == cron.next_run_date
        assert logged(log_of_crons, cron, logging.WARNING) == TRANSIENT_RETRIES - 1
        assert logged(log_of_crons, cron, logging.ERROR) == 0
        assert await scheduler.fire_due() == []
        assert flaky.failed == TRANSIENT_RETRIES
        following = await next_run_date(db, cron)
        assert following is not None and following > time.time()  # skipped
        assert logged(log_of_crons, cron, logging.ERROR) == 1
        for _ in range(3):
            assert await scheduler.fire_due() == []
        assert flaky.failed == TRANSIENT_RETRIES
        # Its next due time gets its own tries.
        await make_due(db, cron)
        flaky.failing = False
        assert len(await scheduler.fire_due()) == 1


async def test_a_time_whose_run_exists_is_taken_as_fired(database_url: str) -> None:
    async with opened(database_url) as (db,):
        cron = await due_cron(db)
        assert cron.next_run_date is not None
        run_id = run_id_for(cron, cron.next_run_date)
        await q.create_run(
            db, thread_id=str(uuid.uuid4()), assistant_id=cron.assistant_id, graph_id=ECHO,
            kwargs={}, metadata={"cron_id": cron.cron_id}, strategy="enqueue",
            create_thread=True, run_id=run_id,
        )  # fmt: skip
        scheduler = Scheduler(db, [ECHO])
        assert await scheduler.fire_due() == []
        following = await next_run_date(db, cron)
        assert following is not None and following > time.time()
        assert await runs_of(db, cron) == [run_id]


async def test_a_refused_run_rolls_back_and_skips_only_that_time(
    database_url: str, log_of_crons: pytest.LogCaptureFixture
) -> None:
    # multitask_strategy reject on a busy thread: nothing of the run is stored (the thread
    # stays as it was), the due time is claimed alone, and the cron fires at its next one.
    async with opened(database_url) as (db,):
        thread_id = str(uuid.uuid4())
        busy, _, _ = await q.create_run(
            db, thread_id=thread_id, assistant_id="a", graph_id=ECHO, kwargs={}, metadata={},
            strategy="enqueue", create_thread=True,
        )  # fmt: skip
        now = now_iso()
        cron = Cron(
            str(uuid.uuid4()), assistant_id_of(ECHO), thread_id, "0 0 1 1 *", None,
            {"multitask_strategy": "reject"}, {}, None, None, True, time.time() - 1, now, now,
        )  # fmt: skip
        await db.execute(
            f"INSERT INTO tl_crons ({COLUMNS}) VALUES ({', '.join('?' * 13)})", cron.row()
        )
        before = await db.execute(
            "SELECT updated_at FROM tl_threads WHERE thread_id = ?", (thread_id,)
        )
        scheduler = Scheduler(db, [ECHO])
        assert await scheduler.fire_due() == []
        assert await runs_of(db, cron) == []
        assert logged(log_of_crons, cron, logging.WARNING) == 1
        following = await next_run_date(db, cron)
        assert following is not None and following > time.time()
        after = await db.execute(
            "SELECT updated_at FROM tl_threads WHERE thread_id = ?", (thread_id,)
        )
        assert after == before  # the create's first statement was rolled back too
        await db.execute("DELETE FROM tl_runs WHERE run_id = ?", (busy["run_id"],))
        await make_due(db, cron)
        assert len(await scheduler.fire_due()) == 1


async def test_create_run_in_a_callers_transaction_commits_and_announces_with_it(
    database_url: str,
) -> None:
    async with opened(database_url, 2) as (db, other):
        if db.kind == "postgres":
            await asyncio.sleep(0.3)  # both LISTEN connections are up
        marker = str(uuid.uuid4())

        async def create(tx: Tx) -> None:
            await tx.execute(
                "INSERT INTO tl_maintenance (name, owner, next_at) VALUES (?, NULL, 0)",
                (marker,),
            )
            await q.create_run(
                db, thread_id=str(uuid.uuid4()), assistant_id="a", graph_id=ECHO, kwargs={},
                metadata={"marker": marker}, strategy="enqueue", create_thread=True, tx=tx,
            )  # fmt: skip

        async def stored() -> list[int]:
            rows = await db.execute(
                "SELECT (SELECT COUNT(*) FROM tl_runs WHERE metadata LIKE ?),"
                " (SELECT COUNT(*) FROM tl_maintenance WHERE name = ?)",
                (f"%{marker}%", marker),
            )
            return [int(n) for n in rows[0]]

        with db.notifier.subscribe("queue") as here, other.notifier.subscribe("queue") as there:
            with pytest.raises(RuntimeError):
                async with db.transaction() as tx:
                    await create(tx)
                    raise RuntimeError("roll back")
            assert await stored() == [0, 0]
            assert not here.is_set()
            async with db.transaction() as tx:
                await create(tx)
                assert not here.is_set()  # not before the commit
            assert await stored() == [1, 1]
            assert here.is_set()
            await asyncio.wait_for(there.wait(), 5)  # PostgreSQL: the other replica heard it


@pytest.mark.postgres
async def test_a_claim_skips_a_cron_another_replica_holds_instead_of_waiting(
    postgres_database: str,
) -> None:
    # Another replica's claim holds the row lock of two due crons (one to fire, one whose
    # assistant is gone, to be skipped by a claim of its own) in an open transaction. This
    # replica's tick passes both by at once and fires the third; it used to wait for the lock.
    async with opened(postgres_database) as (db,):
        held = await due_cron(db)
        gone = await due_cron(db)
        await db.execute(
            "UPDATE tl_crons SET assistant_id = ? WHERE cron_id = ?",
            (str(uuid.uuid4()), gone.cron_id),
        )
        free = await due_cron(db)
        assert held.next_run_date is not None and free.next_run_date is not None
        scheduler = Scheduler(db, [ECHO])
        with psycopg.connect(postgres_database) as locking:  # a transaction, until commit
            locking.execute(
                "SELECT 1 FROM tl_crons WHERE cron_id = ANY(%s) FOR UPDATE",
                ([held.cron_id, gone.cron_id],),
            )
            tick = asyncio.ensure_future(scheduler.fire_due())
            try:
                done, _ = await asyncio.wait({tick}, timeout=5)
            finally:
                locking.rollback()  # the other replica's claim fails: the times stay due
            fired = await tick
            assert done, "the claim waited for the row lock another replica holds"
        assert run_id_for(free, free.next_run_date) in fired
        assert run_id_for(held, held.next_run_date) not in fired
        assert await next_run_date(db, held) == held.next_run_date
        assert await next_run_date(db, gone) == gone.next_run_date
        # Unlocked, the next tick takes them.
        assert run_id_for(held, held.next_run_date) in await scheduler.fire_due()
        assert (await next_run_date(db, gone) or 0) > time.time()
        assert await runs_of(db, held) == [run_id_for(held, held.next_run_date)]
