"""Two ``threadline serve`` replicas behind a real PgBouncer in transaction pooling mode.

``--database-url`` goes through PgBouncer (few server connections, so one client's
transactions land on different ones), ``--listen-url`` straight to PostgreSQL, and
``--no-prepare`` keeps every connection free of server-side prepared statements.
"""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from backends import postgres_url_or_skip
from pgbouncer import PgBouncer
from servers import Replica, clients, fresh_postgres_database, replicas

from threadline.server.notify import CHANNEL


@pytest.fixture(scope="module")
def bounced(pgbouncer: PgBouncer, postgres_database: str) -> Iterator[list[Replica]]:
    args = ["--listen-url", postgres_database, "--no-prepare", "--pool-size", "3"]
    with replicas(pgbouncer.url, 2, args=args) as started:
        yield started


def _urls(bounced: list[Replica]) -> list[str]:
    return [r.url for r in bounced]


def _wait_status(client: Any, thread_id: str, run_id: str, status: str) -> None:
    deadline = time.monotonic() + 30
    while client.runs.get(thread_id, run_id)["status"] != status:
        assert time.monotonic() < deadline, f"the run never became {status}"
        time.sleep(0.05)


def test_threads_and_wait_across_replicas(bounced: list[Replica]) -> None:
    a, b = clients(_urls(bounced))
    thread = a.threads.create(metadata={"via": "pgbouncer"})
    for i in range(8):  # past psycopg's prepare threshold (5 uses) on every connection
        result = b.runs.wait(thread["thread_id"], "echo", input={"messages": [f"m{i}"]})
        assert result["messages"][-1] == f"reply to m{i}"
    got = a.threads.get(thread["thread_id"])
    assert got["status"] == "idle" and got["metadata"] == {"via": "pgbouncer"}
    assert len(got["values"]["messages"]) == 16
    assert [t["thread_id"] for t in b.threads.search(metadata={"via": "pgbouncer"})] == [
        thread["thread_id"]
    ]
    history = a.threads.get_history(thread["thread_id"], limit=100)
    assert history[0]["values"]["messages"] == got["values"]["messages"]


def test_stream_from_the_other_replica(bounced: list[Replica]) -> None:
    a, b = clients(_urls(bounced))
    thread_id = a.threads.create()["thread_id"]
    parts = list(
        b.runs.stream(thread_id, "steps", input={"messages": []}, stream_mode=["updates", "values"])
    )
    assert parts[0].event == "metadata"
    assert [p.event for p in parts[1:]].count("updates") == 2
    assert parts[-1].event == "values" and parts[-1].data["messages"] == ["one", "two"]


def test_interrupt_on_one_replica_resume_on_the_other(bounced: list[Replica]) -> None:
    a, b = clients(_urls(bounced))
    thread_id = a.threads.create()["thread_id"]
    paused = a.runs.wait(thread_id, "approval", input={"messages": []})
    assert paused["__interrupt__"][0]["value"] == {"question": "approve?"}
    assert b.threads.get(thread_id)["status"] == "interrupted"
    done = b.runs.wait(thread_id, "approval", command={"resume": "yes"})
    assert done["messages"] == ["answer: yes"]
    assert a.threads.get(thread_id)["status"] == "idle"


def test_cancel_from_the_other_replica_reaches_the_run_at_once(bounced: list[Replica]) -> None:
    a, b = clients(_urls(bounced))
    thread_id = a.threads.create()["thread_id"]
    run = a.runs.create(thread_id, "slow", input={"messages": ["nap:30"]})
    _wait_status(a, thread_id, run["run_id"], "running")
    started = time.monotonic()
    b.runs.cancel(thread_id, run["run_id"], wait=True)
    assert time.monotonic() - started < 15  # not after the 30 s nap
    assert a.runs.get(thread_id, run["run_id"])["status"] == "interrupted"
    assert b.runs.wait(thread_id, "echo", input={"messages": ["next"]})["messages"][-1] == (
        "reply to next"
    )


def test_two_messages_at_once_through_both_replicas_are_each_applied_once(
    bounced: list[Replica],
) -> None:
    a, b = clients(_urls(bounced))
    thread_id = a.threads.create()["thread_id"]
    sent: list[str] = []
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        for i in range(5):
            pair = [f"m{i}a", f"m{i}b"]
            sent += pair
            futures = [
                pool.submit(
                    c.runs.wait, thread_id, "echo", input={"messages": [m]},
                    multitask_strategy="enqueue",
                )
                for c, m in zip((a, b), pair, strict=True)
            ]  # fmt: skip
            for future in futures:
                future.result(timeout=60)
    messages = b.threads.get_state(thread_id)["values"]["messages"]
    inputs = messages[0::2]
    assert sorted(inputs) == sorted(sent)
    assert messages[1::2] == [f"reply to {m}" for m in inputs]
    runs = a.runs.list(thread_id, limit=100)
    assert len(runs) == 10 and {r["status"] for r in runs} == {"success"}


def test_the_traffic_went_through_pgbouncer_in_transaction_mode(
    bounced: list[Replica], pgbouncer: PgBouncer
) -> None:
    a, _ = clients(_urls(bounced))
    a.runs.wait(None, "echo", input={"messages": ["counted"]})
    config = {row["key"]: row["value"] for row in pgbouncer.admin("SHOW CONFIG")}
    assert config["pool_mode"] == "transaction"
    (stats,) = [s for s in pgbouncer.admin("SHOW STATS") if s["database"] == pgbouncer.database]
    assert stats["total_xact_count"] > 50
    # Many client connections, at most the few server connections PgBouncer was given.
    (pool,) = [p for p in pgbouncer.admin("SHOW POOLS") if p["database"] == pgbouncer.database]
    assert pool["cl_active"] + pool["cl_waiting"] > pool["sv_active"] + pool["sv_idle"]


def test_the_pool_size_bounds_each_replicas_connections() -> None:
    with fresh_postgres_database(postgres_url_or_skip()) as database:
        with replicas(database, 2, args=["--pool-size", "1"]) as started:
            a, b = clients(_urls(started))
            threads = [a.threads.create()["thread_id"] for _ in range(6)]
            with concurrent.futures.ThreadPoolExecutor(6) as pool:  # enough to grow a pool
                calls = [
                    pool.submit(c.runs.wait, t, "echo", input={"messages": [f"m{i}"]})
                    for i in range(3)
                    for t, c in zip(threads, (a, b) * 3, strict=True)
                ]
                assert all(f.result(timeout=60)["messages"] for f in calls)
            name = database.rpartition("/")[2]
            with psycopg.connect(database, autocommit=True) as conn:
                (count,) = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = %s"
                    " AND pid <> pg_backend_pid()",
                    (name,),
                ).fetchone() or (0,)
        # Per replica: one each for its tables, checkpointer and store, LISTEN, lease renewer.
        assert count <= 2 * 5


def test_each_replica_listens_on_a_connection_of_its_own_to_postgresql(
    bounced: list[Replica], pgbouncer: PgBouncer, postgres_database: str
) -> None:
    pooled = {s["remote_pid"] for s in pgbouncer.admin("SHOW SERVERS")}
    with psycopg.connect(postgres_database, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND query = %s",
            (f"LISTEN {CHANNEL}",),
        ).fetchall()
    assert len({pid for (pid,) in rows} - pooled) == len(bounced)
