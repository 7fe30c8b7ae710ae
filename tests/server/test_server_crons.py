"""Crons through ``langgraph_sdk`` against real servers: create, update, search, count, delete,
and firing (once per due time across two PostgreSQL replicas).

A cron fires when its ``next_run_date`` has passed. Waiting for ``* * * * *`` would take up to
a minute, so the tests make a cron due by writing its row's ``next_run_date`` to the past in
the database (:func:`make_due`), then watch the replicas' scheduler (once a second) fire it.
Failures while firing, and schedulers racing, are tested in ``test_server_crons_firing.py``.
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import pytest
from langgraph_sdk.errors import NotFoundError, UnprocessableEntityError
from servers import Replica, clients, replicas

from threadline.server.crons import iso

ECHO = "echo"


@pytest.fixture(scope="module")
def sqlite_deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[list[str], str]]:
    """One replica on a fresh SQLite file, and the file's URL."""
    url = f"sqlite:///{tmp_path_factory.mktemp('crons') / 'threadline.db'}"
    with replicas(url, 1) as started:
        yield [r.url for r in started], url


@pytest.fixture(params=["sqlite", "postgres"])
def deployment(request: pytest.FixtureRequest) -> tuple[list[str], str]:
    """The replicas' URLs and their database's URL (SQLite: 1 replica, PostgreSQL: 2)."""
    if request.param == "sqlite":
        found: tuple[list[str], str] = request.getfixturevalue("sqlite_deployment")
        return found
    started: list[Replica] = request.getfixturevalue("postgres_servers")
    return [r.url for r in started], request.getfixturevalue("postgres_database")


def make_due(database_url: str, cron_id: str) -> None:
    """Set the cron's ``next_run_date`` to a second ago, as if its time had come."""
    sql = "UPDATE tl_crons SET next_run_date = {} WHERE cron_id = {}"
    args = (time.time() - 1, cron_id)
    if database_url.startswith("sqlite:///"):
        with sqlite3.connect(database_url.removeprefix("sqlite:///")) as conn:
            conn.execute(sql.format("?", "?"), args)
    else:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(sql.format("%s", "%s"), args)


def until(check: Callable[[], Any], what: str, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return found


def the_cron(client: Any, cron_id: str) -> dict[str, Any]:
    (found,) = [c for c in client.crons.search(limit=1000) if c["cron_id"] == cron_id]
    return dict(found)


def test_info_says_crons_are_served(deployment: tuple[list[str], str]) -> None:
    a, _ = clients(deployment[0])
    assert a.http.get("/info")["flags"]["crons"] is True


def test_create_search_count_and_delete(deployment: tuple[list[str], str]) -> None:
    a, b = clients(deployment[0])
    thread = a.threads.create()
    tag = str(uuid.uuid4())
    stateless = a.crons.create(
        ECHO,
        schedule="0 9 * * 1-5",
        input={"messages": ["hi"]},
        metadata={"tag": tag, "kind": "stateless"},
        on_run_completed="keep",
    )
    on_thread = b.crons.create_for_thread(
        thread["thread_id"], ECHO, schedule="*/5 * * * *", metadata={"tag": tag}
    )
    assert stateless["thread_id"] is None and stateless["on_run_completed"] == "keep"
    assert stateless["schedule"] == "0 9 * * 1-5" and stateless["enabled"] is True
    assert stateless["payload"]["input"] == {"messages": ["hi"]}
    assert stateless["next_run_date"] > stateless["created_at"]
    assert on_thread["thread_id"] == thread["thread_id"]
    assert on_thread["on_run_completed"] is None
    assert on_thread["assistant_id"] == stateless["assistant_id"]  # the graph's assistant

    mine = b.crons.search(metadata={"tag": tag}, sort_by="created_at", sort_order="asc")
    assert [c["cron_id"] for c in mine] == [stateless["cron_id"], on_thread["cron_id"]]
    by_thread = a.crons.search(thread_id=thread["thread_id"])
    assert [c["cron_id"] for c in by_thread] == [on_thread["cron_id"]]
    assert b.crons.count(thread_id=thread["thread_id"]) == 1
    assert a.crons.count(metadata={"tag": tag}) == 2
    assert a.crons.count(assistant_id=ECHO, metadata={"tag": tag, "kind": "stateless"}) == 1
    assert a.crons.count(assistant_id="approval", metadata={"tag": tag}) == 0
    picked = a.crons.search(metadata={"tag": tag}, select=["cron_id", "schedule"], limit=1)
    assert len(picked) == 1 and set(picked[0]) == {"cron_id", "schedule"}

    a.crons.delete(stateless["cron_id"])
    assert [c["cron_id"] for c in b.crons.search(metadata={"tag": tag})] == [on_thread["cron_id"]]
    with pytest.raises(NotFoundError):
        b.crons.delete(stateless["cron_id"])
    b.crons.delete(on_thread["cron_id"])
    assert a.crons.count(metadata={"tag": tag}) == 0


def test_update_changes_the_schedule_and_a_disabled_cron_does_not_fire(
    deployment: tuple[list[str], str],
) -> None:
    urls, database_url = deployment
    a, b = clients(urls)
    thread = a.threads.create()
    cron = a.crons.create_for_thread(thread["thread_id"], ECHO, schedule="0 0 1 1 *")
    changed = b.crons.update(
        cron["cron_id"], schedule="30 6 * * *", input={"messages": ["later"]}, enabled=False
    )
    assert changed["schedule"] == "30 6 * * *" and changed["enabled"] is False
    assert changed["payload"]["input"] == {"messages": ["later"]}
    assert changed["next_run_date"].endswith("06:30:00+00:00")
    assert [c["cron_id"] for c in a.crons.search(thread_id=thread["thread_id"], enabled=False)] == [
        cron["cron_id"]
    ]
    make_due(database_url, cron["cron_id"])
    time.sleep(2.5)  # each replica's scheduler has looked twice
    assert a.runs.list(thread["thread_id"]) == []
    again = a.crons.update(cron["cron_id"], enabled=True)
    assert again["enabled"] is True and again["next_run_date"] > again["updated_at"]
    a.crons.delete(cron["cron_id"])


def _lock_waiters(database_url: str) -> int:
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND wait_event_type = 'Lock' AND query LIKE 'UPDATE tl_crons%'"
        ).fetchone()
    return int(row[0]) if row else 0


def test_an_update_without_a_timing_change_keeps_a_concurrent_claim(
    deployment: tuple[list[str], str],
) -> None:
    # The update reads the cron, then (held up by a lock) writes it after a replica's claim
    # moved next_run_date on. It used to write back the date it had read: due again.
    urls, database_url = deployment
    a, b = clients(urls)
    thread = a.threads.create()
    cron = a.crons.create_for_thread(thread["thread_id"], ECHO, schedule="0 0 1 1 *")
    cron_id, claimed = cron["cron_id"], time.time() + 7 * 86400
    moved = "UPDATE tl_crons SET next_run_date = {} WHERE cron_id = {}"
    with ThreadPoolExecutor(1) as pool:
        if database_url.startswith("sqlite:///"):
            path = database_url.removeprefix("sqlite:///")
            conn = sqlite3.connect(path, isolation_level=None)
            try:
                conn.execute("BEGIN IMMEDIATE")  # the write lock: the update waits for it
                patched = pool.submit(b.crons.update, cron_id, metadata={"note": "renamed"})
                time.sleep(1)  # it has read the cron
                assert not patched.done()
                conn.execute(moved.format("?", "?"), (claimed, cron_id))
                conn.execute("COMMIT")
            finally:
                conn.close()
        else:
            with psycopg.connect(database_url) as locking:  # a transaction, until commit
                locking.execute("SELECT 1 FROM tl_crons WHERE cron_id = %s FOR UPDATE", (cron_id,))
                patched = pool.submit(b.crons.update, cron_id, metadata={"note": "renamed"})
                until(lambda: _lock_waiters(database_url), "the update waiting for the row")
                locking.execute(moved.format("%s", "%s"), (claimed, cron_id))
                locking.commit()
        answer = patched.result(timeout=30)
    assert answer["metadata"] == {"note": "renamed"}
    assert answer["next_run_date"] == iso(claimed)
    assert the_cron(a, cron_id)["next_run_date"] == iso(claimed)
    # A timing change does count from now.
    changed = a.crons.update(cron_id, schedule="0 0 1 6 *")
    assert changed["next_run_date"].endswith("-06-01T00:00:00+00:00")
    a.crons.delete(cron_id)


def test_a_due_thread_cron_runs_its_input_once(deployment: tuple[list[str], str]) -> None:
    urls, database_url = deployment
    a, b = clients(urls)
    thread = a.threads.create()
    cron = a.crons.create_for_thread(
        thread["thread_id"], ECHO, schedule="0 0 1 1 *", input={"messages": ["tick"]}
    )
    make_due(database_url, cron["cron_id"])
    (run,) = until(lambda: b.runs.list(thread["thread_id"]), "the cron's run")
    assert run["metadata"]["cron_id"] == cron["cron_id"]
    b.runs.join(thread["thread_id"], run["run_id"])
    assert a.runs.get(thread["thread_id"], run["run_id"])["status"] == "success"
    assert a.threads.get_state(thread["thread_id"])["values"]["messages"] == [
        "tick",
        "reply to tick",
    ]
    # Fired for that due time only: the next is next New Year, and nothing else was queued.
    assert the_cron(a, cron["cron_id"])["next_run_date"].endswith("-01-01T00:00:00+00:00")
    time.sleep(2.5)
    assert len(b.runs.list(thread["thread_id"])) == 1
    a.crons.delete(cron["cron_id"])


def test_a_cron_whose_thread_is_gone_goes_too(deployment: tuple[list[str], str]) -> None:
    urls, database_url = deployment
    a, b = clients(urls)
    thread = a.threads.create()
    cron = a.crons.create_for_thread(thread["thread_id"], ECHO, schedule="0 0 1 1 *")
    a.threads.delete(thread["thread_id"])
    make_due(database_url, cron["cron_id"])
    until(lambda: b.crons.count(thread_id=thread["thread_id"]) == 0, "the cron deleted")


def test_two_replicas_fire_each_due_time_once(
    postgres_servers: list[Replica], postgres_database: str
) -> None:
    a, b = clients([r.url for r in postgres_servers])
    thread = a.threads.create()
    cron = b.crons.create_for_thread(
        thread["thread_id"], ECHO, schedule="0 0 1 1 *", input={"messages": ["x"]}
    )
    for fired in (1, 2, 3):
        make_due(postgres_database, cron["cron_id"])
        until(lambda n=fired: len(a.runs.list(thread["thread_id"])) >= n, f"firing {fired}")
        time.sleep(1.5)  # both schedulers have seen the due time
        assert len(b.runs.list(thread["thread_id"])) == fired
    a.crons.delete(cron["cron_id"])


def test_a_stateless_cron_runs_on_a_new_thread(deployment: tuple[list[str], str]) -> None:
    urls, database_url = deployment
    a, b = clients(urls)
    marker = f"stateless {uuid.uuid4()}"
    kept = a.crons.create(
        ECHO, schedule="0 0 1 1 *", input={"messages": [marker]}, on_run_completed="keep"
    )
    make_due(database_url, kept["cron_id"])
    wanted = {"messages": [marker, f"reply to {marker}"]}
    (thread,) = until(lambda: b.threads.search(values=wanted), "the kept thread")
    (run,) = b.runs.list(thread["thread_id"])
    assert run["metadata"]["cron_id"] == kept["cron_id"]
    b.runs.join(thread["thread_id"], run["run_id"])
    assert a.runs.get(thread["thread_id"], run["run_id"])["status"] == "success"
    a.crons.delete(kept["cron_id"])

    deleted = a.crons.create(ECHO, schedule="0 0 1 1 *", input={"messages": [marker + "!"]})
    assert deleted["on_run_completed"] == "delete"
    make_due(database_url, deleted["cron_id"])
    until(
        lambda: the_cron(a, deleted["cron_id"])["next_run_date"].endswith("01-01T00:00:00+00:00"),
        "the firing",
    )
    time.sleep(2)  # the run has ended and its thread gone with it
    assert b.threads.search(values={"messages": [marker + "!"]}) == []
    a.crons.delete(deleted["cron_id"])


def test_bad_crons_are_refused(deployment: tuple[list[str], str]) -> None:
    a, _ = clients(deployment[0])
    with pytest.raises(NotFoundError):
        a.crons.create("no-such-graph", schedule="* * * * *")
    with pytest.raises(NotFoundError):
        a.crons.create_for_thread(str(uuid.uuid4()), ECHO, schedule="* * * * *")
    for schedule in ("61 * * * *", "every minute", "* * * * * *", ""):
        with pytest.raises(UnprocessableEntityError) as refused:
            a.crons.create(ECHO, schedule=schedule)
        assert "5-field cron expression" in refused.value.response.json()["detail"]
    with pytest.raises(UnprocessableEntityError):
        a.crons.create(ECHO, schedule="* * * * *", timezone="Mars/Olympus")
    with pytest.raises(UnprocessableEntityError):
        a.crons.create(ECHO, schedule="* * * * *", multitask_strategy="sometimes")
    with pytest.raises(NotFoundError):
        a.crons.delete(str(uuid.uuid4()))
    with pytest.raises(NotFoundError):
        a.crons.update(str(uuid.uuid4()), schedule="* * * * *")
    cron = a.crons.create(ECHO, schedule="* * * * *")
    with pytest.raises(UnprocessableEntityError):
        a.crons.update(cron["cron_id"], schedule="0 25 * * *")
    a.crons.delete(cron["cron_id"])


def test_a_schedule_in_a_timezone(deployment: tuple[list[str], str]) -> None:
    a, _ = clients(deployment[0])
    cron = a.crons.create(ECHO, schedule="0 9 * * *", timezone="Asia/Kolkata")
    assert cron["timezone"] == "Asia/Kolkata"
    assert cron["next_run_date"].endswith("03:30:00+00:00")  # 09:00 IST is 03:30 UTC
    a.crons.delete(cron["cron_id"])
