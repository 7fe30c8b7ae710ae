"""Runs as rows on PostgreSQL: creating and finishing one racing on the same thread."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import psycopg
import pytest

from threadline.server import runs as q
from threadline.server.db import open_database
from threadline.server.notify import CHANNEL

pytestmark = pytest.mark.postgres


async def _running_run(db: q.Database, thread_id: str, owner: str) -> tuple[object, ...]:
    _, _, claimed = await q.create_run(
        db, thread_id=thread_id, assistant_id="a", graph_id="g", kwargs={}, metadata={},
        strategy="enqueue", create_thread=True, owner=owner,
    )  # fmt: skip
    assert claimed is not None and claimed[4] == "running"
    return claimed


async def _status(db: q.Database, thread_id: str) -> str:
    rows = await db.execute("SELECT status FROM tl_threads WHERE thread_id = ?", (thread_id,))
    return str(rows[0][0])


async def test_a_run_queued_while_its_thread_finishes_one_leaves_the_thread_busy(
    postgres_database: str,
) -> None:
    db = await open_database(postgres_database)
    try:
        thread_id, owner = str(uuid.uuid4()), "replica-a"
        first = await _running_run(db, thread_id, owner)
        queued = str(uuid.uuid4())
        # Another replica queues a run behind it and has not committed yet: it holds the
        # thread row while the first run finishes.
        async with await psycopg.AsyncConnection.connect(postgres_database) as other:
            await other.execute(
                "SELECT * FROM tl_create_run_v1(%s, %s, 'a', 'g', '{}', '{}', 'enqueue', false,"
                " 0, %s, false, 'now', NULL, 0, NULL, NULL, %s, 'other')",
                (queued, thread_id, time.time(), CHANNEL),
            )
            finishing = asyncio.ensure_future(
                q.finish_run(db, first, owner, status="success", result={}, thread_status="idle")
            )
            await asyncio.sleep(0.3)
            assert not finishing.done()  # waits for the thread row
            await other.commit()
        assert await finishing
        # The finished run saw the queued one: the thread stays busy (it used to say idle).
        assert await _status(db, thread_id) == "busy"
        rows = await db.execute("SELECT status FROM tl_runs WHERE run_id = ?", (queued,))
        assert rows == [("pending",)]
    finally:
        await db.close()


async def test_interrupting_a_run_that_is_finishing_waits_instead_of_deadlocking(
    postgres_database: str,
) -> None:
    db = await open_database(postgres_database)
    try:
        thread_id, owner = str(uuid.uuid4()), "replica-a"
        first = await _running_run(db, thread_id, owner)
        interrupt = q.create_run(
            db,
            thread_id=thread_id,
            assistant_id="a",
            graph_id="g",
            kwargs={},
            metadata={},
            strategy="interrupt",
        )
        interrupting = asyncio.ensure_future(interrupt)
        finishing = asyncio.ensure_future(
            q.finish_run(db, first, owner, status="success", result={"n": 1}, thread_status="idle")
        )
        run, cancelled, claimed = await asyncio.wait_for(interrupting, 10)
        assert await asyncio.wait_for(finishing, 10)
        # Whichever came first, the first run has its outcome and the second is queued (it
        # was created while the first was in flight) or cancelled nothing (after it).
        rows = await db.execute("SELECT status, result FROM tl_runs WHERE run_id = ?", (first[0],))
        assert rows[0][0] == "success" and json.loads(rows[0][1]) == {"n": 1}
        assert claimed is None and run["status"] == "pending"
        assert cancelled in ([], [first[0]])
    finally:
        await db.close()
