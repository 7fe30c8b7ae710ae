"""Housekeeping turns: once per interval across replicas, whichever replica takes it."""

from __future__ import annotations

import asyncio
from pathlib import Path

from threadline.checkpoint import from_url as saver_from_url
from threadline.server.db import open_database
from threadline.server.maintenance import Job, Maintenance, take_turn
from threadline.server.threads import insert_thread, sweep_expired
from threadline.store.sqlite.aio import AsyncSqliteStore


async def test_one_replica_of_two_takes_each_turn(postgres_database: str) -> None:
    a, b = await open_database(postgres_database), await open_database(postgres_database)
    try:
        name = "test-turns"
        both = await asyncio.gather(take_turn(a, name, 60, "r0"), take_turn(b, name, 60, "r1"))
        assert sorted(both) == [False, True]
        assert not await take_turn(a, name, 60, "r0")  # not due again for a minute
        assert await take_turn(b, "test-other-job", 60, "r1")  # jobs have turns of their own
    finally:
        await a.close()
        await b.close()


async def test_a_due_job_runs_and_a_failing_one_does_not_stop_the_others(tmp_path: Path) -> None:
    db = await open_database(f"sqlite:///{tmp_path / 's.db'}")
    ran: list[str] = []

    async def ok() -> None:
        ran.append("ok")

    async def boom() -> None:
        raise RuntimeError("boom")

    try:
        maintenance = Maintenance(db, "me", [Job("boom", 0.01, boom), Job("ok", 60, ok)])
        assert await maintenance.run_due() == ["boom", "ok"]
        assert ran == ["ok"]
        await asyncio.sleep(0.02)
        assert await maintenance.run_due() == ["boom"]  # "ok" is not due for a minute
        assert ran == ["ok"]
    finally:
        await db.close()


async def test_the_store_sweep_deletes_expired_items(tmp_path: Path) -> None:
    db = await open_database(f"sqlite:///{tmp_path / 's.db'}")
    store = AsyncSqliteStore.from_conn_string(str(tmp_path / "store.db"))
    async with store:
        await store.setup()
        await store.aput(("users", "ada"), "short", {"v": 1}, ttl=0.001)  # minutes: 60 ms
        await store.aput(("users", "ada"), "kept", {"v": 2})
        await asyncio.sleep(0.2)
        maintenance = Maintenance(db, "me", [Job("store-ttl", 60, store.asweep_ttl)])
        assert await maintenance.run_due() == ["store-ttl"]
        assert await store.asweep_ttl() == 0  # the job already deleted the expired item
        keys = [i.key for i in await store.asearch(("users",))]
        assert keys == ["kept"]
    await db.close()


async def test_the_thread_sweep_takes_at_most_its_limit_soonest_expired_first(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    db = await open_database(url)
    async with saver_from_url(url, aio=True, auto_sweep=False) as saver:
        await saver.setup()
        for i, strategy in enumerate(["delete", "delete", "keep_latest", "delete"]):
            thread_id = f"t{i}"
            await insert_thread(db, thread_id, {}, ttl=(strategy, 60))
            await db.execute(  # expired, the first one first
                "UPDATE tl_thread_ttl SET expires_at = ? WHERE thread_id = ?", (i, thread_id)
            )
        assert await sweep_expired(db, saver, limit=2) == 2
        left = [r[0] for r in await db.execute("SELECT thread_id FROM tl_threads ORDER BY 1")]
        assert left == ["t2", "t3"]
        assert await sweep_expired(db, saver, limit=2) == 2  # t3 deleted, t2 pruned
        left = [r[0] for r in await db.execute("SELECT thread_id FROM tl_threads ORDER BY 1")]
        assert left == ["t2"]
        assert await sweep_expired(db, saver) == 0  # t2's TTL started again
    await db.close()
